/**
 * The shim's Stats answer (src/shim/metrics.ts): Moat's cgroup statistics mapped to containerd's
 * io.containerd.cgroups.v1.Metrics (v1 and hybrid hosts) and io.containerd.cgroups.v2.Metrics
 * (unified hosts), decoded back with the shim's own descriptors; and the exact encoding of
 * uint64 values above 2^53 ("no limit").
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { detectLayout } from '../../src/cgroups/paths.js';
import { emptyStats } from '../../src/cgroups/stats.js';
import type { CgroupStats } from '../../src/cgroups/stats.js';
import { metricsAny, unifiedCgroups } from '../../src/shim/metrics.js';
import { TypeUrl, decode, encode, uint64, unpackAny } from '../../src/shim/proto.js';
import type { CgroupsV1Metrics, CgroupsV2Metrics } from '../../src/shim/proto.js';

/** The v1 kernel's "no limit": PAGE_COUNTER_MAX pages of 4 KiB, 0x7FFFFFFFFFFFF000. */
const V1_UNLIMITED = 9223372036854771712n;
/** Go's math.MaxUint64, containerd's value for "max". */
const MAX_UINT64 = 18446744073709551615n;
/** How Moat's stats hold 2^64-1 (a double, which rounds it to 2^64). */
const MAX_U64 = 2 ** 64 - 1;

/** Statistics as Moat reads them from the v1 hierarchies of a hybrid host (values from one). */
function v1Stats(): CgroupStats {
  const s = emptyStats();
  s.cpu.usage = {
    total: 16824365075586,
    percpu: [8461724277263, 8362640798323],
    percpu_kernel: [1200000000, 1100000000],
    percpu_user: [7000000000, 7100000000],
    kernel: 2300000000,
    user: 14100000000,
  };
  s.cpu.throttling = { periods: 120, throttledPeriods: 7, throttledTime: 3500000 };
  s.memory.raw = {
    cache: 9342976,
    rss: 5767168,
    rss_huge: 2097152,
    shmem: 9084928,
    mapped_file: 7634944,
    dirty: 24576,
    writeback: 4096,
    pgpgin: 138742,
    pgpgout: 135053,
    pgfault: 257413,
    pgmajfault: 3,
    inactive_anon: 8192,
    active_anon: 1531904,
    inactive_file: 12288,
    active_file: 245760,
    unevictable: 13320192,
    hierarchical_memory_limit: Number(V1_UNLIMITED),
    hierarchical_memsw_limit: Number(V1_UNLIMITED),
    total_cache: 523145216,
    total_rss: 92168192,
    total_rss_huge: 0,
    total_mapped_file: 85086208,
    total_dirty: 606208,
    total_writeback: 0,
    total_pgpgin: 179587963,
    total_pgpgout: 179458719,
    total_pgfault: 231829868,
    total_pgmajfault: 14062,
    total_inactive_anon: 86286336,
    total_active_anon: 1679360,
    total_inactive_file: 136126464,
    total_active_file: 245760,
    total_unevictable: 13320192,
  };
  s.memory.cache = 9342976;
  s.memory.usage = { usage: 15110144, limit: 268435456, max: 20971520, failcnt: 2 };
  s.memory.swap = { usage: 15110144, limit: Number(V1_UNLIMITED), max: 20971520, failcnt: 0 };
  s.memory.kernel = { usage: 1048576, limit: Number(V1_UNLIMITED), max: 1200000, failcnt: 0 };
  s.memory.kernelTCP = { usage: 0, limit: Number(V1_UNLIMITED), max: 0, failcnt: 0 };
  s.pids = { current: 3, limit: 0 };
  s.blkio.ioServiceBytesRecursive = [
    { major: 8, minor: 0, op: 'Read', value: 4096 },
    { major: 8, minor: 0, op: 'Write', value: 8192 },
  ];
  s.blkio.ioServicedRecursive = [{ major: 8, minor: 0, op: 'Read', value: 1 }];
  s.hugetlb = { '2MB': { usage: 0, max: 2097152, failcnt: 1 } };
  return s;
}

