/**
 * Entry of the sentry process (dist/sentry.cjs): one per sandbox, started by `moat create`
 * with its configuration as a JSON argument. It listens on the sandbox's socket for the notify
 * fds of the init and of every `exec`, then serves the workload's system calls until no task
 * of the sandbox is left. It reports "ready" on fd 3 once its loop is set up.
 */
import { closeSync, existsSync, fstatSync, openSync, readdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { parentPort } from 'node:worker_threads';
import * as k from '../../sys/kernel.js';
import { descendants, procStat } from '../../container/proc.js';
import { flock, LOCK_EX, LOCK_NB } from '../../sys/libc.js';
import { buildStamp, watchBuild } from '../../util/buildstamp.js';
import { adoptedStandby, STANDBY_IDLE_MS, standbyFiles } from './standby.js';
import type { StandbyArgs, StandbyPlace, StandbyRequest } from './standby.js';
import { answer, handlerFor, SentryLoop } from './core.js';
import type { Families } from './core.js';
import { confineSentry } from './confine.js';
import { parsePolicy } from './netpolicy.js';
import { handlers as fileHandlers, mayBlock as fileMayBlock } from './sys_file.js';
import { handlers as infoHandlers } from './sys_info.js';
import { handlers as miscHandlers } from './sys_misc.js';
import { handlers as processHandlers } from './sys_process.js';
import { handlers as socketHandlers, mayBlock as socketMayBlock } from './sys_socket.js';
import { entryByNr } from './table.js';
import { NotifTask } from './task.js';
import type { Reply, Sandbox, SandboxLimits, SentryLevel } from './types.js';
import { FifoWaiters } from './fifos.js';
import { HandoverPinning } from './pin.js';
import { identityFor, Identities, ownCreds } from './ident.js';
import { fromJob, WorkerPool } from './workers.js';
import type { WorkerJob, WorkerSetup } from './workers.js';

/** What `moat create` tells a new sentry process (JSON in argv). */
export interface SentryProcessConfig {
  id: string;
  /** Unix socket path stages connect to, to hand over their notify fds. */
  socket: string;
  /** Log file (appended). */
  log: string;
  level: SentryLevel;
  /** `none` or `loopback` (ignored when egress rules are given). */
  network: string;
  egress: string[];
  limits: SandboxLimits;
  hostname: string;
  /** The spec's linux.sysctl (namespaced keys, set by the jail), for /proc/sys. */
  sysctl?: Record<string, string>;
  /** The listening socket at `socket`, made by `moat create` and inherited as this fd. */
  listenFd: number;
  /** Skip installing the sentry's own seccomp allowlist (debugging only). */
  noConfine?: boolean;
}

/** The syscall families the sentry serves. */
export const FAMILIES: Families = {
  tables: { file: fileHandlers, socket: socketHandlers, process: processHandlers, info: infoHandlers, misc: miscHandlers },
  mayBlock: (name, t, sb) => fileMayBlock(name, t, sb) || socketMayBlock(name, t, sb),
};

/** Whether a process exists (it may be a zombie); the sentry may not signal, so /proc tells. */
function isAlivePid(pid: number): boolean {
  return existsSync(`/proc/${pid}/stat`);
}

/** setrlimit(2) resource: CPU time a real-time thread may run without blocking (µs). */
const RLIMIT_RTTIME = 15;
const RTTIME_LIMIT_US = 1_000_000n;

/** The mutable parts of a sandbox view (set when the init's notify fd arrives). */
interface SandboxState {
  rootFd: number;
  initPid: number;
  /** Host pids of the init and of every exec'd process: each heads a tree of the sandbox. */
  heads: number[];
}

/** The sandbox view handlers get, over `state`. */
function makeSandbox(cfg: SentryProcessConfig, state: SandboxState, bootTime: number, log: (m: string) => void, fifoWaiters?: FifoWaiters, ids?: Identities, pinning?: HandoverPinning): Sandbox {
  return {
    id: cfg.id,
    get rootFd() {
      return state.rootFd;
    },
    get initPid() {
      return state.initPid;
    },
    level: cfg.level,
    network: parsePolicy(cfg.network, cfg.egress),
    limits: cfg.limits,
    hostname: cfg.hostname,
    ...(cfg.sysctl ? { sysctl: cfg.sysctl } : {}),
    // the listings of the synthesized /proc and /sys live in tmpfs mounts at /proc and /sys
    // of the container itself, so a directory fd the workload gets is inside its own root
    get scratchDir() {
      return `/proc/${state.initPid}/root`;
    },
    bootTime,
    pids: () => {
      // an exec'd process joins the pid namespace from outside: its tree is not under the init
      const seen = new Set<number>();
      for (const head of state.heads) for (const p of descendants(head)) seen.add(p);
      return [...seen];
    },
    log,
    fifoWaiters,
    ids,
    pinning,
  };
}

/** A log function writing to fd `logFd`. */
function logger(id: string, logFd: number): (msg: string) => void {
  return (msg: string): void => {
    try {
      writeSync(logFd, `${new Date().toISOString()} sentry[${id}] ${msg}\n`);
    } catch {
      // the log is best effort
    }
  };
}

/**
 * Runs the sentry process: confines it, reports "ready" on fd 3 and serves the sandbox on its
 * main thread (serveSandbox) until no task of the sandbox is left. One V8 isolate for the
 * process rather than a main thread idling beside a serving thread: ~11 MB less per sandbox.
 * Resolves with the exit code.
 */
export async function sentryMain(argv: string[], script: string): Promise<number> {
  const config = argv[0] ?? '{}';
  const cfg = JSON.parse(config) as SentryProcessConfig;
  const logFd = openSync(cfg.log, 'a');
  const log = logger(cfg.id, logFd);
  k.fcntl(cfg.listenFd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
  if (!cfg.noConfine) confineSentry(log);
  try {
    const lines = await serveSandbox(config, logFd, script, () => {
      try {
        writeSync(3, 'ready\n');
        closeSync(3);
      } catch {
        // started by hand, without a ready pipe
      }
    });
    for (const line of lines) log(line);
    return 0;
  } catch (e) {
    log(`serving failed: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

/**
 * Runs a warm standby (see standby.ts): takes the key's lock (or exits, another standby has
 * it), binds its system calls, confines the process and waits on its socket. The first valid
 * request makes it that sandbox's sentry: it copies the create's listening socket, opens the
 * sandbox's log (also as stdout and stderr) and serves the sandbox on its main thread
 * (serveSandbox), answering "ready" once the loop is set up; from there on it is a sentry like
 * any other. Resolves with the exit code (0 after the idle timeout or a rebuild).
 */
export function sentryStandby(argv: string[], script: string): Promise<number> {
  const args = JSON.parse(argv[0] ?? '{}') as StandbyArgs;
  const files = standbyFiles(args);
  const stamp = buildStamp([script]); // the bundle the key was made from (standbyKey)
  const lockFd = openSync(files.lock, 'w', 0o600);
  if (!flock(lockFd, LOCK_EX | LOCK_NB, files.lock)) return Promise.resolve(0);
  // a standby that went idle removes the lock file before it lets the lock go: one that locked
  // that file meanwhile holds the lock of a name no longer there, and leaves
  if (!sameFile(lockFd, files.lock)) return Promise.resolve(0);
  // adopted by a subreaper (conmon waits for every child before it exits): not a place to wait
  if (adoptedStandby(args)) {
    removeFiles({ lock: files.lock });
    return Promise.resolve(0);
  }
  sweepStale(args);
  bindEarly();
  confineSentry(() => {}); // no log before a claim: nothing to tell it to
  try {
    unlinkSync(files.socket); // a standby that died left it; the lock says none other is here
  } catch {
    // none
  }
  return new Promise((resolve) => {
    const server = createServer();
    // unclaimed for that long: it goes, and its files with it (the lock is still held)
    const idle = setTimeout(() => {
      server.close();
      removeFiles(files);
      resolve(0);
    }, STANDBY_IDLE_MS);
    let claimed = false;
    // stopped before any claim (pkill, shutdown): leave no socket that refuses connections
    const onTerm = (): void => {
      server.close();
      removeFiles(files);
      process.exit(0);
    };
    // rebuilt or upgraded: creates now make another key, so nobody will claim this standby; its
    // lock file goes with it
    const stopWatch = watchBuild([script], stamp, () => {
      clearTimeout(idle);
      server.close();
      removeFiles(files);
      resolve(0);
    });
    server.on('connection', (sock: Socket) => {
      let buf = '';
      sock.on('error', () => {});
      sock.on('data', (d: Buffer) => {
        if (claimed) {
          sock.end('error taken: this standby serves another sandbox\n');
          return;
        }
        buf += d.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > 65536) sock.destroy();
          return;
        }
        let taken: { cfg: SentryProcessConfig; logFd: number };
        try {
          taken = takeRequest(buf.slice(0, nl), sock);
        } catch (e) {
          sock.end(`error ${(e as Error).message.replace(/\n/g, ' ')}\n`);
          return;
        }
        claimed = true;
        clearTimeout(idle);
        stopWatch();
        // from here on the main thread serves: a SIGTERM takes its default action again (it
        // kills the sentry, as it kills one started cold)
        process.off('SIGTERM', onTerm);
        server.close();
        // its files go before the lock is let go (a standby that locks the old file after that
        // sees it is gone and leaves): the next standby, if the create starts one, makes its own
        removeFiles(files);
        closeSync(lockFd); // the key is free for the next standby
        const { cfg, logFd } = taken;
        const log = logger(cfg.id, logFd);
        // the container id in ps, as a sentry started for it shows it (the standby's argv
        // reserved the room)
        process.title = `moat --sentry ${cfg.id}`;
        const since = new Date(Date.now() - process.uptime() * 1000).toISOString();
        serveSandbox(JSON.stringify(cfg), logFd, script, () => {
          // written at once, before the first notification is served
          writeSync(k.socketFd(sock), `ready ${process.pid} ${procStat(process.pid)?.startTime ?? ''}\n`);
          log(`serving sandbox ${cfg.id} (a standby since ${since})`);
        }).then(
          (lines) => {
            for (const line of lines) log(line);
            resolve(0);
          },
          (e: unknown) => {
            log(`serving failed: ${(e as Error).stack ?? String(e)}`);
            resolve(1);
          },
        );
      });
    });
    server.listen(files.socket);
    process.once('SIGTERM', onTerm);
  });
}

/**
 * Removes a standby's socket and lock files. Only while the lock is held: a standby that locks
 * the lock file after its removal sees that it is gone (sameFile) and leaves.
 */
function removeFiles(files: { socket?: string; lock: string }): void {
  for (const f of [files.socket, files.lock]) {
    if (f === undefined) continue;
    try {
      unlinkSync(f);
    } catch {
      // gone already
    }
  }
}

/**
 * Removes the files of standbys of other keys that died without removing them (SIGKILL, an OOM
 * kill): their keys are often never used again (a build stamp changed), so no successor of the
 * same key would clear them. A key's files go only while this process holds that key's lock,
 * as a standby removes its own, so a standby that is alive, or booting, keeps them.
 */
function sweepStale(own: StandbyPlace): void {
  let names: string[];
  try {
    names = readdirSync(own.dir);
  } catch {
    return;
  }
  for (const name of names) {
    const key = /^([0-9a-f]{24})\.lock$/.exec(name)?.[1];
    if (key === undefined || key === own.key) continue;
    const files = standbyFiles({ dir: own.dir, key });
    let fd: number;
    try {
      fd = openSync(files.lock, 'r');
    } catch {
      continue; // gone meanwhile
    }
    try {
      if (flock(fd, LOCK_EX | LOCK_NB, files.lock) && sameFile(fd, files.lock)) removeFiles(files);
    } catch {
      // not ours to judge: left alone
    } finally {
      closeSync(fd);
    }
  }
}

/** Whether the open file `fd` is the file at `path` now (same device and inode). */
function sameFile(fd: number, path: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(path);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/** Checks a standby request from `sock` and takes what it names: the listening socket and the sandbox's log. */
function takeRequest(line: string, sock: Socket): { cfg: SentryProcessConfig; logFd: number } {
  const req = JSON.parse(line) as Partial<StandbyRequest>;
  const c = req.config;
  if (!Number.isInteger(req.pid) || !Number.isInteger(req.fd) || typeof c !== 'object' || c === null) throw new Error('malformed request');
  if (typeof c.id !== 'string' || typeof c.log !== 'string' || typeof c.socket !== 'string' || (c.level !== 'strict' && c.level !== 'balanced')) throw new Error('malformed sentry configuration');
  const cred = k.peerCred(k.socketFd(sock));
  if (typeof cred === 'number') throw new Error(`SO_PEERCRED: errno ${-cred}`);
  if (cred.uid !== (process.geteuid?.() ?? 0) || cred.pid !== req.pid) throw new Error(`request from pid ${cred.pid} uid ${cred.uid}, not this user's pid ${req.pid}`);
  const pidfd = k.pidfdOpen(req.pid!, 0);
  if (pidfd < 0) throw new Error(`pidfd_open(${req.pid}): errno ${-pidfd}`);
  const listenFd = k.pidfdGetfd(pidfd, req.fd!);
  k.close(pidfd);
  if (listenFd < 0) throw new Error(`pidfd_getfd(${req.fd}): errno ${-listenFd}`);
  if (k.getsockoptInt(listenFd, 1 /* SOL_SOCKET */, 30 /* SO_ACCEPTCONN */) !== 1) {
    k.close(listenFd);
    throw new Error(`fd ${req.fd} of pid ${req.pid} is not a listening socket`);
  }
  let logFd: number;
  try {
    logFd = openSync(c.log, 'a');
  } catch (e) {
    k.close(listenFd);
    throw e;
  }
  k.dup3(logFd, 1);
  k.dup3(logFd, 2);
  return { cfg: { ...(c as Omit<SentryProcessConfig, 'listenFd'>), listenFd }, logFd };
}

/**
 * Serves a sandbox on the calling thread: polls every notify fd of the sandbox and answers
 * until none is left (`onServing` once the loop is about to run). Resolves with the closing
 * lines for the log (the profile, with MOAT_SENTRY_PROFILE=1, and the counts).
 */
async function serveSandbox(config: string, logFd: number, script: string, onServing: () => void): Promise<string[]> {
  const cfg = JSON.parse(config) as SentryProcessConfig;
  const log = logger(cfg.id, logFd);
  const state: SandboxState = { rootFd: -1, initPid: 0, heads: [] };
  const bootTime = Date.now();
  const own = ownCreds(); // before this thread acts as any caller
  const ids = new Identities(own);
  // a root sentry that cannot switch acts for every caller as root: say so (unprivileged, it
  // acts as its own user, which is the workload's)
  if (!ids.enabled && own.euid === 0) log('cannot take on callers\' identities (no CAP_SETUID or CAP_SETGID): file and socket calls are made as root');
  const pinning = HandoverPinning.create(log);
  // its threads are real-time only while they hand an fd over (pin.ts), a few µs of CPU: one
  // that runs away as real-time for a second is killed rather than left to starve its CPU
  const rc = k.setrlimit(RLIMIT_RTTIME, RTTIME_LIMIT_US, RTTIME_LIMIT_US);
  if (rc < 0) log(`cannot limit real-time CPU time: errno ${-rc}`);
  const setup = (): WorkerSetup => ({ config, rootFd: state.rootFd, initPid: state.initPid, heads: state.heads, bootTime, logFd, own, pinning: pinning.state });
  const pool = new WorkerPool(script, setup, (fn) => ids.asSentry(fn));
  const sb = makeSandbox(cfg, state, bootTime, log, pool.fifos, ids, pinning);
  const loop = new SentryLoop(sb, cfg.level, FAMILIES, cfg.listenFd, (pid, fd) => {
    state.heads = [...state.heads.filter((h) => h === state.initPid || isAlivePid(h)), pid];
    if (state.rootFd >= 0) return;
    // the first notify fd comes from the container init, already inside its root
    state.initPid = pid;
    state.rootFd = k.openat(k.AT.FDCWD, k.cpath(`/proc/${pid}/root`), k.O.PATH | k.O.DIRECTORY | k.O.CLOEXEC);
    if (state.rootFd < 0) throw new Error(`opening the root of pid ${pid}: errno ${-state.rootFd}`);
    log(`serving init pid ${pid} (notify fd ${fd})`);
  }, (listener, notif, hold) => pool.offload(listener, notif, hold));
  onServing();
  await loop.run();
  const lines: string[] = [];
  for (const [nr, p] of [...(loop.profile ?? new Map<number, { n: number; handle: bigint; answer: bigint }>())].sort((a, b) => b[1].n - a[1].n).slice(0, 20)) {
    lines.push(`profile: ${entryByNr(nr)?.name ?? nr} x${p.n}: handle ${(Number(p.handle) / p.n / 1000).toFixed(1)} us, answer ${(Number(p.answer) / p.n / 1000).toFixed(1)} us`);
  }
  const st = loop.stats;
  lines.push(`done: ${st.served} served (${st.continued} continued, ${st.injected} fds injected, ${st.refused} refused, ${st.deferred} on ${pool.size} workers)`);
  return lines;
}

/**
 * Binds this thread's system calls (koffi, ~3 ms for the whole table on the first call) and
 * makes its staging area for workload memory now: in a standby, the first sandbox's hand-over
 * and first calls otherwise pay for it while its init waits.
 */
function bindEarly(): void {
  k.close(-1);
  k.processVmRead(process.pid, Buffer.alloc(8), 0); // EFAULT: only the staging area is wanted
}

/** Runs one worker thread of the pool: answers each notification it is handed. */
export function sentryWorker(data: { index: number; busy: Int32Array; fifos: Int32Array; setup: WorkerSetup }): void {
  const cfg = JSON.parse(data.setup.config) as SentryProcessConfig;
  const log = logger(cfg.id, data.setup.logFd);
  const fifos = new FifoWaiters(data.fifos, data.index);
  // the thread was made by the serving thread, perhaps while it acted as a caller: not fresh
  const ids = new Identities(data.setup.own, false);
  const pinning = new HandoverPinning(data.setup.pinning, log);
  const sb = makeSandbox(cfg, { rootFd: data.setup.rootFd, initPid: data.setup.initPid, heads: data.setup.heads }, data.setup.bootTime, log, fifos, ids, pinning);
  parentPort?.on('message', (job: WorkerJob) => {
    try {
      const notif = fromJob(job);
      const task = new NotifTask(job.listener, notif);
      task.onWorker = true;
      task.held = job.hold;
      let reply: Reply;
      try {
        const entry = entryByNr(notif.nr);
        const handler = entry ? handlerFor(FAMILIES, entry) : undefined;
        if (entry && handler) identityFor(ids, entry, task);
        reply = handler ? handler(task, sb) : { kind: 'err', errno: k.E.ENOSYS };
      } catch (e) {
        log(`sentry bug on a worker, nr ${notif.nr}: ${(e as Error).stack ?? String(e)}`);
        reply = { kind: 'err', errno: k.E.EIO };
      } finally {
        task.release();
      }
      answer(job.listener, notif, reply, pinning);
    } finally {
      if (job.hold >= 0) k.close(job.hold);
      fifos.release(data.index); // after the close: an opener waiting for this end to go opens again
      Atomics.store(data.busy, data.index, 0);
    }
  });
}
