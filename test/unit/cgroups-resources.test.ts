/**
 * The `linux.resources` schema, the v1 -> v2 conversions, and the device rule model and BPF
 * program compiler (pure functions; the real cgroups are in test/integration/cgroups.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeviceState, deviceFilterProgram, ruleFromSpec, ruleString } from '../../src/cgroups/devices.js';
import type { DeviceRule } from '../../src/cgroups/devices.js';
import {
  blkioWeightToIoWeight,
  cpuSharesToWeight,
  isEmptyResources,
  parseCpuList,
  parseResources,
  swapToV2,
} from '../../src/cgroups/index.js';
import { ConfigError } from '../../src/errors.js';

/** Asserts that parseResources rejects `input` at exactly `path`. */
function rejects(input: unknown, path: string, message?: RegExp): void {
  assert.throws(
    () => parseResources(input, 'linux.resources'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.path, path);
      if (message) assert.match(err.problem, message);
      return true;
    },
  );
}

describe('parseResources', () => {
  it('accepts a full LinuxResources object and keeps unknown keys', () => {
    const r = parseResources(
      {
        devices: [{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: null, access: 'rw' }],
        memory: { limit: 2 ** 63 - 1, reservation: -1, swap: -1, kernel: 0, kernelTCP: 0, swappiness: 60, disableOOMKiller: false, useHierarchy: true, checkBeforeUpdate: true },
        cpu: { shares: 1024, quota: -1, burst: 0, period: 100000, realtimeRuntime: -1, realtimePeriod: 1000000, cpus: '0-3,5', mems: '0', idle: 1 },
        pids: { limit: -1 },
        blockIO: {
          weight: 500,
          leafWeight: 0,
          weightDevice: [{ major: 8, minor: 0, weight: 600 }],
          throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }],
          throttleWriteIOPSDevice: [{ major: 8, minor: 16, rate: 100 }],
        },
        hugepageLimits: [{ pageSize: '2MB', limit: 0 }, { pageSize: '1GB', limit: 1073741824 }],
        network: { classID: 1048577, priorities: [{ name: 'eth0', priority: 5 }] },
        rdma: { mlx5_1: { hcaHandles: 3, hcaObjects: 10000 } },
        unified: { 'memory.high': '1G', 'io.weight': 'default 100' },
        futureField: { x: 1 },
      },
      'linux.resources',
    );
    assert.equal(r.cpu?.cpus, '0-3,5');
    assert.equal((r as Record<string, unknown>).futureField !== undefined, true);
    assert.equal(isEmptyResources(r), false);
    assert.equal(isEmptyResources(parseResources({ memory: { limit: 0 }, cpu: { cpus: '' } }, 'x')), true);
  });

  it('names the exact field of each wrong value', () => {
    rejects({ memory: { limit: -2 } }, 'linux.resources.memory.limit', /-1 \(unlimited\)/);
    rejects({ memory: { swappiness: 101 } }, 'linux.resources.memory.swappiness');
    rejects({ memory: { swap: 100 } }, 'linux.resources.memory.swap', /needs a memory limit/);
    rejects({ memory: { limit: 200, swap: 100 } }, 'linux.resources.memory.swap', /below the memory limit/);
    rejects({ cpu: { cpus: 'a-b' } }, 'linux.resources.cpu.cpus');
    rejects({ cpu: { cpus: '0,,1' } }, 'linux.resources.cpu.cpus');
    rejects({ cpu: { quota: -2 } }, 'linux.resources.cpu.quota');
    rejects({ cpu: { idle: 2 } }, 'linux.resources.cpu.idle');
    rejects({ cpu: { shares: 'lots' } }, 'linux.resources.cpu.shares', /expected a non-negative integer, got string/);
    rejects({ pids: { limit: 1.5 } }, 'linux.resources.pids.limit');
    rejects({ blockIO: { weight: 5 } }, 'linux.resources.blockIO.weight');
    rejects({ blockIO: { weightDevice: [{ major: 8, weight: 100 }] } }, 'linux.resources.blockIO.weightDevice[0].minor', /missing/);
    rejects({ blockIO: { throttleReadBpsDevice: [{ major: 8, minor: 0, rate: -1 }] } }, 'linux.resources.blockIO.throttleReadBpsDevice[0].rate');
    rejects({ hugepageLimits: [{ pageSize: '2M', limit: 1 }] }, 'linux.resources.hugepageLimits[0].pageSize');
    rejects({ devices: [{ type: 'c' }] }, 'linux.resources.devices[0].allow', /missing/);
    rejects({ devices: [{ allow: true, type: 'u' }] }, 'linux.resources.devices[0].type', /unknown device type "u"/);
    rejects({ devices: [{ allow: true, access: '' }] }, 'linux.resources.devices[0].access');
    rejects({ devices: [{ allow: true, major: -3 }] }, 'linux.resources.devices[0].major');
    rejects({ network: { classID: -1 } }, 'linux.resources.network.classID');
    rejects({ unified: { 'cgroup.procs/x': '1' } }, 'linux.resources.unified["cgroup.procs/x"]');
    rejects({ unified: { nodot: '1' } }, 'linux.resources.unified.nodot');
    rejects({ unified: { 'memory.max': 5 } }, 'linux.resources.unified["memory.max"]');
    rejects([], 'linux.resources', /object/);
  });

  it('uses the prefix as given, also an empty one', () => {
    assert.throws(() => parseResources({ pids: { limit: 'x' } }, ''), (e: unknown) => e instanceof ConfigError && e.path === 'pids.limit');
  });
});

