/**
 * containerd's task service (containerd.task.v2.Task) served by Moat's shim: one long-lived
 * process per sandbox that drives Moat's lifecycle in-process, so no operation pays for a
 * runtime start-up. Containers and exec'd processes are tracked here with their stdio, exit
 * status and exit time; task events go to containerd through `publish`.
 *
 * The container init and every exec'd process run in the foreground mode of the lifecycle:
 * Moat's small native stage stays their parent and reports the exit status, so the shim never
 * reaps processes that Node's child handling does not know.
 */
import { existsSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ContainerExistsError, ContainerNotFoundError, ConfigError, InvalidStateError, MoatError, UsageError } from '../errors.js';
import * as lifecycle from '../container/lifecycle.js';
import type { Context } from '../container/lifecycle.js';
import { StateStore } from '../container/store.js';
import { loadSpec, parseProcess } from '../spec/validate.js';
import { parseResources } from '../cgroups/index.js';
import { Logger, trace } from '../util/log.js';
import type { MicrovmChoice, SentryChoice } from '../backends/backend.js';
import { metricsAny, unifiedCgroups } from './metrics.js';
import { mountRootfs, unmountRootfs } from './mount.js';
import { ProcessIO } from './stdio.js';
import { Code, TtrpcStatusError } from './ttrpc.js';
import type { Handler } from './ttrpc.js';
import { decode, encode, timestamp } from './proto.js';
import type {
  CloseIORequest as CloseReq,
  CreateTaskRequest as CreateReq,
  ExecProcessRequest as ExecReq,
  KillRequest as KillReq,
  ResizePtyRequest as ResizeReq,
  ShutdownRequest as ShutdownReq,
  StateRequest,
  UpdateTaskRequest as UpdateReq,
  CheckpointTaskRequest as CheckpointReq,
  RuncCheckpointOptions as CheckpointOptions,
} from './proto.js';

/** containerd.v1.types.Status. */
export const TaskStatus = { UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4, PAUSING: 5 } as const;

/** The shim's settings for the containers it runs: where Moat keeps state, and how to isolate. */
export interface ShimSettings {
  /** Moat state root (default /run/containerd/moat/<namespace>). */
  root: string;
  /** containerd namespace. */
  namespace: string;
  systemdCgroup: boolean;
  /** Isolation from the runtime options (the annotation io.moat.isolation still wins). */
  isolation?: string;
  sentry?: SentryChoice;
  microvm?: MicrovmChoice;
  /** The runtime options were unusable: every Create fails with this. */
  optionsError?: Error;
  log: Logger;
}

/** A task event for containerd: topic and a message of the containerd.events package. */
export type Publish = (topic: string, type: string, event: Record<string, unknown>) => void;

type IdReq = StateRequest;

/** One process of a task: the init (execId "") or an exec'd one. */
class Proc {
  pid = 0;
  status: number = TaskStatus.CREATED;
  exitStatus = 0;
  exitedAt?: Date;
  io?: ProcessIO;
  /** Exec'd processes: the OCI process to run at Start. */
  spec?: unknown;
  private settle: () => void = () => {};
  /** Resolves once the process exited and its status is recorded. */
  readonly exited: Promise<void>;

  constructor(
    readonly execId: string,
    readonly stdio: { stdin: string; stdout: string; stderr: string; terminal: boolean },
  ) {
    this.exited = new Promise((r) => (this.settle = r));
  }

  /** Records the exit status (128+signal for a killed process). */
  exit(status: number): void {
    if (this.status === TaskStatus.STOPPED) return;
    this.status = TaskStatus.STOPPED;
    this.exitStatus = status;
    this.exitedAt = new Date();
    this.settle();
  }
}

/** One container of the sandbox with its processes. */
class Task {
  readonly init: Proc;
  readonly execs = new Map<string, Proc>();
  /** Whether the shim mounted the rootfs (and so unmounts it on delete). */
  mounted = false;
  oomKills = 0;

