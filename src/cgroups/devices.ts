/**
 * Device access rules: a model of the cgroup v1 devices controller (a default of allow-all or
 * deny-all plus exceptions), used three ways, as runc does:
 *
 * - to check a rule list before anything is written (v1 cannot punch a hole in a wildcard rule);
 * - to compute the v1 writes that take a cgroup from its current devices.list to the target;
 * - to compile the target into a BPF_PROG_TYPE_CGROUP_DEVICE program for cgroup v2.
 */
import { ConfigError } from '../errors.js';
import type { DeviceRuleSpec } from './resources.js';

/** One device rule in the devices controller's terms; -1 is the wildcard for major and minor. */
export interface DeviceRule {
  /** Allow (true) or deny (false) the access. */
  allow: boolean;
  /** `a` (all devices, major and minor ignored), `b` (block) or `c` (char). */
  type: 'a' | 'b' | 'c';
  /** Major number, or -1 for any. */
  major: number;
  /** Minor number, or -1 for any. */
  minor: number;
  /** Some of `r` (read), `w` (write), `m` (mknod), in that order. */
  access: string;
}

/** Converts a `linux.resources.devices[]` entry to a rule: absent type is `a`, absent access `rwm`. */
export function ruleFromSpec(spec: DeviceRuleSpec): DeviceRule {
  const num = (n: number | null | undefined) => (n === null || n === undefined || n < 0 ? -1 : n);
  return {
    allow: spec.allow,
    type: spec.type ?? 'a',
    major: num(spec.major),
    minor: num(spec.minor),
    access: normAccess(spec.access ?? 'rwm'),
  };
}

/** Sorts and de-duplicates access letters into `rwm` order. */
function normAccess(a: string): string {
  return ['r', 'w', 'm'].filter((c) => a.includes(c)).join('');
}

const union = (a: string, b: string) => normAccess(a + b);
const minus = (a: string, b: string) => normAccess([...a].filter((c) => !b.includes(c)).join(''));
const intersect = (a: string, b: string) => normAccess([...a].filter((c) => b.includes(c)).join(''));

/** Formats a rule the way devices.allow / devices.deny / devices.list spell it: `c 1:3 rwm`. */
export function ruleString(r: DeviceRule): string {
  if (r.type === 'a') return 'a *:* rwm';
  const n = (x: number) => (x < 0 ? '*' : String(x));
  return `${r.type} ${n(r.major)}:${n(r.minor)} ${r.access}`;
}

interface Exception {
  type: 'b' | 'c';
  major: number;
  minor: number;
  access: string;
}

const keyOf = (e: { type: string; major: number; minor: number }) => `${e.type} ${e.major}:${e.minor}`;

/** The state of a v1 devices cgroup: a default and the exceptions to it. */
export class DeviceState {
  /** True: everything is allowed except the exceptions (a "blacklist"); false: the reverse. */
  defaultAllow: boolean;
  /** Exceptions to the default, by `type major:minor`. */
  readonly exceptions = new Map<string, Exception>();

  constructor(defaultAllow = false) {
    this.defaultAllow = defaultAllow;
  }

  /** Builds the state from rules applied in order to a deny-all start (how runc builds its target). */
  static fromRules(rules: readonly DeviceRule[], fieldPath = 'linux.resources.devices'): DeviceState {
    const s = new DeviceState(false);
    rules.forEach((r, i) => {
      try {
        s.apply(r);
      } catch (err) {
        throw new ConfigError(`${fieldPath}[${i}]`, err instanceof Error ? err.message : String(err));
      }
    });
    return s;
  }

  /** Builds the state from a v1 devices.list (which lists `a *:* rwm` alone when all is allowed). */
  static fromList(list: string): DeviceState {
    const s = new DeviceState(false);
    for (const line of list.split('\n')) {
      const m = /^([abc]) (\*|\d+):(\*|\d+) ([rwm]+)$/.exec(line.trim());
      if (m === null) continue;
      const type = m[1] as 'a' | 'b' | 'c';
      const num = (x: string | undefined) => (x === '*' || x === undefined ? -1 : Number(x));
      s.apply({ allow: true, type, major: num(m[2]), minor: num(m[3]), access: m[4] ?? '' });
    }
    return s;
  }

