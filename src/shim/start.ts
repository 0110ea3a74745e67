/**
 * `containerd-shim-moat-v1 ... start`: the short-lived process containerd runs (cwd: the bundle)
 * to get the ttrpc address of the sandbox's shim. The installation's warm standby answers it if
 * there is one (standby.ts; the C launcher native/containerd-shim-moat-v1.c asks it first and
 * runs this only when it cannot). Otherwise: if the sandbox's shim runs, its address is the
 * answer; if not, this process binds the socket, starts the shim daemon with the listening
 * socket as fd 3, writes containerd's runtime options (read from stdin) into the bundle for it,
 * prints the address and exits without waiting: containerd's first request waits in the
 * socket's backlog while the daemon loads, so the two start-ups overlap.
 *
 * This is its own small bundle (dist/shim-start.cjs): only Node's core, flags.ts and claim.ts,
 * so the process containerd waits for starts as fast as Node can.
 */
import { spawn } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readSync, renameSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import type { Server } from 'node:net';
import { GROUP_ANNOTATIONS, parseShimFlags, ShimUsageError, SOCKET_DIR, socketAddress, socketPath } from './flags.js';
import type { ShimFlags } from './flags.js';
import { claimStandby, standbyEnabled } from './standby.js';

/** The file in the bundle that hands containerd's runtime options to the daemon. */
export const OPTIONS_FILE = 'moat-shim-options';

/** A start that failed, with the reason containerd shows the user. */
export class ShimStartError extends Error {
  constructor(message: string) {
    super(`start: ${message}`);
    this.name = 'ShimStartError';
  }
}

/** Whether something accepts connections on a unix socket (the connection is closed at once). */
export function canConnect(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** Writes the `address` file of the bundle atomically, as the runc shim does. */
export function writeAddress(bundle: string, address: string): void {
  writeFileSync(join(bundle, 'address.tmp'), address);
  renameSync(join(bundle, 'address.tmp'), join(bundle, 'address'));
}

/** Reads stdin to its end (containerd writes the runtime options there, or nothing). */
function readStdin(): Buffer {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    let n: number;
    try {
      // containerd gives a pipe or /dev/null (the launcher a memfd): each ends
      n = readSync(0, buf, 0, buf.length, null);
    } catch {
      break; // no stdin at all
    }
    if (n <= 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/** Binds and listens on `path`; resolves with the server. */
function listen(path: string): Promise<Server> {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once('error', rej);
    server.listen({ path, backlog: 128 }, () => res(server));
  });
}

/** The sandbox group of `bundle`: the CRI sandbox id, or the container id. */
function group(bundle: string, id: string): string {
  let spec: { annotations?: Record<string, string> };
  try {
    spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as typeof spec;
  } catch (e) {
    throw new ShimStartError(`cannot read config.json of the bundle: ${(e as Error).message}`);
  }
  for (const a of GROUP_ANNOTATIONS) {
    const g = spec.annotations?.[a];
    if (g) return g;
  }
  return id;
}

/** Where a start stands: the sandbox shim's address and socket, and whether that shim runs. */
export interface StartPlan {
  address: string;
  path: string;
  running: boolean;
}

/**
 * The first half of every start (here and in the standby): the sandbox shim's address; if that
 * shim runs, the bundle's address file too; if not, a clean socket path and the runtime options
 * in the bundle for the daemon that will serve it.
 */
export async function planStart(f: ShimFlags, bundle: string, options: Buffer): Promise<StartPlan> {
  if (!f.id) throw new ShimUsageError('-id is required');
  if (!f.namespace) throw new ShimUsageError('-namespace is required');
  const address = socketAddress(f.address, f.namespace, group(bundle, f.id));
  const path = socketPath(address);
  if (existsSync(path)) {
    if (await canConnect(path)) {
      writeAddress(bundle, address);
      return { address, path, running: true };
    }
    unlinkSync(path); // left by a shim that died
  }
  mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
  writeFileSync(join(bundle, OPTIONS_FILE), options);
  return { address, path, running: false };
}

/** The start action; resolves with the exit code after printing the address. */
async function start(f: ShimFlags, argv: readonly string[], daemon: string): Promise<number> {
  if (!f.id) throw new ShimUsageError('-id is required');
  if (!f.namespace) throw new ShimUsageError('-namespace is required');
  const opts = readStdin();
  const cwd = process.cwd();
  if (standbyEnabled()) {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    const r = await claimStandby(daemon, { argv: [...argv], env, cwd, stdin: opts });
    if (r?.kind === 'ok') {
      if (r.pid > 0) adjustOom(r.pid);
      writeSync(1, r.address);
      return 0;
    }
    if (r?.kind === 'error') throw new Error(r.message);
  }
  const plan = await planStart(f, cwd, opts);
  if (plan.running) {
    writeSync(1, plan.address);
    return 0;
  }
  const { address, path } = plan;
  const server = await listen(path);
  try {
    // `_handle.fd` is Node's internal handle; it is how a listening socket is passed to a child
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    const args = [daemon, '-namespace', f.namespace, '-id', f.id, '-address', f.address, '-publish-binary', f.publishBinary, '-socket', path,
      ...(f.debug ? ['-debug'] : [])];
    // the daemon's stderr is containerd's log FIFO of the bundle (containerd holds its read end):
    // whatever the daemon prints, a crash included, shows in containerd's log
    let logFd: number | 'ignore' = 'ignore';
    try {
      logFd = openSync('log', constants.O_WRONLY | constants.O_NONBLOCK);
    } catch {
      // run by hand, without containerd: no log
    }
    const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'ignore', logFd, fd], env: process.env });
    if (typeof logFd === 'number') closeSync(logFd);
    await new Promise<void>((res, rej) => {
      child.once('spawn', () => res());
      child.once('error', (e) => rej(new ShimStartError(`cannot run the shim daemon: ${e.message}`)));
    });
    child.unref();
    adjustOom(child.pid ?? 0);
  } catch (e) {
    server.close();
    try {
      unlinkSync(path);
    } catch {
      // gone
    }
    throw e;
  }
  // not server.close(): Node would unlink the socket path; the daemon holds its own copy of the
  // listening socket, and this process's copy goes when it exits right after this
  server.unref();
  writeAddress(cwd, address);
  writeSync(1, address);
  return 0;
}

