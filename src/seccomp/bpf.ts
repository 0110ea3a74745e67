/**
 * Classic BPF as seccomp uses it: instruction encodings, the SECCOMP_RET_* return values, and an
 * interpreter that runs a filter against one `struct seccomp_data` the way the kernel does.
 *
 * The interpreter exists for tests (and for `moat` debugging): it accepts exactly the instructions
 * the kernel's seccomp checker accepts (`seccomp_check_filter` on top of `bpf_check_classic`), so
 * a program that runs here also loads, and it throws on anything the kernel would refuse.
 */

/** Size of one `struct sock_filter` (u16 code, u8 jt, u8 jf, u32 k) in bytes. */
export const BPF_INSN_SIZE = 8;

/** The kernel's limit on the length of a classic BPF program (`BPF_MAXINSNS`). */
export const BPF_MAXINSNS = 4096;

/** `sizeof(struct seccomp_data)`: u32 nr, u32 arch, u64 instruction_pointer, u64 args[6]. */
export const SECCOMP_DATA_SIZE = 64;

/** Instruction codes the compiler emits (class | size/op | mode/source). */
export const BPF = {
  /** A = *(u32 *)(seccomp_data + k) */
  LD_W_ABS: 0x20,
  /** A &= k */
  ALU_AND_K: 0x54,
  /** pc += k */
  JA: 0x05,
  /** pc += (A == k) ? jt : jf */
  JEQ_K: 0x15,
  /** pc += (A > k) ? jt : jf */
  JGT_K: 0x25,
  /** pc += (A >= k) ? jt : jf */
  JGE_K: 0x35,
  /** pc += (A & k) ? jt : jf */
  JSET_K: 0x45,
  /** return k */
  RET_K: 0x06,
} as const;

/** Kill the whole process (`SECCOMP_RET_KILL_PROCESS`). */
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
/** Kill the calling thread (`SECCOMP_RET_KILL_THREAD`, also `SECCOMP_RET_KILL`). */
export const SECCOMP_RET_KILL_THREAD = 0x00000000;
/** Send SIGSYS, with the low 16 bits in `si_errno` (`SECCOMP_RET_TRAP`). */
export const SECCOMP_RET_TRAP = 0x00030000;
/** Fail the call with the low 16 bits as errno (`SECCOMP_RET_ERRNO`). */
export const SECCOMP_RET_ERRNO = 0x00050000;
/** Hand the call to the user-space listener (`SECCOMP_RET_USER_NOTIF`). */
export const SECCOMP_RET_USER_NOTIF = 0x7fc00000;
/** Notify a ptrace tracer, with the low 16 bits as the event message (`SECCOMP_RET_TRACE`). */
export const SECCOMP_RET_TRACE = 0x7ff00000;
/** Allow the call and log it (`SECCOMP_RET_LOG`). */
export const SECCOMP_RET_LOG = 0x7ffc0000;
/** Allow the call (`SECCOMP_RET_ALLOW`). */
export const SECCOMP_RET_ALLOW = 0x7fff0000;
/** Mask of the action part of a return value (`SECCOMP_RET_ACTION_FULL`). */
export const SECCOMP_RET_ACTION_FULL = 0xffff0000;
/** Mask of the data part of a return value (`SECCOMP_RET_DATA`). */
export const SECCOMP_RET_DATA = 0x0000ffff;

/** One system call as a seccomp filter sees it; missing `args` entries are 0. */
export interface SeccompInput {
  /** System call number (x32 calls have bit 30 set). */
  nr: number;
  /** `AUDIT_ARCH_*` value of the calling task. */
  arch: number;
  /** Instruction pointer at the call; 0 when left out. */
  ip?: bigint;
  /** Up to six 64-bit arguments. */
  args: bigint[];
}

const U32 = 0xffffffffn;

/** Lays out `struct seccomp_data` as sixteen little-endian 32-bit words. */
function seccompWords(data: SeccompInput): Uint32Array {
  const w = new Uint32Array(SECCOMP_DATA_SIZE / 4);
  w[0] = data.nr >>> 0;
  w[1] = data.arch >>> 0;
  const ip = BigInt.asUintN(64, data.ip ?? 0n);
  w[2] = Number(ip & U32);
  w[3] = Number(ip >> 32n);
  if (data.args.length > 6) throw new RangeError(`seccomp_data has 6 arguments, got ${data.args.length}`);
  data.args.forEach((a, i) => {
    const v = BigInt.asUintN(64, a);
    w[4 + 2 * i] = Number(v & U32);
    w[5 + 2 * i] = Number(v >> 32n);
  });
  return w;
}

