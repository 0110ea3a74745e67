/**
 * What the chaos tests (test/chaos) share: a seeded PRNG, a runtime command that can be
 * SIGKILLed at a chosen moment, and an orphan finder that looks at the host itself (the process
 * table, /proc/self/mountinfo, the cgroup hierarchies, the state root) rather than at what Moat
 * says about itself.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runtimeArgv } from './runtime.js';
import type { Result } from './runtime.js';

/** mulberry32, shared with the seccomp model tests: a seeded PRNG, so a failing run can be replayed. */
export { prng } from '../seccomp/model.js';

/** The seed of this run: MOAT_CHAOS_SEED=<n> replays a run, else a fresh one. */
export function chaosSeed(): number {
  const env = process.env.MOAT_CHAOS_SEED;
  if (env !== undefined && env !== '') return Number(env) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** The outcome of one command, with how long it ran and whether our SIGKILL ended it. */
export interface Timed extends Result {
  ms: number;
  /** True if the command was still running when the SIGKILL was sent (the kill landed). */
  killed: boolean;
}

/** Options of {@link runCmd}. */
export interface CmdOptions {
  /** Working directory of the runtime (and so of everything it starts before pivot_root). */
  cwd: string;
  /** Where the stdout and stderr files go (unique names are made from `tag`). */
  scratch: string;
  tag: string;
  /** SIGKILL the runtime this many milliseconds after it was spawned. */
  killAfterMs?: number;
  /** SIGKILL it after this long anyway, and report it as hung (default 60 s). */
  timeoutMs?: number;
}

/**
 * Runs the runtime with `--root root` and `args`. Output goes through files, not pipes: a created
 * container inherits the runtime's stdio and would hold a pipe open.
 */
export function runCmd(root: string, args: string[], opts: CmdOptions): Promise<Timed> {
  const [cmd, pre] = runtimeArgv();
  const out = join(opts.scratch, `${opts.tag}.out`);
  const err = join(opts.scratch, `${opts.tag}.err`);
  const outFd = openSync(out, 'w');
  const errFd = openSync(err, 'w');
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, [...pre, '--root', root, ...args], { cwd: opts.cwd, stdio: ['ignore', outFd, errFd] });
    let killed = false;
    let hung = false;
    const killer = opts.killAfterMs === undefined ? undefined : setTimeout(() => {
      killed = child.exitCode === null && child.signalCode === null;
      child.kill('SIGKILL');
    }, opts.killAfterMs);
    const timer = setTimeout(() => {
      hung = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('exit', (status, signal) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      clearTimeout(killer);
      closeSync(outFd);
      closeSync(errFd);
      const stderr = readFileSync(err, 'utf8') + (hung ? `\n[chaos: ${args[0]} hung for ${opts.timeoutMs ?? 60_000} ms and was killed]` : '');
      resolve({ status, signal, stdout: readFileSync(out, 'utf8'), stderr, ms, killed: killed && signal === 'SIGKILL' && !hung });
    });
  });
}

/** The median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

/**
 * True if a failed command failed cleanly: a non-zero exit status (not a signal) and a message,
 * and none of what a crash prints (a stack trace, "internal error", a JSON parse error).
 */
export function cleanFailure(r: Result): boolean {
  return typeof r.status === 'number' && r.status !== 0 && r.stderr.trim() !== '' && !CRASH_RE.test(r.stderr);
}

/** What a crash, an unexpected exception or a corrupt state file looks like on stderr. */
export const CRASH_RE = /internal error|corrupt|^\s+at .+[:(]\d+|Unexpected (token|end of JSON)|is not valid JSON|TypeError|ReferenceError|RangeError|SyntaxError/m;

/** Every cgroup (v1 and v2) mount point of this host, from /proc/self/mountinfo. */
export function cgroupMountpoints(): string[] {
  const out = new Set<string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fsType = line.slice(sep + 3).split(' ')[0];
    const mp = line.split(' ')[4];
    if ((fsType === 'cgroup' || fsType === 'cgroup2') && mp !== undefined) out.add(unescape(mp));
  }
  return [...out];
}

function unescape(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Removes the (empty) cgroup directory `cgPath` under every hierarchy; leaves busy ones. */
export function removeCgroupDirs(cgPath: string): void {
  for (const mp of cgroupMountpoints()) {
    try {
      rmdirSync(join(mp, cgPath));
    } catch {
      // gone already, or still busy: the orphan check reports what matters
    }
  }
}

/** One /proc entry as the orphan checks see it. */
interface ProcInfo {
  pid: number;
  state: string;
  startTime: string;
  cmdline: string;
  cgroups: string[];
  cwd: string;
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n')
      .map((l) => l.slice(l.indexOf(':', l.indexOf(':') + 1) + 1))
      .filter((p) => p !== '');
    let cwd = '';
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      // a zombie or a kernel thread has none
    }
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
    return { pid, state: rest[0] ?? '?', startTime: rest[19] ?? '', cmdline, cgroups, cwd };
  } catch {
    return undefined; // exited while we looked
  }
}

