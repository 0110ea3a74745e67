/**
 * ptrace(2) for the sentry checkpointer: seizing a workload process, reading and setting its
 * registers, and running system calls inside it ("injection"). An injected call runs on a
 * `syscall` instruction of the task's own vDSO, so nothing is ever written into its code: the
 * registers are set to the call, the task is resumed to its syscall-entry stop and then to its
 * syscall-exit stop, and the result is read back from rax. koffi is loaded on first use.
 */
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { MoatError } from '../../errors.js';
import { loadKoffi } from '../../sys/koffi.js';
import * as k from '../../sys/kernel.js';

/** A ptrace operation on a workload process failed. */
export class PtraceError extends MoatError {
  constructor(readonly pid: number, detail: string) {
    super(`process ${pid}: ${detail}`);
  }
}

const SYS_PTRACE = 101;
const SYS_GET_ROBUST_LIST = 274;
const PTRACE = {
  CONT: 7,
  KILL: 8,
  DETACH: 17,
  GETREGS: 12,
  SETREGS: 13,
  SYSCALL: 24,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  GET_RSEQ_CONFIGURATION: 0x420f,
  SETOPTIONS: 0x4200,
  GETEVENTMSG: 0x4201,
} as const;
const PTRACE_O_TRACESYSGOOD = 1;
const PTRACE_O_TRACECLONE = 8;
const PTRACE_EVENT_CLONE = 3;
const PTRACE_EVENT_STOP = 128;
const NT_X86_XSTATE = 0x202;
const WALL = 0x40000000;
const WNOHANG = 1;
/** Something to Atomics.wait on: a synchronous sleep. */
const NAP = new Int32Array(new SharedArrayBuffer(4));

/** Bytes of struct user_regs_struct (x86_64): 27 registers of 8 bytes. */
export const REGS_SIZE = 27 * 8;
/** Byte offsets of registers in struct user_regs_struct. */
export const REG = {
  r15: 0, r14: 8, r13: 16, r12: 24, rbp: 32, rbx: 40, r11: 48, r10: 56, r9: 64, r8: 72,
  rax: 80, rcx: 88, rdx: 96, rsi: 104, rdi: 112, orig_rax: 120, rip: 128, cs: 136, eflags: 144,
  rsp: 152, ss: 160, fs_base: 168, gs_base: 176, ds: 184, es: 192, fs: 200, gs: 208,
} as const;
/** Largest XSAVE area the kernel hands out (AMX included is about 11 KiB). */
const XSTATE_MAX = 16384;

interface Ptrace {
  ptraceBuf(nr: number, req: number, pid: number, addr: bigint, data: Buffer | null): number | bigint;
  ptraceVal(nr: number, req: number, pid: number, addr: bigint, data: bigint): number | bigint;
  ptraceIov(nr: number, req: number, pid: number, addr: bigint, iov: { base: Buffer; len: number }): number | bigint;
  waitpid(pid: number, status: Buffer, options: number): number;
  prlimit(pid: number, res: number, neu: Buffer | null, old: Buffer | null): number;
  robust(nr: number, pid: number, head: Buffer, len: Buffer): number | bigint;
  tee(fin: number, fout: number, len: number, flags: number): number | bigint;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  recvmsg(fd: number, msg: { name: null; namelen: number; iov: { base: Buffer; len: number }[]; iovlen: number; control: Buffer | null; controllen: number; flags: number }, flags: number): number | bigint;
  errno(): number;
  strerror(e: number): string;
}

let lib: Ptrace | undefined;

