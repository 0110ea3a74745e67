/**
 * Entry of the sentry process (dist/sentry.cjs): one per sandbox, started by `moat create`
 * with its configuration as a JSON argument. It listens on the sandbox's socket for the notify
 * fds of the init and of every `exec`, then serves the workload's system calls until no task
 * of the sandbox is left. It reports "ready" on fd 3 once it listens.
 */
import { closeSync, existsSync, openSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import * as k from '../../sys/kernel.js';
import { descendants } from '../../container/proc.js';
import { answer, SentryLoop } from './core.js';
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
import { fromJob, sentryThread, WorkerPool } from './workers.js';
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

/** The mutable parts of a sandbox view (set when the init's notify fd arrives). */
interface SandboxState {
  rootFd: number;
  initPid: number;
  /** Host pids of the init and of every exec'd process: each heads a tree of the sandbox. */
  heads: number[];
}

/** The sandbox view handlers get, over `state`. */
function makeSandbox(cfg: SentryProcessConfig, state: SandboxState, bootTime: number, log: (m: string) => void): Sandbox {
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
 * Runs the sentry process. Its main thread keeps its event loop free: it starts the serving
 * thread (a worker that polls the notify fds synchronously and answers them), confines the
 * whole process, reports "ready" on fd 3 once the serving thread runs, and exits when that
 * thread reports that no task of the sandbox is left. Resolves with the exit code.
 */
export function sentryMain(argv: string[], script: string): Promise<number> {
  const config = argv[0] ?? '{}';
  const cfg = JSON.parse(config) as SentryProcessConfig;
  const logFd = openSync(cfg.log, 'a');
  const log = logger(cfg.id, logFd);
  k.fcntl(cfg.listenFd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
  const serving = sentryThread(script, { role: 'sentry-serve', config, logFd, script } satisfies ServeData);
  if (!cfg.noConfine) confineSentry(log);
  return new Promise((resolve) => {
    serving.on('message', (m: { type: 'serving' } | { type: 'done'; lines: string[] }) => {
      if (m.type === 'serving') {
        try {
          writeSync(3, 'ready\n');
          closeSync(3);
        } catch {
          // started by hand, without a ready pipe
        }
        return;
      }
      for (const line of m.lines) log(line);
      resolve(0);
    });
    serving.on('error', (e) => {
      log(`serving thread failed: ${e.stack ?? String(e)}`);
      resolve(1);
    });
    serving.on('exit', (code) => resolve(code === 0 ? 0 : 1));
  });
}

/** What the serving thread is started with. */
export interface ServeData {
  role: 'sentry-serve';
  /** The sentry's JSON configuration. */
  config: string;
  logFd: number;
  /** The bundle file, for the pool of worker threads that take blocking calls. */
  script: string;
}

/** The serving thread: polls every notify fd of the sandbox and answers until none is left. */
export function sentryServe(data: ServeData): void {
  const cfg = JSON.parse(data.config) as SentryProcessConfig;
  const log = logger(cfg.id, data.logFd);
  const state: SandboxState = { rootFd: -1, initPid: 0, heads: [] };
  const bootTime = Date.now();
  const sb = makeSandbox(cfg, state, bootTime, log);
  const pool = new WorkerPool(data.script, () => ({ config: data.config, rootFd: state.rootFd, initPid: state.initPid, heads: state.heads, bootTime, logFd: data.logFd }));
  const loop = new SentryLoop(sb, cfg.level, FAMILIES, cfg.listenFd, (pid, fd) => {
    state.heads = [...state.heads.filter((h) => h === state.initPid || isAlivePid(h)), pid];
    if (state.rootFd >= 0) return;
    // the first notify fd comes from the container init, already inside its root
    state.initPid = pid;
    state.rootFd = k.openat(k.AT.FDCWD, k.cpath(`/proc/${pid}/root`), k.O.PATH | k.O.DIRECTORY | k.O.CLOEXEC);
    if (state.rootFd < 0) throw new Error(`opening the root of pid ${pid}: errno ${-state.rootFd}`);
    log(`serving init pid ${pid} (notify fd ${fd})`);
  }, (listener, notif, hold) => pool.offload(listener, notif, hold));
  parentPort?.postMessage({ type: 'serving' });
  loop.run();
  const lines: string[] = [];
  for (const [nr, p] of [...(loop.profile ?? new Map<number, { n: number; handle: bigint; answer: bigint }>())].sort((a, b) => b[1].n - a[1].n).slice(0, 20)) {
    lines.push(`profile: ${entryByNr(nr)?.name ?? nr} x${p.n}: handle ${(Number(p.handle) / p.n / 1000).toFixed(1)} us, answer ${(Number(p.answer) / p.n / 1000).toFixed(1)} us`);
  }
  const st = loop.stats;
  lines.push(`done: ${st.served} served (${st.continued} continued, ${st.injected} fds injected, ${st.refused} refused, ${st.deferred} on ${pool.size} workers)`);
  parentPort?.postMessage({ type: 'done', lines });
}

/** Runs one worker thread of the pool: answers each notification it is handed. */
export function sentryWorker(data: { index: number; busy: Int32Array; setup: WorkerSetup }): void {
  const cfg = JSON.parse(data.setup.config) as SentryProcessConfig;
  const log = logger(cfg.id, data.setup.logFd);
  const sb = makeSandbox(cfg, { rootFd: data.setup.rootFd, initPid: data.setup.initPid, heads: data.setup.heads }, data.setup.bootTime, log);
  parentPort?.on('message', (job: WorkerJob) => {
    try {
      const notif = fromJob(job);
      const task = new NotifTask(job.listener, notif);
      task.onWorker = true;
      let reply: Reply;
      try {
        const entry = entryByNr(notif.nr);
        const handler = entry?.family ? (FAMILIES.tables[entry.family]?.[entry.name] ?? FAMILIES.tables.misc?.[entry.name]) : undefined;
        reply = handler ? handler(task, sb) : { kind: 'err', errno: k.E.ENOSYS };
      } catch (e) {
        log(`sentry bug on a worker, nr ${notif.nr}: ${(e as Error).stack ?? String(e)}`);
        reply = { kind: 'err', errno: k.E.EIO };
      } finally {
        task.release();
      }
      answer(job.listener, notif.id, reply);
    } finally {
      if (job.hold >= 0) k.close(job.hold);
      Atomics.store(data.busy, data.index, 0);
    }
  });
}
