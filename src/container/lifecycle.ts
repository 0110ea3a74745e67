/**
 * The OCI lifecycle operations: create, start, state, kill, delete, run and list. Each one takes
 * the container's lock, derives the live status, asks the state machine whether it may act, and
 * only then calls the backend.
 */
import { existsSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { chooseIsolation, getBackend } from '../backends/registry.js';
import type { EmbeddedRoot, MicrovmChoice, SentryChoice } from '../backends/backend.js';
import { ConfigError, ContainerNotFoundError, MoatError, StateCorruptError, UsageError } from '../errors.js';
import type { CgroupStats, Resources } from '../cgroups/index.js';
import type { ProcessSpec, Spec } from '../spec/schema.js';
import { trace } from '../util/log.js';
import type { Logger } from '../util/log.js';
import { runHooks } from './hooks.js';
import { isAlive, waitGone } from './proc.js';
import { check } from './status.js';
import type { Status } from './status.js';
import type { StateStore } from './store.js';
import type { ContainerRecord } from './store.js';

/** Settings shared by every lifecycle command. */
export interface Context {
  store: StateStore;
  log: Logger;
  /** --systemd-cgroup: cgroupsPath is in systemd's slice:prefix:name form. */
  systemdCgroup: boolean;
  /** The global --isolation and --sentry-level: what a create uses when neither its flags nor the spec's annotations say. */
  defaults?: { isolation?: string; sentryLevel?: string };
}

/** The OCI runtime-spec state of a container, as `state` prints it (runc's field set). */
export interface OciState {
  ociVersion: string;
  id: string;
  pid: number;
  status: Status;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
}

/**
 * Derives the live status from the record and the process table. `locked` says the caller holds
 * the container's lock, so a `creating` record must be stale (its creator died mid-way).
 */
export function liveStatus(rec: ContainerRecord, dir: string, store?: StateStore, locked = false): Status {
  if (rec.status === 'creating') {
    if (locked || (store && store.creatorGone(rec.id))) return 'stopped';
    return 'creating';
  }
  if (!isAlive(rec.pid, rec.pidStartTime)) return 'stopped';
  if (rec.status === 'paused') return 'paused';
  return existsSync(join(dir, 'exec.fifo')) ? 'created' : 'running';
}

/** The OCI state of a record. */
export function ociState(rec: ContainerRecord, status: Status): OciState {
  const st: OciState = {
    ociVersion: rec.ociVersion,
    id: rec.id,
    pid: status === 'stopped' ? 0 : rec.pid,
    status,
    bundle: rec.bundle,
    rootfs: rec.rootfs,
    created: rec.created,
    owner: rec.owner,
  };
  if (Object.keys(rec.annotations).length > 0) st.annotations = rec.annotations;
  return st;
}

/** The JSON that hooks receive on stdin. */
function hookState(rec: ContainerRecord, status: string, pid: number): string {
  return JSON.stringify({ ociVersion: rec.ociVersion, id: rec.id, status, pid, bundle: rec.bundle, annotations: rec.annotations });
}

/** Options of `create` (and of `run`, which adds starting and waiting). */
export interface CreateOptions {
  id: string;
  bundle: string;
  spec: Spec;
  isolation?: string;
  consoleSocket?: string;
  pidFile?: string;
  preserveFds: number;
  /** How many of the preserveFds came from systemd socket activation (LISTEN_FDS), which come first. */
  listenFds?: number;
  noNewKeyring: boolean;
  foreground: boolean;
  embedded?: EmbeddedRoot;
  network?: 'none' | 'loopback' | 'host';
  /** Sentry settings from the command line (used when the isolation is `sentry`). */
  sentry?: SentryChoice;
  /** MicroVM settings from the command line (used when the isolation is `microvm`). */
  microvm?: MicrovmChoice;
  /** Fds for the container process's stdin, stdout and stderr (default: the runtime's own). */
  stdio?: readonly [number, number, number];
  /** Restore from the checkpoint image in this directory: running once created (`moat restore`), or with `paused` created (a snapshot). */
  restore?: { imagePath: string; paused?: boolean; share?: boolean };
}

/** Result of create: the record, plus the exit status promise in foreground mode. */
export interface CreateResult {
  rec: ContainerRecord;
  waitExit?: Promise<number>;
}

/** Creates a container and leaves its process blocked before the user program. */
export async function create(ctx: Context, opts: CreateOptions): Promise<CreateResult> {
  const isolation = chooseIsolation(opts.isolation, opts.spec, ctx.defaults?.isolation);
  const defaultLevel = ctx.defaults?.sentryLevel;
  if (defaultLevel !== undefined) opts = { ...opts, sentry: { egress: [], ...opts.sentry, defaultLevel } };
  const backend = await getBackend(isolation);
  if (opts.restore && !backend.checkpoint) throw new UsageError(`restore: the ${isolation} isolation has no checkpoint support yet (microvm and sentry have)`);
  const lock = ctx.store.createLocked(opts.id);
  let rec: ContainerRecord | undefined;
  try {
    const rootfs = opts.embedded ? join(lock.dir, 'rootfs') : resolve(opts.bundle, opts.spec.root.path);
    // a restore brings its own disk: the bundle's rootfs need not exist
    if (!opts.embedded && !opts.restore) {
      let isDir = false;
      try {
        isDir = statSync(rootfs).isDirectory();
      } catch {
        // reported below
      }
      if (!isDir) throw new ConfigError('root.path', `${rootfs} is not a directory`);
    }
    rec = {
      ociVersion: opts.spec.ociVersion,
      id: opts.id,
      bundle: opts.bundle,
      rootfs,
      created: new Date().toISOString(),
      owner: userInfo().username,
      annotations: opts.spec.annotations ?? {},
      pid: 0,
      pidStartTime: '',
      isolation,
      status: 'creating',
      spec: opts.spec,
    };
    ctx.store.write(rec);
    const r = rec;
    const created = await backend.create({
      id: opts.id,
      dir: lock.dir,
      bundle: opts.bundle,
      rootfs,
      spec: opts.spec,
      ...(opts.consoleSocket !== undefined ? { consoleSocket: opts.consoleSocket } : {}),
      preserveFds: opts.preserveFds,
      ...(opts.listenFds ? { listenFds: opts.listenFds } : {}),
      noNewKeyring: opts.noNewKeyring,
      foreground: opts.foreground,
      systemdCgroup: ctx.systemdCgroup,
      hookState: (status, pid) => hookState(r, status, pid),
      recordCgroups: (paths) => {
        r.cgroupPaths = paths;
        ctx.store.write(r);
      },
      log: ctx.log,
      ...(opts.embedded ? { embedded: opts.embedded } : {}),
      ...(opts.network ? { network: opts.network } : {}),
      ...(opts.sentry ? { sentry: opts.sentry } : {}),
      ...(opts.microvm ? { microvm: opts.microvm } : {}),
      ...(opts.stdio ? { stdio: opts.stdio } : {}),
      ...(opts.restore ? { restore: opts.restore } : {}),
    });
    rec.pid = created.pid;
    rec.pidStartTime = created.pidStartTime;
    if (created.cgroupPaths) rec.cgroupPaths = created.cgroupPaths;
    if (created.backendState) rec.backendState = created.backendState;
    rec.status = 'created';
    ctx.store.write(rec);
    if (opts.pidFile) writePidFile(opts.pidFile, created.pid);
    trace('created');
    return created.waitExit ? { rec, waitExit: created.waitExit } : { rec };
  } catch (e) {
    // leave nothing half-made: no state directory, no process
    if (rec && rec.pid > 0) {
      await backend.kill(rec, 9, true).catch(() => {});
    }
    ctx.store.remove(opts.id);
    throw e;
  } finally {
    lock.unlock();
  }
}

function writePidFile(path: string, pid: number): void {
  // atomic, as runc does: containerd reads it as soon as create returns
  const abs = resolve(path);
  const tmp = `${abs}.${process.pid}.tmp`;
  writeFileSync(tmp, String(pid));
  renameSync(tmp, abs);
}

/** Starts a created container: its process execs the user program; poststart hooks follow. */
export async function start(ctx: Context, id: string): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    check(id, 'start', liveStatus(rec, lock.dir, ctx.store, true));
    const backend = await getBackend(rec.isolation);
    await backend.start(rec, lock.dir);
    trace('started');
    try {
      await runHooks(id, 'poststart', rec.spec.hooks?.poststart, hookState(rec, 'running', rec.pid));
    } catch (e) {
      // the spec: a failing poststart hook is logged and the container keeps running
      ctx.log.warn((e as Error).message);
    }
  } finally {
    lock.unlock();
  }
}

