/**
 * Cgroup statistics in the shape of runc's `events --stats` data (runc's types.Stats, same JSON
 * keys), read from v1 or v2 files. Missing files read as zero: a stats call never fails because a
 * kernel lacks some accounting.
 */
import { readdirSync } from 'node:fs';
import { parseCpuList } from './resources.js';
import { MAX_U64, parseKeyValues, parseUint, readUint, tryReadCgroupFile } from './fsutil.js';

/** Usage figures of one memory counter (memory, memory+swap, kernel, kernel TCP). */
export interface MemoryEntry {
  /** Limit in bytes (2^64-1 or the kernel's page-rounded maximum when unlimited). */
  limit: number;
  /** Current usage in bytes. */
  usage: number;
  /** Peak usage in bytes (0 where the kernel does not track it). */
  max: number;
  /** How many times usage hit the limit. */
  failcnt: number;
}

/** One blkio/io counter of one device (and operation). */
export interface BlkioEntry {
  /** Device major number. */
  major: number;
  /** Device minor number. */
  minor: number;
  /** Read, Write, Sync, Async, Total, Discard, or "" for single-value files. */
  op: string;
  /** The counter. */
  value: number;
}

/** A container's cgroup statistics, keyed like runc's types.Stats JSON. */
export interface CgroupStats {
  /** CPU time (nanoseconds) and CFS throttling. */
  cpu: {
    usage: { total: number; percpu: number[]; percpu_kernel: number[]; percpu_user: number[]; kernel: number; user: number };
    throttling: { periods: number; throttledPeriods: number; throttledTime: number };
  };
  /** The cpuset configuration. */
  cpuset: {
    cpus: number[];
    cpu_exclusive: number;
    mems: number[];
    mem_hardwall: number;
    mem_exclusive: number;
    memory_migrate: number;
    memory_spread_page: number;
    memory_spread_slab: number;
    memory_pressure: number;
    sched_load_balance: number;
    sched_relax_domain_level: number;
  };
  /** Memory usage; `raw` is memory.stat as it is. */
  memory: { cache: number; usage: MemoryEntry; swap: MemoryEntry; kernel: MemoryEntry; kernelTCP: MemoryEntry; raw: Record<string, number> };
  /** Task count and limit (0 for no limit). */
  pids: { current: number; limit: number };
  /** Block I/O counters. */
  blkio: {
    ioServiceBytesRecursive: BlkioEntry[];
    ioServicedRecursive: BlkioEntry[];
    ioQueueRecursive: BlkioEntry[];
    ioServiceTimeRecursive: BlkioEntry[];
    ioWaitTimeRecursive: BlkioEntry[];
    ioMergedRecursive: BlkioEntry[];
    ioTimeRecursive: BlkioEntry[];
    sectorsRecursive: BlkioEntry[];
  };
  /** Hugepage usage by page size ("2MB", "1GB", ...). */
  hugetlb: Record<string, { usage: number; max: number; failcnt: number }>;
}

const entry = (): MemoryEntry => ({ limit: 0, usage: 0, max: 0, failcnt: 0 });

/** Statistics with every counter at zero. */
export function emptyStats(): CgroupStats {
  return {
    cpu: {
      usage: { total: 0, percpu: [], percpu_kernel: [], percpu_user: [], kernel: 0, user: 0 },
      throttling: { periods: 0, throttledPeriods: 0, throttledTime: 0 },
    },
    cpuset: {
      cpus: [],
      cpu_exclusive: 0,
      mems: [],
      mem_hardwall: 0,
      mem_exclusive: 0,
      memory_migrate: 0,
      memory_spread_page: 0,
      memory_spread_slab: 0,
      memory_pressure: 0,
      sched_load_balance: 0,
      sched_relax_domain_level: 0,
    },
    memory: { cache: 0, usage: entry(), swap: entry(), kernel: entry(), kernelTCP: entry(), raw: {} },
    pids: { current: 0, limit: 0 },
    blkio: {
      ioServiceBytesRecursive: [],
      ioServicedRecursive: [],
      ioQueueRecursive: [],
      ioServiceTimeRecursive: [],
      ioWaitTimeRecursive: [],
      ioMergedRecursive: [],
      ioTimeRecursive: [],
      sectorsRecursive: [],
    },
    hugetlb: {},
  };
}

