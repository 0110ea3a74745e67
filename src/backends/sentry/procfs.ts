/**
 * The synthesized /proc and /sys of a sentry sandbox. The workload's mount namespace has neither:
 * every path under them is served here, from the sandbox's own view (view.ts), so that no host
 * pid, process, mount, hostname or clock reaches the workload.
 *
 * A file opens as a fresh sealed, read-only memfd holding its content at open time (as procfs
 * computes a file when it is read). A directory opens as a real directory under the sandbox's
 * scratch dir whose entries mirror the listing (refreshTree), so getdents works unchanged. The
 * magic links (exe, cwd, root, fd/N) are followed by the kernel itself through the host's /proc
 * of the workload process, which yields exactly the object the workload would get.
 *
 * Paths are canonical absolute container paths (latin1 strings, no ".", ".." or "//").
 */
import { fstatSync, lstatSync, mkdirSync, opendirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync, type Dirent } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, posix } from 'node:path';

import { E, O, close, cpath, fcntl, fstatat, memfdCreate, openat, pidfdGetfd, pidfdOpen, pwrite } from '../../sys/kernel.js';
import { fail, giveFd, type Creds, type Reply, type Sandbox, type Task } from './types.js';
import { PIDFD_THREAD, statusIds } from './task.js';
import * as v from './view.js';
// the synthesized trees run as the sentry: their scratch mirrors and the host files they read
// are root's, and they check the caller's access themselves (node access rules, dacAllows)
import { asSentry } from './ident.js';

/** The kernel release the sandbox reports (re-exported from view.ts). */
export const RELEASE = v.RELEASE;

/** st_dev of everything under /proc. */
export const PROC_DEV = 0x16;
/** st_dev of everything under /sys. */
export const SYS_DEV = 0x17;

const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_ADD_SEALS = 1033;
const F_SEAL_SEAL = 1;
const F_SEAL_SHRINK = 2;
const F_SEAL_GROW = 4;
const F_SEAL_WRITE = 8;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
/** Prefix of the memfd names, so that a readlink of such an fd shows the synthetic path. */
const MEMFD_PREFIX = 'moat:';
/** memfd names are at most 249 bytes. */
const MEMFD_NAME_MAX = 249;
/** Symlink hops within the synthetic tree before ELOOP. */
const MAX_HOPS = 8;

/** Who asks (absent when a listing is refreshed without a caller) and for which sandbox. */
interface Ctx {
  t: Task | undefined;
  sb: Sandbox;
}

/** A file's content, or -errno. */
type Content = string | Buffer | number;
/** Owner of a node as the workload sees it: uid, gid. */
type Owner = () => readonly [number, number];

interface Common {
  /** Owner (root if absent). */
  owner?: Owner;
  /** 0, or the -errno that opening (or reading the link) fails with. */
  access?: () => number;
  /**
   * Permission bits stat shows, where procfs narrows them (the defaults: files 0444, directories
   * 0555, links 0777). Files the kernel makes writable (comm, oom_score_adj) stay 0444: the
   * sentry serves no writes to them.
   */
  perm?: number;
}
interface DirNode extends Common {
  kind: 'dir';
  /** 0, or the -errno a lookup in it fails with (search permission); absent: allowed. */
  search?: () => number;
  list(): Array<[string, Node]>;
  child(name: string): Node | null;
  /**
   * The listing an open of this directory at container path `path` mirrors, where it differs
   * from `list` (an fd directory the opener's own fd joins).
   */
  listForOpen?(path: string): Array<[string, Node]>;
  /** What stat reports as its size, where procfs reports one (0 if absent). */
  size?(): number;
}
interface FileNode extends Common {
  kind: 'file';
  read(): Content;
}
interface LinkNode extends Common {
  kind: 'link';
  /** The target, or -errno. */
  target(): string | number;
  /** For a magic link: the host /proc path the kernel follows. */
  magic?: string;
}
type Node = DirNode | FileNode | LinkNode;

/** A static subtree: a function is a file, an object a directory. */
interface Spec {
  [name: string]: Spec | ((c: Ctx) => Content);
}

const file = (read: () => Content, extra: Common = {}): FileNode => ({ kind: 'file', read, ...extra });
const link = (target: () => string | number, extra: Common & { magic?: string } = {}): LinkNode => ({ kind: 'link', target, ...extra });

/** A directory of named children built on demand. */
function dirOf(entries: Readonly<Record<string, () => Node>>, extra: Common = {}): DirNode {
  return {
    kind: 'dir',
    ...extra,
    list: () => Object.keys(entries).map((name): [string, Node] => [name, (entries[name] as () => Node)()]),
    child: (name) => (Object.hasOwn(entries, name) ? (entries[name] as () => Node)() : null),
  };
}

function specNode(c: Ctx, spec: Spec | ((c: Ctx) => Content)): Node {
  if (typeof spec === 'function') return file(() => spec(c));
  const entries: Record<string, () => Node> = {};
  for (const [name, sub] of Object.entries(spec)) entries[name] = () => specNode(c, sub);
  return dirOf(entries);
}

const once = <T>(f: () => T): (() => T) => {
  let done = false;
  let val: T | undefined;
  return () => {
    if (!done) {
      val = f();
      done = true;
    }
    return val as T;
  };
};

/** True for /proc, /sys and every path below them. */
export function isSynthetic(path: string): boolean {
  return path === '/proc' || path.startsWith('/proc/') || path === '/sys' || path.startsWith('/sys/');
}

/** Rewrites a leading /proc/self or /proc/thread-self to the caller's namespace pid (and tid). */
export function resolveSelf(t: Task, path: string): string {
  const swap = (prefix: string, to: () => string): string | undefined =>
    path === prefix || path.startsWith(`${prefix}/`) ? to() + path.slice(prefix.length) : undefined;
  return (
    swap('/proc/self', () => `/proc/${v.nsPid(t.tgid)}`) ??
    swap('/proc/thread-self', () => `/proc/${v.nsPid(t.tgid)}/task/${v.nsPid(t.tid)}`) ??
    path
  );
}

// ---------------------------------------------------------------------------------------------
// Access checks

/** Whether `cr` may access (r=4, w=2) an object of this mode and host owner, as DAC would. */
function dacAllows(mode: number, uid: number, gid: number, cr: Creds, want: number): boolean {
  if (want === 0) return true;
  const bits = cr.fsuid === uid ? mode >> 6 : cr.fsgid === gid || cr.groups.includes(gid) ? mode >> 3 : mode;
  if ((bits & want & 7) === want) return true;
  // the capabilities that override it (root has them only when its set does: runc's and Docker's do)
  const caps = cr.caps ?? 0n;
  return hasCap(caps, CAP_DAC_OVERRIDE) || ((want & 2) === 0 && hasCap(caps, CAP_DAC_READ_SEARCH));
}

/**
 * DAC of a per-process procfs entry of mode `perm` (fd 0500, environ 0400): owned by the
 * process's effective ids while it is dumpable, else by root, as the host's /proc/PID shows.
 * `want`: 4 read, 1 search. 0, or -EACCES.
 */
function procDac(c: Ctx, host: number, perm: number, want: number): number {
  // a process always reaches its own (procfs lets its thread group through, dumpable or not)
  if (c.t === undefined || c.t.tgid === host) return 0;
  const st = lstatSync(`/proc/${host}`, { throwIfNoEntry: false });
  if (st === undefined) return -E.ENOENT;
  return dacAllows(perm, st.uid, st.gid, c.t.creds(), want) ? 0 : -E.EACCES;
}

/** Whether capability `cap` is in the mask `caps`. */
const hasCap = (caps: bigint, cap: bigint): boolean => ((caps >> cap) & 1n) === 1n;
const CAP_DAC_OVERRIDE = 1n;
const CAP_DAC_READ_SEARCH = 2n;

/** The r/w bits an open with `flags` needs (none for O_PATH). */
function wanted(flags: number): number {
  if ((flags & O.PATH) !== 0) return 0;
  const acc = flags & O.ACCMODE;
  return (acc === O.WRONLY ? 0 : 4) | (acc !== O.RDONLY || (flags & O.TRUNC) !== 0 ? 2 : 0);
}

