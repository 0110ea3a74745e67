/**
 * The `sentry` backend: the `container` backend's jail, plus a seccomp filter generated from
 * the sentry's syscall table (table.ts) whose served calls go to a sentry process — one per
 * sandbox, in TypeScript (main.ts). The workload's root is a copy-on-write overlay and its
 * mount namespace has no real /proc or /sys: the sentry synthesizes both.
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { ConfigError, HostError, UsageError } from '../../errors.js';
import { isSentryLevel } from '../registry.js';
import type { Spec } from '../../spec/schema.js';
import { engineNetwork } from '../../spec/network.js';
import type { ContainerRecord } from '../../container/store.js';
import { descendants, isAlive, procStat } from '../../container/proc.js';
import * as k from '../../sys/kernel.js';
import { trace } from '../../util/log.js';
import { primeMigration } from '../../cgroups/prime.js';
import type { Backend, CreateRequest, Created, SentryJail } from '../backend.js';
import { containerBackend, stagePath } from '../container/index.js';
import { buildSentryFilter } from './filter.js';
import { parsePolicy } from './netpolicy.js';
import type { SentryProcessConfig } from './main.js';
import { boundingSet, claimStandby, spawnStandby, standbyDir, standbyEnabled, standbyKey } from './standby.js';
import type { SandboxLimits, SentryLevel } from './types.js';

/** Annotation that picks the sentry level for a bundle (the flag wins). */
export const LEVEL_ANNOTATION = 'io.moat.sentry.level';
/**
 * Annotation that picks the network policy for a bundle: none, loopback or pod (the default is
 * pod when the container's network namespace is its engine's, loopback otherwise).
 */
export const NETWORK_ANNOTATION = 'io.moat.sentry.network';
/** Annotation with comma-separated egress rules for a bundle. */
export const EGRESS_ANNOTATION = 'io.moat.sentry.allow-egress';

const SYNTHETIC = ['/proc', '/sys'];
const under = (p: string, roots: string[]): boolean => roots.some((r) => p === r || p.startsWith(`${r}/`));

/**
 * The spec the jail runs under the sentry: no real /proc, /sys or cgroup mounts (the sentry
 * synthesizes them; small tmpfs mounts there hold its directory listings), no masked or read-only
 * paths under them, no UTS sysctls, no_new_privs, and its own pid, network, ipc and uts
 * namespaces (the sentry relies on the pid namespace to bound signals and waits).
 */
export function sentrySpec(spec: Spec): Spec {
  const mounts = (spec.mounts ?? []).filter((m) => !['proc', 'sysfs', 'cgroup', 'cgroup2'].includes(m.type ?? '') && !under(m.destination, SYNTHETIC));
  // the sentry keeps the listings of its synthesized /proc and /sys in these (see main.ts)
  for (const destination of SYNTHETIC) {
    mounts.push({ destination, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'noexec', 'mode=755', 'size=16m'] });
  }
  const namespaces = [...(spec.linux?.namespaces ?? [])];
  for (const type of ['pid', 'network', 'ipc', 'uts', 'mount'] as const) {
    if (!namespaces.some((n) => n.type === type)) namespaces.push({ type });
  }
  const linux = { ...(spec.linux ?? {}), namespaces };
  linux.maskedPaths = (spec.linux?.maskedPaths ?? []).filter((p) => !under(p, SYNTHETIC));
  linux.readonlyPaths = (spec.linux?.readonlyPaths ?? []).filter((p) => !under(p, SYNTHETIC));
  // network and IPC sysctls are set in the sandbox's own namespaces (the jail writes them before
  // its root is pivoted, through the host's /proc) and shown under the synthesized /proc/sys; the
  // UTS ones would contradict the uname the sentry answers from the spec's hostname
  for (const key of ['kernel.hostname', 'kernel.domainname']) {
    if (linux.sysctl?.[key] !== undefined) throw new ConfigError(`linux.sysctl["${key}"]`, `cannot be set under the sentry (it answers uname itself): set ${key.slice('kernel.'.length)} in the spec`);
  }
  if (!spec.process) throw new ConfigError('process', 'required to create a container');
  if (process.geteuid?.() === 0) {
    // a root sentry acts for the workload with host ids and host capabilities (ident.ts): under
    // a mapping that moves ids, a mapped root's capabilities would reach files its namespace
    // does not own (the kernel allows them only on inodes whose owner is mapped)
    for (const field of ['uidMappings', 'gidMappings'] as const) {
      const i = (spec.linux?.[field] ?? []).findIndex((m) => m.containerID !== m.hostID);
      if (i >= 0) throw new ConfigError(`linux.${field}[${i}]`, 'only identity mappings (containerID = hostID) can be used under the sentry when Moat runs as root');
    }
  }
  return { ...spec, mounts, linux, process: { ...spec.process, noNewPrivileges: true } };
}