/**
 * Writes a checkpoint image of a running container into `imagePath`; unless `leaveRunning`, the
 * container then ends (it stays, stopped, until deleted), as with runc.
 */
export async function checkpoint(ctx: Context, id: string, opts: { imagePath: string; leaveRunning: boolean }): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    const status = liveStatus(rec, lock.dir, ctx.store, true);
    check(id, 'checkpoint', status);
    const backend = await getBackend(rec.isolation);
    if (!backend.checkpoint) throw new UsageError(`container "${id}": checkpoint is not supported under the ${rec.isolation} isolation yet (microvm and sentry support it)`);
    // a paused container is thawed for the checkpoint (which stops it its own way), then frozen again
    if (status === 'paused') await backend.resume(rec);
    try {
      await backend.checkpoint(rec, lock.dir, { imagePath: resolve(opts.imagePath), leaveRunning: opts.leaveRunning });
    } finally {
      if (status === 'paused' && opts.leaveRunning) await backend.pause(rec);
    }
    if (!opts.leaveRunning) await waitGone(rec.pid, rec.pidStartTime, 10_000);
  } finally {
    lock.unlock();
  }
}

/** The OCI state of container `id`. */
export function state(ctx: Context, id: string): OciState {
  const rec = ctx.store.read(id);
  return ociState(rec, liveStatus(rec, ctx.store.dir(id), ctx.store));
}

