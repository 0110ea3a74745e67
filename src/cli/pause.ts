/** `moat pause` and `moat resume`: freeze and thaw every process of a container. */
import type { Command } from 'commander';
import { context } from './common.js';

/** Registers `pause` and `resume`. */
export function register(program: Command): void {
  program.command('pause').description('suspend all processes inside the container').argument('<container-id>')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { pause } = await import('../container/lifecycle.js');
      await pause(context(cmd), id);
    });
  program.command('resume').description('resume all processes inside a paused container').argument('<container-id>')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const { resume } = await import('../container/lifecycle.js');
      await resume(context(cmd), id);
    });
}