/** Statistics as Moat reads them on a unified cgroup v2 host. */
function v2Stats(): CgroupStats {
  const s = emptyStats();
  s.cpu.usage.total = 1234567000;
  s.cpu.usage.user = 1000000000;
  s.cpu.usage.kernel = 234567000;
  s.cpu.throttling = { periods: 50, throttledPeriods: 4, throttledTime: 7000000 };
  s.memory.raw = {
    anon: 2293760,
    file: 8192,
    kernel_stack: 32768,
    slab: 150000,
    sock: 0,
    shmem: 0,
    file_mapped: 4096,
    file_dirty: 0,
    file_writeback: 0,
    anon_thp: 0,
    inactive_anon: 2281472,
    active_anon: 12288,
    inactive_file: 8192,
    active_file: 0,
    unevictable: 0,
    slab_reclaimable: 50000,
    slab_unreclaimable: 100000,
    pgfault: 1234,
    pgmajfault: 1,
    workingset_refault: 0,
    thp_fault_alloc: 0,
  };
  s.memory.cache = 8192;
  // memory.max "max", memory.swap.max 1 GiB: Moat's swap entry is memory+swap (runc's convention)
  s.memory.usage = { usage: 2700000, limit: MAX_U64, max: 3000000, failcnt: 5 };
  s.memory.swap = { usage: 2700000 + 4096, limit: MAX_U64, max: 0, failcnt: 0 };
  s.pids = { current: 2, limit: 0 };
  s.blkio.ioServiceBytesRecursive = [
    { major: 259, minor: 0, op: 'Read', value: 1 << 20 },
    { major: 259, minor: 0, op: 'Write', value: 1 << 12 },
  ];
  s.blkio.ioServicedRecursive = [
    { major: 259, minor: 0, op: 'Read', value: 10 },
    { major: 259, minor: 0, op: 'Write', value: 2 },
  ];
  s.hugetlb = { '2MB': { usage: 2097152, max: 0, failcnt: 0 } };
  return s;
}

describe('shim metrics: io.containerd.cgroups.v1.Metrics', () => {
  const any = metricsAny(v1Stats(), 4, false);
  const m = decode<CgroupsV1Metrics>('io.containerd.cgroups.v1.Metrics', any.value);
  const exact = decode<{ memory: Record<string, unknown> & { usage: Record<string, string>; swap: Record<string, string> } }>(
    'io.containerd.cgroups.v1.Metrics',
    any.value,
    String,
  );

  it('has the type URL containerd registers (proto message name, no prefix)', () => {
    assert.equal(any.typeUrl, 'io.containerd.cgroups.v1.Metrics');
    assert.equal(any.typeUrl, TypeUrl.CGROUPS_V1_METRICS);
    assert.deepEqual(unpackAny<CgroupsV1Metrics>(any), m);
  });

  it('carries memory usage, limit, peak and failcnt', () => {
    assert.deepEqual(m.memory?.usage, { usage: 15110144, limit: 268435456, max: 20971520, failcnt: 2 });
    assert.equal(m.memory?.kernel?.usage, 1048576);
  });

  it('maps memory.stat keys onto MemoryStat fields', () => {
    const mem = m.memory;
    assert.ok(mem);
    assert.equal(mem.cache, 9342976);
    assert.equal(mem.rss, 5767168);
    assert.equal(mem.rssHuge, 2097152);
    assert.equal(mem.mappedFile, 7634944);
    assert.equal(mem.writeback, 4096);
    assert.equal(mem.pgPgIn, 138742);
    assert.equal(mem.pgMajFault, 3);
    assert.equal(mem.inactiveAnon, 8192);
    assert.equal(mem.unevictable, 13320192);
    assert.equal(mem.totalCache, 523145216);
    assert.equal(mem.totalPgFault, 231829868);
    assert.equal(mem.totalActiveFile, 245760);
  });

  it('encodes limits above 2^53 exactly', () => {
    assert.equal(BigInt(exact.memory.hierarchicalMemoryLimit as string), V1_UNLIMITED);
    assert.equal(BigInt(exact.memory.hierarchicalSwapLimit as string), V1_UNLIMITED);
    assert.equal(exact.memory.swap.limit, '9223372036854771712');
    assert.equal(exact.memory.usage.limit, '268435456');
  });

  it('carries CPU usage, per-CPU usage and throttling', () => {
    assert.deepEqual(m.cpu?.usage, {
      total: 16824365075586,
      kernel: 2300000000,
      user: 14100000000,
      perCpu: [8461724277263, 8362640798323],
    });
    assert.deepEqual(m.cpu?.throttling, { periods: 120, throttledPeriods: 7, throttledTime: 3500000 });
  });

  it('carries pids, blkio, hugetlb and the OOM-kill count', () => {
    assert.deepEqual(m.pids, { current: 3, limit: 0 });
    assert.deepEqual(m.blkio?.ioServiceBytesRecursive, [
      { op: 'Read', device: '', major: 8, minor: 0, value: 4096 },
      { op: 'Write', device: '', major: 8, minor: 0, value: 8192 },
    ]);
    assert.equal(m.blkio?.ioServicedRecursive.length, 1);
    assert.deepEqual(m.hugetlb, [{ usage: 0, max: 2097152, failcnt: 1, pagesize: '2MB' }]);
    assert.equal(m.memoryOomControl?.oomKill, 4);
  });

  it('is an empty Metrics without statistics (stopped container)', () => {
    const empty = metricsAny(undefined, 0, false);
    assert.equal(empty.typeUrl, 'io.containerd.cgroups.v1.Metrics');
    assert.equal(empty.value.length, 0);
    const d = decode<CgroupsV1Metrics>(empty.typeUrl, empty.value);
    assert.equal(d.memory, null);
    assert.equal(d.cpu, null);
  });
});

