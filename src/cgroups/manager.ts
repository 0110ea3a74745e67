/**
 * The cgroup manager: creates a container's cgroups, puts processes in them, writes limits,
 * freezes, reports statistics and removes them again.
 *
 * One implementation serves the three layouts. Each resource goes to the v1 hierarchy of its
 * controller when one is mounted, else to the cgroup v2 directory when the controller is enabled
 * there: on a hybrid host that puts memory, cpu, ... on v1 and (on the host this was written on)
 * hugetlb on the v2 mount. Device rules use the v1 devices controller when it is mounted, else a
 * BPF program on the v2 directory. `set` checks everything it can before it writes anything.
 */
import { accessSync, closeSync, constants, existsSync, openSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, HostError } from '../errors.js';
import { DeviceState, deviceFilterProgram, ruleFromSpec, ruleString } from './devices.js';
import { CgroupError, errnoCode } from './errors.js';
import {
  hasFile,
  mkdirCgroup,
  parseKeyValues,
  readCgroupFile,
  readProcs,
  readUint,
  removeCgroupTree,
  tryReadCgroupFile,
  writeCgroupFile,
} from './fsutil.js';
import { computeCgroupPaths, readCgroupMounts, readOwnCgroups, UNIFIED } from './paths.js';
import type { CgroupLayout, CgroupMounts } from './paths.js';
import { blkioWeightToIoWeight, cpuSharesToWeight, decimal, parseCpuList, swapToV2 } from './resources.js';
import type { Resources } from './resources.js';
import * as st from './stats.js';
import type { CgroupStats } from './stats.js';
import { attachProgram, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, detachProgram, loadCgroupDeviceProgram, programFdById, queryPrograms } from './sys.js';

/** What every cgroup manager offers, whatever the host's layout. */
export interface CgroupManager {
  /** The host's cgroup layout this manager works on. */
  readonly layout: CgroupLayout;
  /** Controller -> absolute cgroup directory; the cgroup v2 directory is under the key "". */
  readonly paths: Record<string, string>;
  /** Creates the cgroup directories (a v1 cpuset gets its parent's cpus and mems first). */
  create(): void;
  /** Puts process `pid` in every cgroup of the container (creating them if needed). */
  apply(pid: number): void;
  /** Writes limits; checks them all first and writes nothing if one is wrong. */
  set(resources: Resources): void;
  /** Freezes every process of the container; resolves once the kernel reports them frozen. */
  freeze(): Promise<void>;
  /** Thaws the container. */
  thaw(): Promise<void>;
  /** True if the container's cgroup is frozen (by `freeze`, not by a frozen parent). */
  isFrozen(): boolean;
  /** Every process in the container's cgroups and their descendants, sorted. */
  pids(): number[];
  /** Statistics shaped like runc's `events --stats` data. */
  stats(): CgroupStats;
  /** How many processes the OOM killer has killed in the container so far. */
  oomKillCount(): number;
  /** Removes the cgroup directories (killing nothing), retrying for about a second while busy. */
  destroy(): Promise<void>;
}

/** What `createCgroupManager` needs. */
export interface CgroupManagerOptions {
  /** Container id: the cgroup name when `cgroupsPath` is empty. */
  id: string;
  /** `linux.cgroupsPath` of config.json. */
  cgroupsPath?: string | undefined;
  /** Read `cgroupsPath` as systemd's `slice:prefix:name` (mapped onto cgroupfs). */
  systemd: boolean;
  /** Rootless: if the hierarchy is not writable, warn once and make every operation a no-op. */
  rootless: boolean;
  /** Receives warnings (ignored settings, missing kernel features). */
  warn: (msg: string) => void;
  /** Paths saved when the container was created; recomputed from the options above when absent. */
  paths?: Record<string, string> | undefined;
}

/** The part of the options the manager classes keep. */
export interface ManagerSettings {
  /** See CgroupManagerOptions.rootless. */
  rootless: boolean;
  /** See CgroupManagerOptions.warn. */
  warn: (msg: string) => void;
}

/** A v1 hierarchy directory of the container and the mount point of its hierarchy. */
interface Dir {
  dir: string;
  mountpoint: string;
}

/** Where a controller's files are: a v1 directory or the v2 directory. */
interface Target {
  v: 1 | 2;
  dir: string;
}

type Step = () => void;

const nz = (n: number | undefined): n is number => n !== undefined && n !== 0;

/** Where resources go on this host, and what set() found missing. */
abstract class FsCgroupManager implements CgroupManager {
  readonly paths: Record<string, string>;
  private readonly v1 = new Map<string, Dir>();
  private readonly v2: Dir | undefined;
  private readonly warned = new Set<string>();
  private readonly disabled: boolean;
  private v2Controllers: Set<string> | undefined;