/** CAP_SYS_PTRACE's bit in a status CapEff mask. */
const CAP_SYS_PTRACE = 19n;

/**
 * procfs's read check of another process (the kernel's ptrace_may_access with
 * PTRACE_MODE_READ_FSCREDS, without an LSM): the caller may look at its own process; at another
 * with CAP_SYS_PTRACE, or when that process's real, effective and saved uids are all the caller's
 * fsuid and its gids all its fsgid and it is dumpable (procfs shows a process that is not, a
 * set-id program say, as root's). Root is no exception: a root process without CAP_SYS_PTRACE
 * (the default set of runc and Docker) may not read a uid-1000 process's fds or environ.
 */
function mayAccess(c: Ctx, host: number): number {
  if (c.t === undefined || c.t.tgid === host) return 0;
  const cr = c.t.creds();
  if (hasCap(cr.caps ?? 0n, CAP_SYS_PTRACE)) return 0;
  const theirs = v.readHost(`/proc/${host}/status`);
  if (typeof theirs === 'number') return -E.EACCES;
  const uids = statusIds(theirs, 'Uid').slice(0, 3);
  const gids = statusIds(theirs, 'Gid').slice(0, 3);
  if (uids.length < 3 || gids.length < 3 || !uids.every((u) => u === cr.fsuid) || !gids.every((g) => g === cr.fsgid)) return -E.EACCES;
  if (cr.fsuid !== 0 && lstatSync(`/proc/${host}`, { throwIfNoEntry: false })?.uid !== cr.fsuid) return -E.EACCES;
  return 0;
}

/**
 * Runs `fn` (a read of host /proc under `dir`) with the sentry's file-system ids set to the
 * owner of host directory `dir` (ident.ts asOwner): a non-root workload's /proc/PID/fd is its
 * own, mode 0500, and its environ 0400, and the sentry then holds no DAC capability.
 */
function asHostOwner<T>(c: Ctx, dir: string, fn: () => T): T {
  const ids = c.sb.ids;
  if (ids === undefined) return fn();
  let owner: { uid: number; gid: number };
  try {
    owner = lstatSync(dir);
  } catch {
    return fn(); // gone: fn answers for it
  }
  return ids.asOwner(owner.uid, owner.gid, fn);
}

// ---------------------------------------------------------------------------------------------
// Magic-link targets

/** A host readlink of a workload's link as the workload should see it (no scratch or memfd names). */
function translateTarget(sb: Sandbox, target: string): string {
  const scratch = sb.scratchDir.endsWith('/') ? sb.scratchDir.slice(0, -1) : sb.scratchDir;
  if (target === scratch) return '/';
  if (target.startsWith(`${scratch}/`)) return target.slice(scratch.length);
  const memfd = `/memfd:${MEMFD_PREFIX}`;
  if (target.startsWith(memfd) && target.endsWith(' (deleted)')) {
    const p = target.slice(memfd.length, -' (deleted)'.length);
    if (isSynthetic(p)) return p;
  }
  return target;
}

function magic(c: Ctx, hostPath: string, host: number, owner: Owner, fixed?: string): LinkNode {
  const access = (): number => mayAccess(c, host);
  return link(
    () => {
      const a = access();
      if (a < 0) return a;
      if (fixed !== undefined) return fixed;
      const t = asHostOwner(c, posix.dirname(hostPath), () => v.linkHost(hostPath));
      return typeof t === 'number' ? t : translateTarget(c.sb, t);
    },
    { magic: hostPath, access, owner },
  );
}

// ---------------------------------------------------------------------------------------------
// /proc/PID

const field = v.field;

/**
 * True when the task shown (host tid `shown`) is the caller itself: it reads its own stat or
 * status while it waits for the sentry, which the kernel shows as sleeping; natively a task
 * reading its own state is running (ps shows itself R, top counts itself running).
 */
const isCaller = (c: Ctx, shown: number): boolean => c.t !== undefined && c.t.tid === shown;

/** /proc/PID/stat with every pid-like field in the sandbox's namespace and a rebased start time. */
function procStat(c: Ctx, base: string, shown: number): Content {
  const text = v.readHost(`${base}/stat`);
  if (typeof text === 'number') return text;
  const status = v.readHost(`${base}/status`);
  if (typeof status === 'number') return status;
  const st = v.parseStat(text);
  if (st === undefined) return -E.EIO;
  const { rest } = st;
  const set = (n: number, val: number): void => {
    if (rest.length > n - 3) rest[n - 3] = String(val);
  };
  const pgid = field(status, 'NSpgid');
  set(4, v.visiblePid(c.sb, v.statField(rest, 4)));
  set(5, v.lastNumber(pgid));
  set(6, v.lastNumber(field(status, 'NSsid')));
  const tpgid = v.statField(rest, 8);
  if (tpgid > 0) set(8, tpgid === Number(pgid?.split(/\s+/)[0]) ? v.lastNumber(pgid) : v.visiblePid(c.sb, tpgid));
  set(22, v.startTicks(c.sb, v.statField(rest, 22)));
  set(39, v.statField(rest, 39) % v.cpuCount(c.sb));
  if (isCaller(c, shown)) rest[0] = 'R';
  return `${v.lastNumber(field(status, 'NSpid'))} ${st.comm} ${rest.join(' ')}\n`;
}

function cpuMask(n: number): string {
  const hex = ((1n << BigInt(n)) - 1n).toString(16).padStart(Math.ceil(n / 4), '0');
  const groups: string[] = [];
  for (let end = hex.length; end > 0; end -= 8) groups.unshift(hex.slice(Math.max(0, end - 8), end));
  return groups.join(',');
}

/** /proc/PID/status with pids, ids and CPU affinity as the sandbox sees them. */
function procStatus(c: Ctx, base: string, host: number, shown: number): Content {
  const text = v.readHost(`${base}/status`);
  if (typeof text === 'number') return text;
  const uid = v.idMapper(host, 'uid');
  const gid = v.idMapper(host, 'gid');
  const cpus = v.cpuCount(c.sb);
  const ids = (val: string, map: (id: number) => number, sep = '\t'): string =>
    val
      .split(/\s+/)
      .filter((s) => s !== '')
      .map((s) => String(map(Number(s))))
      .join(sep);
  const out = text.split('\n').map((line) => {
    const colon = line.indexOf(':');
    if (colon < 0) return line;
    const key = line.slice(0, colon);
    const val = line.slice(colon + 1).trim();
    switch (key) {
      case 'State':
        return isCaller(c, shown) ? 'State:\tR (running)' : line;
      case 'Tgid':
        return `Tgid:\t${v.lastNumber(field(text, 'NStgid'))}`;
      case 'Pid':
        return `Pid:\t${v.lastNumber(field(text, 'NSpid'))}`;
      case 'Ngid':
        return 'Ngid:\t0';
      case 'PPid':
      case 'TracerPid':
        return `${key}:\t${v.visiblePid(c.sb, Number(val))}`;
      case 'NStgid':
      case 'NSpid':
      case 'NSpgid':
      case 'NSsid':
        return `${key}:\t${v.lastNumber(val)}`;
      case 'Uid':
        return `Uid:\t${ids(val, uid)}`;
      case 'Gid':
        return `Gid:\t${ids(val, gid)}`;
      case 'Groups':
        return `Groups:\t${ids(val, gid, ' ')} `;
      case 'Cpus_allowed':
        return `Cpus_allowed:\t${cpuMask(cpus)}`;
      case 'Cpus_allowed_list':
        return `Cpus_allowed_list:\t${cpus === 1 ? '0' : `0-${cpus - 1}`}`;
      default:
        return line;
    }
  });
  return out.join('\n');
}

interface MountRow {
  point: string;
  fstype: string;
  opts: string;
}

