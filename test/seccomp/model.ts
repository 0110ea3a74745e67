/**
 * Test-only model of seccomp profiles: a seeded generator of random profiles and system calls,
 * and `meaning()`, the decision runc + libseccomp intend for a profile, evaluated straight from
 * its rules. Shared by test/seccomp/differential.test.ts (a third opinion next to libseccomp) and
 * test/unit/seccomp.test.ts (a property test of Moat's code generator that needs no libseccomp).
 */
import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  X32_SYSCALL_BIT,
  syscallNumber,
  type SeccompArch,
  type SeccompInput,
} from '../../src/seccomp/index.js';
import type { SeccompSpec } from '../../src/spec/schema.js';

/** The x86 ABIs, in the order tests list them. */
export const ARCHES: SeccompArch[] = ['x86_64', 'x86', 'x32'];

/** Socket and SysV IPC calls that i386 also reaches through socketcall(2) (102) or ipc(2) (117): [call, operation]. */
export const MUX: ReadonlyMap<string, readonly [number, number]> = new Map<string, readonly [number, number]>([
  ...['socket', 'bind', 'connect', 'listen', 'accept', 'getsockname', 'getpeername', 'socketpair', 'send', 'recv',
    'sendto', 'recvfrom', 'shutdown', 'setsockopt', 'getsockopt', 'sendmsg', 'recvmsg', 'accept4', 'recvmmsg',
    'sendmmsg'].map((name, i) => [name, [102, i + 1]] as const),
  ...([['semop', 1], ['semget', 2], ['semctl', 3], ['semtimedop', 4], ['msgsnd', 11], ['msgrcv', 12], ['msgget', 13],
    ['msgctl', 14], ['shmat', 21], ['shmdt', 22], ['shmget', 23], ['shmctl', 24]] as const).map(([name, op]) => [name, [117, op]] as const),
]);
/** The names of `MUX`. */
export const MUX_NAMES = new Set(MUX.keys());

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** 2^64 - 1. */
export const U64 = (1n << 64n) - 1n;

/** Random choices drawn from a PRNG. */
export class Gen {
  constructor(readonly next: () => number) {}
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    const v = items[this.int(items.length)];
    if (v === undefined) throw new Error('pick from an empty list');
    return v;
  }
  u32(): bigint {
    return BigInt(this.int(0x100000000));
  }
  u64(): bigint {
    return (this.u32() << 32n) | this.u32();
  }
  /** A 64-bit value a JSON number (a double) carries exactly, biased to boundaries. */
  exactValue(): bigint {
    const v = this.chance(0.6) ? this.pick(BOUNDARIES) : this.chance(0.5) ? this.u32() : this.u64();
    const exact = BigInt(Number(v));
    return exact > U64 ? 0xfffffffffffff800n : exact;
  }
}

/** Values near the edges of 32- and 64-bit comparisons; all exact as doubles. */
export const BOUNDARIES = [
  0n, 1n, 2n, 7n, 40n, 0x7fn, 0xffn, 0x100n, 0xffffn, 0x7fffffffn, 0x80000000n, 0xfffffffen, 0xffffffffn,
  0x100000000n, 0x100000001n, 0x1ffffffffn, 0x200000000n, 0xffffffff00000000n, 0x8000000000000000n,
  0x7fffffff00000000n, 0xfffffffffffff800n, (1n << 53n) - 1n, 1n << 53n, 0x7e020000n, 0x10000000n,
];
const MASKS = [0n, 1n, 0xffn, 0x7e020000n, 0xffff0000n, 0xffffffffn, 0xffffffff00000000n, 0x8000000000000000n, 0x100000000n, 0xff000000ff000000n];

