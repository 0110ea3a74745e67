/**
 * Compiles the syscall table into the sentry's seccomp program (classic BPF). Layout: the arch
 * check (only x86_64; i386 compat calls are refused with ENOSYS), the x32 check (ENOSYS), then a
 * binary search tree of JGE jumps over ranges of syscall numbers that share one action. A leaf is
 * a single RET, or, for a fast call with argument filters, a small block that compares the
 * arguments' 32-bit halves and returns ALLOW on a match and USER_NOTIF otherwise.
 */
import {
  BPF,
  BPF_INSN_SIZE,
  BPF_MAXINSNS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_USER_NOTIF,
} from '../../seccomp/bpf.js';
import { AUDIT_ARCH_X86_64, X32_SYSCALL_BIT } from '../../seccomp/syscalls.js';
import { ENOSYS, SYSCALL_TABLE, entryByNr, fastWhenAt, type ArgFilter, type SyscallClass, type SyscallEntry } from './table.js';
import type { SentryLevel } from './types.js';

/** One instruction with resolved relative jumps. */
interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** Largest conditional jump offset (jt/jf are 8 bits). */
const MAX_JUMP = 255;
const U32 = 0xffffffff;
const U64 = (1n << 64n) - 1n;
const OFF_NR = 0;
const OFF_ARCH = 4;
/** Offset of the low (`hi` false) or high 32-bit word of argument `i` in struct seccomp_data. */
const argOffset = (i: number, hi: boolean): number => 16 + 8 * i + (hi ? 4 : 0);
const low = (v: bigint): number => Number(v & 0xffffffffn);
const high = (v: bigint): number => Number((v >> 32n) & 0xffffffffn);

const RET_ENOSYS = (SECCOMP_RET_ERRNO | ENOSYS) >>> 0;

/** Whether argument filter `f` matches the arguments (missing ones are 0). */
function matches(f: ArgFilter, args: readonly bigint[]): boolean {
  const a = BigInt.asUintN(64, args[f.arg] ?? 0n);
  switch (f.op) {
    case 'eq':
      return a === f.values[0];
    case 'masked_eq':
      return (a & (f.mask ?? U64)) === f.values[0];
    case 'in':
      return f.values.includes(a);
  }
}

/** The class of x86_64 syscall `nr` with arguments `args` at `level`: the plain meaning of the table. */
export function classify(level: SentryLevel, nr: number, args: readonly bigint[]): SyscallClass {
  const e = entryByNr(nr);
  if (e === undefined) return 'refused';
  const cls = e[level];
  const when = fastWhenAt(e, level);
  if (cls !== 'fast' || when === undefined) return cls;
  return when.some((alt) => alt.every((f) => matches(f, args))) ? 'fast' : 'served';
}

/** The SECCOMP_RET_* value the sentry filter returns for x86_64 syscall `nr` with `args` at `level`. */
export function expectedAction(level: SentryLevel, nr: number, args: readonly bigint[]): number {
  switch (classify(level, nr, args)) {
    case 'fast':
      return SECCOMP_RET_ALLOW;
    case 'served':
      return SECCOMP_RET_USER_NOTIF;
    case 'refused':
      // refused calls go to the sentry too, which logs them and answers the table's errno
      // (it never lets one continue); numbers outside the table are refused in the kernel
      return entryByNr(nr) === undefined ? RET_ENOSYS : SECCOMP_RET_USER_NOTIF;
  }
}

/** A jump target inside a block: a label, or null for the next instruction. */
type Ref = string | null;

/** A straight-line block with forward jumps to named labels, resolved by `resolve()`. */
class Block {
  private readonly insns: { code: number; k: number; jt: Ref; jf: Ref }[] = [];
  private readonly labels = new Map<string, number>();

  /** Appends an instruction; for JA, `jt` names the target. */
  emit(code: number, k: number, jt: Ref = null, jf: Ref = null): void {
    this.insns.push({ code, k: k >>> 0, jt, jf });
  }

  /** Places `name` at the next instruction. */
  label(name: string): void {
    this.labels.set(name, this.insns.length);
  }

  /** Returns the instructions with relative jump offsets; throws if one does not fit. */
  resolve(): Insn[] {
    return this.insns.map((ins, pc) => {
      const off = (ref: Ref): number => {
        if (ref === null) return 0;
        const to = this.labels.get(ref);
        if (to === undefined || to <= pc) throw new Error(`sentry filter: bad jump to ${ref}`);
        const d = to - pc - 1;
        if (ins.code !== BPF.JA && d > MAX_JUMP) throw new Error(`sentry filter: jump to ${ref} too far (${d})`);
        return d;
      };
      if (ins.code === BPF.JA) return { code: ins.code, jt: 0, jf: 0, k: off(ins.jt) };
      return { code: ins.code, jt: off(ins.jt), jf: off(ins.jf), k: ins.k };
    });
  }
}