/** The level from the flag, else the annotation, else `fallback` (the global --sentry-level), else `balanced`. */
function chooseLevel(flag: string | undefined, spec: Spec, fallback?: string): SentryLevel {
  const fromSpec = spec.annotations?.[LEVEL_ANNOTATION];
  const v = flag ?? fromSpec ?? fallback ?? 'balanced';
  if (!isSentryLevel(v)) {
    if (flag === undefined && fromSpec !== undefined) throw new ConfigError(`annotations["${LEVEL_ANNOTATION}"]`, `expected strict or balanced, got "${v}"`);
    throw new UsageError(`${flag === undefined ? '--sentry-level (before the command)' : '--sentry-level'}: expected strict or balanced, got "${v}"`);
  }
  return v;
}

/** Memory, CPU and pid limits of the spec, as the sandbox reports them. */
export function sandboxLimits(spec: Spec): SandboxLimits {
  const r = spec.linux?.resources;
  const limits: SandboxLimits = { cpus: availableParallelism() };
  const mem = r?.memory?.limit;
  if (typeof mem === 'number' && mem > 0) limits.memoryBytes = mem;
  const quota = r?.cpu?.quota;
  const period = r?.cpu?.period ?? 100000;
  if (typeof quota === 'number' && quota > 0 && period > 0) {
    limits.cpus = Math.max(1, Math.min(limits.cpus, Math.ceil(quota / period)));
    limits.cpuQuota = { quota, period };
  }
  const cpus = r?.cpu?.cpus;
  if (cpus) {
    let n = 0;
    for (const part of cpus.split(',')) {
      const [a, b] = part.split('-').map(Number);
      n += b !== undefined ? b - a! + 1 : 1;
    }
    if (n > 0) limits.cpus = Math.min(limits.cpus, n);
  }
  const pids = r?.pids?.limit;
  if (typeof pids === 'number' && pids > 0) limits.pids = pids;
  return limits;
}

/** bin/moat.cjs of the package this code runs from (it starts the sentry with `--sentry`). */
function sentryEntry(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new HostError('cannot find the moat package directory (and so dist/sentry.cjs)');
    dir = up;
  }
  const bundle = join(dir, 'dist', 'sentry.cjs');
  if (!existsSync(bundle)) throw new HostError(`${bundle} is missing: run "npm run build"`);
  return join(dir, 'bin', 'moat.cjs');
}

/** Capability names (lower case, no CAP_ prefix) the workload holds, for setpriv. */
function workloadCaps(spec: Spec): string[] {
  const c = spec.process?.capabilities;
  const names = new Set([...(c?.permitted ?? []), ...(c?.effective ?? [])]);
  return [...names].map((n) => n.replace(/^CAP_/, '').toLowerCase());
}

/** A sentry process that was started; `ready` settles once it serves (or failed to start). */
export interface StartedSentry {
  /** Its pid (0 until known: a standby's is known once it took the sandbox). */
  readonly pid: number;
  ready: Promise<{ pid: number; startTime: string }>;
  kill(): void;
}

