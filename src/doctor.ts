/**
 * `moat doctor`: what this host supports, measured rather than assumed. Every check makes a real
 * attempt where one is possible (a namespace is unshared, an overlay is mounted, /dev/kvm is
 * opened) with a short timeout, and a failing probe becomes a `no` line with its reason: the
 * doctor itself never throws.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parseCgroupMounts } from './cgroups/index.js';

/** One line of the doctor's report: what was checked, whether the host supports it, and why. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** Time limit of every probe process. */
const PROBE_TIMEOUT_MS = 2000;

/** Outcome of running one probe program. */
interface ProbeResult {
  /** True when the program ran and exited with status 0. */
  ok: boolean;
  /** The program does not exist (ENOENT on exec). */
  missing: boolean;
  stdout: string;
  stderr: string;
  /** Why it failed, in words: exit status, signal, timeout, or spawn error; empty when ok. */
  reason: string;
}

/** Finds `program` on PATH (skipping directories this user cannot search); undefined when absent. */
function which(program: string): string | undefined {
  if (program.includes('/')) return program;
  for (const dir of (process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, program);
    try {
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here, or this directory is not searchable by us
    }
  }
  return undefined;
}

/** Runs `file args` with a timeout and captures its output; never rejects. */
function probe(file: string, args: string[], timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const resolved = which(file);
    if (resolved === undefined) {
      resolve({ ok: false, missing: true, stdout: '', stderr: '', reason: `${file} not found` });
      return;
    }
    try {
      execFile(
        resolved,
        args,
        { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 1 << 20, windowsHide: true },
        (error, stdout, stderr) => {
          if (!error) {
            resolve({ ok: true, missing: false, stdout, stderr, reason: '' });
            return;
          }
          const e = error as NodeJS.ErrnoException & { killed?: boolean; signal?: NodeJS.Signals | null };
          const missing = e.code === 'ENOENT';
          let reason: string;
          if (missing) reason = `${file} not found`;
          else if (e.killed && e.signal === 'SIGKILL') reason = `timed out after ${timeoutMs} ms`;
          else if (typeof e.code === 'string') reason = `${file}: ${e.code}`;
          else if (e.signal) reason = `killed by ${e.signal}`;
          else {
            const msg = firstLine(stderr);
            reason = msg !== '' ? msg : `exit status ${String(e.code)}`;
          }
          resolve({ ok: false, missing, stdout: stdout ?? '', stderr: stderr ?? '', reason });
        },
      );
    } catch (err) {
      resolve({ ok: false, missing: false, stdout: '', stderr: '', reason: errText(err) });
    }
  });
}

/** First non-empty line of `text`, trimmed. */
function firstLine(text: string): string {
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (t !== '') return t;
  }
  return '';
}

/** Message of an unknown thrown value. */
function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** Reads a text file, or returns undefined when it cannot be read. */
function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** True when this process runs with uid 0. */
function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** A namespace type as named by the kernel (/proc/self/ns) and the unshare flag that creates it. */
interface NamespaceKind {
  type: 'user' | 'pid' | 'mount' | 'network' | 'uts' | 'ipc' | 'cgroup' | 'time';
  nsFile: string;
  flags: string[];
}

const NAMESPACES: NamespaceKind[] = [
  { type: 'user', nsFile: 'user', flags: ['--user', '--map-root-user'] },
  { type: 'pid', nsFile: 'pid', flags: ['--pid', '--fork', '--mount-proc'] },
  { type: 'mount', nsFile: 'mnt', flags: ['--mount'] },
  { type: 'network', nsFile: 'net', flags: ['--net'] },
  { type: 'uts', nsFile: 'uts', flags: ['--uts'] },
  { type: 'ipc', nsFile: 'ipc', flags: ['--ipc'] },
  { type: 'cgroup', nsFile: 'cgroup', flags: ['--cgroup'] },
  { type: 'time', nsFile: 'time', flags: ['--time'] },
];

