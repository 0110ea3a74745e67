/**
 * `containerd-shim-moat-v1`: Moat's containerd shim v2 (runtime name io.containerd.moat.v1).
 *
 * containerd runs the binary with Go-style flags before the action:
 *   `-namespace NS -address SOCK -publish-binary BIN -id ID [-debug] start` (cwd: the bundle):
 *     find or start the long-lived shim of the sandbox and print its address (start.ts);
 *   `-namespace NS -address SOCK -publish-binary BIN -id ID -bundle DIR delete`: clean up after
 *     a shim that died: force-delete the container, print a protobuf DeleteResponse (here);
 *   without an action, `-socket PATH` and the listening socket as fd 3 (only `start` runs it
 *     so): the daemon that serves the task service (here, with service.ts).
 * One shim serves every container of a sandbox (the annotation io.kubernetes.cri.sandbox-id
 * groups them, as containerd's runc shim does); events go back over containerd's ttrpc socket
 * (TTRPC_ADDRESS) through containerd.services.events.ttrpc.v1.Events/Forward.
 */
import { closeSync, constants, existsSync, openSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { MoatError, UsageError } from '../errors.js';
import * as lifecycle from '../container/lifecycle.js';
import { StateStore } from '../container/store.js';
import { Logger } from '../util/log.js';
import { parseShimFlags, socketPath } from './flags.js';
import type { ShimFlags } from './flags.js';
import { unmountRootfs } from './mount.js';
import { anyOf, decode, encode, timestamp } from './proto.js';
import { forgetRoot, recordedRoot, TaskService } from './service.js';
import type { ShimSettings } from './service.js';
import type { ClaimRequest } from './claim.js';
import { awaitClaim, ensureStandby, standbyLock } from './standby.js';
import type { Decision } from './standby.js';
import { OPTIONS_FILE, planStart, writeAddress } from './start.js';
import { TtrpcClient, TtrpcServer } from './ttrpc.js';

const VERSION = '0.1.0';
/** How long a shim with no task and no containerd connection lives on. */
const ORPHAN_MS = 60_000;

/** Runtime options containerd passes (runc's Options, or CRI's config-path options). */
interface RuntimeOptions {
  root?: string;
  systemdCgroup?: boolean;
  shimCgroup?: string;
  isolation?: string;
  sentryLevel?: string;
  allowEgress?: string[];
  vmm?: string;
  vmmAccel?: string;
}

/** Decodes the options Any: containerd.runc.v1.Options or runtimeoptions.v1.Options (a config file). */
export function runtimeOptions(raw: Buffer): RuntimeOptions {
  if (raw.length === 0) return {};
  const any = decode<{ typeUrl: string; value: Buffer }>('google.protobuf.Any', raw);
  const type = any.typeUrl.replace(/^.*\//, '');
  if (type === 'containerd.runc.v1.Options') {
    const o = decode<{ root: string; systemdCgroup: boolean; shimCgroup: string }>('containerd.runc.v1.Options', any.value);
    return { ...(o.root ? { root: o.root } : {}), systemdCgroup: o.systemdCgroup, ...(o.shimCgroup ? { shimCgroup: o.shimCgroup } : {}) };
  }
  if (type === 'runtimeoptions.v1.Options') {
    const o = decode<{ configPath: string; configBody: Buffer }>('runtimeoptions.v1.Options', any.value);
    let text = '';
    if (o.configBody?.length) text = o.configBody.toString('utf8');
    else if (o.configPath) {
      try {
        text = readFileSync(o.configPath, 'utf8');
      } catch (e) {
        throw new UsageError(`runtime config ${o.configPath}: cannot read it: ${(e as Error).message}`);
      }
    }
    return parseConfig(text, o.configPath || 'ConfigBody');
  }
  throw new UsageError(`runtime options of type ${any.typeUrl} are not Moat's (expected containerd.runc.v1.Options or runtimeoptions.v1.Options)`);
}

/**
 * Parses Moat's shim config file (the runtime's ConfigPath in containerd's config), TOML or
 * JSON, e.g. `isolation = "sentry"`, `sentry_level = "strict"`, `allow_egress = ["10.0.0.0/8:443"]`,
 * `vmm = "qemu"`, `vmm_accel = "kvm"`, `root = "/run/moat-k8s"`, `systemd_cgroup = true`.
 */
export function parseConfig(text: string, where: string): RuntimeOptions {
  let obj: Record<string, unknown>;
  try {
    obj = text.trim().startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : parseToml(text);
  } catch (e) {
    throw new UsageError(`${where}: ${(e as Error).message.split('\n')[0]}`);
  }
  const str = (k: string): string | undefined => {
    const v = obj[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new UsageError(`${where}: ${k}: expected a string`);
    return v;
  };
  const out: RuntimeOptions = {};
  const known = new Set(['isolation', 'sentry_level', 'allow_egress', 'vmm', 'vmm_accel', 'root', 'systemd_cgroup']);
  for (const k of Object.keys(obj)) if (!known.has(k)) throw new UsageError(`${where}: unknown key ${k} (known: ${[...known].join(', ')})`);
  const iso = str('isolation');
  if (iso) out.isolation = iso;
  const level = str('sentry_level');
  if (level) out.sentryLevel = level;
  const vmm = str('vmm');
  if (vmm) out.vmm = vmm;
  const accel = str('vmm_accel');
  if (accel) out.vmmAccel = accel;
  const root = str('root');
  if (root) out.root = root;
  const sc = obj['systemd_cgroup'];
  if (sc !== undefined) {
    if (typeof sc !== 'boolean') throw new UsageError(`${where}: systemd_cgroup: expected true or false`);
    out.systemdCgroup = sc;
  }
  const eg = obj['allow_egress'];
  if (eg !== undefined) {
    if (!Array.isArray(eg) || !eg.every((x) => typeof x === 'string')) throw new UsageError(`${where}: allow_egress: expected a list of strings`);
    out.allowEgress = eg as string[];
  }
  return out;
}

/** The Moat state root for a namespace unless the options name one. */
function defaultRoot(namespace: string): string {
  return join('/run/containerd/moat', namespace);
}

/** Puts process `pid` (the shim) into the cgroup containerd asked for (runc's ShimCgroup option). */
function joinCgroup(cgroup: string, pid: number): void {
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const dirs = v2 ? [join('/sys/fs/cgroup', cgroup)] : ['cpu', 'memory', 'pids', 'blkio', 'cpuset'].map((c) => join('/sys/fs/cgroup', c, cgroup));
  for (const d of dirs) {
    try {
      writeFileSync(join(d, 'cgroup.procs'), String(pid));
    } catch (e) {
      throw new MoatError(`cannot move the shim into cgroup ${cgroup} (${d}): ${(e as Error).message}`);
    }
  }
}

/** `delete`: the shim is gone; force-delete the container and report it killed. */
async function deleteAction(f: ShimFlags): Promise<number> {
  const bundle = f.bundle || process.cwd();
  const root = recordedRoot(bundle) ?? defaultRoot(f.namespace);
  const log = new Logger({ format: 'text', debug: f.debug });
  const ctx = { store: new StateStore(root), log, systemdCgroup: false };
  let pid = 0;
  try {
    pid = lifecycle.state(ctx, f.id).pid;
  } catch {
    // never created, or deleted already
  }
  await lifecycle.remove(ctx, f.id, true);
  unmountRootfs(join(bundle, 'rootfs'));
  forgetRoot(bundle);
  writeSync(1, encode('containerd.task.v2.DeleteResponse', { pid, exitStatus: 128 + 9, exitedAt: timestamp(new Date()) }));
  return 0;
}

/** Sends events to containerd in order, one at a time; a failure is logged, never fatal. */
class Publisher {
  private client?: Promise<TtrpcClient>;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: Logger,
  ) {}

  publish(topic: string, type: string, event: Record<string, unknown>): void {
    if (!this.address) return;
    const envelope = { timestamp: timestamp(new Date()), namespace: this.namespace, topic, event: anyOf(type, event) };
    const payload = encode('containerd.services.events.ttrpc.v1.ForwardRequest', { envelope });
    this.chain = this.chain.then(async () => {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          this.client ??= TtrpcClient.connect(socketPath(this.address), 5000);
          await (await this.client).call('containerd.services.events.ttrpc.v1.Events', 'Forward', payload, 5000);
          return;
        } catch (e) {
          const c = this.client;
          this.client = undefined;
          c?.then((x) => x.close()).catch(() => {});
          if (attempt === 2) this.log.warn(`publish ${topic}: ${(e as Error).message}`);
        }
      }
    });
  }
}