function load(): Ptrace {
  if (lib) return lib;
  // koffi's module object; its shape is described by the casts below
  const koffi = loadKoffi() as {
    load(n: string): { func(sig: string): unknown };
    struct(n: string, d: Record<string, string>): unknown;
    errno(): number;
  };
  const c = koffi.load('libc.so.6');
  koffi.struct('moat_pt_iovec', { base: 'uint8_t *', len: 'size_t' });
  koffi.struct('moat_pt_msghdr', {
    name: 'void *', namelen: 'uint32_t', iov: 'moat_pt_iovec *', iovlen: 'size_t', control: 'void *', controllen: 'size_t', flags: 'int',
  });
  lib = {
    ptraceBuf: c.func('long syscall(long nr, long req, long pid, uint64_t addr, _Inout_ uint8_t *data)') as Ptrace['ptraceBuf'],
    ptraceVal: c.func('long syscall(long nr, long req, long pid, uint64_t addr, uint64_t data)') as Ptrace['ptraceVal'],
    ptraceIov: c.func('long syscall(long nr, long req, long pid, uint64_t addr, _Inout_ moat_pt_iovec *iov)') as Ptrace['ptraceIov'],
    waitpid: c.func('int waitpid(int pid, _Out_ uint8_t *status, int options)') as Ptrace['waitpid'],
    prlimit: c.func('int prlimit(int pid, int res, const uint8_t *neu, _Out_ uint8_t *old)') as Ptrace['prlimit'],
    robust: c.func('long syscall(long nr, long pid, _Out_ uint8_t *head, _Out_ uint8_t *len)') as Ptrace['robust'],
    tee: c.func('long tee(int fin, int fout, size_t len, unsigned int flags)') as Ptrace['tee'],
    setsockopt: c.func('int setsockopt(int fd, int level, int name, const uint8_t *val, uint32_t len)') as Ptrace['setsockopt'],
    recvmsg: c.func('long recvmsg(int fd, _Inout_ moat_pt_msghdr *msg, int flags)') as Ptrace['recvmsg'],
    errno: () => koffi.errno(),
    strerror: c.func('const char *strerror(int e)') as Ptrace['strerror'],
  };
  return lib;
}

/** The registers of a stopped task (struct user_regs_struct), with typed access. */
export class Regs {
  constructor(readonly buf: Buffer = Buffer.alloc(REGS_SIZE)) {}
  /** A copy. */
  clone(): Regs {
    return new Regs(Buffer.from(this.buf));
  }
  /** Register `r` as an unsigned 64-bit value. */
  get(r: keyof typeof REG): bigint {
    return this.buf.readBigUInt64LE(REG[r]);
  }
  /** Sets register `r` (negative numbers as two's complement). */
  set(r: keyof typeof REG, v: bigint | number): void {
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), REG[r]);
  }
  /** Register `r` as a signed 64-bit value. */
  signed(r: keyof typeof REG): bigint {
    return this.buf.readBigInt64LE(REG[r]);
  }
}

/** rseq registration of a thread (PTRACE_GET_RSEQ_CONFIGURATION). */
export interface RseqConfig {
  ptr: bigint;
  size: number;
  signature: number;
}

/** One resource limit (RLIMIT_* number, soft and hard; 2^64-1 is unlimited). */
export interface Rlimit {
  resource: number;
  soft: bigint;
  hard: bigint;
}

/**
 * A process this checkpointer has seized with PTRACE_SEIZE and holds stopped. Every method
 * expects the task to be in a ptrace stop; `detach` lets it run again.
 */
export class Tracee {
  private memFd = -1;
  private syscallInsn = 0n;
  /** Host tids of the threads the task made during injected calls (PTRACE_EVENT_CLONE). */
  readonly cloned: number[] = [];

  private constructor(readonly pid: number) {}

  /**
   * A thread this checkpointer traces already (one an injected clone made, auto-attached by
   * PTRACE_O_TRACECLONE), once it reports its first stop.
   */
  static adopt(tid: number): Tracee {
    const t = new Tracee(tid);
    t.waitStop('the new thread\'s first stop');
    return t;
  }

  /** Also traces the threads the task makes from now on (PTRACE_O_TRACECLONE). */
  traceClones(): void {
    this.check('PTRACE_SETOPTIONS', load().ptraceVal(SYS_PTRACE, PTRACE.SETOPTIONS, this.pid, 0n, BigInt(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE)));
  }