/** The shim's OOM score: containerd's plus one (the OOM killer takes containers first, then the shim). */
function adjustOom(pid: number): void {
  try {
    const parent = Number(readFileSync(`/proc/${process.ppid}/oom_score_adj`, 'utf8').trim());
    writeFileSync(`/proc/${pid}/oom_score_adj`, String(Math.min(1000, parent + 1)));
  } catch {
    // not allowed to lower it (rootless): the default is fine
  }
}

/** A protobuf varint (non-negative integers up to 2^53). */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

/**
 * containerd.task.v2.DeleteResponse{pid: 0, exit_status: 137, exited_at: now} in protobuf, written
 * by hand so that this small bundle needs no protobuf library: field 1 (pid) is 0 and so absent,
 * field 2 (varint), field 3 (a google.protobuf.Timestamp: seconds = 1, nanos = 2).
 */
export function killedDeleteResponse(now: Date): Buffer {
  const ms = now.getTime();
  const ts = [0x08, ...varint(Math.floor(ms / 1000)), 0x10, ...varint((ms % 1000) * 1_000_000)];
  return Buffer.from([0x10, ...varint(128 + 9), 0x1a, ...varint(ts.length), ...ts]);
}

/** Whether anything is mounted on `path` (mountinfo escapes space, tab, newline and backslash in octal). */
function mounted(path: string): boolean {
  const escaped = path.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === escaped);
}

/**
 * `delete` when the shim already cleaned up (its normal end: containerd 1.6 runs `delete` after
 * every shim exits): no record of a state root in the bundle (the shim removes moat-shim.json
 * once the container's state and mounts are gone), no Moat state under the default root, and
 * nothing mounted on rootfs — the C launcher's rule too. Anything else goes to the full
 * `delete` in the main bundle; returns undefined then.
 */
function quickDelete(f: ShimFlags): number | undefined {
  const bundle = f.bundle || process.cwd();
  const name = (s: string): boolean => s !== '' && s !== '.' && s !== '..' && !s.includes('/');
  if (!name(f.id) || !name(f.namespace)) return undefined;
  if (existsSync(join(bundle, 'moat-shim.json')) || existsSync(join('/run/containerd/moat', f.namespace, f.id)) || mounted(join(bundle, 'rootfs'))) {
    return undefined;
  }
  writeSync(1, killedDeleteResponse(new Date()));
  return 0;
}

/**
 * Entry point of the binary: handles `start` here and hands every other action to `full`
 * (the daemon and `delete`, in the main bundle). Resolves with the exit code.
 */
export async function main(argv: readonly string[], daemon: string, full: () => (argv: readonly string[]) => Promise<number>): Promise<number> {
  let f: ShimFlags;
  try {
    f = parseShimFlags(argv);
  } catch (e) {
    writeSync(2, `containerd-shim-moat-v1: ${(e as Error).message}\n`);
    return 2;
  }
  if (f.action === 'delete') {
    const quick = quickDelete(f);
    if (quick !== undefined) return quick;
  }
  if (f.action !== 'start') return full()(argv);
  try {
    return await start(f, argv, daemon);
  } catch (e) {
    writeSync(2, `containerd-shim-moat-v1: ${(e as Error).message}\n`);
    return 1;
  }
}
