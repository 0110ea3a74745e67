/**
 * Compiles an OCI `linux.seccomp` profile into a classic BPF program for seccomp(2), with the
 * decisions runc 1.1 + libseccomp 2.5 would make for the same profile on an x86_64 host.
 *
 * What "the same decisions" means, rule by rule (each point was checked against libseccomp's
 * exported BPF by test/seccomp/differential.test.ts, except where marked as a deliberate change):
 *
 * - Actions: SCMP_ACT_KILL and SCMP_ACT_KILL_THREAD are SECCOMP_RET_KILL_THREAD; SCMP_ACT_ERRNO and
 *   SCMP_ACT_TRACE carry `errnoRet` (EPERM when absent, as runc) as their 16-bit data; the same for
 *   `defaultAction` with `defaultErrnoRet`. `errnoRet` on any other action is ignored (runc).
 * - A rule whose action (data included) equals the default action is dropped (runc skips it;
 *   libseccomp would refuse it with EACCES).
 * - Syscall names are looked up per ABI. A name no x86 ABI knows is skipped with a warning (runc
 *   skips names libseccomp cannot resolve); a name only some of the filter's ABIs have applies to
 *   those (e.g. `_llseek` only to i386).
 * - Rule arguments are ANDed; several rules for one syscall are ORed. runc's quirk is kept: when a
 *   rule tests the same argument index more than once, runc adds every one of its conditions as a
 *   rule of its own, so they are ORed (a warning says so).
 * - The first unconditional rule for a syscall decides it, whatever else is listed for that
 *   syscall, earlier or later (libseccomp's rule database keeps the broadest rule).
 * - Comparisons are on 64-bit values split in two 32-bit halves on x86_64. i386 and x32 filters
 *   are 32-bit in libseccomp: only the low 32 bits of values, masks and arguments are compared, and
 *   a SCMP_CMP_MASKED_EQ whose (low) mask is 0 is always true, so it is dropped from the rule —
 *   which may leave the rule unconditional.
 * - i386 socket and SysV IPC calls: a rule for e.g. `socket` or `semop` also applies to
 *   `socketcall(SYS_SOCKET, ...)`/`ipc(SEMOP, ...)`, with argument 0 replaced by the call number
 *   (libseccomp's multiplexer handling), besides the direct i386 syscall where one exists.
 * - Architecture check first: i386 and x86_64/x32 tasks are told apart by `seccomp_data.arch`;
 *   any other arch gets SECCOMP_RET_KILL_THREAD (libseccomp's default bad-arch action,
 *   SCMP_ACT_KILL — not KILL_PROCESS). x86_64 is always filtered. Without SCMP_ARCH_X32 an
 *   x86_64-arch call with bit 30 set is also a bad arch (except nr -1, which gets the default
 *   action: tracers use it to skip a call); with SCMP_ARCH_X32 those numbers are x32 calls and
 *   unmatched ones get the default action.
 *
 * Deliberate differences:
 * - Conflicting rules: when two conditional rules for one syscall have different actions and an
 *   input matches both, the first listed wins here. libseccomp either refuses such a profile
 *   (EEXIST: runc fails to start the container) or resolves it by the order of its internal
 *   tree, which depends on argument numbers, operators and values.
 * - Names are resolved with the kernel's syscall tables up to Linux 6.19; Debian 12's libseccomp
 *   2.5.4 stops at futex_requeue (456), so runc silently ignores rules for e.g. `mseal`,
 *   `statmount` or `uretprobe` while Moat applies them.
 * - Where libseccomp 2.5.4 generates wrong code, Moat follows the profile. The differential test
 *   found three cases: a test of an accumulator that holds another field when a block is reached
 *   by a second path (e.g. i386 `connect` with [a0 >= X] and [a0 != Y, a2 > 0]); with SCMP_ARCH_X86
 *   and SCMP_ARCH_X32, a lost load of the syscall number, so that x86_64 calls compare the arch
 *   value and all get the default action (e.g. [linkat: a4 == 0] and [_llseek]); and merged
 *   range rules that match more than either rule (two rules for one syscall starting with > or >=
 *   tests on the same argument share a sub-tree that the merge extends).
 * - SCMP_ACT_NOTIFY: as runc, it cannot be the default action nor apply to write(2), and a
 *   listenerPath is required; NEW_LISTENER is set when any rule uses it, as runc does.
 * - `errnoRet` above 65535 is an error here; runc truncates it to 16 bits first (65536 would
 *   become ERRNO(0), "succeed without doing anything"). Like runc, SCMP_ACT_ERRNO data of 4095 or
 *   more is an error (libseccomp refuses it); SCMP_ACT_TRACE data may use all 16 bits.
 * - runc (since 1.0.0-rc93) prepends a stub to the filter that returns ENOSYS for syscall numbers
 *   above the largest one the profile names (per ABI), unless the default action is ALLOW, LOG or
 *   TRACE, so that libc falls back from syscalls newer than the profile. Moat does not: use a
 *   profile whose default is ERRNO(ENOSYS) (as Moat's default profile) to get that behaviour.
 * - SECCOMP_FILTER_FLAG_TSYNC is passed through (runc ignores it); with SCMP_ACT_NOTIFY it is
 *   combined with SECCOMP_FILTER_FLAG_TSYNC_ESRCH, as libseccomp does, since the kernel refuses
 *   TSYNC with NEW_LISTENER alone. SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is only set with
 *   NEW_LISTENER (libseccomp; the kernel refuses it otherwise).
 * - Foreign architectures (SCMP_ARCH_AARCH64, ...) are accepted and left out of the filter: an
 *   x86_64 kernel never reports their AUDIT_ARCH values, so libseccomp's branch for them is dead.
 */