  private fail(what: string, errno?: number): never {
    const l = load();
    const e = errno ?? l.errno();
    throw new PtraceError(this.pid, `${what}: ${l.strerror(e)}`);
  }

  private check(what: string, rc: number | bigint): void {
    if (Number(rc) < 0) this.fail(what);
  }

  /** Seizes `pid` and stops it (PTRACE_SEIZE, PTRACE_INTERRUPT), waiting for the stop. */
  static seize(pid: number): Tracee {
    const t = new Tracee(pid);
    const l = load();
    t.check('PTRACE_SEIZE', l.ptraceVal(SYS_PTRACE, PTRACE.SEIZE, pid, 0n, BigInt(PTRACE_O_TRACESYSGOOD)));
    try {
      t.check('PTRACE_INTERRUPT', l.ptraceVal(SYS_PTRACE, PTRACE.INTERRUPT, pid, 0n, 0n));
      t.waitStop('the interrupt');
    } catch (e) {
      l.ptraceVal(SYS_PTRACE, PTRACE.DETACH, pid, 0n, 0n);
      throw e;
    }
    return t;
  }

  /**
   * Waits (up to 10 s) for the task's next ptrace stop and returns its wait status. A stop for
   * a signal other than a trap means the signal arrived meanwhile: it is kept pending by
   * resuming into the next stop is not done here; the caller sees the status.
   */
  waitStop(what: string): number {
    const l = load();
    const status = Buffer.alloc(4);
    const deadline = Date.now() + 10_000;
    let polls = 0;
    for (;;) {
      const rc = l.waitpid(this.pid, status, WALL | WNOHANG);
      if (rc < 0) {
        if (l.errno() === 4) continue;
        this.fail(`waiting for ${what}`);
      }
      if (rc === this.pid) {
        const s = status.readInt32LE(0);
        if ((s & 0xff) !== 0x7f) throw new PtraceError(this.pid, `ended while waiting for ${what} (wait status 0x${s.toString(16)})`);
        return s;
      }
      if (Date.now() > deadline) throw new PtraceError(this.pid, `did not stop for ${what} within 10 s`);
      // a stop is usually microseconds away: poll finely first, then every millisecond
      Atomics.wait(NAP, 0, 0, ++polls < 1000 ? 0.01 : 1);
    }
  }

  /** True if `status` is the stop PTRACE_INTERRUPT or a group stop reports. */
  static isEventStop(status: number): boolean {
    return status >>> 16 === PTRACE_EVENT_STOP;
  }

  /** The general registers. */
  getRegs(): Regs {
    const r = new Regs();
    this.check('PTRACE_GETREGS', load().ptraceBuf(SYS_PTRACE, PTRACE.GETREGS, this.pid, 0n, r.buf));
    return r;
  }

  /** Sets the general registers. */
  setRegs(r: Regs): void {
    this.check('PTRACE_SETREGS', load().ptraceBuf(SYS_PTRACE, PTRACE.SETREGS, this.pid, 0n, r.buf));
  }

  /** The extended FPU state (XSAVE area), as long as the kernel reports it. */
  getXstate(): Buffer {
    const buf = Buffer.alloc(XSTATE_MAX);
    const iov = { base: buf, len: buf.length };
    this.check('PTRACE_GETREGSET(NT_X86_XSTATE)', load().ptraceIov(SYS_PTRACE, PTRACE.GETREGSET, this.pid, BigInt(NT_X86_XSTATE), iov));
    return Buffer.from(buf.subarray(0, Number(iov.len)));
  }

  /** Sets the extended FPU state. */
  setXstate(x: Buffer): void {
    const buf = Buffer.from(x);
    this.check('PTRACE_SETREGSET(NT_X86_XSTATE)', load().ptraceIov(SYS_PTRACE, PTRACE.SETREGSET, this.pid, BigInt(NT_X86_XSTATE), { base: buf, len: buf.length }));
  }

