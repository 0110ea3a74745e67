/**
 * The `container` backend: runc-class isolation (namespaces, pivot_root, capabilities, seccomp)
 * carried out by the native stage native/moat-init.c from a plan built in plan.ts.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, unlinkSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { HostError, InvalidStateError, MoatError, StageError } from '../../errors.js';
import { runHooks } from '../../container/hooks.js';
import { isAlive, procStat, sleepSync } from '../../container/proc.js';
import type { ContainerRecord } from '../../container/store.js';
import * as k from '../../sys/kernel.js';
import { trace } from '../../util/log.js';
import type { Backend, CreateRequest, Created, ExecRequest } from '../backend.js';
import { CgroupError } from '../../cgroups/index.js';
import type { CgroupManager } from '../../cgroups/index.js';
import { primeMigration } from '../../cgroups/prime.js';
import { createResources, newManager, recordManager } from './cgroups.js';
import { buildExecPlan, buildPlan } from './plan.js';

let stageCache: string | undefined;

/** Path of the compiled native stage: dist/moat-init of the package this code runs from. */
export function stagePath(): string {
  if (stageCache) return stageCache;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new HostError('cannot find the moat package directory (and so dist/moat-init)');
    dir = up;
  }
  stageCache = join(dir, 'dist', 'moat-init');
  if (!existsSync(stageCache)) throw new HostError(`${stageCache} is missing: run "npm run build"`);
  return stageCache;
}

interface StageMessage {
  type: 'pid' | 'hooks' | 'ready' | 'error' | 'exit';
  pid?: number;
  op?: string;
  path?: string;
  errno?: number;
  message?: string;
  status?: number;
}

