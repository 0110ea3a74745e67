/**
 * The `moat` command line: runc-compatible command names, flags and output. Subcommands live one
 * per file and load their implementation lazily, so `moat state` does not pay for `moat run`.
 */
import { Command, CommanderError } from 'commander';
import { MoatError } from '../errors.js';
import { Logger, trace } from '../util/log.js';
import * as checkpoint from './checkpoint.js';
import * as create from './create.js';
import * as del from './delete.js';
import * as doctor from './doctor.js';
import * as exec from './exec.js';
import * as features from './features.js';
import * as guest from './guest.js';
import * as ps from './ps.js';
import * as pause from './pause.js';
import * as update from './update.js';
import * as events from './events.js';
import * as kill from './kill.js';
import * as list from './list.js';
import * as run from './run.js';
import * as snapshot from './snapshot.js';
import * as spec from './spec.js';
import * as start from './start.js';
import * as state from './state.js';

const VERSION = '0.1.0';

/** The default state root: /run/moat for root, a directory of the user's own otherwise (as runc). */
function defaultRoot(): string {
  if (process.geteuid?.() === 0) return '/run/moat';
  const xdg = process.env.XDG_RUNTIME_DIR;
  return xdg ? `${xdg}/moat` : `/tmp/moat-${process.geteuid?.() ?? 'user'}`;
}

/** Builds the command tree. */
export function program(): Command {
  const p = new Command('moat')
    .description('Moat: a secure OCI container runtime (container, sentry and microvm isolation)')
    .version(`moat version ${VERSION}\nspec: 1.2.0`, '-v, --version')
    .option('--root <dir>', 'root directory for container state (default: /run/moat; unprivileged: $XDG_RUNTIME_DIR/moat)', defaultRoot())
    .option('--log <file>', 'log file (default: stderr only)')
    .option('--log-format <format>', 'json or text', 'text')
    .option('--debug', 'enable debug logging', false)
    .option('--systemd-cgroup', 'cgroupsPath is in the systemd form slice:prefix:name', false)
    .option('--rootless <value>', 'accepted for runc compatibility', 'auto')
    .option('--criu <path>', 'accepted for runc compatibility')
    .option('--isolation <name>', "default isolation of the containers created: container, sentry or microvm (create/run's --isolation and the io.moat.isolation annotation win; for runtime arguments, as in Docker's daemon.json)")
    .option('--sentry-level <level>', "default sentry level: strict or balanced (create/run's --sentry-level and the io.moat.sentry.level annotation win)")
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();
  for (const m of [spec, create, start, state, kill, del, run, list, exec, ps, pause, update, events, checkpoint, snapshot, features, doctor, guest]) m.register(p);
  for (const c of p.commands) c.exitOverride();
  return p;
}

/** Runs the CLI with `argv` (process.argv form); sets process.exitCode. */
export async function main(argv: string[]): Promise<void> {
  trace('cli start');
  const p = program();
  try {
    await p.parseAsync(argv);
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

/** Runs `containerd-shim-moat-v1` (see src/shim/main.ts); resolves with its exit code. */
export async function shim(argv: readonly string[]): Promise<number> {
  const { shimMain } = await import('../shim/main.js');
  return shimMain(argv);
}

/**
 * Runs a warm standby CLI process (see standby.ts; the native front end starts it): resolves
 * with its exit code when unclaimed, or undefined after the command it ran.
 */
export async function cliStandby(argv: string[]): Promise<number | undefined> {
  const standby = await import('./standby.js');
  return standby.cliStandby(argv, main, warmUp);
}

/** Runs a microVM's monitor (see src/backends/microvm/monitor.ts); resolves with its exit code. */
export async function vmMonitor(argv: string[]): Promise<number> {
  const { monitorMain } = await import('../backends/microvm/monitor.js');
  return monitorMain(argv);
}

/** Runs the host relay of an exec in a microVM (see src/backends/microvm/relay.ts); resolves with its exit code. */
export async function vmExecRelay(argv: string[]): Promise<number> {
  const { relayMain } = await import('../backends/microvm/relay.js');
  return relayMain(argv);
}

/**
 * Exercises the code paths of `create` without side effects, so the build can record V8's
 * compiled code for them (see bin/moat.cjs): parsing flags and config, building a plan.
 */
export async function warmUp(): Promise<void> {
  program();
  const { defaultSpec } = await import('../spec/default.js');
  const { parseSpec } = await import('../spec/validate.js');
  const { buildPlan } = await import('../backends/container/plan.js');
  const { embeddedSpec } = await import('../container/embedded.js');
  await import('../container/lifecycle.js');
  const { defaultSeccompProfile } = await import('../seccomp/index.js');
  const spec = parseSpec(JSON.parse(JSON.stringify(defaultSpec({ seccomp: defaultSeccompProfile() }))));
  const log = new Logger({ format: 'text', debug: false });
  const base = { id: 'warm', dir: '/nonexistent', bundle: '/nonexistent', rootfs: '/nonexistent/rootfs', preserveFds: 0, noNewKeyring: false, foreground: true, systemdCgroup: false, hookState: () => '{}', recordCgroups: () => {}, log };
  buildPlan({ ...base, spec: { ...spec, process: { ...spec.process!, terminal: false } } }, { fifo: '/nonexistent/exec.fifo' });
  const embedded = embeddedSpec({ command: ['true'], env: [], volumes: [], network: 'loopback', cwd: '/' });
  buildPlan({ ...base, spec: embedded, embedded: { lower: '/' } }, { fifo: '/nonexistent/exec.fifo' });
  // the sentry backend's side of create (its jail spec, filter and policy), minus the processes
  const { sentrySpec, sandboxLimits } = await import('../backends/sentry/index.js');
  const { buildSentryFilter } = await import('../backends/sentry/filter.js');
  const { parsePolicy } = await import('../backends/sentry/netpolicy.js');
  const jailed = sentrySpec(embedded);
  sandboxLimits(jailed);
  parsePolicy('loopback', []);
  buildPlan({ ...base, spec: jailed, embedded: { lower: '/' }, sentryJail: { filter: buildSentryFilter('balanced'), socket: '/nonexistent/sentry.sock' } }, { fifo: '/nonexistent/exec.fifo' });
}
