/**
 * Where a container's cgroups live: the cgroup layout of the host (v1, v2 or hybrid), the mounted
 * hierarchies, and the directory of each controller for a `linux.cgroupsPath`, computed the way
 * runc 1.1 does with its cgroupfs driver (and, for the `slice:prefix:name` form, the way its
 * systemd driver names units, mapped straight onto cgroupfs since Moat talks to no systemd).
 *
 * Everything here except the two `read*` helpers is a pure function of its text inputs.
 */
import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { ConfigError, HostError } from '../errors.js';

/** The three ways a host can lay out its cgroup hierarchies. */
export type CgroupLayout = 'v1' | 'v2' | 'hybrid';

/** The key of the cgroup v2 directory in a manager's `paths` (runc uses the empty string too). */
export const UNIFIED = '';

/** The cgroup v1 controllers (and named hierarchies) a container joins when they are mounted. */
export const V1_CONTROLLERS = [
  'cpuset',
  'cpu',
  'cpuacct',
  'memory',
  'devices',
  'freezer',
  'blkio',
  'pids',
  'hugetlb',
  'net_cls',
  'net_prio',
  'perf_event',
  'rdma',
  'misc',
  'name=systemd',
] as const;

const V1_SET: ReadonlySet<string> = new Set(V1_CONTROLLERS);

/** One cgroup filesystem mount: where it is and which directory of the hierarchy it shows. */
export interface CgroupMount {
  /** Mount point, e.g. /sys/fs/cgroup/memory. */
  mountpoint: string;
  /** The hierarchy directory at the mount point ("/" unless it is a bind mount of a sub-cgroup). */
  root: string;
}

/** The cgroup hierarchies this process sees. */
export interface CgroupMounts {
  /** The layout these mounts make. */
  layout: CgroupLayout;
  /** v1 controller (or `name=systemd`) -> its hierarchy's mount; co-mounted controllers share one. */
  v1: Map<string, CgroupMount>;
  /** The cgroup2 mount, if any. */
  v2: CgroupMount | undefined;
}

/** Undoes the octal escapes (\040 for a space) mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Finds the cgroup and cgroup2 mounts in /proc/self/mountinfo text and classifies the layout. */
export function parseCgroupMounts(mountinfo: string): CgroupMounts {
  const v1 = new Map<string, CgroupMount>();
  const v2Mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const root = left[3];
    const mountpoint = left[4];
    const fsType = right[0];
    if (root === undefined || mountpoint === undefined) continue;
    const mount = { mountpoint: unescapeMountPath(mountpoint), root: unescapeMountPath(root) };
    if (fsType === 'cgroup2') {
      v2Mounts.push(mount);
    } else if (fsType === 'cgroup') {
      for (const opt of (right[2] ?? '').split(',')) {
        // the first mount of a hierarchy wins; later ones are bind mounts of the same thing
        if (V1_SET.has(opt) && !v1.has(opt)) v1.set(opt, mount);
      }
    }
  }
  const canonical = v2Mounts.find((m) => m.mountpoint === '/sys/fs/cgroup');
  const v2 = canonical ?? v2Mounts[0];
  let layout: CgroupLayout;
  if (canonical !== undefined) layout = 'v2';
  else if (v1.size > 0 && v2 !== undefined) layout = 'hybrid';
  else if (v1.size > 0) layout = 'v1';
  else if (v2 !== undefined) layout = 'v2';
  else throw new HostError('no cgroup filesystem is mounted (nothing of type cgroup or cgroup2 in /proc/self/mountinfo)');
  if (layout === 'v2') v1.clear();
  return { layout, v1, v2 };
}

/**
 * Tells the host's cgroup layout from mountinfo text (default: this process's): `v2` when cgroup2
 * is mounted at /sys/fs/cgroup, `hybrid` when v1 hierarchies sit beside a cgroup2 mount
 * elsewhere, `v1` when there is no cgroup2 mount. Throws HostError when no cgroup fs is mounted.
 */
export function detectLayout(mountinfo?: string): CgroupLayout {
  return parseCgroupMounts(mountinfo ?? readFileSync('/proc/self/mountinfo', 'utf8')).layout;
}

/**
 * Parses /proc/PID/cgroup text into controller -> cgroup path. Co-mounted controllers
 * ("4:cpu,cpuacct:/x") each get an entry; the v2 line ("0::/x") is under the key "".
 */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === '') out.set(UNIFIED, path);
    else for (const c of controllers.split(',')) out.set(c, path);
  }
  return out;
}

/**
 * Cleans a cgroup path like runc's CleanPath: `..` cannot climb above the start, so a relative
 * path stays inside the directory it is relative to and an absolute one inside the hierarchy.
 */
export function cleanPath(p: string): string {
  if (p === '') return '';
  if (p.startsWith('/')) return posix.normalize(p).replace(/\/+$/, '') || '/';
  const rooted = posix.normalize(`/${p}`);
  return rooted === '/' ? '' : rooted.slice(1).replace(/\/+$/, '');
}