/** The table shown when the workload's own cannot be read. */
const FALLBACK_MOUNTS: readonly MountRow[] = [
  { point: '/', fstype: 'overlay', opts: 'rw,relatime' },
  { point: '/dev', fstype: 'tmpfs', opts: 'rw,nosuid' },
  { point: '/dev/pts', fstype: 'devpts', opts: 'rw,nosuid,noexec,relatime' },
  { point: '/dev/shm', fstype: 'tmpfs', opts: 'rw,nosuid,nodev,noexec,relatime' },
];
const PROC_ROW: MountRow = { point: '/proc', fstype: 'proc', opts: 'rw,nosuid,nodev,noexec,relatime' };
const SYS_ROW: MountRow = { point: '/sys', fstype: 'sysfs', opts: 'ro,nosuid,nodev,noexec,relatime' };
const CGROUP_ROW: MountRow = { point: '/sys/fs/cgroup', fstype: 'cgroup2', opts: 'ro,nosuid,nodev,noexec,relatime' };

/**
 * The workload's mounts: mount points, types and per-mount options of its own mount namespace
 * (container paths), with no source, bind root, device number or superblock option (those name
 * host paths), plus the synthesized /proc and /sys.
 */
function mountRows(host: number): MountRow[] {
  let rows: MountRow[] = [...FALLBACK_MOUNTS];
  const mine = v.linkHost('/proc/self/ns/mnt');
  const theirs = v.linkHost(`/proc/${host}/ns/mnt`);
  const text = typeof theirs === 'string' && theirs !== mine ? v.readHost(`/proc/${host}/mountinfo`) : -E.EPERM;
  if (typeof text === 'string') {
    const found: MountRow[] = [];
    for (const line of text.split('\n')) {
      const f = line.split(' ');
      const sep = f.indexOf('-', 6);
      const point = f[4];
      const opts = f[5];
      const fstype = f[sep + 1];
      if (sep < 0 || point === undefined || opts === undefined || fstype === undefined) continue;
      if (isSynthetic(point)) continue;
      found.push({ point, fstype, opts });
    }
    if (found.some((r) => r.point === '/')) rows = found;
  }
  const root = rows.findIndex((r) => r.point === '/');
  rows.splice(root + 1, 0, PROC_ROW, SYS_ROW, CGROUP_ROW);
  return rows;
}

function mountsText(host: number): string {
  return mountRows(host)
    .map((r) => `${r.fstype} ${r.point} ${r.fstype} ${r.opts} 0 0\n`)
    .join('');
}

function mountinfoText(host: number): string {
  const rows = mountRows(host);
  const ids = rows.map((_, i) => 21 + i);
  return rows
    .map((r, i) => {
      let parent = 20;
      let best = -1;
      for (let j = 0; j < rows.length; j++) {
        const p = (rows[j] as MountRow).point;
        if (j === i || p.length <= best || p.length >= r.point.length) continue;
        if (p === '/' || r.point.startsWith(`${p}/`)) {
          best = p.length;
          parent = ids[j] as number;
        }
      }
      const ro = r.opts.split(',').includes('ro') ? 'ro' : 'rw';
      return `${ids[i]} ${parent} 0:${30 + i} / ${r.point} ${r.opts} - ${r.fstype} ${r.fstype} ${ro}\n`;
    })
    .join('');
}

/** /proc/PID (or /proc/PID/task/TID when `th` is given). */
function procDir(c: Ctx, p: v.Proc, th?: v.Proc): DirNode {
  const base = th === undefined ? `/proc/${p.host}` : `/proc/${p.host}/task/${th.host}`;
  const owner = once(() => v.owner(p.host));
  const extra: Common = { owner };
  const host = (name: string) => (): Node => file(() => v.readHostBuf(`${base}/${name}`), extra);
  // procfs checks ptrace access when these are opened (a process of the same user, or root, may
  // read another's maps or environ: ps e, lsof and top do); auxv, environ, io and personality are also 0400
  const traced = (name: string, perm = 0o400) => (): Node =>
    file(() => (c.t !== undefined && mayAccess(c, p.host) === 0 && procDac(c, p.host, perm, 4) === 0 ? asHostOwner(c, base, () => v.readHostBuf(`${base}/${name}`)) : -E.EACCES), { ...extra, perm });
  // no audit login session: what a process started outside any login has
  const unset = (): Node => file(() => '4294967295', extra);
  const entries: Record<string, () => Node> = {
    auxv: traced('auxv'),
    cgroup: () => file(() => '0::/\n', extra),
    cmdline: host('cmdline'),
    comm: host('comm'),
    cwd: () => magic(c, `${base}/cwd`, p.host, owner),
    environ: traced('environ'),
    exe: () => magic(c, `${base}/exe`, p.host, owner),
    fd: () => fdDir(c, p.host, base, owner),
    fdinfo: () => fdinfoDir(c, p.host, base, owner),
    gid_map: host('gid_map'),
    io: traced('io'),
    limits: host('limits'),
    loginuid: unset,
    maps: traced('maps', 0o444),
    mountinfo: () => file(() => mountinfoText(p.host), extra),
    mounts: () => file(() => mountsText(p.host), extra),
    net: () => netDir(c, p.host),
    ns: () => nsDir(c, p.host, base, owner),
    oom_score: host('oom_score'),
    oom_score_adj: host('oom_score_adj'),
    personality: traced('personality'),
    root: () => magic(c, `${base}/root`, p.host, owner, '/'),
    sessionid: unset,
    setgroups: host('setgroups'),
    smaps: traced('smaps', 0o444),
    smaps_rollup: traced('smaps_rollup', 0o444),
    stat: () => file(() => procStat(c, base, th?.host ?? p.host), extra),
    statm: host('statm'),
    status: () => file(() => procStatus(c, base, p.host, th?.host ?? p.host), extra),
    uid_map: host('uid_map'),
    // the kernel function a process sleeps in is host data: "0", as for a running process
    wchan: () => file(() => '0', extra),
  };
  if (th === undefined) entries.task = () => taskDir(c, p, owner);
  return dirOf(entries, extra);
}

/** /proc/PID/fd: one magic link per open fd. */
function fdDir(c: Ctx, host: number, base: string, owner: Owner): DirNode {
  const entry = (n: string): LinkNode => magic(c, `${base}/fd/${n}`, host, owner);
  return {
    // mode 0500: opening (listing) it and a lookup in it are DAC's; each link then checks ptrace
    // access itself
    ...fdTableDir(c, host, base, owner, entry, (path) => link(() => path, { owner }), {
      access: () => procDac(c, host, 0o500, 4),
      search: () => procDac(c, host, 0o500, 1),
    }),
    perm: 0o500,
    // procfs reports the number of open fds as its size (Linux 6.2 on): the host's own figure
    size: () => {
      if (mayAccess(c, host) < 0) return 0;
      const st = asHostOwner(c, base, () => lstatSync(`${base}/fd`, { throwIfNoEntry: false }));
      return st?.size ?? 0;
    },
  };
}

/**
 * The fd numbers of process `host` (under `base`), ascending. procfs lists them to whoever may
 * open the directory (its DAC, checked by the open); following one needs ptrace access.
 */
function fdNames(c: Ctx, host: number, base: string): string[] {
  const names = asHostOwner(c, `${base}/fd`, () => v.listHost(`${base}/fd`));
  return typeof names === 'number' ? [] : names.sort((a, b) => Number(a) - Number(b));
}

const FD_NAME = /^(0|[1-9]\d{0,9})$/;

/**
 * A directory with an entry per open fd of process `host` (fd, fdinfo). An open of one of the
 * opener's own lists the fd of that open too, as procfs does (the kernel installs it before any
 * getdents): the lowest number free in the table now, as `own` makes it for the opened path.
 */
function fdTableDir(c: Ctx, host: number, base: string, owner: Owner, entry: (n: string) => Node, own: (path: string) => Node, gate: Pick<DirNode, 'access' | 'search'>): DirNode {
  const access = (): number => mayAccess(c, host);
  return {
    kind: 'dir',
    owner,
    ...gate,
    list: () => fdNames(c, host, base).map((n): [string, Node] => [n, entry(n)]),
    child: (name) => {
      // a lookup finds an open fd whoever asks; the entry's own check refuses what follows
      if (!FD_NAME.test(name)) return null;
      return typeof asHostOwner(c, `${base}/fd`, () => v.linkHost(`${base}/fd/${name}`)) === 'string' ? entry(name) : null;
    },
    listForOpen: (path) => {
      const names = fdNames(c, host, base);
      const listed = names.map((n): [string, Node] => [n, entry(n)]);
      if (c.t === undefined || c.t.tgid !== host || access() < 0) return listed;
      const used = new Set(names);
      let n = 0;
      while (used.has(String(n))) n++;
      listed.push([String(n), own(path)]);
      return listed.sort((a, b) => Number(a[0]) - Number(b[0]));
    },
  };
}

