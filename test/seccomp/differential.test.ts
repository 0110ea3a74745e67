/**
 * Differential test of Moat's seccomp compiler against libseccomp, as runc uses it.
 *
 * test/seccomp/harness.c is built against libseccomp and compiles the same profiles the way runc
 * 1.1 does (see its header). Both BPF programs then run in Moat's interpreter on thousands of
 * system calls, and every returned SECCOMP_RET_* value (action and data) must be identical. A
 * third opinion, `meaning()`, evaluates the profile's rules directly; Moat must always agree
 * with it.
 *
 * libseccomp 2.5.4 itself generates wrong code now and then (three kinds found, see
 * `libseccompFault` and `ruleByRule`). A difference is excused only when there is proof of that
 * on the input at hand: libseccomp's program tests an accumulator holding another field on that
 * call's path, or libseccomp's own single-rule filters contradict its filter for the whole
 * profile — and Moat agrees with both the profile's meaning and those single-rule filters. The
 * excused inputs are counted and printed; every other difference fails the test.
 *
 * Profiles are generated at random (seeded: MOAT_SECCOMP_SEED=<n> replays or varies a run) within
 * the space where libseccomp's result is defined by the profile alone. What is left out, and why:
 * - Two conditional rules for one syscall with different actions that can match the same call.
 *   libseccomp then refuses the profile (EEXIST) or decides by the shape of its internal rule tree;
 *   Moat takes the first listed rule (see src/seccomp/compile.ts). Rules with different actions
 *   are generated disjoint: each pins one argument to a value of its own (differing in the low 32
 *   bits, which are all i386 and x32 filters compare).
 * - Syscalls libseccomp 2.5.4 does not know (newer than its tables): runc ignores their rules,
 *   Moat applies them, so profiles use only names both resolve identically.
 * - Foreign architectures: Moat accepts and drops them; libseccomp would add dead branches for
 *   AUDIT_ARCH values an x86_64 kernel never reports. They are left out of the harness input.
 * - runc's ENOSYS stub (runc >= 1.0.0-rc93 prepends it to libseccomp's filter): runc 1.1.5 on this
 *   host has it, Moat does not, and this test compares against plain libseccomp.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';

import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  X32_SYSCALL_BIT,
  compileSeccomp,
  defaultSeccompProfile,
  describeAction,
  disassemble,
  runFilter,
  syscallName,
  syscallNames,
  syscallNumber,
  type SeccompArch,
  type SeccompInput,
} from '../../src/seccomp/index.js';
import type { SeccompSpec } from '../../src/spec/schema.js';
import { ARCHES, Gen, MUX, MUX_NAMES, OPS, U64, meaning, prng, randomInputs, randomProfile, retOf } from './model.js';

// ---------------------------------------------------------------------------------------------
// Building the harness
// ---------------------------------------------------------------------------------------------

const here = dirname(fileURLToPath(import.meta.url));
const source = [join(here, 'harness.c'), join(here, '../../../test/seccomp/harness.c')].find((p) => existsSync(p));
const workDir = mkdtempSync(join(tmpdir(), 'moat-seccomp-'));
after(() => rmSync(workDir, { recursive: true, force: true }));
const harness = join(workDir, 'harness');

/** Builds the harness; returns why the differential tests must be skipped, or undefined. */
function buildHarness(): string | undefined {
  if (source === undefined) return 'test/seccomp/harness.c not found';
  if (!existsSync('/usr/include/seccomp.h')) {
    return 'libseccomp-dev is not installed (no /usr/include/seccomp.h): apt-get install -y libseccomp-dev';
  }
  const cc = spawnSync('cc', ['-Wall', '-Wextra', '-Werror', '-O2', '-o', harness, source, '-lseccomp'], { encoding: 'utf8' });
  if (cc.error !== undefined) return `no C compiler: ${cc.error.message}`;
  // A warning or an error in the harness itself is a test failure, not a reason to skip.
  assert.equal(cc.status, 0, `building the harness failed:\n${cc.stderr}`);
  return undefined;
}