/**
 * Expands a systemd slice name into its cgroup path: `a-b.slice` -> `/a.slice/a-b.slice`,
 * `-.slice` -> `/`. Throws ConfigError (at `where`) for names systemd would reject.
 */
export function expandSlice(slice: string, where = 'linux.cgroupsPath'): string {
  const suffix = '.slice';
  const bad = () => new ConfigError(where, `invalid systemd slice name ${JSON.stringify(slice)}`);
  if (slice.length <= suffix.length || !slice.endsWith(suffix) || slice.includes('/')) throw bad();
  const name = slice.slice(0, -suffix.length);
  if (name === '-') return '/';
  let path = '';
  let prefix = '';
  for (const part of name.split('-')) {
    if (part === '') throw bad();
    path += `/${prefix}${part}${suffix}`;
    prefix += `${part}-`;
  }
  return path;
}

/** What a container's cgroup paths are computed from. */
export interface PathRequest {
  /** Container id; the cgroup name when `cgroupsPath` is empty. */
  id: string;
  /** `linux.cgroupsPath` of config.json. */
  cgroupsPath?: string | undefined;
  /** Read `cgroupsPath` as systemd's `slice:prefix:name` (runc's --systemd-cgroup). */
  systemd: boolean;
}

/** The unit prefix used for the systemd form when config.json gives no cgroupsPath. */
export const DEFAULT_SCOPE_PREFIX = 'moat';

/**
 * The cgroup directory, relative to each hierarchy's root, of a systemd-style request:
 * `slice:prefix:name` -> `<expanded slice>/<prefix>-<name>.scope` (or `<name>` itself when it
 * ends in .slice); empty -> `system.slice/moat-<id>.scope`.
 */
export function systemdCgroupPath(cgroupsPath: string | undefined, id: string): string {
  let slice = 'system.slice';
  let prefix = DEFAULT_SCOPE_PREFIX;
  let name = id;
  if (cgroupsPath !== undefined && cgroupsPath !== '') {
    const parts = cgroupsPath.split(':');
    if (parts.length !== 3) {
      throw new ConfigError(
        'linux.cgroupsPath',
        `expected "slice:prefix:name" for systemd cgroups, got ${JSON.stringify(cgroupsPath)}`,
      );
    }
    [slice, prefix, name] = parts as [string, string, string];
    if (slice === '') slice = 'system.slice';
  }
  if (name === '' || name.includes('/') || prefix.includes('/') || name === '.' || name === '..') {
    throw new ConfigError('linux.cgroupsPath', `invalid systemd unit name in ${JSON.stringify(cgroupsPath ?? id)}`);
  }
  const unit = name.endsWith('.slice') ? name : `${prefix}-${name}.scope`;
  return posix.join(expandSlice(slice), unit);
}

/** `child` relative to `root`, or "/" when `child` is not under `root` (a foreign cgroup). */
function relativeTo(root: string, child: string): string {
  const rel = posix.relative(root, child);
  return rel.startsWith('..') ? '/' : `/${rel}`;
}

/**
 * Computes controller -> absolute cgroup directory for a container, as runc 1.1's cgroupfs driver:
 *
 * - absolute `cgroupsPath`: that path under each hierarchy's mount point;
 * - relative `cgroupsPath`: under this process's own cgroup of each v1 hierarchy (from
 *   /proc/self/cgroup), and under the *parent* of its own v2 cgroup (a v2 cgroup with processes
 *   cannot also have children with domain controllers);
 * - empty: the container id, relative as above;
 * - `systemd`: the `slice:prefix:name` unit path under each mount point.
 *
 * `own` is the parsed /proc/self/cgroup of the calling process.
 */
export function computeCgroupPaths(req: PathRequest, mounts: CgroupMounts, own: Map<string, string>): Record<string, string> {
  let inner: string;
  if (req.systemd) inner = systemdCgroupPath(req.cgroupsPath, req.id);
  else inner = cleanPath(req.cgroupsPath ?? '') || cleanPath(req.id);
  if (inner === '' || inner === '/') {
    throw new ConfigError('linux.cgroupsPath', 'the cgroup path must name a cgroup below the root of the hierarchy');
  }
  const absolute = inner.startsWith('/');
  const paths: Record<string, string> = {};
  for (const [controller, mount] of mounts.v1) {
    const base = absolute ? '/' : relativeTo(mount.root, own.get(controller) ?? '/');
    paths[controller] = posix.join(mount.mountpoint, base, inner);
  }
  if (mounts.v2 !== undefined) {
    const base = absolute ? '/' : relativeTo(mounts.v2.root, posix.dirname(own.get(UNIFIED) ?? '/'));
    paths[UNIFIED] = posix.join(mounts.v2.mountpoint, base, inner);
  }
  return paths;
}

/** Reads this process's cgroup mounts from /proc/self/mountinfo. */
export function readCgroupMounts(): CgroupMounts {
  return parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Reads this process's cgroups from /proc/self/cgroup. */
export function readOwnCgroups(): Map<string, string> {
  return parseProcCgroup(readFileSync('/proc/self/cgroup', 'utf8'));
}
