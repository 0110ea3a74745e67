/** `moat doctor`: what this host supports, in plain words. */
import type { Command } from 'commander';
import { writeOut } from '../util/log.js';

/** Registers `doctor`. */
export function register(program: Command): void {
  program.command('doctor').description('report what this host supports (namespaces, cgroups, seccomp, overlayfs, KVM, peers)')
    .action(async () => {
      const { runDoctor, formatDoctor } = await import('../doctor.js');
      writeOut(formatDoctor(await runDoctor()) + '\n');
    });
}