/** Checks the user namespace: as root it also tries an unprivileged user (nobody) via setpriv. */
async function checkUserNamespace(): Promise<DoctorCheck> {
  const name = 'user namespaces';
  const maxText = readText('/proc/sys/user/max_user_namespaces')?.trim();
  const max = maxText !== undefined ? ` (max ${maxText})` : '';
  if (maxText === '0') return { name, ok: false, detail: 'disabled: /proc/sys/user/max_user_namespaces is 0' };

  const own = await probe('unshare', ['--user', '--map-root-user', 'true']);
  if (!own.ok) return { name, ok: false, detail: `unshare --user failed: ${own.reason}` };
  if (!isRoot()) return { name, ok: true, detail: `unprivileged user namespaces allowed${max}` };

  // As root the attempt above proves nothing about unprivileged use: retry as nobody.
  const nobody = await probe('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'unshare', '--user', '--map-root-user', 'true']);
  if (nobody.ok) return { name, ok: true, detail: `unprivileged user namespaces allowed${max}` };
  if (nobody.missing) return { name, ok: true, detail: `user namespaces work for root${max}; unprivileged use not probed (setpriv not found)` };
  const knob = readText('/proc/sys/kernel/unprivileged_userns_clone')?.trim();
  const why = knob === '0' ? 'kernel.unprivileged_userns_clone is 0' : nobody.reason;
  return { name, ok: true, detail: `user namespaces work for root only${max}; unprivileged attempt failed: ${why}` };
}

/** Checks one non-user namespace type by unsharing it (inside a user namespace when not root). */
async function checkNamespace(kind: NamespaceKind): Promise<DoctorCheck> {
  const name = `${kind.type} namespaces`;
  const inKernel = fs.existsSync(`/proc/self/ns/${kind.nsFile}`);
  const prefix = isRoot() ? [] : ['--user', '--map-root-user'];
  const result = await probe('unshare', [...prefix, ...kind.flags, 'true']);
  const how = `unshare ${[...prefix, ...kind.flags].join(' ')}`;
  if (result.ok) return { name, ok: true, detail: `${how} works` };
  if (result.missing) {
    return {
      name,
      ok: false,
      detail: `cannot probe: unshare (util-linux) not found; /proc/self/ns/${kind.nsFile} ${inKernel ? 'exists' : 'is absent'}`,
    };
  }
  const kernel = inKernel ? '' : ` (kernel has no /proc/self/ns/${kind.nsFile})`;
  return { name, ok: false, detail: `${how} failed: ${result.reason}${kernel}` };
}

/** One parsed line of /proc/self/mountinfo. */
interface MountInfo {
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** Decodes the octal escapes (\040 etc.) the kernel uses in mountinfo paths. */
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo text into mount points, filesystem types and super options. */
export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mountPoint = left[4];
    const fsType = right[0];
    if (mountPoint === undefined || fsType === undefined) continue;
    mounts.push({ mountPoint: unescapeMountPath(mountPoint), fsType, superOptions: (right[2] ?? '').split(',') });
  }
  return mounts;
}

/** Layout of the cgroup hierarchies this process sees. */
export interface CgroupLayout {
  layout: 'v2' | 'v1' | 'hybrid' | 'none';
  /** Controllers bound to v1 hierarchies (named hierarchies appear as `name=...`). */
  v1Controllers: string[];
  /** Where the cgroup2 hierarchy is mounted, if anywhere. */
  v2Mount: string | undefined;
  /** Controllers available on the cgroup2 hierarchy (its cgroup.controllers). */
  v2Controllers: string[];
}

/** Classifies the cgroup layout from mountinfo text (with the cgroups module's parser). */
export function detectCgroupLayout(mountinfo: string, readFile: (file: string) => string | undefined = readText): CgroupLayout {
  let mounts: ReturnType<typeof parseCgroupMounts>;
  try {
    mounts = parseCgroupMounts(mountinfo);
  } catch {
    return { layout: 'none', v1Controllers: [], v2Mount: undefined, v2Controllers: [] }; // no cgroup mount at all
  }
  const v2Mount = mounts.v2?.mountpoint;
  const controllersText = v2Mount !== undefined ? readFile(path.join(v2Mount, 'cgroup.controllers')) : undefined;
  const v2Controllers = controllersText?.trim().split(/\s+/).filter((c) => c !== '') ?? [];
  const v1Controllers = [...mounts.v1.keys()].sort();
  return { layout: mounts.layout, v1Controllers, v2Mount, v2Controllers };
}