/**
 * Makes the sentry's listening socket here, so the stage can connect to it at once (the
 * connection waits in the backlog), and gets the sandbox a sentry: with `useStandby`, the warm
 * standby for this user, capability set and namespaces if one waits (standby.ts), else one
 * started now; either way a standby is started for the next create when this command ends. The
 * sentry's start-up runs while the container is being created.
 */
function startSentry(cfg: Omit<SentryProcessConfig, 'listenFd'>, spec: Spec, useStandby = false): StartedSentry {
  const listenFd = listenOn(cfg.socket);
  const entry = sentryEntry();
  // as root, the sentry holds no capability the workload does not, but CAP_SYS_PTRACE:
  // pidfd_getfd and process_vm_readv/writev on a workload of another uid need it (its own
  // seccomp allowlist keeps ptrace(2) itself out of reach), and CAP_SETUID and CAP_SETGID: its
  // threads take on each caller's fsuid, fsgid and groups before they touch files for it
  // (ident.ts; its allowlist has only the per-thread setfsuid, setfsgid, setgroups and capset
  // of those calls), and CAP_SYS_NICE: a thread handing over an fd is real-time for that
  // moment (pin.ts; its allowlist has sched_setscheduler for itself only); setpriv limits the
  // bounding set (root's permitted set after exec) before Node starts, for every thread
  const caps = process.geteuid?.() === 0 ? [...new Set([...workloadCaps(spec), 'sys_ptrace', 'setuid', 'setgid', 'sys_nice'])] : null;
  const dir = useStandby && standbyEnabled() ? standbyDir() : null;
  if (dir === null) return coldSentry(cfg, listenFd, entry, caps);
  const place = { dir, key: standbyKey(join(dirname(dirname(entry)), 'dist', 'sentry.cjs'), caps) };
  let cold: StartedSentry | undefined;
  let claimed = 0;
  let killed = false;
  const killClaimed = (): void => {
    try {
      if (claimed > 0) process.kill(claimed, 'SIGKILL');
    } catch {
      // gone already
    }
  };
  const ready = (async (): Promise<{ pid: number; startTime: string }> => {
    const got = await claimStandby(place, cfg, listenFd);
    // the next create's standby starts when this command ends (after `moat run` reported its
    // exit status, or right after a create): its boot, ~70 ms of CPU, then takes no time from
    // this sandbox's start-up
    process.once('exit', () => spawnStandby(process.execPath, entry, place, caps));
    if (got) {
      closeSync(listenFd);
      claimed = got.pid;
      if (killed) killClaimed();
      trace('sentry claimed');
      return got;
    }
    if (killed) {
      closeSync(listenFd);
      throw new HostError(`the sentry for "${cfg.id}" was not started: the create gave up`);
    }
    cold = coldSentry(cfg, listenFd, entry, caps);
    return cold.ready;
  })();
  ready.catch(() => {});
  return {
    get pid() {
      return claimed || (cold?.pid ?? 0);
    },
    ready,
    kill: () => {
      killed = true;
      killClaimed();
      cold?.kill();
    },
  };
}

