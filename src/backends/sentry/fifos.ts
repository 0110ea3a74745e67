/**
 * The FIFO read ends the sentry holds for readers that wait in open(2), shared by the serving
 * thread and the workers.
 *
 * A blocking open of a FIFO for reading is answered on a worker once a writer comes; meanwhile
 * the worker holds the read end the serving thread's probe opened (sys_file.ts, fifoReadEnd),
 * which counts as a reader, as the kernel counts a reader blocked in its open. When that reader
 * is killed, the kernel stops counting it at once, but the held end stays open until its worker
 * runs again: a writer opening the FIFO in between found a reader that was gone, wrote, and what
 * it wrote was lost when the end closed. With this record, an open for writing that finds a
 * reader first asks whether any end held for that FIFO belongs to a caller that stopped waiting
 * (its notification is no longer pending); if so it wakes that worker, waits for it to close the
 * end, and opens again.
 *
 * A worker may also close a dead reader's end by itself (its wait saw the caller's pidfd) after
 * the writer's open counted that end but before the writer looks at the record; so every
 * release also counts up a shared generation, and a writer whose open began before a release
 * opens again too.
 *
 * Shared memory: per worker slot, ten int32s
 *   [state, dev lo, dev hi, ino lo, ino hi, listener fd, notification id lo, id hi, kick read fd, kick write fd]
 * then one int32 after the last slot: the release generation.
 * `state` is 1 while the worker holds a FIFO read end (set by the serving thread before it hands
 * the call over, cleared by the worker after it closed the end) and 0 otherwise. A byte written
 * to the kick pipe wakes the worker's wait, which then checks its caller again.
 */
import * as k from '../../sys/kernel.js';
import { modeOf, S_IFIFO, S_IFMT } from './resolve.js';
import type { Notif } from './types.js';

const SLOT = 10;
const STATE = 0;
const DEV = 1;
const INO = 3;
const LISTENER = 5;
const ID = 6;
const KICK_R = 8;
const KICK_W = 9;
/** How long an opener waits for a woken worker to let go of a dead reader's end. */
const DROP_WAIT_MS = 1000;
const EMPTY = k.cpath('');

/** The shared record of held FIFO read ends, as one thread of the sentry sees it. */
export class FifoWaiters {
  private readonly idBuf = Buffer.alloc(8);
  private readonly stBuf = Buffer.alloc(144);
  private readonly one = Buffer.from([1]);
  private readonly drain = Buffer.alloc(64);

  /**
   * @param slots the shared table (see the module comment)
   * @param self  this thread's slot (a worker's index), or -1 on the serving thread
   */
  /** Where the release generation is kept (after the last slot). */
  private readonly gen: number;

  constructor(
    readonly slots: Int32Array,
    private readonly self = -1,
  ) {
    this.gen = slots.length - 1;
  }

  /** A table with `max` slots; each worker's kick pipe is made when the worker is (`addKick`). */
  static create(max: number): FifoWaiters {
    return new FifoWaiters(new Int32Array(new SharedArrayBuffer(4 * (SLOT * max + 1))));
  }

  /** The release generation: taken before a FIFO open for writing, then given to `dropStale`. */
  generation(): number {
    return Atomics.load(this.slots, this.gen);
  }

  /** Makes slot `i`'s kick pipe (non-blocking, close-on-exec); false if pipe2 failed. */
  addKick(i: number): boolean {
    const p = k.pipe2(k.O.NONBLOCK | k.O.CLOEXEC);
    if (typeof p === 'number') return false;
    this.slots[i * SLOT + KICK_R] = p[0];
    this.slots[i * SLOT + KICK_W] = p[1];
    return true;
  }

  /**
   * Serving thread, before handing `notif` to worker `i`: records `fd` if it is a FIFO's end (the
   * worker will hold it while the caller waits).
   */
  hold(i: number, listener: number, notif: Notif, fd: number): void {
    if (fd < 0 || k.fstatat(fd, EMPTY, this.stBuf, k.AT.EMPTY_PATH) < 0) return;
    if ((modeOf(this.stBuf) & S_IFMT) !== S_IFIFO) return;
    const b = i * SLOT;
    const s = this.slots;
    s[b + DEV] = this.stBuf.readInt32LE(0);
    s[b + DEV + 1] = this.stBuf.readInt32LE(4);
    s[b + INO] = this.stBuf.readInt32LE(8);
    s[b + INO + 1] = this.stBuf.readInt32LE(12);
    s[b + LISTENER] = listener;
    const w = notif.words;
    if (w !== undefined && w.length >= 14) {
      s[b + ID] = w[12]! | 0;
      s[b + ID + 1] = w[13]! | 0;
    } else {
      s[b + ID] = Number(notif.id & 0xffffffffn) | 0;
      s[b + ID + 1] = Number(notif.id >> 32n) | 0;
    }
    Atomics.store(s, b + STATE, 1);
  }

  /** Worker `i`, after it closed the end it held: clears the slot and wakes an opener waiting for that. */
  release(i: number): void {
    if (Atomics.exchange(this.slots, i * SLOT + STATE, 0) === 0) return;
    Atomics.add(this.slots, this.gen, 1);
    Atomics.notify(this.slots, i * SLOT + STATE);
  }

  /** The read end of this thread's kick pipe (a FIFO wait polls it too), or -1. */
  kickFd(): number {
    return this.self >= 0 ? (this.slots[this.self * SLOT + KICK_R] ?? -1) : -1;
  }

  /** Empties this thread's kick pipe (after a wake-up; the wait checks its caller again anyway). */
  drainKick(): void {
    const fd = this.kickFd();
    if (fd >= 0) while (k.read(fd, this.drain, this.drain.length) > 0);
  }

  /**
   * Before an open for writing of the FIFO `st` (a struct stat) counts the readers it found: lets
   * go of every end held for that FIFO whose caller stopped waiting (killed, or interrupted: its
   * notification is no longer pending). Wakes each such worker and waits (up to DROP_WAIT_MS) until
   * it has closed the end. True if one was closed, here or by its worker since `since` (the
   * generation taken before the open): the open must be tried again, as it may have counted that
   * end as its reader. False if none was.
   */
  dropStale(st: Buffer, since: number): boolean {
    const s = this.slots;
    const dev0 = st.readInt32LE(0);
    const dev1 = st.readInt32LE(4);
    const ino0 = st.readInt32LE(8);
    const ino1 = st.readInt32LE(12);
    let dropped = false;
    for (let b = 0; b < this.gen; b += SLOT) {
      if (b === this.self * SLOT || Atomics.load(s, b + STATE) !== 1) continue;
      if (s[b + DEV] !== dev0 || s[b + DEV + 1] !== dev1 || s[b + INO] !== ino0 || s[b + INO + 1] !== ino1) continue;
      this.idBuf.writeInt32LE(s[b + ID]!, 0);
      this.idBuf.writeInt32LE(s[b + ID + 1]!, 4);
      if (k.ioctlBuf(s[b + LISTENER]!, k.SECCOMP_IOCTL.NOTIF_ID_VALID, this.idBuf) === 0) continue; // a reader that still waits
      k.write(s[b + KICK_W]!, this.one, 1);
      if (Atomics.wait(s, b + STATE, 1, DROP_WAIT_MS) !== 'timed-out') dropped = true;
    }
    return dropped || this.generation() !== since;
  }
}