/** Reports the cgroup layout and which controllers sit on v1. */
function checkCgroups(): DoctorCheck {
  const name = 'cgroup layout';
  const mountinfo = readText('/proc/self/mountinfo');
  if (mountinfo === undefined) return { name, ok: false, detail: 'cannot read /proc/self/mountinfo' };
  const c = detectCgroupLayout(mountinfo);
  const v2List = c.v2Controllers.length > 0 ? c.v2Controllers.join(' ') : 'none';
  switch (c.layout) {
    case 'v2':
      return { name, ok: true, detail: `v2 (unified hierarchy at ${c.v2Mount ?? '?'}; controllers: ${v2List})` };
    case 'hybrid':
      return {
        name,
        ok: true,
        detail: `hybrid (v1 controllers: ${c.v1Controllers.join(' ')}; cgroup2 at ${c.v2Mount ?? '?'} with controllers: ${v2List})`,
      };
    case 'v1':
      return { name, ok: true, detail: `v1 (controllers: ${c.v1Controllers.join(' ')}; no cgroup2 mount)` };
    case 'none':
      return { name, ok: false, detail: 'no cgroup filesystem mounted' };
  }
}

/** Seccomp mode names of /proc/PID/status. */
const SECCOMP_MODES: Record<string, string> = { '0': 'disabled', '1': 'strict', '2': 'filter' };

/** Checks that the kernel has seccomp filtering, and which return actions it offers. */
function checkSeccomp(): DoctorCheck[] {
  const status = readText('/proc/self/status') ?? '';
  const mode = /^Seccomp:\s*(\d+)/m.exec(status)?.[1];
  const actions = readText('/proc/sys/kernel/seccomp/actions_avail')?.trim().split(/\s+/) ?? [];
  const seccomp: DoctorCheck =
    mode === undefined
      ? { name: 'seccomp', ok: false, detail: 'absent (no Seccomp field in /proc/self/status: kernel built without CONFIG_SECCOMP)' }
      : {
          name: 'seccomp',
          ok: true,
          detail:
            `present (this process: ${SECCOMP_MODES[mode] ?? `mode ${mode}`})` +
            (actions.length > 0 ? `; actions: ${actions.join(' ')}` : ''),
        };
  const notif: DoctorCheck = actions.includes('user_notif')
    ? { name: 'seccomp user notification', ok: true, detail: 'available (user_notif in actions_avail)' }
    : {
        name: 'seccomp user notification',
        ok: false,
        detail: actions.length > 0 ? 'unavailable (user_notif missing from actions_avail)' : 'unknown (cannot read /proc/sys/kernel/seccomp/actions_avail)',
      };
  return [seccomp, notif];
}

/** Checks overlayfs: listed in /proc/filesystems, and a real overlay mount in a private mount namespace. */
async function checkOverlay(): Promise<DoctorCheck> {
  const name = 'overlayfs';
  const listed = /\toverlay$/m.test(readText('/proc/filesystems') ?? '');
  let tmp: string | undefined;
  try {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-doctor-'));
    for (const d of ['lower', 'upper', 'work', 'merged']) fs.mkdirSync(path.join(tmp, d));
    fs.writeFileSync(path.join(tmp, 'lower/probe'), 'x');
    const opts = `lowerdir=${tmp}/lower,upperdir=${tmp}/upper,workdir=${tmp}/work`;
    const script = 'mount -t overlay overlay -o "$1" "$2" && test -f "$2/probe" && touch "$2/written" && test -f "$3/written"';
    const prefix = isRoot() ? [] : ['--user', '--map-root-user'];
    const result = await probe('unshare', [...prefix, '--mount', 'sh', '-c', script, 'probe', opts, `${tmp}/merged`, `${tmp}/upper`]);
    const where = `in ${os.tmpdir()}`;
    if (result.ok) return { name, ok: true, detail: `overlay mount works (${where}${isRoot() ? '' : ', inside a user namespace'})` };
    const reason = result.missing ? 'unshare (util-linux) not found' : result.reason;
    return { name, ok: false, detail: `${listed ? 'listed in /proc/filesystems but ' : 'not in /proc/filesystems; '}overlay mount ${where} failed: ${reason}` };
  } catch (err) {
    return { name, ok: false, detail: `probe failed: ${errText(err)}` };
  } finally {
    if (tmp !== undefined) {
      try {
        fs.rmSync(tmp, { recursive: true, force: true });
      } catch {
        // an unprivileged overlay may leave a work dir we cannot remove; it is only a temp dir
      }
    }
  }
}