const skip = buildHarness();
if (skip !== undefined) console.log(`# skipping the seccomp differential tests: ${skip}`);

/** Thrown when libseccomp does not finish compiling a profile (it can loop forever, see below). */
class HarnessTimeout extends Error {}

/** Runs the harness; returns stdout, or throws with its stderr (HarnessTimeout after 10 s). */
function runHarness(mode: 'bpf' | 'names' | 'numbers', input: string): Buffer {
  const r = spawnSync(harness, [mode], { input, maxBuffer: 64 << 20, timeout: 10_000, killSignal: 'SIGKILL' });
  if (r.signal === 'SIGKILL') throw new HarnessTimeout(`harness ${mode} did not finish in 10 s`);
  if (r.status !== 0) throw new Error(`harness ${mode} exited with ${r.status}: ${r.stderr.toString()}\ninput:\n${input}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// What libseccomp knows
// ---------------------------------------------------------------------------------------------

const LIBSECCOMP_ARCH: Record<SeccompArch, string> = { x86_64: 'x86_64', x86: 'x86', x32: 'x32' };

type Resolved = Record<SeccompArch, number | undefined>; // undefined: libseccomp does not know the name
let libseccompNames: Map<string, Resolved> | undefined;

/** libseccomp's number for every name in Moat's tables (and the i386 multiplexed-only names). */
function libseccompResolve(): Map<string, Resolved> {
  if (libseccompNames !== undefined) return libseccompNames;
  const names = new Set([...ARCHES.flatMap((a) => syscallNames(a)), ...MUX_NAMES]);
  const out = runHarness('names', [...names].join('\n') + '\n').toString().trim().split('\n');
  libseccompNames = new Map();
  for (const line of out) {
    const [name, ...nrs] = line.split(' ');
    if (name === undefined || nrs.length !== 3) throw new Error(`bad harness line ${line}`);
    const num = (s: string | undefined) => (s === undefined || s === 'none' ? undefined : Number(s));
    libseccompNames.set(name, { x86_64: num(nrs[0]), x86: num(nrs[1]), x32: num(nrs[2]) });
  }
  return libseccompNames;
}

/** True if Moat and libseccomp agree on `name` for every ABI, so a rule for it means the same to both. */
function usable(name: string): boolean {
  const ls = libseccompResolve().get(name);
  if (ls === undefined || ls.x86_64 === undefined) return false; // runc: unknown name, rule skipped
  return ARCHES.every((arch) => {
    const ours = syscallNumber(arch, name);
    const theirs = ls[arch];
    if (arch === 'x86' && MUX_NAMES.has(name)) return theirs !== undefined && theirs < 0; // multiplexed
    if (ours === undefined) return theirs === undefined || theirs < 0; // a pseudo syscall for libseccomp
    return theirs === ours;
  });
}

// ---------------------------------------------------------------------------------------------
// Profiles and inputs
// ---------------------------------------------------------------------------------------------

const SEED = Number(process.env.MOAT_SECCOMP_SEED ?? 20240611);
/** The harness input for a profile (foreign architectures left out, see the header). */
function harnessInput(profile: SeccompSpec, optimize: 1 | 2): string {
  const errno = (e: number | undefined) => (e === undefined ? '-' : String(e));
  const lines = [`default ${profile.defaultAction} ${errno(profile.defaultErrnoRet)}`];
  for (const arch of profile.architectures ?? []) {
    if (arch === 'SCMP_ARCH_X86') lines.push('arch x86');
    if (arch === 'SCMP_ARCH_X32') lines.push('arch x32');
  }
  lines.push(`optimize ${optimize}`);
  for (const sc of profile.syscalls ?? []) {
    const args = (sc.args ?? []).map((a) => `${a.index},${a.op},${BigInt(a.value)},${BigInt(a.valueTwo ?? 0)}`);
    for (const name of sc.names) lines.push(['rule', sc.action, errno(sc.errnoRet), name, ...args].join(' '));
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// libseccomp code generation bugs
// ---------------------------------------------------------------------------------------------

/**
 * Instructions that test the accumulator although, depending on the path taken to them, it holds
 * different fields of seccomp_data. A correct filter never does that: each test is about one
 * field. libseccomp 2.5.4 (and its master branch as of this writing) emits such code when several
 * jumps share a block but only the first one is checked for the accumulator state it expects
 * (gen_bpf.c, _gen_bpf_build_bpf: "do we need to reload the accumulator?"), e.g. on i386 for
 * `connect` with rules [a0 >= X] and [a0 != Y, a2 > 0]: the a0 >= X test is reached with a2 loaded.
 */
function staleAccumulatorTests(filter: Buffer): Set<number> {
  const n = filter.length / 8;
  const states: Set<string>[] = [...Array(n)].map(() => new Set<string>());
  states[0]?.add('none');
  const ambiguous = new Set<number>();
  for (let pc = 0; pc < n; pc++) {
    const code = filter.readUInt16LE(pc * 8);
    const jt = filter.readUInt8(pc * 8 + 2);
    const jf = filter.readUInt8(pc * 8 + 3);
    const k = filter.readUInt32LE(pc * 8 + 4);
    const inState = states[pc] ?? new Set<string>();
    const flow = (to: number, st: Set<string>) => st.forEach((x) => states[to]?.add(x));
    if ((code & 0x07) === 0x05 && code !== 0x05 && inState.size > 1) ambiguous.add(pc); // a test reads A
    if ((code & 0x07) === 0x04 && inState.size > 1) ambiguous.add(pc); // ALU reads A
    switch (code) {
      case 0x20: flow(pc + 1, new Set([`ld ${k}`])); break; // ld [k]
      case 0x54: flow(pc + 1, new Set([...inState].map((x) => `${x} & ${k}`))); break; // and #k
      case 0x05: flow(pc + 1 + k, inState); break; // ja
      case 0x06: break; // ret
      default:
        if ((code & 0x07) !== 0x05) throw new Error(`unexpected instruction 0x${code.toString(16)} in libseccomp output`);
        flow(pc + 1 + jt, inState);
        flow(pc + 1 + jf, inState);
    }
  }
  return ambiguous;
}

/**
 * Runs a libseccomp filter on one call and says why its answer cannot be trusted, if it cannot:
 * it executed a test flagged by `staleAccumulatorTests`, or it compared `seccomp_data.arch` with
 * something other than an AUDIT_ARCH value. The latter is a second libseccomp 2.5.4 bug: with
 * SCMP_ARCH_X86 and SCMP_ARCH_X32 and optimize level 1 it can drop the load of the syscall number
 * at the start of the x86_64/x32 section (e.g. rules [linkat: a4 == 0] and [_llseek]), so that the
 * arch value is tested as the syscall number and every x86_64 call gets the default action.
 */
function libseccompFault(filter: Buffer, stale: Set<number>, data: SeccompInput): string | undefined {
  const word = (off: number): number => {
    if (off === 0) return data.nr;
    if (off === 4) return data.arch;
    if (off < 16) return 0;
    const v = data.args[Math.floor((off - 16) / 8)] ?? 0n;
    return Number((off % 8 === 0 ? v : v >> 32n) & 0xffffffffn);
  };
  let a = 0;
  let source = -1; // offset of the last load
  for (let pc = 0; ; ) {
    const code = filter.readUInt16LE(pc * 8);
    const jt = filter.readUInt8(pc * 8 + 2);
    const jf = filter.readUInt8(pc * 8 + 3);
    const k = filter.readUInt32LE(pc * 8 + 4);
    const test = (code & 0x07) === 0x05 && code !== 0x05;
    if (test && stale.has(pc)) return `instruction ${pc} tests an accumulator loaded from different fields on different paths`;
    if (test && source === 4 && k !== AUDIT_ARCH_X86_64 && k !== AUDIT_ARCH_I386) return `instruction ${pc} compares the arch word with 0x${k.toString(16)}`;
    switch (code) {
      case 0x20: a = word(k); source = k; pc++; break;
      case 0x54: a = (a & k) >>> 0; pc++; break;
      case 0x05: pc += 1 + k; break;
      case 0x15: pc += 1 + (a === k ? jt : jf); break;
      case 0x25: pc += 1 + (a > k ? jt : jf); break;
      case 0x35: pc += 1 + (a >= k ? jt : jf); break;
      case 0x45: pc += 1 + ((a & k) !== 0 ? jt : jf); break;
      case 0x06: return undefined;
      default: throw new Error(`unexpected instruction 0x${code.toString(16)}`);
    }
  }
}

const singleRuleFilters = new Map<string, Buffer>();

/**
 * libseccomp's own answer for one call, assembled from filters it builds for each rule of the
 * profile alone (no rule merging involved): the first unconditional rule that applies, else the
 * action of the conditional rules that match (they share one action in generated profiles),
 * else the default. Undefined if that cannot be decided. Used to tell libseccomp's rule-merging
 * bugs from Moat's: e.g. two SCMP_ACT_LOG rules for clock_nanosleep, [a0 > 0xfffffffe,
 * a1 <= Y] and [a4 > X, a0 >= 0xffff], merge into a tree that also returns LOG for
 * a0 >= 0xffff && a1 <= Y (its range tests share a sub-tree object that the merge extends).
 */
function ruleByRule(profile: SeccompSpec, data: SeccompInput, optimize: 1 | 2): number | undefined {
  const def = retOf(profile.defaultAction, profile.defaultErrnoRet);
  const listed = new Set(profile.architectures ?? []);
  const abi: SeccompArch | undefined =
    data.arch === AUDIT_ARCH_I386 ? (listed.has('SCMP_ARCH_X86') ? 'x86' : undefined)
    : data.arch !== AUDIT_ARCH_X86_64 ? undefined
    : data.nr < X32_SYSCALL_BIT ? 'x86_64'
    : listed.has('SCMP_ARCH_X32') ? 'x32' : undefined;
  if (abi === undefined) return undefined;
  const cut = abi === 'x86_64' ? U64 : 0xffffffffn;
  const hits: { ret: number; always: boolean }[] = [];
  for (const sc of profile.syscalls ?? []) {
    const args = sc.args ?? [];
    const split = new Set(args.map((a) => a.index)).size !== args.length;
    for (const name of sc.names) {
      const muxed = abi === 'x86' && MUX.get(name)?.[0] === data.nr;
      if (!muxed && syscallNumber(abi, name) !== data.nr) continue;
      for (const set of split ? args.map((a) => [a]) : [args]) {
        const single: SeccompSpec = { ...profile, syscalls: [{ ...sc, names: [name], args: set }] };
        const key = harnessInput(single, optimize);
        let filter = singleRuleFilters.get(key);
        if (filter === undefined) {
          filter = runHarness('bpf', key);
          singleRuleFilters.set(key, filter);
        }
        const ret = runFilter(filter, data);
        const always = !muxed && set.every((c) => c.op === 'SCMP_CMP_MASKED_EQ' && (BigInt(c.value) & cut) === 0n);
        if (ret !== def) hits.push({ ret, always });
      }
    }
  }
  if (hits.length === 0) return def;
  const first = hits.find((h) => h.always);
  if (first !== undefined) return first.ret;
  return hits.every((h) => h.ret === hits[0]?.ret) ? hits[0]?.ret : undefined;
}

let compared = 0;
let libseccompBugs = 0;
const buggyProfiles = new Set<string>();
const bugKinds = new Set<string>();
const libseccompHangs = new Set<string>();
let meaningOnly = 0; // inputs of profiles libseccomp never finished: checked against `meaning` only

/** Compiles `profile` both ways and compares the decisions on `inputs`; returns a failure report or ''. */
function compare(label: string, profile: SeccompSpec, inputs: SeccompInput[], optimize: 1 | 2): string {
  const ours = compileSeccomp(profile).filter;
  const input = harnessInput(profile, optimize);
  let theirs: Buffer;
  try {
    theirs = runHarness('bpf', input);
  } catch (err) {
    if (!(err instanceof HarnessTimeout)) throw err;
    // libseccomp 2.5.4 loops forever on some profiles (runc would hang creating the container),
    // e.g. two SCMP_ACT_KILL_THREAD rules for one syscall, [a1 < 2^53 - 1, a2 != 40, a3 == 1] and
    // [a4 != X, a3 == Y, a1 < 2^53 - 1]. Only the profile's meaning is left to compare with.
    libseccompHangs.add(label);
    const wrong = inputs.filter((data) => runFilter(ours, data) !== meaning(profile, data));
    meaningOnly += inputs.length;
    return wrong.length === 0 ? '' : `${label}: Moat differs from the profile's meaning on ${wrong.length} inputs (libseccomp hangs on it)\n${input}`;
  }
  const stale = staleAccumulatorTests(theirs);
  const mismatches: string[] = [];
  for (const data of inputs) {
    compared++;
    const a = runFilter(ours, data);
    const b = runFilter(theirs, data);
    const m = meaning(profile, data);
    let problem: string | undefined;
    if (a !== m) problem = `moat ${describeAction(a)}, the profile means ${describeAction(m)} (libseccomp ${describeAction(b)})`;
    else if (a !== b) {
      let fault = libseccompFault(theirs, stale, data);
      if (fault === undefined && ruleByRule(profile, data, optimize) === a) {
        fault = 'its filter for the whole profile contradicts its filters for each rule alone (rule merging)';
      }
      if (fault !== undefined) {
        libseccompBugs++; // libseccomp's own filter is wrong on this call's path
        buggyProfiles.add(label);
        bugKinds.add(fault.replace(/^instruction \d+ /, '').replace(/0x[0-9a-f]+/, 'N'));
      } else problem = `moat ${describeAction(a)}, libseccomp ${describeAction(b)}`;
    }
    if (problem !== undefined && mismatches.length < 5) {
      const arch = data.arch === AUDIT_ARCH_I386 ? 'x86' : (data.nr & X32_SYSCALL_BIT) !== 0 ? 'x32' : 'x86_64';
      const name = syscallName(arch, data.nr) ?? '?';
      mismatches.push(
        `  arch=0x${data.arch.toString(16)} nr=0x${data.nr.toString(16)} (${name}) args=[${data.args.map((v) => '0x' + v.toString(16)).join(', ')}]: ${problem}`,
      );
    }
  }
  if (mismatches.length === 0) return '';
  return `${label}: decisions differ\n${mismatches.join('\n')}\nharness input:\n${input}\nmoat filter:\n${disassemble(ours).join('\n')}\n`;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

test('Moat\'s syscall tables agree with libseccomp wherever libseccomp knows the syscall', { skip }, () => {
  // Every number of Moat's tables, resolved back to a name by libseccomp.
  let input = '';
  const entries: [SeccompArch, number, string][] = [];
  for (const arch of ARCHES) {
    for (const name of syscallNames(arch)) {
      const nr = syscallNumber(arch, name);
      assert.ok(nr !== undefined);
      entries.push([arch, nr, name]);
      input += `${LIBSECCOMP_ARCH[arch]} ${nr}\n`;
    }
  }
  const lines = runHarness('numbers', input).toString().trim().split('\n');
  assert.equal(lines.length, entries.length);
  const newer = new Set<string>();
  let agreed = 0;
  entries.forEach(([arch, nr, name], i) => {
    const theirs = lines[i]?.split(' ')[2];
    if (theirs === 'none') newer.add(name);
    else {
      assert.equal(theirs, name, `${arch} syscall ${nr}: Moat says ${name}, libseccomp ${theirs}`);
      agreed++;
    }
  });
  // And every name libseccomp resolves to a real number has that number in Moat's table.
  for (const [name, resolved] of libseccompResolve()) {
    for (const arch of ARCHES) {
      const theirs = resolved[arch];
      if (theirs !== undefined && theirs >= 0) assert.equal(syscallNumber(arch, name), theirs, `${arch} ${name}`);
    }
  }
  assert.ok(agreed > 1000, `only ${agreed} numbers compared`);
  console.log(`# ${agreed} (abi, number) pairs agree; newer than libseccomp's tables: ${[...newer].sort().join(' ')}`);
});

test('random profiles: Moat and libseccomp make the same decision on every input', { skip }, () => {
  const g = new Gen(prng(SEED));
  const pool = [...new Set([...ARCHES.flatMap((a) => syscallNames(a)), ...MUX_NAMES])].filter(usable);
  // Make sure the i386 multiplexer paths are exercised: always offer some of them.
  const muxPool = [...MUX_NAMES, 'socketcall', 'ipc'].filter(usable);
  const failures: string[] = [];
  const before = compared;
  let profiles = 0;
  for (let i = 0; i < 40; i++) {
    const size = i % 10 === 9 ? 120 : 3 + g.int(20); // every tenth profile is large (long jumps)
    const names = [...Array(60)].map(() => g.pick(pool));
    for (let j = g.int(4); j > 0; j--) names.push(g.pick(muxPool));
    const profile = randomProfile(g, size > 60 ? pool : [...new Set(names)], size);
    const inputs = randomInputs(g, profile, 2500);
    const report = compare(`profile ${i} (seed ${SEED})`, profile, inputs, i % 3 === 2 ? 2 : 1);
    if (report) failures.push(report);
    profiles++;
  }
  console.log(`# ${profiles} random profiles, ${compared - before} inputs compared (seed ${SEED})`);
  assert.equal(failures.length, 0, failures.slice(0, 2).join('\n'));
});

test('hand-written edge profiles: same decisions', { skip }, () => {
  const g = new Gen(prng(SEED + 1));
  const before = compared;
  const profiles: SeccompSpec[] = [
    // Every operator on one 64-bit value, same action: ORed.
    {
      defaultAction: 'SCMP_ACT_ALLOW',
      architectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: OPS.map((op) => ({ names: ['read'], action: 'SCMP_ACT_ERRNO', args: [{ index: 1, op, value: 0x100000000, valueTwo: 0x100000000 }] })),
    },
    // Unconditional rule after and before conditional ones (it wins); the default repeated.
    {
      defaultAction: 'SCMP_ACT_ERRNO',
      syscalls: [
        { names: ['write'], action: 'SCMP_ACT_LOG', args: [{ index: 0, op: 'SCMP_CMP_EQ', value: 1 }] },
        { names: ['write'], action: 'SCMP_ACT_ALLOW' },
        { names: ['write'], action: 'SCMP_ACT_TRAP', args: [{ index: 0, op: 'SCMP_CMP_EQ', value: 2 }] },
        { names: ['write'], action: 'SCMP_ACT_KILL' },
        { names: ['close'], action: 'SCMP_ACT_ERRNO' },
      ],
    },
    // MASKED_EQ whose mask only covers the high half: always true on i386 and x32.
    {
      defaultAction: 'SCMP_ACT_KILL_PROCESS',
      architectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [
        { names: ['mmap', 'mmap2'], action: 'SCMP_ACT_ALLOW', args: [{ index: 2, op: 'SCMP_CMP_MASKED_EQ', value: 0xffffffff00000000, valueTwo: 0 }] },
        // Disjoint from the rule above on x86_64 (high half of argument 2 not 0); overridden by it
        // on i386 and x32, where that rule has no condition left.
        { names: ['mmap', 'mmap2'], action: 'SCMP_ACT_ERRNO', errnoRet: 22, args: [{ index: 3, op: 'SCMP_CMP_GT', value: 5 }, { index: 2, op: 'SCMP_CMP_MASKED_EQ', value: 0xffffffff00000000, valueTwo: 0x100000000 }] },
      ],
    },
    // runc's split of a rule that tests one argument twice; i386 socketcall multiplexing.
    {
      defaultAction: 'SCMP_ACT_ERRNO',
      defaultErrnoRet: 38,
      architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
      syscalls: [
        { names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, op: 'SCMP_CMP_GT', value: 1 }, { index: 0, op: 'SCMP_CMP_LT', value: 3 }, { index: 1, op: 'SCMP_CMP_EQ', value: 1 }] },
        { names: ['bind', 'connect', 'accept', 'send', 'recv', 'semop', 'shmat'], action: 'SCMP_ACT_ALLOW' },
        { names: ['sendmsg'], action: 'SCMP_ACT_TRACE', errnoRet: 7, args: [{ index: 2, op: 'SCMP_CMP_MASKED_EQ', value: 0x40, valueTwo: 0x40 }] },
        { names: ['sendmsg'], action: 'SCMP_ACT_ERRNO', args: [{ index: 2, op: 'SCMP_CMP_MASKED_EQ', value: 0x40, valueTwo: 0 }] },
      ],
    },
    // The default action is also the bad-arch action.
    { defaultAction: 'SCMP_ACT_KILL', architectures: ['SCMP_ARCH_X86'], syscalls: [{ names: ['getpid'], action: 'SCMP_ACT_ALLOW' }] },
    // No rules at all.
    { defaultAction: 'SCMP_ACT_ALLOW' },
    { defaultAction: 'SCMP_ACT_TRACE', defaultErrnoRet: 3, architectures: ['SCMP_ARCH_X32'] },
  ];
  const failures = profiles.flatMap((p, i) => [1, 2].map((opt) => compare(`edge profile ${i}`, p, randomInputs(g, p, 3000), opt as 1 | 2))).filter(Boolean);
  console.log(`# ${profiles.length} edge profiles, ${compared - before} inputs compared`);
  assert.equal(failures.length, 0, failures.slice(0, 2).join('\n'));
});

