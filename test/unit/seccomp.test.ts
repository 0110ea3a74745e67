import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ConfigError } from '../../src/errors.js';
import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  BPF_MAXINSNS,
  SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_NEW_LISTENER,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
  X32_SYSCALL_BIT,
  compileSeccomp,
  defaultSeccompProfile,
  describeAction,
  disassemble,
  isKnownSyscall,
  isSeccompDisabled,
  runFilter,
  syscallName,
  syscallNames,
  syscallNumber,
  type SeccompArch,
} from '../../src/seccomp/index.js';
import {
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_KILL_THREAD,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRAP,
  SECCOMP_RET_USER_NOTIF,
} from '../../src/seccomp/bpf.js';
import { DEFAULT_ALLOWED_SYSCALLS, DEFAULT_DENIED_SYSCALLS } from '../../src/seccomp/default.js';
import type { SeccompSpec } from '../../src/spec/schema.js';
import { ARCHES, Gen, MUX_NAMES, meaning, prng, randomInputs, randomProfile } from '../seccomp/model.js';

const ALLOW = SECCOMP_RET_ALLOW;
const LOG = SECCOMP_RET_LOG;
const KILL_THREAD = SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS = SECCOMP_RET_KILL_PROCESS;
const TRAP = SECCOMP_RET_TRAP;
const NOTIFY = SECCOMP_RET_USER_NOTIF;
const errno = (e: number) => SECCOMP_RET_ERRNO | e;
const trace = (d: number) => 0x7ff00000 | d;
const EPERM = 1;
const ENOSYS = 38;

type Syscall = NonNullable<SeccompSpec['syscalls']>[number];

/** Compiles a profile, failing the test on any warning unless `warnings` collects them. */
function compile(profile: SeccompSpec, warnings?: string[]): Buffer {
  return compileSeccomp(profile, {
    warn: (m) => {
      if (warnings === undefined) assert.fail(`unexpected warning: ${m}`);
      warnings.push(m);
    },
  }).filter;
}

/** The decision of `filter` for syscall `name` of `abi` with the given arguments. */
function decide(filter: Buffer, abi: SeccompArch, name: string, args: (bigint | number)[] = []): number {
  const nr = syscallNumber(abi, name);
  assert.ok(nr !== undefined, `${abi} has no ${name}`);
  return runFilter(filter, { nr, arch: abi === 'x86' ? AUDIT_ARCH_I386 : AUDIT_ARCH_X86_64, args: args.map(BigInt) });
}

const act = (ret: number) => describeAction(ret);

/** Asserts a ConfigError with exactly this path. */
function throwsAt(fn: () => unknown, path: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.path, path);
    if (message) assert.match(err.problem, message);
    return true;
  });
}

test('syscall tables: x86_64, i386 and x32 numbers, including the newest syscalls', () => {
  assert.equal(syscallNumber('x86_64', 'read'), 0);
  assert.equal(syscallNumber('x86_64', 'openat'), 257);
  assert.equal(syscallNumber('x86_64', 'clone3'), 435);
  for (const [name, nr] of [['cachestat', 451], ['fchmodat2', 452], ['map_shadow_stack', 453], ['futex_wake', 454],
    ['lsm_get_self_attr', 459], ['mseal', 462], ['setxattrat', 463], ['file_setattr', 469], ['listns', 470]] as const) {
    assert.equal(syscallNumber('x86_64', name), nr, name);
  }
  assert.equal(syscallNumber('x86_64', 'uretprobe'), 335);
  assert.equal(syscallNumber('x86', 'read'), 3);
  assert.equal(syscallNumber('x86', 'socketcall'), 102);
  assert.equal(syscallNumber('x86', 'socket'), 359);
  assert.equal(syscallNumber('x86', 'mseal'), 462);
  assert.equal(syscallNumber('x86', 'uretprobe'), undefined); // x86_64 only
  assert.equal(syscallNumber('x86_64', '_llseek'), undefined);
  // x32: common numbers with bit 30, the 512..547 range, no "64"-only calls.
  assert.equal(syscallNumber('x32', 'read'), X32_SYSCALL_BIT);
  assert.equal(syscallNumber('x32', 'rt_sigaction'), (X32_SYSCALL_BIT | 512) >>> 0);
  assert.equal(syscallNumber('x32', 'pwritev2'), (X32_SYSCALL_BIT | 547) >>> 0);
  assert.equal(syscallNumber('x32', 'map_shadow_stack'), undefined);
  assert.equal(syscallNumber('x32', 'mseal'), (X32_SYSCALL_BIT | 462) >>> 0);
  assert.equal(syscallName('x86_64', 13), 'rt_sigaction');
  assert.equal(syscallName('x32', (X32_SYSCALL_BIT | 13) >>> 0), undefined);
  assert.ok(isKnownSyscall('_newselect') && !isKnownSyscall('breakpoint'));
  // Names and numbers are one-to-one per ABI.
  for (const abi of ['x86_64', 'x86', 'x32'] as const) {
    const names = syscallNames(abi);
    const numbers = new Set(names.map((n) => syscallNumber(abi, n)));
    assert.equal(numbers.size, names.length, abi);
  }
});

