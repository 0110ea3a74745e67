/**
 * The sentry's serving loop. The sentry process's main thread polls every seccomp listener of
 * the sandbox (the init's and one per `exec`) plus the socket new listeners arrive on, itself
 * while the sandbox keeps it busy and from a libuv thread once it has been quiet for IDLE_MS, so
 * that Node's event loop turns while nothing is to be served (and at least every TURN_MS while
 * something is); each notification is decoded,
 * dispatched through the syscall table to its family's handler, and answered: a value, an
 * errno, CONTINUE, or an fd the sentry opened itself (SECCOMP_IOCTL_NOTIF_ADDFD with
 * SECCOMP_ADDFD_FLAG_SEND, so installing the fd and answering are one atomic step).
 *
 * Calls that may block for long (a connect on a blocking socket, opening a FIFO) are handed to
 * worker threads (see workers.ts) so one slow call never stalls the rest of the sandbox.
 */
import * as k from '../../sys/kernel.js';
import { entryByNr } from './table.js';
import { identityFor } from './ident.js';
import type { SentryLevel } from './types.js';
import { NotifTask, notifValid, putId } from './task.js';
import type { NotifId } from './task.js';
import type { HandoverPinning } from './pin.js';
import type { Family } from './table.js';
import type { Handler, HandlerTable, Notif, Reply, Sandbox, Task } from './types.js';

/** Per-family handler tables plus the optional "may this call block" predicates. */
export interface Families {
  tables: Partial<Record<Family, HandlerTable>>;
  mayBlock?: (name: string, t: Task, sb: Sandbox) => boolean;
}

/**
 * The handler of a served call: its family's table first; calls the table files under another
 * family but whose handling is generic (fcntl, ioctl, ...) fall back to the misc table.
 */
export function handlerFor(families: Families, entry: { name: string; family?: Family | undefined }): Handler | undefined {
  return entry.family ? (families.tables[entry.family]?.[entry.name] ?? families.tables.misc?.[entry.name]) : undefined;
}

/**
 * How long (ms) the main thread waits for a notification in its own poll before it hands the
 * wait to a libuv thread and returns to the event loop. A call after a longer pause pays the
 * hand-back (one more thread wake-up) once; a busy sandbox never does.
 */
const IDLE_MS = 10;
/** The longest (ms) the loop serves without letting the event loop turn. */
const TURN_MS = 50;

const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;

/** Counters the sentry reports in its log when it ends (and the benches read). */
export interface SentryStats {
  served: number;
  continued: number;
  injected: number;
  refused: number;
  deferred: number;
}

/**
 * A struct seccomp_notif (80 bytes), decoded. The argument registers are kept as 32-bit halves;
 * the BigInts (`id`, `args`) are made only if something asks for them: they cost on every call,
 * and answering needs only the halves. A class rather than an object literal with getters, so
 * that every notification has the same shape and no accessor is defined per call.
 */
class DecodedNotif implements Notif {
  readonly tid: number;
  readonly nr: number;
  readonly arch: number;
  /** [0, 12): the argument registers as (low, high) halves; [12, 14): the id's halves. */
  readonly words: Uint32Array;
  private idMemo: bigint | undefined;
  private argsMemo: Notif['args'] | undefined;

  constructor(buf: Buffer) {
    const words = new Uint32Array(14);
    for (let i = 0; i < 12; i++) words[i] = buf.readUInt32LE(32 + 4 * i);
    words[12] = buf.readUInt32LE(0);
    words[13] = buf.readUInt32LE(4);
    this.words = words;
    this.tid = buf.readUInt32LE(8);
    this.nr = buf.readInt32LE(16);
    this.arch = buf.readUInt32LE(20);
  }

  get id(): bigint {
    return (this.idMemo ??= (BigInt(this.words[13]!) << 32n) | BigInt(this.words[12]!));
  }