test('the default profile (and a Docker-style EPERM variant): same decisions for every syscall', { skip }, () => {
  const g = new Gen(prng(SEED + 2));
  const before = compared;
  const full = defaultSeccompProfile();
  // Keep the names both sides resolve alike; the rest are newer than libseccomp 2.5.4.
  const dropped = new Set<string>();
  const restrict = (p: SeccompSpec): SeccompSpec => ({
    ...p,
    syscalls: (p.syscalls ?? []).map((sc) => ({
      ...sc,
      names: sc.names.filter((n) => {
        const ok = usable(n);
        if (!ok) dropped.add(n);
        return ok;
      }),
    })).filter((sc) => sc.names.length > 0),
  });
  const variants = [restrict(full), restrict({ ...full, defaultErrnoRet: 1 })];
  const failures: string[] = [];
  for (const [i, profile] of variants.entries()) {
    // Every number of every ABI, with random arguments, plus the generic random inputs.
    const inputs = randomInputs(g, profile, 10000);
    for (const arch of ARCHES) {
      for (let nr = 0; nr < 560; nr++) {
        for (let k = 0; k < 3; k++) {
          inputs.push({
            nr: arch === 'x32' ? (nr | X32_SYSCALL_BIT) >>> 0 : nr,
            arch: arch === 'x86' ? AUDIT_ARCH_I386 : AUDIT_ARCH_X86_64,
            args: [...Array(6)].map(() => (g.chance(0.5) ? BigInt(g.pick([0, 8, 0x20000, 0x11, 0x10000000, 0x7e020000, 40, 1, 2])) : g.u64())),
          });
        }
      }
    }
    for (const optimize of [1, 2] as const) {
      const report = compare(`default profile variant ${i} optimize ${optimize}`, profile, inputs, optimize);
      if (report) failures.push(report);
    }
  }
  console.log(`# default profile: ${compared - before} inputs compared; names left out (unknown to libseccomp 2.5.4): ${[...dropped].sort().join(' ')}`);
  assert.equal(failures.length, 0, failures.slice(0, 1).join('\n'));
});

