/**
 * The `microvm` backend: the container's process runs under its own guest kernel in a small VM
 * (one block device or a read-only host share, at most one network device, one control
 * channel). Per container, `create` starts a VM monitor (monitor.ts: relays stdio and speaks
 * the agent protocol) and the VMM, itself jailed by the `container` backend (its own mount,
 * pid, ipc, uts and network namespaces, no capabilities, a seccomp allowlist, a cgroup sized
 * to the guest memory plus overhead), then waits for the guest agent. The container's pid is
 * the monitor's, which exits with the container process's status (what a runc shim or conmon
 * waits for on the pid it is given); an exec's pid is its relay's (relay.ts).
 */
import { spawn } from 'node:child_process';
import type { StdioOptions } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { ConfigError, HostError, MoatError, UsageError } from '../../errors.js';
import { isAlive, procStat } from '../../container/proc.js';
import type { ContainerRecord } from '../../container/store.js';
import { defaultSeccompProfile } from '../../seccomp/index.js';
import type { Spec } from '../../spec/schema.js';
import { trace } from '../../util/log.js';
import type { Backend, CreateRequest, Created, ExecRequest, SentryJail } from '../backend.js';
import { containerBackend } from '../container/index.js';
import { writeCgroupFile } from '../../cgroups/fsutil.js';
import { baseImage, overlayDisk } from './disk.js';
import { agentPath, buildGuest, guestCacheDir } from './guest.js';
import type { MonitorConfig } from './monitor.js';
import { KILLED_WITH_VM } from './relay.js';
import type { RelayConfig } from './relay.js';
import type { GuestBind, GuestMount, ProcessSpec } from './protocol.js';
import { chooseAccel, probeKvm } from './qemu.js';
import { checkpointVm, continueVm, MicrovmCheckpointError, openVmImage, restoreDisk, restoreMemory } from './checkpoint.js';
import type { MicrovmManifest } from './checkpoint.js';
import type { ImageReader } from '../../checkpoint/image.js';
import type { Accel, GuestImage, VmConfig, VmmLaunch } from './types.js';
import { chooseDriver } from './vmm.js';
import { controlPath as firecrackerControlPath } from './firecracker.js';
import { EGRESS_ANNOTATION, startNetworkSentry } from '../sentry/index.js';
import type { StartedSentry } from '../sentry/index.js';
import { parsePolicy } from '../sentry/netpolicy.js';
import { hostTerminal } from '../../util/consolesocket.js';
import * as k from '../../sys/kernel.js';
import { makeSocketDir, removeSocketDir, socketDir } from './sockdir.js';
import { runHooks } from '../../container/hooks.js';
import { loopbackNameservers } from './dns.js';
import { attachTap, detachPodInterface, guestNetArgs, inNetns, openNetns, readPodInterface, unredirect } from './podnet.js';
import { engineNetwork, specNetns } from '../../spec/network.js';

/** Annotation that forces the VMM driver (qemu or firecracker). */
export const VMM_ANNOTATION = 'io.moat.vmm';
/** Annotation that forces the accelerator (kvm or tcg). */
export const ACCEL_ANNOTATION = 'io.moat.vmm.accel';

const MiB = 1024 * 1024;
/** Guest memory when the spec sets no limit. */
const DEFAULT_MEMORY_MIB = 256;
/**
 * Guest memory beyond the container's memory limit: the guest kernel, its unpacked initramfs
 * and page tables (measured: 128 MiB of guest RAM leaves 78 MiB free; with 64 MiB Debian's
 * kernel dies before its console is up, with 96 it panics unpacking the initramfs). As Kata
 * does, the VM gets the limit plus this, so a limit is what the workload can use.
 */
const GUEST_KERNEL_MIB = 64;
/** What the VMM may use beyond the guest's memory (QEMU itself, TCG's translation cache, the monitor). */
const VMM_OVERHEAD_MIB = 320;
/** Where the VMM's jail shows the host tree the embedded default shares with the guest. */
const HOST_SHARE = '/.moat-host-root';
/** How long a guest may take to boot under TCG before create gives up. */
const BOOT_TIMEOUT_MS = 120_000;

/** The package directory this code runs from (dist/moat-agent's grandparent). */
function packageDir(): string {
  return dirname(dirname(agentPath()));
}

/** The guest image for this host's kernel, built (once) into the state root's cache. */
export function ensureGuest(stateRoot: string, progress?: (m: string) => void): GuestImage {
  const agent = agentPath();
  if (!existsSync(agent)) throw new HostError(`${agent} is missing: run "npm run build"`);
  return buildGuest({ cacheDir: guestCacheDir(stateRoot), agent, ...(progress ? { progress } : {}) });
}

/** The process settings the agent applies, from the OCI process. */
export function agentProcess(spec: Spec): ProcessSpec {
  const p = spec.process;
  if (!p) throw new ConfigError('process', 'required to create a container');
  return {
    args: p.args,
    env: p.env ?? [],
    cwd: p.cwd,
    uid: p.user.uid,
    gid: p.user.gid,
    groups: p.user.additionalGids ?? [],
    ...(spec.hostname !== undefined ? { hostname: spec.hostname } : {}),
    ...(p.user.umask !== undefined ? { umask: p.user.umask } : {}),
    rlimits: (p.rlimits ?? []).map((r) => ({ resource: RLIMIT_NUMBERS[r.type] ?? -1, soft: BigInt(r.soft), hard: BigInt(r.hard) })).filter((r) => r.resource >= 0),
    ...(p.terminal ? { terminal: { rows: p.consoleSize?.height ?? 24, cols: p.consoleSize?.width ?? 80 } } : {}),
  };
}