function frame(type: string, payload: Buffer = Buffer.alloc(0)): Buffer {
  const hdr = Buffer.alloc(5);
  hdr.write(type, 0, 'latin1');
  hdr.writeUInt32LE(payload.length, 1);
  return Buffer.concat([hdr, payload]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function lenStr(s: string): Buffer {
  const b = Buffer.from(s);
  const n = Buffer.alloc(4);
  n.writeUInt32LE(b.length);
  return Buffer.concat([n, b]);
}

/** How one run of the native stage is driven. */
interface StageRun {
  /** Container id, for messages. */
  id: string;
  plan: Buffer;
  preserveFds: number;
  foreground: boolean;
  /** Called with the init's host pid before it may go on (cgroup placement). */
  beforeGo?: (pid: number) => Promise<void>;
  /** The container state JSON sent with GO, which the stage forwards to a seccomp listener. */
  goState?: (pid: number) => string;
  /** Runs the runtime-side hooks and returns the RESUME payload (create only). */
  onHooks?: (pid: number) => Promise<Buffer>;
  /** Fds for the process's stdin, stdout and stderr (default: the runtime's own). */
  stdio?: readonly [number, number, number];
  /** The runtime's fds that become the process's 3, 4, ... (default: its own 3 .. 2 + preserveFds). */
  passFds?: readonly number[];
}

/**
 * Runs the native stage with a plan and follows its sync protocol (see native/moat-init.c)
 * until the process is READY; in the foreground, also until its exit status arrives.
 */
async function runStage(run: StageRun): Promise<Created> {
  k.sealInheritedFds(); // the stage, its monitor and the hooks get only what is handed to them
  const n = run.preserveFds;
  const stdio: (number | 'inherit' | 'pipe')[] = run.stdio ? [...run.stdio] : ['inherit', 'inherit', 'inherit'];
  const pass = run.passFds ?? Array.from({ length: n }, (_, i) => 3 + i);
  if (pass.length !== n) throw new HostError(`container "${run.id}": ${pass.length} fds to pass for --preserve-fds ${n}`);
  stdio.push(...pass);
  stdio.push('pipe', 'pipe');
  const child: ChildProcess = spawn(stagePath(), [String(3 + n), String(4 + n)], { stdio, env: {}, argv0: 'moat-init' });
  trace('stage spawned');
  const planSock = child.stdio[3 + n] as Socket;
  const sync = child.stdio[4 + n] as Socket;
  planSock.on('error', () => {}); // the stage reports its own failures on the sync socket
  planSock.end(run.plan);

  let pid = 0;
  let pidStartTime = '';
  let stageError: StageError | undefined;
  let exitResolve: (code: number) => void = () => {};
  let exitReject: (e: Error) => void = () => {};
  const waitExit = run.foreground
    ? new Promise<number>((res, rej) => {
        exitResolve = res;
        exitReject = rej;
      })
    : undefined;
  waitExit?.catch(() => {}); // observed by the caller; never an unhandled rejection here

  const ready = new Promise<void>((res, rej) => {
    let buf = '';
    let readySeen = false;
    let exitSeen = false;
    const onMessage = async (msg: StageMessage): Promise<void> => {
      switch (msg.type) {
        case 'pid': {
          pid = msg.pid ?? 0;
          pidStartTime = procStat(pid)?.startTime ?? '';
          trace(`init pid ${pid}`);
          try {
            await run.beforeGo?.(pid);
            const go = run.goState ? Buffer.concat([u32(pid), lenStr(run.goState(pid))]) : Buffer.alloc(0);
            sync.write(frame('G', go));
          } catch (e) {
            sync.write(frame('A'));
            rej(e);
          }
          return;
        }
        case 'hooks': {
          try {
            if (!run.onHooks) throw new MoatError(`container "${run.id}": the native stage asked for hooks nobody runs`);
            sync.write(frame('R', await run.onHooks(pid)));
          } catch (e) {
            sync.write(frame('A'));
            rej(e);
          }
          return;
        }
        case 'ready':
          readySeen = true;
          trace('init ready');
          res();
          return;
        case 'error':
          stageError = new StageError(run.id, msg.op ?? 'setup', msg.path ? `${msg.path}: ${msg.message}` : (msg.message ?? 'failed'), msg.errno ?? 0);
          rej(stageError);
          return;
        case 'exit':
          exitSeen = true;
          exitResolve(msg.status ?? 0);
          return;
      }
    };
    sync.setEncoding('utf8'); // a character split across two reads stays whole
    sync.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let msg: StageMessage;
        try {
          msg = JSON.parse(line) as StageMessage;
        } catch {
          rej(new MoatError(`container "${run.id}": unreadable message from the native stage: ${line.slice(0, 200)}`));
          continue;
        }
        void onMessage(msg);
      }
    });
    sync.on('error', () => {});
    child.on('error', (e) => rej(new HostError(`cannot run the native stage ${stagePath()}: ${e.message}`)));
    sync.on('close', () => {
      if (!readySeen) rej(stageError ?? new MoatError(`container "${run.id}": the process exited during set-up`));
      if (!exitSeen) exitReject(new MoatError(`container "${run.id}": lost track of the process's exit status`));
    });
  });

  try {
    await ready;
  } catch (e) {
    if (pid > 0 && isAlive(pid, pidStartTime)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // it died on its own between the check and the signal
      }
    }
    await new Promise<void>((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once('exit', () => r())));
    throw e;
  }
  if (!run.foreground) sync.destroy();
  child.unref();
  return waitExit ? { pid, pidStartTime, waitExit } : { pid, pidStartTime };
}