  /** Applies one rule as the kernel would; throws Error for a change v1 cannot express. */
  apply(rule: DeviceRule): void {
    if (rule.type === 'a') {
      this.defaultAllow = rule.allow;
      this.exceptions.clear();
      return;
    }
    // Allowing on an allow-all default (or denying on deny-all) removes exceptions; the
    // opposite adds one.
    if (rule.allow === this.defaultAllow) this.remove(rule);
    else this.add(rule);
  }

  private add(rule: DeviceRule): void {
    const key = keyOf(rule);
    const old = this.exceptions.get(key);
    this.exceptions.set(key, { type: rule.type as 'b' | 'c', major: rule.major, minor: rule.minor, access: union(old?.access ?? '', rule.access) });
  }

  private remove(rule: DeviceRule): void {
    const partials = [
      { type: rule.type, major: -1, minor: rule.minor },
      { type: rule.type, major: rule.major, minor: -1 },
      { type: rule.type, major: -1, minor: -1 },
    ];
    for (const p of partials) {
      if (p.major === rule.major && p.minor === rule.minor) continue;
      const wide = this.exceptions.get(keyOf(p));
      if (wide !== undefined && intersect(wide.access, rule.access) !== '') {
        throw new Error(
          `rule "${ruleString(rule)}" would punch a hole in the wider rule "${keyOf(p).replace(/-1/g, '*')} ${wide.access}", ` +
            'which the devices cgroup cannot express',
        );
      }
    }
    const key = keyOf(rule);
    const old = this.exceptions.get(key);
    if (old === undefined) return;
    const left = minus(old.access, rule.access);
    if (left === '') this.exceptions.delete(key);
    else this.exceptions.set(key, { ...old, access: left });
  }