/** Starts a sentry process now for `cfg`, with `listenFd` as its fd 4 (closed here once passed on). */
function coldSentry(cfg: Omit<SentryProcessConfig, 'listenFd'>, listenFd: number, entry: string, caps: string[] | null): StartedSentry {
  const node = process.execPath;
  // MOAT_SENTRY_PROFILE=1 logs time per syscall; MOAT_SENTRY_CPU_PROF=DIR writes a V8 CPU profile
  const prof = process.env.MOAT_SENTRY_CPU_PROF;
  const full: SentryProcessConfig = { ...cfg, listenFd: 4 };
  // MOAT_SENTRY_NODE_FLAGS adds V8/Node flags (e.g. --perf-basic-prof for perf(1) symbols)
  const extra = (process.env.MOAT_SENTRY_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
  const args = [...extra, ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : []), entry, '--sentry', JSON.stringify(full)];
  let cmd = node;
  let argv = args;
  if (caps) {
    cmd = 'setpriv';
    argv = ['--bounding-set', boundingSet(caps), '--inh-caps', '-all', '--no-new-privs', '--', node, ...args];
  }
  const logFd = openSync(cfg.log, 'a');
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(cmd, argv, { detached: true, stdio: ['ignore', logFd, logFd, 'pipe', listenFd], env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...(process.env.MOAT_SENTRY_PROFILE ? { MOAT_SENTRY_PROFILE: process.env.MOAT_SENTRY_PROFILE } : {}),
    } });
  } finally {
    closeSync(logFd);
    closeSync(listenFd);
  }
  const kill = (): void => {
    try {
      if (child.pid) process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const pipe = child.stdio[3] as Readable;
  const ready = new Promise<{ pid: number; startTime: string }>((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => reject(new HostError(`sentry for "${cfg.id}" did not start within 20 s (see ${cfg.log})`)), 20_000);
    pipe.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('ready\n')) {
        clearTimeout(timer);
        pipe.destroy();
        child.removeAllListeners('exit');
        child.unref();
        resolve({ pid: child.pid!, startTime: procStat(child.pid!)?.startTime ?? '' });
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new HostError(`cannot start the sentry (${cmd}): ${e.message}`));
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      let tail = '';
      try {
        tail = readFileSync(cfg.log, 'utf8').split('\n').slice(-8).join('\n');
      } catch {
        // no log
      }
      reject(new HostError(`the sentry for "${cfg.id}" exited during start (${sig ?? `status ${code}`}):\n${tail}`));
    });
  });
  ready.catch(kill);
  return { pid: child.pid ?? 0, ready, kill };
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;

/**
 * A listening unix socket at `path` (close-on-exec), made with the kernel calls the sentry uses.
 * A path longer than sun_path (107 bytes: containerd's runc shim and dockerd name state
 * directories by 64-hex ids under long roots) is bound through an O_PATH fd of its directory,
 * /proc/self/fd/N/NAME, as moat-init connects to it.
 */
function listenOn(path: string): number {
  let dir = -1;
  let p = Buffer.from(path);
  if (p.length > 107) {
    dir = k.openat(k.AT.FDCWD, k.cpath(dirname(path)), k.O.PATH | k.O.DIRECTORY | k.O.CLOEXEC);
    if (dir < 0) throw new HostError(`${dirname(path)}: cannot open the state directory for the sentry socket (errno ${-dir})`);
    p = Buffer.from(`/proc/self/fd/${dir}/${basename(path)}`);
    if (p.length > 107) {
      k.close(dir);
      throw new UsageError(`the sentry socket name ${basename(path)} is longer than a unix socket address allows`);
    }
  }
  try {
    const fd = k.socket(AF_UNIX, SOCK_STREAM | k.O.CLOEXEC, 0);
    if (fd < 0) throw new HostError(`socket for the sentry: errno ${-fd}`);
    const addr = Buffer.alloc(2 + p.length + 1);
    addr.writeUInt16LE(AF_UNIX, 0);
    p.copy(addr, 2);
    const b = k.bind(fd, addr);
    const l = b < 0 ? b : k.listen(fd, 16);
    if (l < 0) {
      k.close(fd);
      throw new HostError(`${path}: cannot listen for the sentry (errno ${-l})`);
    }
    return fd;
  } finally {
    if (dir >= 0) k.close(dir);
  }
}

/**
 * Starts a sentry at the internal `network` level for a microVM's VMM (container `id`, state
 * directory `dir`): it will create the VMM's host sockets and check each destination against
 * `egress` (validated here: a bad rule is a UsageError before anything starts). Returns the
 * sentry and the jail settings that put the VMM under it.
 */