/** Sends `signal` to the container (every process of it with `all`). */
export async function kill(ctx: Context, id: string, signal: number, all: boolean): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    const status = liveStatus(rec, lock.dir, ctx.store, true);
    if (status === 'stopped' && all) return; // runc: kill --all of a stopped container is not an error
    check(id, 'kill', status);
    const backend = await getBackend(rec.isolation);
    await backend.kill(rec, signal, all);
    if (status === 'paused' && signal === 9) {
      // a frozen process takes SIGKILL only once thawed (runc thaws it too)
      await backend.resume(rec);
      rec.status = 'created';
      ctx.store.write(rec);
    }
  } finally {
    lock.unlock();
  }
}

/** Deletes a container; `force` kills it first if it is still running. */
export async function remove(ctx: Context, id: string, force: boolean): Promise<void> {
  let lock;
  try {
    lock = ctx.store.lock(id);
  } catch (e) {
    if (e instanceof ContainerNotFoundError && force) return;
    throw e;
  }
  try {
    let rec: ContainerRecord;
    try {
      rec = ctx.store.read(id);
    } catch (e) {
      // a directory without a state file is what a create killed mid-way leaves behind
      if (e instanceof ContainerNotFoundError || e instanceof StateCorruptError) {
        ctx.store.remove(id);
        if (force) return;
      }
      throw e;
    }
    const status = liveStatus(rec, lock.dir, ctx.store, true);
    check(id, force ? 'forceDelete' : 'delete', status);
    const backend = await getBackend(rec.isolation);
    // a stale `creating` record has no pid yet, but its cgroups may still hold a process
    if (rec.status === 'creating' || (status !== 'stopped' && rec.pid > 0)) {
      await backend.kill(rec, 9, true);
      if (rec.pid > 0 && !(await waitGone(rec.pid, rec.pidStartTime, 10_000))) {
        throw new MoatError(`container "${id}": process ${rec.pid} did not die after SIGKILL`);
      }
    }
    await backend.destroy(rec, lock.dir);
    ctx.store.remove(id);
    try {
      await runHooks(id, 'poststop', rec.spec.hooks?.poststop, hookState(rec, 'stopped', 0));
    } catch (e) {
      ctx.log.warn((e as Error).message);
    }
  } finally {
    lock.unlock();
  }
}

