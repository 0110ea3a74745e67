/**
 * The QEMU driver of the `microvm` backend: a `microvm` machine (no PCI, no firmware beyond qboot,
 * virtio-mmio devices) under KVM, or under TCG where KVM is absent or unusable.
 *
 * Facts of QEMU 7.2 this file relies on (measured, not assumed):
 * - `-M microvm` accepts pit, pic, rtc, isa-serial, acpi, ioapic2, x-option-roms,
 *   auto-kernel-cmdline (`qemu-system-x86_64 -M microvm,help`).
 * - `-M ...,accel=` and `-accel` cannot be combined, so the accelerator goes in `-accel` only, where
 *   `tb-size=<MiB>` bounds TCG's translation cache (the default of 1 GiB otherwise shows in VmSize).
 * - Under TCG the guest kernel calibrates its TSC against the PIT: with `pit=off` a TCG guest hangs
 *   ("tsc: Unable to calibrate against PIT"), so the PIT stays on under TCG; under KVM kvmclock
 *   gives the TSC frequency and the PIT is dropped.
 * - At start QEMU opens `<bindir>/../share/qemu/{bios-microvm.bin,linuxboot_dma.bin}` and, for TCG,
 *   the accelerator module `<bindir>/../lib/<multiarch>/qemu/accel-tcg-x86_64.so`; no seabios or
 *   iPXE file (microvm has no PCI NIC, so no option ROM).
 * - Every `-chardev socket` client is connected at start: QEMU refuses to start if nothing listens
 *   there.
 * - `-netdev user` (libslirp 4.7) makes one host socket per guest TCP connection or UDP flow:
 *   socket, fcntl O_NONBLOCK, setsockopt, connect (TCP) or sendto (UDP); DNS to 10.0.2.3 goes to
 *   the first nameserver of the jail's /etc/resolv.conf; 10.0.2.2 becomes the host's 127.0.0.1.
 *   A connect failing at once with ECONNREFUSED makes it free a packet twice and QEMU crash;
 *   EHOSTUNREACH does not (the guest gets an ICMP error).
 * - The guest names a virtio-serial port `/dev/vport<virtio index>p<n>`, and the virtio index
 *   depends on the other devices: the agent must find its port by name
 *   (`/sys/class/virtio-ports/*\/name` = `moat.ctl`), not by a fixed device path.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { release, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import * as z from 'zod';

import { HostError, MoatError } from '../../errors.js';
import { SHARE_TAG } from './protocol.js';
import type { Accel, GuestImage, VmConfig, VmmDriver, VmmLaunch } from './types.js';

/** The QEMU system emulator this driver runs. */
export const QEMU_BINARY = 'qemu-system-x86_64';

/** Name of the virtio-serial port of the agent's control channel (the guest looks it up by name). */
export const CONTROL_PORT_NAME = 'moat.ctl';


/** Size of TCG's translation block cache in MiB: bounds the VMM's memory beyond guest RAM. */
export const TCG_TB_SIZE_MIB = 64;

/** Kernel parameters this driver always sets (serial console, reboot and panic exit QEMU). */
export const QEMU_BASE_CMDLINE = 'console=ttyS0 quiet panic=-1 reboot=t';

/**
 * Kernel parameters that keep an emulated (TCG) guest from hanging in early boot when the host
 * is busy: its TSC calibration against the PIT then fails ("could not calculate TSC khz") and,
 * with no HPET or PM timer on microvm, the boot stalls (seen with three VMs booting at once on
 * two CPUs). The guest is told the TSC frequency (the host's, from /proc/cpuinfo) instead.
 */
export function tcgClockCmdline(): string {
  let mhz = 2000;
  try {
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m && Number(m[1]) > 100) mhz = Number(m[1]);
  } catch {
    // no /proc/cpuinfo: keep the default
  }
  return `tsc_early_khz=${Math.round(mhz * 1000)} no_timer_check`;
}

/** Longest path a unix socket address can hold (sun_path is 108 bytes with its NUL). */
const SUN_PATH_MAX = 107;

/** A VmConfig field the QEMU driver cannot express; `field` is its path inside the VmConfig. */
export class QemuConfigError extends MoatError {
  constructor(readonly field: string, readonly problem: string) {
    super(`qemu: VM config ${field}: ${problem}`);
  }
}