  constructor(
    readonly layout: CgroupLayout,
    paths: Record<string, string>,
    mounts: CgroupMounts,
    private readonly settings: ManagerSettings,
  ) {
    this.paths = { ...paths };
    for (const [controller, dir] of Object.entries(paths)) {
      if (controller === UNIFIED) continue;
      const mount = mounts.v1.get(controller);
      if (mount !== undefined) this.v1.set(controller, { dir, mountpoint: mount.mountpoint });
    }
    const v2dir = paths[UNIFIED];
    this.v2 = v2dir !== undefined && mounts.v2 !== undefined ? { dir: v2dir, mountpoint: mounts.v2.mountpoint } : undefined;
    this.disabled = settings.rootless && !this.writable();
  }

  /** Warns once per message. */
  private warn(msg: string): void {
    if (this.warned.has(msg)) return;
    this.warned.add(msg);
    this.settings.warn(msg);
  }

  /** Checks (for rootless) that every directory can be created or written; warns once if not. */
  private writable(): boolean {
    for (const dir of this.dirs()) {
      let d = dir;
      while (!existsSync(d) && d !== '/') d = dirname(d);
      const target = d === dir ? join(dir, 'cgroup.procs') : d;
      try {
        accessSync(target, constants.W_OK);
      } catch (err) {
        this.warn(
          `cgroups: ${target} is not writable (${errnoCode(err) ?? 'error'}); running rootless without cgroups, ` +
            'so resource limits, freezing and statistics are not available',
        );
        return false;
      }
    }
    return true;
  }

  /** The distinct directories of the container (co-mounted v1 controllers share one), v1 first. */
  private dirs(): string[] {
    const out = new Set<string>();
    for (const d of this.v1.values()) out.add(d.dir);
    if (this.v2 !== undefined) out.add(this.v2.dir);
    return [...out];
  }

  // -------------------------------------------------------------------------------------------
  // create / apply
  // -------------------------------------------------------------------------------------------

  create(): void {
    if (this.disabled) return;
    const cpuset = this.v1.get('cpuset');
    for (const d of this.v1.values()) {
      if (d === cpuset) createCpuset(d);
      else mkdirCgroup(d.dir);
    }
    if (this.v2 !== undefined) createV2(this.v2);
    this.v2Controllers = undefined;
  }

