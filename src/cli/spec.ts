/** `moat spec`: write a default config.json (runc's defaults, hardened) into the bundle. */
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MoatError } from '../errors.js';

/** Registers `spec`. */
export function register(program: Command): void {
  program.command('spec').description('create a new specification file (config.json)')
    .option('-b, --bundle <dir>', 'directory to write config.json to', '.')
    .option('--rootless', 'a spec for a container run by an unprivileged user')
    .action(async (flags: { bundle: string; rootless?: boolean }) => {
      const { defaultSpec } = await import('../spec/default.js');
      const { defaultSeccompProfile } = await import('../seccomp/index.js');
      const file = join(resolve(flags.bundle), 'config.json');
      try {
        writeFileSync(file, JSON.stringify(defaultSpec({ rootless: flags.rootless === true, seccomp: defaultSeccompProfile() }), null, '\t') + '\n', { flag: 'wx' });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        throw new MoatError(code === 'EEXIST' ? `File ${file} exists. Remove it first` : `cannot write ${file}: ${(e as Error).message}`);
      }
    });
}