/**
 * The hugepage sizes the host supports, named as cgroup files name them ("2MB", "1GB"), from
 * /sys/kernel/mm/hugepages. Empty if the kernel has no hugepages.
 */
export function hostHugepageSizes(): string[] {
  let names: string[];
  try {
    names = readdirSync('/sys/kernel/mm/hugepages');
  } catch {
    return [];
  }
  const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
  const out: string[] = [];
  for (const name of names) {
    const m = /^hugepages-(\d+)kB$/.exec(name);
    if (m === null) continue;
    let size = Number(m[1]) * 1024;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit++;
    }
    out.push(`${size}${units[unit] ?? 'B'}`);
  }
  return out.sort(); // code-unit order; localeCompare would load ICU collation
}

/** Reads a whitespace-separated list of numbers. */
function numbers(text: string | undefined): number[] {
  return (text ?? '').trim().split(/\s+/).filter((s) => s !== '').map(parseUint);
}

/** Fills CPU usage from a v1 cpuacct directory. */
export function cpuacctV1(dir: string, s: CgroupStats): void {
  const u = s.cpu.usage;
  u.total = readUint(dir, 'cpuacct.usage');
  u.percpu = numbers(tryReadCgroupFile(dir, 'cpuacct.usage_percpu'));
  // cpuacct.usage_all: "cpu user system" header, then one line per CPU
  const all = (tryReadCgroupFile(dir, 'cpuacct.usage_all') ?? '').trim().split('\n').slice(1);
  u.percpu_user = [];
  u.percpu_kernel = [];
  for (const line of all) {
    const [, user, sys] = line.trim().split(/\s+/);
    if (user === undefined || sys === undefined) continue;
    u.percpu_user.push(parseUint(user));
    u.percpu_kernel.push(parseUint(sys));
  }
  // cpuacct.stat is in USER_HZ (100 per second on Linux)
  const stat = parseKeyValues(tryReadCgroupFile(dir, 'cpuacct.stat'));
  u.user = ((stat.get('user') ?? 0) * 1e9) / 100;
  u.kernel = ((stat.get('system') ?? 0) * 1e9) / 100;
}

/** Fills CFS throttling from a v1 cpu directory. */
export function cpuV1(dir: string, s: CgroupStats): void {
  const stat = parseKeyValues(tryReadCgroupFile(dir, 'cpu.stat'));
  s.cpu.throttling = {
    periods: stat.get('nr_periods') ?? 0,
    throttledPeriods: stat.get('nr_throttled') ?? 0,
    throttledTime: stat.get('throttled_time') ?? 0,
  };
}

/** Fills CPU usage and throttling from a v2 directory's cpu.stat (microseconds there). */
export function cpuV2(dir: string, s: CgroupStats): void {
  const stat = parseKeyValues(tryReadCgroupFile(dir, 'cpu.stat'));
  s.cpu.usage.total = (stat.get('usage_usec') ?? 0) * 1000;
  s.cpu.usage.user = (stat.get('user_usec') ?? 0) * 1000;
  s.cpu.usage.kernel = (stat.get('system_usec') ?? 0) * 1000;
  s.cpu.throttling = {
    periods: stat.get('nr_periods') ?? 0,
    throttledPeriods: stat.get('nr_throttled') ?? 0,
    throttledTime: (stat.get('throttled_usec') ?? 0) * 1000,
  };
}

