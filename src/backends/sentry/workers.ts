/**
 * Worker threads for the few served calls that can block for long (a connect on a blocking
 * socket, opening a FIFO): the serving thread hands such a notification to an idle worker and
 * goes on serving the rest of the sandbox. A worker runs the same handler synchronously and
 * answers the kernel itself. The serving thread never waits for a worker: each worker's
 * busy flag lives in shared memory, so no message has to come back through an event loop.
 */
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { FifoWaiters } from './fifos.js';
import type { OwnCreds } from './ident.js';
import type { Notif } from './types.js';

/** What a worker needs to rebuild the sandbox view (all fds are process-wide). */
export interface WorkerSetup {
  /** The sentry's JSON configuration (as given on its command line). */
  config: string;
  rootFd: number;
  initPid: number;
  /** Host pids heading the sandbox's process trees (the init and exec'd processes). */
  heads: number[];
  bootTime: number;
  logFd: number;
  /** The sentry's own credentials, which a worker returns to (ident.ts). */
  own: OwnCreds;
  /** The sandbox's shared hand-over pinning state (pin.ts). */
  pinning: Int32Array;
}

/** A message from the serving thread: one notification to answer. */
export interface WorkerJob {
  listener: number;
  id: string;
  tid: number;
  nr: number;
  arch: number;
  args: string[];
  /** An fd of the sentry to close once the call is answered, or -1. */
  hold: number;
}

/** Turns a notification into a structured-clone friendly job. */
export function toJob(listener: number, n: Notif, hold = -1): WorkerJob {
  return { listener, id: n.id.toString(), tid: n.tid, nr: n.nr, arch: n.arch, args: n.args.map(String), hold };
}

/** The notification of a job. */
export function fromJob(j: WorkerJob): Notif {
  const a = j.args.map((x) => BigInt(x));
  return { id: BigInt(j.id), tid: j.tid, nr: j.nr, arch: j.arch, args: [a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!] };
}

/**
 * Starts a worker thread on the sentry bundle `script` (dist/sentry.cjs). The thread loads it
 * through bin/moat.cjs, which compiles it with the build's V8 code cache, as the process did.
 */
export function sentryThread(script: string, workerData: unknown): Worker {
  const loader = join(dirname(dirname(script)), 'bin', 'moat.cjs');
  return new Worker(`require(${JSON.stringify(loader)}).load('sentry')`, { eval: true, workerData });
}

/** A pool that grows up to `max` workers, each busy with at most one call. */
export class WorkerPool {
  private readonly workers: Worker[] = [];
  /** Int32 per worker: 1 while busy (set by the serving thread, cleared by the worker). */
  private readonly busy: Int32Array;
  /** The FIFO read ends the workers hold for waiting readers (the serving thread's view). */
  readonly fifos: FifoWaiters;

  /**
   * @param asSentry runs a function with the sentry's own credentials: a new thread starts with
   *   its creator's, and the serving thread may be acting as a caller (ident.ts) that cannot read
   *   the sentry's bundle
   */
  constructor(
    private readonly script: string,
    private readonly setup: () => WorkerSetup,
    private readonly asSentry: <T>(fn: () => T) => T = (fn) => fn(),
    private readonly max = 16,
  ) {
    this.busy = new Int32Array(new SharedArrayBuffer(4 * max));
    this.fifos = FifoWaiters.create(max);
  }

  /** Hands `notif` to an idle worker (starting one if needed); false if all `max` are busy. */
  offload(listener: number, notif: Notif, hold = -1): boolean {
    let i = this.workers.findIndex((_, j) => Atomics.load(this.busy, j) === 0);
    if (i < 0) {
      if (this.workers.length >= this.max || !this.fifos.addKick(this.workers.length)) return false;
      i = this.workers.length;
      const data = { role: 'sentry-worker', index: i, busy: this.busy, fifos: this.fifos.slots, setup: this.setup() };
      const w = this.asSentry(() => sentryThread(this.script, data));
      w.unref();
      this.workers.push(w);
    }
    Atomics.store(this.busy, i, 1);
    this.fifos.hold(i, listener, notif, hold);
    this.workers[i]!.postMessage(toJob(listener, notif, hold));
    return true;
  }

  /** How many workers exist (for the log). */
  get size(): number {
    return this.workers.length;
  }
}