  apply(pid: number): void {
    if (this.disabled) return;
    this.create();
    for (const dir of this.dirs()) {
      try {
        writeCgroupFile(dir, 'cgroup.procs', String(pid));
      } catch (err) {
        if (err instanceof CgroupError && err.code === 'ESRCH') {
          throw new CgroupError(`cannot put process ${pid} in cgroup ${dir}: the process is gone`, dir, 'ESRCH');
        }
        throw err;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // routing
  // -------------------------------------------------------------------------------------------

  /** The controllers enabled in the container's v2 directory (read once per set()). */
  private v2Has(controller: string): boolean {
    if (this.v2 === undefined) return false;
    if (this.v2Controllers === undefined) {
      const text = tryReadCgroupFile(this.v2.dir, 'cgroup.controllers') ?? '';
      this.v2Controllers = new Set(text.trim().split(/\s+/).filter((c) => c !== ''));
    }
    return this.v2Controllers.has(controller);
  }

  /** The directory of a controller: its v1 hierarchy if mounted, else the v2 directory if enabled there. */
  private target(v1name: string, v2name: string): Target | undefined {
    const d = this.v1.get(v1name);
    if (d !== undefined) return { v: 1, dir: d.dir };
    if (this.v2 !== undefined && this.v2Has(v2name)) return { v: 2, dir: this.v2.dir };
    return undefined;
  }

  /** Like `target`, but a missing controller is an error naming the field that needs it. */
  private need(v1name: string, v2name: string, field: string): Target {
    const t = this.target(v1name, v2name);
    if (t === undefined) {
      throw new HostError(
        `cannot apply ${field}: the ${v1name} controller is neither mounted as a cgroup v1 hierarchy nor enabled on cgroup v2`,
      );
    }
    return t;
  }

  // -------------------------------------------------------------------------------------------
  // set
  // -------------------------------------------------------------------------------------------

  set(r: Resources): void {
    if (this.disabled) return;
    this.create();
    const steps: Step[] = [];
    const cleanups: Step[] = [];
    try {
      this.planMemory(r, steps);
      this.planCpu(r, steps);
      this.planCpuset(r, steps);
      this.planPids(r, steps);
      this.planBlockIO(r, steps);
      this.planHugetlb(r, steps);
      this.planNetwork(r, steps);
      this.planRdma(r, steps);
      this.planDevices(r, steps, cleanups);
      this.planUnified(r, steps);
      for (const step of steps) step();
    } finally {
      for (const c of cleanups) c();
    }
  }

  private planMemory(r: Resources, steps: Step[]): void {
    const m = r.memory;
    if (m === undefined) return;
    if (m.kernel !== undefined || m.kernelTCP !== undefined) {
      this.warn('linux.resources.memory.kernel and kernelTCP are deprecated and ignored');
    }
    if (!nz(m.limit) && !nz(m.reservation) && !nz(m.swap) && m.swappiness === undefined && m.disableOOMKiller === undefined) return;
    const t = this.need('memory', 'memory', 'linux.resources.memory');
    if (m.checkBeforeUpdate === true && nz(m.limit) && m.limit > 0) {
      const usage = readUint(t.dir, t.v === 1 ? 'memory.usage_in_bytes' : 'memory.current');
      if (usage > m.limit) {
        throw new ConfigError('linux.resources.memory.limit', `${m.limit} is below the current memory usage ${usage}`);
      }
    }
    if (t.v === 1) this.planMemoryV1(t.dir, m, steps);
    else this.planMemoryV2(t.dir, m, steps);
  }

  private planMemoryV1(dir: string, m: NonNullable<Resources['memory']>, steps: Step[]): void {
    const mem = m.limit ?? 0;
    let swap = m.swap ?? 0;
    const memsw = hasFile(dir, 'memory.memsw.limit_in_bytes');
    // as runc: unlimited memory with no swap setting means unlimited swap too
    if (mem === -1 && swap === 0 && memsw) swap = -1;
    if (swap !== 0 && !memsw) {
      if (m.swap !== undefined && m.swap !== 0) {
        this.warn(
          'the kernel does not account swap (no memory.memsw.limit_in_bytes; boot with swapaccount=1): ' +
            'linux.resources.memory.swap is ignored',
        );
      }
      swap = 0;
    }
    const writeMemory = () => {
      if (mem === 0) return;
      try {
        writeCgroupFile(dir, 'memory.limit_in_bytes', decimal(mem));
      } catch (err) {
        if (!(err instanceof CgroupError && err.code === 'EBUSY')) throw err;
        const usage = readUint(dir, 'memory.usage_in_bytes');
        const peak = readUint(dir, 'memory.max_usage_in_bytes');
        throw new CgroupError(`cannot set the memory limit to ${mem}: current usage ${usage} (peak ${peak}) is above it`, dir, 'EBUSY');
      }
    };
    const writeSwap = () => {
      if (swap !== 0) writeCgroupFile(dir, 'memory.memsw.limit_in_bytes', decimal(swap));
    };
    // memory+swap must never be below memory: raise swap first when growing, memory first when shrinking
    let swapFirst = false;
    if (mem !== 0 && swap !== 0) swapFirst = swap === -1 || readUint(dir, 'memory.limit_in_bytes') < swap;
    steps.push(swapFirst ? writeSwap : writeMemory, swapFirst ? writeMemory : writeSwap);
    if (nz(m.reservation)) steps.push(() => writeCgroupFile(dir, 'memory.soft_limit_in_bytes', decimal(m.reservation ?? 0)));
    if (m.disableOOMKiller !== undefined) {
      const value = m.disableOOMKiller ? '1' : '0';
      steps.push(() => writeCgroupFile(dir, 'memory.oom_control', value));
    }
    if (m.swappiness !== undefined) {
      const value = String(m.swappiness);
      steps.push(() => writeCgroupFile(dir, 'memory.swappiness', value));
    }
  }

  private planMemoryV2(dir: string, m: NonNullable<Resources['memory']>, steps: Step[]): void {
    const swap = swapToV2(m.swap ?? 0, m.limit ?? 0);
    if (swap !== undefined) {
      if (hasFile(dir, 'memory.swap.max')) steps.push(() => writeCgroupFile(dir, 'memory.swap.max', swap));
      else if (nz(m.swap)) this.warn('the kernel does not account swap (no memory.swap.max): linux.resources.memory.swap is ignored');
    }
    const limit = (n: number) => (n === -1 ? 'max' : decimal(n));
    if (nz(m.limit)) {
      const value = limit(m.limit);
      steps.push(() => writeCgroupFile(dir, 'memory.max', value));
    }
    if (nz(m.reservation)) {
      const value = limit(m.reservation);
      steps.push(() => writeCgroupFile(dir, 'memory.low', value));
    }
    if (m.swappiness !== undefined) this.warn('cgroup v2 has no per-cgroup swappiness: linux.resources.memory.swappiness is ignored');
    if (m.disableOOMKiller === true) this.warn('cgroup v2 cannot disable the OOM killer: linux.resources.memory.disableOOMKiller is ignored');
  }

  private planCpu(r: Resources, steps: Step[]): void {
    const c = r.cpu;
    if (c === undefined) return;
    const wants =
      nz(c.shares) || nz(c.quota) || nz(c.period) || c.burst !== undefined || nz(c.realtimeRuntime) || nz(c.realtimePeriod) || c.idle !== undefined;
    if (!wants) return;
    const t = this.need('cpu', 'cpu', 'linux.resources.cpu');
    const dir = t.dir;
    if (nz(c.period) && (c.period < 1000 || c.period > 1_000_000)) {
      throw new ConfigError('linux.resources.cpu.period', `expected 1000 to 1000000 microseconds, got ${c.period}`);
    }
    if (nz(c.quota) && c.quota !== -1 && c.quota < 1000) {
      throw new ConfigError('linux.resources.cpu.quota', `expected -1 (unlimited) or at least 1000 microseconds, got ${c.quota}`);
    }
    if (t.v === 1) {
      if (nz(c.shares)) {
        if (c.shares < 2 || c.shares > 262144) {
          throw new ConfigError('linux.resources.cpu.shares', `expected 2 to 262144, got ${c.shares}`);
        }
        const shares = c.shares;
        steps.push(() => writeCgroupFile(dir, 'cpu.shares', decimal(shares)));
      }
      // The period alone may be refused (EINVAL) while the old quota does not fit it; then it
      // is written again after the quota, as runc does.
      const period = c.period ?? 0;
      const quota = c.quota ?? 0;
      steps.push(() => {
        let retryPeriod = false;
        if (period !== 0) {
          try {
            writeCgroupFile(dir, 'cpu.cfs_period_us', decimal(period));
          } catch (err) {
            if (!(err instanceof CgroupError && err.code === 'EINVAL' && quota !== 0)) throw err;
            retryPeriod = true;
          }
        }
        if (quota !== 0) {
          writeCgroupFile(dir, 'cpu.cfs_quota_us', decimal(quota));
          if (retryPeriod) writeCgroupFile(dir, 'cpu.cfs_period_us', decimal(period));
        }
      });
      if (c.burst !== undefined) {
        const burst = c.burst;
        if (hasFile(dir, 'cpu.cfs_burst_us')) steps.push(() => writeCgroupFile(dir, 'cpu.cfs_burst_us', decimal(burst)));
        else this.warn('the kernel has no cpu.cfs_burst_us: linux.resources.cpu.burst is ignored');
      }
      if (c.idle !== undefined) {
        if (!hasFile(dir, 'cpu.idle')) throw new HostError('cannot apply linux.resources.cpu.idle: the kernel has no cpu.idle');
        const idle = String(c.idle);
        steps.push(() => writeCgroupFile(dir, 'cpu.idle', idle));
      }
      if (nz(c.realtimeRuntime) || nz(c.realtimePeriod)) {
        if (!hasFile(dir, 'cpu.rt_runtime_us')) {
          throw new HostError('cannot apply linux.resources.cpu.realtime*: the kernel has no cpu.rt_runtime_us (CONFIG_RT_GROUP_SCHED)');
        }
        const rtPeriod = c.realtimePeriod ?? 0;
        const rtRuntime = c.realtimeRuntime ?? 0;
        steps.push(() => {
          let retry = false;
          if (rtPeriod !== 0) {
            try {
              writeCgroupFile(dir, 'cpu.rt_period_us', decimal(rtPeriod));
            } catch (err) {
              if (!(err instanceof CgroupError && err.code === 'EINVAL' && rtRuntime !== 0)) throw err;
              retry = true;
            }
          }
          if (rtRuntime !== 0) {
            writeCgroupFile(dir, 'cpu.rt_runtime_us', decimal(rtRuntime));
            if (retry) writeCgroupFile(dir, 'cpu.rt_period_us', decimal(rtPeriod));
          }
        });
      }
      return;
    }
    // cgroup v2
    if (c.idle !== undefined) {
      const idle = String(c.idle);
      steps.push(() => writeCgroupFile(dir, 'cpu.idle', idle));
    }
    if (nz(c.shares)) {
      const weight = String(cpuSharesToWeight(c.shares));
      steps.push(() => writeCgroupFile(dir, 'cpu.weight', weight));
    }
    if (c.burst !== undefined) {
      const burst = decimal(c.burst);
      if (hasFile(dir, 'cpu.max.burst')) steps.push(() => writeCgroupFile(dir, 'cpu.max.burst', burst));
      else this.warn('the kernel has no cpu.max.burst: linux.resources.cpu.burst is ignored');
    }
    if (nz(c.quota) || nz(c.period)) {
      const value = `${nz(c.quota) && c.quota > 0 ? decimal(c.quota) : 'max'} ${decimal(nz(c.period) ? c.period : 100000)}`;
      steps.push(() => writeCgroupFile(dir, 'cpu.max', value));
    }
    if (nz(c.realtimeRuntime) || nz(c.realtimePeriod)) {
      this.warn('cgroup v2 has no real-time CPU bandwidth: linux.resources.cpu.realtimeRuntime/realtimePeriod are ignored');
    }
  }

  private planCpuset(r: Resources, steps: Step[]): void {
    const c = r.cpu;
    if (c === undefined || (!c.cpus && !c.mems)) return;
    const t = this.need('cpuset', 'cpuset', 'linux.resources.cpu.cpus/mems');
    const parent = dirname(t.dir);
    for (const [key, file] of [
      ['cpus', 'cpuset.cpus'],
      ['mems', 'cpuset.mems'],
    ] as const) {
      const want = c[key];
      if (!want) continue;
      const availText = tryReadCgroupFile(parent, t.v === 1 ? file : `${file}.effective`) ?? '';
      const avail = new Set(parseCpuList(availText) ?? []);
      const missing = (parseCpuList(want) ?? []).filter((n) => !avail.has(n));
      if (missing.length > 0) {
        throw new ConfigError(
          `linux.resources.cpu.${key}`,
          `${JSON.stringify(want)} is not a subset of the ${key} available to the cgroup (${availText.trim() || 'none'})`,
        );
      }
      steps.push(() => writeCgroupFile(t.dir, file, want));
    }
  }

  private planPids(r: Resources, steps: Step[]): void {
    const limit = r.pids?.limit;
    if (!nz(limit)) return;
    const t = this.need('pids', 'pids', 'linux.resources.pids');
    const value = limit > 0 ? decimal(limit) : 'max';
    steps.push(() => writeCgroupFile(t.dir, 'pids.max', value));
  }

  private planBlockIO(r: Resources, steps: Step[]): void {
    const b = r.blockIO;
    if (b === undefined) return;
    const throttles = [
      ['throttleReadBpsDevice', 'read_bps_device', 'rbps'],
      ['throttleWriteBpsDevice', 'write_bps_device', 'wbps'],
      ['throttleReadIOPSDevice', 'read_iops_device', 'riops'],
      ['throttleWriteIOPSDevice', 'write_iops_device', 'wiops'],
    ] as const;
    const hasThrottle = throttles.some(([key]) => (b[key] ?? []).length > 0);
    const weightDevices = b.weightDevice ?? [];
    const hasWeight = nz(b.weight) || nz(b.leafWeight) || weightDevices.length > 0;
    if (!hasThrottle && !hasWeight) return;
    const t = hasThrottle ? this.need('blkio', 'io', 'linux.resources.blockIO') : this.target('blkio', 'io');
    if (t === undefined) {
      this.warn('no blkio (v1) or io (v2) controller: linux.resources.blockIO weights are ignored');
      return;
    }
    const dir = t.dir;
    const write = (file: string, value: string) => steps.push(() => writeCgroupFile(dir, file, value));
    if (t.v === 1) {
      // CFQ had blkio.weight; with BFQ (the only proportional scheduler on current kernels)
      // it is blkio.bfq.weight, as runc falls back to.
      const weightFile = hasFile(dir, 'blkio.weight') ? 'blkio.weight' : hasFile(dir, 'blkio.bfq.weight') ? 'blkio.bfq.weight' : undefined;
      const deviceFile = weightFile === 'blkio.weight' ? 'blkio.weight_device' : 'blkio.bfq.weight_device';
      if (nz(b.weight) || weightDevices.some((d) => nz(d.weight))) {
        if (weightFile === undefined) this.warn('the kernel has neither blkio.weight nor blkio.bfq.weight: block I/O weights are ignored');
      }
      if (nz(b.weight) && weightFile !== undefined) write(weightFile, String(b.weight));
      const leaf = hasFile(dir, 'blkio.leaf_weight');
      if ((nz(b.leafWeight) || weightDevices.some((d) => nz(d.leafWeight))) && !leaf) {
        this.warn('the kernel has no blkio.leaf_weight (CFQ only): block I/O leaf weights are ignored');
      }
      if (nz(b.leafWeight) && leaf) write('blkio.leaf_weight', String(b.leafWeight));
      for (const d of weightDevices) {
        if (nz(d.weight) && weightFile !== undefined && hasFile(dir, deviceFile)) write(deviceFile, `${d.major}:${d.minor} ${d.weight}`);
        if (nz(d.leafWeight) && leaf) write('blkio.leaf_weight_device', `${d.major}:${d.minor} ${d.leafWeight}`);
      }
      for (const [key, file] of throttles) {
        for (const d of b[key] ?? []) write(`blkio.throttle.${file}`, `${d.major}:${d.minor} ${decimal(d.rate)}`);
      }
      return;
    }
    // cgroup v2: BFQ's io.bfq.weight takes the v1 scale as is; io.weight needs converting
    const bfq = hasFile(dir, 'io.bfq.weight');
    if ((nz(b.weight) || weightDevices.length > 0) && !bfq && !hasFile(dir, 'io.weight')) {
      this.warn('the kernel has neither io.bfq.weight nor io.weight: block I/O weights are ignored');
    } else {
      if (nz(b.weight)) write(bfq ? 'io.bfq.weight' : 'io.weight', String(bfq ? b.weight : blkioWeightToIoWeight(b.weight)));
      for (const d of weightDevices) {
        if (!nz(d.weight)) continue;
        const w = bfq ? d.weight : blkioWeightToIoWeight(d.weight);
        write(bfq ? 'io.bfq.weight' : 'io.weight', `${d.major}:${d.minor} ${w}`);
      }
    }
    if (nz(b.leafWeight) || weightDevices.some((d) => nz(d.leafWeight))) {
      this.warn('cgroup v2 has no leaf weights: linux.resources.blockIO leafWeight is ignored');
    }
    for (const [key, , name] of throttles) {
      for (const d of b[key] ?? []) write('io.max', `${d.major}:${d.minor} ${name}=${decimal(d.rate)}`);
    }
  }

  private planHugetlb(r: Resources, steps: Step[]): void {
    const limits = r.hugepageLimits ?? [];
    if (limits.length === 0) return;
    const sizes = st.hostHugepageSizes();
    limits.forEach((l, i) => {
      if (!sizes.includes(l.pageSize)) {
        throw new ConfigError(
          `linux.resources.hugepageLimits[${i}].pageSize`,
          `hugepage size ${l.pageSize} is not supported by this host (it has: ${sizes.join(', ') || 'none'})`,
        );
      }
    });
    const t = this.need('hugetlb', 'hugetlb', 'linux.resources.hugepageLimits');
    const suffix = t.v === 1 ? 'limit_in_bytes' : 'max';
    for (const l of limits) {
      const value = decimal(l.limit);
      const file = `hugetlb.${l.pageSize}.${suffix}`;
      const rsvd = `hugetlb.${l.pageSize}.rsvd.${suffix}`;
      const withRsvd = hasFile(t.dir, rsvd);
      steps.push(() => {
        writeCgroupFile(t.dir, file, value);
        if (withRsvd) writeCgroupFile(t.dir, rsvd, value);
      });
    }
  }

  private planNetwork(r: Resources, steps: Step[]): void {
    const n = r.network;
    if (n === undefined) return;
    if (n.classID !== undefined) {
      const dir = this.v1.get('net_cls')?.dir;
      const value = String(n.classID);
      if (dir === undefined) this.warn('the net_cls controller is not mounted: linux.resources.network.classID is ignored');
      else steps.push(() => writeCgroupFile(dir, 'net_cls.classid', value));
    }
    const prios = n.priorities ?? [];
    if (prios.length > 0) {
      const dir = this.v1.get('net_prio')?.dir;
      if (dir === undefined) this.warn('the net_prio controller is not mounted: linux.resources.network.priorities are ignored');
      else for (const p of prios) steps.push(() => writeCgroupFile(dir, 'net_prio.ifpriomap', `${p.name} ${p.priority}`));
    }
  }

  private planRdma(r: Resources, steps: Step[]): void {
    const entries = Object.entries(r.rdma ?? {});
    if (entries.length === 0) return;
    const t = this.need('rdma', 'rdma', 'linux.resources.rdma');
    for (const [device, lim] of entries) {
      let line = device;
      if (lim.hcaHandles !== undefined) line += ` hca_handle=${lim.hcaHandles}`;
      if (lim.hcaObjects !== undefined) line += ` hca_object=${lim.hcaObjects}`;
      if (line !== device) steps.push(() => writeCgroupFile(t.dir, 'rdma.max', line));
    }
  }

  private planDevices(r: Resources, steps: Step[], cleanups: Step[]): void {
    if (r.devices === undefined) return;
    const target = DeviceState.fromRules(r.devices.map(ruleFromSpec));
    const v1 = this.v1.get('devices');
    if (v1 !== undefined) {
      const dir = v1.dir;
      const current = DeviceState.fromList(readCgroupFile(dir, 'devices.list'));
      const rules = current.transitionTo(target);
      steps.push(() => {
        for (const rule of rules) writeCgroupFile(dir, rule.allow ? 'devices.allow' : 'devices.deny', ruleString(rule));
        const after = DeviceState.fromList(readCgroupFile(dir, 'devices.list'));
        const ok = target.defaultAllow ? after.defaultAllow : !after.defaultAllow && after.equals(target);
        if (!ok) throw new CgroupError(`the device rules in ${dir}/devices.list do not match the ones written`, dir);
      });
      return;
    }
    if (this.v2 === undefined) {
      throw new HostError('cannot apply linux.resources.devices: no devices cgroup (v1) and no cgroup v2 directory for a BPF filter');
    }
    const dir = this.v2.dir;
    // Load (and so verify) the program now, so a rejected program stops set() before any write.
    const prog = loadCgroupDeviceProgram(deviceFilterProgram(target));
    cleanups.push(() => closeSync(prog));
    steps.push(() => attachDeviceFilter(dir, prog));
  }

  private planUnified(r: Resources, steps: Step[]): void {
    const entries = Object.entries(r.unified ?? {});
    if (entries.length === 0) return;
    if (this.v2 === undefined) {
      throw new ConfigError('linux.resources.unified', 'unified resources need cgroup v2, and this host has cgroup v1 only');
    }
    const dir = this.v2.dir;
    for (const [key, value] of entries) {
      const controller = key.slice(0, key.indexOf('.'));
      const where = `linux.resources.unified[${JSON.stringify(key)}]`;
      if (controller !== 'cgroup' && !this.v2Has(controller)) {
        const why = this.layout === 'hybrid' ? ' (on this hybrid host it is a v1 controller or absent)' : '';
        throw new ConfigError(where, `controller "${controller}" is not available on cgroup v2${why}`);
      }
      if (!hasFile(dir, key)) throw new ConfigError(where, `there is no file ${key} in ${dir}`);
      steps.push(() => writeCgroupFile(dir, key, value));
    }
  }

  // -------------------------------------------------------------------------------------------
  // freezer
  // -------------------------------------------------------------------------------------------

  async freeze(): Promise<void> {
    if (this.disabled) return;
    const v1 = this.v1.get('freezer');
    if (v1 !== undefined) return freezeV1(v1.dir);
    if (this.v2 !== undefined) return freezeV2(this.v2.dir);
    throw new HostError('cannot freeze: no freezer cgroup (v1) and no cgroup v2 directory');
  }

  async thaw(): Promise<void> {
    if (this.disabled) return;
    const v1 = this.v1.get('freezer');
    if (v1 !== undefined) writeCgroupFile(v1.dir, 'freezer.state', 'THAWED');
    else if (this.v2 !== undefined) writeCgroupFile(this.v2.dir, 'cgroup.freeze', '0');
    else throw new HostError('cannot thaw: no freezer cgroup (v1) and no cgroup v2 directory');
  }

  isFrozen(): boolean {
    if (this.disabled) return false;
    const v1 = this.v1.get('freezer');
    if (v1 !== undefined) {
      const state = tryReadCgroupFile(v1.dir, 'freezer.state')?.trim();
      // FROZEN because a parent is frozen does not count: runc reports that as thawed
      return state === 'FROZEN' && tryReadCgroupFile(v1.dir, 'freezer.self_freezing')?.trim() !== '0';
    }
    if (this.v2 !== undefined) return tryReadCgroupFile(this.v2.dir, 'cgroup.freeze')?.trim() === '1';
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // processes, statistics, OOM
  // -------------------------------------------------------------------------------------------

  pids(): number[] {
    if (this.disabled) return [];
    const all = new Set<number>();
    for (const dir of this.dirs()) readProcs(dir, true, all);
    return [...all].sort((a, b) => a - b);
  }

  stats(): CgroupStats {
    const s = st.emptyStats();
    if (this.disabled) return s;
    this.v2Controllers = undefined;
    const cpuacct = this.v1.get('cpuacct');
    const cpu = this.v1.get('cpu');
    if (cpuacct !== undefined) st.cpuacctV1(cpuacct.dir, s);
    if (cpu !== undefined) st.cpuV1(cpu.dir, s);
    if (cpuacct === undefined && cpu === undefined && this.v2 !== undefined) st.cpuV2(this.v2.dir, s);
    const cpuset = this.target('cpuset', 'cpuset');
    if (cpuset !== undefined) st.cpuset(cpuset.dir, s, cpuset.v === 2);
    const memory = this.target('memory', 'memory');
    if (memory?.v === 1) st.memoryV1(memory.dir, s);
    else if (memory?.v === 2) st.memoryV2(memory.dir, s);
    const pids = this.target('pids', 'pids');
    if (pids !== undefined) st.pids(pids.dir, s);
    else if (this.v2 !== undefined) s.pids.current = readProcs(this.v2.dir, true).size;
    const blkio = this.target('blkio', 'io');
    if (blkio?.v === 1) st.blkioV1(blkio.dir, s);
    else if (blkio?.v === 2) st.ioV2(blkio.dir, s);
    const hugetlb = this.target('hugetlb', 'hugetlb');
    if (hugetlb !== undefined) st.hugetlb(hugetlb.dir, s, hugetlb.v === 2, st.hostHugepageSizes());
    return s;
  }

  oomKillCount(): number {
    if (this.disabled) return 0;
    this.v2Controllers = undefined;
    const t = this.target('memory', 'memory');
    if (t === undefined) return 0;
    const text = tryReadCgroupFile(t.dir, t.v === 1 ? 'memory.oom_control' : 'memory.events');
    return parseKeyValues(text).get('oom_kill') ?? 0;
  }

  // -------------------------------------------------------------------------------------------
  // destroy
  // -------------------------------------------------------------------------------------------

  async destroy(): Promise<void> {
    if (this.disabled) return;
    let left = this.dirs();
    const deadline = Date.now() + 1000;
    for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
      left = left.filter((dir) => !removeCgroupTree(dir));
      if (left.length === 0) return;
      if (Date.now() >= deadline) {
        const busy = left.map((d) => `${d} (${readProcs(d, true).size} processes)`).join(', ');
        throw new CgroupError(`cannot remove cgroups that are still busy: ${busy}`, left[0], 'EBUSY');
      }
      await sleep(delay);
    }
  }
}

/** Cgroup manager of a host with v1 hierarchies only. */
export class V1Manager extends FsCgroupManager {
  constructor(paths: Record<string, string>, mounts: CgroupMounts, settings: ManagerSettings) {
    super('v1', paths, mounts, settings);
  }
}

/** Cgroup manager of a host with the unified cgroup v2 hierarchy (or of one v2 directory). */
export class V2Manager extends FsCgroupManager {
  constructor(paths: Record<string, string>, mounts: CgroupMounts, settings: ManagerSettings) {
    super('v2', paths, mounts, settings);
  }
}

/** Cgroup manager of a hybrid host: v1 hierarchies plus a cgroup2 mount for the rest. */
export class HybridManager extends FsCgroupManager {
  constructor(paths: Record<string, string>, mounts: CgroupMounts, settings: ManagerSettings) {
    super('hybrid', paths, mounts, settings);
  }
}

/**
 * Creates the cgroup manager for a container on this host: detects the layout, computes the
 * paths (or takes saved ones), and picks the implementation. Creates no directories yet.
 */
export function createCgroupManager(opts: CgroupManagerOptions): CgroupManager {
  const mounts = readCgroupMounts();
  const paths =
    opts.paths ?? computeCgroupPaths({ id: opts.id, cgroupsPath: opts.cgroupsPath, systemd: opts.systemd }, mounts, readOwnCgroups());
  const settings = { rootless: opts.rootless, warn: opts.warn };
  switch (mounts.layout) {
    case 'v1':
      return new V1Manager(paths, mounts, settings);
    case 'v2':
      return new V2Manager(paths, mounts, settings);
    case 'hybrid':
      return new HybridManager(paths, mounts, settings);
  }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** The directories from a mount point down to `dir`, without the mount point. */
function descent(mountpoint: string, dir: string): string[] {
  const rel = posix.relative(mountpoint, dir);
  if (rel === '' || rel.startsWith('..')) return rel === '' ? [] : [dir];
  const out: string[] = [];
  let cur = mountpoint;
  for (const part of rel.split('/')) {
    cur = join(cur, part);
    out.push(cur);
  }
  return out;
}

/**
 * Creates a v1 cpuset cgroup and its missing parents, copying cpuset.cpus and cpuset.mems down
 * from each parent where they are empty: a new v1 cpuset starts empty, and no task can join it so.
 */
function createCpuset(d: Dir): void {
  let parent = d.mountpoint;
  for (const dir of descent(d.mountpoint, d.dir)) {
    mkdirCgroup(dir);
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      if ((tryReadCgroupFile(dir, file) ?? '').trim() !== '') continue;
      const inherited = (tryReadCgroupFile(parent, file) ?? '').trim();
      if (inherited !== '') writeCgroupFile(dir, file, inherited);
    }
    parent = dir;
  }
}

/**
 * Creates a v2 cgroup and its missing parents, enabling in each ancestor's subtree_control the
 * controllers it has (as runc does; one that cannot be enabled is skipped).
 */
function createV2(d: Dir): void {
  let parent = d.mountpoint;
  for (const dir of descent(d.mountpoint, d.dir)) {
    enableControllers(parent);
    mkdirCgroup(dir);
    parent = dir;
  }
}

/** Enables every available controller in `dir`'s subtree_control, skipping ones that fail. */
function enableControllers(dir: string): void {
  const words = (file: string) => (tryReadCgroupFile(dir, file) ?? '').trim().split(/\s+/).filter((w) => w !== '');
  const enabled = new Set(words('cgroup.subtree_control'));
  const missing = words('cgroup.controllers').filter((c) => !enabled.has(c));
  if (missing.length === 0) return;
  try {
    writeCgroupFile(dir, 'cgroup.subtree_control', missing.map((c) => `+${c}`).join(' '));
  } catch {
    for (const c of missing) {
      try {
        writeCgroupFile(dir, 'cgroup.subtree_control', `+${c}`);
      } catch {
        // a controller that cannot be enabled here (e.g. a busy cgroup) is simply not used
      }
    }
  }
}

/** Freezes a v1 freezer cgroup the way runc does: write FROZEN until it reads FROZEN. */
async function freezeV1(dir: string): Promise<void> {
  try {
    for (let i = 0; i < 1000; i++) {
      if (i % 50 === 49) {
        // a task stuck in FREEZING (e.g. in vfork) may need a thaw to make progress
        writeCgroupFile(dir, 'freezer.state', 'THAWED');
        await sleep(10);
      }
      writeCgroupFile(dir, 'freezer.state', 'FROZEN');
      if (i % 25 === 24) await sleep(1);
      const state = readCgroupFile(dir, 'freezer.state').trim();
      if (state === 'FROZEN') return;
      if (state !== 'FREEZING') throw new CgroupError(`unexpected freezer state ${state} while freezing ${dir}`, dir);
    }
    throw new CgroupError(`cannot freeze ${dir}: it stays FREEZING`, dir);
  } catch (err) {
    try {
      writeCgroupFile(dir, 'freezer.state', 'THAWED');
    } catch {
      // the original error says more
    }
    throw err;
  }
}

/** Freezes a v2 cgroup: cgroup.freeze = 1, then wait (up to 10 s) for `frozen 1` in cgroup.events. */
async function freezeV2(dir: string): Promise<void> {
  writeCgroupFile(dir, 'cgroup.freeze', '1');
  for (let i = 0; i < 1000; i++) {
    if (parseKeyValues(tryReadCgroupFile(dir, 'cgroup.events')).get('frozen') === 1) return;
    await sleep(10);
  }
  try {
    writeCgroupFile(dir, 'cgroup.freeze', '0');
  } catch {
    // report the timeout
  }
  throw new CgroupError(`cannot freeze ${dir}: cgroup.events did not report frozen within 10 s`, dir);
}

/**
 * Attaches a loaded device filter program to a v2 cgroup, then detaches the programs that were
 * there before (between the two steps both apply, which only ever denies more).
 */
function attachDeviceFilter(dir: string, prog: number): void {
  const cg = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const old = queryPrograms(cg, BPF_CGROUP_DEVICE);
    attachProgram(cg, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI);
    for (const id of old) {
      const fd = programFdById(id);
      try {
        detachProgram(cg, fd, BPF_CGROUP_DEVICE);
      } finally {
        closeSync(fd);
      }
    }
  } finally {
    closeSync(cg);
  }
}