export function startNetworkSentry(id: string, dir: string, egress: string[]): { sentry: StartedSentry; jail: SentryJail } {
  parsePolicy('egress', egress);
  const socket = join(dir, 'vmm-sentry.sock');
  const cfg: Omit<SentryProcessConfig, 'listenFd'> = {
    id,
    socket,
    log: join(dir, 'vmm-sentry.log'),
    level: 'network',
    network: 'egress',
    egress,
    limits: { cpus: 1 },
    hostname: 'moat-vmm',
  };
  // the VMM holds no capability, so neither does its sentry (but CAP_SYS_PTRACE, see startSentry)
  const sentry = startSentry(cfg, { ociVersion: '1.0.2', process: { user: { uid: 0, gid: 0 }, args: ['vmm'], cwd: '/' } } as Spec);
  return { sentry, jail: { filter: buildSentryFilter('network'), socket } };
}

/** What the container record keeps about its sentry (ContainerRecord.backendState). */
interface SentryRecord {
  pid: number;
  startTime: string;
  level: SentryLevel;
  socket: string;
}

/** The state dir of a container, from its record's sentry socket path. */
function stateDirOf(rec: ContainerRecord): string {
  const s = rec.backendState?.['socket'];
  if (typeof s !== 'string') throw new HostError(`container "${rec.id}": its sentry record is missing`);
  return dirname(s);
}

async function create(req: CreateRequest): Promise<Created> {
  if (!req.restore) return createFresh(req);
  // a restore: the image is checked before anything is made (the checkpointer is loaded only here)
  const { openSentryImage, restoreUpper } = await import('./checkpoint.js');
  const { IMAGE_FILE, SECTION } = await import('../../checkpoint/image.js');
  const { CheckpointRefused } = await import('../../checkpoint/sentry/dump.js');
  const { restoreTree } = await import('../../checkpoint/sentry/restore.js');
  const img = await openSentryImage(req.restore.imagePath);
  trace('restore: image checked');
  try {
    if (req.spec.process?.terminal) throw new CheckpointRefused(req.id, 'a container with a terminal cannot be restored yet');
    const level = img.manifest.level;
    const upper = join(req.dir, 'upper');
    if (img.manifest.embedded !== (req.embedded !== undefined)) {
      throw new UsageError(img.manifest.embedded
        ? 'restore: this image was taken of the embedded default; restore it as one (no bundle)'
        : 'restore: this image holds a bundle\'s files; restore it with a bundle, not the embedded default');
    }
    if (img.manifest.fs) {
      await restoreUpper(img, upper);
      trace('restore: files unpacked');
    }
    const paused = req.restore.paused === true;
    // the process is restored while the sentry still starts: the notify fd waits in its backlog
    const SOCK = { stream: 1, dgram: 2, seqpacket: 5 } as const;
    const tree = {
      processes: img.manifest.tree,
      pipes: img.manifest.pipes.length,
      sockets: img.manifest.sockets.map((x) => ({ type: SOCK[x.type], ...(x.listen ? { listen: x.listen } : {}) })),
    };
    // a snapshot's pages are mapped copy-on-write from its image (checked whole first), when
    // they lie page-aligned in it; a checkpoint image elsewhere is copied in
    const pages = img.reader.section(SECTION.SENTRY_PAGES)!;
    const share = req.restore.share === true && pages.offset % 4096 === 0 && pages.length > 0;
    if (share) await img.reader.verify(pages);
    const imageFile = join(req.restore.imagePath, IMAGE_FILE);
    const created = await createFresh({ ...req, sentry: { egress: [], ...req.sentry, level } }, tree, share ? imageFile : undefined, async (c) => {
      await containerBackend.start({ id: req.id, pid: c.pid, pidStartTime: c.pidStartTime } as ContainerRecord, req.dir);
      trace('restore: the new init is at its restore point');
      await restoreTree(img.manifest, img.reader, pages, { pid: c.pid, filter: buildSentryFilter(level), socket: join(req.dir, 'sentry.sock'), ...(share ? { image: imageFile } : {}) }, paused);
      // a snapshot's container is restored but stopped: it looks created until `start` (SIGCONT)
      if (paused) writeFileSync(join(req.dir, 'exec.fifo'), '', { mode: 0o600 });
      trace('restore: process restored');
    });
    return { ...created, backendState: { ...created.backendState, ...(paused ? { restoredStopped: 1 } : {}) } };
  } finally {
    await img.reader.close();
  }
}