/** Fills the cpuset configuration from a v1 (`v2` false) or v2 cpuset directory. */
export function cpuset(dir: string, s: CgroupStats, v2: boolean): void {
  const list = (file: string) => parseCpuList(tryReadCgroupFile(dir, file) ?? '') ?? [];
  const c = s.cpuset;
  if (v2) {
    c.cpus = list('cpuset.cpus.effective');
    c.mems = list('cpuset.mems.effective');
    return;
  }
  c.cpus = list('cpuset.cpus');
  c.mems = list('cpuset.mems');
  c.cpu_exclusive = readUint(dir, 'cpuset.cpu_exclusive');
  c.mem_hardwall = readUint(dir, 'cpuset.mem_hardwall');
  c.mem_exclusive = readUint(dir, 'cpuset.mem_exclusive');
  c.memory_migrate = readUint(dir, 'cpuset.memory_migrate');
  c.memory_spread_page = readUint(dir, 'cpuset.memory_spread_page');
  c.memory_spread_slab = readUint(dir, 'cpuset.memory_spread_slab');
  c.memory_pressure = readUint(dir, 'cpuset.memory_pressure');
  c.sched_load_balance = readUint(dir, 'cpuset.sched_load_balance');
  c.sched_relax_domain_level = Number((tryReadCgroupFile(dir, 'cpuset.sched_relax_domain_level') ?? '0').trim()) || 0;
}

/** Reads one v1 memory counter family: `memory`, `memory.memsw`, `memory.kmem`, `memory.kmem.tcp`. */
function memoryEntryV1(dir: string, prefix: string): MemoryEntry {
  return {
    usage: readUint(dir, `${prefix}.usage_in_bytes`),
    max: readUint(dir, `${prefix}.max_usage_in_bytes`),
    failcnt: readUint(dir, `${prefix}.failcnt`),
    limit: readUint(dir, `${prefix}.limit_in_bytes`),
  };
}

/** Fills memory usage from a v1 memory directory. */
export function memoryV1(dir: string, s: CgroupStats): void {
  const raw = parseKeyValues(tryReadCgroupFile(dir, 'memory.stat'));
  s.memory.raw = Object.fromEntries(raw);
  s.memory.cache = raw.get('cache') ?? 0;
  s.memory.usage = memoryEntryV1(dir, 'memory');
  s.memory.swap = memoryEntryV1(dir, 'memory.memsw');
  s.memory.kernel = memoryEntryV1(dir, 'memory.kmem');
  s.memory.kernelTCP = memoryEntryV1(dir, 'memory.kmem.tcp');
}

/** Fills memory usage from a v2 directory (swap there is swap only; runc reports memory+swap). */
export function memoryV2(dir: string, s: CgroupStats): void {
  const raw = parseKeyValues(tryReadCgroupFile(dir, 'memory.stat'));
  s.memory.raw = Object.fromEntries(raw);
  s.memory.cache = raw.get('file') ?? 0;
  const events = parseKeyValues(tryReadCgroupFile(dir, 'memory.events'));
  s.memory.usage = {
    usage: readUint(dir, 'memory.current'),
    limit: readUint(dir, 'memory.max'),
    max: readUint(dir, 'memory.peak'),
    failcnt: events.get('max') ?? 0,
  };
  const swapUsage = readUint(dir, 'memory.swap.current');
  const swapLimit = readUint(dir, 'memory.swap.max');
  s.memory.swap = {
    usage: swapUsage + s.memory.usage.usage,
    limit: swapLimit >= MAX_U64 || s.memory.usage.limit >= MAX_U64 ? MAX_U64 : swapLimit + s.memory.usage.limit,
    max: 0,
    failcnt: 0,
  };
}

/** Fills task count and limit from a v1 or v2 pids directory. */
export function pids(dir: string, s: CgroupStats): void {
  const limit = readUint(dir, 'pids.max');
  s.pids = { current: readUint(dir, 'pids.current'), limit: limit >= MAX_U64 ? 0 : limit };
}

/** Parses a v1 blkio statistics file ("8:0 Read 123" lines, or "8:0 123"). */
function blkioFile(dir: string, file: string): BlkioEntry[] | undefined {
  const text = tryReadCgroupFile(dir, file);
  if (text === undefined) return undefined;
  const out: BlkioEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/[\s:]+/);
    if (f.length < 3 || f[0] === 'Total') continue;
    const [major, minor, a, b] = f;
    out.push({ major: Number(major), minor: Number(minor), op: b === undefined ? '' : (a ?? ''), value: parseUint(b ?? a ?? '0') });
  }
  return out;
}

/**
 * Fills block I/O counters from a v1 blkio directory, trying BFQ's, then CFQ's, then the
 * throttling layer's files (whichever this kernel has), as runc does.
 */