/** Binds the daemon's ttrpc server: the socket `start` passed as fd 3, or (a claimed standby) the path. */
type Bind = (server: TtrpcServer) => Promise<void>;

/** The daemon: serves the task service until containerd shuts it down. */
async function serve(f: ShimFlags, log: Logger, bind: Bind): Promise<number> {
  process.title = 'containerd-shim-moat-v1';
  try {
    let raw = Buffer.alloc(0);
    try {
      raw = readFileSync(OPTIONS_FILE);
    } catch {
      // none given
    }
    let o: RuntimeOptions = {};
    let optionsError: Error | undefined;
    try {
      o = runtimeOptions(raw);
    } catch (e) {
      // served, not fatal: containerd shows a failed Create's message to the user; a dead shim says only "ttrpc: closed"
      optionsError = e as Error;
    }
    if (o.shimCgroup) joinCgroup(o.shimCgroup, process.pid);
    const settings: ShimSettings = {
      root: o.root ?? defaultRoot(f.namespace),
      namespace: f.namespace,
      systemdCgroup: o.systemdCgroup === true,
      ...(o.isolation ? { isolation: o.isolation } : {}),
      ...(o.sentryLevel || o.allowEgress ? { sentry: { ...(o.sentryLevel ? { level: o.sentryLevel } : {}), egress: o.allowEgress ?? [] } } : {}),
      ...(o.vmm || o.vmmAccel ? { microvm: { ...(o.vmm ? { vmm: o.vmm } : {}), ...(o.vmmAccel ? { accel: o.vmmAccel } : {}) } } : {}),
      ...(optionsError ? { optionsError } : {}),
      log,
    };
    const publisher = new Publisher(process.env['TTRPC_ADDRESS'] ?? '', f.namespace, log);
    const service = new TaskService(settings, (topic, type, ev) => publisher.publish(topic, type, ev));
    const server = new TtrpcServer(service.handlers());
    await bind(server);
    const done = new Promise<void>((res) => {
      service.onShutdown = () => res();
      // a shim nobody talks to and that runs nothing (containerd died before its first request,
      // or never connected) must not stay forever: after ORPHAN_MS of that, it exits
      let quietSince = Date.now();
      const check = setInterval(() => {
        if (service.size > 0 || server.connections > 0) quietSince = Date.now();
        else if (Date.now() - quietSince >= ORPHAN_MS) {
          log.warn(`no tasks and no connection from containerd for ${ORPHAN_MS / 1000} s: exiting`);
          res();
        }
      }, 5000);
      check.unref();
    });
    log.debug(`serving on ${f.socket}, ${performance.now().toFixed(0)} ms after the process started`);
    // the next sandbox's shim: a standby, started once this one is past its own start-up
    const daemon = process.argv[1] ?? '';
    setTimeout(() => void ensureStandby(daemon), 1000).unref();
    await done;
    await server.close();
    try {
      unlinkSync(f.socket);
    } catch {
      // removed already
    }
    await ensureStandby(daemon); // a quick container never reached the timer above
    return 0;
  } catch (e) {
    log.error((e as Error).message);
    try {
      unlinkSync(f.socket); // nobody serves it: containerd's next start makes a new shim
    } catch {
      // gone
    }
    return 1;
  }
}

