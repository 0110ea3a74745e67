/**
 * The Firecracker driver of the `microvm` backend. Firecracker starts empty and is configured
 * through its REST API on a unix socket (`--api-sock`): machine, boot source, drive and vsock,
 * then `InstanceStart`. Firecracker keeps its own seccomp filters (no `--no-seccomp`).
 *
 * Differences from QEMU the caller must honour:
 * - The control channel is virtio-vsock, not virtio-serial: the agent (told by `moat.ctl=vsock:1024`)
 *   connects with AF_VSOCK to CID 2 (the host) port 1024, and Firecracker forwards that connection
 *   to the unix socket `<uds_path>_1024`, i.e. `controlPath(cfg)`: the caller listens there,
 *   instead of on `cfg.controlSocket`, before `configure()` runs.
 * - The guest console (ttyS0) is Firecracker's standard output: the caller sends the process's
 *   stdout to a file (and gives it a non-terminal stdin).
 * - The kernel must be an uncompressed ELF vmlinux (no bzImage), disks raw only, no 9p share and
 *   no user-mode network (Firecracker networks through tap devices only).
 * - The API socket and the vsock socket must not exist before the process starts: Firecracker
 *   creates them.
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, isAbsolute, join } from 'node:path';

import { HostError, MoatError } from '../../errors.js';
import { findExecutable, kvmUnusable } from './qemu.js';
import type { Accel, GuestImage, VmConfig, VmmDriver, VmmLaunch } from './types.js';
import { socketDir } from './sockdir.js';

/** The Firecracker binary this driver runs. */
export const FIRECRACKER_BINARY = 'firecracker';

/** Guest CID of the vsock device (CIDs 0-2 are reserved; 2 is the host). */
export const VSOCK_GUEST_CID = 3;

/** vsock port the guest agent connects to on the host (CID 2). */
export const CONTROL_VSOCK_PORT = 1024;

/** Kernel parameters this driver always sets (vsock control channel, serial console, exit on panic). */
export const FIRECRACKER_BASE_CMDLINE = `moat.ctl=vsock:${CONTROL_VSOCK_PORT} console=ttyS0 reboot=k panic=1 pci=off`;

/** How long `configure()` waits for Firecracker to create its API socket. */
const API_SOCKET_WAIT_MS = 10_000;

/** Time limit of one API request. */
const API_REQUEST_TIMEOUT_MS = 10_000;

/** Longest path a unix socket address can hold (sun_path is 108 bytes with its NUL). */
const SUN_PATH_MAX = 107;

/** Firecracker answered an API request with something other than 204 No Content. */
export class FirecrackerApiError extends MoatError {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly faultMessage: string,
  ) {
    super(`firecracker API ${method} ${path} answered ${status}: ${faultMessage}`);
  }
}

/** A VmConfig that Firecracker cannot run; `field` is its path inside the VmConfig. */
export class FirecrackerConfigError extends MoatError {
  constructor(readonly field: string, readonly problem: string) {
    super(`firecracker: VM config ${field}: ${problem}`);
  }
}

/** One request of the configuration sequence. */
export interface FirecrackerRequest {
  method: 'PUT';
  path: string;
  body: Record<string, unknown>;
}

/** Path of the API socket of `cfg`'s Firecracker. */
export function apiSocketPath(cfg: Pick<VmConfig, 'dir'>): string {
  return join(socketDir(cfg.dir), 'fc.sock');
}

/** `uds_path` of the vsock device: Firecracker listens here for host-initiated connections. */
export function vsockPath(cfg: Pick<VmConfig, 'dir'>): string {
  return join(socketDir(cfg.dir), 'fc-vsock.sock');
}

/** The unix socket the caller listens on for the agent's control connection (`<uds_path>_1024`). */
export function controlPath(cfg: Pick<VmConfig, 'dir'>): string {
  return `${vsockPath(cfg)}_${CONTROL_VSOCK_PORT}`;
}

/** What the first bytes of a kernel image say it is. */
export type KernelFormat = 'elf' | 'bzimage' | 'unknown';