/** What belongs to one container, for {@link findOrphans}. */
export interface Owned {
  /** The state root and the container id: ROOT/ID must not exist. */
  root: string;
  id: string;
  /** The container's linux.cgroupsPath (absolute): no process in it, no directory of it. */
  cgroupPath: string;
  /**
   * A directory only this container's commands ran in (their cwd): a live process whose cwd is
   * under it is a runtime, a native stage (moat-init) or a not yet pivoted init left behind.
   */
  cwdDir: string;
  /** Init processes the state recorded (pid and start time). */
  pids: { pid: number; startTime: string }[];
  /** Paths under which no mount may remain in this mount namespace (the rootfs, the state dir). */
  mountPrefixes: string[];
}

/**
 * What is left of a container that should be gone: live processes (zombies do not count: this
 * VM's pid 1 does not reap), mounts, cgroup directories and the state directory. Empty if none.
 */
export function findOrphans(o: Owned): string[] {
  const found: string[] = [];
  const inCg = (p: string) => p === o.cgroupPath || p.startsWith(`${o.cgroupPath}/`);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const p = readProc(Number(name));
    if (!p || p.state === 'Z' || p.state === 'X') continue;
    const why: string[] = [];
    if (p.cgroups.some(inCg)) why.push('in the container cgroup');
    if (p.cwd === o.cwdDir || p.cwd.startsWith(`${o.cwdDir}/`)) why.push(`cwd ${p.cwd}`);
    if (o.pids.some((r) => r.pid === p.pid && r.startTime === p.startTime)) why.push('the recorded init');
    if (why.length > 0) found.push(`process ${p.pid} (${p.state}) "${p.cmdline}": ${why.join(', ')}`);
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const path = unescape(mp);
    if (o.mountPrefixes.some((pre) => path === pre || path.startsWith(`${pre}/`))) found.push(`mount ${path}`);
  }
  for (const mp of cgroupMountpoints()) {
    const dir = join(mp, o.cgroupPath);
    if (existsSync(dir)) found.push(`cgroup directory ${dir}`);
  }
  const state = join(o.root, o.id);
  if (existsSync(state)) found.push(`state directory ${state} (${safeList(state)})`);
  return found;
}

function safeList(dir: string): string {
  try {
    return readdirSync(dir).join(', ') || 'empty';
  } catch {
    return '?';
  }
}

/** Pid and start time of the init recorded in ROOT/ID/state.json, if there is one with a pid. */
export function recordedInit(root: string, id: string): { pid: number; startTime: string } | undefined {
  let text: string;
  try {
    text = readFileSync(join(root, id, 'state.json'), 'utf8');
  } catch {
    return undefined;
  }
  const rec = JSON.parse(text) as { pid?: number; pidStartTime?: string }; // throws if corrupt: the caller fails
  return rec.pid ? { pid: rec.pid, startTime: rec.pidStartTime ?? '' } : undefined;
}

/**
 * Cleanup after a failure, so a failed run leaves nothing behind: thaws the cgroups under
 * `cgroupPrefix` (a frozen v1 process only dies once thawed), SIGKILLs every live process
 * attributable to the test (its cwd under `cwdDir` or its cgroup under `cgroupPrefix`), then
 * removes the cgroup directories, deepest first. Returns the pids it killed.
 */
export async function reapLeftovers(cwdDir: string, cgroupPrefix: string): Promise<number[]> {
  const trees = cgroupMountpoints().map((mp) => join(mp, cgroupPrefix)).filter((d) => existsSync(d));
  const walk = (dir: string): string[] => {
    let subs: string[] = [];
    try {
      subs = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
    } catch {
      // gone
    }
    return [...subs.flatMap(walk), dir];
  };
  const dirs = trees.flatMap(walk);
  for (const d of dirs) {
    for (const [file, value] of [['freezer.state', 'THAWED'], ['cgroup.freeze', '0']] as const) {
      try {
        writeFileSync(join(d, file), value);
      } catch {
        // not a freezer directory
      }
    }
  }
  const killed: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const p = readProc(Number(name));
    if (!p || p.state === 'Z') continue;
    const mine = p.cwd === cwdDir || p.cwd.startsWith(`${cwdDir}/`) || p.cgroups.some((c) => c === cgroupPrefix || c.startsWith(`${cgroupPrefix}/`));
    if (!mine) continue;
    try {
      process.kill(p.pid, 'SIGKILL');
      killed.push(p.pid);
    } catch {
      // already gone
    }
  }
  if (killed.length > 0) await new Promise((r) => setTimeout(r, 300));
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch {
      // still busy: nothing more to do from here
    }
  }
  return killed;
}