import { ConfigError } from '../errors.js';
import type { SeccompSpec } from '../spec/schema.js';
import {
  BPF,
  BPF_INSN_SIZE,
  BPF_MAXINSNS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_KILL_THREAD,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRACE,
  SECCOMP_RET_TRAP,
  SECCOMP_RET_USER_NOTIF,
} from './bpf.js';
import {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  OCI_ARCHITECTURES,
  X32_SYSCALL_BIT,
  isKnownSyscall,
  syscallNumber,
  type SeccompArch,
} from './syscalls.js';

/** A profile compiled for seccomp(2) with SECCOMP_SET_MODE_FILTER. */
export interface CompiledSeccomp {
  /** The program: `struct sock_filter[]`, little-endian, 8 bytes per instruction. */
  filter: Buffer;
  /** SECCOMP_FILTER_FLAG_* bits to pass to seccomp(2), NEW_LISTENER included when `notify`. */
  flags: number;
  /** The profile uses SCMP_ACT_NOTIFY: load with SECCOMP_FILTER_FLAG_NEW_LISTENER and pass the fd on. */
  notify: boolean;
  /** Unix socket to send the listener fd to (`linux.seccomp.listenerPath`). */
  listenerPath?: string;
  /** Opaque string sent along with the listener fd (`linux.seccomp.listenerMetadata`). */
  listenerMetadata?: string;
}

/** Options of `compileSeccomp`. */
export interface CompileSeccompOptions {
  /** Receives one message per thing in the profile that was skipped or read in a surprising way. */
  warn?: (msg: string) => void;
}

/** `SECCOMP_FILTER_FLAG_TSYNC`: synchronise all threads of the process to the new filter. */
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
/** `SECCOMP_FILTER_FLAG_LOG`: log every action except ALLOW. */
export const SECCOMP_FILTER_FLAG_LOG = 2;
/** `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: do not force speculative store bypass mitigation. */
export const SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4;
/** `SECCOMP_FILTER_FLAG_NEW_LISTENER`: return a user-notification listener fd. */
export const SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;
/** `SECCOMP_FILTER_FLAG_TSYNC_ESRCH`: report TSYNC failure as ESRCH (needed to combine TSYNC and NEW_LISTENER). */
export const SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 16;
/** `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`: notified tasks wait killably once the listener received the call. */
export const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32;

/** Flag names `linux.seccomp.flags` may hold, with their bits. */
const FLAGS: Readonly<Record<string, number>> = {
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
};

const EPERM = 1;
const DATA_MAX = 0xffff;
/** libseccomp's MAX_ERRNO; it accepts SCMP_ACT_ERRNO data strictly below it. */
const MAX_ERRNO = 4095;

/** Action names of the OCI spec and the SECCOMP_RET_* value each stands for (data added later). */
const ACTIONS: Readonly<Record<string, number>> = {
  SCMP_ACT_KILL: SECCOMP_RET_KILL_THREAD,
  SCMP_ACT_KILL_THREAD: SECCOMP_RET_KILL_THREAD,
  SCMP_ACT_KILL_PROCESS: SECCOMP_RET_KILL_PROCESS,
  SCMP_ACT_TRAP: SECCOMP_RET_TRAP,
  SCMP_ACT_ERRNO: SECCOMP_RET_ERRNO,
  SCMP_ACT_TRACE: SECCOMP_RET_TRACE,
  SCMP_ACT_LOG: SECCOMP_RET_LOG,
  SCMP_ACT_ALLOW: SECCOMP_RET_ALLOW,
  SCMP_ACT_NOTIFY: SECCOMP_RET_USER_NOTIF,
};

type Op = 'NE' | 'LT' | 'LE' | 'EQ' | 'GE' | 'GT' | 'MASKED_EQ';
const OPS: Readonly<Record<string, Op>> = {
  SCMP_CMP_NE: 'NE',
  SCMP_CMP_LT: 'LT',
  SCMP_CMP_LE: 'LE',
  SCMP_CMP_EQ: 'EQ',
  SCMP_CMP_GE: 'GE',
  SCMP_CMP_GT: 'GT',
  SCMP_CMP_MASKED_EQ: 'MASKED_EQ',
};