/** Reads a kernel image's magic: ELF (`\x7fELF` at 0) or bzImage (`HdrS` at 0x202). */
export function kernelFormat(path: string): KernelFormat {
  const head = Buffer.alloc(0x206);
  let n: number;
  try {
    const fd = openSync(path, 'r');
    try {
      n = readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    return 'unknown';
  }
  if (n >= 4 && head.readUInt32BE(0) === 0x7f454c46) return 'elf';
  if (n >= 0x206 && head.toString('latin1', 0x202, 0x206) === 'HdrS') return 'bzimage';
  return 'unknown';
}

/**
 * The uncompressed vmlinux Firecracker boots for `guest`: its kernel if that is an ELF, else a
 * `vmlinux-<release>` next to it or where Debian's debug package puts one; undefined if none.
 */
export function findVmlinux(guest: GuestImage): string | undefined {
  if (kernelFormat(guest.kernel) === 'elf') return guest.kernel;
  const candidates = [
    join(dirname(guest.kernel), `vmlinux-${guest.release}`),
    join(dirname(guest.kernel), 'vmlinux'),
    `/boot/vmlinux-${guest.release}`,
    `/usr/lib/debug/boot/vmlinux-${guest.release}`,
    `/usr/lib/debug/lib/modules/${guest.release}/vmlinux`,
  ];
  return candidates.find((c) => existsSync(c) && kernelFormat(c) === 'elf');
}

/**
 * Why Firecracker cannot run here: it needs KVM, its binary, and (when `guest` is given) an
 * uncompressed vmlinux; undefined when it can.
 */
export function firecrackerUnavailable(accel: Accel, guest?: GuestImage): string | undefined {
  const why: string[] = [];
  if (findExecutable(FIRECRACKER_BINARY) === undefined) why.push('firecracker is not installed (no firecracker binary on PATH)');
  if (accel !== 'kvm') why.push('Firecracker needs KVM and the accelerator is tcg');
  else {
    const kvm = kvmUnusable();
    if (kvm !== undefined) why.push(`Firecracker needs KVM: ${kvm}`);
  }
  if (guest !== undefined && findVmlinux(guest) === undefined) {
    const fmt = kernelFormat(guest.kernel);
    why.push(
      fmt === 'bzimage'
        ? `the guest kernel ${guest.kernel} is a bzImage and Firecracker boots only an uncompressed vmlinux; none found for ${guest.release}`
        : `the guest kernel ${guest.kernel} is not an ELF vmlinux`,
    );
  }
  return why.length > 0 ? why.join('; ') : undefined;
}

/** The VmConfig features Firecracker lacks, as reasons; empty when it can run `vm`. */
export function firecrackerUnsupported(vm: Partial<Pick<VmConfig, 'disk' | 'share' | 'binds' | 'net'>>): string[] {
  const out: string[] = [];
  if (vm.disk !== undefined && vm.disk.format !== 'raw') out.push(`disk.format: Firecracker reads raw disks only, not ${vm.disk.format}`);
  if (vm.share !== undefined) out.push('share: Firecracker has no virtio-9p (nor virtio-fs) device');
  if ((vm.binds ?? []).length > 0) out.push('binds: Firecracker has no virtio-9p (nor virtio-fs) device to share bind mounts with');
  if (vm.net?.mode === 'user') out.push('net: Firecracker has no user-mode network, only tap devices');
  // its tap is opened by name, in the VMM's own network namespace: not the fd of a pod's tap
  if (vm.net?.mode === 'tap') out.push('net: Firecracker opens a tap by name in its own network namespace, not one passed as an fd');
  return out;
}

/** Throws unless `p` is an absolute path without NUL or newline. */
function checkPath(field: string, p: string): void {
  if (!isAbsolute(p)) throw new FirecrackerConfigError(field, `must be an absolute path, got "${p}"`);
  if (/[\0\n]/.test(p)) throw new FirecrackerConfigError(field, 'must not contain NUL or newline');
}

/** Checks `cfg` against what Firecracker accepts; returns the vmlinux to boot. */
function validate(cfg: VmConfig): string {
  // Firecracker's --id: alphanumerics and '-', 1 to 64 characters.
  if (!/^[A-Za-z0-9-]{1,64}$/.test(cfg.id)) throw new FirecrackerConfigError('id', `must be 1 to 64 of [A-Za-z0-9-] for firecracker --id, got "${cfg.id}"`);
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > 32) throw new FirecrackerConfigError('vcpus', `must be an integer from 1 to 32, got ${cfg.vcpus}`);
  if (!Number.isInteger(cfg.memoryMiB) || cfg.memoryMiB < 16) throw new FirecrackerConfigError('memoryMiB', `must be an integer of at least 16, got ${cfg.memoryMiB}`);
  checkPath('dir', cfg.dir);
  checkPath('guest.kernel', cfg.guest.kernel);
  checkPath('guest.initramfs', cfg.guest.initramfs);
  if (cfg.disk !== undefined) checkPath('disk.path', cfg.disk.path);
  const [first] = firecrackerUnsupported(cfg);
  if (first !== undefined) {
    const colon = first.indexOf(':');
    throw new FirecrackerConfigError(first.slice(0, colon), first.slice(colon + 2));
  }
  for (const [field, p] of [['dir (api socket)', apiSocketPath(cfg)], ['dir (vsock control socket)', controlPath(cfg)]] as const) {
    if (Buffer.byteLength(p) > SUN_PATH_MAX) throw new FirecrackerConfigError(field, `${p} is longer than a unix socket address allows (${SUN_PATH_MAX} bytes)`);
  }
  const vmlinux = findVmlinux(cfg.guest);
  if (vmlinux === undefined) {
    throw new FirecrackerConfigError('guest.kernel', `${cfg.guest.kernel} is a ${kernelFormat(cfg.guest.kernel)} image and no uncompressed vmlinux was found for ${cfg.guest.release}`);
  }
  return vmlinux;
}

