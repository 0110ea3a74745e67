/** `moat start`: run the user program of a created container. */
import type { Command } from 'commander';
import { context } from './common.js';

/** Registers `start`. */
export function register(program: Command): void {
  program.command('start').description('start a created container').argument('<container-id>')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { start } = await import('../container/lifecycle.js');
      await start(context(cmd), id);
    });
}