/** /proc/PID/fdinfo: one file per open fd, its host text with only what holds no host data. */
function fdinfoDir(c: Ctx, host: number, base: string, owner: Owner): DirNode {
  const access = (): number => mayAccess(c, host);
  const entry = (n: string): FileNode => file(() => (access() < 0 ? -E.EACCES : fdinfoText(c, host, base, n)), { owner, access });
  // mode 0555, and procfs checks ptrace access to open it or look up in it
  return fdTableDir(c, host, base, owner, entry, () => file(() => '', { owner }), { access, search: access });
}

/** The mount id of the synthesized mountinfo for an fd whose target is `target` (a sandbox path, or "pipe:[N]" and the like). */
function mountIdOf(host: number, target: string): number {
  if (!target.startsWith('/')) return 15; // pipefs, sockfs, anon inodes: internal mounts mountinfo never lists
  const rows = mountRows(host);
  let best = -1;
  let id = 21;
  rows.forEach((r, i) => {
    if (r.point.length > best && (r.point === '/' || target === r.point || target.startsWith(`${r.point}/`))) {
      best = r.point.length;
      id = 21 + i;
    }
  });
  return id;
}

/** Keys of fdinfo lines passed as they are: they hold no host data. */
const FDINFO_KEEP = new Set(['pos', 'flags', 'ino', 'eventfd-count', 'eventfd-id', 'eventfd-semaphore', 'clockid', 'ticks', 'settime flags',
  'it_value', 'it_interval', 'sigmask', 'tfd', 'inotify']);

/**
 * The lines of an fdinfo file the sandbox may see: position, flags, inode and the per-type
 * lines of eventfd, timerfd, signalfd, epoll and inotify; mnt_id in the synthesized mountinfo's
 * numbering; the pids of a pidfd and of file locks in the sandbox's pid namespace. Lines of
 * other kinds are left out: they may hold host data.
 */
function fdinfoText(c: Ctx, host: number, base: string, n: string): Content {
  const text = asHostOwner(c, `${base}/fdinfo`, () => v.readHost(`${base}/fdinfo/${n}`));
  if (typeof text === 'number') return text;
  const target = asHostOwner(c, `${base}/fd`, () => v.linkHost(`${base}/fd/${n}`));
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon);
    if (FDINFO_KEEP.has(key)) out.push(line);
    else if (key === 'mnt_id') out.push(`mnt_id:\t${mountIdOf(host, typeof target === 'string' ? translateTarget(c.sb, target) : '')}`);
    else if (key === 'Pid' || key === 'NSpid') {
      const pid = v.visiblePid(c.sb, Number(line.slice(colon + 1).trim().split(/\s+/)[0]));
      out.push(`${key}:\t${pid === 0 ? -1 : pid}`);
    } else if (key === 'lock') {
      // lock:\t1: FLOCK  ADVISORY  WRITE 1234 00:2e:5678 0 EOF -- the sixth field is a pid
      const m = /^(lock:\s+\d+:\s+(?:->\s+)?\S+\s+\S+\s+\S+\s+)(-?\d+)(\s.*)$/.exec(line);
      if (m) out.push(`${m[1]}${v.visiblePid(c.sb, Number(m[2]))}${m[3]}`);
    }
  }
  return out.length ? `${out.join('\n')}\n` : '';
}

/**
 * The files of /proc/PID/net passed on: the tables of sockets, interfaces, routes and counters of
 * the sandbox's own network namespace. Not unix, packet or netlink: their lines carry host paths
 * (a socket the sentry bound) or host pids.
 */
const NET_FILES = ['dev', 'if_inet6', 'ipv6_route', 'netstat', 'raw', 'raw6', 'route', 'snmp', 'snmp6', 'sockstat', 'sockstat6', 'tcp', 'tcp6', 'udp', 'udp6'];

/** The /proc/net files with a column of kernel pointers (the others hold no 16-digit hex numbers, but may hold 16-digit counters). */
const SOCKET_TABLES = new Set(['raw', 'raw6', 'tcp', 'tcp6', 'udp', 'udp6']);
/** A kernel pointer as the socket tables print it (16 hex digits, hashed): nothing a sandbox needs. */
const KERNEL_POINTER = /\b[0-9a-f]{16}\b/g;

/**
 * /proc/PID/net: the process's network namespace, which is the sandbox's (it cannot make or join
 * another: unshare, setns and clone's CLONE_NEWNET are refused). Read from the host's
 * /proc/PID/net, kernel pointers zeroed; empty if the process shares the sentry's own namespace
 * (the host network), whose tables are host data.
 */
function netDir(c: Ctx, host: number): DirNode {
  const entries: Record<string, () => Node> = {};
  for (const name of NET_FILES) {
    entries[name] = () => file(() => {
      if (v.linkHost(`/proc/${host}/ns/net`) === v.linkHost('/proc/self/ns/net')) return '';
      const text = v.readHost(`/proc/${host}/net/${name}`);
      if (typeof text === 'number' || !SOCKET_TABLES.has(name)) return text;
      return text.replace(KERNEL_POINTER, '0000000000000000');
    });
  }
  return dirOf(entries, { perm: 0o555 });
}

/** The namespace links of /proc/PID/ns, in the kernel's order. */
const NS_NAMES = ['net', 'uts', 'ipc', 'pid', 'pid_for_children', 'user', 'mnt', 'cgroup', 'time', 'time_for_children'];

/** /proc/PID/ns: the magic links to the process's own namespaces (the sandbox's), as procfs shows them. */
function nsDir(c: Ctx, host: number, base: string, owner: Owner): DirNode {
  const entries: Record<string, () => Node> = {};
  for (const name of NS_NAMES) entries[name] = () => magic(c, `${base}/ns/${name}`, host, owner);
  return dirOf(entries, { owner, access: () => mayAccess(c, host), perm: 0o511 });
}