async function create(req: CreateRequest): Promise<Created> {
  void primeMigration(); // the init's migration below then waits less (cgroups/prime.ts)
  const fifo = join(req.dir, 'exec.fifo');
  // limits are checked and written before any process exists; the init joins at GO
  const cgroups = newManager(req.id, req.spec, req.systemdCgroup, req.log);
  let plan: Buffer;
  try {
    req.recordCgroups(cgroups.paths);
    cgroups.set(createResources(req.spec));
    plan = buildPlan({ ...req, cgroupPaths: cgroups.paths }, { fifo, ...(req.consoleSocket ? { consoleSocket: resolve(req.consoleSocket) } : {}) });
  } catch (e) {
    await cgroups.destroy();
    throw e;
  }
  trace('plan built');
  let created: Created;
  try {
    created = await runStage({
    id: req.id,
    plan,
    preserveFds: req.preserveFds,
    foreground: req.foreground,
    ...(req.stdio ? { stdio: req.stdio } : {}),
    ...(req.passFds ? { passFds: req.passFds } : {}),
    beforeGo: async (pid) => cgroups.apply(pid),
    goState: (pid) => req.hookState('creating', pid),
    onHooks: async (pid) => {
      const state = req.hookState('creating', pid);
      await runHooks(req.id, 'prestart', req.spec.hooks?.prestart, state);
      await runHooks(req.id, 'createRuntime', req.spec.hooks?.createRuntime, state);
      // hooks inside the container get the pid as the container sees it (runtime spec, State)
      const inner = innerPid(pid);
      return Buffer.concat([lenStr(req.hookState('creating', inner)), lenStr(req.hookState('created', inner))]);
    },
    });
  } catch (e) {
    await cgroups.destroy();
    throw e;
  }
  return { ...created, cgroupPaths: cgroups.paths };
}

/** Runs a new process in the running container's namespaces. */
async function exec(rec: ContainerRecord, req: ExecRequest): Promise<Created> {
  const plan = buildExecPlan({
    id: rec.id,
    initPid: rec.pid,
    spec: rec.spec,
    process: req.process,
    preserveFds: req.preserveFds,
    foreground: req.foreground,
    ...(req.consoleSocket ? { consoleSocket: resolve(req.consoleSocket) } : {}),
    ...(req.sentryJail ? { sentryJail: req.sentryJail } : {}),
  });
  const cgroups = recordManager(rec);
  return runStage({
    id: rec.id,
    plan,
    preserveFds: req.preserveFds,
    foreground: req.foreground,
    ...(req.stdio ? { stdio: req.stdio } : {}),
    beforeGo: async (pid) => cgroups?.apply(pid),
    goState: (pid) => JSON.stringify({ ociVersion: rec.ociVersion, id: rec.id, status: 'running', pid, bundle: rec.bundle, annotations: rec.annotations }),
  });
}

/** The pid of `pid` in its own (innermost) pid namespace, from the NSpid line of its status. */
function innerPid(pid: number): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'));
    const last = line?.trim().split(/\s+/).at(-1);
    return last ? Number(last) : pid;
  } catch {
    return pid;
  }
}

/** Opens the exec fifo for reading, which lets the blocked init exec the user program. */
async function start(rec: ContainerRecord, dir: string): Promise<void> {
  const fifo = join(dir, 'exec.fifo');
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let handedOver = false; // to the socket below, which closes it
  try {
    const buf = Buffer.alloc(1);
    for (let delay = 0; ; delay = Math.min(delay + 1, 10)) {
      let got = 0;
      try {
        got = readSync(fd, buf, 0, 1, null);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      if (got === 1) break;
      // 0 bytes: the init has not opened its end yet (or died); EAGAIN: it opened but not written
      const dead = !isAlive(rec.pid, rec.pidStartTime);
      if (dead || !stillTheStage(rec.pid)) {
        // it may have written its byte, exec'd (and even exited) since the read above: the byte
        // is still there then. Otherwise it died before its start, or a start killed between
        // taking the byte and removing the fifo let its program go already.
        let late = 0;
        try {
          late = readSync(fd, buf, 0, 1, null);
        } catch {
          // EAGAIN: no byte
        }
        if (late === 1) break;
        if (dead) throw new MoatError(`container "${rec.id}": the container process died before it was started`);
        unlinkSync(fifo);
        throw new InvalidStateError(rec.id, 'start', 'running');
      }
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      else sleepSync(0);
    }
    unlinkSync(fifo);
    // the init holds its end until it execs the program (close-on-exec): EOF means started;
    // the event loop watches the fifo, so start returns as soon as the program runs (under the
    // sentry the init first hands its listener over, a few ms)
    await new Promise<void>((res, rej) => {
      const s = new Socket({ fd, readable: true, writable: false });
      handedOver = true;
      s.on('data', () => {}); // nothing more is written; read on to EOF
      s.once('end', () => {
        s.destroy();
        res();
      });
      s.once('error', (e) => {
        s.destroy();
        rej(e);
      });
    });
  } finally {
    if (!handedOver) closeSync(fd);
  }
}

/** Whether `pid` still runs the native stage (its sealed copy of moat-init), not the program yet. */
function stillTheStage(pid: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`).startsWith('/memfd:moat-init');
  } catch {
    return true; // cannot tell (it is exiting): the caller's liveness check decides
  }
}

/** Pids of every process in the pid namespace of `pid` (all of a container with its own one). */
function pidsInNamespaceOf(pid: number): number[] {
  let ns: string;
  try {
    ns = readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return [];
  }
  const hostNs = readlinkSync('/proc/self/ns/pid');
  if (ns === hostNs) return [pid];
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/pid`) === ns) out.push(Number(name));
    } catch {
      // the process exited while we looked
    }
  }
  return out;
}