/** Loads and runs once what a Create needs, so that a claimed standby answers at full speed. */
async function warmUp(): Promise<void> {
  await import('../container/lifecycle.js');
  await import('../spec/validate.js');
  const { getBackend } = await import('../backends/registry.js');
  await getBackend('container');
  const { fcntl } = await import('../sys/kernel.js');
  fcntl(0, 1 /* F_GETFD */); // binds libc through koffi
  const { warmTypes } = await import('./proto.js');
  warmTypes();
}

/**
 * How a standby answers a start request: with the running sandbox shim's address (it stays a
 * standby), or by becoming the sandbox's shim (a claim). Errors are the start's own: containerd
 * shows them.
 */
async function decideStart(request: ClaimRequest): Promise<Decision> {
  let f: ShimFlags;
  try {
    f = parseShimFlags(request.argv);
  } catch (e) {
    return { reply: { kind: 'pass', reason: (e as Error).message } }; // the slow start reports it
  }
  if (f.action !== 'start' || f.version) return { reply: { kind: 'pass', reason: `not a start: ${JSON.stringify(f.action)}` } };
  try {
    const plan = await planStart(f, request.cwd, request.stdin);
    if (plan.running) return { reply: { kind: 'ok', pid: 0, address: plan.address } };
    return { claim: { flags: { ...f, socket: plan.path }, cwd: request.cwd, env: request.env, address: plan.address } };
  } catch (e) {
    return { reply: { kind: 'error', message: (e as Error).message } };
  }
}