/** /proc/PID/task: one directory per thread, by namespace tid. */
function taskDir(c: Ctx, p: v.Proc, owner: Owner): DirNode {
  return {
    kind: 'dir',
    owner,
    list: () => v.threads(p.host).map((th): [string, Node] => [String(th.ns), procDir(c, p, th)]),
    child: (name) => {
      const ns = Number(name);
      if (!/^[1-9]\d*$/.test(name)) return null;
      const host = ns === p.ns ? p.host : v.hostTidOf(p.host, ns);
      return host === undefined ? null : procDir(c, p, { host, ns });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// /proc files

const kb = (bytes: number): number => Math.floor(bytes / 1024);

function meminfo(c: Ctx): string {
  const m = v.memory(c.sb);
  const rows: Array<[string, number, boolean?]> = [
    ['MemTotal', kb(m.total)],
    ['MemFree', kb(m.free)],
    ['MemAvailable', kb(m.free)],
    ['Buffers', 0],
    ['Cached', 0],
    ['SwapCached', 0],
    ['Active', kb(m.used)],
    ['Inactive', 0],
    ['Active(anon)', kb(m.used)],
    ['Inactive(anon)', 0],
    ['Active(file)', 0],
    ['Inactive(file)', 0],
    ['Unevictable', 0],
    ['Mlocked', 0],
    ['SwapTotal', 0],
    ['SwapFree', 0],
    ['Zswap', 0],
    ['Zswapped', 0],
    ['Dirty', 0],
    ['Writeback', 0],
    ['AnonPages', kb(m.used)],
    ['Mapped', 0],
    ['Shmem', 0],
    ['KReclaimable', 0],
    ['Slab', 0],
    ['SReclaimable', 0],
    ['SUnreclaim', 0],
    ['KernelStack', 0],
    ['PageTables', 0],
    ['SecPageTables', 0],
    ['NFS_Unstable', 0],
    ['Bounce', 0],
    ['WritebackTmp', 0],
    ['CommitLimit', kb(m.total / 2)],
    ['Committed_AS', kb(m.used)],
    ['VmallocTotal', 34359738367],
    ['VmallocUsed', 0],
    ['VmallocChunk', 0],
    ['Percpu', 0],
    ['HardwareCorrupted', 0],
    ['AnonHugePages', 0],
    ['ShmemHugePages', 0],
    ['ShmemPmdMapped', 0],
    ['FileHugePages', 0],
    ['FilePmdMapped', 0],
    ['HugePages_Total', 0, false],
    ['HugePages_Free', 0, false],
    ['HugePages_Rsvd', 0, false],
    ['HugePages_Surp', 0, false],
    ['Hugepagesize', 2048],
    ['Hugetlb', 0],
  ];
  return rows.map(([k, n, unit = true]) => `${`${k}:`.padEnd(16)}${String(n).padStart(8)}${unit ? ' kB' : ''}\n`).join('');
}

let hostCpu: string[] | undefined;

/** The host's first processor entry, as lines (model information only is kept from it). */
function hostCpuLines(): string[] {
  if (hostCpu !== undefined) return hostCpu;
  const text = v.readHost('/proc/cpuinfo');
  const first = typeof text === 'string' ? (text.split('\n\n')[0] ?? '') : '';
  const lines = first.split('\n').filter((l) => l.includes(':'));
  hostCpu = lines.length > 0 ? lines : ['processor\t: 0', 'vendor_id\t: GenuineIntel', 'model name\t: Virtual CPU'];
  return hostCpu;
}

function cpuinfo(c: Ctx): string {
  const n = v.cpuCount(c.sb);
  const blocks: string[] = [];
  for (let i = 0; i < n; i++) {
    const lines = hostCpuLines().map((line) => {
      const colon = line.indexOf(':');
      const key = line.slice(0, colon).trim();
      const head = line.slice(0, colon + 1);
      switch (key) {
        case 'processor':
        case 'core id':
        case 'apicid':
        case 'initial apicid':
          return `${head} ${i}`;
        case 'physical id':
          return `${head} 0`;
        case 'siblings':
        case 'cpu cores':
          return `${head} ${n}`;
        default:
          return line;
      }
    });
    blocks.push(`${lines.join('\n')}\n\n`);
  }
  return blocks.join('');
}

function procStatFile(c: Ctx): string {
  const u = v.usage(c.sb);
  const n = v.cpuCount(c.sb);
  const idle = v.idleTicks(c.sb, u);
  const share = (total: number, i: number): number => Math.floor(total / n) + (i === 0 ? total % n : 0);
  const line = (name: string, user: number, system: number, idl: number): string => `${name} ${user} 0 ${system} ${idl} 0 0 0 0 0 0\n`;
  let out = line('cpu ', u.userTicks, u.systemTicks, idle);
  for (let i = 0; i < n; i++) out += line(`cpu${i}`, share(u.userTicks, i), share(u.systemTicks, i), share(idle, i));
  out += 'intr 0\nctxt 0\n';
  out += `btime ${Math.floor(c.sb.bootTime / 1000)}\n`;
  out += `processes ${u.lastPid}\nprocs_running ${u.running}\nprocs_blocked ${u.blocked}\n`;
  out += 'softirq 0 0 0 0 0 0 0 0 0 0 0\n';
  return out;
}

function uptimeFile(c: Ctx): string {
  const u = v.usage(c.sb);
  return `${v.uptime(c.sb).toFixed(2)} ${(v.idleTicks(c.sb, u) / v.CLK_TCK).toFixed(2)}\n`;
}

function loadavg(c: Ctx): string {
  const u = v.usage(c.sb);
  return `0.00 0.00 0.00 ${u.running}/${u.threads} ${u.lastPid}\n`;
}

const FILESYSTEMS = [
  'nodev\tsysfs',
  'nodev\ttmpfs',
  'nodev\tbdev',
  'nodev\tproc',
  'nodev\tcgroup2',
  'nodev\tdevtmpfs',
  'nodev\tbinfmt_misc',
  'nodev\tdevpts',
  'nodev\tmqueue',
  'nodev\tpipefs',
  'nodev\tsockfs',
  'nodev\toverlay',
  '\text4',
  '\tvfat',
].join('\n');

const line = (s: string) => (): string => `${s}\n`;

/**
 * A host sysctl that is a limit the host kernel enforces on the workload as on everyone (the
 * number of map areas, inotify watches, open files), not data about the host: passed through.
 */
const hostLimit = (name: string) => (): Content => v.readHostBuf(`/proc/sys/${name}`);

/** A UUID (version 4 layout) made from 16 bytes. */
function uuidOf(b: Buffer): string {
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** kernel.random.boot_id: one per sandbox (its own boot), the same in every thread of the sentry. */
const bootId = (sb: Sandbox): string => uuidOf(createHash('sha256').update(`moat boot ${sb.id} ${sb.bootTime}`).digest().subarray(0, 16));

/** The System V IPC limits of a new IPC namespace (the sandbox has its own): the kernel's defaults. */
const IPC_DEFAULTS = {
  shmmax: line('18446744073692774399'),
  shmall: line('18446744073692774399'),
  shmmni: line('4096'),
  msgmax: line('8192'),
  msgmnb: line('16384'),
  msgmni: line('32000'),
  sem: line('32000\t1024000000\t500\t32000'),
};

/**
 * /proc/sys with the spec's linux.sysctl on top: the jail set those keys in the sandbox's own
 * network and IPC namespaces, so they are what the sandbox's kernel objects obey.
 */
function withSysctls(spec: Spec, sysctl: Readonly<Record<string, string>> | undefined): Spec {
  for (const [key, value] of Object.entries(sysctl ?? {})) {
    const parts = key.split('.');
    let dir = spec['sys'];
    for (const part of parts.slice(0, -1)) {
      if (typeof dir !== 'object') break;
      const next: Spec | ((c: Ctx) => Content) = (dir[part] ??= {});
      dir = next;
    }
    if (typeof dir === 'object') dir[parts[parts.length - 1]!] = line(value);
  }
  return spec;
}

function procSpec(): Spec {
  return {
    cgroups: line('#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t1\t1\ncpu\t0\t1\t1\nmemory\t0\t1\t1\npids\t0\t1\t1'),
    cpuinfo,
    filesystems: line(FILESYSTEMS),
    loadavg,
    meminfo,
    stat: procStatFile,
    uptime: uptimeFile,
    version: line(`Linux version ${v.RELEASE} (moat@sentry) ${v.UTS_VERSION}`),
    // the sandbox's boot, not the host's parameters
    cmdline: line(`BOOT_IMAGE=/boot/vmlinuz-${v.RELEASE} ro quiet`),
    sys: {
      fs: {
        'file-max': hostLimit('fs/file-max'),
        inotify: {
          max_queued_events: hostLimit('fs/inotify/max_queued_events'),
          max_user_instances: hostLimit('fs/inotify/max_user_instances'),
          max_user_watches: hostLimit('fs/inotify/max_user_watches'),
        },
        nr_open: line('1048576'),
        'pipe-max-size': hostLimit('fs/pipe-max-size'),
      },
      kernel: {
        cap_last_cap: line('40'),
        domainname: line('(none)'),
        hostname: (c) => `${c.sb.hostname}\n`,
        ngroups_max: line('65536'),
        osrelease: line(v.RELEASE),
        ostype: line('Linux'),
        pid_max: line('4194304'),
        random: {
          boot_id: (c) => `${bootId(c.sb)}\n`,
          entropy_avail: line('256'),
          poolsize: line('256'),
          uuid: () => `${uuidOf(randomBytes(16))}\n`,
        },
        randomize_va_space: hostLimit('kernel/randomize_va_space'),
        'threads-max': hostLimit('kernel/threads-max'),
        version: line(v.UTS_VERSION),
        ...IPC_DEFAULTS,
      },
      net: { core: { somaxconn: line('4096') } },
      vm: { max_map_count: hostLimit('vm/max_map_count'), mmap_min_addr: hostLimit('vm/mmap_min_addr'), overcommit_memory: line('0') },
    },
  };
}

function selfTarget(c: Ctx): string {
  return String(c.t === undefined ? v.nsPid(c.sb.initPid) : v.nsPid(c.t.tgid));
}

function procRoot(c: Ctx): DirNode {
  const fixed = specNode(c, withSysctls(procSpec(), c.sb.sysctl)) as DirNode;
  const named: Record<string, () => Node> = {
    self: () => link(() => selfTarget(c)),
    'thread-self': () => link(() => (c.t === undefined ? `${selfTarget(c)}/task/${selfTarget(c)}` : `${selfTarget(c)}/task/${v.nsPid(c.t.tid)}`)),
    mounts: () => link(() => 'self/mounts'),
    net: () => link(() => 'self/net'),
  };
  return {
    kind: 'dir',
    list: () => [
      ...fixed.list(),
      ...Object.keys(named).map((n): [string, Node] => [n, (named[n] as () => Node)()]),
      ...v.processes(c.sb).map((p): [string, Node] => [String(p.ns), procDir(c, p)]),
    ],
    child: (name) => {
      if (Object.hasOwn(named, name)) return (named[name] as () => Node)();
      if (/^[1-9]\d*$/.test(name)) {
        const ns = Number(name);
        const host = v.hostPidOf(c.sb, ns);
        return host === undefined ? null : procDir(c, { host, ns });
      }
      return fixed.child(name);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// /sys

function sysRoot(c: Ctx): DirNode {
  const n = v.cpuCount(c.sb);
  const range = line(n === 1 ? '0' : `0-${n - 1}`);
  const cpu: Spec = { online: range, possible: range, present: range };
  for (let i = 0; i < n; i++) cpu[`cpu${i}`] = {};
  const spec: Spec = {
    class: {},
    devices: { system: { cpu } },
    fs: { cgroup: cgroupSpec(range) },
    kernel: { mm: { transparent_hugepage: { enabled: line('always [madvise] never') } } },
  };
  return specNode(c, spec) as DirNode;
}

/**
 * /sys/fs/cgroup: the sandbox's own cgroup, as a container with a private cgroup namespace sees
 * it (/proc/PID/cgroup says "0::/"), with the limits it was given and what its processes use.
 * Runtimes size themselves from these files (the JVM's heap from memory.max, Go's GOMAXPROCS
 * from cpu.max, libuv's constrained memory); without them they saw no limit at all.
 */
function cgroupSpec(range: () => string): Spec {
  const usec = (ticks: number): number => Math.round((ticks * 1_000_000) / v.CLK_TCK);
  const max = (n: number | undefined): string => `${n ?? 'max'}\n`;
  return {
    'cgroup.controllers': line('cpuset cpu memory pids'),
    'cgroup.events': line('populated 1\nfrozen 0'),
    'cgroup.procs': (c) => v.processes(c.sb).map((p) => `${p.ns}\n`).join(''),
    'cgroup.subtree_control': line(''),
    'cgroup.type': line('domain'),
    'cpu.max': (c) => {
      const q = c.sb.limits.cpuQuota;
      return q === undefined ? 'max 100000\n' : `${q.quota} ${q.period}\n`;
    },
    'cpu.stat': (c) => {
      const u = v.usage(c.sb);
      return `usage_usec ${usec(u.userTicks + u.systemTicks)}\nuser_usec ${usec(u.userTicks)}\nsystem_usec ${usec(u.systemTicks)}\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n`;
    },
    'cpu.weight': line('100'),
    'cpuset.cpus.effective': range,
    'cpuset.mems.effective': line('0'),
    'memory.current': (c) => `${v.memory(c.sb).used}\n`,
    'memory.high': line('max'),
    'memory.low': line('0'),
    'memory.max': (c) => max(c.sb.limits.memoryBytes),
    'memory.min': line('0'),
    'memory.stat': (c) => `anon ${v.memory(c.sb).used}\nfile 0\nkernel 0\nshmem 0\n`,
    'memory.swap.current': line('0'),
    'memory.swap.max': line('0'),
    'pids.current': (c) => `${v.usage(c.sb).threads}\n`,
    'pids.max': (c) => max(c.sb.limits.pids),
  };
}

// ---------------------------------------------------------------------------------------------
// Lookup

interface Found {
  node: Node;
  /** The path of the node, with every symlink before it resolved. */
  path: string;
}

/** Looks a path up, following the tree's own symlinks (and the last one if `followLast`). */
function walk(c: Ctx, path: string, followLast: boolean, hops = 0): Found | number {
  const parts = path.split('/');
  const top = parts[1];
  if (parts[0] !== '' || (top !== 'proc' && top !== 'sys')) return -E.ENOENT;
  let node: Node = top === 'proc' ? procRoot(c) : sysRoot(c);
  let cur = `/${top}`;
  for (let i = 2; i < parts.length; i++) {
    const name = parts[i] as string;
    if (name === '') continue;
    if (node.kind !== 'dir') return -E.ENOTDIR;
    const denied = node.search?.() ?? 0;
    if (denied < 0) return denied;
    const next = node.child(name);
    if (next === null) return -E.ENOENT;
    const last = parts.slice(i + 1).every((s) => s === '');
    if (next.kind === 'link' && (!last || followLast)) {
      if (next.magic !== undefined) return last ? { node: next, path: `${cur}/${name}` } : -E.ENOENT;
      if (hops >= MAX_HOPS) return -E.ELOOP;
      const target = next.target();
      if (typeof target === 'number') return target;
      const rest = parts.slice(i + 1).join('/');
      const joined = posix.normalize(`${target.startsWith('/') ? target : `${cur}/${target}`}/${rest}`).replace(/\/+$/, '');
      if (!isSynthetic(joined)) return -E.ENOENT;
      return walk(c, joined, followLast, hops + 1);
    }
    node = next;
    cur = `${cur}/${name}`;
  }
  return { node, path: cur };
}

/**
 * The container path that a path through a magic link names (/proc/PID/root/etc/passwd is
 * /etc/passwd, /proc/PID/cwd/x is the process's cwd plus /x, /proc/PID/fd/N/x likewise), for the
 * caller to serve as an ordinary path; null if the path goes through no magic link. The synth*
 * functions answer ENOENT for such paths.
 */
export function magicPath(t: Task, sb: Sandbox, path: string): string | null {
  return asSentry(sb, () => magicPathOwn(t, sb, path));
}

function magicPathOwn(t: Task, sb: Sandbox, path: string): string | null {
  const m = /^(\/proc\/\d+(?:\/task\/\d+)?\/(?:root|cwd|fd\/\d+))\/(.+)$/.exec(resolveSelf(t, path));
  if (m === null) return null;
  const found = walk({ t, sb }, m[1] as string, false);
  if (typeof found === 'number' || found.node.kind !== 'link') return null;
  const target = found.node.target();
  if (typeof target === 'number' || !target.startsWith('/') || target.endsWith(' (deleted)')) return null;
  return target === '/' ? `/${m[2]}` : `${target}/${m[2]}`;
}

// ---------------------------------------------------------------------------------------------
// Scratch mirror of directories

function mirror(sb: Sandbox, path: string, node: DirNode | null): string {
  const host = join(sb.scratchDir, path);
  // The mirrors hold symlinks whose targets are container paths ("/", a process's cwd), which
  // this process would resolve against the host's root: a path through one must never be made,
  // listed or pruned here.
  let cur = sb.scratchDir;
  for (const part of path.split('/')) {
    if (part === '') continue;
    cur = join(cur, part);
    const st = lstatSync(cur, { throwIfNoEntry: false });
    if (st === undefined) break; // made below, under directories checked here
    if (!st.isDirectory()) throw new Error(`mirror of ${path}: ${cur} is not a directory of the scratch tree`);
  }
  mkdirSync(host, { recursive: true });
  // the mirror's entries in the order getdents gives them (tmpfs: newest first)
  const have = new Map<string, Dirent>();
  const dir = opendirSync(host);
  try {
    for (let d = dir.readSync(); d !== null; d = dir.readSync()) have.set(d.name, d);
  } finally {
    dir.closeSync();
  }
  const want = node?.list() ?? [];
  const wanted = new Set(want.map(([name]) => name));
  for (const [name, n] of want) {
    const d = have.get(name);
    if (d === undefined) continue;
    const p = join(host, name);
    const same =
      n.kind === 'link' ? d.isSymbolicLink() && readlinkSync(p, { encoding: 'latin1' }) === linkText(n) : n.kind === 'dir' ? d.isDirectory() : d.isFile();
    if (same) continue;
    rmSync(p, { recursive: true, force: true });
    have.delete(name);
  }
  for (const name of have.keys()) {
    if (wanted.has(name)) continue;
    rmSync(join(host, name), { recursive: true, force: true });
    have.delete(name);
  }
  // The listing's order, as procfs lists (fixed entries, then pids in ascending order): an
  // entry made or renamed last comes first, so the entries before the longest tail the mirror
  // already has in order are made, or moved up by a rename (which keeps a directory someone is
  // in), from the last to the first.
  const order = [...have.keys()];
  let tail = 0;
  while (tail < order.length && tail < want.length && order[order.length - 1 - tail] === (want[want.length - 1 - tail] as [string, Node])[0]) tail++;
  for (let i = want.length - 1 - tail; i >= 0; i--) {
    const [name, n] = want[i] as [string, Node];
    const p = join(host, name);
    if (have.has(name)) {
      renameSync(p, join(host, BUMP));
      renameSync(join(host, BUMP), p);
    } else if (n.kind === 'link') symlinkSync(Buffer.from(linkText(n), 'latin1'), p);
    else if (n.kind === 'dir') mkdirSync(p);
    else writeFileSync(p, '', { mode: 0o444 });
  }
  return host;
}

/** A name no listing has (procfs names never start with "."), for a rename that moves an entry up. */
const BUMP = '.moat-bump';

/** What a mirrored link holds: its target, or "?" for one that has none now. */
function linkText(n: LinkNode): string {
  const t = n.target();
  return typeof t === 'string' && t !== '' ? t : '?';
}

/**
 * Brings the scratch mirror of a synthetic directory up to date with its listing (empty files,
 * directories, symlinks with their targets; stale entries such as exited pids removed) and
 * returns the host path to open. A path that is not (or no longer) a directory gets an empty one.
 * `t`, when given, is the caller, whose pid the self links name.
 */
export function refreshTree(sb: Sandbox, dir: string, t?: Task): string {
  return asSentry(sb, () => refreshTreeOwn(sb, dir, t));
}

/**
 * Before a chdir into the synthetic directory `path` continues (the kernel then walks the same
 * path through the mirrors): brings the mirror of every directory along it up to date for the
 * caller, so that each exists and a "self" link on the way names the caller.
 */
export function mirrorPath(t: Task, sb: Sandbox, path: string): void {
  asSentry(sb, () => {
    const parts = path.split('/');
    for (let i = 2; i <= parts.length; i++) {
      // only directories of the tree: a magic link's mirror is a symlink the kernel follows in
      // the container's root (its target is a container path); nothing is made through it
      const found = walk({ t, sb }, parts.slice(0, i).join('/'), true);
      if (typeof found === 'number' || found.node.kind !== 'dir') return;
      mirror(sb, found.path, found.node);
    }
  });
}

function refreshTreeOwn(sb: Sandbox, dir: string, t?: Task): string {
  const found = walk({ t, sb }, dir, true);
  if (typeof found === 'number' || found.node.kind !== 'dir') return mirror(sb, dir, null);
  return mirror(sb, found.path, found.node);
}

// ---------------------------------------------------------------------------------------------
// Open, stat, readlink

/** A sealed read-only memfd holding `content`, as an fd reply. */
function memfdReply(path: string, content: Buffer, flags: number): Reply {
  const rw = memfdCreate(`${MEMFD_PREFIX}${path}`.slice(0, MEMFD_NAME_MAX), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (rw < 0) return fail(-rw);
  try {
    for (let off = 0; off < content.length; ) {
      const n = pwrite(rw, content.subarray(off), content.length - off, off);
      if (n < 0) return fail(-n);
      off += n;
    }
    const s = fcntl(rw, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    if (s < 0) return fail(-s);
    const ro = openat(-100, cpath(`/proc/self/fd/${rw}`), ((flags & O.PATH) !== 0 ? O.PATH : O.RDONLY) | O.CLOEXEC);
    return ro < 0 ? fail(-ro) : giveFd(ro, (flags & O.CLOEXEC) !== 0);
  } finally {
    close(rw);
  }
}

/** Opens what a magic link (exe, cwd, root) points to, read-only, with the caller's DAC rights. */
function openMagic(c: Ctx & { t: Task }, hostPath: string, flags: number): Reply {
  if ((flags & O.PATH) === 0 && ((wanted(flags) & 2) !== 0 || (flags & O.CREAT) !== 0)) return fail(E.EACCES);
  const keep = O.PATH | O.DIRECTORY | O.NONBLOCK | O.LARGEFILE | O.NOCTTY | O.NOATIME;
  const fd = openat(-100, cpath(hostPath), (flags & keep) | O.RDONLY | O.CLOEXEC);
  if (fd < 0) return fail(-fd);
  if ((flags & O.PATH) === 0) {
    const st = fstatSync(fd);
    if (!dacAllows(st.mode, st.uid, st.gid, c.t.creds(), 4)) {
      close(fd);
      return fail(E.EACCES);
    }
  }
  return giveFd(fd, (flags & O.CLOEXEC) !== 0);
}

/**
 * Opens a synthetic path for the workload: a file as a sealed read-only memfd of its content, a
 * directory as its scratch mirror (O_RDONLY|O_DIRECTORY), a magic link as what it points to.
 * Writing (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC) is EACCES (EISDIR on a directory); an unknown
 * path is ENOENT.
 */
export function synthOpen(t: Task, sb: Sandbox, path: string, flags: number): Reply {
  return asSentry(sb, () => synthOpenOwn(t, sb, path, flags));
}

function synthOpenOwn(t: Task, sb: Sandbox, path: string, flags: number): Reply {
  const c = { t, sb };
  const reopened = reopenFd(t, sb, path, flags);
  if (reopened !== null) return reopened;
  const pathOnly = (flags & O.PATH) !== 0;
  const writes = !pathOnly && ((wanted(flags) & 2) !== 0 || (flags & O.CREAT) !== 0);
  const nofollow = (flags & O.NOFOLLOW) !== 0;
  const found = walk(c, path, !nofollow);
  if (typeof found === 'number') return fail(found === -E.ENOENT && writes && (flags & O.CREAT) !== 0 ? E.EACCES : -found);
  const { node } = found;
  if (!pathOnly && (flags & (O.CREAT | O.EXCL)) === (O.CREAT | O.EXCL)) return fail(E.EEXIST);
  const denied = node.access?.() ?? 0;
  if (denied < 0) return fail(-denied);
  try {
    switch (node.kind) {
      case 'link': {
        if (node.magic !== undefined && !nofollow) return openMagic(c, node.magic, flags);
        if (!pathOnly) return fail(E.ELOOP);
        const parent = found.path.slice(0, found.path.lastIndexOf('/'));
        const host = join(refreshTree(sb, parent, t), found.path.slice(parent.length + 1));
        const fd = openat(-100, cpath(host), O.PATH | O.NOFOLLOW | O.CLOEXEC);
        return fd < 0 ? fail(-fd) : giveFd(fd, (flags & O.CLOEXEC) !== 0);
      }
      case 'dir': {
        if (writes) return fail(E.EISDIR);
        const listForOpen = node.listForOpen;
        const host = mirror(sb, found.path, listForOpen ? { ...node, list: () => listForOpen(found.path) } : node);
        const fd = openat(-100, cpath(host), O.RDONLY | O.DIRECTORY | O.CLOEXEC | (flags & O.PATH));
        return fd < 0 ? fail(-fd) : giveFd(fd, (flags & O.CLOEXEC) !== 0);
      }
      case 'file': {
        if ((flags & O.DIRECTORY) !== 0) return fail(E.ENOTDIR);
        if (writes) return fail(E.EACCES);
        const content = node.read();
        if (typeof content === 'number') return fail(-content);
        return memfdReply(found.path, typeof content === 'string' ? Buffer.from(content, 'latin1') : content, flags);
      }
    }
  } catch (err) {
    sb.log(`procfs: open ${path}: ${err instanceof Error ? err.message : String(err)}`);
    return fail(E.EIO);
  }
}

/**
 * Reopens one of the caller's own fds through /proc/PID/fd/N (or /proc/PID/task/TID/fd/N; the
 * caller maps /dev/fd/N and /dev/std* to it): a new open file description of the same object, as
 * the kernel's magic link gives, with the caller's DAC rights checked. Another process's fd is
 * taken the same way when the caller may search that process's fd directory (its DAC) and look
 * into that process (mayAccess: the kernel's ptrace read check), EACCES otherwise. Returns null
 * if the path is not of that form.
 */
export function reopenFd(t: Task, sb: Sandbox, path: string, flags: number): Reply | null {
  return asSentry(sb, () => reopenFdOwn(t, sb, path, flags));
}

function reopenFdOwn(t: Task, sb: Sandbox, path: string, flags: number): Reply | null {
  const m = /^\/proc\/(\d+)(?:\/task\/(\d+))?\/fd\/(\d+)$/.exec(resolveSelf(t, path));
  if (m === null) return null;
  const ns = Number(m[1]);
  const own = ns === v.nsPid(t.tgid);
  const host = own ? t.tgid : v.hostPidOf(sb, ns);
  if (host === undefined) return fail(E.ENOENT);
  const tid = m[2] === undefined ? host : v.hostTidOf(host, Number(m[2]));
  if (tid === undefined) return fail(E.ENOENT);
  if (!own && (procDac({ t, sb }, host, 0o500, 1) < 0 || mayAccess({ t, sb }, host) < 0)) return fail(E.EACCES);
  const n = Number(m[3]);
  if (n > 0x7fffffff) return fail(E.ENOENT);
  if ((flags & O.NOFOLLOW) !== 0) return fail(E.ELOOP);
  const dup = own ? t.getFd(n) : fdOf(sb, host, tid, ns, n);
  if (dup < 0) return fail(dup === -E.EBADF || dup === -E.ESRCH ? E.ENOENT : -dup);
  try {
    const st = fstatSync(dup);
    if (!dacAllows(st.mode, st.uid, st.gid, t.creds(), wanted(flags))) return fail(E.EACCES);
    // opened as the caller: the kernel checks the object (a pipe of a non-root user is 0600,
    // which the sentry may lack the capability to open) as it would for the caller's own open;
    // procfs lets a thread through its own process's fd links whoever it acts as
    const reopen = (): number => openat(-100, cpath(`/proc/self/fd/${dup}`), (flags & ~(O.CREAT | O.EXCL)) | O.CLOEXEC);
    const fd = sb.ids ? sb.ids.asCaller(t, reopen) : reopen();
    return fd < 0 ? fail(-fd) : giveFd(fd, (flags & O.CLOEXEC) !== 0);
  } catch (err) {
    sb.log(`procfs: reopen ${path}: ${err instanceof Error ? err.message : String(err)}`);
    return fail(E.EIO);
  } finally {
    close(dup);
  }
}

/**
 * A copy (pidfd_getfd) of fd `n` of sandbox process `host` (namespace pid `ns`), through a pidfd
 * of its thread `tid`, or -errno. The pidfd is opened first and the pid checked to be that sandbox
 * process after, so a pid recycled in between is never read (its pidfd then answers ESRCH).
 */
function fdOf(sb: Sandbox, host: number, tid: number, ns: number, n: number): number {
  const pidfd = pidfdOpen(tid, tid === host ? 0 : PIDFD_THREAD);
  if (pidfd < 0) return pidfd;
  try {
    if (!sb.pids().includes(host) || v.nsPid(host) !== ns) return -E.ESRCH;
    return pidfdGetfd(pidfd, n);
  } finally {
    close(pidfd);
  }
}

/** FNV-1a (64 bits) of a path: a stable inode number. */
function inode(path: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < path.length; i++) {
    h ^= BigInt(path.charCodeAt(i) & 0xff);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h === 0n ? 1n : h;
}

/**
 * A 144-byte x86_64 struct stat of a synthetic path (what a magic link points to when `follow`),
 * or -errno: files of size 0, 0444, directories 0555, symlinks 0777 unless procfs narrows them (see
 * Common.perm and linkStat), all dated at sandbox boot; sizes are 0 but a magic link's and an fd
 * directory's, which are the host's.
 */
export function synthStat(t: Task, sb: Sandbox, path: string, follow: boolean): Buffer | number {
  return asSentry(sb, () => synthStatOwn(t, sb, path, follow));
}

function synthStatOwn(t: Task, sb: Sandbox, path: string, follow: boolean): Buffer | number {
  const c = { t, sb };
  const found = walk(c, path, follow);
  if (typeof found === 'number') return found;
  const { node } = found;
  if (node.kind === 'link' && node.magic !== undefined && follow) {
    const denied = node.access?.() ?? 0;
    if (denied < 0) return denied;
    const buf = Buffer.alloc(144);
    // as the owner of the link's directory: a non-root process's fd directory is 0500, and the
    // sentry holds no DAC capability (the caller's own access was checked just above)
    const magic = node.magic;
    const rc = asHostOwner(c, posix.dirname(magic), () => fstatat(-100, cpath(magic), buf, 0));
    return rc < 0 ? rc : buf;
  }
  const ls = node.kind === 'link' ? linkStat(c, node) : undefined;
  const mode = node.kind === 'dir' ? S_IFDIR | (node.perm ?? 0o555) : ls !== undefined ? S_IFLNK | ls.perm : S_IFREG | (node.perm ?? 0o444);
  const [uid, gid] = node.owner?.() ?? [0, 0];
  const b = Buffer.alloc(144);
  b.writeBigUInt64LE(BigInt(found.path.startsWith('/sys') ? SYS_DEV : PROC_DEV), 0);
  b.writeBigUInt64LE(inode(found.path), 8);
  b.writeBigUInt64LE(node.kind === 'dir' ? 2n : 1n, 16);
  b.writeUInt32LE(mode, 24);
  b.writeUInt32LE(uid >>> 0, 28);
  b.writeUInt32LE(gid >>> 0, 32);
  b.writeBigInt64LE(BigInt(ls?.size ?? (node.kind === 'dir' ? (node.size?.() ?? 0) : 0)), 48);
  b.writeBigInt64LE(1024n, 56);
  const sec = BigInt(Math.floor(sb.bootTime / 1000));
  const nsec = BigInt(Math.floor(sb.bootTime % 1000) * 1_000_000);
  for (const off of [72, 88, 104]) {
    b.writeBigInt64LE(sec, off);
    b.writeBigInt64LE(nsec, off + 8);
  }
  return b;
}

/**
 * The permission bits and size of a link as lstat shows them: a magic link's are its host link's
 * (an fd link's bits say how the file is open: r-x for reading, -wx for writing; its size is 64),
 * any other link's 0777 and 0.
 */
function linkStat(c: Ctx, node: LinkNode): { perm: number; size: number } {
  const plain = { perm: node.perm ?? 0o777, size: 0 };
  if (node.magic === undefined) return plain;
  const hostPath = node.magic;
  try {
    const st = asHostOwner(c, posix.dirname(hostPath), () => lstatSync(hostPath, { throwIfNoEntry: false }));
    return st === undefined ? { perm: 0o777, size: 0 } : { perm: st.mode & 0o777, size: st.size };
  } catch {
    return { perm: 0o777, size: 0 }; // not looked at (the process is going away): the default
  }
}

/**
 * The target of a synthetic symlink (self, thread-self, mounts, and a process's exe, cwd, root
 * and fd/N), or -EINVAL for a file or directory, -ENOENT for an unknown path.
 */
export function synthReadlink(t: Task, sb: Sandbox, path: string): Buffer | number {
  return asSentry(sb, () => synthReadlinkOwn(t, sb, path));
}

function synthReadlinkOwn(t: Task, sb: Sandbox, path: string): Buffer | number {
  const found = walk({ t, sb }, path, false);
  if (typeof found === 'number') return found;
  if (found.node.kind !== 'link') return -E.EINVAL;
  const target = found.node.target();
  return typeof target === 'number' ? target : Buffer.from(target, 'latin1');
}