  get args(): Notif['args'] {
    if (this.argsMemo === undefined) {
      const w = this.words;
      const a = (i: number): bigint => (BigInt(w[2 * i + 1]!) << 32n) | BigInt(w[2 * i]!);
      this.argsMemo = [a(0), a(1), a(2), a(3), a(4), a(5)];
    }
    return this.argsMemo;
  }
}

/** Decodes a struct seccomp_notif (80 bytes); see DecodedNotif. */
export function decodeNotif(buf: Buffer): Notif {
  return new DecodedNotif(buf);
}

const respBuf = Buffer.alloc(24);
const addfdBuf = Buffer.alloc(24);

/**
 * Answers notification `n` on `listener` with `reply`; false if the task is gone. An fd goes
 * over with the caller kept on this thread's CPU where `pinning` allows (pin.ts).
 */
export function answer(listener: number, n: NotifId & Pick<Notif, 'tid'>, reply: Reply, pinning?: HandoverPinning): boolean {
  if (reply.kind === 'deferred') return true;
  if (reply.kind === 'offload') return answer(listener, n, { kind: 'err', errno: k.E.EAGAIN });
  if (reply.kind === 'await') {
    // on a worker, which may block: wait here (the serving thread keeps such calls in its poll)
    const pfd = Buffer.alloc(8);
    pfd.writeInt32LE(reply.fd, 0);
    pfd.writeInt16LE(POLLIN, 4);
    k.poll(pfd, 1, reply.timeoutMs);
    k.close(reply.fd);
    return answer(listener, n, reply.then(), pinning);
  }
  if (reply.kind === 'fd') {
    putId(addfdBuf, n);
    addfdBuf.writeUInt32LE(k.SECCOMP_FLAG.ADDFD_FLAG_SEND, 8);
    addfdBuf.writeUInt32LE(reply.fd, 12);
    addfdBuf.writeUInt32LE(0, 16);
    addfdBuf.writeUInt32LE(reply.cloexec ? k.O.CLOEXEC : 0, 20);
    // with every signal blocked: ADDFD with SEND marks the notification answered, then waits for
    // the caller to install the fd. A signal that cuts the wait short (any handler: SIGCHLD after
    // a spawn, SIGTERM, the profiler's SIGPROF) takes the fd back but leaves the notification
    // answered, and the caller's open returns 0 with no fd installed (Linux 6.18; seen here in
    // about 1 open in 5 with a 20 kHz timer signal in the supervisor, and in none with it blocked)
    const addfd = (): number => k.ioctlBufUnsignalled(listener, k.SECCOMP_IOCTL.NOTIF_ADDFD, addfdBuf);
    const rc = pinning ? pinning.around(n.tid, addfd) : addfd();
    k.close(reply.fd);
    if (rc >= 0) return true;
    // the fd could not be installed (e.g. EMFILE in the workload): answer with that errno
    if (rc === -k.E.ENOENT || rc === -k.E.ESRCH) return false;
    return answer(listener, n, { kind: 'err', errno: -rc });
  }
  putId(respBuf, n);
  let error = 0;
  let flags = 0;
  if (reply.kind === 'ok') {
    const v = reply.val;
    if (typeof v === 'bigint') respBuf.writeBigInt64LE(v, 8);
    else k.putI64(respBuf, 8, v);
  } else {
    respBuf.writeUInt32LE(0, 8);
    respBuf.writeUInt32LE(0, 12);
    if (reply.kind === 'err') error = -reply.errno;
    else flags = k.SECCOMP_FLAG.USER_NOTIF_FLAG_CONTINUE;
  }
  respBuf.writeInt32LE(error, 16);
  respBuf.writeUInt32LE(flags, 20);
  return k.ioctlBuf(listener, k.SECCOMP_IOCTL.NOTIF_SEND, respBuf) === 0;
}

/** Hands a blocking call to a worker (which closes `hold` when done); false if no worker can take it. */
export type Offload = (listener: number, notif: Notif, hold?: number) => boolean;

