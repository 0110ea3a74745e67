/**
 * Pieces shared by the harnesses that drive the runtime under test through a real container engine
 * (./containerd.ts, ./podman.ts): the runtime binary handed to the engine, commands run with their
 * output in files, commands run under a pseudo-terminal, leftover-process scans and unmounting.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { moatExecutable, REPO, RUNTIME, type Result } from './runtime.js';

/** Finds `name` on PATH (like `which`), or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  for (const dir of ['/usr/local/sbin', '/usr/sbin', '/sbin']) {
    // root's tools (runc is /usr/sbin/runc on Debian) even when PATH lacks the sbin directories
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here either
    }
  }
  return undefined;
}

/**
 * The executable an engine (containerd's runc shim, podman's conmon) runs as the OCI runtime:
 * Moat's bin/moat.cjs (executable, `#!/usr/bin/env node`) or native front end (dist/moat, with
 * MOAT_TEST_FRONT_END=1), or runc's absolute path.
 */
export function runtimeBinary(): string {
  if (RUNTIME === 'moat') return moatExecutable();
  const runc = which('runc');
  if (runc === undefined) throw new Error('runc is not installed (apt-get install runc)');
  return runc;
}

/** Why runtimeBinary() has no executable to give (runc not installed), or undefined. */
export function runtimeBinaryMissing(): string | undefined {
  try {
    runtimeBinary();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Quotes `arg` for a POSIX shell command line. */
export function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Options of {@link runCommand} and {@link runInPty}. */
export interface CommandOptions {
  /** Bytes for the command's stdin (default: none). */
  input?: string;
  /** SIGKILL after this long (default 30 s); the result then has signal SIGKILL. */
  timeoutMs?: number;
  /** Added to (overriding) this process's environment. */
  env?: NodeJS.ProcessEnv;
}

let counter = 0;

/**
 * Runs argv and waits for it; stdout and stderr go through files in `scratch`, not pipes, because
 * a process the command leaves running (a detached container, a shim) could hold a pipe open.
 */
export function runCommand(scratch: string, argv: string[], opts: CommandOptions = {}): Promise<Result> {
  const n = ++counter;
  const out = join(scratch, `cmd-${process.pid}-${n}.out`);
  const err = join(scratch, `cmd-${process.pid}-${n}.err`);
  const outFd = openSync(out, 'w');
  const errFd = openSync(err, 'w');
  let inFd: number | 'ignore' = 'ignore';
  if (opts.input !== undefined) {
    const inFile = join(scratch, `cmd-${process.pid}-${n}.in`);
    writeFileSync(inFile, opts.input);
    inFd = openSync(inFile, 'r');
  }
  const [cmd, ...args] = argv;
  const child = spawn(cmd!, args, { stdio: [inFd, outFd, errFd], env: { ...process.env, ...opts.env } });
  return settle(child, out, err, opts.timeoutMs, () => {
    for (const fd of [outFd, errFd]) closeSync(fd);
    if (typeof inFd === 'number') closeSync(inFd);
  });
}

/**
 * Waits for `child` (SIGKILLed after `timeoutMs`, default 30 s), runs `cleanup`, and resolves with
 * its status and the output files `out` and `err`.
 */
function settle(child: ChildProcess, out: string, err: string, timeoutMs: number | undefined, cleanup: () => void): Promise<Result> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs ?? 30_000);
    const done = (): void => {
      clearTimeout(timer);
      cleanup();
    };
    child.on('error', (e) => {
      done();
      reject(e);
    });
    child.on('exit', (status, signal) => {
      done();
      resolve({ status, signal, stdout: readFileSync(out, 'utf8'), stderr: readFileSync(err, 'utf8') });
    });
  });
}

/**
 * Runs argv under a fresh pseudo-terminal (`script -qec CMD /dev/null`, util-linux in bsdutils) and returns what
 * the terminal showed (stdout: echo included, lines ending \r\n) and the command's exit status.
 * `input` is written to the terminal at once; stdin stays open until the command exits, so the
 * command never sees an end of input it did not ask for (an early EOF could end an interactive shell).
 */
export function runInPty(scratch: string, argv: string[], opts: CommandOptions = {}): Promise<Result> {
  const n = ++counter;
  const out = join(scratch, `pty-${process.pid}-${n}.out`);
  const err = join(scratch, `pty-${process.pid}-${n}.err`);
  const outFd = openSync(out, 'w');
  const errFd = openSync(err, 'w');
  const line = argv.map(shellQuote).join(' ');
  const child = spawn('script', ['-qec', line, '/dev/null'], { stdio: ['pipe', outFd, errFd], env: { ...process.env, ...opts.env } });
  const stdin = child.stdin!; // stdio[0] is 'pipe'
  stdin.on('error', () => {}); // EPIPE if script is gone before the input is written
  if (opts.input !== undefined) stdin.write(opts.input);
  return settle(child, out, err, opts.timeoutMs, () => {
    stdin.destroy();
    for (const fd of [outFd, errFd]) closeSync(fd);
  });
}