/** Emits a test of filter `f` that falls through when it matches and jumps to `fail` otherwise. */
function emitFilter(b: Block, f: ArgFilter, fail: string, id: string): void {
  if (f.op !== 'in') {
    const value = f.values[0] ?? 0n;
    const mask = f.mask ?? U64;
    for (const hi of [false, true]) {
      const m = hi ? high(mask) : low(mask);
      if (m === 0) continue; // the table guarantees the value has no bits outside the mask
      b.emit(BPF.LD_W_ABS, argOffset(f.arg, hi));
      if (m !== U32) b.emit(BPF.ALU_AND_K, m);
      b.emit(BPF.JEQ_K, hi ? high(value) : low(value), null, fail);
    }
    return;
  }
  // group the values by their high word: one high-word test, then the low words
  const groups = new Map<number, number[]>();
  for (const v of f.values) groups.set(high(v), [...(groups.get(high(v)) ?? []), low(v)]);
  const ok = `${id}.ok`;
  [...groups].forEach(([h, lows], g) => {
    const next = g === groups.size - 1 ? fail : `${id}.g${g + 1}`;
    b.emit(BPF.LD_W_ABS, argOffset(f.arg, true));
    b.emit(BPF.JEQ_K, h, null, next);
    b.emit(BPF.LD_W_ABS, argOffset(f.arg, false));
    lows.forEach((l, i) => b.emit(BPF.JEQ_K, l, ok, i === lows.length - 1 ? next : null));
    if (next !== fail) b.label(next);
  });
  b.label(ok);
}

/** The leaf of a fast call with argument filters: ALLOW when one alternative matches, else USER_NOTIF. */
function argLeaf(alts: readonly ArgFilter[][]): Insn[] {
  const b = new Block();
  alts.forEach((alt, a) => {
    const fail = `alt${a + 1}`;
    alt.forEach((f, i) => emitFilter(b, f, fail, `a${a}f${i}`));
    b.emit(BPF.RET_K, SECCOMP_RET_ALLOW);
    b.label(fail);
  });
  b.emit(BPF.RET_K, SECCOMP_RET_USER_NOTIF);
  return b.resolve();
}

/** What a range of syscall numbers does: return a value, or test the arguments of one call. */
type Leaf = { ret: number } | { alts: readonly ArgFilter[][] };

/** Syscall numbers from `start` up to the next range's start share `leaf`. */
interface Range {
  start: number;
  leaf: Leaf;
}

/** The leaf of one syscall at `level` (unassigned numbers are ENOSYS). */
function leafOf(e: SyscallEntry | undefined, level: SentryLevel): Leaf {
  if (e === undefined) return { ret: RET_ENOSYS };
  const cls = e[level];
  const when = fastWhenAt(e, level);
  if (cls === 'fast' && when !== undefined) return { alts: when };
  return { ret: expectedAction(level, e.nr, []) };
}

/** Splits the syscall numbers 0..2^32-1 into ranges with one leaf each, merging equal returns. */
function ranges(level: SentryLevel): Range[] {
  const top = Math.max(...SYSCALL_TABLE.map((e) => e.nr)) + 1;
  const out: Range[] = [];
  for (let nr = 0; nr <= top; nr++) {
    const leaf = leafOf(entryByNr(nr), level);
    const prev = out[out.length - 1]?.leaf;
    if (prev !== undefined && 'ret' in prev && 'ret' in leaf && prev.ret === leaf.ret) continue;
    out.push({ start: nr, leaf });
  }
  return out;
}

/** Code for ranges `lo..hi` (inclusive), with the syscall number in A. */
function tree(rs: readonly Range[], lo: number, hi: number): Insn[] {
  if (lo === hi) {
    const leaf = rs[lo]?.leaf;
    if (leaf === undefined) throw new Error('sentry filter: empty range');
    return 'ret' in leaf ? [{ code: BPF.RET_K, jt: 0, jf: 0, k: leaf.ret }] : argLeaf(leaf.alts);
  }
  const mid = (lo + hi + 1) >> 1;
  const left = tree(rs, lo, mid - 1);
  const right = tree(rs, mid, hi);
  const k = rs[mid]?.start ?? 0;
  if (left.length <= MAX_JUMP) return [{ code: BPF.JGE_K, jt: left.length, jf: 0, k }, ...left, ...right];
  // too far for jt: the true branch goes through a long jump over the left subtree
  return [{ code: BPF.JGE_K, jt: 0, jf: 1, k }, { code: BPF.JA, jt: 0, jf: 0, k: left.length }, ...left, ...right];
}

/** Encodes instructions as little-endian `struct sock_filter[]`. */
function encode(insns: readonly Insn[]): Buffer {
  const buf = Buffer.alloc(insns.length * BPF_INSN_SIZE);
  insns.forEach((ins, i) => {
    const at = i * BPF_INSN_SIZE;
    buf.writeUInt16LE(ins.code, at);
    buf.writeUInt8(ins.jt, at + 2);
    buf.writeUInt8(ins.jf, at + 3);
    buf.writeUInt32LE(ins.k >>> 0, at + 4);
  });
  return buf;
}

/**
 * The sentry's seccomp program for `level` (load it with SECCOMP_FILTER_FLAG_NEW_LISTENER), as
 * little-endian `struct sock_filter[]`; its length in instructions is `length / 8`.
 */
export function buildSentryFilter(level: SentryLevel): Buffer {
  const rs = ranges(level);
  const insns: Insn[] = [
    { code: BPF.LD_W_ABS, jt: 0, jf: 0, k: OFF_ARCH },
    { code: BPF.JEQ_K, jt: 1, jf: 0, k: AUDIT_ARCH_X86_64 },
    { code: BPF.RET_K, jt: 0, jf: 0, k: RET_ENOSYS }, // i386 compat (or any other arch)
    { code: BPF.LD_W_ABS, jt: 0, jf: 0, k: OFF_NR },
    { code: BPF.JSET_K, jt: 0, jf: 1, k: X32_SYSCALL_BIT },
    { code: BPF.RET_K, jt: 0, jf: 0, k: RET_ENOSYS }, // x32 ABI
    ...tree(rs, 0, rs.length - 1),
  ];
  if (insns.length > BPF_MAXINSNS) throw new Error(`sentry filter has ${insns.length} instructions, more than ${BPF_MAXINSNS}`);
  return encode(insns);
}