/** One argument test; `mask`/`datum` already cut to the ABI's width and `datum` already masked. */
interface Cond {
  arg: number;
  op: Op;
  mask: bigint;
  datum: bigint;
}

/** One rule for one syscall number of one ABI: its conditions are ANDed (none: unconditional). */
interface Rule {
  action: number;
  conds: Cond[];
}

/** A rule as the profile states it, before it is specialised to an ABI. */
interface ProfileRule {
  action: number;
  /** Conditions on full 64-bit values; MASKED_EQ keeps the unmasked datum. */
  conds: { arg: number; op: Op; value: bigint; valueTwo: bigint }[];
}

const U32 = 0xffffffffn;
const U64 = 0xffffffffffffffffn;
const ROOT = 'linux.seccomp';

// i386 socketcall(2)/ipc(2) call numbers, as libseccomp's __PNR_* pseudo syscalls encode them.
const SOCKETCALL_NR = 102;
const IPC_NR = 117;
const SOCKETCALL_OPS: Readonly<Record<string, number>> = {
  socket: 1, bind: 2, connect: 3, listen: 4, accept: 5, getsockname: 6, getpeername: 7,
  socketpair: 8, send: 9, recv: 10, sendto: 11, recvfrom: 12, shutdown: 13, setsockopt: 14,
  getsockopt: 15, sendmsg: 16, recvmsg: 17, accept4: 18, recvmmsg: 19, sendmmsg: 20,
};
const IPC_OPS: Readonly<Record<string, number>> = {
  semop: 1, semget: 2, semctl: 3, semtimedop: 4, msgsnd: 11, msgrcv: 12, msgget: 13, msgctl: 14,
  shmat: 21, shmdt: 22, shmget: 23, shmctl: 24,
};

/**
 * `table[name]` for the table's own names only. A plain object also answers for Object.prototype
 * names ("constructor", "toString", "__proto__"), which a profile could use as an action,
 * operator, architecture, flag or system call name and so reach the compiler as a function.
 */
