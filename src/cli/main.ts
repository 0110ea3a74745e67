/**
 * The `moat` command line: runc-compatible command names, flags and output. Subcommands live one
 * per file and load their implementation lazily, so `moat state` does not pay for `moat run`.
 */
import { Command, CommanderError } from 'commander';
import { MoatError } from '../errors.js';
import { Logger, trace, writeErr } from '../util/log.js';
import * as create from './create.js';
import * as del from './delete.js';
import * as doctor from './doctor.js';
import * as kill from './kill.js';
import * as list from './list.js';
import * as run from './run.js';
import * as spec from './spec.js';
import * as start from './start.js';
import * as state from './state.js';

const VERSION = '0.1.0';

/** Builds the command tree. */
export function program(): Command {
  const p = new Command('moat')
    .description('Moat: a secure OCI container runtime (container, sentry and microvm isolation)')
    .version(`moat version ${VERSION}\nspec: 1.2.0`, '-v, --version')
    .option('--root <dir>', 'root directory for container state', '/run/moat')
    .option('--log <file>', 'log file (default: stderr only)')
    .option('--log-format <format>', 'json or text', 'text')
    .option('--debug', 'enable debug logging', false)
    .option('--systemd-cgroup', 'cgroupsPath is in the systemd form slice:prefix:name', false)
    .option('--rootless <value>', 'accepted for runc compatibility', 'auto')
    .option('--criu <path>', 'accepted for runc compatibility')
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();
  for (const m of [spec, create, start, state, kill, del, run, list, doctor]) m.register(p);
  for (const c of p.commands) c.exitOverride();
  return p;
}

async function main(): Promise<void> {
  trace('cli start');
  const p = program();
  try {
    await p.parseAsync(process.argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version are not errors; commander already printed them
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    const opts = p.opts<{ log?: string; logFormat?: string; debug?: boolean }>();
    const log = new Logger({ ...(opts.log ? { file: opts.log } : {}), format: opts.logFormat === 'json' ? 'json' : 'text', debug: opts.debug === true });
    if (e instanceof MoatError) {
      log.error(e.message);
      process.exitCode = e.exitCode;
    } else {
      log.error(`internal error: ${e instanceof Error ? (opts.debug ? e.stack : e.message) : String(e)}`);
      process.exitCode = 1;
    }
  }
}

await main().catch((e: unknown) => {
  writeErr(`moat: ${String(e)}\n`);
  process.exitCode = 1;
});