export function blkioV1(dir: string, s: CgroupStats): void {
  const b = s.blkio;
  type Key = keyof CgroupStats['blkio'];
  const groups: [string, Key][][] = [
    [
      ['blkio.bfq.sectors_recursive', 'sectorsRecursive'],
      ['blkio.bfq.io_service_time_recursive', 'ioServiceTimeRecursive'],
      ['blkio.bfq.io_wait_time_recursive', 'ioWaitTimeRecursive'],
      ['blkio.bfq.io_merged_recursive', 'ioMergedRecursive'],
      ['blkio.bfq.io_queued_recursive', 'ioQueueRecursive'],
      ['blkio.bfq.time_recursive', 'ioTimeRecursive'],
      ['blkio.bfq.io_serviced_recursive', 'ioServicedRecursive'],
      ['blkio.bfq.io_service_bytes_recursive', 'ioServiceBytesRecursive'],
    ],
    [
      ['blkio.bfq.io_serviced_recursive', 'ioServicedRecursive'],
      ['blkio.bfq.io_service_bytes_recursive', 'ioServiceBytesRecursive'],
    ],
    [
      ['blkio.sectors_recursive', 'sectorsRecursive'],
      ['blkio.io_service_time_recursive', 'ioServiceTimeRecursive'],
      ['blkio.io_wait_time_recursive', 'ioWaitTimeRecursive'],
      ['blkio.io_merged_recursive', 'ioMergedRecursive'],
      ['blkio.io_queued_recursive', 'ioQueueRecursive'],
      ['blkio.time_recursive', 'ioTimeRecursive'],
      ['blkio.io_serviced_recursive', 'ioServicedRecursive'],
      ['blkio.io_service_bytes_recursive', 'ioServiceBytesRecursive'],
    ],
    [
      ['blkio.throttle.io_serviced_recursive', 'ioServicedRecursive'],
      ['blkio.throttle.io_service_bytes_recursive', 'ioServiceBytesRecursive'],
    ],
    [
      ['blkio.throttle.io_serviced', 'ioServicedRecursive'],
      ['blkio.throttle.io_service_bytes', 'ioServiceBytesRecursive'],
    ],
  ];
  for (const group of groups) {
    const first = group[0];
    if (first === undefined || blkioFile(dir, first[0]) === undefined) continue;
    for (const [file, key] of group) b[key] = blkioFile(dir, file) ?? [];
    return;
  }
}

/** Fills block I/O counters from a v2 directory's io.stat. */
export function ioV2(dir: string, s: CgroupStats): void {
  const text = tryReadCgroupFile(dir, 'io.stat') ?? '';
  for (const line of text.split('\n')) {
    const [dev, ...fields] = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(dev ?? '');
    if (m === null) continue;
    const major = Number(m[1]);
    const minor = Number(m[2]);
    for (const f of fields) {
      const [k, v] = f.split('=');
      const value = parseUint(v ?? '0');
      if (k === 'rbytes') s.blkio.ioServiceBytesRecursive.push({ major, minor, op: 'Read', value });
      else if (k === 'wbytes') s.blkio.ioServiceBytesRecursive.push({ major, minor, op: 'Write', value });
      else if (k === 'rios') s.blkio.ioServicedRecursive.push({ major, minor, op: 'Read', value });
      else if (k === 'wios') s.blkio.ioServicedRecursive.push({ major, minor, op: 'Write', value });
    }
  }
}

/** Fills hugepage usage per host page size from a v1 (`v2` false) or v2 hugetlb directory. */
export function hugetlb(dir: string, s: CgroupStats, v2: boolean, sizes: string[]): void {
  for (const size of sizes) {
    const p = `hugetlb.${size}`;
    if (v2) {
      const events = parseKeyValues(tryReadCgroupFile(dir, `${p}.events`));
      s.hugetlb[size] = { usage: readUint(dir, `${p}.current`), max: 0, failcnt: events.get('max') ?? 0 };
    } else {
      s.hugetlb[size] = {
        usage: readUint(dir, `${p}.usage_in_bytes`),
        max: readUint(dir, `${p}.max_usage_in_bytes`),
        failcnt: readUint(dir, `${p}.failcnt`),
      };
    }
  }
}