/** Finds an executable on PATH (or checks a path with a slash); undefined when absent. */
export function findExecutable(program: string): string | undefined {
  const candidates = program.includes('/')
    ? [program]
    : (process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
        .split(':')
        .filter((d) => d !== '')
        .map((d) => join(d, program));
  for (const c of candidates) {
    try {
      const st = statSync(c);
      if (st.isFile() && (st.mode & 0o111) !== 0) return c;
    } catch {
      // absent, or a directory of PATH we cannot search
    }
  }
  return undefined;
}

/** Why /dev/kvm cannot be used (absent, or not openable read-write), or undefined if it opens. */
export function kvmUnusable(): string | undefined {
  if (!existsSync('/dev/kvm')) return '/dev/kvm does not exist (no KVM on this host, or it is not passed into this environment)';
  try {
    closeSync(openSync('/dev/kvm', 'r+'));
    return undefined;
  } catch (err) {
    return `cannot open /dev/kvm read-write: ${errText(err)}`;
  }
}

/** The code (or message) of an error, for one-line reasons. */
function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? (err instanceof Error ? err.message : String(err));
}

/** Escapes a value for QEMU's `key=value,...` option syntax, where a literal comma is `,,`. */
function optValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/** Throws unless `p` is an absolute path without NUL or newline. */
function checkPath(field: string, p: string): void {
  if (!isAbsolute(p)) throw new QemuConfigError(field, `must be an absolute path, got "${p}"`);
  if (/[\0\n]/.test(p)) throw new QemuConfigError(field, 'must not contain NUL or newline');
}

/** Checks every field of `cfg` this driver puts into QEMU's command line. */
function validate(cfg: VmConfig): void {
  if (!Number.isInteger(cfg.memoryMiB) || cfg.memoryMiB < 16) throw new QemuConfigError('memoryMiB', `must be an integer of at least 16, got ${cfg.memoryMiB}`);
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > 255) throw new QemuConfigError('vcpus', `must be an integer from 1 to 255, got ${cfg.vcpus}`);
  checkPath('dir', cfg.dir);
  checkPath('guest.kernel', cfg.guest.kernel);
  checkPath('guest.initramfs', cfg.guest.initramfs);
  checkPath('controlSocket', cfg.controlSocket);
  checkPath('consoleLog', cfg.consoleLog);
  if (Buffer.byteLength(cfg.controlSocket) > SUN_PATH_MAX) throw new QemuConfigError('controlSocket', `is longer than a unix socket address allows (${SUN_PATH_MAX} bytes)`);
  if (/[\0\n]/.test(cfg.cmdline)) throw new QemuConfigError('cmdline', 'must not contain NUL or newline');
  if (cfg.disk !== undefined) {
    checkPath('disk.path', cfg.disk.path);
    if (cfg.disk.format !== 'qcow2' && cfg.disk.format !== 'raw') throw new QemuConfigError('disk.format', `must be qcow2 or raw, got ${String(cfg.disk.format)}`);
  }
  const tags = new Set<string>();
  for (const [field, sh] of [...(cfg.share ? [['share', cfg.share] as const] : []), ...(cfg.binds ?? []).map((b, i) => [`binds[${i}]`, b] as const)]) {
    checkPath(`${field}.hostPath`, sh.hostPath);
    if (!SHARE_TAG.test(sh.tag)) throw new QemuConfigError(`${field}.tag`, `must be 1 to 31 of [A-Za-z0-9_.-], got "${sh.tag}"`);
    if (tags.has(sh.tag)) throw new QemuConfigError(`${field}.tag`, `"${sh.tag}" is used twice`);
    tags.add(sh.tag);
  }
  if (cfg.qmpSocket !== undefined) {
    checkPath('qmpSocket', cfg.qmpSocket);
    if (Buffer.byteLength(cfg.qmpSocket) > SUN_PATH_MAX) throw new QemuConfigError('qmpSocket', `is longer than a unix socket address allows (${SUN_PATH_MAX} bytes)`);
  }
  if (cfg.net?.mode === 'tap') {
    if (!Number.isInteger(cfg.net.fd) || cfg.net.fd < 3) throw new QemuConfigError('net.fd', `must be an inherited fd >= 3, got ${cfg.net.fd}`);
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(cfg.net.mac)) throw new QemuConfigError('net.mac', `must be an Ethernet address (aa:bb:cc:dd:ee:ff), got "${cfg.net.mac}"`);
  } else if (cfg.net !== undefined && cfg.net.mode !== 'user') {
    throw new QemuConfigError('net.mode', `must be "user" or "tap", got ${String((cfg.net as { mode: unknown }).mode)}`);
  }
}

