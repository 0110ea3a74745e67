/**
 * An fd hand-over kept on one CPU.
 *
 * SECCOMP_IOCTL_NOTIF_ADDFD wakes the blocked caller with a plain wake-up: the synchronous
 * wake-up flag (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) covers only SECCOMP_IOCTL_NOTIF_SEND. The
 * answering thread is running, so the scheduler places the woken caller on an idle CPU, where
 * it installs the fd and wakes the answering thread (asleep in the ioctl) with another plain
 * wake-up, which again goes to whichever CPU is idle. In a VM each is an inter-processor
 * interrupt and a vCPU coming out of halt: on the 2-vCPU machine this was built on, a served
 * open cost ~75 µs, ~55 of them in that ioctl.
 *
 * So for the length of that one ioctl the caller may run only on the answering thread's CPU, and
 * the answering thread is SCHED_FIFO (it takes the priority first and reads its CPU after: a
 * running real-time thread is not moved by load balancing). The caller runs there as soon as
 * the answering thread sleeps in the ioctl and installs the fd; its wake-up of the real-time
 * thread, whose CPU that is, preempts it before it returns to user space (a real-time task
 * preempts a normal one at once, and a task returning to user space with a reschedule pending
 * switches first). The answering thread gives the caller its CPUs back, then drops its
 * priority. The workload therefore never runs an instruction with the narrowed mask: a thread
 * or process it created would inherit it. Only if a higher real-time task pushed the answering
 * thread to another CPU in between can the caller run first; the answering thread sees it is
 * elsewhere after the ioctl, and gives every task of the caller's group and of its children
 * that has the narrowed mask its CPUs back (logged). Without real-time priority (no
 * CAP_SYS_NICE, a real-time group limit) nothing is pinned. An open costs ~45 µs this way.
 *
 * Only a caller of a normal scheduling class (a real-time one could preempt the answering thread)
 * whose affinity nobody narrowed is moved: its mask is every online CPU (no cpuset narrower than
 * the machine, no taskset), and it is given back as "every CPU", which the kernel
 * keeps as the thread's requested affinity and intersects with its cpuset, as it would with no
 * request at all.
 *
 * A workload that manages affinity itself stops this for its sandbox for good: its first
 * sched_setaffinity, or a sched_getaffinity of another thread, calls `stop` before the call
 * continues, and `stop` waits until no hand-over is pinned (at most 100 ms: one to a stopped
 * caller lasts until it continues). The two sides meet in shared memory (Int32 [pinned
 * hand-overs now, stopped, policy generation]) across the serving thread and the workers: a
 * hand-over counts itself in, then looks at the flag; `stop` sets the flag, then waits for the
 * count, so either the hand-over sees the flag or `stop` sees the hand-over. A caller found fit
 * (every CPU, a normal class) is trusted for a second, until a sched_setattr in the sandbox bumps
 * the generation. Left alone: the host changing a workload thread's affinity (taskset -p from
 * outside) during a pinned hand-over is undone by it, and one changing its class (chrt -p) is
 * seen up to a second late.
 */
import { readFileSync } from 'node:fs';
import { descendants } from '../../container/proc.js';
import * as k from '../../sys/kernel.js';
import { readProcFile, statusIds } from './task.js';
import { listHost } from './view.js';

const PINNED = 0;
const STOPPED = 1;
/** Bumped when a workload thread may have changed its scheduling class (sched_setattr). */
const POLICY_GEN = 2;
/** How long a caller found fit to pin (every CPU, a normal class) is trusted without looking again. */
const FIT_TTL_MS = 1000;
/** Most callers remembered as fit at once (a fork-heavy workload has many tids). */
const FIT_MAX = 4096;
/** Mask size for sched_{get,set}affinity: 1024 CPUs (a larger machine gets EINVAL and no pinning). */
const MASK_BYTES = 128;
/** How long the list of online CPUs is trusted before it is read again. */
const ONLINE_TTL_MS = 1000;
const ONLINE = '/sys/devices/system/cpu/online';
/** How long `stop` waits for pinned hand-overs to end. */
const STOP_WAIT_MS = 100;
/** The answering thread's real-time priority during a hand-over (the lowest). */
const RT_PRIO = 1;

/** Parses a kernel CPU list ("0-3,8,10-11") into an affinity mask of MASK_BYTES; undefined if malformed or too large. */
export function cpuListMask(list: string): Buffer | undefined {
  const mask = Buffer.alloc(MASK_BYTES);
  const text = list.trim();
  if (text === '') return undefined;
  for (const part of text.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi >= MASK_BYTES * 8) return undefined;
    for (let c = lo; c <= hi; c++) mask[c >> 3]! |= 1 << (c & 7);
  }
  return mask;
}

/** One thread's view of a sandbox's hand-over pinning (see the module comment). */
export class HandoverPinning {
  private readonly old = Buffer.alloc(MASK_BYTES);
  private readonly one = Buffer.alloc(MASK_BYTES);
  private readonly every = Buffer.alloc(MASK_BYTES, 0xff);
  private online: Buffer | undefined;
  private onlineAt = -Infinity;
  /** Set once this thread could not become real-time: it pins nothing from then on. */
  private noRealtime = false;
  /**
   * Callers found fit to pin, by tid: when, and at which POLICY_GEN. Their mask can change only
   * by sched_setaffinity (which stops pinning for good) or from outside the sandbox, their class
   * only by sched_setattr (which bumps POLICY_GEN; sched_setscheduler to a real-time class is
   * refused), so the two look-ups are not made again for every hand-over.
   */
  private readonly fit = new Map<number, { at: number; gen: number }>();

