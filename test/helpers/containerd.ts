/**
 * A private containerd for tests: its own root, state, gRPC and ttrpc sockets and log under one
 * temporary directory (never the host's /var/lib/containerd or /run/containerd/containerd.sock),
 * driven with `ctr`. The runtime under test is handed to containerd's runc shim per container
 * (`ctr run --runc-binary ...`), or, later, reached through a shim of its own (`--runtime`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { killAll, leftoverProcesses, runCommand, runInPty, shellQuote, unmountUnder, which, type CommandOptions } from './harness.js';
import type { Result } from './runtime.js';

/** The containerd namespace the tests' images, containers and tasks live in. */
export const NAMESPACE = 'moat-test';

/**
 * Where containerd 1.6's runc shim (io.containerd.runc.v2) has the runtime keep its state: it runs
 * `RUNTIME --root /run/containerd/runc/NAMESPACE ...` (pkg/process.RuncRoot joined with the
 * namespace; not under containerd's own state directory), so a container's state is this plus /ID.
 */
export const RUNC_SHIM_ROOT = join('/run/containerd/runc', NAMESPACE);

/** Why containerd tests cannot run here, or undefined when they can (printed by the skip). */
export function containerdSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'containerd tests need root (run: sudo npm test)';
  if (which('containerd') === undefined || which('ctr') === undefined) return 'containerd is not installed (apt-get install containerd)';
  if (which('containerd-shim-runc-v2') === undefined) return 'containerd-shim-runc-v2 is not installed (apt-get install containerd)';
  return undefined;
}

/** Options of {@link Containerd.start}. */
export interface ContainerdOptions {
  /** Added to containerd's environment (e.g. a PATH that finds another shim binary). */
  env?: NodeJS.ProcessEnv;
}

/** A running private containerd. */
export class Containerd {
  /** The gRPC socket (`ctr -a`). */
  readonly address: string;
  /** containerd's root (content, snapshots, metadata). */
  readonly root: string;
  /** containerd's state directory (task bundles, rootfs mounts). */
  readonly state: string;
  private readonly scratch: string;
  private exited = false;

  private constructor(readonly dir: string, private readonly child: ChildProcess) {
    this.address = join(dir, 'containerd.sock');
    this.root = join(dir, 'root');
    this.state = join(dir, 'state');
    this.scratch = join(dir, 'io');
    child.on('exit', () => (this.exited = true));
  }