/** The qcow2 (or other) image metadata `qemu-img info --output=json --backing-chain` prints per layer. */
const imageInfoSchema = z.array(z.object({ filename: z.string(), format: z.string() }));

/** Every file of a disk image's backing chain below `path` (empty for raw), via `qemu-img info`. */
export function backingChain(path: string, format: 'qcow2' | 'raw'): string[] {
  if (format === 'raw') return [];
  let out: string;
  try {
    out = execFileSync('qemu-img', ['info', '-U', '--output=json', '--backing-chain', '-f', format, path], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 10_000,
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new HostError('qemu-img is not installed (install qemu-utils): it is needed to find the backing files of a qcow2 disk');
    throw new HostError(`qemu-img info ${path} failed: ${stderr !== undefined && stderr !== '' ? stderr : errText(err)}`);
  }
  const parsed = imageInfoSchema.safeParse(JSON.parse(out));
  if (!parsed.success) throw new HostError(`qemu-img info ${path} printed JSON of an unexpected shape`);
  // qemu-img names each layer as opened from our cwd (absolute below an absolute `path`).
  return parsed.data.slice(1).map((layer) => resolve(layer.filename));
}

/** Directories QEMU loads its own data from at start, derived from where the binary lives. */
export function qemuDataPaths(binary: string): string[] {
  let real = binary;
  try {
    real = realpathSync(binary);
  } catch {
    // keep the unresolved path
  }
  const prefix = dirname(dirname(real));
  const out: string[] = [];
  const data = join(prefix, 'share/qemu');
  if (existsSync(data)) out.push(data);
  // Firmware microvm loads, wherever a distribution's symlink points it (Debian: qboot.rom).
  for (const f of ['bios-microvm.bin', 'linuxboot_dma.bin']) {
    try {
      const dir = dirname(realpathSync(join(data, f)));
      if (!out.includes(dir)) out.push(dir);
    } catch {
      // not installed: QEMU will say so itself
    }
  }
  // Loadable modules (TCG is one in Debian's build): <prefix>/lib/<multiarch>/qemu, or lib64/lib.
  const multiarch = process.arch === 'x64' ? 'x86_64-linux-gnu' : `${process.arch}-linux-gnu`;
  for (const m of [join(prefix, 'lib', multiarch, 'qemu'), join(prefix, 'lib64/qemu'), join(prefix, 'lib/qemu')]) {
    if (existsSync(m)) {
      out.push(m);
      break;
    }
  }
  return out;
}

/** The QEMU command line of `cfg` (argv[0] is `binary`), validating `cfg` but reading nothing from the host. */
export function qemuArgv(cfg: VmConfig, binary: string = QEMU_BINARY): string[] {
  validate(cfg);
  const kvm = cfg.accel === 'kvm';
  // Under TCG the PIT must stay: the kernel calibrates the TSC against it (see the file comment).
  const machine = `microvm,pit=${kvm ? 'off' : 'on'},pic=off,isa-serial=on,rtc=on`;
  const cmdline = [QEMU_BASE_CMDLINE, cfg.accel === 'tcg' ? tcgClockCmdline() : '', cfg.cmdline.trim()].filter((s) => s !== '').join(' ');
  const argv = [
    binary,
    '-M', machine,
    '-accel', kvm ? 'kvm' : `tcg,tb-size=${TCG_TB_SIZE_MIB}`,
    '-cpu', kvm ? 'host' : 'max',
    '-m', String(cfg.memoryMiB),
    '-smp', String(cfg.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-display', 'none',
    '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    // `file:` takes the rest literally (commas included).
    '-serial', `file:${cfg.consoleLog}`,
    '-kernel', cfg.guest.kernel,
    '-initrd', cfg.guest.initramfs,
    '-append', cmdline,
    // The control channel first, so that it is the first virtio device the guest probes.
    '-chardev', `socket,id=ctl,path=${optValue(cfg.controlSocket)}`,
    '-device', 'virtio-serial-device',
    '-device', `virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`,
  ];
  if (cfg.disk !== undefined) {
    const ro = cfg.disk.readonly === true ? ',readonly=on' : '';
    argv.push(
      '-drive', `id=root,file=${optValue(cfg.disk.path)},format=${cfg.disk.format},if=none,cache=writeback${ro}`,
      '-device', 'virtio-blk-device,drive=root',
    );
  }
  if (cfg.share !== undefined) {
    argv.push(
      '-fsdev', `local,id=fs0,path=${optValue(cfg.share.hostPath)},security_model=none,readonly=on`,
      '-device', `virtio-9p-device,fsdev=fs0,mount_tag=${cfg.share.tag}`,
    );
  }
  (cfg.binds ?? []).forEach((b, i) => {
    // passthrough: QEMU makes files with the guest's ids and modes (it holds the capabilities for
    // it); none: with its own ids (its jail's root), ownership changes dropped
    argv.push(
      '-fsdev', `local,id=fsb${i},path=${optValue(b.hostPath)},security_model=${b.passthrough === true ? 'passthrough' : 'none'}${b.readonly ? ',readonly=on' : ''}`,
      '-device', `virtio-9p-device,fsdev=fsb${i},mount_tag=${b.tag}`,
    );
  });
  if (cfg.qmpSocket !== undefined) argv.push('-qmp', `unix:${optValue(cfg.qmpSocket)},server=on,wait=off`);
  // a restore: the machine waits, paused, for `migrate-incoming` over QMP
  if (cfg.incoming === true) argv.push('-S', '-incoming', 'defer'); // -S: it stays paused until `cont`
  if (cfg.net?.mode === 'tap') {
    // a pod's network: the tap was made in the pod's namespace and is inherited (podnet.ts)
    argv.push('-netdev', `tap,id=n0,fd=${cfg.net.fd}`, '-device', `virtio-net-device,netdev=n0,mac=${cfg.net.mac}`);
  } else if (cfg.net !== undefined) {
    // no allowlist here: the host sockets slirp makes come from the sentry, which checks every
    // destination against the egress rules (the VMM runs at the sentry's network level)
    argv.push('-netdev', 'user,id=n0', '-device', 'virtio-net-device,netdev=n0');
  }
  return argv;
}

/** Host paths QEMU touches for `cfg`, given its binary and the disk's backing files. */
function qemuPaths(cfg: VmConfig, binary: string, backing: string[]): string[] {
  const paths = [cfg.dir, cfg.guest.kernel, cfg.guest.initramfs];
  if (cfg.disk !== undefined) paths.push(cfg.disk.path, ...backing);
  if (cfg.share !== undefined) paths.push(cfg.share.hostPath);
  for (const b of cfg.binds ?? []) paths.push(b.hostPath);
  // slirp's DNS forwarder reads the host's resolver from it
  if (cfg.net?.mode === 'user' && existsSync('/etc/resolv.conf')) paths.push('/etc/resolv.conf');
  paths.push(dirname(cfg.controlSocket), dirname(cfg.consoleLog), ...qemuDataPaths(binary));
  if (cfg.qmpSocket !== undefined) paths.push(dirname(cfg.qmpSocket));
  return [...new Set(paths)];
}

/**
 * The QEMU driver. The caller must listen on `cfg.controlSocket` before starting the process (QEMU
 * connects to it as a client at start and exits if nobody listens).
 */
export const qemuDriver: VmmDriver = {
  name: 'qemu',
  unavailable(accel: Accel): string | undefined {
    if (findExecutable(QEMU_BINARY) === undefined) return `${QEMU_BINARY} is not installed (install qemu-system-x86)`;
    if (accel === 'kvm') {
      const why = kvmUnusable();
      if (why !== undefined) return `KVM was requested but ${why}`;
    }
    return undefined;
  },
  launch(cfg: VmConfig): VmmLaunch {
    const binary = findExecutable(QEMU_BINARY) ?? QEMU_BINARY;
    const argv = qemuArgv(cfg, binary);
    const backing = cfg.disk === undefined ? [] : cfg.disk.backing ?? backingChain(cfg.disk.path, cfg.disk.format);
    return { argv, paths: qemuPaths(cfg, binary, backing), devices: cfg.accel === 'kvm' ? ['/dev/kvm'] : [] };
  },
};

/**
 * Boots `guest` under KVM with a control socket and resolves true only if the agent's first bytes
 * arrive within `timeoutMs`; QEMU is killed in every case (a /dev/kvm that opens may still fail to
 * run a guest, e.g. on a PVM host without VMX, where QEMU aborts or hangs).
 */
export async function probeKvm(guest: GuestImage, timeoutMs: number): Promise<boolean> {
  if (kvmUnusable() !== undefined || findExecutable(QEMU_BINARY) === undefined) return false;
  const dir = mkdtempSync(join(tmpdir(), 'moat-kvm-probe-'));
  const cfg: VmConfig = {
    id: 'kvm-probe',
    dir,
    guest,
    cmdline: 'moat.probe=1',
    memoryMiB: 256,
    vcpus: 1,
    accel: 'kvm',
    controlSocket: join(dir, 'ctl.sock'),
    consoleLog: join(dir, 'console.log'),
  };
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  try {
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(cfg.controlSocket, () => res());
    });
    const launch = qemuDriver.launch(cfg);
    const [file, ...args] = launch.argv;
    if (file === undefined) return false;
    // cwd is the scratch directory, so an aborting QEMU's core file goes away with it.
    const child = spawn(file, args, { cwd: dir, stdio: 'ignore' });
    const exited = new Promise<void>((res) => {
      child.once('exit', () => res());
      child.once('error', () => res());
    });
    let timer: NodeJS.Timeout | undefined;
    const ok = await new Promise<boolean>((res) => {
      timer = setTimeout(() => res(false), timeoutMs);
      server.on('connection', (s: Socket) => s.once('data', () => res(true)));
      void exited.then(() => res(false));
    });
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    return ok;
  } catch {
    return false;
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((res) => server.close(() => res()));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The probe verdict cached on disk, valid while the key (host kernel, /dev/kvm identity) holds. */
const probeCacheSchema = z.object({ version: z.literal(1), key: z.string(), kvm: z.boolean() });

/** Identity of this machine's KVM: host kernel release and /dev/kvm's rdev and ctime. */
function kvmCacheKey(): string | undefined {
  try {
    const st = statSync('/dev/kvm');
    return `${release()} rdev=${st.rdev} ctime=${st.ctimeMs}`;
  } catch {
    return undefined;
  }
}

/** Reads a cached verdict for `key` from `file`; undefined when absent, stale or unreadable. */
function readProbeCache(file: string, key: string): boolean | undefined {
  try {
    const parsed = probeCacheSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    return parsed.success && parsed.data.key === key ? parsed.data.kvm : undefined;
  } catch {
    return undefined;
  }
}

/** Writes a verdict atomically; a cache that cannot be written is only a lost optimisation. */
function writeProbeCache(file: string, key: string, kvm: boolean): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ version: 1, key, kvm })}\n`, { mode: 0o644 });
    renameSync(tmp, file);
  } catch {
    // read-only state directory: the probe runs again next time
  }
}

/**
 * Picks the accelerator: `forced` wins; otherwise 'kvm' only if /dev/kvm opens read-write and
 * `probe` (normally `() => probeKvm(guest, ms)`) passes, else 'tcg'. The verdict is cached in
 * `cacheFile` keyed by the host kernel release and /dev/kvm's rdev and ctime, so the probe runs
 * once per machine boot; with neither a probe nor a cached verdict KVM is not trusted ('tcg').
 */
export async function chooseAccel(forced?: Accel, probe?: () => Promise<boolean>, cacheFile?: string): Promise<Accel> {
  if (forced !== undefined) return forced;
  if (kvmUnusable() !== undefined) return 'tcg';
  const key = kvmCacheKey();
  if (cacheFile !== undefined && key !== undefined) {
    const cached = readProbeCache(cacheFile, key);
    if (cached !== undefined) return cached ? 'kvm' : 'tcg';
  }
  if (probe === undefined) return 'tcg';
  let ok: boolean;
  try {
    ok = await probe();
  } catch {
    return 'tcg'; // a probe that could not run says nothing about KVM: do not cache it
  }
  if (cacheFile !== undefined && key !== undefined) writeProbeCache(cacheFile, key, ok);
  return ok ? 'kvm' : 'tcg';
}