test('every action, with errnoRet as errno or trace data and EPERM when absent', () => {
  const cases: [Syscall, number][] = [
    [{ names: ['getpid'], action: 'SCMP_ACT_ALLOW' }, ALLOW],
    [{ names: ['getpid'], action: 'SCMP_ACT_ERRNO' }, errno(EPERM)],
    [{ names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 22 }, errno(22)],
    [{ names: ['getpid'], action: 'SCMP_ACT_ERRNO', errnoRet: 0 }, errno(0)],
    [{ names: ['getpid'], action: 'SCMP_ACT_KILL' }, KILL_THREAD],
    [{ names: ['getpid'], action: 'SCMP_ACT_KILL_THREAD' }, KILL_THREAD],
    [{ names: ['getpid'], action: 'SCMP_ACT_KILL_PROCESS' }, KILL_PROCESS],
    [{ names: ['getpid'], action: 'SCMP_ACT_TRAP' }, TRAP],
    [{ names: ['getpid'], action: 'SCMP_ACT_TRACE' }, trace(EPERM)],
    [{ names: ['getpid'], action: 'SCMP_ACT_TRACE', errnoRet: 0xbeef }, trace(0xbeef)],
    [{ names: ['getpid'], action: 'SCMP_ACT_LOG' }, LOG],
    [{ names: ['getpid'], action: 'SCMP_ACT_ALLOW', errnoRet: 5 }, ALLOW], // errnoRet ignored
  ];
  for (const [rule, expected] of cases) {
    const filter = compile({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 99, syscalls: [rule] });
    assert.equal(act(decide(filter, 'x86_64', 'getpid')), act(expected), JSON.stringify(rule));
    assert.equal(act(decide(filter, 'x86_64', 'getppid')), act(errno(99)), 'the default applies elsewhere');
  }
  const notify = compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/agent.sock', listenerMetadata: 'x', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_NOTIFY' }] });
  assert.equal(act(decide(notify.filter, 'x86_64', 'mkdir')), act(NOTIFY));
  assert.equal(notify.notify, true);
  assert.equal(notify.flags, SECCOMP_FILTER_FLAG_NEW_LISTENER);
  assert.equal(notify.listenerPath, '/run/agent.sock');
  assert.equal(notify.listenerMetadata, 'x');
});

test('default action and defaultErrnoRet (EPERM when absent, like runc)', () => {
  const defaults: [Partial<SeccompSpec>, number][] = [
    [{ defaultAction: 'SCMP_ACT_ERRNO' }, errno(EPERM)],
    [{ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: ENOSYS }, errno(ENOSYS)],
    [{ defaultAction: 'SCMP_ACT_TRACE' }, trace(EPERM)],
    [{ defaultAction: 'SCMP_ACT_KILL_PROCESS' }, KILL_PROCESS],
    [{ defaultAction: 'SCMP_ACT_LOG' }, LOG],
  ];
  for (const [d, expected] of defaults) {
    const filter = compile({ defaultAction: 'SCMP_ACT_ALLOW', ...d, syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] });
    assert.equal(act(decide(filter, 'x86_64', 'write')), act(expected));
    assert.equal(runFilter(filter, { nr: 999, arch: AUDIT_ARCH_X86_64, args: [] }), expected, 'unassigned numbers too');
  }
  // A profile without rules is just the default (after the arch check).
  const empty = compile({ defaultAction: 'SCMP_ACT_LOG' });
  assert.equal(runFilter(empty, { nr: 0, arch: AUDIT_ARCH_X86_64, args: [] }), LOG);
  assert.equal(runFilter(empty, { nr: 0, arch: AUDIT_ARCH_I386, args: [] }), KILL_THREAD);
});

const U64 = (1n << 64n) - 1n;
const V = 0x100000005n; // a value with both halves set
const PROBES = [0n, 4n, 5n, 6n, V - 1n, V, V + 1n, 0xffffffffn, 0x100000000n, 0x200000005n, 0xffffffff00000005n, U64, 0x8000000000000000n];

test('each operator compares full 64-bit values on x86_64 (high half included)', () => {
  const ops: [string, (x: bigint) => boolean][] = [
    ['SCMP_CMP_EQ', (x) => x === V],
    ['SCMP_CMP_NE', (x) => x !== V],
    ['SCMP_CMP_LT', (x) => x < V],
    ['SCMP_CMP_LE', (x) => x <= V],
    ['SCMP_CMP_GT', (x) => x > V],
    ['SCMP_CMP_GE', (x) => x >= V],
  ];
  for (const [op, holds] of ops) {
    const filter = compile({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['lseek'], action: 'SCMP_ACT_ERRNO', args: [{ index: 1, value: Number(V), op }] }] });
    for (const x of PROBES) {
      assert.equal(act(decide(filter, 'x86_64', 'lseek', [3, x])), act(holds(x) ? errno(EPERM) : ALLOW), `${op} ${x.toString(16)}`);
    }
  }
});