/** Loads `filter` in a child process (harness load) and returns its report, one line per call. */
function loadAndCall(filter: Buffer, flags: number, calls: (number | bigint)[][]): string[] {
  const r = spawnSync(harness, ['load', String(flags), ...calls.map((c) => c.map(String).join(','))], { input: filter, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

test('the kernel accepts Moat\'s filters (flags included) and enforces the default profile', { skip }, () => {
  const filter = compileSeccomp(defaultSeccompProfile()).filter;
  const nr = (name: string) => {
    const n = syscallNumber('x86_64', name);
    assert.ok(n !== undefined, name);
    return n;
  };
  const CLONE_NEWUSER = 0x10000000;
  const calls: [string, number[], number][] = [
    ['getpid', [], 0],
    ['mount', [0, 0, 0, 0, 0], 1],
    ['umount2', [0, 0], 1],
    ['unshare', [CLONE_NEWUSER], 1],
    ['setns', [0, 0], 1],
    ['clone', [CLONE_NEWUSER | 17], 1],
    ['clone3', [0, 0], 38],
    ['bpf', [0, 0, 0], 1],
    ['ptrace', [0, 1, 0, 0], 1],
    ['keyctl', [0], 1],
    ['io_uring_setup', [1, 0], 1],
    ['personality', [0x0040000], 38],
    ['personality', [0xffffffff], 0],
    ['socket', [40, 1, 0], 38],
    ['socket', [1, 1, 0], 0],
    ['mseal', [0, 0, 0], 0], // newer than libseccomp 2.5.4: allowed here (mseal(0, 0, 0) succeeds)
  ];
  const lines = loadAndCall(filter, 0, [...calls.map(([name, args]) => [nr(name), ...args]), [1000]]);
  calls.forEach(([name, args, expectErrno], i) => {
    const [, ret, err] = (lines[i] ?? '').split(' ');
    assert.equal(Number(err), expectErrno, `${name}(${args.join(', ')}): ${lines[i]}`);
    if (expectErrno !== 0) assert.equal(ret, '-1');
  });
  assert.equal(lines[calls.length], '1000 -1 38', 'an unknown syscall number: ENOSYS');
  assert.equal(lines[calls.length + 1], 'exit 0');

  // Long programs with trampolines, and every flag combination Moat produces, load.
  const names = syscallNames('x86_64').filter((n) => !['exit_group', 'getpid'].includes(n)).slice(0, 80);
  const long = compileSeccomp({
    defaultAction: 'SCMP_ACT_ALLOW',
    architectures: ['SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    flags: ['SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW', 'SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV'],
    listenerPath: '/unused',
    syscalls: [
      ...names.map((name, i) => ({ names: [name], action: 'SCMP_ACT_ERRNO', errnoRet: 100 + i, args: [{ index: 0, value: 0x100000000 * i + 7, op: 'SCMP_CMP_GE' }, { index: 1, value: 0xf0, valueTwo: 0x70, op: 'SCMP_CMP_MASKED_EQ' }] })),
      { names: ['getppid'], action: 'SCMP_ACT_NOTIFY' },
    ],
  });
  assert.ok(long.filter.length / 8 > 1000);
  assert.equal(long.flags, 2 | 4 | 1 | 16 | 8 | 32);
  const out = loadAndCall(long.filter, long.flags, [[nr('getpid')], [nr(names[10] ?? 'read'), 0x100000000 * 10 + 7, 0x71]]);
  assert.match(out[0] ?? '', /^39 \d+ 0$/);
  assert.equal(out[1], `${nr(names[10] ?? 'read')} -1 110`);
  assert.equal(out[2], 'exit 0');
});

test('total number of compared inputs', { skip }, () => {
  console.log(
    `# ${compared} inputs compared in all: Moat always matched the profile's meaning and libseccomp, except on ` +
      `${libseccompBugs} inputs (${buggyProfiles.size} profiles) where libseccomp's filter is wrong: ${[...bugKinds].join('; ')}` +
      (libseccompHangs.size > 0
        ? `; libseccomp never finished ${libseccompHangs.size} profiles (${[...libseccompHangs].join(', ')}), whose ${meaningOnly} inputs were checked against the profile's meaning only`
        : ''),
  );
  assert.ok(compared >= 100000, `only ${compared} inputs compared`);
});