describe('shim metrics: io.containerd.cgroups.v2.Metrics', () => {
  const any = metricsAny(v2Stats(), 1, true);
  const m = decode<CgroupsV2Metrics>('io.containerd.cgroups.v2.Metrics', any.value);
  const exact = decode<{ memory: Record<string, string>; pids: Record<string, string> }>(
    'io.containerd.cgroups.v2.Metrics',
    any.value,
    String,
  );

  it('has the type URL containerd registers', () => {
    assert.equal(any.typeUrl, 'io.containerd.cgroups.v2.Metrics');
    assert.equal(any.typeUrl, TypeUrl.CGROUPS_V2_METRICS);
  });

  it('carries memory usage and swap (swap alone, not memory+swap) with exact "max" limits', () => {
    assert.equal(m.memory?.usage, 2700000);
    assert.equal(m.memory?.swapUsage, 4096);
    assert.equal(exact.memory.usageLimit, MAX_UINT64.toString());
    assert.equal(exact.memory.swapLimit, MAX_UINT64.toString());
  });

  it('maps memory.stat keys onto MemoryStat fields', () => {
    assert.equal(m.memory?.anon, 2293760);
    assert.equal(m.memory?.file, 8192);
    assert.equal(m.memory?.kernelStack, 32768);
    assert.equal(m.memory?.slabReclaimable, 50000);
    assert.equal(m.memory?.inactiveAnon, 2281472);
    assert.equal(m.memory?.pgfault, 1234);
    assert.equal(m.memory?.pgmajfault, 1);
  });

  it('carries CPU time in microseconds and throttling', () => {
    assert.deepEqual(m.cpu, {
      usageUsec: 1234567,
      userUsec: 1000000,
      systemUsec: 234567,
      nrPeriods: 50,
      nrThrottled: 4,
      throttledUsec: 7000,
    });
  });

  it('carries pids (no limit as math.MaxUint64), io, hugetlb and memory events', () => {
    assert.equal(m.pids?.current, 2);
    assert.equal(exact.pids.limit, MAX_UINT64.toString());
    assert.deepEqual(m.io?.usage, [{ major: 259, minor: 0, rbytes: 1 << 20, wbytes: 1 << 12, rios: 10, wios: 2 }]);
    assert.deepEqual(m.hugetlb, [{ current: 2097152, max: 0, pagesize: '2MB' }]);
    assert.deepEqual(m.memoryEvents, { low: 0, high: 0, max: 5, oom: 0, oomKill: 1 });
  });

  it('reports a finite v2 swap limit as swap alone', () => {
    const s = v2Stats();
    s.memory.usage.limit = 512 * 2 ** 20;
    s.memory.swap.limit = 512 * 2 ** 20 + 2 ** 30;
    const d = decode<CgroupsV2Metrics>(TypeUrl.CGROUPS_V2_METRICS, metricsAny(s, 0, true).value);
    assert.equal(d.memory?.usageLimit, 512 * 2 ** 20);
    assert.equal(d.memory?.swapLimit, 2 ** 30);
  });

  it('is an empty Metrics without statistics', () => {
    const empty = metricsAny(undefined, 0, true);
    assert.equal(empty.typeUrl, 'io.containerd.cgroups.v2.Metrics');
    assert.equal(empty.value.length, 0);
  });
});

describe('uint64 encoding', () => {
  const roundTrip = (v: number | bigint): string => {
    const bytes = encode('io.containerd.cgroups.v1.PidsStat', { limit: uint64(v) });
    return decode<{ limit: string }>('io.containerd.cgroups.v1.PidsStat', bytes, String).limit;
  };

  it('writes 2^64-1 (as Moat holds it, a double of 2^64) as 18446744073709551615', () => {
    assert.equal(roundTrip(MAX_U64), '18446744073709551615');
    assert.equal(roundTrip(MAX_UINT64), '18446744073709551615');
    assert.equal(roundTrip(Infinity), '18446744073709551615');
  });

  it('writes values between 2^53 and 2^64 exactly', () => {
    assert.equal(roundTrip(Number(V1_UNLIMITED)), '9223372036854771712');
    assert.equal(roundTrip(2 ** 63), '9223372036854775808');
    assert.equal(roundTrip(2n ** 53n + 1n), '9007199254740993');
    assert.equal(roundTrip(0xfffffffffffff000n), '18446744073709547520');
  });

  it('keeps small values as numbers and clamps nonsense to 0', () => {
    assert.equal(uint64(12345), 12345);
    assert.equal(uint64(1.9), 1);
    assert.equal(uint64(-5), 0);
    assert.equal(uint64(Number.NaN), 0);
    assert.equal(roundTrip(Number.MAX_SAFE_INTEGER), String(Number.MAX_SAFE_INTEGER));
  });
});

describe('unifiedCgroups', () => {
  it('is true exactly on a host whose /sys/fs/cgroup is the cgroup2 root', () => {
    let layout: string | undefined;
    try {
      layout = detectLayout();
    } catch {
      layout = undefined;
    }
    assert.equal(unifiedCgroups(), layout === 'v2' && existsSync('/sys/fs/cgroup/cgroup.controllers'));
  });
});
