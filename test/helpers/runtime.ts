/**
 * The runtime under test: Moat by default, runc with MOAT_TEST_RUNTIME=runc. Behaviour tests go
 * through this module only, so the same test proves Moat right and is itself proven by runc.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBundle } from '../fixtures/busybox.js';

/** Root of the repository (the compiled helper lives in build/test/helpers). */
export const REPO = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
})();

/** Which runtime the tests drive. */
export const RUNTIME = (process.env.MOAT_TEST_RUNTIME ?? 'moat') as 'moat' | 'runc';

/**
 * With MOAT_TEST_FRONT_END=1, Moat is driven through its native front end (dist/moat, which
 * hands commands to warm standby CLI processes) instead of bin/moat.cjs: the behaviour tests
 * then prove that path a drop-in too.
 */
export const FRONT_END = RUNTIME === 'moat' && process.env.MOAT_TEST_FRONT_END === '1';

/** Moat's executable as the tests run it: bin/moat.cjs, or the native front end. */
export function moatExecutable(): string {
  return join(REPO, FRONT_END ? 'dist/moat' : 'bin/moat.cjs');
}

/** Why runtime tests cannot run here, or undefined when they can (printed by the skip). */
export function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'integration tests need root (run: sudo npm test)';
  if (RUNTIME === 'runc' && spawnSync('runc', ['--version']).status !== 0) return 'runc is not installed (apt-get install runc)';
  if (!existsSync('/bin/busybox') && !existsSync('/usr/bin/busybox')) return 'busybox is not installed (apt-get install busybox-static)';
  return undefined;
}

/** The command line that invokes the runtime under test. */
export function runtimeArgv(): [string, string[]] {
  if (RUNTIME === 'runc') return ['runc', []];
  return FRONT_END ? [moatExecutable(), []] : [process.execPath, [moatExecutable()]];
}

/** The outcome of one runtime command. */
export interface Result {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of one runtime command. */
export interface RunOptions {
  /** Bytes for the command's stdin (default: none). */
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Extra fds passed as 3, 4, ... (for --preserve-fds); 'ignore' leaves that number closed. */
  extraFds?: (number | 'ignore')[];
  /** Run the runtime as this unprivileged uid (and gid), through setpriv. */
  asUser?: number;
  /** Start the runtime with LISTEN_PID set to its own pid, as systemd's socket activation does (through sh's exec). */
  listenPid?: boolean;
}

let counter = 0;

/**
 * A private state root and scratch directory for one suite, made on first use; `cleanup`
 * deletes every container under it and the directory.
 */
export class Sandbox {
  private dir: string | undefined;

  /** The scratch directory. */
  get tmp(): string {
    this.dir ??= mkdtempSync(join(tmpdir(), `moat-test-${RUNTIME}-`));
    return this.dir;
  }

  /** The state root (--root) of the runtime under test. */
  get root(): string {
    return join(this.tmp, 'state');
  }

  /** Runs `script` with sh in a fresh bundle and returns its stdout; throws unless it exits 0. */
  async sh(script: string, mutate?: (spec: Record<string, any>) => void): Promise<string> {
    // `any`: tests poke arbitrary config fields, valid or not, to test the runtime's checks
    const b = await this.bundle(['sh', '-c', script], mutate);
    const r = await this.rt(['run', '-b', b, this.id()]);
    if (r.status !== 0) throw new Error(`container exited ${r.status ?? r.signal}: ${r.stderr}`);
    return r.stdout;
  }

  /** A fresh busybox bundle running `args`, with `mutate` applied to its config. */
  bundle(args: string[], mutate?: (spec: Record<string, any>) => void, terminal = false): Promise<string> {
    // `any`: tests poke arbitrary config fields, valid or not, to test the runtime's checks
    return makeBundle({ dir: join(this.tmp, `bundle-${++counter}`), args, terminal, ...(mutate ? { mutate } : {}) });
  }

  /** A new unique container id. */
  id(prefix = 'c'): string {
    return `${prefix}-${process.pid}-${++counter}`;
  }