  /** The blocked-signal mask (64 bits). */
  getSigmask(): bigint {
    const b = Buffer.alloc(8);
    this.check('PTRACE_GETSIGMASK', load().ptraceBuf(SYS_PTRACE, PTRACE.GETSIGMASK, this.pid, 8n, b));
    return b.readBigUInt64LE(0);
  }

  /** Sets the blocked-signal mask. */
  setSigmask(mask: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(mask, 0);
    this.check('PTRACE_SETSIGMASK', load().ptraceBuf(SYS_PTRACE, PTRACE.SETSIGMASK, this.pid, 8n, b));
  }

  /** The task's rseq registration, or null if it has none. */
  rseq(): RseqConfig | null {
    const b = Buffer.alloc(32);
    this.check('PTRACE_GET_RSEQ_CONFIGURATION', load().ptraceBuf(SYS_PTRACE, PTRACE.GET_RSEQ_CONFIGURATION, this.pid, 32n, b));
    const ptr = b.readBigUInt64LE(0);
    const size = b.readUInt32LE(8);
    return ptr === 0n || size === 0 ? null : { ptr, size, signature: b.readUInt32LE(12) };
  }

  /** The task's robust futex list head and its length (get_robust_list). */
  robustList(): { head: bigint; len: number } {
    const head = Buffer.alloc(8);
    const len = Buffer.alloc(8);
    this.check('get_robust_list', load().robust(SYS_GET_ROBUST_LIST, this.pid, head, len));
    return { head: head.readBigUInt64LE(0), len: Number(len.readBigUInt64LE(0)) };
  }

  /** A resource limit of the process. */
  getRlimit(resource: number): Rlimit {
    const old = Buffer.alloc(16);
    this.check(`prlimit(${resource})`, load().prlimit(this.pid, resource, null, old));
    return { resource, soft: old.readBigUInt64LE(0), hard: old.readBigUInt64LE(8) };
  }

  /** Sets a resource limit of the process. */
  setRlimit(l: Rlimit): void {
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(l.soft, 0);
    b.writeBigUInt64LE(l.hard, 8);
    this.check(`prlimit(${l.resource})`, load().prlimit(this.pid, l.resource, b, null));
  }

  private mem(): number {
    if (this.memFd < 0) this.memFd = openSync(`/proc/${this.pid}/mem`, 'r+');
    return this.memFd;
  }

