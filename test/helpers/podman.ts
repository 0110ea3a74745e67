/**
 * A private Podman for tests: storage, run root, libpod tmpdir, events log and configuration all in
 * one temporary directory (never the host's /var/lib/containers), with the runtime under test as
 * its OCI runtime (`podman --runtime RUNTIME`), reached through conmon as Podman always does.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { killAll, leftoverProcesses, runCommand, runInPty, runtimeBinary, unmountUnder, which, type CommandOptions } from './harness.js';
import { waitFor, type Result } from './runtime.js';

/** Why Podman tests cannot run here, or undefined when they can (printed by the skip). */
export function podmanSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'podman tests need root (run: sudo npm test)';
  if (which('podman') === undefined) return 'podman is not installed (apt-get install podman)';
  if (which('conmon') === undefined) return 'conmon is not installed (apt-get install podman)';
  return undefined;
}

/** Options of {@link Podman.start}. */
export interface PodmanOptions {
  /** The OCI runtime executable (default: the runtime under test, see runtimeBinary). */
  runtime?: string;
  /** The private directory (default: a new temporary directory); removed by stop. */
  dir?: string;
}

const q = JSON.stringify; // TOML basic strings: same escapes as JSON for the paths we make

/** A private Podman store and configuration; no daemon (every command is a podman process). */
export class Podman {
  /** The OCI runtime executable given to podman. */
  readonly runtime: string;
  /** The environment podman runs with (its private configuration files). */
  readonly env: NodeJS.ProcessEnv;
  private readonly scratch: string;

  private constructor(readonly dir: string, runtime: string) {
    this.runtime = runtime;
    this.scratch = join(dir, 'io');
    this.env = {
      // Only these files are read, not /etc/containers/* or ~/.config/containers/* of the host.
      CONTAINERS_CONF: join(dir, 'containers.conf'),
      CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
      CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
    };
  }

  /** Makes the directory and its configuration; podman itself starts per command. */
  static async start(opts: PodmanOptions = {}): Promise<Podman> {
    const dir = opts.dir === undefined ? mkdtempSync(join(tmpdir(), 'moat-podman-')) : resolve(opts.dir);
    for (const sub of ['io', 'root', 'run', 'tmp', 'networks']) mkdirSync(join(dir, sub), { recursive: true });
    const p = new Podman(dir, opts.runtime ?? runtimeBinary());
    // conmon gives the runtime (and the `podman container cleanup` it runs at exit) only the
    // environment listed here: a PATH that finds node (bin/moat.cjs is `#!/usr/bin/env node`)
    // and the same private configuration.
    const path = [...new Set([dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'])].join(':');
    const conmonEnv = [`PATH=${path}`, ...Object.entries(p.env).map(([k, v]) => `${k}=${v}`)];
    writeFileSync(join(dir, 'containers.conf'), [
      '[containers]',
      // This host's test session lacks CAP_SYS_RESOURCE, and podman's default RLIMIT_NOFILE and
      // RLIMIT_NPROC for a container exceed our own hard limits: raising them fails in the runtime
      // (runc and Moat alike: "rlimit ... Operation not permitted"). Limits below ours are allowed.
      'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
      // No network unless a test asks for one (--network NAME): "none" needs no CNI/netavark
      // setup nor any bridge, iptables or DNS change on the host.
      'netns = "none"',
      '',
      '[engine]',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `conmon_env_vars = [${conmonEnv.map((e) => q(e)).join(', ')}]`,
      '',
      '[network]',
      `network_config_dir = ${q(join(dir, 'networks'))}`,
      '',
    ].join('\n'));
    writeFileSync(join(dir, 'storage.conf'), [
      '[storage]',
      'driver = "overlay"',
      `graphroot = ${q(join(dir, 'root'))}`,
      `runroot = ${q(join(dir, 'run'))}`,
      '',
    ].join('\n'));
    // Images come from archives only (podman load): no registry to search or pull from.
    writeFileSync(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    return p;
  }

  /** podman's global flags: this store, this runtime, cgroupfs, a file events log. */
  globalArgs(): string[] {
    const d = this.dir;
    return [
      '--root', join(d, 'root'), '--runroot', join(d, 'run'), '--tmpdir', join(d, 'tmp'),
      '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--runtime', this.runtime,
    ];
  }

  /** Runs `podman GLOBAL-FLAGS ...args`; output is read from files (see runCommand). */
  podman(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runCommand(this.scratch, ['podman', ...this.globalArgs(), ...args], { ...opts, env: { ...this.env, ...opts.env } });
  }

  /** Like podman, but throws with podman's stderr unless it exits 0. */
  async ok(args: string[], opts: CommandOptions = {}): Promise<Result> {
    const r = await this.podman(args, opts);
    if (r.status !== 0) throw new Error(`podman ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}${r.stdout}`);
    return r;
  }

  /** Runs podman with `args` under a pseudo-terminal (for `run -it`, `exec -it`), `input` typed into it. */
  tty(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return runInPty(this.scratch, ['podman', ...this.globalArgs(), ...args], { ...opts, env: { ...this.env, ...opts.env } });
  }

  /** `podman run ...args` (no network and low rlimits come from the private containers.conf). */
  run(args: string[], opts: CommandOptions = {}): Promise<Result> {
    return this.podman(['run', ...args], opts);
  }

  /** Loads an image archive (OCI layout or docker save) into the store. */
  async load(archive: string): Promise<void> {
    await this.ok(['load', '-i', archive], { timeoutMs: 60_000 });
  }

  /** The full ids of every container ever created in this store (from the events log). */
  async containerIds(): Promise<string[]> {
    const r = await this.ok(['events', '--stream=false', '--filter', 'event=create', '--format', '{{.ID}}']);
    return [...new Set(r.stdout.split('\n').map((s) => s.trim()).filter((s) => s !== ''))];
  }

  /**
   * Removes every container (`podman rm -af -t 0`), waits for conmon and the `podman container
   * cleanup` it runs to finish (SIGKILL after 10 s), unmounts what is left under the directory and
   * removes it. Images and the store go with the directory; no `podman system reset` is needed.
   */
  async stop(): Promise<void> {
    if (existsSync(join(this.dir, 'containers.conf'))) await this.podman(['rm', '-af', '-t', '0'], { timeoutMs: 30_000 });
    const ours = { paths: [this.dir] };
    if (!(await waitFor(() => leftoverProcesses(ours).length === 0, 10_000))) killAll(leftoverProcesses(ours));
    unmountUnder(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
