/**
 * The sandbox as its workload sees it: its processes under their own pid-namespace numbers, its
 * memory and CPU usage, its uptime. The synthesized /proc and /sys (procfs.ts) and the sysinfo(2)
 * and uname(2) answers (sys_info.ts) all draw on this one view, so they agree with each other.
 *
 * Everything here is read from the host's /proc (the sentry runs in the host pid namespace), and
 * only ever about processes of the sandbox: no host pid, host process or host-wide figure may
 * reach the workload except the few named here (host memory total when the sandbox has no limit).
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

import { E } from '../../sys/kernel.js';
import type { Sandbox } from './types.js';

/** The kernel release the sandbox reports (uname -r, /proc/version, /proc/sys/kernel/osrelease). */
export const RELEASE = '6.1.0-moat-sentry';
/** The kernel version string the sandbox reports (uname -v, /proc/version). */
export const UTS_VERSION = '#1 SMP PREEMPT_DYNAMIC moat';
/** Page size of x86_64, the unit of the rss fields of /proc/PID/stat and statm. */
export const PAGE_SIZE = 4096;
/** USER_HZ, the unit of the tick counts of /proc/PID/stat and /proc/stat. */
export const CLK_TCK = 100;
/** The id an unmapped uid or gid shows as (the kernel's overflowuid). */
export const OVERFLOW_ID = 65534;

const ERRNO: Readonly<Record<string, number>> = {
  ENOENT: E.ENOENT,
  ESRCH: E.ESRCH,
  EACCES: E.EACCES,
  EPERM: E.EPERM,
  ENOTDIR: E.ENOTDIR,
  EINVAL: E.EINVAL,
};

/** The -errno of a failed node:fs call (EIO for anything unexpected). */
export function errnoOf(err: unknown): number {
  const code = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : '';
  return -(ERRNO[code] ?? E.EIO);
}

/** A host file's text (latin1, so every byte survives a round trip), or -errno. */
export function readHost(path: string): string | number {
  try {
    return readFileSync(path, 'latin1');
  } catch (err) {
    return errnoOf(err);
  }
}

/** A host file's bytes, or -errno. */
export function readHostBuf(path: string): Buffer | number {
  try {
    return readFileSync(path);
  } catch (err) {
    return errnoOf(err);
  }
}

/** A host symlink's target (latin1), or -errno. */
export function linkHost(path: string): string | number {
  try {
    return readlinkSync(path, { encoding: 'latin1' });
  } catch (err) {
    return errnoOf(err);
  }
}

/** The names in a host directory, or -errno. */
export function listHost(path: string): string[] | number {
  try {
    return readdirSync(path, { encoding: 'latin1' });
  } catch (err) {
    return errnoOf(err);
  }
}

/** The value of a `Key:\tvalue` line of a /proc status-style text, trimmed, or undefined. */
export function field(text: string, key: string): string | undefined {
  const tag = `${key}:`;
  let at: number;
  if (text.startsWith(tag)) at = tag.length;
  else {
    const i = text.indexOf(`\n${tag}`);
    if (i < 0) return undefined;
    at = i + 1 + tag.length;
  }
  const end = text.indexOf('\n', at);
  return text.slice(at, end < 0 ? undefined : end).trim();
}

/** The last whitespace-separated number of a value (the innermost level of an NS* line), or 0. */
export function lastNumber(value: string | undefined): number {
  if (value === undefined || value === '') return 0;
  const parts = value.split(/\s+/);
  const n = Number(parts[parts.length - 1]);
  return Number.isSafeInteger(n) && n >= 0 ? n : 0;
}

/** A /proc/PID/stat line split around its comm: the comm with its parentheses, and fields 3 on. */
export function parseStat(text: string): { comm: string; rest: string[] } | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  return { comm: text.slice(open, close + 1), rest: text.slice(close + 1).trim().split(' ') };
}

/** The number of a /proc/PID/stat field (1-based, as proc(5) numbers them) from `rest`, or 0. */
export function statField(rest: readonly string[], n: number): number {
  const v = Number(rest[n - 3]);
  return Number.isFinite(v) ? v : 0;
}

/** A host process (or thread) and its number in the sandbox's pid namespace. */
export interface Proc {
  /** Host pid (or tid). */
  host: number;
  /** Pid (or tid) in the sandbox's pid namespace. */
  ns: number;
}

/** The innermost-namespace pid of the task whose /proc directory is `dir` (host path), or 0. */
export function nsPidAt(dir: string): number {
  const status = readHost(`${dir}/status`);
  return typeof status === 'string' ? lastNumber(field(status, 'NSpid')) : 0;
}

/** The sandbox pid-namespace number of a host pid or tid (the last NSpid field), or 0 if it is gone. */
export function nsPid(hostPid: number): number {
  return nsPidAt(`/proc/${hostPid}`);
}