  constructor(
    readonly id: string,
    readonly bundle: string,
    init: Proc,
  ) {
    this.init = init;
  }

  proc(execId: string): Proc {
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new TtrpcStatusError(Code.NOT_FOUND, `process ${execId} does not exist in container ${this.id}: not found`);
    return p;
  }
}

/** Maps Moat's typed errors to the gRPC codes containerd's errdefs understands. */
function statusOf(e: unknown): TtrpcStatusError {
  if (e instanceof TtrpcStatusError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  if (e instanceof ContainerNotFoundError) return new TtrpcStatusError(Code.NOT_FOUND, `${msg}: not found`);
  if (e instanceof ContainerExistsError) return new TtrpcStatusError(Code.ALREADY_EXISTS, `${msg}: already exists`);
  if (e instanceof InvalidStateError) return new TtrpcStatusError(Code.FAILED_PRECONDITION, `${msg}: failed precondition`);
  if (e instanceof ConfigError || e instanceof UsageError) return new TtrpcStatusError(Code.INVALID_ARGUMENT, `${msg}: invalid argument`);
  return new TtrpcStatusError(Code.UNKNOWN, msg);
}

const SERVICE = 'containerd.task.v2.Task';
const T = (name: string): string => `containerd.task.v2.${name}`;
const EMPTY = 'google.protobuf.Empty';

/** The task service of one shim: its tasks and the ttrpc handlers that serve them. */
export class TaskService {
  private readonly tasks = new Map<string, Task>();
  private readonly ctx: Context;
  /** Called when the shim should exit (Shutdown with no tasks left). */
  onShutdown: () => void = () => {};

  constructor(
    private readonly settings: ShimSettings,
    private readonly publish: Publish,
  ) {
    this.ctx = { store: new StateStore(settings.root), log: settings.log, systemdCgroup: settings.systemdCgroup };
  }

  /** The number of tasks this shim runs. */
  get size(): number {
    return this.tasks.size;
  }

  /** The ttrpc handlers, keyed "containerd.task.v2.Task/<Method>". */
  handlers(): Map<string, Handler> {
    const m = new Map<string, Handler>();
    const add = <Req>(method: string, reqType: string, resType: string, fn: (req: Req) => Promise<Record<string, unknown>>): void => {
      m.set(`${SERVICE}/${method}`, async (payload: Buffer) => {
        const req = decode<Req>(reqType, payload);
        const t0 = performance.now();
        try {
          const res = encode(resType, await fn(req));
          this.settings.log.debug(`${method} ${(req as { id?: string }).id ?? ''} took ${(performance.now() - t0).toFixed(1)} ms`);
          return res;
        } catch (e) {
          const st = statusOf(e);
          if (st.code === Code.UNKNOWN) this.settings.log.error(`${method}: ${st.message}`);
          throw st;
        }
      });
    };
    add('Create', T('CreateTaskRequest'), T('CreateTaskResponse'), (r: CreateReq) => this.create(r));
    add('Start', T('StartRequest'), T('StartResponse'), (r: IdReq) => this.start(r));
    add('Delete', T('DeleteRequest'), T('DeleteResponse'), (r: IdReq) => this.delete(r));
    add('Exec', T('ExecProcessRequest'), EMPTY, (r: ExecReq) => this.exec(r));
    add('ResizePty', T('ResizePtyRequest'), EMPTY, async (r: ResizeReq) => {
      const p = this.task(r.id).proc(r.execId);
      if (!p.io) throw new TtrpcStatusError(Code.FAILED_PRECONDITION, `process ${r.execId || r.id} has no terminal`);
      p.io.resize(r.width, r.height);
      return {};
    });
    add('State', T('StateRequest'), T('StateResponse'), (r: IdReq) => this.state(r));
    add('Pids', T('PidsRequest'), T('PidsResponse'), async (r: IdReq) => ({
      processes: (await lifecycle.pids(this.ctx, this.task(r.id).id)).map((pid) => ({ pid })),
    }));
    add('Pause', T('PauseRequest'), EMPTY, async (r: IdReq) => {
      await lifecycle.pause(this.ctx, this.task(r.id).id);
      this.task(r.id).init.status = TaskStatus.PAUSED;
      this.publish('/tasks/paused', 'containerd.events.TaskPaused', { containerId: r.id });
      return {};
    });
    add('Resume', T('ResumeRequest'), EMPTY, async (r: IdReq) => {
      await lifecycle.resume(this.ctx, this.task(r.id).id);
      const init = this.task(r.id).init;
      if (init.status === TaskStatus.PAUSED) init.status = TaskStatus.RUNNING;
      this.publish('/tasks/resumed', 'containerd.events.TaskResumed', { containerId: r.id });
      return {};
    });
    add('Checkpoint', T('CheckpointTaskRequest'), EMPTY, async (r: CheckpointReq) => {
      const task = this.task(r.id);
      // containerd sends runc's CheckpointOptions (containerd.runc.v1 or, for runtimes it does not
      // know, containerd.linux.runc: the same fields); only `exit` (end the task afterwards)
      // applies. The image goes to r.path, which containerd chose: for a runtime other than runc
      // it ignores --image-path and imports that directory into its content store itself.
      let exit = false;
      if (r.options && /\.CheckpointOptions$/.test(r.options.typeUrl)) {
        try {
          exit = decode<CheckpointOptions>('containerd.runc.v1.CheckpointOptions', r.options.value).exit === true;
        } catch (e) {
          throw new TtrpcStatusError(Code.INVALID_ARGUMENT, `checkpoint of ${r.id}: options: ${(e as Error).message}`);
        }
      }
      if (!r.path) throw new TtrpcStatusError(Code.INVALID_ARGUMENT, `checkpoint of ${r.id}: no path to write the image to`);
      const imagePath = r.path;
      await lifecycle.checkpoint(this.ctx, task.id, { imagePath, leaveRunning: !exit });
      this.publish('/tasks/checkpointed', 'containerd.events.TaskCheckpointed', { containerId: r.id, checkpoint: imagePath });
      return {};
    });
    add('Kill', T('KillRequest'), EMPTY, (r: KillReq) => this.kill(r));
    add('CloseIO', T('CloseIORequest'), EMPTY, async (r: CloseReq) => {
      const p = this.task(r.id).proc(r.execId);
      if (r.stdin) p.io?.closeStdin();
      return {};
    });
    add('Update', T('UpdateTaskRequest'), EMPTY, async (r: UpdateReq) => {
      let input: unknown = {};
      if (r.resources?.value?.length) {
        try {
          input = JSON.parse(r.resources.value.toString('utf8'));
        } catch (e) {
          throw new TtrpcStatusError(Code.INVALID_ARGUMENT, `update of ${r.id}: resources are not LinuxResources JSON: ${(e as Error).message}: invalid argument`);
        }
      }
      // validated as `moat update` validates its input: a ConfigError names the field
      await lifecycle.update(this.ctx, this.task(r.id).id, parseResources(input, 'resources'));
      return {};
    });
    add('Wait', T('WaitRequest'), T('WaitResponse'), async (r: IdReq) => {
      const p = this.task(r.id).proc(r.execId);
      await p.exited;
      return { exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAt ?? new Date()) };
    });
    add('Stats', T('StatsRequest'), T('StatsResponse'), async (r: IdReq) => {
      const s = await lifecycle.stats(this.ctx, this.task(r.id).id);
      // io.containerd.cgroups.v1.Metrics (v1 and hybrid hosts) or .v2.Metrics (unified hosts), as
      // containerd's runc shim returns; empty for a stopped container (no cgroup to read)
      return { stats: metricsAny(s.stats, s.oomKills, unifiedCgroups()) };
    });
    add('Connect', T('ConnectRequest'), T('ConnectResponse'), async (r: IdReq) => {
      const t = this.tasks.get(r.id);
      return { shimPid: process.pid, taskPid: t?.init.pid ?? 0, version: '' };
    });
    add('Shutdown', T('ShutdownRequest'), EMPTY, async (r: ShutdownReq) => {
      if (this.tasks.size > 0 && !r.now) return {};
      setImmediate(() => this.onShutdown());
      return {};
    });
    return m;
  }

  private task(id: string): Task {
    const t = this.tasks.get(id);
    if (!t) throw new TtrpcStatusError(Code.NOT_FOUND, `container ${id} does not exist: not found`);
    return t;
  }

  private async create(r: CreateReq): Promise<Record<string, unknown>> {
    if (this.settings.optionsError) throw new TtrpcStatusError(Code.INVALID_ARGUMENT, `runtime options: ${this.settings.optionsError.message}`);
    if (this.tasks.has(r.id)) throw new TtrpcStatusError(Code.ALREADY_EXISTS, `container ${r.id}: already exists`);
    const bundle = resolve(r.bundle);
    const stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
    const task = new Task(r.id, bundle, new Proc('', stdio));
    this.tasks.set(r.id, task);
    const rootfs = join(bundle, 'rootfs');
    let io: ProcessIO | undefined;
    try {
      trace('shim create');
      if (r.rootfs.length > 0) {
        mountRootfs(r.rootfs, rootfs);
        task.mounted = true;
      }
      trace('rootfs mounted');
      const spec = loadSpec(bundle);
      trace('spec loaded');
      if (r.terminal && spec.process) spec.process.terminal = true;
      io = await ProcessIO.open(stdio);
      trace('stdio open');
      task.init.io = io;
      writeFileSync(join(bundle, 'moat-shim.json'), JSON.stringify({ root: this.settings.root }));
      const created = await lifecycle.create(this.ctx, {
        id: r.id,
        bundle,
        spec,
        ...(this.settings.isolation ? { isolation: this.settings.isolation } : {}),
        ...(io.consoleSocket ? { consoleSocket: io.consoleSocket } : { stdio: io.fds }),
        preserveFds: 0,
        noNewKeyring: false,
        foreground: true,
        ...(this.settings.sentry ? { sentry: this.settings.sentry } : {}),
        ...(this.settings.microvm ? { microvm: this.settings.microvm } : {}),
        // a restore (ctr ... --checkpoint): the task is made from the image, paused until Start
        ...(r.checkpoint ? { restore: { imagePath: r.checkpoint, paused: true } } : {}),
      });
      if (io.consoleSocket) await io.attachConsole();
      io.releaseChildEnds();
      task.init.pid = created.rec.pid;
      const init = task.init;
      const waitExit = created.waitExit ?? Promise.reject(new MoatError(`container ${r.id}: the backend reports no exit status`));
      waitExit.then(
        (status) => this.exited(task, init, status),
        (e: unknown) => {
          this.settings.log.error(`container ${r.id}: ${(e as Error).message}`);
          this.exited(task, init, 255);
        },
      );
    } catch (e) {
      this.tasks.delete(r.id);
      await io?.close(0);
      if (task.mounted) unmountRootfs(rootfs);
      forgetRoot(bundle);
      throw e;
    }
    this.publish('/tasks/create', 'containerd.events.TaskCreate', {
      containerId: r.id,
      bundle,
      rootfs: r.rootfs,
      io: stdio,
      checkpoint: r.checkpoint,
      pid: task.init.pid,
    });
    return { pid: task.init.pid };
  }

  /** Records a process's exit, drains its output, and tells containerd. */
  private exited(task: Task, p: Proc, status: number): void {
    void (async () => {
      await p.io?.close();
      if (!p.execId) {
        // the pid namespace is gone with its init: exec'd processes are too, but their stages may lag
        for (const e of task.execs.values()) await Promise.race([e.exited, new Promise((r) => setTimeout(r, 1000))]);
        try {
          const s = await lifecycle.stats(this.ctx, task.id);
          if (s.oomKills > task.oomKills) {
            task.oomKills = s.oomKills;
            this.publish('/tasks/oom', 'containerd.events.TaskOOM', { containerId: task.id });
          }
        } catch {
          // no cgroups to read (rootless) or already deleted
        }
      }
      p.exit(status);
      this.publish('/tasks/exit', 'containerd.events.TaskExit', {
        containerId: task.id,
        id: p.execId || task.id,
        pid: p.pid,
        exitStatus: status,
        exitedAt: timestamp(p.exitedAt ?? new Date()),
      });
    })();
  }

  private async start(r: IdReq): Promise<Record<string, unknown>> {
    const task = this.task(r.id);
    const p = task.proc(r.execId);
    if (p.status !== TaskStatus.CREATED || p.pid !== 0 && r.execId) {
      throw new TtrpcStatusError(Code.FAILED_PRECONDITION, `process ${r.execId || r.id} was started already: failed precondition`);
    }
    if (!r.execId) {
      await lifecycle.start(this.ctx, task.id);
      if (p.status === TaskStatus.CREATED) p.status = TaskStatus.RUNNING; // a quick process may have exited already
      this.publish('/tasks/start', 'containerd.events.TaskStart', { containerId: task.id, pid: p.pid });
      return { pid: p.pid };
    }
    let io: ProcessIO | undefined;
    try {
      io = await ProcessIO.open(p.stdio);
      p.io = io;
      const proc = parseProcess(p.spec);
      if (p.stdio.terminal) proc.terminal = true;
      const started = await lifecycle.exec(this.ctx, task.id, {
        process: proc,
        preserveFds: 0,
        foreground: true,
        ...(io.consoleSocket ? { consoleSocket: io.consoleSocket } : { stdio: io.fds }),
      });
      if (io.consoleSocket) await io.attachConsole();
      io.releaseChildEnds();
      p.pid = started.pid;
      if (p.status === TaskStatus.CREATED) p.status = TaskStatus.RUNNING;
      const waitExit = started.waitExit ?? Promise.reject(new MoatError(`container ${r.id}: exec ${r.execId}: no exit status`));
      waitExit.then(
        (status) => this.exited(task, p, status),
        (e: unknown) => {
          this.settings.log.error(`container ${r.id}: exec ${r.execId}: ${(e as Error).message}`);
          this.exited(task, p, 255);
        },
      );
    } catch (e) {
      await io?.close(0);
      p.io = undefined;
      throw e;
    }
    this.publish('/tasks/exec-started', 'containerd.events.TaskExecStarted', { containerId: task.id, execId: r.execId, pid: p.pid });
    return { pid: p.pid };
  }

  private async exec(r: ExecReq): Promise<Record<string, unknown>> {
    const task = this.task(r.id);
    if (task.execs.has(r.execId)) throw new TtrpcStatusError(Code.ALREADY_EXISTS, `exec process ${r.execId} in ${r.id}: already exists`);
    if (task.init.status === TaskStatus.STOPPED) throw new TtrpcStatusError(Code.FAILED_PRECONDITION, `container ${r.id} is stopped: failed precondition`);
    let spec: unknown;
    try {
      spec = JSON.parse(r.spec?.value?.toString('utf8') ?? '');
    } catch {
      throw new TtrpcStatusError(Code.INVALID_ARGUMENT, `exec ${r.execId} in ${r.id}: spec is not an OCI process in JSON: invalid argument`);
    }
    parseProcess(spec); // a bad process is an error now, not at Start
    const p = new Proc(r.execId, { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal });
    p.spec = spec;
    task.execs.set(r.execId, p);
    this.publish('/tasks/exec-added', 'containerd.events.TaskExecAdded', { containerId: r.id, execId: r.execId });
    return {};
  }

  private async kill(r: KillReq): Promise<Record<string, unknown>> {
    const task = this.task(r.id);
    const p = task.proc(r.execId);
    if (!r.execId) {
      if (p.status === TaskStatus.STOPPED && !r.all) throw new TtrpcStatusError(Code.NOT_FOUND, `process ${r.id}: process already finished: not found`);
      await lifecycle.kill(this.ctx, task.id, r.signal, r.all);
      return {};
    }
    if (p.status === TaskStatus.STOPPED || p.pid <= 0) throw new TtrpcStatusError(Code.NOT_FOUND, `process ${r.execId}: process already finished: not found`);
    try {
      process.kill(p.pid, r.signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') throw new TtrpcStatusError(Code.NOT_FOUND, `process ${r.execId}: process already finished: not found`);
      throw e;
    }
    return {};
  }

  private async delete(r: IdReq): Promise<Record<string, unknown>> {
    const task = this.task(r.id);
    if (r.execId) {
      const p = task.proc(r.execId);
      if (p.status !== TaskStatus.STOPPED && p.status !== TaskStatus.CREATED) {
        throw new TtrpcStatusError(Code.FAILED_PRECONDITION, `exec ${r.execId} is still running: failed precondition`);
      }
      task.execs.delete(r.execId);
      await p.io?.close(0);
      return { pid: p.pid, exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAt ?? new Date()) };
    }
    const p = task.init;
    if (p.status !== TaskStatus.STOPPED && p.status !== TaskStatus.CREATED) {
      throw new TtrpcStatusError(Code.FAILED_PRECONDITION, `container ${r.id} must be stopped before deletion: failed precondition`);
    }
    // a created, never started container is killed by delete (as runc's shim does)
    await lifecycle.remove(this.ctx, task.id, true);
    if (p.status !== TaskStatus.STOPPED) {
      await Promise.race([p.exited, new Promise((res) => setTimeout(res, 5000))]);
    }
    await p.io?.close(0);
    if (task.mounted) unmountRootfs(join(task.bundle, 'rootfs'));
    forgetRoot(task.bundle); // nothing left: `containerd-shim-moat-v1 delete` may answer without looking further
    this.tasks.delete(r.id);
    const res = { pid: p.pid, exitStatus: p.exitStatus, exitedAt: timestamp(p.exitedAt ?? new Date()) };
    this.publish('/tasks/delete', 'containerd.events.TaskDelete', { containerId: r.id, id: r.id, ...res });
    return res;
  }

  private state(r: IdReq): Promise<Record<string, unknown>> {
    const task = this.task(r.id);
    const p = task.proc(r.execId);
    let status = p.status;
    if (!r.execId && status !== TaskStatus.STOPPED) {
      try {
        const live = lifecycle.state(this.ctx, task.id).status;
        status = live === 'paused' ? TaskStatus.PAUSED : live === 'created' ? TaskStatus.CREATED : live === 'running' ? TaskStatus.RUNNING : status;
      } catch {
        // its record is gone: keep what the shim knows
      }
    }
    return Promise.resolve({
      id: p.execId || task.id,
      bundle: task.bundle,
      pid: p.pid,
      status,
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exitStatus: p.exitStatus,
      ...(p.exitedAt ? { exitedAt: timestamp(p.exitedAt) } : {}),
      execId: p.execId,
    });
  }
}

/**
 * Removes the bundle's record of the state root once the container's state and mounts are gone:
 * its absence tells the launcher's quick `delete` (native/containerd-shim-moat-v1.c) that the
 * shim cleaned up.
 */
export function forgetRoot(bundle: string): void {
  try {
    unlinkSync(join(bundle, 'moat-shim.json'));
  } catch {
    // never written
  }
}

/** Reads the state root a shim recorded in the bundle (for `delete` after the shim died). */
export function recordedRoot(bundle: string): string | undefined {
  const f = join(bundle, 'moat-shim.json');
  if (!existsSync(f)) return undefined;
  try {
    const v = JSON.parse(readFileSync(f, 'utf8')) as { root?: unknown };
    return typeof v.root === 'string' ? v.root : undefined;
  } catch {
    return undefined;
  }
}