  /** Reads `len` bytes at `addr` (through /proc/PID/mem, so protections do not stand in the way). */
  read(addr: bigint, len: number): Buffer {
    const buf = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const n = readSync(this.mem(), buf, done, len - done, Number(addr) + done);
      if (n <= 0) throw new PtraceError(this.pid, `cannot read ${len} bytes at 0x${addr.toString(16)}`);
      done += n;
    }
    return buf;
  }

  /** Writes `data` at `addr` (through /proc/PID/mem: read-only private pages are copied on write). */
  write(addr: bigint, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      const n = writeSync(this.mem(), data, done, data.length - done, Number(addr) + done);
      if (n <= 0) throw new PtraceError(this.pid, `cannot write ${data.length} bytes at 0x${addr.toString(16)}`);
      done += n;
    }
  }

  /** The `syscall` instruction injected calls run on. */
  syscallAt(): bigint {
    return this.syscallInsn;
  }

  /** Uses the `syscall` instruction at `addr` for injected calls (see findSyscallInsn). */
  useSyscallAt(addr: bigint): void {
    this.syscallInsn = addr;
  }

  /**
   * Runs system call `nr` with `args` in the task and returns its raw result (negative: -errno).
   * The task's registers are left as the call left them; the caller restores what it needs.
   */
  inject(nr: number, args: readonly (bigint | number)[]): bigint {
    if (this.syscallInsn === 0n) throw new PtraceError(this.pid, 'no syscall instruction to inject calls on');
    const l = load();
    const r = this.getRegs();
    const names = ['rdi', 'rsi', 'rdx', 'r10', 'r8', 'r9'] as const;
    r.set('rax', nr);
    r.set('orig_rax', -1n); // no syscall restart for whatever the task was stopped in
    r.set('rip', this.syscallInsn);
    names.forEach((n, i) => r.set(n, args[i] ?? 0n));
    this.setRegs(r);
    for (const stop of ['syscall entry', 'syscall exit']) {
      this.check('PTRACE_SYSCALL', l.ptraceVal(SYS_PTRACE, PTRACE.SYSCALL, this.pid, 0n, 0n));
      for (;;) {
        const s = this.waitStop(`the injected call's ${stop}`);
        const sig = (s >> 8) & 0xff;
        if (sig === (5 | 0x80)) break;
        if (s >>> 16 === PTRACE_EVENT_CLONE) {
          const msg = Buffer.alloc(8);
          this.check('PTRACE_GETEVENTMSG', l.ptraceBuf(SYS_PTRACE, PTRACE.GETEVENTMSG, this.pid, 0n, msg));
          this.cloned.push(Number(msg.readBigUInt64LE(0)));
          this.check('PTRACE_SYSCALL', l.ptraceVal(SYS_PTRACE, PTRACE.SYSCALL, this.pid, 0n, 0n));
          continue;
        }
        // another signal reached the task meanwhile: it stays pending, the call goes on
        if (Tracee.isEventStop(s) || sig !== 5) {
          this.check('PTRACE_SYSCALL', l.ptraceVal(SYS_PTRACE, PTRACE.SYSCALL, this.pid, 0n, 0n));
          continue;
        }
        throw new PtraceError(this.pid, `unexpected stop 0x${s.toString(16)} during an injected call ${nr}`);
      }
    }
    return this.getRegs().signed('rax');
  }

  /** Like inject, but a negative result is a PtraceError naming `what`. */
  call(what: string, nr: number, args: readonly (bigint | number)[]): bigint {
    const rc = this.inject(nr, args);
    if (rc < 0n && rc > -4096n) this.fail(`${what} (injected)`, Number(-rc));
    return rc;
  }

  /**
   * Kills the process and waits for its end as its tracer: until the tracer has seen a traced
   * process exit, its parent cannot reap it (and the container would not look stopped).
   */
  kill(): void {
    this.closeMem();
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // gone already (another thread's kill took the whole process): still ours to wait for
    }
    this.reap();
  }

  /** Waits (up to 5 s) for the traced task's end, as its tracer (after the process was killed). */
  reap(): void {
    this.closeMem();
    const l = load();
    const status = Buffer.alloc(4);
    const deadline = Date.now() + 5_000;
    for (;;) {
      const rc = l.waitpid(this.pid, status, WALL | WNOHANG);
      if (rc < 0 && l.errno() !== 4) return; // ECHILD: not ours to wait for any more
      if (rc === this.pid && (status.readInt32LE(0) & 0xff) !== 0x7f) return; // exited (not a stop)
      if (Date.now() > deadline) return;
      Atomics.wait(NAP, 0, 0, 1);
    }
  }

  /** Lets the task go; with `signal` (e.g. SIGSTOP) that signal is delivered as it leaves. */
  detach(signal = 0): void {
    this.closeMem();
    this.check('PTRACE_DETACH', load().ptraceVal(SYS_PTRACE, PTRACE.DETACH, this.pid, 0n, BigInt(signal)));
  }

  private closeMem(): void {
    if (this.memFd >= 0) closeSync(this.memFd);
    this.memFd = -1;
  }
}

/** The address of a `syscall` instruction (0f 05) in `code`, mapped at `base`; 0n if none. */
export function findSyscallInsn(code: Buffer, base: bigint): bigint {
  for (let i = 0; i + 1 < code.length; i++) if (code[i] === 0x0f && code[i + 1] === 0x05) return base + BigInt(i);
  return 0n;
}

const F_GETPIPE_SZ = 1032;
const F_SETPIPE_SZ = 1031;
const SPLICE_F_NONBLOCK = 2;