/** `standby`: boot, warm up, wait for a claim, then serve as the claimed sandbox's shim. */
async function standbyMain(): Promise<number> {
  process.title = 'containerd-shim-moat-v1-standby';
  const daemon = process.argv[1] ?? '';
  const lock = standbyLock(daemon);
  if (lock === undefined) return 0; // another standby boots or waits
  await warmUp();
  const got = await awaitClaim(daemon, decideStart);
  closeSync(lock); // claimed or leaving: the next standby may start
  if (!got) return 0;
  const { claim, reply } = got;
  try {
    process.chdir(claim.cwd);
    for (const k of Object.keys(process.env)) if (!(k in claim.env)) delete process.env[k];
    Object.assign(process.env, claim.env);
  } catch (e) {
    reply({ kind: 'pass', reason: (e as Error).message });
    return 1;
  }
  let logFd = -1;
  try {
    // containerd holds the read end of the bundle's log FIFO
    logFd = openSync('log', constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    // no containerd log: nothing is logged
  }
  const log = new Logger({ fd: logFd >= 0 ? logFd : 2, format: 'text', debug: claim.flags.debug });
  return serve(claim.flags, log, async (server) => {
    try {
      await server.listen(claim.flags.socket);
    } catch (e) {
      // e.g. a concurrent slow start bound it first: that start serves the sandbox
      reply({ kind: 'pass', reason: (e as Error).message });
      throw e;
    }
    writeAddress(claim.cwd, claim.address);
    reply({ kind: 'ok', pid: process.pid, address: claim.address });
  });
}

/** Entry point of `containerd-shim-moat-v1`; resolves with the exit code. */
export async function shimMain(argv: readonly string[]): Promise<number> {
  try {
    const f = parseShimFlags(argv);
    if (f.version) {
      writeSync(1, `containerd-shim-moat-v1:\n  Version: ${VERSION}\n  Runtime: io.containerd.moat.v1\n`);
      return 0;
    }
    if (f.action === 'standby') return await standbyMain();
    if (!f.id && f.action !== '') throw new UsageError('-id is required');
    if (f.action === 'delete') return await deleteAction(f);
    if (f.action !== '') throw new UsageError(`unknown action ${JSON.stringify(f.action)} (start, delete or standby)`);
    // containerd runs "start" (start.ts), which starts the daemon with these flags
    if (!f.socket) throw new UsageError('-socket is required to serve (containerd runs "start", which passes it)');
    // `start` made stderr containerd's log FIFO of the bundle and passed the bound socket as fd 3
    return await serve(f, new Logger({ fd: 2, format: 'text', debug: f.debug }), (server) => server.serveFd(3));
  } catch (e) {
    writeSync(2, `containerd-shim-moat-v1: ${(e as Error).message}\n`);
    return 1;
  }
}
