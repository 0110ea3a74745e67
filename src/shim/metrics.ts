/**
 * The shim's Stats answer: Moat's cgroup statistics (runc's `events --stats` shape, see
 * src/cgroups/stats.ts) as the metrics message containerd 1.6 unpacks from StatsResponse.stats,
 * the same types containerd's own runc shim returns:
 *
 * - `io.containerd.cgroups.v1.Metrics` on cgroup v1 and hybrid hosts (containerd/cgroups'
 *   Mode() is not Unified there, and Moat reads memory, cpu and pids from the v1 hierarchies);
 * - `io.containerd.cgroups.v2.Metrics` on unified hosts (cgroup2 mounted at /sys/fs/cgroup).
 *
 * The type URL is the plain proto message name: containerd's typeurl looks gogo-registered
 * messages up by it (proto.MessageType), with no `type.googleapis.com/` prefix.
 *
 * Values are those containerd/cgroups would read from the same files, except where Moat's
 * statistics do not keep the data (left at 0 / absent): v1 blkio device names, MemoryOomControl
 * oom_kill_disable and under_oom, network and per-cgroup task states; v2 memory events other
 * than max and oom_kill, hugetlb limits, rdma.
 */
import { existsSync } from 'node:fs';
import { MAX_U64 } from '../cgroups/fsutil.js';
import { detectLayout } from '../cgroups/paths.js';
import type { BlkioEntry, CgroupStats, MemoryEntry } from '../cgroups/stats.js';
import { TypeUrl, V1_MEMORY_STAT_FIELDS, V2_MEMORY_STAT_FIELDS, anyOf, uint64 } from './proto.js';
import type { Any, LongBits } from './proto.js';

/** A uint64 field value (see {@link uint64}). */
type U64 = number | LongBits;

/** The memory.stat key (cgroup v1) of each io.containerd.cgroups.v1.MemoryStat counter, as containerd/cgroups maps them. */
const V1_MEMORY_STAT_KEYS: Record<(typeof V1_MEMORY_STAT_FIELDS)[number], string> = {
  cache: 'cache',
  rss: 'rss',
  rssHuge: 'rss_huge',
  mappedFile: 'mapped_file',
  dirty: 'dirty',
  writeback: 'writeback',
  pgPgIn: 'pgpgin',
  pgPgOut: 'pgpgout',
  pgFault: 'pgfault',
  pgMajFault: 'pgmajfault',
  inactiveAnon: 'inactive_anon',
  activeAnon: 'active_anon',
  inactiveFile: 'inactive_file',
  activeFile: 'active_file',
  unevictable: 'unevictable',
  hierarchicalMemoryLimit: 'hierarchical_memory_limit',
  hierarchicalSwapLimit: 'hierarchical_memsw_limit',
  totalCache: 'total_cache',
  totalRss: 'total_rss',
  totalRssHuge: 'total_rss_huge',
  totalMappedFile: 'total_mapped_file',
  totalDirty: 'total_dirty',
  totalWriteback: 'total_writeback',
  totalPgPgIn: 'total_pgpgin',
  totalPgPgOut: 'total_pgpgout',
  totalPgFault: 'total_pgfault',
  totalPgMajFault: 'total_pgmajfault',
  totalInactiveAnon: 'total_inactive_anon',
  totalActiveAnon: 'total_active_anon',
  totalInactiveFile: 'total_inactive_file',
  totalActiveFile: 'total_active_file',
  totalUnevictable: 'total_unevictable',
};

/** The io.containerd.cgroups.v2.MemoryStat counters read from memory.stat (the last four come from other files). */
const V2_MEMORY_STAT_RAW = V2_MEMORY_STAT_FIELDS.filter((f) => !['usage', 'usageLimit', 'swapUsage', 'swapLimit'].includes(f));

/** camelCase to the snake_case of memory.stat keys (`kernelStack` -> `kernel_stack`). */
const snake = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

