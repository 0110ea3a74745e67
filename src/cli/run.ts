/**
 * `moat run`: create, start and wait for a container, then delete it; exits with the container's
 * status (128+signal when it was killed). Two forms:
 *   moat run [-b BUNDLE] [--detach] ID      an OCI bundle, as runc run
 *   moat run [options] -- CMD [ARGS...]     the embedded default: CMD sandboxed, no image
 */
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { trace } from '../util/log.js';
import { collect, context } from './common.js';
import { addCreateFlags, fromSnapshot, microvmChoice, sentryChoice, socketActivation } from './create.js';
import type { CreateFlags } from './create.js';

interface RunFlags extends CreateFlags {
  detach?: boolean;
  keep?: boolean;
  volume: string[];
  env: string[];
  cwd?: string;
  network: string;
  user?: string;
  name?: string;
  tty?: boolean;
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const;

/** Registers `run`. */
export function register(program: Command): void {
  addCreateFlags(program.command('run').description('create and run a container (or, after "--", sandbox a host command)')
    .argument('[id-or-command...]'))
    .option('-d, --detach', 'detach from the container process')
    .option('--keep', 'do not delete the container after it exits')
    .option('-v, --volume <host:ctr[:ro]>', 'embedded default: bind a host path into the sandbox (repeatable)', collect, [])
    .option('-e, --env <KEY=VALUE>', 'embedded default: set an environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'embedded default: working directory (default: the current one)')
    .option('--network <mode>', 'embedded default: loopback (default), none or host', 'loopback')
    .option('--user <uid[:gid]>', 'embedded default: user to run as (default 0, with no capabilities)')
    .option('--name <id>', 'embedded default: container id (default: a random one)')
    .option('-t, --tty', 'embedded default: give the command a terminal of its own (a new pty, relayed to this one)')
    .action(async (operands: string[], flags: RunFlags, cmd: Command) => {
      const lifecycle = await import('../container/lifecycle.js');
      const ctx = context(cmd);
      const embedded = cmd.parent?.args.includes('--') === true || process.argv.includes('--');
      let id: string;
      let opts: Parameters<typeof lifecycle.create>[1];
      const common = {
        ...(flags.isolation ? { isolation: flags.isolation } : {}),
        sentry: sentryChoice(flags, embedded ? flags.network : undefined),
        microvm: microvmChoice(flags),
        ...(flags.consoleSocket ? { consoleSocket: flags.consoleSocket } : {}),
        ...(flags.pidFile ? { pidFile: flags.pidFile } : {}),
        preserveFds: flags.preserveFds,
        noNewKeyring: flags.noNewKeyring === false,
        foreground: flags.detach !== true,
      };
      if (flags.fromSnapshot) {
        if (embedded || flags.bundle) throw new UsageError('run: --from-snapshot takes the snapshot\'s spec: no bundle and no command after "--"');
        if (operands.length > 1) throw new UsageError('run: expected at most one container id with --from-snapshot');
        id = operands[0] ?? `moat-${randomBytes(6).toString('hex')}`;
        const snap = await fromSnapshot(cmd, flags.fromSnapshot);
        opts = { id, bundle: snap.bundle, spec: snap.spec, ...common, isolation: flags.isolation ?? snap.isolation, restore: snap.restore, ...(snap.embedded ? { embedded: snap.embedded } : {}) };
      } else if (embedded) {
        if (flags.bundle) throw new UsageError('run: --bundle cannot be combined with a command after "--"');
        if (!['none', 'loopback', 'host'].includes(flags.network)) throw new UsageError(`--network: expected none, loopback or host, got "${flags.network}"`);
        const { embeddedSpec } = await import('../container/embedded.js');
        id = flags.name ?? `moat-${randomBytes(6).toString('hex')}`;
        const spec = embeddedSpec({
          command: operands,
          env: flags.env,
          volumes: flags.volume,
          network: flags.network as 'none' | 'loopback' | 'host',
          ...(flags.cwd ? { cwd: flags.cwd } : {}),
          ...(flags.user ? { user: flags.user } : {}),
          ...(flags.tty ? { terminal: true } : {}),
        });
        opts = { id, bundle: '', spec, embedded: { lower: '/' }, network: flags.network as 'none' | 'loopback' | 'host', ...common };
      } else {
        if (operands.length !== 1) throw new UsageError('run: expected exactly one container id (or a command after "--")');
        for (const f of ['volume', 'env'] as const) if (flags[f].length) throw new UsageError(`run: --${f} is only for the embedded default (a command after "--")`);
        if (flags.tty) throw new UsageError('run: --tty is only for the embedded default (a command after "--"); a bundle asks for a terminal with process.terminal in its config.json');
        id = operands[0]!;
        const { loadSpec } = await import('../spec/validate.js');
        const bundle = resolve(flags.bundle ?? '.');
        opts = socketActivation({ id, bundle, spec: loadSpec(bundle), ...common });
      }
      trace('spec ready');
      let relay: import('./console.js').ConsoleRelay | undefined;
      if (opts.spec.process?.terminal && !flags.consoleSocket && !flags.detach) {
        relay = await (await import('./console.js')).ConsoleRelay.listen();
        opts = { ...opts, consoleSocket: relay.path };
      }
      let created: Awaited<ReturnType<typeof lifecycle.create>>;
      try {
        created = await lifecycle.create(ctx, opts);
        await relay?.attach();
      } catch (e) {
        relay?.dispose();
        throw e;
      }
      const { rec, waitExit } = created;
      if (!waitExit) {
        await lifecycle.start(ctx, id);
        return;
      }
      const forward = (sig: NodeJS.Signals) => {
        try {
          process.kill(rec.pid, sig);
        } catch {
          // already gone
        }
      };
      for (const s of FORWARDED) process.on(s, forward);
      let code: number;
      try {
        await lifecycle.start(ctx, id);
        code = await waitExit;
        await relay?.close();
        trace('exited');
      } finally {
        for (const s of FORWARDED) process.off(s, forward);
        if (!flags.keep) await lifecycle.remove(ctx, id, true);
      }
      trace('deleted');
      process.exitCode = code;
    });
}