  private files(): { out: string; err: string; outFd: number; errFd: number } {
    const out = join(this.tmp, `out-${++counter}`);
    const err = join(this.tmp, `err-${counter}`);
    return { out, err, outFd: openSync(out, 'w'), errFd: openSync(err, 'w') };
  }

  /**
   * Runs the runtime with `args` (after --root) and waits for it. Output goes through files, not
   * pipes: a created container inherits the runtime's stdio and would hold a pipe open.
   */
  rt(args: string[], opts: RunOptions = {}): Promise<Result> {
    const [cmd, pre] = runtimeArgv();
    const f = this.files();
    let inFd: number | 'ignore' = 'ignore';
    if (opts.input !== undefined) {
      const inFile = join(this.tmp, `in-${counter}`);
      writeFileSync(inFile, opts.input);
      inFd = openSync(inFile, 'r');
    }
    const stdio: (number | 'ignore')[] = [inFd, f.outFd, f.errFd, ...(opts.extraFds ?? [])];
    return new Promise((resolve, reject) => {
      const argv = [...pre, '--root', this.root, ...args];
      const child = opts.listenPid === true
        ? spawn('sh', ['-c', 'LISTEN_PID=$$ exec "$@"', 'sh', cmd, ...argv], { stdio, env: { ...process.env, ...opts.env } })
        : opts.asUser === undefined
        ? spawn(cmd, argv, { stdio, env: { ...process.env, ...opts.env } })
        : spawn('setpriv', [`--reuid=${opts.asUser}`, `--regid=${opts.asUser}`, '--clear-groups', cmd, ...argv],
          { stdio, env: { PATH: process.env.PATH, HOME: '/tmp', ...opts.env } });
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.on('error', reject);
      child.on('exit', (status, signal) => {
        clearTimeout(timer);
        for (const fd of [f.outFd, f.errFd]) closeSync(fd);
        if (typeof inFd === 'number') closeSync(inFd);
        resolve({ status, signal, stdout: readFileSync(f.out, 'utf8'), stderr: readFileSync(f.err, 'utf8') });
      });
    });
  }

  /** Like rt, but throws with the runtime's stderr unless it exits 0. */
  async ok(args: string[], opts: RunOptions = {}): Promise<Result> {
    const r = await this.rt(args, opts);
    if (r.status !== 0) throw new Error(`${RUNTIME} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}`);
    return r;
  }

  /** The parsed `state` JSON of a container. */
  async state(id: string): Promise<{ id: string; pid: number; status: string; bundle: string; annotations?: Record<string, string> }> {
    return JSON.parse((await this.ok(['state', id])).stdout);
  }

  /**
   * The sentry pid a container record names, once `ready` holds for the record's init pid (a
   * create in progress, run in the background, has written it); 0 if that takes over 10 s.
   */
  async sentryPidWhen(id: string, ready: (initPid: number) => boolean = () => true): Promise<number> {
    const stateFile = join(this.root, id, 'state.json');
    for (let i = 0; i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      try {
        const st = JSON.parse(readFileSync(stateFile, 'utf8')) as { pid?: number; backendState?: { pid?: number } };
        if ((st.pid ?? 0) > 0 && ready(st.pid!)) return Number(st.backendState?.pid ?? 0);
      } catch {
        // not written yet (or being written), or its init not ready yet
      }
    }
    return 0;
  }

  /** Force-deletes every container under this root and removes the scratch directory. */
  async cleanup(): Promise<void> {
    if (this.dir === undefined) return;
    const r = await this.rt(['list', '--format', 'json']);
    const list = (r.status === 0 ? (JSON.parse(r.stdout || 'null') ?? []) : []) as { id: string }[];
    for (const c of list) await this.rt(['delete', '--force', c.id]);
    rmSync(this.tmp, { recursive: true, force: true });
  }
}


/** Polls `fn` until it returns true or `timeoutMs` passes; returns the last answer. */
export async function waitFor(fn: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return fn();
}

/** True if a process with this pid exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Resolves to `p`'s value, or to undefined once `ms` passed without it settling. once `ms` passed without it settling. */
export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