const nsCache = new WeakMap<Sandbox, Map<number, number>>();

/** The sandbox's processes, as host pid and namespace pid, in namespace-pid order. */
export function processes(sb: Sandbox): Proc[] {
  const out: Proc[] = [];
  const map = new Map<number, number>();
  for (const host of sb.pids()) {
    const ns = nsPid(host);
    if (ns <= 0) continue;
    out.push({ host, ns });
    map.set(ns, host);
  }
  nsCache.set(sb, map);
  return out.sort((a, b) => a.ns - b.ns);
}

/** The host pid of the sandbox process whose namespace pid is `ns`, or undefined if there is none. */
export function hostPidOf(sb: Sandbox, ns: number): number | undefined {
  if (!Number.isSafeInteger(ns) || ns <= 0) return undefined;
  const pids = sb.pids();
  const cached = nsCache.get(sb)?.get(ns);
  if (cached !== undefined && pids.includes(cached) && nsPid(cached) === ns) return cached;
  const map = new Map<number, number>();
  for (const host of pids) {
    const n = nsPid(host);
    if (n > 0) map.set(n, host);
  }
  nsCache.set(sb, map);
  return map.get(ns);
}

/** The threads of a host process, as host tid and namespace tid, in namespace-tid order. */
export function threads(hostPid: number): Proc[] {
  const names = listHost(`/proc/${hostPid}/task`);
  if (typeof names === 'number') return [];
  const out: Proc[] = [];
  for (const name of names) {
    const host = Number(name);
    const ns = nsPidAt(`/proc/${hostPid}/task/${name}`);
    if (Number.isSafeInteger(host) && ns > 0) out.push({ host, ns });
  }
  return out.sort((a, b) => a.ns - b.ns);
}

/** The host tid of the thread of `hostPid` whose namespace tid is `nsTid`, or undefined. */
export function hostTidOf(hostPid: number, nsTid: number): number | undefined {
  if (!Number.isSafeInteger(nsTid) || nsTid <= 0) return undefined;
  return threads(hostPid).find((th) => th.ns === nsTid)?.host;
}

const pidNsCache = new WeakMap<Sandbox, string>();

/** The sandbox's pid namespace (the ns/pid link of its init), or undefined if init is gone. */
function sandboxPidNs(sb: Sandbox): string | undefined {
  const known = pidNsCache.get(sb);
  if (known !== undefined) return known;
  const ns = linkHost(`/proc/${sb.initPid}/ns/pid`);
  if (typeof ns !== 'string') return undefined;
  pidNsCache.set(sb, ns);
  return ns;
}

/**
 * A host pid or tid as the sandbox sees it: its namespace number if it lives in the sandbox's pid
 * namespace, 0 otherwise (a parent or tracer outside the sandbox, as in a real pid namespace).
 */
export function visiblePid(sb: Sandbox, hostPid: number): number {
  if (!Number.isSafeInteger(hostPid) || hostPid <= 0) return 0;
  const mine = sandboxPidNs(sb);
  if (mine === undefined || linkHost(`/proc/${hostPid}/ns/pid`) !== mine) return 0;
  return nsPid(hostPid);
}

/**
 * The uid (or gid) translation of a process's user namespace: host id to the id the process sees
 * (the overflow id when unmapped, and for everything if the map cannot be read).
 */
export function idMapper(hostPid: number, kind: 'uid' | 'gid'): (id: number) => number {
  const text = readHost(`/proc/${hostPid}/${kind}_map`);
  const ranges: Array<[number, number, number]> = [];
  if (typeof text === 'string') {
    for (const line of text.split('\n')) {
      const [inside, outside, count] = line.trim().split(/\s+/).map(Number);
      if (inside !== undefined && outside !== undefined && count !== undefined && count > 0) ranges.push([inside, outside, count]);
    }
  }
  return (id) => {
    for (const [inside, outside, count] of ranges) if (id >= outside && id < outside + count) return inside + (id - outside);
    return OVERFLOW_ID;
  };
}

/** The effective uid and gid of a host process (host ids), or undefined if it is gone. */
export function hostOwner(hostPid: number): readonly [number, number] | undefined {
  const status = readHost(`/proc/${hostPid}/status`);
  if (typeof status === 'number') return undefined;
  const uid = Number(field(status, 'Uid')?.split(/\s+/)[1]);
  const gid = Number(field(status, 'Gid')?.split(/\s+/)[1]);
  return Number.isSafeInteger(uid) && Number.isSafeInteger(gid) ? [uid, gid] : undefined;
}