let unified: boolean | undefined;

/**
 * Whether this host is cgroup v2 only ("unified"): /sys/fs/cgroup is the cgroup2 root (it has
 * cgroup.controllers and src/cgroups' layout detection says `v2`). False on v1 and hybrid hosts,
 * where v2 sits at /sys/fs/cgroup/unified beside the v1 hierarchies. This is the test
 * containerd/cgroups' Mode() == Unified makes, and so which Metrics type containerd's runc shim
 * returns. Decided once per process.
 */
export function unifiedCgroups(): boolean {
  if (unified === undefined) {
    try {
      unified = existsSync('/sys/fs/cgroup/cgroup.controllers') && detectLayout() === 'v2';
    } catch {
      unified = false; // no cgroup filesystem at all
    }
  }
  return unified;
}

/**
 * Moat's statistics of a container as the Any of a StatsResponse: an
 * io.containerd.cgroups.v2.Metrics when `unified`, else an io.containerd.cgroups.v1.Metrics.
 * `oomKills` is the container's OOM-kill count (MemoryOomControl.oom_kill on v1,
 * MemoryEvents.oom_kill on v2). Without `stats` (a stopped container) the Metrics is empty.
 */
export function metricsAny(stats: CgroupStats | undefined, oomKills: number, unified: boolean): Any {
  if (unified) return anyOf(TypeUrl.CGROUPS_V2_METRICS, stats ? v2Metrics(stats, oomKills) : {});
  return anyOf(TypeUrl.CGROUPS_V1_METRICS, stats ? v1Metrics(stats, oomKills) : {});
}

/** A MemoryEntry of v1 Metrics. */
function memoryEntry(e: MemoryEntry): Record<string, U64> {
  return { limit: uint64(e.limit), usage: uint64(e.usage), max: uint64(e.max), failcnt: uint64(e.failcnt) };
}

/** BlkIOEntry list of v1 Metrics (Moat does not resolve device names). */
function blkioEntries(entries: BlkioEntry[]): Record<string, unknown>[] {
  return entries.map((e) => ({ op: e.op, device: '', major: uint64(e.major), minor: uint64(e.minor), value: uint64(e.value) }));
}

/** The fields of io.containerd.cgroups.v1.Metrics. */
function v1Metrics(s: CgroupStats, oomKills: number): Record<string, unknown> {
  const raw = s.memory.raw;
  const memory: Record<string, unknown> = {};
  for (const field of V1_MEMORY_STAT_FIELDS) memory[field] = uint64(raw[V1_MEMORY_STAT_KEYS[field]] ?? 0);
  if (raw.cache === undefined) memory.cache = uint64(s.memory.cache);
  memory.usage = memoryEntry(s.memory.usage);
  memory.swap = memoryEntry(s.memory.swap);
  memory.kernel = memoryEntry(s.memory.kernel);
  memory.kernelTcp = memoryEntry(s.memory.kernelTCP);
  const b = s.blkio;
  return {
    hugetlb: Object.entries(s.hugetlb).map(([pagesize, h]) => ({
      usage: uint64(h.usage),
      max: uint64(h.max),
      failcnt: uint64(h.failcnt),
      pagesize,
    })),
    // 0 is "no limit", as containerd/cgroups reports pids.max "max" on v1
    pids: { current: uint64(s.pids.current), limit: uint64(s.pids.limit) },
    cpu: {
      usage: {
        total: uint64(s.cpu.usage.total),
        kernel: uint64(s.cpu.usage.kernel),
        user: uint64(s.cpu.usage.user),
        perCpu: s.cpu.usage.percpu.map(uint64),
      },
      throttling: {
        periods: uint64(s.cpu.throttling.periods),
        throttledPeriods: uint64(s.cpu.throttling.throttledPeriods),
        throttledTime: uint64(s.cpu.throttling.throttledTime),
      },
    },
    memory,
    blkio: {
      ioServiceBytesRecursive: blkioEntries(b.ioServiceBytesRecursive),
      ioServicedRecursive: blkioEntries(b.ioServicedRecursive),
      ioQueuedRecursive: blkioEntries(b.ioQueueRecursive),
      ioServiceTimeRecursive: blkioEntries(b.ioServiceTimeRecursive),
      ioWaitTimeRecursive: blkioEntries(b.ioWaitTimeRecursive),
      ioMergedRecursive: blkioEntries(b.ioMergedRecursive),
      ioTimeRecursive: blkioEntries(b.ioTimeRecursive),
      sectorsRecursive: blkioEntries(b.sectorsRecursive),
    },
    memoryOomControl: { oomKill: uint64(oomKills) },
  };
}