  /** A new shared state (one per sandbox); hand `state` to each worker. */
  static create(log?: (msg: string) => void): HandoverPinning {
    return new HandoverPinning(new Int32Array(new SharedArrayBuffer(12)), log);
  }

  /** @param log told once if this thread cannot become real-time (and so pins nothing) */
  constructor(
    readonly state: Int32Array,
    private readonly log?: (msg: string) => void,
  ) {}

  /** Says that a workload thread may have changed its scheduling class: every caller is looked at again. */
  policyChanged(): void {
    Atomics.add(this.state, POLICY_GEN, 1);
  }

  /** Whether pinning was stopped for this sandbox. */
  get stopped(): boolean {
    return Atomics.load(this.state, STOPPED) !== 0;
  }

  /**
   * Runs `handOver` (the NOTIF_ADDFD ioctl for caller `tid`) with `tid` and this thread kept on
   * this thread's CPU when that is safe, and returns its result. Every failure to pin just hands
   * over unpinned.
   */
  around(tid: number, handOver: () => number): number {
    Atomics.add(this.state, PINNED, 1);
    let cpu = -1;
    try {
      if (!this.noRealtime && Atomics.load(this.state, STOPPED) === 0) cpu = this.pin(tid);
    } finally {
      if (cpu < 0) this.leave();
    }
    if (cpu < 0) return handOver();
    try {
      return handOver();
    } finally {
      // the caller first: it may not run before this thread has given its CPUs back
      const moved = k.schedGetcpu() !== cpu;
      k.schedSetaffinity(tid, this.every);
      if (moved) this.repair(tid);
      k.schedSetscheduler(0, k.SCHED.OTHER, 0);
      this.leave();
    }
  }

  /**
   * Stops pinning in this sandbox for good, once every pinned hand-over has ended, or after
   * STOP_WAIT_MS: a hand-over to a stopped caller (SIGSTOP) lasts until it continues, and the
   * call that would continue it may be waiting behind this one.
   */
  stop(): void {
    Atomics.store(this.state, STOPPED, 1);
    const until = performance.now() + STOP_WAIT_MS;
    for (let n = Atomics.load(this.state, PINNED); n !== 0; n = Atomics.load(this.state, PINNED)) {
      const left = until - performance.now();
      if (left <= 0) {
        this.log?.(`${n} fd hand-over(s) still pinned after ${STOP_WAIT_MS} ms (a stopped caller?): not waiting for them`);
        return;
      }
      Atomics.wait(this.state, PINNED, n, Math.min(left, 10));
    }
  }

  private leave(): void {
    if (Atomics.sub(this.state, PINNED, 1) === 1) Atomics.notify(this.state, PINNED);
  }

  /**
   * Makes this thread real-time and keeps `tid` on this thread's CPU, if `tid` is of a normal
   * scheduling class and its mask is every online CPU; returns that CPU, or -1 (nothing changed).
   */
  private pin(tid: number): number {
    const online = this.onlineMask();
    if (!online) return -1;
    const now = performance.now();
    const gen = Atomics.load(this.state, POLICY_GEN);
    const seen = this.fit.get(tid);
    if (seen === undefined || seen.gen !== gen || now - seen.at > FIT_TTL_MS) {
      this.fit.delete(tid);
      if (k.schedGetaffinity(tid, this.old) < 0 || !this.old.equals(online)) return -1;
      // a real-time caller could preempt this thread and run on before it is given its CPUs back
      const policy = k.schedGetscheduler(tid);
      if (policy !== k.SCHED.OTHER && policy !== k.SCHED.BATCH && policy !== k.SCHED.IDLE) return -1;
      if (this.fit.size >= FIT_MAX) this.fit.clear();
      this.fit.set(tid, { at: now, gen });
    }
    const rc = k.schedSetscheduler(0, k.SCHED.FIFO, RT_PRIO);
    if (rc < 0) {
      this.noRealtime = true;
      this.log?.(`cannot become real-time (errno ${-rc}): fd hand-overs are not kept on one CPU`);
      return -1;
    }
    const cpu = k.schedGetcpu(); // as real-time: where it stays while it runs
    if (cpu >= 0 && cpu < MASK_BYTES * 8) {
      this.one.fill(0);
      this.one[cpu >> 3] = 1 << (cpu & 7);
      if (k.schedSetaffinity(tid, this.one) === 0) return cpu;
    }
    k.schedSetscheduler(0, k.SCHED.OTHER, 0);
    return -1;
  }

  /**
   * The caller may have run before getting its CPUs back (this thread was moved off the CPU):
   * gives every task of its process, and of the processes below it, that has the narrowed mask
   * every CPU again.
   */
  private repair(tid: number): void {
    const group = statusIds(readProcFile(`/proc/${tid}/status`), 'Tgid')[0];
    if (group === undefined) return;
    const tasks = descendants(group).flatMap((pid) => {
      const names = listHost(`/proc/${pid}/task`);
      return typeof names === 'number' ? [] : names.map(Number);
    });
    const mask = Buffer.alloc(MASK_BYTES);
    const fixed = tasks.filter((t) => k.schedGetaffinity(t, mask) === 0 && mask.equals(this.one) && k.schedSetaffinity(t, this.every) === 0);
    this.log?.(`an fd hand-over's caller (tid ${tid}) may have run before it got its CPUs back: ${fixed.length} task(s) given them back`);
  }

  /** The online CPUs as a mask (read again after ONLINE_TTL_MS); undefined if unreadable. */
  private onlineMask(): Buffer | undefined {
    const now = performance.now();
    if (now - this.onlineAt > ONLINE_TTL_MS) {
      this.onlineAt = now;
      try {
        this.online = cpuListMask(readFileSync(ONLINE, 'latin1'));
      } catch {
        this.online = undefined;
      }
    }
    return this.online;
  }
}