/** The states of every container under the root. */
export function list(ctx: Context): OciState[] {
  const out: OciState[] = [];
  for (const id of ctx.store.ids()) {
    try {
      out.push(state(ctx, id));
    } catch {
      // a container deleted meanwhile, or a directory left by a killed create: not listed
    }
  }
  return out;
}

/** Options of `exec`. */
export interface ExecOptions {
  process: ProcessSpec;
  consoleSocket?: string;
  pidFile?: string;
  preserveFds: number;
  foreground: boolean;
  /** Fds for the process's stdin, stdout and stderr (default: the runtime's own). */
  stdio?: readonly [number, number, number];
}

/** Runs a new process in a created or running container; in the foreground, `waitExit` resolves with its status. */
export async function exec(ctx: Context, id: string, opts: ExecOptions): Promise<{ pid: number; waitExit?: Promise<number> }> {
  // the lock guards the status check only: a long-running exec must not block kill or delete
  const lock = ctx.store.lock(id);
  let rec: ContainerRecord;
  try {
    rec = ctx.store.read(id);
    check(id, 'exec', liveStatus(rec, lock.dir, ctx.store, true));
  } finally {
    lock.unlock();
  }
  const backend = await getBackend(rec.isolation);
  const started = await backend.exec(rec, {
    process: opts.process,
    preserveFds: opts.preserveFds,
    foreground: opts.foreground,
    ...(opts.consoleSocket ? { consoleSocket: opts.consoleSocket } : {}),
    ...(opts.stdio ? { stdio: opts.stdio } : {}),
  });
  if (opts.pidFile) writePidFile(opts.pidFile, started.pid);
  return started.waitExit ? { pid: started.pid, waitExit: started.waitExit } : { pid: started.pid };
}

/** The spec of a container, for commands that derive a process from it (`exec` without --process). */
export function containerSpec(ctx: Context, id: string): Spec {
  return ctx.store.read(id).spec;
}

/** Host pids of every process of a container (empty once it stopped). */
export async function pids(ctx: Context, id: string): Promise<number[]> {
  const rec = ctx.store.read(id);
  if (liveStatus(rec, ctx.store.dir(id), ctx.store) === 'stopped') return [];
  return (await getBackend(rec.isolation)).pids(rec);
}

/** Freezes every process of a running container. */
export async function pause(ctx: Context, id: string): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    check(id, 'pause', liveStatus(rec, lock.dir, ctx.store, true));
    await (await getBackend(rec.isolation)).pause(rec);
    rec.status = 'paused';
    ctx.store.write(rec);
  } finally {
    lock.unlock();
  }
}

/** Thaws a paused container. */
export async function resume(ctx: Context, id: string): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    check(id, 'resume', liveStatus(rec, lock.dir, ctx.store, true));
    await (await getBackend(rec.isolation)).resume(rec);
    rec.status = 'created'; // the live status (created or running) is derived again
    ctx.store.write(rec);
  } finally {
    lock.unlock();
  }
}

/** Changes the resource limits of a created, running or paused container. */
export async function update(ctx: Context, id: string, resources: Resources): Promise<void> {
  const lock = ctx.store.lock(id);
  try {
    const rec = ctx.store.read(id);
    check(id, 'update', liveStatus(rec, lock.dir, ctx.store, true));
    await (await getBackend(rec.isolation)).update(rec, resources);
    // remember the new limits, as runc does, so later reads of the config see them
    const linux = (rec.spec.linux ??= {});
    linux.resources = { ...(linux.resources ?? {}), ...resources };
    ctx.store.write(rec);
  } finally {
    lock.unlock();
  }
}

/** Resource usage of a container and its OOM-kill count, for `events`. */
export async function stats(ctx: Context, id: string): Promise<{ status: Status; stats?: CgroupStats; oomKills: number }> {
  const rec = ctx.store.read(id);
  const status = liveStatus(rec, ctx.store.dir(id), ctx.store);
  const backend = await getBackend(rec.isolation);
  if (status === 'stopped') return { status, oomKills: await backend.oomKillCount(rec) };
  return { status, stats: await backend.stats(rec), oomKills: await backend.oomKillCount(rec) };
}
