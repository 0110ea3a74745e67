/** `moat features`: what this runtime supports, as the runtime-spec features JSON. */
import type { Command } from 'commander';
import { writeOut } from '../util/log.js';

/** Registers `features`. */
export function register(program: Command): void {
  program.command('features').description('show the runtime-spec features this runtime implements')
    .action(async () => {
      const { features } = await import('../features.js');
      writeOut(JSON.stringify(features(), null, 2) + '\n');
    });
}