/** The serving loop of one sandbox. */
export class SentryLoop {
  private readonly listeners: number[] = [];
  private readonly conns: number[] = [];
  private readonly notifBuf = Buffer.alloc(80);
  private readonly connBuf = Buffer.alloc(128);
  private seen = false;
  readonly stats: SentryStats = { served: 0, continued: 0, injected: 0, refused: 0, deferred: 0 };

  constructor(
    private readonly sb: Sandbox,
    private readonly level: SentryLevel,
    private readonly families: Families,
    /** The listening unix socket stages connect to, to hand over their notify fd. */
    private readonly acceptFd: number,
    /** Called with each new notify fd and the host pid of the process that made it. */
    private readonly onListener: (pid: number, fd: number) => void,
    private readonly offload?: Offload,
  ) {}

  /** Answered calls whose answer waits for an fd (Reply 'await'), oldest first. */
  private readonly awaiting: Array<{ fd: number; listener: number; notif: Notif; deadline: number; then: () => Reply }> = [];

  /** Answers the awaited calls whose fd polled readable (`ready`) or whose time is up, and drops them. */
  private settle(ready: ReadonlySet<number>): void {
    const now = Date.now();
    for (let i = 0; i < this.awaiting.length; ) {
      const a = this.awaiting[i]!;
      if (!ready.has(a.fd) && now < a.deadline) {
        i++;
        continue;
      }
      this.awaiting.splice(i, 1);
      this.fdSetVersion++;
      k.close(a.fd);
      let reply: Reply;
      try {
        reply = a.then();
      } catch (e) {
        this.sb.log(`sentry bug finishing nr ${a.notif.nr} for tid ${a.notif.tid}: ${(e as Error).stack ?? String(e)}`);
        reply = { kind: 'err', errno: k.E.EIO };
      }
      answer(a.listener, a.notif, reply, this.sb.pinning);
    }
  }

  /** How long (ms) a poll may wait before the first awaited call's time is up; -1: none waits. */
  private awaitBudget(): number {
    if (this.awaiting.length === 0) return -1;
    return Math.max(0, Math.min(...this.awaiting.map((a) => a.deadline)) - Date.now());
  }

  /** Adds a seccomp listener (the init's or an exec's) to the poll set. */
  addListener(fd: number): void {
    // synchronous wake-ups: the woken workload runs on the CPU that answered (Linux 6.6+)
    k.ioctlVal(fd, k.SECCOMP_IOCTL.NOTIF_SET_FLAGS, k.SECCOMP_FLAG.USER_NOTIF_FD_SYNC_WAKE_UP);
    this.listeners.push(fd);
    this.seen = true;
    this.fdSetVersion++;
  }

  /** Bumped whenever the poll set (listeners, hand-over connections) changes. */
  private fdSetVersion = 0;

