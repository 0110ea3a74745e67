/**
 * The config.json that `moat spec` writes: the same starting point `runc spec` prints, with
 * a rootless variant that matches `runc spec --rootless`.
 */
import type { MountSpec, SeccompSpec, Spec } from './schema.js';

/** Options of `defaultSpec`. */
export interface DefaultSpecOptions {
  /** Produce a spec that an unprivileged user can run (user namespace, no cgroups). */
  rootless?: boolean;
  /** Seccomp profile to put in `linux.seccomp`; left out when undefined. */
  seccomp?: SeccompSpec;
}

const DEFAULT_CAPABILITIES = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'] as const;

/** The mounts of the default spec, before the rootless changes. */
function defaultMounts(): MountSpec[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
  ];
}

/** Applies what `runc spec --rootless` changes to the mounts. */
function rootlessMounts(mounts: MountSpec[]): MountSpec[] {
  const out: MountSpec[] = [];
  for (const mount of mounts) {
    if (mount.destination === '/sys/fs/cgroup') continue;
    if (mount.destination === '/sys') {
      // A user namespace that does not own the network namespace cannot mount sysfs; bind it.
      out.push({
        destination: '/sys',
        type: 'none',
        source: '/sys',
        options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
      });
      continue;
    }
    // gid 5 (tty) is usually not mapped in a rootless container.
    const options = mount.options?.filter((o) => !o.startsWith('gid=') && !o.startsWith('uid='));
    out.push(options === undefined ? mount : { ...mount, options });
  }
  return out;
}

/** Returns the default config.json, the one `runc spec` (or `runc spec --rootless`) prints. */
export function defaultSpec(opts: DefaultSpecOptions = {}): Spec {
  const rootless = opts.rootless === true;
  const spec: Spec = {
    ociVersion: '1.2.0',
    process: {
      terminal: true,
      user: { uid: 0, gid: 0 },
      args: ['sh'],
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm'],
      cwd: '/',
      capabilities: {
        bounding: [...DEFAULT_CAPABILITIES],
        effective: [...DEFAULT_CAPABILITIES],
        permitted: [...DEFAULT_CAPABILITIES],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'moat',
    mounts: rootless ? rootlessMounts(defaultMounts()) : defaultMounts(),
    linux: {
      ...(rootless ? {} : { resources: { devices: [{ allow: false, access: 'rwm' }] } }),
      namespaces: rootless
        ? [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'user' }]
        : [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }],
      ...(rootless
        ? {
            uidMappings: [{ containerID: 0, hostID: process.geteuid?.() ?? 0, size: 1 }],
            gidMappings: [{ containerID: 0, hostID: process.getegid?.() ?? 0, size: 1 }],
          }
        : {}),
      ...(opts.seccomp === undefined ? {} : { seccomp: opts.seccomp }),
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
        '/sys/devices/virtual/powercap',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  return spec;
}