/** Checks the length of a filter buffer and returns its instruction count. */
function instructionCount(filter: Buffer): number {
  if (filter.length === 0 || filter.length % BPF_INSN_SIZE !== 0) {
    throw new RangeError(`a BPF program is a non-empty multiple of ${BPF_INSN_SIZE} bytes, got ${filter.length}`);
  }
  const n = filter.length / BPF_INSN_SIZE;
  if (n > BPF_MAXINSNS) throw new RangeError(`BPF program has ${n} instructions, more than BPF_MAXINSNS (${BPF_MAXINSNS})`);
  return n;
}

/**
 * Runs a seccomp filter (little-endian `struct sock_filter[]`) on one system call and returns the
 * 32-bit SECCOMP_RET_* value. Throws on instructions seccomp does not accept, out-of-bounds
 * loads or jumps, reads of unwritten scratch memory, and running off the end of the program.
 */
export function runFilter(filter: Buffer, data: SeccompInput): number {
  const n = instructionCount(filter);
  const words = seccompWords(data);
  const mem = new Uint32Array(16);
  const memSet = new Uint8Array(16);
  let a = 0;
  let x = 0;
  let pc = 0;
  const jump = (offset: number) => {
    pc += 1 + offset;
    if (pc >= n) throw new RangeError(`jump out of bounds to ${pc} (program has ${n} instructions)`);
  };
  for (;;) {
    if (pc >= n) throw new RangeError('filter ran off the end of the program without returning');
    const at = pc * BPF_INSN_SIZE;
    const code = filter.readUInt16LE(at);
    const jt = filter.readUInt8(at + 2);
    const jf = filter.readUInt8(at + 3);
    const k = filter.readUInt32LE(at + 4);
    const bad = () => new RangeError(`instruction ${pc}: code 0x${code.toString(16)} is not allowed in a seccomp filter`);
    switch (code & 0x07) {
      case 0x00: // BPF_LD
      case 0x01: {
        // BPF_LDX
        const toX = (code & 0x07) === 0x01;
        if ((code & 0x18) !== 0x00) throw bad(); // only BPF_W
        let v: number;
        switch (code & 0xe0) {
          case 0x00: // BPF_IMM
            v = k;
            break;
          case 0x20: // BPF_ABS (seccomp rewrites it; LDX has no ABS mode)
            if (toX) throw bad();
            if (k % 4 !== 0 || k >= SECCOMP_DATA_SIZE) throw new RangeError(`instruction ${pc}: load from offset ${k} is outside struct seccomp_data`);
            v = words[k / 4] ?? 0;
            break;
          case 0x60: // BPF_MEM
            if (k >= 16) throw new RangeError(`instruction ${pc}: scratch slot ${k} does not exist`);
            if (memSet[k] !== 1) throw new RangeError(`instruction ${pc}: scratch slot ${k} is read before it is written`);
            v = mem[k] ?? 0;
            break;
          case 0x80: // BPF_LEN
            v = SECCOMP_DATA_SIZE;
            break;
          default:
            throw bad();
        }
        if (toX) x = v >>> 0;
        else a = v >>> 0;
        pc++;
        break;
      }
      case 0x02: // BPF_ST
      case 0x03: // BPF_STX
        if (code !== 0x02 && code !== 0x03) throw bad();
        if (k >= 16) throw new RangeError(`instruction ${pc}: scratch slot ${k} does not exist`);
        mem[k] = code === 0x02 ? a : x;
        memSet[k] = 1;
        pc++;
        break;
      case 0x04: {
        // BPF_ALU
        const op = code & 0xf0;
        const fromX = (code & 0x08) !== 0;
        if (code & 0x08 && op === 0x80) throw bad();
        const src = fromX ? x : k;
        switch (op) {
          case 0x00: a = (a + src) >>> 0; break;
          case 0x10: a = (a - src) >>> 0; break;
          case 0x20: a = Math.imul(a, src) >>> 0; break;
          case 0x30:
          case 0x90:
            if (src === 0) {
              if (!fromX) throw new RangeError(`instruction ${pc}: division by constant zero`);
              return 0; // classic BPF: dividing by X == 0 ends the program with 0
            }
            a = (op === 0x30 ? Math.floor(a / src) : a % src) >>> 0;
            break;
          case 0x40: a = (a | src) >>> 0; break;
          case 0x50: a = (a & src) >>> 0; break;
          case 0x60:
          case 0x70:
            if (!fromX && src >= 32) throw new RangeError(`instruction ${pc}: shift by ${src}`);
            a = (op === 0x60 ? a << (src & 31) : a >>> (src & 31)) >>> 0;
            break;
          case 0x80: a = -a >>> 0; break;
          case 0xa0: a = (a ^ src) >>> 0; break;
          default:
            throw bad();
        }
        pc++;
        break;
      }
      case 0x05: {
        // BPF_JMP
        const op = code & 0xf0;
        const src = (code & 0x08) !== 0 ? x : k;
        if (op === 0x00) {
          if (code !== BPF.JA) throw bad();
          jump(k);
          break;
        }
        let cond: boolean;
        switch (op) {
          case 0x10: cond = a === src; break;
          case 0x20: cond = a > src; break;
          case 0x30: cond = a >= src; break;
          case 0x40: cond = (a & src) !== 0; break;
          default:
            throw bad();
        }
        jump(cond ? jt : jf);
        break;
      }
      case 0x06: // BPF_RET
        if (code === BPF.RET_K) return k >>> 0;
        if (code === 0x16) return a >>> 0; // BPF_RET | BPF_A
        throw bad();
      case 0x07: // BPF_MISC
        if (code === 0x07) x = a; // TAX
        else if (code === 0x87) a = x; // TXA
        else throw bad();
        pc++;
        break;
      default:
        throw bad();
    }
  }
}

