/**
 * The embedded default: `moat run -- CMD` with no bundle. CMD runs in a fresh sandbox whose root
 * is the host root read-only under a private writable overlay (a tmpfs inside the container's
 * mount namespace, so it vanishes with the container), with its own /proc, /tmp and minimal
 * /dev, loopback-only network, every namespace, no capabilities and no_new_privs.
 */
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import type { Spec } from '../spec/schema.js';
import { defaultSeccompProfile } from '../seccomp/index.js';
import { parseSpec } from '../spec/validate.js';

/** Options of the embedded default. */
export interface EmbeddedOptions {
  command: string[];
  env: string[];
  cwd?: string;
  volumes: string[];
  network: 'none' | 'loopback' | 'host';
  user?: string;
  /** Give the command a terminal of its own (process.terminal), as `docker run -t` does. */
  terminal?: boolean;
}

const MASKED = ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap'];
const READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

/** Parses `--volume HOST:CTR[:ro|rw]` into a bind mount. */
export function parseVolume(v: string): { source: string; destination: string; readonly: boolean } {
  const parts = v.split(':');
  const [host, ctr, mode] = parts;
  if (parts.length < 2 || parts.length > 3 || !host || !ctr || (mode !== undefined && mode !== 'ro' && mode !== 'rw')) {
    throw new UsageError(`--volume ${v}: expected HOST:CONTAINER[:ro|rw]`);
  }
  if (!isAbsolute(ctr)) throw new UsageError(`--volume ${v}: the container path must be absolute`);
  const source = resolve(host);
  try {
    statSync(source);
  } catch {
    throw new UsageError(`--volume ${v}: ${source} does not exist`);
  }
  return { source, destination: ctr, readonly: mode === 'ro' };
}

function parseUser(u: string | undefined): { uid: number; gid: number } {
  if (u === undefined) return { uid: 0, gid: 0 };
  const m = /^(\d+)(?::(\d+))?$/.exec(u);
  if (!m) throw new UsageError(`--user ${u}: expected UID[:GID]`);
  const uid = Number(m[1]);
  return { uid, gid: m[2] !== undefined ? Number(m[2]) : uid };
}

/** The working directory: the caller's, if it is on the root filesystem the overlay shows. */
function defaultCwd(): string {
  const cwd = process.cwd();
  try {
    return statSync(cwd).dev === statSync('/').dev ? cwd : '/';
  } catch {
    return '/';
  }
}

/** Builds the validated spec of an embedded-default container. */
export function embeddedSpec(opts: EmbeddedOptions): Spec {
  if (opts.command.length === 0) throw new UsageError('run: no command given after "--"');
  const env = Object.entries(process.env).filter(([k, v]) => v !== undefined && !k.includes('=')).map(([k, v]) => `${k}=${v}`);
  for (const e of opts.env) {
    if (!e.includes('=') || e.startsWith('=')) throw new UsageError(`--env ${e}: expected KEY=VALUE`);
    env.push(e);
  }
  const mounts: NonNullable<Spec['mounts']> = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755'] },
  ];
  for (const v of opts.volumes) {
    const vol = parseVolume(v);
    mounts.push({ destination: vol.destination, type: 'bind', source: vol.source, options: ['rbind', 'nosuid', 'nodev', vol.readonly ? 'ro' : 'rw'] });
  }
  const namespaces: { type: 'user' | 'pid' | 'mount' | 'ipc' | 'uts' | 'cgroup' | 'network' }[] = [
    { type: 'user' }, { type: 'pid' }, { type: 'mount' }, { type: 'ipc' }, { type: 'uts' }, { type: 'cgroup' },
  ];
  if (opts.network !== 'host') namespaces.push({ type: 'network' });
  // as root, an identity map: ids mean what they mean on the host, but capabilities are the
  // namespace's; unprivileged, the only id there is to map is the caller's own, as root inside
  const euid = process.geteuid?.() ?? 0;
  const user = parseUser(opts.user);
  if (euid !== 0 && (user.uid !== 0 || user.gid !== 0)) {
    throw new UsageError('--user: an unprivileged caller can only run as root inside the sandbox (its own uid mapped to 0)');
  }
  const uidMap = euid === 0 ? [{ containerID: 0, hostID: 0, size: 4294967295 }] : [{ containerID: 0, hostID: euid, size: 1 }];
  const gidMap = euid === 0 ? uidMap : [{ containerID: 0, hostID: process.getegid?.() ?? 0, size: 1 }];
  return parseSpec({
    ociVersion: '1.2.0',
    root: { path: '/', readonly: false },
    process: {
      terminal: opts.terminal === true,
      user,
      args: opts.command,
      env,
      cwd: opts.cwd ?? defaultCwd(),
      capabilities: { bounding: [], effective: [], permitted: [], inheritable: [], ambient: [] },
      noNewPrivileges: true,
    },
    hostname: 'moat',
    mounts,
    linux: {
      namespaces,
      uidMappings: uidMap,
      gidMappings: gidMap,
      maskedPaths: MASKED,
      readonlyPaths: READONLY,
      seccomp: defaultSeccompProfile(),
    },
  });
}