/**
 * The bytes waiting in the pipe whose read end is fd `fd` of process `pid`, and its capacity,
 * without taking them: the end is copied out with pidfd_getfd and the data duplicated into a
 * pipe of this process with tee(2).
 */
export function peekPipe(pid: number, fd: number): { capacity: number; data: string } {
  const r = takeFd(pid, fd);
  const mine = k.pipe2(k.O.CLOEXEC | k.O.NONBLOCK);
  if (typeof mine === 'number') {
    k.close(r);
    throw new PtraceError(pid, `pipe2: errno ${-mine}`);
  }
  try {
    const capacity = k.fcntl(r, F_GETPIPE_SZ);
    k.fcntl(mine[1], F_SETPIPE_SZ, capacity);
    const n = Number(load().tee(r, mine[1], capacity, SPLICE_F_NONBLOCK));
    const errno = n < 0 ? load().errno() : 0;
    if (n < 0 && errno !== 11) throw new PtraceError(pid, `tee of pipe end ${fd}: ${load().strerror(errno)}`);
    const data = Buffer.alloc(Math.max(n, 0));
    let got = 0;
    while (got < data.length) {
      const m = k.read(mine[0], data.subarray(got), data.length - got);
      if (m <= 0) break;
      got += m;
    }
    return { capacity, data: data.subarray(0, got).toString('base64') };
  } finally {
    k.close(r);
    k.close(mine[0]);
    k.close(mine[1]);
  }
}

const SOL_SOCKET = 1;
const SO_PEEK_OFF = 42;
const MSG_PEEK = 2;
const MSG_DONTWAIT = 0x40;
const MSG_CTRUNC = 8;

/** A copy of fd `fd` of process `pid` (pidfd_getfd); the caller closes it. */
export function takeFd(pid: number, fd: number): number {
  const pidfd = k.pidfdOpen(pid);
  if (pidfd < 0) throw new PtraceError(pid, `pidfd_open: errno ${-pidfd}`);
  const copy = k.pidfdGetfd(pidfd, fd);
  k.close(pidfd);
  if (copy < 0) throw new PtraceError(pid, `taking fd ${fd}: errno ${-copy}`);
  return copy;
}

/**
 * The messages waiting at the unix socket that is fd `fd` of process `pid` (a stream's bytes as
 * one), read with MSG_PEEK from a peek offset so nothing is taken; null if any carries
 * ancillary data (fds or credentials in flight, which a checkpoint cannot carry).
 */
export function peekSocket(pid: number, fd: number, stream: boolean): string[] | null {
  const s = takeFd(pid, fd);
  const l = load();
  const off = Buffer.alloc(4);
  try {
    off.writeInt32LE(0, 0);
    if (l.setsockopt(s, SOL_SOCKET, SO_PEEK_OFF, off, 4) !== 0) throw new PtraceError(pid, `SO_PEEK_OFF on fd ${fd}: ${l.strerror(l.errno())}`);
    const out: Buffer[] = [];
    const buf = Buffer.alloc(1 << 20);
    for (let total = 0; total < 8 << 20 && out.length < 1024; ) {
      const msg = { name: null, namelen: 0, iov: [{ base: buf, len: buf.length }], iovlen: 1, control: null, controllen: 0, flags: 0 };
      const n = Number(l.recvmsg(s, msg, MSG_PEEK | MSG_DONTWAIT));
      if (n < 0) break; // EAGAIN: nothing more
      if ((msg.flags & MSG_CTRUNC) !== 0) return null;
      if (n === 0 && stream) break;
      out.push(Buffer.from(buf.subarray(0, n)));
      total += n;
    }
    return stream ? [Buffer.concat(out).toString('base64')].filter((x) => x !== '') : out.map((b) => b.toString('base64'));
  } finally {
    off.writeInt32LE(-1, 0);
    l.setsockopt(s, SOL_SOCKET, SO_PEEK_OFF, off, 4);
    k.close(s);
  }
}