const RLIMIT_NUMBERS: Record<string, number> = {
  RLIMIT_CPU: 0, RLIMIT_FSIZE: 1, RLIMIT_DATA: 2, RLIMIT_STACK: 3, RLIMIT_CORE: 4, RLIMIT_RSS: 5, RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7, RLIMIT_MEMLOCK: 8, RLIMIT_AS: 9, RLIMIT_LOCKS: 10, RLIMIT_SIGPENDING: 11, RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13, RLIMIT_RTPRIO: 14, RLIMIT_RTTIME: 15,
};

/**
 * The OCI spec of the VMM's jail: a read-only root made of the host's /usr and the files the
 * driver named, its own namespaces (an empty network namespace: a VM with a network gets its
 * host sockets from a sentry), no capabilities (but those a passthrough bind needs: QEMU sets
 * the guest's owners and modes on its files), no_new_privs, Moat's default seccomp allowlist
 * and a memory limit of the guest's memory plus overhead.
 */
export function vmmSpec(
  launch: VmmLaunch,
  root: string,
  vmDir: string,
  memoryMiB: number,
  share?: { source: string; jailPath: string },
  binds: readonly { source: string; jailPath: string; guest: { readonly: boolean }; passthrough?: boolean }[] = [],
): Spec {
  const bind = (p: string, rw: boolean) => ({ destination: p, type: 'bind', source: p, options: ['rbind', rw ? 'rw' : 'ro', 'nosuid', 'nodev'] });
  // the shared host tree is bound without its submounts (as the embedded default's overlay)
  const shareMount = share ? [{ destination: share.jailPath, type: 'bind', source: share.source, options: ['bind', 'ro', 'nosuid', 'nodev'] }] : [];
  // the spec's bind mounts, where QEMU shares them (a read-only one read-only here too)
  const bindMounts = binds.map((b) => ({ destination: b.jailPath, type: 'bind', source: b.source, options: ['rbind', b.guest.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'] }));
  // 9p passthrough: QEMU chowns and chmods as the guest asks, and acts on files of any owner as the guest's root may
  const fileCaps = binds.some((b) => b.passthrough === true) ? PASSTHROUGH_CAPS : [];
  const caps = { bounding: fileCaps, effective: fileCaps, permitted: fileCaps, inheritable: [], ambient: [] };
  // the VM's sockets, where the state directory leaves no room for their names (sockdir.ts)
  const socks = socketDir(vmDir);
  const extra = [...new Set(launch.paths)].filter(
    (p) => p !== '/usr' && !p.startsWith('/usr/') && p !== vmDir && !p.startsWith(`${vmDir}/`) && p !== socks && p !== share?.jailPath && p !== BINDS_DIR && !p.startsWith(`${BINDS_DIR}/`),
  );
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }];
  return {
    ociVersion: '1.0.2',
    root: { path: root, readonly: true },
    hostname: 'moat-vmm',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: launch.argv,
      env: ['PATH=/usr/bin:/bin'],
      cwd: '/',
      capabilities: caps,
      noNewPrivileges: true,
    },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
      bind('/usr', false),
      bind(vmDir, true),
      ...(socks !== vmDir ? [bind(socks, true)] : []),
      ...shareMount,
      ...bindMounts,
      ...extra.map((p) => bind(p, false)),
    ],
    linux: {
      namespaces,
      devices: launch.devices.includes('/dev/kvm') ? [{ path: '/dev/kvm', type: 'c', major: 10, minor: 232, fileMode: 0o600, uid: 0, gid: 0 }] : [],
      resources: { memory: { limit: (memoryMiB + VMM_OVERHEAD_MIB) * MiB } },
      seccomp: defaultSeccompProfile(),
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  } as Spec;
}

/** The capabilities QEMU holds for 9p passthrough binds (those of runc's defaults that act on files). */
const PASSTHROUGH_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID'];

/** Makes the jail's root: symlinks into /usr as on a merged-/usr Debian host, and the directories QEMU shares the binds from. */
function makeVmmRoot(root: string, binds: readonly PlannedBind[]): void {
  mkdirSync(root, { recursive: true, mode: 0o755 });
  for (const b of binds) mkdirSync(join(root, b.share), { recursive: true, mode: 0o755 });
  const links: readonly (readonly [string, string])[] = [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64']];
  for (const [link, target] of links) {
    if (!existsSync(join(root, link))) symlinkSync(target, join(root, link));
  }
}

/** Sends one command to a container's VM monitor and resolves with its first answer. */
export function monitorCall(rec: Pick<ContainerRecord, 'id' | 'backendState'>, cmd: Record<string, unknown>, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const path = rec.backendState?.['monitorSocket'];
  if (typeof path !== 'string') return Promise.reject(new HostError(`container "${rec.id}": its VM monitor is unknown`));
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new MoatError(`container "${rec.id}": the VM monitor did not answer "${String(cmd.op)}" within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(`${JSON.stringify(cmd)}\n`));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.destroy();
      const answer = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      if (typeof answer.error === 'string') reject(new MoatError(`container "${rec.id}": ${answer.error}`));
      else resolve(answer);
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(new MoatError(`container "${rec.id}": cannot reach its VM monitor: ${e.message}`));
    });
  });
}

/** Waits on a monitor for the container process's exit status (a connection kept open). */
function waitStatus(monitorSocket: string, id: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = connect(monitorSocket);
    let buf = '';
    sock.on('connect', () => sock.write('{"op":"wait"}\n'));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.destroy();
      const a = JSON.parse(buf.slice(0, nl)) as { status?: number; error?: string };
      if (typeof a.status === 'number') resolve(a.status);
      else reject(new MoatError(`container "${id}": ${a.error ?? 'no exit status from the VM'}`));
    });
    sock.on('error', (e) => reject(new MoatError(`container "${id}": lost the VM monitor: ${e.message}`)));
    // the monitor answers every waiter before it ends on its own: it was killed (with its VM)
    sock.on('close', () => resolve(KILLED_WITH_VM));
  });
}


/** The user's choice of driver and accelerator: flags first, then annotations. */
function choices(req: CreateRequest): { vmm?: string; accel?: Accel } {
  const vmm = req.microvm?.vmm ?? req.spec.annotations?.[VMM_ANNOTATION];
  const accel = req.microvm?.accel ?? req.spec.annotations?.[ACCEL_ANNOTATION];
  if (accel !== undefined && accel !== 'kvm' && accel !== 'tcg') throw new UsageError(`--vmm-accel: expected kvm or tcg, got "${accel}"`);
  return { ...(vmm ? { vmm } : {}), ...(accel ? { accel } : {}) };
}

/**
 * Refuses fds to pass (--preserve-fds, and the sockets of systemd socket activation, counted in
 * `listen`), which a VM cannot honour: a host fd does not cross into the guest.
 */
function refusePreservedFds(id: string, n: number, listen = 0): void {
  if (n <= 0) return;
  const what = [
    ...(listen > 0 ? [`LISTEN_FDS ${listen} (systemd socket activation)`] : []),
    ...(n > listen ? [`--preserve-fds ${n - listen}`] : []),
  ].join(' and ');
  throw new UsageError(`container "${id}": ${what}: the microvm isolation cannot pass host fds into the guest`);
}

async function create(req: CreateRequest): Promise<Created> {
  refusePreservedFds(req.id, req.preserveFds, req.listenFds);
  const stateRoot = dirname(req.dir);
  const process0 = agentProcess(req.spec);
  // a restored guest's processes run already: its mounts are the checkpoint's (none: a VM with
  // shares is not checkpointed)
  const { binds, mounts } = req.restore ? { binds: [], mounts: [] } : planMounts(req);
  if (mounts.length > 0) process0.mounts = mounts;
  if (req.spec.root?.readonly === true && !req.restore) process0.readonlyRoot = true;
  const { vmm, accel: forced } = choices(req);
  // egress rules give the VM its one network device (none without them, as runsc's --network=none)
  const egress = [...(req.sentry?.egress ?? []), ...(req.spec.annotations?.[EGRESS_ANNOTATION]?.split(',').filter(Boolean) ?? [])];
  if (egress.length > 0) parsePolicy('egress', egress); // a bad rule fails before anything is made
  // the guest's progress is worth printing only when it is really built (the first time)
  const steps: string[] = [];
  const guest = ensureGuest(stateRoot, (m) => steps.push(m));
  if (!steps.some((m) => m.startsWith('using cached'))) for (const m of steps) req.log.warn(`guest build: ${m}`);
  trace('guest ready');
  const accel = await chooseAccel(forced, () => probeKvm(guest, 20_000), join(guestCacheDir(stateRoot), 'accel.json'));
  // a restore: the machine of the checkpoint (memory, command line, disk), its state streamed in
  let restore: { reader: ImageReader; manifest: MicrovmManifest } | undefined;
  if (req.restore) {
    if (req.embedded) throw new MicrovmCheckpointError(req.id, 'the embedded default cannot be restored under microvm (its host share is not migratable); restore a bundle');
    restore = await openVmImage(req.id, req.restore.imagePath, async () => accel);
    // the machine comes back with its network device and the rules it had (QEMU's network
    // state is part of the migration); other rules for the restore are refused, not merged
    const rules = restore.manifest.vm.egress ?? [];
    if (egress.length > 0 && egress.join(',') !== rules.join(',')) {
      await restore.reader.close();
      throw new UsageError(`restore: the checkpoint's VM has the egress rules [${rules.join(', ')}]; it is restored with those, not [${egress.join(', ')}]`);
    }
    egress.splice(0, egress.length, ...rules);
  }
  // The spec's network namespace is the VM monitor's (the container's pid), as it would be an
  // init's: hooks that equip it through /proc/PID/ns/net must not reach the host's. Its interface
  // becomes the VM's when something may have put one there: the namespace came by path (a CNI
  // plugin, netavark) or a hook runs once it exists (Docker's libnetwork). Egress rules give the
  // VM a user-mode network instead, a restored VM has the one it had, and a Kubernetes pod's
  // sandbox (pause) container needs none: its app container takes the interface.
  const netns = specNetns(req.spec);
  const sandbox = req.spec.annotations?.['io.kubernetes.cri.container-type'] === 'sandbox' || req.spec.annotations?.['io.kubernetes.cri-o.ContainerType'] === 'sandbox';
  const podNetwork = egress.length === 0 && !req.restore && !sandbox && engineNetwork(req.spec);
  const mem = req.spec.linux?.resources?.memory?.limit;
  const memoryMiB = restore ? restore.manifest.vm.memoryMiB : typeof mem === 'number' && mem > 0 ? Math.max(64, Math.ceil(mem / MiB)) + GUEST_KERNEL_MIB : DEFAULT_MEMORY_MIB;
  try {
    return await createVm(req, { stateRoot, process0, vmm, accel, egress, guest, memoryMiB, binds, ...(netns ? { netns } : {}), podNetwork, ...(restore ? { restore } : {}) });
  } finally {
    await restore?.reader.close();
  }
}

/** What create decided before the VM is made. */
interface VmPlan {
  stateRoot: string;
  process0: ProcessSpec;
  vmm: string | undefined;
  accel: Accel;
  egress: string[];
  guest: GuestImage;
  memoryMiB: number;
  binds: PlannedBind[];
  /** The container's network namespace (the VM monitor's): a path, or a new one. */
  netns?: { path?: string };
  /** Whether the namespace's interface, if it gets one, becomes the VM's (podnet.ts). */
  podNetwork: boolean;
  restore?: { reader: ImageReader; manifest: MicrovmManifest };
}

/** Where the VMM's jail shows the spec's bind mounts: /.moat-binds/N (a directory, or one holding the file "file"). */
const BINDS_DIR = '/.moat-binds';

/** A bind mount of the spec as the VM shares it: the host source, the jail's view, the guest's mount. */
interface PlannedBind {
  source: string;
  /** The directory QEMU shares (a file's is a directory of its own, holding only it). */
  share: string;
  /**
   * The guest's owners and modes are the host files' (9p passthrough): a VM of an image, whose
   * binds are an engine's (volumes, /etc/hosts), as under runc; not the embedded default's, whose
   * VMM also shares the host root and must not get the capabilities for that.
   */
  passthrough: boolean;
  /** Where the jail binds `source`: `share`, or `share`/file. */
  jailPath: string;
  guest: GuestBind;
}

/** Mount points the agent makes of its own in every guest (proc, sysfs, devtmpfs, devpts, the shm tmpfs). */
const GUEST_OWN = new Set(['/proc', '/sys', '/dev', '/dev/pts', '/dev/shm']);

/**
 * The spec's mounts the guest makes, in the spec's order: each bind mount a virtio-9p share (a
 * source must be a directory or a regular file; a file is shared through a directory of its own
 * in the VMM's jail, so none of its siblings reaches the guest), and tmpfs and mqueue mounts of
 * the guest's own. What the agent mounts itself (GUEST_OWN; an engine's /dev/shm is a bind of a
 * host tmpfs, the guest's own serves) and other types (cgroup) are left to it.
 */
function planMounts(req: CreateRequest): { binds: PlannedBind[]; mounts: GuestMount[] } {
  const binds: PlannedBind[] = [];
  const mounts: GuestMount[] = [];
  (req.spec.mounts ?? []).forEach((m, j) => {
    const opts = m.options ?? [];
    const flags = { readonly: opts.includes('ro'), nosuid: opts.includes('nosuid'), nodev: opts.includes('nodev'), noexec: opts.includes('noexec') };
    if (GUEST_OWN.has(m.destination.replace(/\/+$/, ''))) return;
    const bind = m.type === 'bind' || opts.some((o) => o === 'bind' || o === 'rbind');
    if (!bind) {
      // a tmpfs's size, mode and owner; its flags are the mount's
      if (m.type === 'tmpfs') mounts.push({ kind: 'tmpfs', destination: m.destination, data: opts.filter((o) => o.includes('=')).join(','), ...flags });
      else if (m.type === 'mqueue') mounts.push({ kind: 'mqueue', destination: m.destination, data: '', ...flags });
      return;
    }
    const out = binds;
    const source = resolve(req.bundle, m.source ?? '');
    let st;
    try {
      st = statSync(source);
    } catch (e) {
      throw new ConfigError(`mounts[${j}].source`, `container "${req.id}": ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!st.isDirectory() && !st.isFile()) throw new ConfigError(`mounts[${j}].source`, `container "${req.id}": ${source} is neither a directory nor a regular file (the microvm isolation shares only those)`);
    const i = out.length;
    const share = `${BINDS_DIR}/${i}`;
    const file = st.isFile();
    const guest: GuestBind = { kind: 'bind', tag: `moat.b${i}`, destination: m.destination, file, ...flags };
    out.push({ source, share, jailPath: file ? `${share}/file` : share, guest, passthrough: req.embedded === undefined });
    mounts.push(guest);
  });
  return { binds, mounts };
}

/** Makes the VM of `req` (booted, or restored from its checkpoint) with its monitor and jailed VMM. */
async function createVm(req: CreateRequest, plan: VmPlan): Promise<Created> {
  const { stateRoot, process0, vmm, accel, egress, guest, memoryMiB, binds, netns, podNetwork, restore } = plan;

  const vmDir = req.dir;
  const socks = makeSocketDir(vmDir);
  let cmdline: string;
  const cfgBase: Omit<VmConfig, 'cmdline'> = {
    id: req.id,
    dir: vmDir,
    guest,
    memoryMiB,
    vcpus: 1,
    accel,
    controlSocket: join(socks, 'ctl.sock'),
    consoleLog: join(vmDir, 'console.log'),
    qmpSocket: join(socks, 'qmp.sock'),
    ...(egress.length > 0 ? { net: { mode: 'user' as const } } : {}),
    ...(binds.length > 0 ? { binds: binds.map((b) => ({ hostPath: b.share, tag: b.guest.tag, readonly: b.guest.readonly, passthrough: b.passthrough })) } : {}),
    ...(restore ? { incoming: true } : {}),
  };
  const netArg = egress.length > 0 ? ' moat.net=user' : '';
  let vm: VmConfig;
  let baseOf = '';
  if (req.embedded) {
    // the host root, read-only, with the guest's writes in a tmpfs overlay inside the guest
    cmdline = `moat.root=9p:hostroot${netArg}`;
    // QEMU sees the host tree at HOST_SHARE inside its jail
    vm = { ...cfgBase, cmdline, share: { hostPath: HOST_SHARE, tag: 'hostroot' } };
  } else if (restore) {
    // the checkpoint's overlay, backed by the base image it was made on
    const overlay = join(vmDir, 'disk.qcow2');
    const backing = await restoreDisk(req.id, restore.reader, overlay, restore.manifest.vm.baseImage, join(stateRoot, 'images'));
    baseOf = restore.manifest.vm.baseImage;
    cmdline = restore.manifest.vm.cmdline;
    vm = { ...cfgBase, cmdline, disk: { path: overlay, format: 'qcow2', backing } };
  } else {
    const base = baseImage(req.rootfs, stateRoot, (m: string) => trace(m));
    const overlay = join(vmDir, 'disk.qcow2');
    overlayDisk(base, overlay);
    baseOf = base;
    cmdline = `moat.root=vda${netArg}`;
    vm = { ...cfgBase, cmdline, disk: { path: overlay, format: 'qcow2' } };
  }
  // a pod's interface, if its namespace turns out to have one, comes as a tap fd: a driver that takes one
  const driver = chooseDriver(vmm, accel, podNetwork ? { ...vm, net: { mode: 'tap', fd: 3, mac: '02:00:00:00:00:00' } } : vm);
  if (driver.name === 'firecracker') vm = { ...vm, controlSocket: firecrackerControlPath(vm) };

  // the monitor listens before the VMM starts: the VMM connects to it as a client
  const monitorSocket = join(socks, 'monitor.sock');
  // a terminal: the guest makes the container's pty; its host end is a pty pair here whose
  // master goes to the console socket (as runc's) and whose slave is the monitor's stdio
  if (process0.terminal && !req.consoleSocket) throw new ConfigError('process.terminal', `container "${req.id}": a terminal needs --console-socket (or a foreground run)`);
  const tty = process0.terminal && req.consoleSocket ? hostTerminal(`container "${req.id}"`, req.consoleSocket, process0.terminal) : undefined;
  const mcfg: MonitorConfig = {
    id: req.id,
    controlSocket: vm.controlSocket,
    monitorSocket,
    process: process0,
    log: join(vmDir, 'monitor.log'),
    // a restored guest's agent relays names already: the checkpointed monitor's list goes on
    ...(restore?.manifest.monitor.dns ? { dns: restore.manifest.monitor.dns } : {}),
    ...(restore ? { restored: restore.manifest.monitor } : {}),
  };
  const json = JSON.stringify(mcfg, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  k.sealInheritedFds(); // the monitor and QEMU live on: none keeps a caller's fd
  // the container's network namespace is the monitor's (its pid is the container's: hooks and
  // engines find the namespace at /proc/PID/ns/net); spawned from this thread while it is there
  let netnsFd: number | undefined;
  try {
    netnsFd = netns ? openNetns(req.id, netns) : undefined;
  } catch (e) {
    if (tty !== undefined) closeSync(tty);
    throw e;
  }
  const spawnMonitor = () =>
    spawn(process.execPath, [join(packageDir(), 'bin', 'moat.cjs'), '--vm-monitor', json], {
      detached: true,
      // the monitor relays the guest process's stdio to these (the runtime's own by default)
      stdio: [...((tty !== undefined ? [tty, tty, tty] : req.stdio ?? ['inherit', 'inherit', 'inherit']) as (number | 'inherit')[]), 'pipe'] as StdioOptions,
    });
  let monitor: ReturnType<typeof spawnMonitor>;
  try {
    monitor = netnsFd !== undefined ? inNetns(netnsFd, spawnMonitor) : spawnMonitor();
  } catch (e) {
    if (netnsFd !== undefined) closeSync(netnsFd);
    throw e;
  } finally {
    if (tty !== undefined) closeSync(tty);
  }
  // recorded at once, so that delete finds the monitor even if this create is killed
  writeFileSync(join(vmDir, 'monitor.pid'), `${monitor.pid ?? 0} ${procStat(monitor.pid ?? 0)?.startTime ?? ''}\n`);
  const reports = monitor.stdio[3] as Readable;
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  reports.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  let monitorExit: string | undefined;
  monitor.on('exit', (code, sig) => {
    monitorExit = sig ?? `status ${code}`;
    for (const w of waiters.splice(0)) w();
  });
  const logs = (): string => `${logTail(join(vmDir, 'vmm.log'), 'VMM')}${logTail(vm.consoleLog, 'guest console')}`;
  const until = async (prefix: string, ms: number, what: string): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = lines.find((l) => l.startsWith(prefix));
      if (got !== undefined) return got;
      if (monitorExit !== undefined) throw new HostError(`container "${req.id}": the VM monitor exited (${monitorExit}) before ${what}${logs()}`);
      if (Date.now() > deadline) throw new HostError(`container "${req.id}": ${what} did not happen within ${ms / 1000} s${logs()}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(500, Math.max(0, deadline - Date.now())));
        waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  };
  const killMonitor = (): void => {
    try {
      if (monitor.pid) process.kill(monitor.pid, 'SIGKILL');
    } catch {
      // gone
    }
  };

  let created: Created | undefined;
  let netSentry: { sentry: StartedSentry; jail: SentryJail } | undefined;
  let tap: { fd: number; name: string } | undefined;
  let podIf = '';
  try {
    await until('listening', 20_000, 'the VM monitor listened');
    // the runtime's hooks, with the container's pid (the monitor's) in its namespaces: Docker's
    // libnetwork moves the container's interface into /proc/PID/ns/net here
    const state = req.hookState('creating', monitor.pid ?? 0);
    await runHooks(req.id, 'prestart', req.spec.hooks?.prestart, state);
    await runHooks(req.id, 'createRuntime', req.spec.hooks?.createRuntime, state);
    if (netnsFd !== undefined && podNetwork) {
      const pod = readPodInterface(req.id, netnsFd);
      if (pod !== undefined) {
        tap = attachTap(req.id, netnsFd, pod);
        podIf = pod.name;
        // the jail's fd 3 (passFds below)
        vm = { ...vm, cmdline: `${vm.cmdline} ${guestNetArgs(pod)}`, net: { mode: 'tap', fd: 3, mac: pod.mac } };
        trace(`pod interface ${pod.name} on ${tap.name}`);
      }
    }
    if (podNetwork) {
      // the pod namespace's loopback nameservers (Docker's embedded DNS), read once the hooks ran:
      // libnetwork rewrites the container's resolv.conf to 127.0.0.11 when it starts that server
      const dns = loopbackNameservers(req.spec, req.bundle);
      if (dns.length > 0) {
        await monitorCall({ id: req.id, backendState: { monitorSocket } }, { op: 'nameservers', servers: dns });
        vm = { ...vm, cmdline: `${vm.cmdline} ${dns.map((a) => `moat.dns=${a}`).join(' ')}` };
        trace(`relaying nameservers ${dns.join(', ')}`);
      }
    }
    const launch = driver.launch(vm);
    trace(`vmm ${driver.name} (${accel}) ready to start`);
    // the VMM's network: QEMU's user-mode network, its host sockets made and checked by a sentry
    if (vm.net?.mode === 'user') {
      netSentry = startNetworkSentry(req.id, vmDir, egress);
      // recorded at once, as the monitor's: delete finds it even if this create is killed
      writeFileSync(join(vmDir, 'vmm-sentry.pid'), `${netSentry.sentry.pid} ${procStat(netSentry.sentry.pid)?.startTime ?? ''}\n`);
    }
    const root = join(vmDir, 'vmm-root');
    makeVmmRoot(root, binds);
    const devnull = openSync('/dev/null', 'r+');
    const vmmLog = openSync(join(vmDir, 'vmm.log'), 'a');
    // the VMM's jail: none of the user's rootfs, terminal or sentry settings apply to it
    const { embedded: _e, sentry: _s, sentryJail: _j, consoleSocket: _c, ...jailReq } = req;
    try {
      created = await containerBackend.create({
        ...jailReq,
        rootfs: root,
        spec: vmmSpec(launch, root, vmDir, memoryMiB, req.embedded ? { source: req.embedded.lower, jailPath: HOST_SHARE } : undefined, binds),
        ...(netSentry ? { sentryJail: netSentry.jail } : {}),
        foreground: false,
        preserveFds: tap ? 1 : 0,
        ...(tap ? { passFds: [tap.fd] } : {}),
        stdio: [devnull, vmmLog, vmmLog],
        network: 'none',
      });
    } finally {
      closeSync(devnull);
      closeSync(vmmLog);
      // QEMU holds the tap now (or nothing does: the tap goes)
      if (tap) closeSync(tap.fd);
      tap = undefined;
    }
    joinVmCgroups(req, monitor.pid ?? 0, created.cgroupPaths);
    // the VMM's jail is a container of its own: release it at once, the guest boots now
    const jailRec = { id: req.id, pid: created.pid, pidStartTime: created.pidStartTime } as ContainerRecord;
    await containerBackend.start(jailRec, vmDir);
    await launch.configure?.();
    trace('vmm started');
    if (restore) {
      // the guest's memory, checked against its hash before the VM goes on; the container
      // process runs again at once (no exec-fifo marker: the state is "running")
      await restoreMemory(req.id, restore.reader, vmDir, join(socks, 'qmp.sock'), BOOT_TIMEOUT_MS, req.restore?.paused === true).catch((e: unknown) => {
        throw e instanceof MoatError ? e : new MicrovmCheckpointError(req.id, `restoring the VM's memory: ${(e as Error).message}${logs()}`);
      });
      // paused (from a snapshot): "created" until start continues it
      if (req.restore?.paused === true) writeFileSync(join(vmDir, 'exec.fifo'), '', { mode: 0o600 });
      trace('vm restored');
    } else {
      await until('hello', BOOT_TIMEOUT_MS, 'the guest agent started');
      trace('guest agent up');
      await netSentry?.sentry.ready;
      // the lifecycle reads "created" from the exec fifo's presence: the VMM's own one is gone
      // (its jail has started), so a marker stands for the guest process not yet started
      writeFileSync(join(vmDir, 'exec.fifo'), '', { mode: 0o600 });
    }
  } catch (e) {
    killMonitor();
    netSentry?.sentry.kill();
    if (tap) closeSync(tap.fd);
    if (podIf !== '' && netnsFd !== undefined) unredirect(netnsFd, podIf);
    // the VMM may run already (a guest that never came up): take it and its cgroups down, or
    // it would outlive the state directory the caller is about to remove
    const vmm = created;
    if (vmm !== undefined) {
      try {
        process.kill(vmm.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await containerBackend.destroy({ id: req.id, cgroupPaths: vmm.cgroupPaths } as ContainerRecord, vmDir).catch(() => {});
    }
    throw e;
  } finally {
    if (netnsFd !== undefined) closeSync(netnsFd);
  }
  reports.destroy();
  monitor.removeAllListeners('exit');
  monitor.unref();
  const release = restore ? restore.manifest.vm.guestRelease : lines.find((l) => l.startsWith('hello '))?.slice(6) ?? '';
  const backendState = {
    monitorPid: monitor.pid ?? 0,
    monitorStartTime: procStat(monitor.pid ?? 0)?.startTime ?? '',
    // the VMM's jail: what a kill of every process takes down
    vmmPid: created.pid,
    vmmStartTime: created.pidStartTime,
    monitorSocket,
    vmm: driver.name,
    accel,
    guestRelease: release,
    // what a checkpoint records of the machine
    memoryMiB,
    cmdline,
    baseImage: baseOf,
    embedded: req.embedded ? 1 : 0,
    egress: egress.length,
    egressRules: egress.join(','),
    restoredPaused: req.restore?.paused === true ? 1 : 0,
    binds: binds.length,
    // the pod interface the VM took over, and its namespace when it outlives the VM
    podInterface: podIf,
    podNetns: podIf !== '' ? netns?.path ?? '' : '',
  };
  return {
    ...created,
    // the container's pid is the monitor's: it ends with the container process's status
    pid: monitor.pid ?? 0,
    pidStartTime: backendState.monitorStartTime,
    backendState,
    ...(req.foreground ? { waitExit: waitStatus(monitorSocket, req.id) } : {}),
  };
}

/**
 * Puts the monitor in the VM's cgroup v1 hierarchies but freezer and devices. containerd's runc
 * shim reads a container's cgroups from /proc/PID/cgroup of the pid it is given (the monitor's):
 * its metrics (`docker stats`) and OOM events are then the VM's, and the VM's memory limit covers
 * its monitor. Not the freezer (the monitor answers kill and state while the VM is paused), not
 * devices (it makes the host ends of terminals), and no cgroup v2 directory, where the freezer
 * cannot be left out: on a cgroup v2 host the monitor stays where it was started.
 */
function joinVmCgroups(req: CreateRequest, pid: number, paths: Record<string, string> | undefined): void {
  if (pid <= 0 || paths === undefined) return;
  for (const [controller, dir] of Object.entries(paths)) {
    if (controller === '' || controller === 'freezer' || controller === 'devices') continue;
    try {
      writeCgroupFile(dir, 'cgroup.procs', String(pid));
    } catch (e) {
      req.log.warn(`container "${req.id}": the VM monitor stays out of the VM's ${controller} cgroup: ${(e as Error).message}`);
    }
  }
}

/** The last lines of a log (the guest console, the VMM's stderr) for an error message, titled `what`. */
function logTail(path: string, what: string): string {
  try {
    const tail = readFileSync(path, 'utf8').trim().split('\n').slice(-10).join('\n');
    return tail ? `; ${what}:\n${tail}` : '';
  } catch {
    return '';
  }
}

/**
 * Runs a process in the guest: starts its relay (relay.ts), a host process that asks the monitor
 * to run it and relays its stdio (the caller's fds, else this process's own), and reports the
 * relay's pid, on which the caller (a shim, conmon, `moat exec`) waits and which it signals as it
 * would an exec'd process of a container backend.
 */
async function exec(rec: ContainerRecord, req: ExecRequest): Promise<Created> {
  refusePreservedFds(rec.id, req.preserveFds);
  const spec = agentProcess({ ...rec.spec, process: req.process });
  // a terminal: the monitor makes the host end and sends its master to the console socket
  const tty = spec.terminal !== undefined;
  if (tty && !req.consoleSocket) throw new ConfigError('process.terminal', `container "${rec.id}": exec with a terminal needs --console-socket (or a foreground exec)`);
  const monitorSocket = rec.backendState?.['monitorSocket'];
  if (typeof monitorSocket !== 'string') throw new HostError(`container "${rec.id}": its VM monitor is unknown`);
  const cfg: RelayConfig = { id: rec.id, monitorSocket, spec, ...(tty ? { consoleSocket: resolve(req.consoleSocket ?? '') } : {}) };
  const json = JSON.stringify(cfg, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  k.sealInheritedFds(); // a detached exec's relay lives on: it keeps no caller's fd
  const stdio = tty ? ['ignore', 'ignore', 'ignore'] : req.stdio ?? ['inherit', 'inherit', 'inherit'];
  const relay = spawn(process.execPath, [join(packageDir(), 'bin', 'moat.cjs'), '--vm-exec-relay', json], {
    // its own process group: a terminal's ^C reaches the caller, which forwards it once
    detached: true,
    stdio: [...(stdio as (number | 'inherit' | 'ignore')[]), 'pipe'] as StdioOptions,
  });
  const exited = new Promise<number>((res) => {
    relay.on('exit', (code, sig) => res(code ?? 128 + (sig ? osConstants.signals[sig] : 0)));
  });
  relay.on('error', () => {}); // a spawn failure shows as its exit
  const report = await new Promise<string>((res) => {
    let buf = '';
    const out = relay.stdio[3] as Readable;
    out.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
    });
    out.on('close', () => res(buf.split('\n')[0] ?? ''));
    out.on('error', () => res(buf.split('\n')[0] ?? ''));
  });
  if (report.startsWith('error ') || report === '') {
    const status = report === '' ? await exited : 0;
    throw new MoatError(`container "${rec.id}": exec: ${report === '' ? `its relay ended (status ${status}) before the process started` : report.slice(6)}`);
  }
  const pid = relay.pid ?? 0;
  const pidStartTime = procStat(pid)?.startTime ?? '';
  if (!req.foreground) relay.unref();
  return { pid, pidStartTime, ...(req.foreground ? { waitExit: exited } : {}) };
}

/**
 * The record with the VMM's pid, for what acts on the jail's processes. A record from before the
 * monitor's pid was the container's has the VMM's as its own.
 */
function vmmRecord(rec: ContainerRecord): ContainerRecord {
  const pid = Number(rec.backendState?.['vmmPid'] ?? 0);
  return pid > 0 ? { ...rec, pid, pidStartTime: String(rec.backendState?.['vmmStartTime'] ?? '') } : rec;
}

/** Whether the container's VM monitor still runs. */
function monitorAlive(rec: ContainerRecord): boolean {
  const pid = Number(rec.backendState?.['monitorPid'] ?? 0);
  return pid > 0 && isAlive(pid, String(rec.backendState?.['monitorStartTime'] ?? ''));
}

/** A helper's pid and start time from `file` (monitor.pid, vmm-sentry.pid) in the state dir (also for a create that died). */
function recordedPid(dir: string, file: string): { pid: number; startTime: string } | undefined {
  try {
    const [pid, startTime = ''] = readFileSync(join(dir, file), 'utf8').trim().split(' ');
    return Number(pid) > 0 ? { pid: Number(pid), startTime } : undefined;
  } catch {
    return undefined;
  }
}

/** The `microvm` backend. */
export const microvmBackend: Backend = {
  ...containerBackend,
  name: 'microvm',
  create,
  async start(rec, dir) {
    // a VM restored paused from a snapshot: its process runs already, only the vCPUs wait
    if (rec.backendState?.['restoredPaused'] === 1) await continueVm(dir);
    else await monitorCall(rec, { op: 'start' }, 60_000);
    rmSync(join(dir, 'exec.fifo'), { force: true });
  },
  exec,
  async kill(rec, signal, all) {
    if (signal === 9 && all) {
      // delete --force and kill --all KILL: the VM itself goes (its monitor follows)
      await containerBackend.kill(vmmRecord(rec), 9, true);
      return;
    }
    if (!monitorAlive(rec)) return;
    await monitorCall(rec, { op: 'kill', signal, all });
  },
  async pids(rec) {
    // host pids, as every runtime's ps gives them (a shim or `docker top` looks them up on the
    // host): the monitor and the VMM's jail. The guest's own are `exec ID ps`'s to show.
    const jail = await containerBackend.pids(vmmRecord(rec));
    const monitor = Number(rec.backendState?.['monitorPid'] ?? 0);
    return monitorAlive(rec) ? [monitor, ...jail.filter((p) => p !== monitor)] : jail;
  },
  async checkpoint(rec, dir, opts) {
    const b = rec.backendState ?? {};
    if (b['vmm'] !== 'qemu') throw new MicrovmCheckpointError(rec.id, `checkpoint needs the QEMU driver (this VM runs under ${String(b['vmm'])})`);
    if (b['embedded'] === 1) throw new MicrovmCheckpointError(rec.id, 'the embedded default cannot be checkpointed under microvm: QEMU cannot migrate a mounted 9p share');
    if (typeof b['podInterface'] === 'string' && b['podInterface'] !== '') throw new MicrovmCheckpointError(rec.id, `a VM with a pod network (interface ${b['podInterface']}) cannot be checkpointed: its tap is not migratable`);
    if (Number(b['binds'] ?? 0) > 0) throw new MicrovmCheckpointError(rec.id, 'a VM with bind mounts cannot be checkpointed: QEMU cannot migrate their mounted 9p shares');
    const egressRules = String(b['egressRules'] ?? '').split(',').filter(Boolean);
    if (Number(b['egress'] ?? 0) !== egressRules.length) throw new MicrovmCheckpointError(rec.id, 'its record predates checkpoints of VMs with egress rules');
    if (typeof b['baseImage'] !== 'string' || b['baseImage'] === '' || typeof b['cmdline'] !== 'string') {
      throw new MicrovmCheckpointError(rec.id, 'its record predates checkpoint support (no machine settings recorded)');
    }
    await checkpointVm({
      id: rec.id,
      dir,
      imagePath: opts.imagePath,
      leaveRunning: opts.leaveRunning,
      spec: rec.spec,
      vm: {
        driver: 'qemu',
        accel: b['accel'] === 'kvm' ? 'kvm' : 'tcg',
        memoryMiB: Number(b['memoryMiB']),
        vcpus: 1,
        cmdline: b['cmdline'],
        guestRelease: String(b['guestRelease'] ?? ''),
        baseImage: b['baseImage'],
        egress: egressRules,
      },
      monitorState: async () => {
        const a = await monitorCall(rec, { op: 'checkpoint-state' });
        return { pid: Number(a['pid'] ?? 0), pending: String(a['pending'] ?? ''), nextStream: Number(a['nextStream'] ?? 1) };
      },
    });
  },
  async destroy(rec, dir) {
    for (const file of ['monitor.pid', 'vmm-sentry.pid']) {
      const m = recordedPid(dir, file);
      if (m && isAlive(m.pid, m.startTime)) {
        try {
          process.kill(m.pid, 'SIGKILL');
        } catch {
          // it ended on its own
        }
      }
    }
    await containerBackend.destroy(rec, dir);
    removeSocketDir(dir);
    // a pod namespace outlives the VM: its interface forwards to nothing once the tap is gone
    const podIf = rec.backendState?.['podInterface'];
    const podNs = rec.backendState?.['podNetns'];
    if (typeof podIf === 'string' && podIf !== '' && typeof podNs === 'string' && podNs !== '') detachPodInterface(podNs, podIf);
  },
};
