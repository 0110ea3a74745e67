/** `moat state`: print the OCI state JSON of a container. */
import type { Command } from 'commander';
import { writeOut } from '../util/log.js';
import { context } from './common.js';

/** Registers `state`. */
export function register(program: Command): void {
  program.command('state').description('output the state of a container').argument('<container-id>')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { state } = await import('../container/lifecycle.js');
      writeOut(JSON.stringify(state(context(cmd), id), null, 2) + '\n');
    });
}