test('SCMP_CMP_MASKED_EQ: (arg & value) == valueTwo, on both halves; a zero mask always holds', () => {
  const masks: [bigint, bigint][] = [
    [0xffn, 0x12n],
    [0xff00000000000000n, 0x1200000000000000n],
    [0xf0000000000000f0n, 0x10000000000000f0n],
    [0x7e020000n, 0n],
    [0xffffffff00000000n, 0n],
  ];
  for (const [mask, datum] of masks) {
    const filter = compile({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['ioctl'], action: 'SCMP_ACT_ERRNO', args: [{ index: 2, value: Number(mask), valueTwo: Number(datum), op: 'SCMP_CMP_MASKED_EQ' }] }] });
    for (const x of [...PROBES, datum, datum | 0x0f0f0f0f0f0f0f0fn, datum ^ 1n, datum ^ (1n << 63n), mask, ~mask & U64]) {
      const expected = (x & mask) === (datum & mask) ? errno(EPERM) : ALLOW;
      assert.equal(act(decide(filter, 'x86_64', 'ioctl', [0, 0, x])), act(expected), `mask ${mask.toString(16)} x ${x.toString(16)}`);
    }
  }
  // Mask 0: the test is always true, so the rule is unconditional.
  const zero = compile({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['ioctl'], action: 'SCMP_ACT_LOG', args: [{ index: 2, value: 0, valueTwo: 5, op: 'SCMP_CMP_MASKED_EQ' }] }] });
  assert.equal(decide(zero, 'x86_64', 'ioctl', [0, 0, 77]), LOG);
});

test('arguments of one rule are ANDed, rules for one syscall are ORed', () => {
  const filter = compile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [
      { names: ['kill'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }, { index: 1, value: 9, op: 'SCMP_CMP_EQ' }] },
      { names: ['kill'], action: 'SCMP_ACT_ERRNO', args: [{ index: 1, value: 15, op: 'SCMP_CMP_EQ' }] },
    ],
  });
  assert.equal(decide(filter, 'x86_64', 'kill', [1, 9]), errno(EPERM));
  assert.equal(decide(filter, 'x86_64', 'kill', [2, 9]), ALLOW, 'AND: arg 0 differs');
  assert.equal(decide(filter, 'x86_64', 'kill', [1, 8]), ALLOW, 'AND: arg 1 differs');
  assert.equal(decide(filter, 'x86_64', 'kill', [7, 15]), errno(EPERM), 'OR: the second rule');
});

test('runc quirk: a rule testing one argument twice is split into ORed rules (with a warning)', () => {
  const warnings: string[] = [];
  const filter = compile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [{ names: ['kill'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 10, op: 'SCMP_CMP_GT' }, { index: 0, value: 20, op: 'SCMP_CMP_LT' }] }],
  }, warnings);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0] ?? '', /syscalls\[0\]\.args: argument 0 is tested more than once.*ORed/);
  // (a0 > 10) OR (a0 < 20): everything matches, not just 11..19.
  for (const x of [0, 5, 15, 25, 1000]) assert.equal(decide(filter, 'x86_64', 'kill', [x]), errno(EPERM), String(x));
});

test('the first unconditional rule for a syscall wins over conditional ones, before or after it', () => {
  const filter = compile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [
      { names: ['write'], action: 'SCMP_ACT_LOG', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }] },
      { names: ['write'], action: 'SCMP_ACT_ERRNO', errnoRet: 5 },
      { names: ['write'], action: 'SCMP_ACT_TRAP' },
      { names: ['write'], action: 'SCMP_ACT_KILL', args: [{ index: 0, value: 2, op: 'SCMP_CMP_EQ' }] },
    ],
  });
  for (const fd of [0, 1, 2]) assert.equal(decide(filter, 'x86_64', 'write', [fd]), errno(5));
});