  /**
   * Serves until every listener has hung up after at least one arrived. Polls on this thread
   * while notifications keep coming; after IDLE_MS without one the wait moves to a libuv thread
   * and the event loop turns until something arrives, and a loop kept busy yields to the event
   * loop every TURN_MS.
   */
  async run(): Promise<void> {
    let pb = Buffer.alloc(0);
    let fds: number[] = [];
    let built = -1;
    let turnAt = Date.now() + TURN_MS;
    while (!this.seen || this.listeners.length > 0 || this.conns.length > 0 || this.awaiting.length > 0) {
      if (built !== this.fdSetVersion) {
        // the poll set changes only when a listener or hand-over connection comes or goes
        fds = [...this.listeners, ...this.awaiting.map((a) => a.fd), ...this.conns, this.acceptFd];
        pb = Buffer.alloc(fds.length * 8);
        fds.forEach((fd, i) => {
          pb.writeInt32LE(fd, i * 8);
          pb.writeInt16LE(POLLIN, i * 8 + 4);
        });
        built = this.fdSetVersion;
      } else {
        for (let i = 0; i < fds.length; i++) pb.writeInt16LE(0, i * 8 + 6);
      }
      const budget = this.awaitBudget();
      let rc = k.poll(pb, fds.length, budget < 0 ? IDLE_MS : Math.min(IDLE_MS, budget));
      if (rc === 0 && budget >= 0 && budget <= IDLE_MS) {
        this.settle(new Set()); // an awaited call's time is up
        continue;
      }
      if (rc === 0) {
        rc = await k.pollAsync(pb, fds.length, this.awaitBudget());
        turnAt = Date.now() + TURN_MS;
        if (rc < 0) continue; // its errno is the other thread's: the next poll here reports it
      } else if (Date.now() >= turnAt) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        turnAt = Date.now() + TURN_MS;
        continue; // the events seen are still there: poll again
      }
      if (rc < 0) throw new Error(`poll: errno ${-rc}`);
      const nl = this.listeners.length;
      const na = this.awaiting.length;
      const nc = this.conns.length;
      const gone: number[] = [];
      for (let i = 0; i < nl; i++) {
        const rev = pb.readInt16LE(i * 8 + 6);
        if (rev & POLLIN) this.serveOne(fds[i]!);
        else if (rev & (POLLHUP | POLLERR)) gone.push(fds[i]!);
      }
      for (const fd of gone) {
        k.close(fd);
        this.listeners.splice(this.listeners.indexOf(fd), 1);
        this.fdSetVersion++;
      }
      if (na > 0) {
        const ready = new Set<number>();
        for (let i = nl; i < nl + na; i++) if (pb.readInt16LE(i * 8 + 6) !== 0) ready.add(fds[i]!);
        this.settle(ready);
      }
      for (let i = nl + na; i < nl + na + nc; i++) {
        if (pb.readInt16LE(i * 8 + 6) !== 0) this.handOver(fds[i]!);
      }
      if (pb.readInt16LE((fds.length - 1) * 8 + 6) & POLLIN) {
        const c = k.accept4(this.acceptFd, k.O.CLOEXEC | k.O.NONBLOCK);
        if (c >= 0) {
          this.conns.push(c);
          this.fdSetVersion++;
        }
      }
    }
  }

  /**
   * Reads a stage's hand-over message ({"pid":P,"fd":N}), copies its notify fd with
   * pidfd_getfd(2), acknowledges with one byte and closes the connection.
   */
  private handOver(conn: number): void {
    const n = k.read(conn, this.connBuf, this.connBuf.length);
    if (n === -k.E.EAGAIN) return;
    this.conns.splice(this.conns.indexOf(conn), 1);
    this.fdSetVersion++;
    try {
      if (n <= 0) return;
      const m = /^\{"pid":(\d+),"fd":(\d+)\}\n$/.exec(this.connBuf.toString('latin1', 0, n));
      if (!m) {
        this.sb.log(`ignored a malformed hand-over message (${n} bytes)`);
        return;
      }
      const pid = Number(m[1]);
      const pidfd = k.pidfdOpen(pid, 0);
      if (pidfd < 0) {
        this.sb.log(`hand-over from pid ${pid}: pidfd_open: errno ${-pidfd}`);
        return;
      }
      const fd = k.pidfdGetfd(pidfd, Number(m[2]));
      k.close(pidfd);
      if (fd < 0) {
        this.sb.log(`hand-over from pid ${pid}: pidfd_getfd: errno ${-fd}`);
        return;
      }
      this.onListener(pid, fd);
      this.addListener(fd);
      k.write(conn, Buffer.from('K'), 1);
    } finally {
      k.close(conn);
    }
  }

  /** Receives and answers one notification from `listener`. */
  serveOne(listener: number): void {
    const buf = this.notifBuf;
    buf.fill(0);
    if (k.ioctlBuf(listener, k.SECCOMP_IOCTL.NOTIF_RECV, buf) < 0) return; // gone meanwhile
    const t0 = this.profile ? process.hrtime.bigint() : 0n;
    const notif = decodeNotif(buf);
    const reply = this.dispatch(listener, notif);
    if (reply.kind === 'await') {
      this.awaiting.push({ fd: reply.fd, listener, notif, deadline: Date.now() + reply.timeoutMs, then: reply.then });
      this.fdSetVersion++;
      return;
    }
    if (reply.kind === 'continue') this.stats.continued++;
    else if (reply.kind === 'fd') this.stats.injected++;
    else if (reply.kind === 'deferred') this.stats.deferred++;
    const t1 = this.profile ? process.hrtime.bigint() : 0n;
    answer(listener, notif, reply, this.sb.pinning);
    if (this.profile) {
      const p = this.profile.get(notif.nr) ?? { n: 0, handle: 0n, answer: 0n };
      p.n++;
      p.handle += t1 - t0;
      p.answer += process.hrtime.bigint() - t1;
      this.profile.set(notif.nr, p);
    }
  }

  /** With MOAT_SENTRY_PROFILE=1: per syscall number, calls and ns spent handling and answering. */
  readonly profile: Map<number, { n: number; handle: bigint; answer: bigint }> | undefined =
    process.env.MOAT_SENTRY_PROFILE === '1' ? new Map() : undefined;

  /** Runs the handler of a notification (or refuses it) and returns its reply. */
  dispatch(listener: number, notif: Notif): Reply {
    this.stats.served++;
    const entry = entryByNr(notif.nr);
    if (!entry) return this.refuse(notif, 'unknown', k.E.ENOSYS);
    const cls = entry[this.level];
    if (cls === 'refused') return this.refuse(notif, entry.name, entry.errno ?? k.E.ENOSYS);
    const handler = this.handlerOf(notif.nr, entry);
    if (!handler) return this.refuse(notif, entry.name, k.E.ENOSYS);
    const task = new NotifTask(listener, notif);
    try {
      identityFor(this.sb.ids, entry, task);
      if (this.offload && this.families.mayBlock?.(entry.name, task, this.sb) && this.offload(listener, notif, -1)) {
        return { kind: 'deferred' };
      }
      const reply = handler(task, this.sb);
      if (reply.kind !== 'offload') return reply;
      if (this.offload?.(listener, notif, reply.hold)) return { kind: 'deferred' };
      // no worker can take it: block here (ADDFD and SEND fail with ENOENT if the task died)
      task.onWorker = true;
      task.held = reply.hold;
      try {
        return handler(task, this.sb);
      } finally {
        if (reply.hold >= 0) k.close(reply.hold);
      }
    } catch (e) {
      this.sb.log(`sentry bug serving ${entry.name} for tid ${notif.tid}: ${(e as Error).stack ?? String(e)}`);
      return { kind: 'err', errno: k.E.EIO };
    } finally {
      task.release();
    }
  }

  /** Handlers by syscall number, looked up once each (null: none). */
  private readonly handlers: Array<Handler | null | undefined> = [];

  private handlerOf(nr: number, entry: { name: string; family?: Family | undefined }): Handler | undefined {
    let h = this.handlers[nr];
    if (h === undefined) {
      h = handlerFor(this.families, entry) ?? null;
      if (nr >= 0 && nr < 1024) this.handlers[nr] = h;
    }
    return h ?? undefined;
  }

  private readonly refusals = new Map<string, number>();

  /** Answers a refused call with its fixed errno; logs the first few of each name, then every 1000th. */
  private refuse(notif: Notif, name: string, errno: number): Reply {
    this.stats.refused++;
    const n = (this.refusals.get(name) ?? 0) + 1;
    this.refusals.set(name, n);
    if (n <= 10 || n % 1000 === 0) this.sb.log(`refused ${name} (nr ${notif.nr}) from tid ${notif.tid}: errno ${errno} (${n} so far)`);
    return { kind: 'err', errno };
  }
}

/** Whether a notification is still pending (re-exported for workers). */
export { notifValid };
