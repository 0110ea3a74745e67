/**
 * Builds the plan for native/moat-init from a validated spec. All decisions are made here:
 * which namespaces to create or join, the order of mounts, device nodes versus bind mounts in a
 * user namespace, capability bitmasks. The native stage only executes what this returns.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, posix } from 'node:path';
import { ConfigError, UsageError } from '../../errors.js';
import { CAPABILITIES, RLIMITS, rlimitValue } from '../../spec/schema.js';
import type { CapabilityName, MountSpec, NamespaceType, ProcessSpec, Spec } from '../../spec/schema.js';
import type { CreateRequest, SentryJail } from '../backend.js';
import { parseCgroupMounts, UNIFIED } from '../../cgroups/index.js';
import type { CgroupMounts } from '../../cgroups/index.js';
import { compileSeccomp, isSeccompDisabled, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV } from '../../seccomp/index.js';
import type { Logger } from '../../util/log.js';
import { MS, PROPAGATION, parseMountOptions } from './mounts.js';
import { PlanWriter, Tag } from './planfmt.js';
import type { Field } from './planfmt.js';

/** clone(2) flag of each namespace type. */
export const NS_FLAG: Record<NamespaceType, number> = {
  pid: 0x20000000,
  network: 0x40000000,
  mount: 0x00020000,
  ipc: 0x08000000,
  uts: 0x04000000,
  user: 0x10000000,
  cgroup: 0x02000000,
  time: 0x00000080,
};

const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;

/** The devices every container gets (runc's list). */
const DEFAULT_DEVICES = [
  { path: '/dev/null', major: 1, minor: 3 },
  { path: '/dev/zero', major: 1, minor: 5 },
  { path: '/dev/full', major: 1, minor: 7 },
  { path: '/dev/random', major: 1, minor: 8 },
  { path: '/dev/urandom', major: 1, minor: 9 },
  { path: '/dev/tty', major: 5, minor: 0 },
];

/** What the plan needs besides the request. */
export interface PlanExtras {
  /** Host path of the exec fifo. */
  fifo: string;
  /** Console socket path the stage connects to, when process.terminal is set. */
  consoleSocket?: string;
}

function capMask(names: readonly CapabilityName[] | undefined): bigint {
  let mask = 0n;
  for (const n of names ?? []) mask |= 1n << BigInt(CAPABILITIES[n]);
  return mask;
}

function mapText(list: readonly { containerID: number; hostID: number; size: number }[]): string {
  return list.map((m) => `${m.containerID} ${m.hostID} ${m.size}\n`).join('');
}