function signalAll(targets: number[], signal: number): void {
  for (const p of targets) {
    try {
      process.kill(p, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }
}

async function kill(rec: ContainerRecord, signal: number, all: boolean): Promise<void> {
  const cgroups = recordManager(rec);
  if (all && cgroups) {
    // as runc: freeze first, so nothing forks away between listing and signalling
    try {
      await cgroups.freeze();
    } catch (e) {
      if (!(e instanceof CgroupError)) throw e;
      // No freezer cgroup: a create killed after it recorded the cgroups but before it made
      // them (or a delete killed after it removed some); the init joins only once all exist.
      // Or a task that cannot freeze (v1 leaves a task in reclaim or an OOM kill FREEZING;
      // runc warns and goes on too). Signal unfrozen, and list again until a pass finds no
      // new process, so a child forked between listing and signalling is not missed.
      const seen = new Set<number>();
      for (let pass = 0; pass < 100; pass++) {
        const fresh = cgroups.pids().filter((p) => !seen.has(p));
        if (fresh.length === 0) break;
        for (const p of fresh) seen.add(p);
        signalAll(fresh, signal);
      }
      return;
    }
    try {
      signalAll(cgroups.pids(), signal);
    } finally {
      await cgroups.thaw();
    }
    return;
  }
  if (!isAlive(rec.pid, rec.pidStartTime)) return;
  signalAll(all ? pidsInNamespaceOf(rec.pid) : [rec.pid], signal);
}

/** The cgroup manager of a container that must have one for `what`. */
function requireCgroups(rec: ContainerRecord, what: string): CgroupManager {
  const m = recordManager(rec);
  if (!m) throw new HostError(`container "${rec.id}": ${what} needs the container's cgroups, and it has none`);
  return m;
}

/** The `container` backend. */
export const containerBackend: Backend = {
  name: 'container',
  create,
  start,
  exec,
  kill,
  async pids(rec) {
    const cgroups = recordManager(rec);
    if (cgroups && process.geteuid?.() === 0) return cgroups.pids();
    return isAlive(rec.pid, rec.pidStartTime) ? pidsInNamespaceOf(rec.pid) : [];
  },
  async pause(rec) {
    await requireCgroups(rec, 'pause').freeze();
  },
  async resume(rec) {
    await requireCgroups(rec, 'resume').thaw();
  },
  async update(rec, resources) {
    requireCgroups(rec, 'update').set(resources);
  },
  async stats(rec) {
    return requireCgroups(rec, 'stats').stats();
  },
  async oomKillCount(rec) {
    return recordManager(rec)?.oomKillCount() ?? 0;
  },
  async destroy(rec) {
    // namespaces and mounts die with the init; the cgroups are left to remove
    await recordManager(rec)?.destroy();
  },
};