/** What a shell on a terminal is given by the interactive tests (checked by assertTtyShell). */
export const TTY_SHELL_INPUT = 'tty; echo $((6*7)); exit 5\n';

/** Checks what the terminal showed after TTY_SHELL_INPUT: a pseudo-terminal named, the line evaluated, exit status 5. */
export function assertTtyShell(r: Result, context = ''): void {
  assert.equal(r.status, 5, `terminal showed:\n${r.stdout}\n${r.stderr}${context}`);
  assert.match(r.stdout, /^\/dev\/pts\/\d+\r*$/m, 'tty did not name a pseudo-terminal');
  assert.match(r.stdout, /^42\r*$/m, 'the shell did not evaluate the typed line');
}

/** Why a pseudo-terminal test cannot run here, or undefined. */
export function ptySkipReason(): string | undefined {
  return which('script') === undefined ? 'script is not installed (apt-get install bsdutils)' : undefined;
}

/** One live process found by {@link leftoverProcesses}. */
export interface ProcessInfo {
  pid: number;
  cmdline: string;
  /** Why it matched: the marker found in its command line or cgroup. */
  reason: string;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Live (not zombie) processes other than this one that belong to a test: a command-line argument
 * contains one of `paths` (an engine's private directory or socket) or names one of `ids` (a
 * container id, as a whole word), or the process sits in a cgroup whose last component ends with
 * one of `ids` (containerd: /NAMESPACE/ID; podman's cgroupfs manager: /libpod_parent/libpod-ID).
 * `except`: pids to leave out (the engine itself).
 * A container's own processes are found through their cgroup: their command lines are the image's.
 */
export function leftoverProcesses(match: { paths?: string[]; ids?: string[]; except?: number[] }): ProcessInfo[] {
  const paths = (match.paths ?? []).filter((p) => p !== '');
  const idRes = (match.ids ?? []).map((id) => [id, new RegExp(`(^|[^\\w.-])${escapeRegExp(id)}($|[^\\w.-])`)] as const);
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || match.except?.includes(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'Z' || state === 'X') continue; // zombies: gone, only not yet reaped (here PID 1 may not reap)
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').map((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1));
      let reason: string | undefined;
      for (const p of paths) if (reason === undefined && args.some((a) => a.includes(p))) reason = `command line names ${p}`;
      for (const [id, re] of idRes) {
        if (reason === undefined && args.some((a) => re.test(a))) reason = `command line names ${id}`;
        if (reason === undefined && cgroups.some((c) => c.endsWith(`/${id}`) || c.endsWith(`-${id}`))) reason = `in the cgroup of ${id}`;
      }
      if (reason !== undefined) found.push({ pid, cmdline: args.join(' '), reason });
    } catch {
      // the process exited while we looked
    }
  }
  return found;
}

/** Mount points at or under `dir` in this mount namespace, deepest first. */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((p) => p === dir || p.startsWith(dir + '/'));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Lazily unmounts everything mounted at or under `dir` (what an engine left behind). */
export function unmountUnder(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return;
    for (const p of points) {
      try {
        execFileSync('umount', ['-l', p], { stdio: 'ignore' });
      } catch {
        // already gone with its parent
      }
    }
  }
}

/** SIGKILLs the given processes (found by {@link leftoverProcesses}: ones a test started). */
export function killAll(procs: ProcessInfo[]): void {
  for (const p of procs) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The state of the freezer cgroup `pid` is in: FROZEN or THAWED (cgroup v1 freezer.state, or v2
 * cgroup.freeze), undefined when there is no freezer to read.
 */
export function freezerState(pid: number): string | undefined {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => /^\d+:([^:]*,)?freezer(,[^:]*)?:/.test(l));
  try {
    if (v1 !== undefined) {
      const path = v1.slice(v1.indexOf(':', v1.indexOf(':') + 1) + 1);
      return readFileSync(join('/sys/fs/cgroup/freezer', path, 'freezer.state'), 'utf8').trim();
    }
    const v2 = lines.find((l) => l.startsWith('0::'));
    if (v2 !== undefined) {
      const freeze = readFileSync(join('/sys/fs/cgroup', v2.slice(3), 'cgroup.freeze'), 'utf8').trim();
      return freeze === '1' ? 'FROZEN' : 'THAWED';
    }
  } catch {
    // no freezer hierarchy mounted where we looked
  }
  return undefined;
}