/** The effective uid and gid of a host process as the process itself sees them (root if it is gone). */
export function owner(hostPid: number): readonly [number, number] {
  const ids = hostOwner(hostPid);
  if (ids === undefined) return [0, 0];
  return [idMapper(hostPid, 'uid')(ids[0]), idMapper(hostPid, 'gid')(ids[1])];
}

/** CPUs the sandbox has (at least 1). */
export function cpuCount(sb: Sandbox): number {
  const n = Math.ceil(sb.limits.cpus);
  return Number.isFinite(n) && n >= 1 ? n : 1;
}

/** The sandbox's uptime in seconds (since `sb.bootTime`). */
export function uptime(sb: Sandbox): number {
  return Math.max(0, (Date.now() - sb.bootTime) / 1000);
}

let hostBoot: number | undefined;

/** The host's boot time in ms since the epoch (never shown; used to rebase start times). */
function hostBootMs(): number {
  if (hostBoot !== undefined) return hostBoot;
  const text = readHost('/proc/uptime');
  const up = typeof text === 'string' ? Number(text.split(' ')[0]) : NaN;
  hostBoot = Number.isFinite(up) ? Date.now() - up * 1000 : 0;
  return hostBoot;
}

/** A start time in ticks since host boot (stat field 22) rebased on the sandbox's boot time. */
export function startTicks(sb: Sandbox, hostTicks: number): number {
  const offset = Math.round((sb.bootTime - hostBootMs()) / (1000 / CLK_TCK));
  return Math.max(0, hostTicks - Math.max(0, offset));
}

/** What the sandbox's processes use right now. */
export interface Usage {
  /** Processes. */
  procs: number;
  /** Threads of all processes (sysinfo's procs, loadavg's total). */
  threads: number;
  /** Processes in state R (at least 1: the caller). */
  running: number;
  /** Processes in state D. */
  blocked: number;
  /** The highest namespace pid in use (loadavg's last pid, /proc/stat's processes). */
  lastPid: number;
  /** Resident memory of all processes, in bytes. */
  rssBytes: number;
  /** User CPU time of the sandbox in ticks (never decreasing). */
  userTicks: number;
  /** System CPU time of the sandbox in ticks (never decreasing). */
  systemTicks: number;
}

const cpuSeen = new WeakMap<Sandbox, { user: number; system: number }>();

/**
 * Sums the sandbox's processes: one read of /proc/PID/stat each (its rss field is statm's
 * resident count). CPU time counts live processes and the children they reaped, and never goes
 * back, so that top and friends see sane deltas.
 */
export function usage(sb: Sandbox): Usage {
  const u: Usage = { procs: 0, threads: 0, running: 0, blocked: 0, lastPid: 0, rssBytes: 0, userTicks: 0, systemTicks: 0 };
  for (const p of processes(sb)) {
    const text = readHost(`/proc/${p.host}/stat`);
    const st = typeof text === 'string' ? parseStat(text) : undefined;
    if (st === undefined) continue;
    u.procs++;
    u.lastPid = Math.max(u.lastPid, p.ns);
    const state = st.rest[0];
    if (state === 'R') u.running++;
    if (state === 'D') u.blocked++;
    u.threads += Math.max(1, statField(st.rest, 20));
    u.rssBytes += statField(st.rest, 24) * PAGE_SIZE;
    u.userTicks += statField(st.rest, 14) + statField(st.rest, 16);
    u.systemTicks += statField(st.rest, 15) + statField(st.rest, 17);
  }
  u.running = Math.max(1, u.running);
  const seen = cpuSeen.get(sb) ?? { user: 0, system: 0 };
  seen.user = u.userTicks = Math.max(seen.user, u.userTicks);
  seen.system = u.systemTicks = Math.max(seen.system, u.systemTicks);
  cpuSeen.set(sb, seen);
  return u;
}

/** Idle CPU time of the sandbox in ticks: all its CPUs since boot, less what its processes used. */
export function idleTicks(sb: Sandbox, u: Usage): number {
  return Math.max(0, Math.floor(uptime(sb) * CLK_TCK * cpuCount(sb)) - u.userTicks - u.systemTicks);
}

/** The host's memory in bytes (reported only when the sandbox has no memory limit). */
function hostMemTotal(): number {
  const text = readHost('/proc/meminfo');
  const kb = typeof text === 'string' ? Number(field(text, 'MemTotal')?.split(/\s+/)[0]) : NaN;
  return Number.isFinite(kb) ? kb * 1024 : 0;
}

/** The sandbox's memory in bytes: its limit (or the host total), what its processes use, and the rest. */
export function memory(sb: Sandbox, u: Usage = usage(sb)): { total: number; used: number; free: number } {
  const total = sb.limits.memoryBytes ?? hostMemTotal();
  const used = Math.min(total, u.rssBytes);
  return { total, used, free: total - used };
}
