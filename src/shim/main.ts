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
import { existsSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
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
import { recordedRoot, TaskService } from './service.js';
import type { ShimSettings } from './service.js';
import { OPTIONS_FILE } from './start.js';
import { TtrpcClient, TtrpcServer } from './ttrpc.js';

const VERSION = '0.1.0';

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
    const text = o.configBody?.length ? o.configBody.toString('utf8') : o.configPath ? readFileSync(o.configPath, 'utf8') : '';
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

/** The daemon: serves the task service on the socket `start` chose. */
async function serve(f: ShimFlags): Promise<number> {
  process.title = 'containerd-shim-moat-v1';
  // `start` made stderr containerd's log FIFO of the bundle
  const log = new Logger({ fd: 2, format: 'text', debug: f.debug });
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
    // `start` bound the socket and passed it as fd 3; containerd may be waiting on it already
    await server.serveFd(3);
    const done = new Promise<void>((res) => {
      service.onShutdown = () => res();
    });
    log.debug(`serving on ${f.socket}, ${(performance.now()).toFixed(0)} ms after the process started`);
    await done;
    await server.close();
    try {
      unlinkSync(f.socket);
    } catch {
      // removed already
    }
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

/** Entry point of `containerd-shim-moat-v1`; resolves with the exit code. */
export async function shimMain(argv: readonly string[]): Promise<number> {
  try {
    const f = parseShimFlags(argv);
    if (f.version) {
      writeSync(1, `containerd-shim-moat-v1:\n  Version: ${VERSION}\n  Runtime: io.containerd.moat.v1\n`);
      return 0;
    }
    if (!f.id && f.action !== '') throw new UsageError('-id is required');
    if (f.action === 'delete') return await deleteAction(f);
    if (f.action !== '') throw new UsageError(`unknown action ${JSON.stringify(f.action)} (start or delete)`);
    // containerd runs "start" (start.ts), which starts the daemon with these flags
    if (!f.socket) throw new UsageError('-socket is required to serve (containerd runs "start", which passes it)');
    return await serve(f);
  } catch (e) {
    writeSync(2, `containerd-shim-moat-v1: ${(e as Error).message}\n`);
    return 1;
  }
}
