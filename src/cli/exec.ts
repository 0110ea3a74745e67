/** `moat exec`: run a new process inside a running container (runc's flags). */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigError, UsageError } from '../errors.js';
import type { CapabilityName, ProcessSpec } from '../spec/schema.js';
import { collect, context, nonNegativeInt } from './common.js';

interface ExecFlags {
  process?: string;
  tty?: boolean;
  detach?: boolean;
  pidFile?: string;
  consoleSocket?: string;
  env: string[];
  cwd?: string;
  user?: string;
  additionalGids: string[];
  cap: string[];
  noNewPrivs?: boolean;
  preserveFds: number;
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const;

/** Builds the process of an exec without --process: the container's own, with the flags applied. */
function processFromFlags(base: ProcessSpec | undefined, command: string[], f: ExecFlags): unknown {
  if (command.length === 0) throw new UsageError('exec: give a command to run, or --process');
  const env = new Map<string, string>();
  for (const e of [...(base?.env ?? []), ...f.env]) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env ${e}: expected KEY=VALUE`);
    env.set(e.slice(0, eq), e.slice(eq + 1));
  }
  const p: Record<string, unknown> = { ...(base ?? { cwd: '/' }), args: command, env: [...env].map(([k, v]) => `${k}=${v}`), terminal: f.tty === true };
  delete p.consoleSize;
  if (f.cwd) p.cwd = f.cwd;
  const user = { ...(base?.user ?? { uid: 0, gid: 0 }) } as Record<string, unknown>;
  if (f.user) {
    const m = /^(\d+)(?::(\d+))?$/.exec(f.user);
    if (!m) throw new UsageError(`--user ${f.user}: expected UID[:GID]`);
    user.uid = Number(m[1]);
    if (m[2] !== undefined) user.gid = Number(m[2]);
  }
  if (f.additionalGids.length) {
    user.additionalGids = f.additionalGids.map((g) => {
      if (!/^\d+$/.test(g)) throw new UsageError(`--additional-gids ${g}: expected a number`);
      return Number(g);
    });
  }
  p.user = user;
  if (f.cap.length) {
    const caps = { ...(base?.capabilities ?? {}) } as Record<string, CapabilityName[] | undefined>;
    for (const set of ['bounding', 'effective', 'permitted', 'inheritable'] as const) {
      caps[set] = [...new Set([...(caps[set] ?? []), ...(f.cap as CapabilityName[])])];
    }
    p.capabilities = caps;
  }
  if (f.noNewPrivs) p.noNewPrivileges = true;
  return p;
}

/** Registers `exec`. */
export function register(program: Command): void {
  program.command('exec').description('execute a new process inside a container')
    .argument('<container-id>').argument('[command...]')
    .option('-p, --process <file>', 'process.json describing the process (instead of the command)')
    .option('-t, --tty', 'allocate a pseudo-TTY')
    .option('-d, --detach', 'detach from the process')
    .option('--pid-file <path>', 'file to write the process id to')
    .option('--console-socket <path>', 'unix socket that receives the pty master (with --tty)')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside the container')
    .option('-u, --user <uid[:gid]>', 'user to run as')
    .option('-g, --additional-gids <gid>', 'additional group (repeatable)', collect, [])
    .option('-c, --cap <name>', 'add a capability (repeatable)', collect, [])
    .option('--no-new-privs', 'set no_new_privs for the process')
    .option('--preserve-fds <n>', 'pass N extra fds (3, 4, ...) to the process', nonNegativeInt('--preserve-fds'), 0)
    .passThroughOptions()
    .action(async (id: string, command: string[], f: ExecFlags, cmd: Command) => {
      const lifecycle = await import('../container/lifecycle.js');
      const { parseProcess } = await import('../spec/validate.js');
      const ctx = context(cmd);
      let proc: ProcessSpec;
      if (f.process) {
        if (command.length) throw new UsageError('exec: give either --process or a command, not both');
        let json: unknown;
        try {
          json = JSON.parse(readFileSync(f.process, 'utf8'));
        } catch (e) {
          throw new ConfigError('', `--process ${f.process}: ${(e as Error).message}`);
        }
        proc = parseProcess(json);
      } else {
        proc = parseProcess(processFromFlags(lifecycle.containerSpec(ctx, id).process, command, f));
      }
      const foreground = f.detach !== true;
      let relay: import('./console.js').ConsoleRelay | undefined;
      if (proc.terminal && !f.consoleSocket && foreground) relay = await (await import('./console.js')).ConsoleRelay.listen();
      let started: Awaited<ReturnType<typeof lifecycle.exec>>;
      try {
        const consoleSocket = f.consoleSocket ?? relay?.path;
        started = await lifecycle.exec(ctx, id, {
          process: proc,
          preserveFds: f.preserveFds,
          foreground,
          ...(consoleSocket ? { consoleSocket } : {}),
          ...(f.pidFile ? { pidFile: f.pidFile } : {}),
        });
        await relay?.attach();
      } catch (e) {
        relay?.dispose();
        throw e;
      }
      if (!started.waitExit) return;
      const forward = (sig: NodeJS.Signals) => {
        try {
          process.kill(started.pid, sig);
        } catch {
          // already gone
        }
      };
      for (const s of FORWARDED) process.on(s, forward);
      try {
        process.exitCode = await started.waitExit;
        await relay?.close();
      } finally {
        for (const s of FORWARDED) process.off(s, forward);
      }
    });
}