/** Names a SECCOMP_RET_* value, e.g. `ALLOW`, `ERRNO(1)`, `KILL_PROCESS`, `TRACE(7)`. */
export function describeAction(ret: number): string {
  const action = (ret & SECCOMP_RET_ACTION_FULL) >>> 0;
  const data = ret & SECCOMP_RET_DATA;
  const withData = (name: string) => `${name}(${data})`;
  const plain = (name: string) => (data === 0 ? name : withData(name));
  switch (action) {
    case SECCOMP_RET_KILL_PROCESS: return plain('KILL_PROCESS');
    case SECCOMP_RET_KILL_THREAD: return plain('KILL_THREAD');
    case SECCOMP_RET_TRAP: return withData('TRAP');
    case SECCOMP_RET_ERRNO: return withData('ERRNO');
    case SECCOMP_RET_USER_NOTIF: return plain('USER_NOTIF');
    case SECCOMP_RET_TRACE: return withData('TRACE');
    case SECCOMP_RET_LOG: return plain('LOG');
    case SECCOMP_RET_ALLOW: return plain('ALLOW');
    default: return `UNKNOWN(0x${(ret >>> 0).toString(16).padStart(8, '0')})`;
  }
}

/** Renders a filter as one line per instruction (`pc: mnemonic`), for debugging and test failure messages. */
export function disassemble(filter: Buffer): string[] {
  const n = instructionCount(filter);
  const out: string[] = [];
  const field = (k: number) => {
    if (k === 0) return 'nr';
    if (k === 4) return 'arch';
    if (k === 8 || k === 12) return `ip${k === 8 ? '' : '.hi'}`;
    const arg = Math.floor((k - 16) / 8);
    return `args[${arg}]${(k - 16) % 8 === 4 ? '.hi' : ''}`;
  };
  const hex = (k: number) => `0x${(k >>> 0).toString(16)}`;
  for (let pc = 0; pc < n; pc++) {
    const at = pc * BPF_INSN_SIZE;
    const code = filter.readUInt16LE(at);
    const jt = filter.readUInt8(at + 2);
    const jf = filter.readUInt8(at + 3);
    const k = filter.readUInt32LE(at + 4);
    const to = (off: number) => pc + 1 + off;
    let text: string;
    switch (code) {
      case BPF.LD_W_ABS: text = `ld ${field(k)}`; break;
      case BPF.ALU_AND_K: text = `and ${hex(k)}`; break;
      case BPF.JA: text = `ja ${to(k)}`; break;
      case BPF.JEQ_K: text = `jeq ${hex(k)} ? ${to(jt)} : ${to(jf)}`; break;
      case BPF.JGT_K: text = `jgt ${hex(k)} ? ${to(jt)} : ${to(jf)}`; break;
      case BPF.JGE_K: text = `jge ${hex(k)} ? ${to(jt)} : ${to(jf)}`; break;
      case BPF.JSET_K: text = `jset ${hex(k)} ? ${to(jt)} : ${to(jf)}`; break;
      case BPF.RET_K: text = `ret ${describeAction(k)}`; break;
      default: text = `code=0x${code.toString(16)} jt=${jt} jf=${jf} k=${hex(k)}`;
    }
    out.push(`${String(pc).padStart(4)}: ${text}`);
  }
  return out;
}