/**
 * Creates a sentry container. With `restore`, the init stops for the checkpointer instead of
 * exec'ing, and `restore` runs once it is created, before the sentry is waited for.
 */
async function createFresh(req: CreateRequest, tree?: SentryJail['restoreTree'], image?: string, restore?: (created: Created) => Promise<void>): Promise<Created> {
  const restoreStop = restore !== undefined;
  const spec = sentrySpec(req.spec);
  const level = chooseLevel(req.sentry?.level, req.spec, req.sentry?.defaultLevel);
  const egress = [...(req.sentry?.egress ?? []), ...(req.spec.annotations?.[EGRESS_ANNOTATION]?.split(',').filter(Boolean) ?? [])];
  const network = req.sentry?.network ?? req.spec.annotations?.[NETWORK_ANNOTATION] ?? (egress.length === 0 && engineNetwork(req.spec) ? 'pod' : 'loopback');
  if (network === 'host') throw new UsageError('--network host cannot be used under the sentry (use --allow-egress rules)');
  const policy = parsePolicy(network, egress); // validates the rules before anything is made
  const socket = join(req.dir, 'sentry.sock');
  const cfg: Omit<SentryProcessConfig, 'listenFd'> = {
    id: req.id,
    socket,
    log: join(req.dir, 'sentry.log'),
    level,
    network,
    egress,
    limits: sandboxLimits(req.spec),
    hostname: spec.hostname ?? req.id.slice(0, 63),
    ...(spec.linux?.sysctl && Object.keys(spec.linux.sysctl).length > 0 ? { sysctl: spec.linux.sysctl } : {}),
  };
  trace('sentry config ready');
  void primeMigration(); // as early as a create knows it will place the init (cgroups/prime.ts)
  k.sealInheritedFds(); // a sentry, a standby and a watcher live on: none keeps a caller's fd
  const sentry = startSentry(cfg, spec, true);
  trace('sentry spawned');
  const jail: SentryJail = {
    filter: buildSentryFilter(level),
    socket,
    ...(restoreStop ? { restoreStop } : {}),
    ...(tree ? { restoreTree: tree } : {}),
    ...(image ? { restoreImage: image } : {}),
    ...(req.embedded ? {} : { overlay: { upper: join(req.dir, 'upper'), work: join(req.dir, 'work'), merged: join(req.dir, 'merged') } }),
  };
  let created: Created;
  try {
    created = await containerBackend.create({
      ...req,
      spec,
      sentryJail: jail,
      network: policy.mode === 'loopback' || policy.mode === 'pod' ? 'loopback' : 'none',
    });
  } catch (e) {
    sentry.kill();
    throw e;
  }
  try {
    if (restore) await restore(created);
    const s = await sentry.ready;
    trace('sentry ready');
    if (created.waitExit) failClosed(req.id, s, created.pid, created.waitExit);
    else await spawnWatcher(req.id, s, created, cfg.log);
    const record: SentryRecord = { pid: s.pid, startTime: s.startTime, level, socket };
    return { ...created, backendState: { ...record } };
  } catch (e) {
    // the container exists but nobody would serve it (or its restore failed): take it down again
    sentry.kill();
    try {
      process.kill(created.pid, 'SIGKILL');
    } catch {
      // gone already
    }
    await containerBackend.destroy({ id: req.id, cgroupPaths: created.cgroupPaths } as ContainerRecord, req.dir).catch(() => {});
    throw e;
  }
}

/** How often (ms) a foreground create looks whether its container's sentry is still there. */
const SENTRY_WATCH_MS = 250;