/** KVM ioctl numbers (linux/kvm.h): _IO(0xAE, 0x00) and _IO(0xAE, 0x01). */
const KVM_GET_API_VERSION = 0xae00;
const KVM_CREATE_VM = 0xae01;

/** Result of asking /dev/kvm for its API version and a VM. */
type KvmIoctlResult = { api: number; vm: boolean; vmError: string } | { unavailable: string };

/** Issues KVM_GET_API_VERSION and KVM_CREATE_VM on an open /dev/kvm through libc (via koffi). */
function kvmIoctls(fd: number): KvmIoctlResult {
  try {
    // koffi (a CommonJS package) is loaded lazily so that a host without it still gets the rest of the report.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const libc = koffi.load('libc.so.6');
    const ioctl = libc.func('int ioctl(int fd, unsigned long request, unsigned long arg)') as (fd: number, req: number, arg: number) => number;
    const api = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (api < 0) return { unavailable: `KVM_GET_API_VERSION failed: ${errnoName(koffi.errno())}` };
    const vmFd = ioctl(fd, KVM_CREATE_VM, 0);
    if (vmFd < 0) return { api, vm: false, vmError: errnoName(koffi.errno()) };
    fs.closeSync(vmFd);
    return { api, vm: true, vmError: '' };
  } catch (err) {
    return { unavailable: `ioctl probe unavailable: ${errText(err)}` };
  }
}

/** Symbolic name of an errno number (EACCES), or the number itself. */
function errnoName(errno: number): string {
  for (const [key, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return key;
  }
  return `errno ${errno}`;
}

/** Describes the CPU's virtualization support from /proc/cpuinfo flags and loaded KVM modules. */
function cpuVirtSummary(): string {
  const cpuinfo = readText('/proc/cpuinfo') ?? '';
  const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? '').split(/\s+/));
  const hw = flags.has('vmx') ? 'vmx' : flags.has('svm') ? 'svm' : undefined;
  let modules: string[] = [];
  try {
    modules = fs.readdirSync('/sys/module').filter((m) => m === 'kvm' || m.startsWith('kvm_'));
  } catch {
    // no sysfs: leave the module list empty
  }
  const cpu = hw !== undefined ? `CPU has ${hw}` : 'CPU has no vmx/svm';
  return modules.length > 0 ? `${cpu}; modules: ${modules.join(' ')}` : cpu;
}

/** Checks /dev/kvm: it must exist, open read-write, and (where measurable) create a VM. */
async function checkKvm(): Promise<DoctorCheck> {
  const name = '/dev/kvm';
  const fallback = 'microvm backend will use QEMU TCG';
  if (!fs.existsSync('/dev/kvm')) return { name, ok: false, detail: `absent (${cpuVirtSummary()}; ${fallback})` };
  let fd: number;
  try {
    fd = fs.openSync('/dev/kvm', 'r+') // libuv adds O_CLOEXEC;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? errText(err);
    return { name, ok: false, detail: `present but unusable: open failed with ${code} (${cpuVirtSummary()}; ${fallback})` };
  }
  try {
    const r = kvmIoctls(fd);
    const cpu = cpuVirtSummary();
    if ('unavailable' in r) return { name, ok: true, detail: `present, opens read-write (${r.unavailable}; ${cpu})` };
    if (!r.vm) {
      return { name, ok: false, detail: `present but unusable: KVM API ${r.api}, KVM_CREATE_VM failed with ${r.vmError} (${cpu}; ${fallback})` };
    }
    return { name, ok: true, detail: `usable: KVM API ${r.api}, KVM_CREATE_VM works (${cpu})` };
  } finally {
    fs.closeSync(fd);
  }
}