  /**
   * Starts containerd with a config confining it to `dir` (default: a new temporary directory) and
   * resolves once `ctr version` answers; throws (with the log's tail) if it does not within 20 s.
   */
  static async start(dir?: string, opts: ContainerdOptions = {}): Promise<Containerd> {
    // short: the socket path must fit in sockaddr_un (108 bytes), with ".ttrpc" added
    const d = dir === undefined ? mkdtempSync(join(tmpdir(), 'moat-ctd-')) : resolve(dir);
    mkdirSync(join(d, 'io'), { recursive: true });
    const q = JSON.stringify; // TOML basic strings: same escapes as JSON for the paths we make
    writeFileSync(join(d, 'config.toml'), [
      'version = 2',
      `root = ${q(join(d, 'root'))}`,
      `state = ${q(join(d, 'state'))}`,
      // CRI is Kubernetes' API: not needed, and it would want CNI and a sandbox image
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '',
      '[grpc]',
      `  address = ${q(join(d, 'containerd.sock'))}`,
      '',
      '[ttrpc]',
      `  address = ${q(join(d, 'containerd.sock.ttrpc'))}`,
      '',
      '[debug]',
      '  level = "debug"',
      '',
    ].join('\n'));
    const log = openSync(join(d, 'containerd.log'), 'a');
    const child = spawn('containerd', ['--config', join(d, 'config.toml')], {
      stdio: ['ignore', log, log],
      env: { ...process.env, ...opts.env },
    });
    closeSync(log);
    const c = new Containerd(d, child);
    const spawnError = new Promise<Error>((res) => child.on('error', res));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const err = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      if (err !== undefined) throw new Error(`cannot start containerd: ${err.message}`);
      if (c.exited) {
        await c.stop().catch(() => {});
        throw new Error(`containerd exited at start:\n${c.logTailOf(d)}`);
      }
      if (existsSync(c.address) && (await c.ctr(['version'], { timeoutMs: 5000 })).status === 0) return c;
      if (Date.now() > deadline) {
        const tail = c.logTail();
        await c.stop().catch(() => {});
        throw new Error(`containerd did not answer within 20 s; its log ends:\n${tail}`);
      }
    }
  }

  private logTailOf(d: string, lines = 40): string {
    try {
      return readFileSync(join(d, 'containerd.log'), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** containerd's pid. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The last `lines` lines of containerd's log (for failure messages). */
  logTail(lines = 40): string {
    return this.logTailOf(this.dir, lines);
  }

  /** Runs `ctr -a SOCKET -n moat-test ...args`; output is read from files (see runCommand). */
  ctr(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runCommand(this.scratch, ['ctr', '-a', this.address, '-n', NAMESPACE, ...args], opts);
  }

  /** Like ctr, but throws with ctr's stderr unless it exits 0. */
  async ok(args: string[], opts: CommandOptions = {}): Promise<Result> {
    const r = await this.ctr(args, opts);
    if (r.status !== 0) throw new Error(`ctr ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}${r.stdout}`);
    return r;
  }

  /**
   * Runs ctr with `input` written to its stdin only after `delayMs`, then stdin closed: ctr 1.6
   * sends CloseIO only once its task exists, so input that ends before the runtime finished
   * create would race ctr itself (its stdin closer is not set yet) and never reach EOF.
   */
  ctrDelayedInput(args: string[], input: string, delayMs = 1000, opts: CommandOptions = {}): Promise<Result> {
    const ctr = ['ctr', '-a', this.address, '-n', NAMESPACE, ...args].map(shellQuote).join(' ');
    const feed = `sleep ${(delayMs / 1000).toFixed(3)}; printf %s ${shellQuote(input)}`;
    return runCommand(this.scratch, ['sh', '-c', `(${feed}) | ${ctr}`], opts);
  }

  /** Starts a long-running ctr (e.g. `events`); its output so far and a stop(). */
  spawnCtr(args: string[]): { output(): string; stop(): void } {
    const child = spawn('ctr', ['-a', this.address, '-n', NAMESPACE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    return { output: () => out, stop: () => child.kill('SIGKILL') };
  }

  /** Runs ctr with `args` under a pseudo-terminal (for `run -t`, `task exec -t`), `input` typed into it. */
  ctrTty(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runInPty(this.scratch, ['ctr', '-a', this.address, '-n', NAMESPACE, ...args], opts);
  }

  /** Imports an image archive (OCI layout or docker save) into the namespace. */
  async importImage(archive: string): Promise<void> {
    await this.ok(['image', 'import', archive], { timeoutMs: 60_000 });
  }

  /** `ctr task ls` parsed: task id to pid and status (RUNNING, PAUSED, STOPPED, ...). */
  async tasks(): Promise<Map<string, { pid: number; status: string }>> {
    const r = await this.ok(['task', 'ls']);
    const tasks = new Map<string, { pid: number; status: string }>();
    for (const line of r.stdout.split('\n').slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && pid && status) tasks.set(id, { pid: Number(pid), status });
    }
    return tasks;
  }

  /**
   * Tears everything down: kills and deletes every task, deletes every container, stops containerd
   * (SIGTERM, then SIGKILL after 10 s), kills shims of this containerd that outlived it, unmounts
   * what is left under the directory and removes it.
   */
  async stop(): Promise<void> {
    if (!this.exited) {
      const list = async (args: string[]): Promise<string[]> => {
        const r = await this.ctr(args, { timeoutMs: 10_000 });
        return r.status === 0 ? r.stdout.split('\n').map((s) => s.trim()).filter((s) => s !== '') : [];
      };
      for (const id of await list(['task', 'ls', '-q'])) {
        await this.ctr(['task', 'kill', '-a', '-s', 'KILL', id], { timeoutMs: 10_000 });
        const deadline = Date.now() + 5000;
        while (Date.now() < deadline && (await this.tasks().catch(() => new Map())).get(id)?.status !== 'STOPPED') {
          await new Promise((r) => setTimeout(r, 50));
        }
        await this.ctr(['task', 'delete', '-f', id], { timeoutMs: 10_000 });
      }
      for (const id of await list(['container', 'ls', '-q'])) await this.ctr(['container', 'delete', id], { timeoutMs: 10_000 });

      this.child.kill('SIGTERM');
      const gone = await new Promise<boolean>((res) => {
        if (this.exited) return res(true);
        const timer = setTimeout(() => res(false), 10_000);
        this.child.once('exit', () => {
          clearTimeout(timer);
          res(true);
        });
      });
      if (!gone) this.child.kill('SIGKILL');
    }
    // Shims run detached from containerd (their own session); any still up after the deletes is ours.
    killAll(leftoverProcesses({ paths: [this.address] }));
    unmountUnder(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