function own<T>(table: Readonly<Record<string, T>>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

/** runc's reading of an empty profile: no default action and no rules means "no seccomp at all". */
export function isSeccompDisabled(profile: SeccompSpec): boolean {
  return profile.defaultAction === '' && (profile.syscalls?.length ?? 0) === 0;
}

/** The SECCOMP_RET_* value of an action name plus its errno/trace data; throws ConfigError on an unknown name. */
function actionValue(name: string, errnoRet: number | undefined, path: string, errnoPath: string): number {
  const base = own(ACTIONS, name);
  if (base === undefined) {
    throw new ConfigError(path, `unknown seccomp action ${JSON.stringify(name)}; expected one of ${Object.keys(ACTIONS).join(', ')}`);
  }
  if (base !== SECCOMP_RET_ERRNO && base !== SECCOMP_RET_TRACE) return base;
  const data = errnoRet ?? EPERM;
  if (data > DATA_MAX) throw new ConfigError(errnoPath, `${data} does not fit the 16-bit data of a seccomp return value (at most ${DATA_MAX})`);
  if (base === SECCOMP_RET_ERRNO && data >= MAX_ERRNO) {
    throw new ConfigError(errnoPath, `errno ${data} is out of range: at most ${MAX_ERRNO - 1} (libseccomp, and so runc, refuses larger values)`);
  }
  return (base | data) >>> 0;
}

/**
 * Converts a JSON number to a 64-bit value. Numbers above 2^53 reach Moat already rounded to a
 * double; the doubles closest to 2^64 - 1 (a common "all bits" value) round up to 2^64, so 2^64
 * and above are read as 2^64 - 1, with a warning.
 */
function u64(n: number, path: string, warn: (msg: string) => void): bigint {
  const v = BigInt(n);
  if (v <= U64) return v;
  warn(`${path}: ${n} is above 2^64 - 1 and is read as 2^64 - 1`);
  return U64;
}

/** Reads and validates the rules of the profile, in profile order, one entry per syscall name. */
function readRules(profile: SeccompSpec, defaultAction: number, warn: (msg: string) => void): { name: string; rules: ProfileRule[] }[] {
  const out: { name: string; rules: ProfileRule[] }[] = [];
  (profile.syscalls ?? []).forEach((sc, i) => {
    const path = `${ROOT}.syscalls[${i}]`;
    const action = actionValue(sc.action, sc.errnoRet, `${path}.action`, `${path}.errnoRet`);
    const conds = (sc.args ?? []).map((arg, j) => {
      const argPath = `${path}.args[${j}]`;
      const op = own(OPS, arg.op);
      if (op === undefined) {
        throw new ConfigError(`${argPath}.op`, `unknown seccomp operator ${JSON.stringify(arg.op)}; expected one of ${Object.keys(OPS).join(', ')}`);
      }
      if (arg.index > 5) throw new ConfigError(`${argPath}.index`, `a system call has 6 arguments (index 0 to 5), got ${arg.index}`);
      return {
        arg: arg.index,
        op,
        value: u64(arg.value, `${argPath}.value`, warn),
        valueTwo: u64(arg.valueTwo ?? 0, `${argPath}.valueTwo`, warn),
      };
    });
    sc.names.forEach((name, j) => {
      if (name === '') throw new ConfigError(`${path}.names[${j}]`, 'empty string is not a system call name');
      if (action === SECCOMP_RET_USER_NOTIF && name === 'write') {
        // runc refuses this: the runtime itself writes the listener fd to its parent after loading.
        throw new ConfigError(`${path}.names[${j}]`, 'SCMP_ACT_NOTIFY cannot be used for the write system call');
      }
    });
    if (action === defaultAction) return; // runc: "redundant, silently skip it"
    // runc: if one argument index appears twice, every condition becomes a rule of its own.
    const indexes = conds.map((c) => c.arg);
    const split = new Set(indexes).size !== indexes.length;
    if (split) {
      warn(`${path}.args: argument ${indexes.find((a, k) => indexes.indexOf(a) !== k)} is tested more than once; as runc does, each condition of this rule is applied on its own (ORed), not ANDed`);
    }
    const rules: ProfileRule[] = split ? conds.map((c) => ({ action, conds: [c] })) : [{ action, conds }];
    sc.names.forEach((name, j) => {
      if (!isKnownSyscall(name) && own(SOCKETCALL_OPS, name) === undefined && own(IPC_OPS, name) === undefined) {
        warn(`${path}.names[${j}]: unknown system call ${JSON.stringify(name)} is skipped`);
        return;
      }
      out.push({ name, rules });
    });
  });
  return out;
}

/** Specialises the conditions of a rule to an ABI's argument width; tautologies are dropped. */
function specialise(rule: ProfileRule, width: 32 | 64): Cond[] {
  const cut = width === 64 ? U64 : U32;
  const conds: Cond[] = [];
  for (const c of rule.conds) {
    if (c.op === 'MASKED_EQ') {
      const mask = c.value & cut;
      if (mask === 0n) continue; // (x & 0) == (d & 0) always holds: libseccomp leaves it out
      conds.push({ arg: c.arg, op: c.op, mask, datum: c.valueTwo & mask });
    } else {
      conds.push({ arg: c.arg, op: c.op, mask: cut, datum: c.value & cut });
    }
  }
  return conds;
}

/** How one syscall number is decided: a fixed action, or conditional rules tried in order. */
type Decision = { kind: 'action'; action: number } | { kind: 'chain'; rules: Rule[]; width: 32 | 64 };

/** Rules per syscall number for one ABI, in the order libseccomp would have been given them. */
class ArchRules {
  readonly byNr = new Map<number, Rule[]>();
  constructor(readonly width: 32 | 64) {}
  add(nr: number, rule: Rule): void {
    const list = this.byNr.get(nr);
    if (list === undefined) this.byNr.set(nr, [rule]);
    else list.push(rule);
  }
  /** The first unconditional rule wins outright; otherwise the conditional rules form a chain. */
  decisions(): Map<number, Decision> {
    const out = new Map<number, Decision>();
    for (const [nr, rules] of this.byNr) {
      const always = rules.find((r) => r.conds.length === 0);
      out.set(nr, always !== undefined ? { kind: 'action', action: always.action } : { kind: 'chain', rules, width: this.width });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Symbolic program and assembler
// ---------------------------------------------------------------------------------------------

type Item =
  | { kind: 'label'; id: number }
  | { kind: 'stmt'; code: number; k: number }
  | { kind: 'jump'; code: number; k: number; jt: number; jf: number }
  | { kind: 'ja'; target: number }
  | { kind: 'ret'; k: number };

/** A program under construction: instructions whose jumps name labels instead of offsets. */
class Program {
  readonly items: Item[] = [];
  private labels = 0;
  private readonly retLabels = new Map<number, number>();

  label(): number {
    return this.labels++;
  }
  place(id: number): void {
    this.items.push({ kind: 'label', id });
  }
  /** A label placed right here. */
  here(): number {
    const id = this.label();
    this.place(id);
    return id;
  }
  load(offset: number): void {
    this.items.push({ kind: 'stmt', code: BPF.LD_W_ABS, k: offset });
  }
  and(k: number): void {
    this.items.push({ kind: 'stmt', code: BPF.ALU_AND_K, k: k >>> 0 });
  }
  /** A conditional jump; its targets may be filled in later through the returned item. */
  jump(code: number, k: number, jt: number, jf: number): Extract<Item, { kind: 'jump' }> {
    const item = { kind: 'jump' as const, code, k: k >>> 0, jt, jf };
    this.items.push(item);
    return item;
  }
  /** The shared label of `ret action`, emitted once at the end of the program. */
  ret(action: number): number {
    let id = this.retLabels.get(action);
    if (id === undefined) {
      id = this.label();
      this.retLabels.set(action, id);
    }
    return id;
  }
  /** Appends the shared return instructions. */
  finish(): void {
    for (const [action, id] of this.retLabels) {
      this.place(id);
      this.items.push({ kind: 'ret', k: action >>> 0 });
    }
  }
}

/**
 * Turns labels into offsets. Classic BPF conditional jumps reach at most 255 instructions ahead;
 * a farther target gets a trampoline right after the jump: a copy of the target's `ret` when the
 * target is a return, else a `ja` (32-bit offset). Trampolines are shared between jumps that
 * reach them, and the layout is recomputed until every jump fits.
 */
function assemble(items: Item[]): Buffer {
  let nextLabel = 1 << 30; // labels of trampolines, far above any label a Program hands out
  const trampolines = new Map<number, number[]>(); // target label -> labels of its trampolines
  // Jumps are fixed from the last to the first. Trampolines inserted after a jump move only
  // what follows it, so when a jump is reached every insertion that can lengthen it is known,
  // and its trampoline can serve the earlier jumps to the same target that reach it. The
  // second pass only confirms that every jump fits.
  for (let pass = 0; ; pass++) {
    if (pass > 8) throw new Error('seccomp: jump layout did not converge');
    const addr = new Map<number, number>();
    const retAt = new Map<number, number>(); // label -> k of the ret it points at
    const pcOf: number[] = [];
    let pc = 0;
    let pending: number[] = [];
    for (const it of items) {
      pcOf.push(pc);
      if (it.kind === 'label') {
        addr.set(it.id, pc);
        pending.push(it.id);
        continue;
      }
      if (it.kind === 'ret') for (const id of pending) retAt.set(id, it.k);
      pending = [];
      pc++;
    }
    // Trampolines of this pass, not yet in `items`: inserted before the instruction at `pos`.
    const inserted: { pos: number; index: number; items: Item[] }[] = [];
    const newAddr = new Map<number, number>(); // trampoline label -> address once inserted
    // Final address of a label: original instructions move down by what is inserted before them.
    const where = (id: number): number => {
      const fresh = newAddr.get(id);
      if (fresh !== undefined) return fresh;
      const a = addr.get(id);
      if (a === undefined) throw new Error(`seccomp: label ${id} is never placed`);
      return inserted.reduce((n, r) => (r.pos <= a ? n + r.items.length / 2 : n), a);
    };
    for (let index = items.length - 1; index >= 0; index--) {
      const jump = items[index];
      if (jump?.kind !== 'jump') continue;
      // Nothing is inserted before the jump in this pass; its trampolines go right after it.
      const pos = (pcOf[index] ?? 0) + 1;
      // Choose each target or a trampoline for it, counting the `n` trampolines this jump adds
      // in between; more trampolines only lengthen jumps, so this settles within three rounds.
      let n = 0;
      let fresh: number[] = [];
      let choice: [number, number] = [jump.jt, jump.jf];
      for (let round = 0; round < 3; round++) {
        const need: number[] = [];
        const choose = (t: number): number => {
          const dist = where(t) + n - pos;
          if (dist < 0) throw new Error('seccomp: backward jump');
          if (dist <= 255) return t;
          const near = (trampolines.get(t) ?? []).find((tr) => {
            const d = where(tr) + n - pos;
            return d >= 0 && d <= 255;
          });
          if (near !== undefined) return near;
          if (!need.includes(t)) need.push(t);
          return -1 - need.indexOf(t); // placeholder for the new trampoline
        };
        choice = [choose(jump.jt), choose(jump.jf)];
        fresh = need;
        if (need.length === n) break;
        n = need.length;
      }
      if (fresh.length !== n) throw new Error('seccomp: jump layout did not settle');
      const add: Item[] = [];
      const labels = fresh.map((t, i) => {
        const tr = nextLabel++;
        const k = retAt.get(t);
        add.push({ kind: 'label', id: tr }, k !== undefined ? { kind: 'ret', k } : { kind: 'ja', target: t });
        trampolines.set(t, [...(trampolines.get(t) ?? []), tr]);
        newAddr.set(tr, pos + i);
        return tr;
      });
      const resolve = (c: number) => (c >= 0 ? c : (labels[-1 - c] ?? c));
      jump.jt = resolve(choice[0]);
      jump.jf = resolve(choice[1]);
      if (add.length === 0) continue;
      // Everything inserted earlier in this pass lies further on and moves down by this insertion.
      for (const r of inserted) {
        for (const it of r.items) {
          if (it.kind === 'label') newAddr.set(it.id, (newAddr.get(it.id) ?? 0) + fresh.length);
        }
      }
      inserted.push({ pos, index, items: add });
    }
    if (inserted.length === 0) break;
    for (const r of inserted) items.splice(r.index + 1, 0, ...r.items); // last jump first
  }

  const addr = new Map<number, number>();
  let count = 0;
  for (const it of items) {
    if (it.kind === 'label') addr.set(it.id, count);
    else count++;
  }
  const buf = Buffer.alloc(count * BPF_INSN_SIZE);
  let pc = 0;
  const off = (id: number) => (addr.get(id) ?? 0) - (pc + 1);
  for (const it of items) {
    if (it.kind === 'label') continue;
    const at = pc * BPF_INSN_SIZE;
    switch (it.kind) {
      case 'stmt':
        buf.writeUInt16LE(it.code, at);
        buf.writeUInt32LE(it.k, at + 4);
        break;
      case 'jump':
        buf.writeUInt16LE(it.code, at);
        buf.writeUInt8(off(it.jt), at + 2);
        buf.writeUInt8(off(it.jf), at + 3);
        buf.writeUInt32LE(it.k, at + 4);
        break;
      case 'ja':
        buf.writeUInt16LE(BPF.JA, at);
        buf.writeUInt32LE(off(it.target), at + 4);
        break;
      case 'ret':
        buf.writeUInt16LE(BPF.RET_K, at);
        buf.writeUInt32LE(it.k, at + 4);
        break;
    }
    pc++;
  }
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Code generation
// ---------------------------------------------------------------------------------------------

const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
const argLo = (arg: number) => 16 + 8 * arg;
const argHi = (arg: number) => 16 + 8 * arg + 4;
const hi32 = (v: bigint) => Number(v >> 32n);
const lo32 = (v: bigint) => Number(v & U32);

/** Emits one condition: control reaches `pass` if it holds, `fail` if not. */
function emitCond(p: Program, c: Cond, width: 32 | 64, pass: number, fail: number): void {
  if (width === 32) {
    const d = lo32(c.datum);
    p.load(argLo(c.arg));
    switch (c.op) {
      case 'EQ': p.jump(BPF.JEQ_K, d, pass, fail); break;
      case 'NE': p.jump(BPF.JEQ_K, d, fail, pass); break;
      case 'GT': p.jump(BPF.JGT_K, d, pass, fail); break;
      case 'GE': p.jump(BPF.JGE_K, d, pass, fail); break;
      case 'LT': p.jump(BPF.JGE_K, d, fail, pass); break;
      case 'LE': p.jump(BPF.JGT_K, d, fail, pass); break;
      case 'MASKED_EQ':
        if (c.mask !== U32) p.and(lo32(c.mask));
        p.jump(BPF.JEQ_K, d, pass, fail);
        break;
    }
    return;
  }
  const dh = hi32(c.datum);
  const dl = lo32(c.datum);
  const next = () => p.label();
  switch (c.op) {
    case 'EQ':
    case 'NE': {
      // EQ holds when both halves are equal; NE when either differs.
      const lo = next();
      p.load(argHi(c.arg));
      p.jump(BPF.JEQ_K, dh, lo, c.op === 'EQ' ? fail : pass);
      p.place(lo);
      p.load(argLo(c.arg));
      if (c.op === 'EQ') p.jump(BPF.JEQ_K, dl, pass, fail);
      else p.jump(BPF.JEQ_K, dl, fail, pass);
      break;
    }
    case 'GT':
    case 'GE':
    case 'LT':
    case 'LE': {
      // Compare high halves; only when they are equal do the low halves decide.
      const greater = c.op === 'GT' || c.op === 'GE';
      const eq = next();
      const lo = next();
      p.load(argHi(c.arg));
      p.jump(BPF.JGT_K, dh, greater ? pass : fail, eq);
      p.place(eq);
      p.jump(BPF.JEQ_K, dh, lo, greater ? fail : pass);
      p.place(lo);
      p.load(argLo(c.arg));
      switch (c.op) {
        case 'GT': p.jump(BPF.JGT_K, dl, pass, fail); break;
        case 'GE': p.jump(BPF.JGE_K, dl, pass, fail); break;
        case 'LT': p.jump(BPF.JGE_K, dl, fail, pass); break;
        case 'LE': p.jump(BPF.JGT_K, dl, fail, pass); break;
      }
      break;
    }
    case 'MASKED_EQ': {
      const mh = hi32(c.mask);
      const ml = lo32(c.mask);
      if (mh !== 0) {
        const lo = ml !== 0 ? next() : pass;
        p.load(argHi(c.arg));
        if (mh !== 0xffffffff) p.and(mh);
        p.jump(BPF.JEQ_K, dh, lo, fail);
        if (ml !== 0) p.place(lo);
      }
      if (ml !== 0) {
        p.load(argLo(c.arg));
        if (ml !== 0xffffffff) p.and(ml);
        p.jump(BPF.JEQ_K, dl, pass, fail);
      }
      break;
    }
  }
}

/** Emits the rules of one syscall: the first rule whose conditions all hold returns its action. */
function emitChain(p: Program, rules: Rule[], width: 32 | 64, defaultLabel: number): void {
  rules.forEach((rule, r) => {
    const fail = r === rules.length - 1 ? defaultLabel : p.label();
    rule.conds.forEach((c, i) => {
      const pass = i === rule.conds.length - 1 ? p.ret(rule.action) : p.label();
      emitCond(p, c, width, pass, fail);
      if (i < rule.conds.length - 1) p.place(pass);
    });
    if (r < rules.length - 1) p.place(fail);
  });
}

/** A run of consecutive syscall numbers that jump to the same place. */
interface Run {
  lo: number;
  hi: number;
  target: number;
}

/**
 * Emits a binary search over `runs` (sorted, disjoint) for the syscall number in the accumulator,
 * known to lie in [low, high]; numbers outside every run go to `fallback`. Returns where to jump
 * to start the search (a run's target itself when no test is needed). Splitting at the first
 * number of a run gives the upper half an exact lower bound, so most runs cost one test.
 */
function emitSearch(p: Program, runs: Run[], low: number, high: number, fallback: number): number {
  const run = runs[0];
  if (run === undefined) return fallback;
  if (runs.length === 1) {
    if (run.lo <= low && run.hi >= high) return run.target;
    const start = p.here();
    if (run.lo <= low) {
      p.jump(BPF.JGT_K, run.hi, fallback, run.target);
    } else if (run.hi >= high) {
      p.jump(BPF.JGE_K, run.lo, run.target, fallback);
    } else if (run.lo === run.hi) {
      p.jump(BPF.JEQ_K, run.lo, run.target, fallback);
    } else {
      const inRange = p.label();
      p.jump(BPF.JGT_K, run.hi, fallback, inRange);
      p.place(inRange);
      p.jump(BPF.JGE_K, run.lo, run.target, fallback);
    }
    return start;
  }
  const start = p.here();
  const mid = runs.length >> 1;
  const pivot = runs[mid]?.lo ?? 0;
  const node = p.jump(BPF.JGE_K, pivot, fallback, fallback);
  node.jf = emitSearch(p, runs.slice(0, mid), low, pivot - 1, fallback);
  node.jt = emitSearch(p, runs.slice(mid), pivot, high, fallback);
  return start;
}

/** Emits the dispatch for one AUDIT_ARCH value: number search, then the rule chains it jumps to. */
function emitSection(p: Program, decisions: Map<number, Decision>, defaultLabel: number): void {
  const chainLabels = new Map<string, { label: number; decision: Extract<Decision, { kind: 'chain' }> }>();
  const targets: [number, number][] = [];
  for (const [nr, d] of decisions) {
    if (d.kind === 'action') {
      targets.push([nr, p.ret(d.action)]);
      continue;
    }
    const key = JSON.stringify([d.width, d.rules], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    let entry = chainLabels.get(key);
    if (entry === undefined) {
      entry = { label: p.label(), decision: d };
      chainLabels.set(key, entry);
    }
    targets.push([nr, entry.label]);
  }
  targets.sort((a, b) => a[0] - b[0]);
  const runs: Run[] = [];
  for (const [nr, target] of targets) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.hi + 1 === nr && last.target === target) last.hi = nr;
    else runs.push({ lo: nr, hi: nr, target });
  }
  const before = p.items.length;
  const start = emitSearch(p, runs, 0, 0xffffffff, defaultLabel);
  // No search code (no rules, or one run covering every number): go straight to the target.
  if (p.items.length === before) p.items.push({ kind: 'ja', target: start });
  for (const { label, decision } of chainLabels.values()) {
    p.place(label);
    emitChain(p, decision.rules, decision.width, defaultLabel);
  }
}

/**
 * Compiles an OCI seccomp profile into a BPF program for seccomp(2). Throws ConfigError (with the
 * JSON path of the field) for unknown action, operator, architecture or flag names, out-of-range
 * values, and programs longer than BPF_MAXINSNS; reports skipped rules through `opts.warn`.
 */
export function compileSeccomp(profile: SeccompSpec, opts: CompileSeccompOptions = {}): CompiledSeccomp {
  const warn = opts.warn ?? (() => {});
  const defaultAction = actionValue(profile.defaultAction, profile.defaultErrnoRet, `${ROOT}.defaultAction`, `${ROOT}.defaultErrnoRet`);
  if (defaultAction === SECCOMP_RET_USER_NOTIF) {
    throw new ConfigError(`${ROOT}.defaultAction`, 'SCMP_ACT_NOTIFY cannot be the default action (it would notify the listener of the runtime\'s own calls)');
  }

  const arches = new Set<SeccompArch>(['x86_64']);
  (profile.architectures ?? []).forEach((name, i) => {
    const arch = own(OCI_ARCHITECTURES, name);
    if (arch === undefined) {
      throw new ConfigError(`${ROOT}.architectures[${i}]`, `unknown seccomp architecture ${JSON.stringify(name)}; expected one of ${Object.keys(OCI_ARCHITECTURES).join(', ')}`);
    }
    if (arch !== null) arches.add(arch);
  });

  let flags = 0;
  (profile.flags ?? []).forEach((name, i) => {
    const bit = own(FLAGS, name);
    if (bit === undefined) {
      throw new ConfigError(`${ROOT}.flags[${i}]`, `unknown seccomp flag ${JSON.stringify(name)}; expected one of ${Object.keys(FLAGS).join(', ')}`);
    }
    flags |= bit;
  });

  const notify = (profile.syscalls ?? []).some((sc) => sc.action === 'SCMP_ACT_NOTIFY');
  if (notify) {
    if (!profile.listenerPath) {
      throw new ConfigError(`${ROOT}.listenerPath`, 'a rule uses SCMP_ACT_NOTIFY, so a listener socket path is required');
    }
    flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
    if (flags & SECCOMP_FILTER_FLAG_TSYNC) flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
  } else if (flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
    warn(`${ROOT}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to SCMP_ACT_NOTIFY rules and is left out`);
    flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
  }

  // Rules per ABI, in profile order.
  const perArch = {
    x86_64: new ArchRules(64),
    x86: new ArchRules(32),
    x32: new ArchRules(32),
  };
  for (const { name, rules } of readRules(profile, defaultAction, warn)) {
    for (const arch of arches) {
      const target = perArch[arch];
      const nr = syscallNumber(arch, name);
      const muxOp = arch === 'x86' ? (own(SOCKETCALL_OPS, name) ?? own(IPC_OPS, name)) : undefined;
      for (const rule of rules) {
        if (muxOp !== undefined) {
          // socketcall(op, args)/ipc(op, ...): argument 0 selects the call.
          const muxNr = own(SOCKETCALL_OPS, name) !== undefined ? SOCKETCALL_NR : IPC_NR;
          const rest = rule.conds.filter((c) => c.arg !== 0);
          const muxed: ProfileRule = { action: rule.action, conds: [{ arg: 0, op: 'EQ', value: BigInt(muxOp), valueTwo: 0n }, ...rest] };
          target.add(muxNr, { action: rule.action, conds: specialise(muxed, 32) });
        }
        if (nr !== undefined) target.add(nr, { action: rule.action, conds: specialise(rule, target.width) });
      }
    }
  }

  const p = new Program();
  const defaultLabel = p.ret(defaultAction);
  const badArch = p.ret(SECCOMP_RET_KILL_THREAD);
  const section64 = p.label();
  const section32 = arches.has('x86') ? p.label() : badArch;

  p.load(OFFSET_ARCH);
  if (arches.has('x86')) {
    const next = p.label();
    p.jump(BPF.JEQ_K, AUDIT_ARCH_X86_64, section64, next);
    p.place(next);
    p.jump(BPF.JEQ_K, AUDIT_ARCH_I386, section32, badArch);
  } else {
    p.jump(BPF.JEQ_K, AUDIT_ARCH_X86_64, section64, badArch);
  }

  // x86_64 (and x32) calls.
  p.place(section64);
  p.load(OFFSET_NR);
  const decisions64 = perArch.x86_64.decisions();
  if (arches.has('x32')) {
    for (const [nr, d] of perArch.x32.decisions()) decisions64.set(nr, d);
  } else {
    const x32 = p.label();
    const search = p.label();
    p.jump(BPF.JGE_K, X32_SYSCALL_BIT, x32, search);
    p.place(x32);
    p.jump(BPF.JEQ_K, 0xffffffff, defaultLabel, badArch);
    p.place(search);
  }
  emitSection(p, decisions64, defaultLabel);

  if (arches.has('x86')) {
    p.place(section32);
    p.load(OFFSET_NR);
    emitSection(p, perArch.x86.decisions(), defaultLabel);
  }
  p.finish();

  const tooLong = (count: number) =>
    new ConfigError(`${ROOT}.syscalls`, `the profile compiles to ${count} BPF instructions, more than the kernel's limit of ${BPF_MAXINSNS}; merge rules or use fewer argument conditions`);
  // Jump layout only adds instructions: give up early on a program that is already too long.
  const before = p.items.filter((it) => it.kind !== 'label').length;
  if (before > BPF_MAXINSNS) throw tooLong(before);
  const filter = assemble(p.items);
  const count = filter.length / BPF_INSN_SIZE;
  if (count > BPF_MAXINSNS) throw tooLong(count);
  return {
    filter,
    flags,
    notify,
    ...(profile.listenerPath !== undefined ? { listenerPath: profile.listenerPath } : {}),
    ...(profile.listenerMetadata !== undefined ? { listenerMetadata: profile.listenerMetadata } : {}),
  };
}