/**
 * Fails closed when the sentry of a running container is gone (killed, out of memory): the
 * workload would go on with every served call failing with ENOSYS. In the foreground (`moat
 * run`, the containerd shim), whose process waits for the container, the init is killed then,
 * and with it the pid namespace. An unref'd timer: it keeps no process alive. A detached
 * container has a watcher process instead (spawnWatcher).
 */
function failClosed(id: string, sentry: { pid: number; startTime: string }, initPid: number, waitExit: Promise<number>): void {
  const timer = setInterval(() => {
    const st = procStat(sentry.pid);
    // a zombie is gone too (its parent may be an init that reaps late)
    if (st !== undefined && st.startTime === sentry.startTime && st.state !== 'Z' && st.state !== 'X') return;
    clearInterval(timer);
    const init = procStat(initPid);
    // after the sandbox's last task, the sentry ends too: only a sentry gone first is a failure
    if (init === undefined || init.state === 'Z' || init.state === 'X') return;
    process.stderr.write(`moat: the sentry of container "${id}" (pid ${sentry.pid}) is gone while the container runs: killing the container\n`);
    try {
      process.kill(initPid, 'SIGKILL');
    } catch {
      // it ended meanwhile
    }
  }, SENTRY_WATCH_MS);
  timer.unref();
  void waitExit.finally(() => clearInterval(timer)).catch(() => {});
}

/**
 * Fails a detached container closed (`run -d`, `create` under conmon): nothing of Moat waits
 * for it, so a small native process (native/moat-watch.c), in a session of its own, waits for
 * whichever of the sentry and the init ends first and kills the init if it is the sentry. It
 * learns both pids from this create, never from the sentry. Rejects with a HostError if it
 * cannot be started: a detached sandbox is not left without it.
 */
async function spawnWatcher(id: string, sentry: { pid: number; startTime: string }, init: Created, log: string): Promise<void> {
  const path = join(dirname(stagePath()), 'moat-watch');
  const child = spawn(path, [id, String(sentry.pid), sentry.startTime, String(init.pid), init.pidStartTime, log], {
    stdio: 'ignore',
    detached: true,
    env: {},
    argv0: 'moat-watch',
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (e) => reject(new HostError(`starting ${path} for container "${id}": ${e.message}`)));
  });
  child.unref();
  trace('watcher started');
}

/** The `sentry` backend. */
export const sentryBackend: Backend = {
  ...containerBackend,
  name: 'sentry',
  create,
  async exec(rec, req) {
    const level = (rec.backendState?.['level'] as SentryLevel | undefined) ?? 'balanced';
    const socket = join(stateDirOf(rec), 'sentry.sock');
    // no_new_privs as for the init (sentrySpec): the filter loads after the capabilities are
    // dropped, and an engine's process.json (docker exec's) need not ask for it
    const process = { ...req.process, noNewPrivileges: true };
    return containerBackend.exec(rec, { ...req, process, sentryJail: { filter: buildSentryFilter(level), socket } });
  },
  async start(rec, dir) {
    if (rec.backendState?.['restoredStopped'] !== 1) return containerBackend.start(rec, dir);
    // restored from a snapshot and stopped since: it goes on where the snapshot was taken
    rmSync(join(dir, 'exec.fifo'), { force: true });
    for (const pid of descendants(rec.pid)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // a zombie's end, meanwhile
      }
    }
  },
  async checkpoint(rec, dir, req) {
    const level = (rec.backendState?.['level'] as SentryLevel | undefined) ?? 'balanced';
    const { checkpointSentry } = await import('./checkpoint.js');
    await checkpointSentry(rec, dir, req, level);
  },
  async destroy(rec, dir) {
    const s = rec.backendState as Partial<SentryRecord> | undefined;
    if (s?.pid && s.pid > 0 && isAlive(s.pid, s.startTime ?? '')) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // it ended on its own
      }
    }
    await containerBackend.destroy(rec, dir);
  },
};
