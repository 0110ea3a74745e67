/** `moat delete`: remove a stopped container (with --force, kill a running one first). */
import type { Command } from 'commander';
import { context } from './common.js';

/** Registers `delete`. */
export function register(program: Command): void {
  program.command('delete').description('delete a container').argument('<container-id>')
    .option('-f, --force', 'kill the container first if it is still running (and succeed if it does not exist)')
    .action(async (id: string, flags: { force?: boolean }, cmd: Command) => {
      const { remove } = await import('../container/lifecycle.js');
      await remove(context(cmd), id, flags.force === true);
    });
}