describe('conversions', () => {
  it('cpu shares to v2 weight (current runc: 2 -> 1, 1024 -> 100, 262144 -> 10000)', () => {
    assert.deepEqual([0, 1, 2, 3, 1024, 262143, 262144, 300000].map(cpuSharesToWeight), [0, 1, 1, 2, 100, 10000, 10000, 10000]);
  });

  it('blkio weight to io.weight (10 -> 1, 1000 -> 10000)', () => {
    assert.deepEqual([0, 10, 100, 500, 1000].map(blkioWeightToIoWeight), [0, 1, 910, 4950, 10000]);
  });

  it('memory+swap to v2 swap-only', () => {
    assert.equal(swapToV2(0, 0), undefined);
    assert.equal(swapToV2(0, -1), 'max');
    assert.equal(swapToV2(-1, 100), 'max');
    assert.equal(swapToV2(300, 100), '200');
    assert.equal(swapToV2(100, 100), '0');
    assert.throws(() => swapToV2(50, 100), ConfigError);
    assert.throws(() => swapToV2(50, 0), ConfigError);
  });

  it('parses cpuset lists', () => {
    assert.deepEqual(parseCpuList('0-2,5'), [0, 1, 2, 5]);
    assert.deepEqual(parseCpuList(''), []);
    assert.deepEqual(parseCpuList('3\n'), [3]);
    assert.equal(parseCpuList('2-1'), undefined);
    assert.equal(parseCpuList('1-'), undefined);
  });
});

const rule = (s: string, allow = true): DeviceRule => {
  const [type, nums, access] = s.split(' ') as ['a' | 'b' | 'c', string, string];
  const [maj, min] = nums.split(':');
  const n = (x: string | undefined) => (x === '*' || x === undefined ? -1 : Number(x));
  return { allow, type, major: n(maj), minor: n(min), access };
};

describe('DeviceState', () => {
  it('converts spec rules: missing type is a, missing access rwm, null major is a wildcard', () => {
    assert.deepEqual(ruleFromSpec({ allow: false }), { allow: false, type: 'a', major: -1, minor: -1, access: 'rwm' });
    assert.equal(ruleString(ruleFromSpec({ allow: true, type: 'c', major: 1, minor: null, access: 'wr' })), 'c 1:* rw');
  });

  it('builds a whitelist from deny-all plus allows, merging access', () => {
    const s = DeviceState.fromRules([rule('a *:* rwm', false), rule('c 1:3 r'), rule('c 1:3 w'), rule('c 1:5 rwm')]);
    assert.equal(s.defaultAllow, false);
    assert.deepEqual(s.sorted().map((e) => `${e.type} ${e.major}:${e.minor} ${e.access}`), ['c 1:3 rw', 'c 1:5 rwm']);
  });

  it('refuses to punch a hole in a wildcard exception, naming the rule index', () => {
    assert.throws(
      () => DeviceState.fromRules([rule('a *:* rwm', false), rule('c 1:* rwm'), rule('c 1:3 r', false)]),
      (e: unknown) => e instanceof ConfigError && e.path === 'linux.resources.devices[2]' && /hole/.test(e.problem),
    );
  });

  it('computes v1 writes from a fresh cgroup: deny a, then the allows', () => {
    const fresh = DeviceState.fromList('a *:* rwm\n');
    const target = DeviceState.fromRules([rule('a *:* rwm', false), rule('c 1:5 rwm'), rule('c 1:3 rwm')]);
    assert.deepEqual(fresh.transitionTo(target).map((r) => `${r.allow ? 'allow' : 'deny'} ${ruleString(r)}`), [
      'deny a *:* rwm',
      'allow c 1:3 rwm',
      'allow c 1:5 rwm',
    ]);
  });

  it('computes v1 writes between two whitelists without resetting', () => {
    const now = DeviceState.fromList('c 1:3 rwm\nc 1:5 r\n');
    const target = DeviceState.fromRules([rule('a *:* rwm', false), rule('c 1:5 rw'), rule('b 8:* m')]);
    assert.deepEqual(now.transitionTo(target).map((r) => `${r.allow ? 'allow' : 'deny'} ${ruleString(r)}`), [
      'deny c 1:3 rwm',
      'allow c 1:5 w',
      'allow b 8:* m',
    ]);
  });
});

