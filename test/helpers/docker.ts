/**
 * A private Docker engine for tests: dockerd (Debian `docker.io`) with its data root, exec root,
 * socket, pid file and log in one temporary directory, on a private containerd of its own
 * (test/helpers/containerd.ts), with no bridge, iptables or userland proxy, and the runtime under
 * test registered in its daemon configuration as Docker users register runc-compatible runtimes
 * (`runtimes` in daemon.json; dockerd reaches them through containerd's runc shim).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Containerd, containerdSkipReason } from './containerd.js';
import { killAll, leftoverProcesses, runCommand, runInPty, runtimeBinary, shellQuote, unmountUnder, which, type CommandOptions } from './harness.js';
import { RUNTIME, type Result } from './runtime.js';

/** Why Docker tests cannot run here, or undefined when they can (printed by the skip). */
export function dockerSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'docker tests need root (run: sudo npm test)';
  if (which('dockerd') === undefined || which('docker') === undefined) return 'docker is not installed (apt-get install docker.io)';
  return containerdSkipReason();
}

/** The daemon.json name of the runtime under test, and (Moat) of the same runtime with `--isolation=sentry` as its runtime argument. */
export const RUNTIME_NAME = 'under-test';
export const SENTRY_RUNTIME_NAME = 'under-test-sentry';
/** Moat with `--isolation=microvm` as a runtime argument. */
export const MICROVM_RUNTIME_NAME = 'under-test-microvm';

/** A running private dockerd. */
export class Docker {
  /** dockerd's API socket (`docker -H unix://...`). */
  readonly socket: string;
  /** The --root dockerd has containerd's runc shim give the runtime (its exec root's runtime-runc/moby). */
  readonly runtimeRoot: string;
  private readonly scratch: string;
  private exited = false;

  private constructor(readonly dir: string, private readonly child: ChildProcess, private readonly containerd: Containerd) {
    this.socket = join(dir, 'docker.sock');
    this.runtimeRoot = join(dir, 'exec', 'runtime-runc', 'moby');
    this.scratch = join(dir, 'io');
    child.on('exit', () => (this.exited = true));
  }

  /** Starts containerd and dockerd confined to a new temporary directory; resolves once `docker version` answers. */
  static async start(): Promise<Docker> {
    const dir = mkdtempSync(join(tmpdir(), 'moat-docker-'));
    mkdirSync(join(dir, 'io'));
    // bin/moat.cjs is `#!/usr/bin/env node`: the shim that runs it must find node
    const env = { PATH: [...new Set([dirname(process.execPath), ...(process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')])].join(':') };
    const containerd = await Containerd.start(join(dir, 'ctd'), { env });
    const runtime = runtimeBinary();
    const runtimes: Record<string, { path: string; runtimeArgs?: string[] }> = { [RUNTIME_NAME]: { path: runtime } };
    if (RUNTIME === 'moat') {
      runtimes[SENTRY_RUNTIME_NAME] = { path: runtime, runtimeArgs: ['--isolation=sentry'] };
      runtimes[MICROVM_RUNTIME_NAME] = { path: runtime, runtimeArgs: ['--isolation=microvm'] };
    }
    writeFileSync(join(dir, 'daemon.json'), JSON.stringify({
      runtimes,
      'default-runtime': RUNTIME_NAME,
      'data-root': join(dir, 'root'),
      'exec-root': join(dir, 'exec'),
      pidfile: join(dir, 'docker.pid'),
      hosts: [`unix://${join(dir, 'docker.sock')}`],
      containerd: containerd.address,
      'storage-driver': 'overlay2',
      'exec-opts': ['native.cgroupdriver=cgroupfs'],
      // no host network set-up: every container runs with --network none
      bridge: 'none',
      iptables: false,
      'ip-forward': false,
      'ip-masq': false,
      'userland-proxy': false,
      features: { buildkit: false },
    }, null, 2));
    const log = openSync(join(dir, 'dockerd.log'), 'a');
    const child = spawn('dockerd', ['--config-file', join(dir, 'daemon.json')], { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
    closeSync(log);
    const d = new Docker(dir, child, containerd);
    const spawnError = new Promise<Error>((res) => child.on('error', res));
    const deadline = Date.now() + 30_000;
    for (;;) {
      const err = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))]);
      if (err !== undefined || d.exited) {
        const tail = d.logTail();
        await d.stop().catch(() => {});
        throw new Error(`dockerd did not start: ${err?.message ?? 'it exited'}\n${tail}`);
      }
      if ((await d.docker(['version'], { timeoutMs: 5000 })).status === 0) return d;
      if (Date.now() > deadline) {
        const tail = d.logTail();
        await d.stop().catch(() => {});
        throw new Error(`dockerd did not answer within 30 s; its log ends:\n${tail}`);
      }
    }
  }

  /** The last `lines` lines of dockerd's log (for failure messages). */
  logTail(lines = 40): string {
    try {
      return readFileSync(join(this.dir, 'dockerd.log'), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Runs `docker -H SOCKET ...args`; output is read from files (see runCommand). */
  docker(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runCommand(this.scratch, ['docker', '-H', `unix://${this.socket}`, ...args], opts);
  }

  /** Like docker, but throws with docker's stderr unless it exits 0. */
  async ok(args: string[], opts: CommandOptions = {}): Promise<Result> {
    const r = await this.docker(args, opts);
    if (r.status !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}${r.stdout}\ndockerd's log ends:\n${this.logTail(15)}`);
    return r;
  }

  /** Runs docker with `args` under a pseudo-terminal (`run -it`, `exec -it`), `input` typed into it. */
  tty(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runInPty(this.scratch, ['docker', '-H', `unix://${this.socket}`, ...args], opts);
  }

  /** Imports the root filesystem in `rootfs` as image `ref` (`docker import`: no registry, no archive format of Docker's own needed). */
  async importRootfs(rootfs: string, ref: string): Promise<void> {
    const line = `tar -C ${shellQuote(rootfs)} -c . | docker -H ${shellQuote(`unix://${this.socket}`)} import - ${shellQuote(ref)}`;
    const r = await runCommand(this.scratch, ['sh', '-c', line], { timeoutMs: 60_000 });
    if (r.status !== 0) throw new Error(`docker import exited ${r.status ?? r.signal}: ${r.stderr}`);
  }

  /**
   * Removes every container, stops dockerd (SIGKILL after 20 s) and its containerd, kills what
   * is left of theirs, unmounts what is left under the directory and removes it.
   */
  async stop(): Promise<void> {
    if (!this.exited) {
      const ids = (await this.docker(['ps', '-aq'], { timeoutMs: 10_000 })).stdout.split('\n').filter((s) => s.trim() !== '');
      if (ids.length > 0) await this.docker(['rm', '-f', ...ids], { timeoutMs: 30_000 });
      this.child.kill('SIGTERM');
      const gone = await new Promise<boolean>((res) => {
        if (this.exited) return res(true);
        const timer = setTimeout(() => res(false), 20_000);
        this.child.once('exit', () => {
          clearTimeout(timer);
          res(true);
        });
      });
      if (!gone) this.child.kill('SIGKILL');
    }
    await this.containerd.stop();
    killAll(leftoverProcesses({ paths: [this.dir] }));
    unmountUnder(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