/** QEMU system emulator name for this machine's architecture. */
function qemuBinary(): string {
  const arch: Record<string, string> = { x64: 'x86_64', arm64: 'aarch64', ppc64: 'ppc64', s390x: 's390x', riscv64: 'riscv64' };
  return `qemu-system-${arch[os.arch()] ?? os.arch()}`;
}

/** Checks a program by its `--version` output; `label` names the check. */
async function checkVersion(label: string, program: string, missingText = 'not installed'): Promise<DoctorCheck> {
  const r = await probe(program, ['--version']);
  if (r.ok) return { name: label, ok: true, detail: firstLine(r.stdout) || firstLine(r.stderr) || `${program} runs` };
  if (r.missing) return { name: label, ok: false, detail: missingText };
  return { name: label, ok: false, detail: `${program} --version failed: ${r.reason}` };
}

/** Checks openat2(2) by kernel version: it exists since Linux 5.6. */
function checkOpenat2(): DoctorCheck {
  const release = os.release();
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return { name: 'openat2', ok: false, detail: `cannot parse kernel release "${release}"` };
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const ok = major > 5 || (major === 5 && minor >= 6);
  return { name: 'openat2', ok, detail: ok ? `available (kernel ${release} >= 5.6)` : `unavailable (kernel ${release} < 5.6)` };
}

/** Reports whether Moat runs as root. */
function checkRoot(): DoctorCheck {
  const uid = typeof process.getuid === 'function' ? process.getuid() : -1;
  return uid === 0
    ? { name: 'root', ok: true, detail: 'running as root (uid 0)' }
    : { name: 'root', ok: false, detail: `not root (uid ${uid}): rootless mode only` };
}

/** Runs `fn`, turning any exception into a failed check named `name`. */
async function guarded(name: string, fn: () => DoctorCheck | DoctorCheck[] | Promise<DoctorCheck | DoctorCheck[]>): Promise<DoctorCheck[]> {
  try {
    const r = await fn();
    return (Array.isArray(r) ? r : [r]).map((c) => ({ ...c, detail: c.detail.replace(/\s+/g, ' ').trim() }));
  } catch (err) {
    return [{ name, ok: false, detail: `probe failed: ${errText(err)}` }];
  }
}

/** Probes what this host supports (namespaces, cgroups, seccomp, overlayfs, KVM, other runtimes); never throws. */
export async function runDoctor(): Promise<DoctorCheck[]> {
  const groups = await Promise.all([
    guarded('user namespaces', checkUserNamespace),
    ...NAMESPACES.filter((k) => k.type !== 'user').map((k) => guarded(`${k.type} namespaces`, () => checkNamespace(k))),
    guarded('cgroup layout', checkCgroups),
    guarded('seccomp', checkSeccomp),
    guarded('overlayfs', checkOverlay),
    guarded('/dev/kvm', checkKvm),
    guarded('qemu', () => checkVersion('qemu', qemuBinary(), `absent (${qemuBinary()} not installed)`)),
    ...['runc', 'crun', 'runsc', 'containerd', 'podman'].map((p) => guarded(p, () => checkVersion(p, p))),
    // what `moat checkpoint` and restore under the sentry run: nsenter (util-linux) to list the
    // sandbox's unix sockets with ss (iproute2) and to set ns_last_pid, tar for the upper layer
    ...([['nsenter', 'util-linux'], ['ss', 'iproute2'], ['tar', 'tar']] as const).map(([p, pkg]) =>
      guarded(`${p} (checkpoints)`, () => checkVersion(`${p} (checkpoints)`, p, `not installed (Debian package ${pkg}): sentry checkpoints fail`))),
    guarded('openat2', checkOpenat2),
    guarded('root', checkRoot),
  ]);
  return groups.flat();
}

/** Formats checks as a plain-words report, one `ok`/`no` line per check. */
export function formatDoctor(checks: DoctorCheck[]): string {
  return checks.map((c) => `${(c.ok ? 'ok' : 'no').padEnd(6)}${c.name}: ${c.detail}`).join('\n');
}
