/** `moat kill`: send a signal to a container's init (or to all its processes with --all). */
import type { Command } from 'commander';
import { parseSignal } from '../util/signals.js';
import { context } from './common.js';

/** Registers `kill`. */
export function register(program: Command): void {
  program.command('kill').description('send a signal (default SIGTERM) to a container').argument('<container-id>').argument('[signal]', 'name or number', 'SIGTERM')
    .option('-a, --all', 'send the signal to every process of the container')
    .action(async (id: string, signal: string, flags: { all?: boolean }, cmd: Command) => {
      const { kill } = await import('../container/lifecycle.js');
      await kill(context(cmd), id, parseSignal(signal), flags.all === true);
    });
}