describe('deviceFilterProgram', () => {
  /** Runs the program's logic in JS (a tiny interpreter for the opcodes it uses). */
  function run(prog: Buffer, type: number, access: number, major: number, minor: number): number {
    const ctx = [(access << 16) | type, major, minor];
    const r = new Array<number>(11).fill(0);
    for (let pc = 0; pc < prog.length / 8; pc++) {
      const code = prog[pc * 8] ?? 0;
      const regs = prog[pc * 8 + 1] ?? 0;
      const dst = regs & 0xf;
      const src = regs >> 4;
      const off = prog.readInt16LE(pc * 8 + 2);
      const imm = prog.readInt32LE(pc * 8 + 4) >>> 0;
      switch (code) {
        case 0x61: r[dst] = ctx[off / 4] ?? 0; break;
        case 0x54: r[dst] = ((r[dst] ?? 0) & imm) >>> 0; break;
        case 0x74: r[dst] = (r[dst] ?? 0) >>> imm; break;
        case 0xb4: r[dst] = imm; break;
        case 0xbc: r[dst] = r[src] ?? 0; break;
        case 0x56: if ((r[dst] ?? 0) >>> 0 !== imm) pc += off; break;
        case 0x5e: if ((r[dst] ?? 0) >>> 0 !== (r[src] ?? 0) >>> 0) pc += off; break;
        case 0x95: return r[0] ?? 0;
        default: throw new Error(`unexpected opcode ${code}`);
      }
    }
    throw new Error('fell off the end');
  }
  const CHAR = 2;
  const BLOCK = 1;
  const R = 2;
  const W = 4;
  const M = 1;

  it('allows only what a whitelist lists, with access as a subset check', () => {
    const prog = deviceFilterProgram(DeviceState.fromRules([rule('a *:* rwm', false), rule('c 1:5 rwm'), rule('c 1:3 r'), rule('b 8:* m')]));
    assert.equal(run(prog, CHAR, R | W, 1, 5), 1);
    assert.equal(run(prog, CHAR, R, 1, 3), 1);
    assert.equal(run(prog, CHAR, W, 1, 3), 0);
    assert.equal(run(prog, CHAR, R | W, 1, 3), 0);
    assert.equal(run(prog, BLOCK, M, 8, 17), 1);
    assert.equal(run(prog, BLOCK, R, 8, 17), 0);
    assert.equal(run(prog, CHAR, R, 1, 7), 0);
    assert.equal(run(prog, BLOCK, R, 1, 5), 0);
  });

  it('denies only what a blacklist lists', () => {
    const prog = deviceFilterProgram(DeviceState.fromRules([rule('a *:* rwm', true), rule('c 1:3 w', false)]));
    assert.equal(run(prog, CHAR, W, 1, 3), 0);
    assert.equal(run(prog, CHAR, R, 1, 3), 1);
    assert.equal(run(prog, CHAR, W, 1, 5), 1);
  });

  it('compares majors above 2^31 as unsigned 32-bit values', () => {
    const prog = deviceFilterProgram(DeviceState.fromRules([rule('a *:* rwm', false), rule('c 4294967295:0 r')]));
    assert.equal(run(prog, CHAR, R, 4294967295, 0), 1);
    assert.equal(run(prog, CHAR, R, 4294967294, 0), 0);
  });
});