test('a rule whose action equals the default is dropped, as runc does', () => {
  const base: SeccompSpec = { defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 38, syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] };
  const withRedundant: SeccompSpec = {
    ...base,
    syscalls: [
      { names: ['read'], action: 'SCMP_ACT_ALLOW' },
      { names: ['write'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
      // Dropped too: with it gone, the conditional rule for read below is the only one left.
      { names: ['mmap'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 },
    ],
  };
  assert.deepEqual(compile(withRedundant), compile(base));
  // A different errno is a different action and is kept.
  const kept = compile({ ...base, syscalls: [{ names: ['write'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }] });
  assert.equal(decide(kept, 'x86_64', 'write'), errno(1));
});

test('architecture check: other arches are killed, i386 only when listed, foreign names accepted', () => {
  const profile = (architectures?: string[]): SeccompSpec => ({
    defaultAction: 'SCMP_ACT_ERRNO',
    ...(architectures ? { architectures } : {}),
    syscalls: [{ names: ['getpid'], action: 'SCMP_ACT_ALLOW' }],
  });
  const nativeOnly = compile(profile());
  assert.equal(decide(nativeOnly, 'x86_64', 'getpid'), ALLOW);
  assert.equal(decide(nativeOnly, 'x86', 'getpid'), KILL_THREAD, 'i386 is a bad arch unless listed');
  assert.equal(runFilter(nativeOnly, { nr: 172, arch: 0xc00000b7 /* aarch64 */, args: [] }), KILL_THREAD);
  const withX86 = compile(profile(['SCMP_ARCH_X86', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_PPC64LE']));
  assert.equal(decide(withX86, 'x86', 'getpid'), ALLOW);
  assert.equal(decide(withX86, 'x86', 'getppid'), errno(EPERM));
  assert.equal(runFilter(withX86, { nr: 172, arch: 0xc00000b7, args: [] }), KILL_THREAD, 'foreign arches are accepted but never match');
  // Listing only a foreign arch still filters native x86_64 calls.
  const foreign = compile(profile(['SCMP_ARCH_AARCH64']));
  assert.equal(decide(foreign, 'x86_64', 'getpid'), ALLOW);
  assert.deepEqual(foreign, nativeOnly);
});

test('x32: bad arch unless listed (but nr -1 gets the default), own numbers and 32-bit comparisons when listed', () => {
  const rules: Syscall[] = [
    { names: ['read'], action: 'SCMP_ACT_ALLOW' },
    { names: ['rt_sigaction'], action: 'SCMP_ACT_LOG' },
    { names: ['lseek'], action: 'SCMP_ACT_TRAP', args: [{ index: 1, value: 0x100000005, op: 'SCMP_CMP_EQ' }] },
  ];
  const x32call = (f: Buffer, nr: number, args: bigint[] = []) => runFilter(f, { nr: (nr | X32_SYSCALL_BIT) >>> 0, arch: AUDIT_ARCH_X86_64, args });
  const without = compile({ defaultAction: 'SCMP_ACT_ERRNO', syscalls: rules });
  assert.equal(x32call(without, 0), KILL_THREAD);
  assert.equal(runFilter(without, { nr: 0xffffffff, arch: AUDIT_ARCH_X86_64, args: [] }), errno(EPERM));
  assert.equal(runFilter(without, { nr: 0x7fffffff, arch: AUDIT_ARCH_X86_64, args: [] }), KILL_THREAD);
  assert.equal(decide(without, 'x86_64', 'read'), ALLOW);

  const withX32 = compile({ defaultAction: 'SCMP_ACT_ERRNO', architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X32'], syscalls: rules });
  assert.equal(x32call(withX32, 0), ALLOW);
  assert.equal(x32call(withX32, 512), LOG, 'x32 rt_sigaction is 512');
  assert.equal(x32call(withX32, 13), errno(EPERM), '13 is x86_64-only: not rt_sigaction on x32');
  assert.equal(decide(withX32, 'x86_64', 'rt_sigaction'), LOG);
  assert.equal(x32call(withX32, 100000), errno(EPERM), 'unknown x32 numbers get the default');
  assert.equal(runFilter(withX32, { nr: 0xffffffff, arch: AUDIT_ARCH_X86_64, args: [] }), errno(EPERM));
  // x32 filters compare only the low 32 bits (libseccomp treats x32 as a 32-bit ABI).
  assert.equal(x32call(withX32, 8, [0n, 5n]), TRAP);
  assert.equal(x32call(withX32, 8, [0n, 0x700000005n]), TRAP);
  assert.equal(decide(withX32, 'x86_64', 'lseek', [0, 5]), errno(EPERM), 'x86_64 compares all 64 bits');
  assert.equal(decide(withX32, 'x86_64', 'lseek', [0, 0x100000005n]), TRAP);
});

test('i386: 32-bit comparisons, always-true masks dropped, socketcall/ipc multiplexing', () => {
  const filter = compile({
    defaultAction: 'SCMP_ACT_ERRNO',
    architectures: ['SCMP_ARCH_X86'],
    syscalls: [
      { names: ['kill'], action: 'SCMP_ACT_ALLOW', args: [{ index: 1, value: 0x100000009, op: 'SCMP_CMP_EQ' }] },
      // Mask with only high bits: always true on i386, so this becomes unconditional there.
      { names: ['mmap2'], action: 'SCMP_ACT_LOG', args: [{ index: 2, value: 0xffffffff00000000, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
      { names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 40, op: 'SCMP_CMP_NE' }, { index: 1, value: 1, op: 'SCMP_CMP_EQ' }] },
      { names: ['accept', 'semop'], action: 'SCMP_ACT_TRAP' },
    ],
  });
  assert.equal(decide(filter, 'x86', 'kill', [1, 9]), ALLOW, 'only the low 32 bits of the value count');
  assert.equal(decide(filter, 'x86', 'kill', [1, 8]), errno(EPERM));
  assert.equal(decide(filter, 'x86', 'mmap2', [0, 0, 0xdead]), LOG);
  // Direct socket(2): both conditions.
  assert.equal(decide(filter, 'x86', 'socket', [2, 1]), ALLOW);
  assert.equal(decide(filter, 'x86', 'socket', [40, 1]), errno(EPERM));
  // socketcall(SYS_SOCKET, ...): argument 0 is the call number; the rule's other conditions stay.
  assert.equal(decide(filter, 'x86', 'socketcall', [1, 1]), ALLOW);
  assert.equal(decide(filter, 'x86', 'socketcall', [1, 2]), errno(EPERM));
  assert.equal(decide(filter, 'x86', 'socketcall', [5, 0]), TRAP, 'SYS_ACCEPT (i386 has no accept syscall)');
  assert.equal(decide(filter, 'x86', 'socketcall', [2, 0]), errno(EPERM), 'SYS_BIND is not allowed');
  assert.equal(decide(filter, 'x86', 'ipc', [1]), TRAP, 'ipc(SEMOP)');
  assert.equal(decide(filter, 'x86', 'ipc', [2]), errno(EPERM));
  assert.equal(decide(filter, 'x86_64', 'accept'), TRAP);
});

test('unknown syscall names are warned about and skipped; names of other ABIs are silently applied where they exist', () => {
  const warnings: string[] = [];
  const filter = compile({
    defaultAction: 'SCMP_ACT_ERRNO',
    architectures: ['SCMP_ARCH_X86'],
    syscalls: [{ names: ['getpid', 'no_such_call', '_llseek', 'arch_prctl', 'breakpoint'], action: 'SCMP_ACT_ALLOW' }],
  }, warnings);
  assert.deepEqual(warnings, [
    'linux.seccomp.syscalls[0].names[1]: unknown system call "no_such_call" is skipped',
    'linux.seccomp.syscalls[0].names[4]: unknown system call "breakpoint" is skipped',
  ]);
  assert.equal(decide(filter, 'x86', '_llseek'), ALLOW);
  assert.equal(decide(filter, 'x86_64', 'arch_prctl'), ALLOW);
  assert.equal(decide(filter, 'x86', 'getpid'), ALLOW);
});

test('invalid profiles raise ConfigError with the path of the bad field', () => {
  const base: SeccompSpec = { defaultAction: 'SCMP_ACT_ERRNO' };
  throwsAt(() => compileSeccomp({ defaultAction: 'SCMP_ACT_NOPE' }), 'linux.seccomp.defaultAction', /unknown seccomp action "SCMP_ACT_NOPE"/);
  throwsAt(() => compileSeccomp({ defaultAction: 'SCMP_ACT_NOTIFY' }), 'linux.seccomp.defaultAction', /NOTIFY/);
  throwsAt(() => compileSeccomp({ defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 4095 }), 'linux.seccomp.defaultErrnoRet', /4094/);
  throwsAt(() => compileSeccomp({ ...base, architectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_Z80'] }), 'linux.seccomp.architectures[1]');
  throwsAt(() => compileSeccomp({ ...base, flags: ['SECCOMP_FILTER_FLAG_BOGUS'] }), 'linux.seccomp.flags[0]');
  const rules: Syscall[] = [
    { names: ['read'], action: 'SCMP_ACT_ALLOW' },
    { names: ['write'], action: 'SCMP_ACT_ALLOW' },
    { names: ['close'], action: 'SCMP_ACT_ALLOW' },
  ];
  const withRule = (rule: Syscall): SeccompSpec => ({ ...base, syscalls: [...rules, rule] });
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }, { index: 1, value: 1, op: 'SCMP_CMP_LIKE' }] })),
    'linux.seccomp.syscalls[3].args[1].op', /unknown seccomp operator "SCMP_CMP_LIKE"/);
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_DENY' })), 'linux.seccomp.syscalls[3].action');
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_ALLOW', args: [{ index: 6, value: 1, op: 'SCMP_CMP_EQ' }] })), 'linux.seccomp.syscalls[3].args[0].index');
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_ERRNO', errnoRet: 5000 })), 'linux.seccomp.syscalls[3].errnoRet');
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_TRACE', errnoRet: 70000 })), 'linux.seccomp.syscalls[3].errnoRet', /16-bit/);
  throwsAt(() => compileSeccomp(withRule({ names: ['kill', ''], action: 'SCMP_ACT_ALLOW' })), 'linux.seccomp.syscalls[3].names[1]');
  throwsAt(() => compileSeccomp(withRule({ names: ['kill'], action: 'SCMP_ACT_NOTIFY' })), 'linux.seccomp.listenerPath');
  throwsAt(() => compileSeccomp({ ...withRule({ names: ['read', 'write'], action: 'SCMP_ACT_NOTIFY' }), listenerPath: '/s' }), 'linux.seccomp.syscalls[3].names[1]', /write/);
});

test('filter flags', () => {
  const flags = (f: string[], notify = false) => compileSeccomp({
    defaultAction: 'SCMP_ACT_ALLOW',
    flags: f,
    ...(notify ? { listenerPath: '/s', syscalls: [{ names: ['mkdir'], action: 'SCMP_ACT_NOTIFY' }] } : {}),
  }, { warn: () => {} }).flags;
  assert.equal(flags([]), 0);
  assert.equal(flags(['SECCOMP_FILTER_FLAG_TSYNC']), SECCOMP_FILTER_FLAG_TSYNC);
  assert.equal(flags(['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW']), SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW);
  // The kernel refuses TSYNC with NEW_LISTENER unless TSYNC_ESRCH is set too.
  assert.equal(flags(['SECCOMP_FILTER_FLAG_TSYNC'], true), SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH | SECCOMP_FILTER_FLAG_NEW_LISTENER);
  // WAIT_KILLABLE_RECV only makes sense (and is only accepted) with NEW_LISTENER.
  assert.equal(flags(['SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV']), 0);
  assert.equal(flags(['SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV'], true), SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV | SECCOMP_FILTER_FLAG_NEW_LISTENER);
  assert.equal(compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW' }).notify, false);
});

test('long programs: jumps beyond 255 instructions land where they should', () => {
  // One rule with three arguments per syscall, each with its own errno: hundreds of chains after
  // the number search, so most jumps from the search to a chain or a return are far.
  const names = syscallNames('x86_64').filter((n) => n !== 'read').slice(0, 150);
  const syscalls: Syscall[] = names.map((name, i) => ({
    names: [name],
    action: 'SCMP_ACT_ERRNO',
    errnoRet: 100 + i,
    args: [
      { index: 0, value: i, op: 'SCMP_CMP_EQ' },
      { index: 1, value: 0x100000000 * i, op: 'SCMP_CMP_GE' },
      { index: 2, value: 0xff, valueTwo: i & 0xff, op: 'SCMP_CMP_MASKED_EQ' },
    ],
  }));
  syscalls.push({ names: ['read'], action: 'SCMP_ACT_TRAP' });
  const filter = compile({ defaultAction: 'SCMP_ACT_ALLOW', syscalls });
  const count = filter.length / 8;
  assert.ok(count > 1500, `only ${count} instructions`);
  // Some conditional jumps needed a trampoline: a `ja` or a copy of a `ret` next to them.
  const rets = disassemble(filter).filter((l) => / ret /.test(l)).length;
  assert.ok(rets > names.length + 3, `${rets} returns: no trampolines?`);
  names.forEach((name, i) => {
    assert.equal(decide(filter, 'x86_64', name, [i, 0x100000000n * BigInt(i), 0xab00 | (i & 0xff)]), errno(100 + i), name);
    assert.equal(decide(filter, 'x86_64', name, [i + 1, 0x100000000n * BigInt(i), i & 0xff]), ALLOW, `${name} arg 0`);
    if (i > 0) assert.equal(decide(filter, 'x86_64', name, [i, 0x100000000n * BigInt(i) - 1n, i & 0xff]), ALLOW, `${name} arg 1`);
    assert.equal(decide(filter, 'x86_64', name, [i, 0x100000000n * BigInt(i), (i + 1) & 0xff]), ALLOW, `${name} arg 2`);
  });
  assert.equal(decide(filter, 'x86_64', 'read'), TRAP);
  // Every conditional jump offset fits in 8 bits and every target is inside the program.
  for (let pc = 0; pc < count; pc++) {
    const code = filter.readUInt16LE(pc * 8);
    if ((code & 0x07) === 0x05 && code !== 0x05) {
      assert.ok(pc + 1 + filter.readUInt8(pc * 8 + 2) < count && pc + 1 + filter.readUInt8(pc * 8 + 3) < count);
    }
  }
});

test('property: random profiles of every size decide as their rules say (no libseccomp needed)', () => {
  // The same generator and rule evaluator as the differential test; this one checks Moat alone,
  // with many large profiles, to exercise the search trees, chains and jump layout.
  const g = new Gen(prng(4242));
  const pool = [...new Set([...ARCHES.flatMap((a) => syscallNames(a)), ...MUX_NAMES])];
  let programs = 0;
  let inputs = 0;
  for (let i = 0; i < 160; i++) {
    const profile = randomProfile(g, pool, [2, 8, 30, 90][i % 4] ?? 8);
    let filter: Buffer;
    try {
      filter = compileSeccomp(profile, { warn: () => {} }).filter;
    } catch (err) {
      if (err instanceof ConfigError && /limit of 4096/.test(err.problem)) continue;
      throw err;
    }
    programs++;
    for (const data of randomInputs(g, profile, 400)) {
      inputs++;
      const got = runFilter(filter, data);
      const want = meaning(profile, data);
      if (got !== want) {
        assert.fail(`profile ${i}, nr 0x${data.nr.toString(16)} arch 0x${data.arch.toString(16)} args ${data.args.map((a) => a.toString(16)).join(',')}: ` +
          `${act(got)} instead of ${act(want)}\n${JSON.stringify(profile)}`);
      }
    }
  }
  assert.ok(programs > 120, `only ${programs} profiles compiled`);
  console.log(`# property test: ${programs} profiles, ${inputs} inputs`);
});

test('programs over BPF_MAXINSNS are a ConfigError', () => {
  const syscalls: Syscall[] = syscallNames('x86_64').slice(0, 300).map((name, i) => ({
    names: [name],
    action: 'SCMP_ACT_ERRNO',
    args: [0, 1, 2, 3, 4, 5].map((index) => ({ index, value: 0x100000000 * i + index, op: 'SCMP_CMP_LE' })),
  }));
  throwsAt(() => compileSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', syscalls }), 'linux.seccomp.syscalls', new RegExp(`limit of ${BPF_MAXINSNS}`));
});

test('the default profile: allows what programs need, denies the dangerous syscalls with EPERM', () => {
  const profile = defaultSeccompProfile();
  assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(profile.defaultErrnoRet, ENOSYS);
  assert.deepEqual(profile.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  const filter = compile(profile); // no warnings: every name is known
  for (const name of [...DEFAULT_ALLOWED_SYSCALLS, ...DEFAULT_DENIED_SYSCALLS]) assert.ok(isKnownSyscall(name) || ['send', 'recv'].includes(name), name);
  assert.equal(new Set([...DEFAULT_ALLOWED_SYSCALLS, ...DEFAULT_DENIED_SYSCALLS]).size, DEFAULT_ALLOWED_SYSCALLS.length + DEFAULT_DENIED_SYSCALLS.length, 'no name is both allowed and denied');

  for (const abi of ['x86_64', 'x86', 'x32'] as const) {
    for (const name of ['read', 'write', 'openat', 'close', 'mmap', 'execve', 'exit_group', 'futex', 'rt_sigaction', 'getpid']) {
      if (syscallNumber(abi, name) !== undefined) assert.equal(act(decide(filter, abi, name)), 'ALLOW', `${abi} ${name}`);
    }
    // clone without namespace flags (fork: SIGCHLD; threads: CLONE_VM|CLONE_FS|...).
    assert.equal(decide(filter, abi, 'clone', [0x11]), ALLOW);
    assert.equal(decide(filter, abi, 'clone', [0x3d0f00]), ALLOW);
    for (const flag of [0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000]) {
      assert.equal(act(decide(filter, abi, 'clone', [0x11 | flag])), act(errno(EPERM)), `${abi} clone 0x${flag.toString(16)}`);
    }
    assert.equal(decide(filter, abi, 'clone3'), errno(ENOSYS), 'clone3: ENOSYS so that libc falls back to clone');
    const dangerous = ['kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module', 'bpf', 'perf_event_open',
      'userfaultfd', 'keyctl', 'add_key', 'request_key', 'ptrace', 'mount', 'umount', 'umount2', 'pivot_root', 'unshare', 'setns',
      'io_uring_setup', 'io_uring_enter', 'io_uring_register', 'open_by_handle_at', 'name_to_handle_at', 'swapon', 'swapoff',
      'reboot', 'syslog', 'acct', 'settimeofday', 'clock_settime', 'iopl', 'ioperm', 'lookup_dcookie', 'quotactl', 'nfsservctl',
      'vm86', 'vm86old', 'create_module', 'get_kernel_syms', 'query_module', 'fsopen', 'fsconfig', 'fsmount', 'move_mount',
      'open_tree', 'fspick', 'mount_setattr', 'kcmp', 'process_vm_readv', 'process_vm_writev', 'modify_ldt', 'stime'];
    let checked = 0;
    for (const name of dangerous) {
      if (syscallNumber(abi, name) === undefined) continue;
      assert.equal(act(decide(filter, abi, name)), act(errno(EPERM)), `${abi} ${name}`);
      checked++;
    }
    assert.ok(checked >= 40, `${abi}: only ${checked} dangerous syscalls checked`);
    // personality: only Docker's safe values.
    assert.equal(decide(filter, abi, 'personality', [0]), ALLOW);
    assert.equal(decide(filter, abi, 'personality', [0xffffffff]), ALLOW);
    assert.equal(decide(filter, abi, 'personality', [0x0040000 /* ADDR_NO_RANDOMIZE */]), errno(ENOSYS));
    // socket: anything but AF_VSOCK.
    assert.equal(decide(filter, abi, 'socket', [2, 1, 0]), ALLOW);
    assert.equal(decide(filter, abi, 'socket', [40, 1, 0]), errno(ENOSYS));
  }
  // i386 socket calls through socketcall(2).
  assert.equal(decide(filter, 'x86', 'socketcall', [3 /* SYS_CONNECT */]), ALLOW);
  // Numbers beyond the tables: ENOSYS.
  assert.equal(runFilter(filter, { nr: 1000, arch: AUDIT_ARCH_X86_64, args: [] }), errno(ENOSYS));
  assert.equal(runFilter(filter, { nr: 0x40000000 + 1000, arch: AUDIT_ARCH_X86_64, args: [] }), errno(ENOSYS));
  assert.equal(runFilter(filter, { nr: 1000, arch: 0xc00000b7, args: [] }), KILL_THREAD);
  const count = filter.length / 8;
  console.log(`# default profile: ${count} BPF instructions`);
  assert.ok(count < 1024, `${count} instructions`);
});

test('isSeccompDisabled: no default action and no rules means no filter, as runc reads it', () => {
  assert.equal(isSeccompDisabled({ defaultAction: '' }), true);
  assert.equal(isSeccompDisabled({ defaultAction: '', syscalls: [] }), true);
  assert.equal(isSeccompDisabled({ defaultAction: 'SCMP_ACT_ALLOW' }), false);
  assert.equal(isSeccompDisabled({ defaultAction: '', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] }), false);
});

test('large values: JSON numbers rounded up to 2^64 are read as 2^64 - 1, with a warning', () => {
  const warnings: string[] = [];
  const filter = compile({
    defaultAction: 'SCMP_ACT_ALLOW',
    syscalls: [{ names: ['read'], action: 'SCMP_ACT_LOG', args: [{ index: 0, value: 18446744073709551615, op: 'SCMP_CMP_EQ' }] }],
  }, warnings);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0] ?? '', /args\[0\]\.value: .* is read as 2\^64 - 1/);
  assert.equal(decide(filter, 'x86_64', 'read', [U64]), LOG);
  assert.equal(decide(filter, 'x86_64', 'read', [U64 - 1n]), ALLOW);
});

// ---------------------------------------------------------------------------------------------
// The interpreter itself
// ---------------------------------------------------------------------------------------------

/** Assembles `[code, jt, jf, k]` tuples into a filter. */
function asm(...insns: [number, number, number, number][]): Buffer {
  const buf = Buffer.alloc(insns.length * 8);
  insns.forEach(([code, jt, jf, k], i) => {
    buf.writeUInt16LE(code, i * 8);
    buf.writeUInt8(jt, i * 8 + 2);
    buf.writeUInt8(jf, i * 8 + 3);
    buf.writeUInt32LE(k >>> 0, i * 8 + 4);
  });
  return buf;
}

test('runFilter: classic BPF semantics and the kernel checker\'s limits', () => {
  const data = { nr: 59, arch: AUDIT_ARCH_X86_64, ip: 0x1122334455667788n, args: [0xaabbccdd00112233n] };
  // ld [nr]; st M[3]; ld #7; ldx M[3]; txa; add #1; tax; ld [args[0].hi]; jset #0x100, +1, +0; ret #0; ret A
  const prog = asm([0x20, 0, 0, 0], [0x02, 0, 0, 3], [0x00, 0, 0, 7], [0x61, 0, 0, 3], [0x87, 0, 0, 0], [0x04, 0, 0, 1], [0x07, 0, 0, 0],
    [0x20, 0, 0, 20], [0x45, 1, 0, 0x1], [0x06, 0, 0, 0], [0x16, 0, 0, 0]);
  assert.equal(runFilter(prog, data), 0xaabbccdd);
  assert.equal(runFilter(asm([0x20, 0, 0, 12], [0x16, 0, 0, 0]), data), 0x11223344, 'instruction pointer, high half');
  assert.equal(runFilter(asm([0x80, 0, 0, 0], [0x16, 0, 0, 0]), data), 64, 'ld len');
  assert.equal(runFilter(asm([0x01, 0, 0, 0], [0x20, 0, 0, 0], [0x3c, 0, 0, 0], [0x16, 0, 0, 0]), data), 0, 'division by X == 0 returns 0');
  assert.throws(() => runFilter(asm([0x05, 0, 0, 5], [0x06, 0, 0, 0]), data), /out of bounds/);
  assert.throws(() => runFilter(asm([0x15, 9, 0, 0], [0x06, 0, 0, 0]), data), /out of bounds/);
  assert.throws(() => runFilter(asm([0x20, 0, 0, 0]), data), /ran off the end/);
  assert.throws(() => runFilter(asm([0x28, 0, 0, 0], [0x06, 0, 0, 0]), data), /not allowed/, 'ld half-word');
  assert.throws(() => runFilter(asm([0x40, 0, 0, 0], [0x06, 0, 0, 0]), data), /not allowed/, 'ld indirect');
  assert.throws(() => runFilter(asm([0x20, 0, 0, 64], [0x06, 0, 0, 0]), data), /outside struct seccomp_data/);
  assert.throws(() => runFilter(asm([0x20, 0, 0, 2], [0x06, 0, 0, 0]), data), /outside struct seccomp_data/, 'unaligned');
  assert.throws(() => runFilter(asm([0x60, 0, 0, 1], [0x06, 0, 0, 0]), data), /read before it is written/);
  assert.throws(() => runFilter(Buffer.alloc(12), data), /multiple of 8/);
});

test('describeAction names every SECCOMP_RET_* value', () => {
  assert.equal(describeAction(ALLOW), 'ALLOW');
  assert.equal(describeAction(errno(13)), 'ERRNO(13)');
  assert.equal(describeAction(trace(7)), 'TRACE(7)');
  assert.equal(describeAction(TRAP), 'TRAP(0)');
  assert.equal(describeAction(KILL_PROCESS), 'KILL_PROCESS');
  assert.equal(describeAction(KILL_THREAD), 'KILL_THREAD');
  assert.equal(describeAction(LOG), 'LOG');
  assert.equal(describeAction(NOTIFY), 'USER_NOTIF');
  assert.equal(describeAction(0x12340000), 'UNKNOWN(0x12340000)');
});