/** The fields of io.containerd.cgroups.v2.Metrics. */
function v2Metrics(s: CgroupStats, oomKills: number): Record<string, unknown> {
  const raw = s.memory.raw;
  const memory: Record<string, unknown> = {};
  for (const field of V2_MEMORY_STAT_RAW) memory[field] = uint64(raw[snake(field)] ?? 0);
  const mem = s.memory.usage;
  // Moat's (runc's) swap entry is memory+swap; containerd's v2 swap figures are swap alone
  const swap = s.memory.swap;
  memory.usage = uint64(mem.usage);
  memory.usageLimit = uint64(mem.limit);
  memory.swapUsage = uint64(Math.max(0, swap.usage - mem.usage));
  memory.swapLimit = uint64(swap.limit >= MAX_U64 ? MAX_U64 : Math.max(0, swap.limit - mem.limit));

  const io = new Map<string, { major: number; minor: number; rbytes: number; wbytes: number; rios: number; wios: number }>();
  const ioEntry = (e: BlkioEntry) => {
    const key = `${e.major}:${e.minor}`;
    let v = io.get(key);
    if (v === undefined) io.set(key, (v = { major: e.major, minor: e.minor, rbytes: 0, wbytes: 0, rios: 0, wios: 0 }));
    return v;
  };
  for (const e of s.blkio.ioServiceBytesRecursive) {
    if (e.op === 'Read') ioEntry(e).rbytes += e.value;
    else if (e.op === 'Write') ioEntry(e).wbytes += e.value;
  }
  for (const e of s.blkio.ioServicedRecursive) {
    if (e.op === 'Read') ioEntry(e).rios += e.value;
    else if (e.op === 'Write') ioEntry(e).wios += e.value;
  }

  return {
    // Moat's 0 is "no limit", which containerd/cgroups reports as math.MaxUint64 on v2
    pids: { current: uint64(s.pids.current), limit: uint64(s.pids.limit === 0 ? MAX_U64 : s.pids.limit) },
    cpu: {
      usageUsec: uint64(s.cpu.usage.total / 1000),
      userUsec: uint64(s.cpu.usage.user / 1000),
      systemUsec: uint64(s.cpu.usage.kernel / 1000),
      nrPeriods: uint64(s.cpu.throttling.periods),
      nrThrottled: uint64(s.cpu.throttling.throttledPeriods),
      throttledUsec: uint64(s.cpu.throttling.throttledTime / 1000),
    },
    memory,
    io: {
      usage: [...io.values()].map((e) => ({
        major: uint64(e.major),
        minor: uint64(e.minor),
        rbytes: uint64(e.rbytes),
        wbytes: uint64(e.wbytes),
        rios: uint64(e.rios),
        wios: uint64(e.wios),
      })),
    },
    // the limit (hugetlb.<size>.max) is not among Moat's statistics
    hugetlb: Object.entries(s.hugetlb).map(([pagesize, h]) => ({ current: uint64(h.usage), max: uint64(h.max), pagesize })),
    memoryEvents: { max: uint64(s.memory.usage.failcnt), oomKill: uint64(oomKills) },
  };
}