  /** The exceptions sorted by major, minor, type (a stable order for writes and programs). */
  sorted(): Exception[] {
    // not localeCompare: its first call loads ICU collation, about 8 ms at every container start
    return [...this.exceptions.values()].sort((a, b) => a.major - b.major || a.minor - b.minor || (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  }

  /**
   * The rules that take a v1 cgroup from this state to `target`. A blacklist source is reset
   * first (devices.list does not show its deny exceptions), as is a change of default.
   */
  transitionTo(target: DeviceState): DeviceRule[] {
    const out: DeviceRule[] = [];
    let old = this.exceptions;
    if (this.defaultAllow || this.defaultAllow !== target.defaultAllow) {
      out.push({ allow: target.defaultAllow, type: 'a', major: -1, minor: -1, access: 'rwm' });
      old = new Map();
    }
    for (const e of [...old.values()].sort((a, b) => a.major - b.major || a.minor - b.minor)) {
      const dropped = minus(e.access, target.exceptions.get(keyOf(e))?.access ?? '');
      if (dropped !== '') out.push({ allow: target.defaultAllow, type: e.type, major: e.major, minor: e.minor, access: dropped });
    }
    for (const e of target.sorted()) {
      const gained = minus(e.access, old.get(keyOf(e))?.access ?? '');
      if (gained !== '') out.push({ allow: !target.defaultAllow, type: e.type, major: e.major, minor: e.minor, access: gained });
    }
    return out;
  }

  /** True if this state and `other` allow exactly the same accesses. */
  equals(other: DeviceState): boolean {
    if (this.defaultAllow !== other.defaultAllow || this.exceptions.size !== other.exceptions.size) return false;
    for (const [key, e] of this.exceptions) if (other.exceptions.get(key)?.access !== e.access) return false;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// BPF program for cgroup v2
// ---------------------------------------------------------------------------------------------

/** BPF_DEVCG_DEV_* device types of struct bpf_cgroup_dev_ctx. */
const BPF_DEVCG_DEV_BLOCK = 1;
const BPF_DEVCG_DEV_CHAR = 2;
/** BPF_DEVCG_ACC_* access bits. */
const BPF_DEVCG_ACC_MKNOD = 1;
const BPF_DEVCG_ACC_READ = 2;
const BPF_DEVCG_ACC_WRITE = 4;

// eBPF opcodes used (see linux/bpf.h: class | op | source)
const LDX_MEM_W = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K = 0x54; // w_dst &= imm
const ALU32_RSH_K = 0x74; // w_dst >>= imm
const ALU32_MOV_K = 0xb4; // w_dst = imm
const ALU32_MOV_X = 0xbc; // w_dst = w_src
const JMP32_JNE_K = 0x56; // if w_dst != imm goto +off
const JMP32_JNE_X = 0x5e; // if w_dst != w_src goto +off
const JMP_EXIT = 0x95;

interface Insn {
  code: number;
  dst: number;
  src: number;
  off: number;
  imm: number;
  /** For jumps: the index of the block to jump to the end of (resolved in `encode`). */
  toBlockEnd?: boolean;
}

/**
 * Compiles device rules into a cgroup device program: registers r2 = device type, r3 = access,
 * r4 = major, r5 = minor; one block per exception that returns its verdict when the device and
 * the requested access match; the default verdict at the end. Returns the encoded instructions.
 */
export function deviceFilterProgram(state: DeviceState): Buffer {
  const insns: Insn[] = [
    { code: LDX_MEM_W, dst: 2, src: 1, off: 0, imm: 0 },
    { code: ALU32_AND_K, dst: 2, src: 0, off: 0, imm: 0xffff },
    { code: LDX_MEM_W, dst: 3, src: 1, off: 0, imm: 0 },
    { code: ALU32_RSH_K, dst: 3, src: 0, off: 0, imm: 16 },
    { code: LDX_MEM_W, dst: 4, src: 1, off: 4, imm: 0 },
    { code: LDX_MEM_W, dst: 5, src: 1, off: 8, imm: 0 },
  ];
  const blocks: Insn[][] = [];
  for (const e of state.sorted()) {
    const block: Insn[] = [];
    const skip = (code: number, dst: number, src: number, imm: number) => block.push({ code, dst, src, off: 0, imm, toBlockEnd: true });
    skip(JMP32_JNE_K, 2, 0, e.type === 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR);
    let bits = 0;
    if (e.access.includes('r')) bits |= BPF_DEVCG_ACC_READ;
    if (e.access.includes('w')) bits |= BPF_DEVCG_ACC_WRITE;
    if (e.access.includes('m')) bits |= BPF_DEVCG_ACC_MKNOD;
    if (bits !== 7) {
      // the requested access must be a subset of the rule's: (access & bits) == access
      block.push({ code: ALU32_MOV_X, dst: 1, src: 3, off: 0, imm: 0 });
      block.push({ code: ALU32_AND_K, dst: 1, src: 0, off: 0, imm: bits });
      skip(JMP32_JNE_X, 1, 3, 0);
    }
    if (e.major >= 0) skip(JMP32_JNE_K, 4, 0, e.major | 0);
    if (e.minor >= 0) skip(JMP32_JNE_K, 5, 0, e.minor | 0);
    block.push({ code: ALU32_MOV_K, dst: 0, src: 0, off: 0, imm: state.defaultAllow ? 0 : 1 });
    block.push({ code: JMP_EXIT, dst: 0, src: 0, off: 0, imm: 0 });
    blocks.push(block);
  }
  for (const block of blocks) {
    // a failed match jumps past the rest of its block, to the next block (or the default)
    block.forEach((insn, i) => {
      if (insn.toBlockEnd) insn.off = block.length - i - 1;
    });
    insns.push(...block);
  }
  insns.push({ code: ALU32_MOV_K, dst: 0, src: 0, off: 0, imm: state.defaultAllow ? 1 : 0 });
  insns.push({ code: JMP_EXIT, dst: 0, src: 0, off: 0, imm: 0 });

  const out = Buffer.alloc(insns.length * 8);
  insns.forEach((insn, i) => {
    out[i * 8] = insn.code;
    out[i * 8 + 1] = ((insn.src & 0xf) << 4) | (insn.dst & 0xf);
    out.writeInt16LE(insn.off, i * 8 + 2);
    out.writeInt32LE(insn.imm | 0, i * 8 + 4);
  });
  return out;
}
