/**
 * The container backend's use of the cgroup manager: which device rules every container gets,
 * and a manager for a recorded container.
 */
import { createCgroupManager } from '../../cgroups/index.js';
import type { CgroupManager, DeviceRuleSpec, Resources } from '../../cgroups/index.js';
import type { ContainerRecord } from '../../container/store.js';
import type { Spec } from '../../spec/schema.js';
import type { Logger } from '../../util/log.js';

/** The devices every container may use whatever its rules say (runc's list), plus mknod of any. */
const ALLOWED: DeviceRuleSpec[] = [
  { allow: true, type: 'c', access: 'm' },
  { allow: true, type: 'b', access: 'm' },
  ...([[1, 3], [1, 5], [1, 7], [1, 8], [1, 9], [5, 0], [5, 1], [5, 2]] as const).map(([major, minor]) => ({ allow: true, type: 'c' as const, major, minor, access: 'rwm' })),
  { allow: true, type: 'c', major: 136, access: 'rwm' }, // /dev/pts/*
];

/** The resources to apply at create: the config's, with the default devices and linux.devices allowed after its rules. */
export function createResources(spec: Spec): Resources {
  const own = spec.linux?.resources ?? {};
  const devices: DeviceRuleSpec[] = [
    ...(own.devices ?? []),
    ...ALLOWED,
    ...(spec.linux?.devices ?? []).filter((d) => d.type !== 'p').map((d) => ({
      allow: true,
      type: (d.type === 'b' ? 'b' : 'c') as 'b' | 'c',
      ...(d.major !== undefined ? { major: d.major } : {}),
      ...(d.minor !== undefined ? { minor: d.minor } : {}),
      access: 'rwm',
    })),
  ];
  return { ...own, devices };
}

/** A cgroup manager for a new container. */
export function newManager(id: string, spec: Spec, systemd: boolean, log: Logger): CgroupManager {
  return createCgroupManager({
    id,
    cgroupsPath: spec.linux?.cgroupsPath,
    systemd,
    rootless: process.geteuid?.() !== 0,
    warn: (m) => log.warn(`container "${id}": ${m}`),
  });
}

/** The cgroup manager of a recorded container (its paths as created), or undefined if it has none. */
export function recordManager(rec: ContainerRecord, log?: Logger): CgroupManager | undefined {
  if (!rec.cgroupPaths) return undefined;
  return createCgroupManager({
    id: rec.id,
    systemd: false,
    rootless: process.geteuid?.() !== 0,
    warn: (m) => log?.warn(`container "${rec.id}": ${m}`),
    paths: rec.cgroupPaths,
  });
}