const ACTION_NAMES = ['SCMP_ACT_KILL', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO', 'SCMP_ACT_TRACE', 'SCMP_ACT_LOG', 'SCMP_ACT_ALLOW'];
/** The OCI comparison operators. */
export const OPS = ['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ'];

/** One entry of `linux.seccomp.syscalls`. */
export type Syscall = NonNullable<SeccompSpec['syscalls']>[number];
/** One argument condition of a syscall rule. */
export type Arg = NonNullable<Syscall['args']>[number];
interface Action {
  action: string;
  errnoRet?: number;
}

function randomAction(g: Gen): Action {
  const action = g.pick(ACTION_NAMES);
  // libseccomp accepts ERRNO data up to 4094, TRACE data up to 65535.
  if (action === 'SCMP_ACT_ERRNO' && g.chance(0.7)) return { action, errnoRet: g.pick([0, 1, 13, 38, 95, 4094, g.int(4095)]) };
  if (action === 'SCMP_ACT_TRACE' && g.chance(0.7)) return { action, errnoRet: g.pick([0, 1, 4095, 65535, g.int(65536)]) };
  return { action };
}

/** A key identifying what an action compiles to, so that "different actions" means different returns. */
function actionKey(a: Action): string {
  const kill = a.action === 'SCMP_ACT_KILL' ? 'SCMP_ACT_KILL_THREAD' : a.action;
  const data = kill === 'SCMP_ACT_ERRNO' || kill === 'SCMP_ACT_TRACE' ? (a.errnoRet ?? 1) : 0;
  return `${kill}/${data}`;
}

function randomArg(g: Gen, index: number): Arg {
  const op = g.pick(OPS);
  if (op === 'SCMP_CMP_MASKED_EQ') {
    const mask = g.chance(0.7) ? g.pick(MASKS) : g.exactValue();
    const datum = g.chance(0.5) ? 0n : g.chance(0.5) ? mask : g.exactValue();
    return { index, op, value: Number(mask), valueTwo: Number(datum) };
  }
  const arg: Arg = { index, op, value: Number(g.exactValue()) };
  if (g.chance(0.2)) arg.valueTwo = Number(g.exactValue()); // ignored by every operator but MASKED_EQ
  return arg;
}

function randomArgs(g: Gen, count: number, avoid: Set<number>, allowRepeat: boolean): Arg[] {
  const args: Arg[] = [];
  const used = new Set(avoid);
  for (let i = 0; i < count; i++) {
    let index = g.int(6);
    if (!allowRepeat) {
      const free = [0, 1, 2, 3, 4, 5].filter((n) => !used.has(n));
      if (free.length === 0) break;
      index = g.pick(free);
    }
    used.add(index);
    args.push(randomArg(g, index));
  }
  return args;
}

/**
 * A random profile whose meaning libseccomp and Moat agree on (see the header): per group of
 * names, one unconditional rule (maybe with conditional rules around it, which it overrides),
 * or conditional rules with one action, or conditional rules with different actions that pin
 * one argument to distinct values.
 */
export function randomProfile(g: Gen, pool: string[], size: number): SeccompSpec {
  const def = randomAction(g);
  const architectures: string[] = [];
  if (g.chance(0.5)) architectures.push('SCMP_ARCH_X86_64');
  if (g.chance(0.6)) architectures.push('SCMP_ARCH_X86');
  if (g.chance(0.6)) architectures.push('SCMP_ARCH_X32');
  if (g.chance(0.2)) architectures.push('SCMP_ARCH_AARCH64');
  const hasX86 = architectures.includes('SCMP_ARCH_X86');
  const syscalls: Syscall[] = [];
  const free = [...pool];
  const take = () => free.splice(g.int(free.length), 1)[0];
  // Actions are drawn from a few per profile so that rules equal to the default occur often.
  const palette = [def, randomAction(g), randomAction(g), randomAction(g)];
  const action = () => (g.chance(0.8) ? g.pick(palette) : randomAction(g));
  for (let group = 0; group < size && free.length > 0; group++) {
    const names: string[] = [];
    const want = 1 + (g.chance(0.3) ? g.int(3) : 0);
    for (let i = 0; i < want && free.length > 0; i++) {
      const name = take();
      if (name !== undefined) names.push(name);
    }
    const muxed = hasX86 && names.some((n) => MUX_NAMES.has(n));
    const muxer = hasX86 && names.some((n) => n === 'socketcall' || n === 'ipc');
    const mode = muxer ? 'always' : g.pick(['always', 'same', 'same', 'disjoint', 'disjoint']);
    const entry = (a: Action, args: Arg[]): Syscall => ({ names, ...a, ...(args.length > 0 || g.chance(0.2) ? { args } : {}) });
    if (mode === 'always') {
      const always = action();
      const rules = [entry(always, [])];
      // Conditional rules next to an unconditional one are overridden by it, in any order; on
      // i386 a multiplexed call's unconditional rule becomes conditional, so none there. An
      // unconditional rule equal to the default is dropped and would not override anything.
      // Conditional rules before it share one action: libseccomp merges them before it sees the
      // unconditional rule, and refuses (EEXIST) some conflicting merges.
      if (!muxed && !muxer && actionKey(always) !== actionKey(def)) {
        const early = action();
        for (let i = g.int(3); i > 0; i--) {
          const first = g.chance(0.5);
          const cond = entry(first ? early : action(), randomArgs(g, 1 + g.int(3), new Set(), g.chance(0.2)));
          if (first) rules.unshift(cond);
          else rules.push(cond);
        }
      }
      syscalls.push(...rules);
    } else if (mode === 'same') {
      const a = action();
      for (let i = 1 + g.int(3); i > 0; i--) syscalls.push(entry(a, randomArgs(g, 1 + g.int(3), new Set(), g.chance(0.25))));
    } else {
      // The pinned argument cannot be 0 for a multiplexed call: on i386 libseccomp replaces
      // argument 0 with the socketcall/ipc operation number.
      const key = muxed ? 1 + g.int(5) : g.int(6);
      const seen = new Set<string>();
      const lows = new Set<bigint>();
      for (let i = 2 + g.int(2); i > 0; i--) {
        const a = action();
        if (seen.has(actionKey(a))) continue;
        seen.add(actionKey(a));
        let v = g.exactValue();
        while (lows.has(v & 0xffffffffn)) v = BigInt(g.int(1000));
        lows.add(v & 0xffffffffn);
        const pin: Arg = { index: key, op: 'SCMP_CMP_EQ', value: Number(v) };
        syscalls.push(entry(a, [pin, ...randomArgs(g, g.int(3), new Set([key]), false)]));
      }
    }
  }
  if (g.chance(0.3)) syscalls.push({ names: ['not_a_syscall'], action: 'SCMP_ACT_ALLOW' });
  // Shuffle the groups' entries among each other; order only matters within a group.
  return {
    defaultAction: def.action,
    ...(def.errnoRet !== undefined ? { defaultErrnoRet: def.errnoRet } : {}),
    ...(architectures.length > 0 ? { architectures } : {}),
    syscalls,
  };
}

/** Random system calls aimed at the profile's syscalls, argument values and ABI boundaries. */
export function randomInputs(g: Gen, profile: SeccompSpec, count: number): SeccompInput[] {
  const numbers: Record<SeccompArch, number[]> = { x86_64: [], x86: [102, 117], x32: [] };
  const values: bigint[] = [];
  for (const sc of profile.syscalls ?? []) {
    for (const name of sc.names) {
      for (const arch of ARCHES) {
        const nr = syscallNumber(arch, name);
        if (nr !== undefined) numbers[arch].push(nr, nr + 1, nr - 1);
      }
    }
    for (const a of sc.args ?? []) {
      for (const v of [BigInt(a.value), BigInt(a.valueTwo ?? 0)]) {
        values.push(v, v + 1n, v - 1n, v & 0xffffffffn, v >> 32n, (v & 0xffffffffn) << 32n, v | 0xffffffff00000000n);
      }
      // Values that match a mask exactly in some bits and differ elsewhere.
      const datum = BigInt(a.valueTwo ?? 0) & BigInt(a.value);
      values.push(datum, datum | (g.u64() & ~BigInt(a.value)), datum ^ (1n << BigInt(g.int(64))));
    }
  }
  const arg = (): bigint => {
    const r = g.next();
    let v: bigint;
    if (r < 0.55 && values.length > 0) v = g.pick(values);
    else if (r < 0.7) v = g.pick(BOUNDARIES);
    else if (r < 0.8) v = BigInt(g.int(64));
    else if (r < 0.9) v = g.u32();
    else v = g.u64();
    return BigInt.asUintN(64, v);
  };
  const inputs: SeccompInput[] = [];
  for (let i = 0; i < count; i++) {
    const r = g.next();
    let arch: number;
    let nr: number;
    if (r < 0.45) {
      arch = AUDIT_ARCH_X86_64;
      nr = g.chance(0.8) && numbers.x86_64.length > 0 ? g.pick(numbers.x86_64) : g.int(600);
    } else if (r < 0.65) {
      arch = AUDIT_ARCH_X86_64; // x32 calls, and x86_64 calls with bit 30 set
      nr = (g.chance(0.8) && numbers.x32.length > 0 ? g.pick(numbers.x32) : X32_SYSCALL_BIT + g.int(600)) >>> 0;
    } else if (r < 0.9) {
      arch = AUDIT_ARCH_I386;
      nr = g.chance(0.8) ? g.pick(numbers.x86) : g.int(600);
    } else {
      arch = g.pick([0xc00000b7 /* aarch64 */, 0x40000028 /* arm */, 0, 0xffffffff, AUDIT_ARCH_X86_64 ^ 1, g.u32() ? g.int(0x100000000) : 0]);
      nr = g.int(600);
    }
    if (g.chance(0.04)) nr = g.pick([0xffffffff, 0x3fffffff, 0x40000000, 0x7fffffff, 0x80000000, g.int(0x100000000)]);
    inputs.push({ nr: nr >>> 0, arch: arch >>> 0, ip: g.u64(), args: [arg(), arg(), arg(), arg(), arg(), arg()] });
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// The profile's meaning, evaluated directly (an oracle independent of both code generators)
// ---------------------------------------------------------------------------------------------

const RET: Record<string, number> = {
  SCMP_ACT_KILL: 0, SCMP_ACT_KILL_THREAD: 0, SCMP_ACT_KILL_PROCESS: 0x80000000, SCMP_ACT_TRAP: 0x00030000,
  SCMP_ACT_ERRNO: 0x00050000, SCMP_ACT_TRACE: 0x7ff00000, SCMP_ACT_LOG: 0x7ffc0000, SCMP_ACT_ALLOW: 0x7fff0000,
};
/** The SECCOMP_RET_* value runc gives an action name and errnoRet. */
export function retOf(action: string, errnoRet: number | undefined): number {
  const base = RET[action];
  if (base === undefined) throw new Error(`unknown action ${action}`);
  const data = action === 'SCMP_ACT_ERRNO' || action === 'SCMP_ACT_TRACE' ? (errnoRet ?? 1) : 0;
  return (base | data) >>> 0;
}

/**
 * What runc + libseccomp mean by `profile` for one call, straight from the rules: pick the ABI
 * (or the bad-arch/default answer), collect the rules for the call in profile order (i386 socket
 * and IPC rules also for socketcall/ipc with argument 0 pinned; runc's split of rules that test an
 * argument twice), cut values to 32 bits on i386/x32 and drop always-true masked tests; then the
 * first unconditional rule decides, else the first conditional rule that holds, else the default.
 */
export function meaning(profile: SeccompSpec, data: SeccompInput): number {
  const def = retOf(profile.defaultAction, profile.defaultErrnoRet);
  const listed = new Set(profile.architectures ?? []);
  let abi: SeccompArch;
  if (data.arch === AUDIT_ARCH_X86_64) {
    if (data.nr >= X32_SYSCALL_BIT) {
      if (!listed.has('SCMP_ARCH_X32')) return data.nr === 0xffffffff ? def : 0;
      abi = 'x32';
    } else abi = 'x86_64';
  } else if (data.arch === AUDIT_ARCH_I386 && listed.has('SCMP_ARCH_X86')) abi = 'x86';
  else return 0; // SECCOMP_RET_KILL_THREAD, libseccomp's bad-arch action
  const cut = abi === 'x86_64' ? U64 : 0xffffffffn;
  const rules: { ret: number; conds: Arg[] }[] = [];
  for (const sc of profile.syscalls ?? []) {
    const ret = retOf(sc.action, sc.errnoRet);
    if (ret === def) continue;
    const args = sc.args ?? [];
    const split = new Set(args.map((a) => a.index)).size !== args.length;
    const sets = split ? args.map((a) => [a]) : [args];
    for (const name of sc.names) {
      const mux = abi === 'x86' ? MUX.get(name) : undefined;
      for (const conds of sets) {
        if (mux !== undefined && mux[0] === data.nr) {
          rules.push({ ret, conds: [{ index: 0, op: 'SCMP_CMP_EQ', value: mux[1] }, ...conds.filter((c) => c.index !== 0)] });
        }
        if (syscallNumber(abi, name) === data.nr) rules.push({ ret, conds });
      }
    }
  }
  const live = rules.map((r) => ({
    ret: r.ret,
    conds: r.conds.filter((c) => !(c.op === 'SCMP_CMP_MASKED_EQ' && (BigInt(c.value) & cut) === 0n)),
  }));
  const always = live.find((r) => r.conds.length === 0);
  if (always !== undefined) return always.ret;
  const holds = (c: Arg): boolean => {
    const x = (data.args[c.index] ?? 0n) & cut;
    const v = BigInt(c.value) & cut;
    switch (c.op) {
      case 'SCMP_CMP_NE': return x !== v;
      case 'SCMP_CMP_LT': return x < v;
      case 'SCMP_CMP_LE': return x <= v;
      case 'SCMP_CMP_EQ': return x === v;
      case 'SCMP_CMP_GE': return x >= v;
      case 'SCMP_CMP_GT': return x > v;
      case 'SCMP_CMP_MASKED_EQ': return (x & v) === (BigInt(c.valueTwo ?? 0) & v);
      default: throw new Error(`unknown operator ${c.op}`);
    }
  };
  return live.find((r) => r.conds.every(holds))?.ret ?? def;
}