/** Encodes the plan that creates the container described by `req`. */
export function buildPlan(req: CreateRequest, extras: PlanExtras): Buffer {
  const { spec } = req;
  const w = new PlanWriter();
  const proc = spec.process;
  if (!proc) throw new ConfigError('process', 'required to create a container');


  // --- namespaces
  const namespaces = spec.linux?.namespaces ?? [];
  let unshare = 0;
  const has = new Set<NamespaceType>();
  const created = new Set<NamespaceType>();
  namespaces.forEach((ns, i) => {
    has.add(ns.type);
    if (ns.path !== undefined) {
      if (ns.type === 'mount') {
        throw new ConfigError(`linux.namespaces[${i}].path`, 'joining a mount namespace is not supported: Moat builds the rootfs in a new one');
      }
      if (!existsSync(ns.path)) throw new ConfigError(`linux.namespaces[${i}].path`, `${ns.path} does not exist`);
      w.add(Tag.NS_JOIN, { u32: NS_FLAG[ns.type] }, { str: ns.path });
    } else {
      unshare |= NS_FLAG[ns.type];
      created.add(ns.type);
    }
  });
  if (!has.has('mount')) throw new ConfigError('linux.namespaces', 'a mount namespace is required');
  if (unshare) w.add(Tag.NS_UNSHARE, { u32: unshare });
  const userns = has.has('user');
  if (created.has('user')) {
    w.add(Tag.UID_MAP, { str: mapText(spec.linux?.uidMappings ?? []) });
    if (process.geteuid?.() !== 0) w.add(Tag.SETGROUPS_DENY);
    w.add(Tag.GID_MAP, { str: mapText(spec.linux?.gidMappings ?? []) });
  }
  // A sentry's workload has no procfs of its own: its network and IPC sysctls are written here,
  // in its new namespaces, through the host's /proc (a /proc/sys/net or IPC file acts on the
  // namespace of whoever writes it), before its root is made.
  if (req.sentryJail) addSysctls(w, spec);
  if (req.foreground) w.add(Tag.MONITOR, { u32: 1 });

  // --- rootfs
  const rootProp = spec.linux?.rootfsPropagation;
  w.add(Tag.ROOT_PROPAGATION, { u64: BigInt(rootProp ? PROPAGATION[rootProp]! : MS.SLAVE | MS.REC) });
  const rootlessEmbedded = req.embedded !== undefined && process.geteuid?.() !== 0;
  if (req.embedded && rootlessEmbedded) {
    // An unprivileged user namespace cannot overlay the host root (its submounts are locked):
    // the host root is bound read-only instead, and writes go to the private /tmp.
    w.add(Tag.HOST_MKDIR, { str: req.rootfs }, { u32: 0o755 });
    w.add(Tag.HOST_MOUNT, { str: req.embedded.lower }, { str: req.rootfs }, { str: '' }, { u64: BigInt(MS.BIND | MS.REC) }, { str: '' });
  } else if (req.embedded) {
    const ovl = join(req.dir, 'overlay');
    for (const p of [ovl, req.rootfs]) {
      if (/[,:\\]/.test(p)) throw new UsageError(`--root: the state directory path ${p} must not contain "," ":" or "\\"`);
    }
    w.add(Tag.HOST_MKDIR, { str: ovl }, { u32: 0o700 });
    w.add(Tag.HOST_MKDIR, { str: req.rootfs }, { u32: 0o755 });
    w.add(Tag.HOST_MOUNT, { str: 'tmpfs' }, { str: ovl }, { str: 'tmpfs' }, { u64: BigInt(MS.NOSUID | MS.NODEV) }, { str: 'mode=700' });
    // the merged root takes its mode from the upper directory: give it the lower root's
    w.add(Tag.HOST_MKDIR, { str: `${ovl}/upper` }, { u32: statSync(req.embedded.lower).mode & 0o7777 });
    w.add(Tag.HOST_MKDIR, { str: `${ovl}/work` }, { u32: 0o700 });
    w.add(Tag.HOST_MOUNT, { str: 'overlay' }, { str: req.rootfs }, { str: 'overlay' }, { u64: 0n },
      { str: `lowerdir=${req.embedded.lower},upperdir=${ovl}/upper,workdir=${ovl}/work` });
  }
  let rootfs = req.rootfs;
  const ovl = req.sentryJail?.overlay;
  if (ovl && !req.embedded) {
    // the sentry's copy-on-write root: the bundle's rootfs is never written
    for (const p of [req.rootfs, ovl.upper, ovl.work, ovl.merged]) {
      if (/[,:\\]/.test(p)) throw new UsageError(`the path ${p} must not contain "," ":" or "\\" (overlay options)`);
    }
    for (const d of [ovl.upper, ovl.work, ovl.merged]) w.add(Tag.HOST_MKDIR, { str: d }, { u32: 0o755 });
    w.add(Tag.HOST_MOUNT, { str: 'overlay' }, { str: ovl.merged }, { str: 'overlay' }, { u64: 0n },
      { str: `lowerdir=${req.rootfs},upperdir=${ovl.upper},workdir=${ovl.work}` });
    rootfs = ovl.merged;
  }
  w.add(Tag.ROOTFS, { str: rootfs }, { u64: 0n });

  const mounts = spec.mounts ?? [];
  let devBound = false;
  let devpts = false;
  // the host's cgroup mounts, read once for the whole plan (not once per cgroup mount of the spec)
  let cgroupMounts: CgroupMounts | undefined;
  const hostCgroups = (): CgroupMounts => (cgroupMounts ??= parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')));
  mounts.forEach((m, i) => {
    const norm = posix.normalize(m.destination);
    if (norm === '/') throw new ConfigError(`mounts[${i}].destination`, 'cannot mount over the container root');
    if (m.type === 'devpts' && norm === '/dev/pts') devpts = true;
    emitMount(w, req, m, i, norm, userns, created.has('network'), created.has('cgroup'), hostCgroups);
    if (norm === '/dev' && (m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind'))) devBound = true;
  });

  if (!devBound) {
    const devices = new Map<string, { type: string; major: number; minor: number; mode: number; uid: number; gid: number }>();
    for (const d of DEFAULT_DEVICES) devices.set(d.path, { type: 'c', major: d.major, minor: d.minor, mode: 0o666, uid: 0, gid: 0 });
    for (const d of spec.linux?.devices ?? []) {
      devices.set(posix.normalize(d.path), { type: d.type, major: d.major ?? 0, minor: d.minor ?? 0, mode: d.fileMode ?? 0o666, uid: d.uid ?? 0, gid: d.gid ?? 0 });
    }
    for (const [path, d] of devices) {
      if (userns) {
        // mknod is not allowed in a user namespace: bind the host's node instead, as runc does
        w.add(Tag.BIND_DEV, { str: path }, { str: path });
      } else {
        const type = d.type === 'b' ? S_IFBLK : d.type === 'p' ? S_IFIFO : S_IFCHR;
        w.add(Tag.MKNOD, { str: path }, { u32: type | (d.mode & 0o7777) }, { u32: d.major }, { u32: d.minor }, { u32: d.uid }, { u32: d.gid });
      }
    }
    for (const [target, link] of [['/proc/self/fd', '/dev/fd'], ['/proc/self/fd/0', '/dev/stdin'], ['/proc/self/fd/1', '/dev/stdout'], ['/proc/self/fd/2', '/dev/stderr']] as const) {
      w.add(Tag.SYMLINK, { str: target }, { str: link });
    }
    if (devpts) w.add(Tag.SYMLINK, { str: 'pts/ptmx' }, { str: '/dev/ptmx' });
  }

  // --- hooks that run inside the container's namespaces
  const hooks = spec.hooks ?? {};
  const anyHook = [hooks.prestart, hooks.createRuntime, hooks.createContainer, hooks.startContainer].some((l) => (l?.length ?? 0) > 0);
  if (anyHook) w.add(Tag.SYNC_HOOKS);
  for (const [when, list] of [[0, hooks.createContainer], [1, hooks.startContainer]] as const) {
    for (const h of list ?? []) {
      w.add(Tag.HOOK, { u32: when }, { str: h.path }, { strv: h.args ?? [h.path] }, { strv: h.env ?? [] }, { u32: h.timeout ?? 0 });
    }
  }

  // runc creates a missing working directory before the root may become read-only
  w.add(Tag.MKDIR, { str: proc.cwd });
  if (rootlessEmbedded) {
    // every host mount the sandbox sees through the bind becomes read-only too; before
    // pivot_root, while the stage still sees a procfs for its /proc/self/fd paths (under the
    // sentry the container's /proc is synthesized, not a procfs)
    const own = mounts.map((m) => posix.normalize(m.destination));
    for (const mp of hostMountPoints()) {
      if (mp === '/' || own.some((o) => mp === o || mp.startsWith(`${o}/`))) continue;
      w.add(Tag.READONLY, { str: mp });
    }
  }
  w.add(Tag.PIVOT_ROOT);
  if (spec.hostname !== undefined) w.add(Tag.HOSTNAME, { str: spec.hostname });
  if (spec.domainname !== undefined) w.add(Tag.DOMAINNAME, { str: spec.domainname });
  if (created.has('network') && req.network !== 'none') w.add(Tag.LOOPBACK_UP);
  if (!req.sentryJail) addSysctls(w, spec);
  for (const p of spec.linux?.maskedPaths ?? []) w.add(Tag.MASK, { str: p });
  for (const p of spec.linux?.readonlyPaths ?? []) w.add(Tag.READONLY, { str: p });
  if (spec.root.readonly || rootlessEmbedded) w.add(Tag.ROOT_READONLY);

  addProcess(w, proc, { ...extras, preserveFds: req.preserveFds, noNewKeyring: req.noNewKeyring, id: req.id });
  addSeccomp(w, spec, req.log, req.id, req.sentryJail);
  w.add(Tag.EXEC_FIFO, { str: extras.fifo });
  return w.encode();
}

/** Records writing the spec's linux.sysctl (keys checked to be namespaced by the spec schema). */
function addSysctls(w: PlanWriter, spec: Spec): void {
  for (const [key, value] of Object.entries(spec.linux?.sysctl ?? {})) {
    w.add(Tag.SYSCTL, { str: key.replaceAll('.', '/') }, { str: value });
  }
}

/** What the process records need besides the process spec. */
interface ProcessExtras {
  id: string;
  consoleSocket?: string;
  preserveFds: number;
  noNewKeyring: boolean;
}

/** Appends the records that describe the container process (shared by create and exec). */
function addProcess(w: PlanWriter, proc: ProcessSpec, extras: ProcessExtras): void {
  w.add(Tag.ARGS, { strv: proc.args });
  w.add(Tag.ENV, { strv: proc.env ?? [] });
  w.add(Tag.CWD, { str: proc.cwd });
  const u = proc.user;
  w.add(Tag.USER, { u32: u.uid }, { u32: u.gid }, { u32: u.umask ?? 0o022 }, { u32: u.additionalGids?.length ?? 0 },
    ...(u.additionalGids ?? []).map((g) => ({ u32: g })));
  const caps = proc.capabilities;
  if (caps) {
    w.add(Tag.CAPS, { u64: capMask(caps.bounding) }, { u64: capMask(caps.effective) }, { u64: capMask(caps.permitted) },
      { u64: capMask(caps.inheritable) }, { u64: capMask(caps.ambient) });
  }
  for (const r of proc.rlimits ?? []) {
    w.add(Tag.RLIMIT, { u32: RLIMITS[r.type] }, { u64: rlimitValue(r.soft) }, { u64: rlimitValue(r.hard) });
  }
  if (proc.noNewPrivileges) w.add(Tag.NO_NEW_PRIVS);
  if (!proc.terminal && extras.consoleSocket) {
    throw new UsageError('--console-socket was given but process.terminal is false: there is no terminal to send');
  }
  if (proc.terminal) {
    if (!extras.consoleSocket) throw new UsageError('process.terminal is true: --console-socket is required (or run in the foreground)');
    w.add(Tag.CONSOLE, { str: extras.consoleSocket }, { u32: proc.consoleSize?.height ?? 0 }, { u32: proc.consoleSize?.width ?? 0 });
  }
  if (extras.preserveFds > 0) w.add(Tag.PRESERVE_FDS, { u32: extras.preserveFds });
  if (!extras.noNewKeyring) w.add(Tag.NEW_KEYRING, { str: `_ses.${extras.id}` });
  if (proc.oomScoreAdj !== undefined) w.add(Tag.OOM_SCORE_ADJ, { u32: proc.oomScoreAdj });
}

/**
 * Appends the container's seccomp filter, compiled from linux.seccomp (also applied to exec),
 * and under the sentry its filter too, which the stage loads last, right before execve.
 */
function addSeccomp(w: PlanWriter, spec: Spec, log: Logger | undefined, id: string, jail?: SentryJail): void {
  if (jail) {
    w.add(Tag.SECCOMP_LISTENER, { str: jail.socket }, { str: '' });
    // notified calls wait killably once the sentry has them: no signal makes one fail with EINTR
    // or run twice (the stage loads the filter without the flag where the kernel lacks it)
    w.add(Tag.SENTRY_FILTER, { u32: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV }, { bytes: jail.filter });
    if (jail.restoreStop) w.add(Tag.RESTORE_STOP);
    const t = jail.restoreTree;
    if (t) {
      const nodes = t.processes.flatMap((n): Field[] => [n.pid, n.ppid, n.pgid, n.sid, n.zombie === undefined ? 0 : 1, n.zombie ?? 0].map((u32) => ({ u32 })));
      const socks = t.sockets.flatMap((k): Field[] => [{ u32: k.type }, { u32: k.listen ? 1 : 0 }, ...(k.listen ? [{ str: k.listen.path }, ...[k.listen.backlog, k.listen.uid, k.listen.gid, k.listen.mode].map((u32) => ({ u32 }))] : [])]);
      w.add(Tag.RESTORE_TREE, { u32: t.processes.length }, ...nodes, { u32: t.pipes }, { u32: t.sockets.length }, ...socks);
    }
    if (jail.restoreImage) w.add(Tag.RESTORE_IMAGE, { str: jail.restoreImage });
  }
  const profile = spec.linux?.seccomp;
  if (!profile || isSeccompDisabled(profile)) return;
  const compiled = compileSeccomp(profile, { warn: (m) => log?.warn(`container "${id}": ${m}`) });
  if (jail && compiled.notify) {
    throw new ConfigError('linux.seccomp', 'SCMP_ACT_NOTIFY cannot be used under the sentry, which is the listener itself');
  }
  w.add(Tag.SECCOMP, { u32: compiled.flags }, { bytes: compiled.filter });
  if (compiled.notify) {
    if (!compiled.listenerPath) throw new ConfigError('linux.seccomp.listenerPath', 'SCMP_ACT_NOTIFY needs a listenerPath to send the notify fd to');
    w.add(Tag.SECCOMP_LISTENER, { str: compiled.listenerPath }, { str: compiled.listenerMetadata ?? '' });
  }
}

/** Namespace types in the order an exec joins them: the user namespace first. */
const JOIN_ORDER: readonly [NamespaceType, string][] = [
  ['user', 'user'], ['ipc', 'ipc'], ['uts', 'uts'], ['network', 'net'], ['pid', 'pid'], ['mount', 'mnt'], ['cgroup', 'cgroup'], ['time', 'time'],
];

/** What an exec into a running container needs. */
export interface ExecPlanInput {
  id: string;
  /** Host pid of the container init, whose namespaces the new process joins. */
  initPid: number;
  /** The container's spec: which namespaces it has. */
  spec: Spec;
  process: ProcessSpec;
  consoleSocket?: string;
  preserveFds: number;
  foreground: boolean;
  sentryJail?: SentryJail;
}

/** Encodes the plan of `exec`: join every namespace of the container, then run the process. */
export function buildExecPlan(input: ExecPlanInput): Buffer {
  const w = new PlanWriter();
  const has = new Set((input.spec.linux?.namespaces ?? []).map((n) => n.type));
  for (const [type, file] of JOIN_ORDER) {
    if (has.has(type)) w.add(Tag.NS_JOIN, { u32: NS_FLAG[type] }, { str: `/proc/${input.initPid}/ns/${file}` });
  }
  if (input.foreground) w.add(Tag.MONITOR, { u32: 1 });
  addProcess(w, input.process, {
    id: input.id,
    preserveFds: input.preserveFds,
    noNewKeyring: true,
    ...(input.consoleSocket ? { consoleSocket: input.consoleSocket } : {}),
  });
  addSeccomp(w, input.spec, undefined, input.id, input.sentryJail);
  return w.encode();
}

function emitMount(w: PlanWriter, req: CreateRequest, m: MountSpec, i: number, dest: string, userns: boolean, newNet: boolean, newCgroupNs: boolean,
  hostCgroups: () => CgroupMounts): void {
  const opts = parseMountOptions(m.options ?? [], `mounts[${i}].options`);
  const isBind = m.type === 'bind' || (opts.flags & MS.BIND) !== 0;
  let source = m.source ?? '';
  if (isBind) {
    if (!source) throw new ConfigError(`mounts[${i}].source`, 'a bind mount needs a source');
    if (!isAbsolute(source)) source = join(req.bundle || process.cwd(), source);
    opts.flags |= MS.BIND;
    if (!existsSync(source)) throw new ConfigError(`mounts[${i}].source`, `${source} does not exist`);
  }
  const type = isBind ? '' : (m.type ?? '');
  if (!isBind && !type) throw new ConfigError(`mounts[${i}].type`, 'required for a mount that is not a bind mount');
  if (type === 'cgroup') return emitCgroupMount(w, dest, opts.flags, newCgroupNs, req.cgroupPaths ?? {}, hostCgroups());
  const mflags = type === 'sysfs' && userns && !newNet ? 2 : 0;
  w.add(Tag.MOUNT, { str: source || type }, { str: dest }, { str: type }, { u64: BigInt(opts.flags) }, { u64: BigInt(opts.propagation) },
    { str: opts.data.join(',') }, { u32: mflags });
}

/**
 * A `cgroup` mount. On a v2 host, cgroup2. On a v1 or hybrid host, a tmpfs with one mount per
 * v1 hierarchy (co-mounted controllers share one), plus the cgroup2 mount of a hybrid host
 * under its own name. With a cgroup namespace each is a fresh cgroup mount (it shows the
 * namespace's root, the container's cgroup); without one, the container's own cgroup
 * directory is bound there, as runc does.
 */
function emitCgroupMount(w: PlanWriter, dest: string, flags: number, newCgroupNs: boolean, cgroupPaths: Record<string, string>, mounts: CgroupMounts): void {
  const mountFlags = flags & ~(MS.BIND | MS.REC);
  const mount = (source: string, target: string, type: string, data: string, extra = 0) =>
    w.add(Tag.MOUNT, { str: source }, { str: target }, { str: type }, { u64: BigInt(mountFlags | extra) }, { u64: 0n }, { str: data }, { u32: 0 });
  const cgroup2 = (target: string) => {
    if (newCgroupNs || !cgroupPaths[UNIFIED]) mount('cgroup2', target, 'cgroup2', '');
    else mount(cgroupPaths[UNIFIED], target, '', '', MS.BIND | MS.REC);
  };
  if (mounts.layout === 'v2') return cgroup2(dest);
  const tmpfsFlags = (mountFlags & ~MS.RDONLY) | MS.NOSUID | MS.NODEV | MS.NOEXEC;
  w.add(Tag.MOUNT, { str: 'tmpfs' }, { str: dest }, { str: 'tmpfs' }, { u64: BigInt(tmpfsFlags) }, { u64: 0n }, { str: 'mode=755' }, { u32: 0 });
  const byMount = new Map<string, string[]>();
  for (const [controller, m] of mounts.v1) byMount.set(m.mountpoint, [...(byMount.get(m.mountpoint) ?? []), controller]);
  for (const [mountpoint, controllers] of byMount) {
    const sub = posix.join(dest, posix.basename(mountpoint));
    const own = controllers.map((c) => cgroupPaths[c]).find((p) => p !== undefined);
    if (newCgroupNs || !own) mount('cgroup', sub, 'cgroup', controllers.join(','));
    else mount(own, sub, '', '', MS.BIND | MS.REC);
  }
  if (mounts.v2) cgroup2(posix.join(dest, posix.basename(mounts.v2.mountpoint)));
  if (flags & MS.RDONLY) {
    w.add(Tag.MOUNT, { str: 'tmpfs' }, { str: dest }, { str: 'tmpfs' }, { u64: BigInt(tmpfsFlags | MS.RDONLY | MS.REMOUNT) }, { u64: 0n }, { str: 'mode=755' }, { u32: 0 });
  }
}

/** Mount points of this mount namespace, from /proc/self/mountinfo (octal escapes decoded). */
function hostMountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && p.startsWith('/'))
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

