/**
 * Cgroups for Moat containers: one manager interface over cgroup v1, v2 and hybrid hosts, the
 * `linux.resources` schema, and the path rules for `linux.cgroupsPath`.
 */
export { CgroupError } from './errors.js';
export { createCgroupManager, HybridManager, V1Manager, V2Manager } from './manager.js';
export type { CgroupManager, CgroupManagerOptions, ManagerSettings } from './manager.js';
export {
  cleanPath,
  computeCgroupPaths,
  detectLayout,
  expandSlice,
  parseCgroupMounts,
  parseProcCgroup,
  systemdCgroupPath,
  UNIFIED,
} from './paths.js';
export type { CgroupLayout, CgroupMount, CgroupMounts, PathRequest } from './paths.js';
export {
  blkioWeightToIoWeight,
  cpuSharesToWeight,
  isEmptyResources,
  parseCpuList,
  parseResources,
  resourcesSchema,
  swapToV2,
} from './resources.js';
export type { DeviceRuleSpec, Resources } from './resources.js';
export type { BlkioEntry, CgroupStats, MemoryEntry } from './stats.js';