/** The API requests that configure and start `cfg`, in order, booting `vmlinux`. */
export function firecrackerRequests(cfg: VmConfig, vmlinux: string): FirecrackerRequest[] {
  const bootArgs = [FIRECRACKER_BASE_CMDLINE, cfg.cmdline.trim()].filter((s) => s !== '').join(' ');
  const reqs: FirecrackerRequest[] = [
    { method: 'PUT', path: '/machine-config', body: { vcpu_count: cfg.vcpus, mem_size_mib: cfg.memoryMiB } },
    { method: 'PUT', path: '/boot-source', body: { kernel_image_path: vmlinux, initrd_path: cfg.guest.initramfs, boot_args: bootArgs } },
  ];
  if (cfg.disk !== undefined) {
    reqs.push({
      method: 'PUT',
      path: '/drives/rootfs',
      // Writeback honours the guest's flushes (Firecracker's default, Unsafe, ignores them).
      body: { drive_id: 'rootfs', path_on_host: cfg.disk.path, is_root_device: false, is_read_only: cfg.disk.readonly === true, cache_type: 'Writeback' },
    });
  }
  reqs.push(
    { method: 'PUT', path: '/vsock', body: { guest_cid: VSOCK_GUEST_CID, uds_path: vsockPath(cfg) } },
    { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } },
  );
  return reqs;
}

/** A connection failure that means "Firecracker has not created its API socket yet". */
function notListeningYet(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

/** Sends one request over HTTP/1.1 on the unix socket; rejects with FirecrackerApiError unless 204. */
function send(socketPath: string, req: FirecrackerRequest): Promise<void> {
  const data = JSON.stringify(req.body);
  return new Promise((resolve, reject) => {
    const r = request(
      {
        socketPath,
        method: req.method,
        path: req.path,
        agent: false,
        timeout: API_REQUEST_TIMEOUT_MS,
        // An explicit length: Firecracker's HTTP server does not take chunked bodies.
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Content-Length': Buffer.byteLength(data) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status === 204) {
            resolve();
            return;
          }
          const text = Buffer.concat(chunks).toString('utf8');
          let fault = text.trim() === '' ? '(no fault_message)' : text.trim();
          try {
            const parsed: unknown = JSON.parse(text);
            if (typeof parsed === 'object' && parsed !== null && 'fault_message' in parsed && typeof parsed.fault_message === 'string') fault = parsed.fault_message;
          } catch {
            // not JSON: keep the raw text
          }
          reject(new FirecrackerApiError(req.method, req.path, status, fault));
        });
      },
    );
    r.on('timeout', () => r.destroy(new HostError(`firecracker API ${req.method} ${req.path}: no answer within ${API_REQUEST_TIMEOUT_MS} ms`)));
    r.on('error', reject);
    r.end(data);
  });
}

/**
 * Sends one request to the Firecracker API at `socketPath`, retrying while the socket does not
 * accept connections yet (for up to `waitMs`); rejects with FirecrackerApiError unless 204.
 */
export async function firecrackerApi(socketPath: string, req: FirecrackerRequest, waitMs: number = API_SOCKET_WAIT_MS): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await send(socketPath, req);
      return;
    } catch (err) {
      if (!notListeningYet(err)) throw err;
      if (Date.now() >= deadline) throw new HostError(`firecracker API socket ${socketPath} did not accept connections within ${waitMs} ms (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** Configures and starts a Firecracker VM with `reqs`, in order, stopping at the first refusal. */
export async function configureFirecracker(socketPath: string, reqs: readonly FirecrackerRequest[], waitMs: number = API_SOCKET_WAIT_MS): Promise<void> {
  for (const req of reqs) await firecrackerApi(socketPath, req, waitMs);
}

/**
 * The Firecracker driver: `launch()` gives `firecracker --api-sock <dir>/fc.sock --id <id>` and a
 * `configure()` that sets the VM up through the API once the process runs. The caller listens on
 * `controlPath(cfg)` (not `cfg.controlSocket`) and sends the process's stdout to `cfg.consoleLog`.
 */
export const firecrackerDriver: VmmDriver = {
  name: 'firecracker',
  unavailable(accel: Accel): string | undefined {
    return firecrackerUnavailable(accel);
  },
  launch(cfg: VmConfig): VmmLaunch {
    const vmlinux = validate(cfg);
    const binary = findExecutable(FIRECRACKER_BINARY) ?? FIRECRACKER_BINARY;
    const api = apiSocketPath(cfg);
    const reqs = firecrackerRequests(cfg, vmlinux);
    const paths = [cfg.dir, socketDir(cfg.dir), vmlinux, cfg.guest.initramfs, ...(cfg.disk !== undefined ? [cfg.disk.path] : [])];
    return {
      argv: [binary, '--api-sock', api, '--id', cfg.id],
      paths: [...new Set(paths)],
      devices: ['/dev/kvm'],
      configure: () => configureFirecracker(api, reqs),
    };
  },
};
