/**
 * The Backend interface: what every isolation backend (container, sentry, microvm) implements.
 * The lifecycle code in src/container/ owns the state machine and the state store; a backend
 * only builds and drives the sandbox.
 */
import type { ContainerRecord } from '../container/store.js';
import type { CgroupStats, Resources } from '../cgroups/index.js';
import type { ProcessSpec, Spec } from '../spec/schema.js';
import type { Logger } from '../util/log.js';

/** Names of the isolation backends. */
export type Isolation = 'container' | 'sentry' | 'microvm';

/** Everything a backend needs to create one container. */
export interface CreateRequest {
  id: string;
  /** Container state directory (exists, locked, owned by the runtime). */
  dir: string;
  /** Absolute bundle directory ("" for the embedded default). */
  bundle: string;
  /** Absolute rootfs path on the host. */
  rootfs: string;
  spec: Spec;
  /** Unix socket path to send the pty master to, when process.terminal is set. */
  consoleSocket?: string;
  /** Number of extra fds (3, 4, ...) passed from the runtime to the container. */
  preserveFds: number;
  /** How many of those came from systemd socket activation (LISTEN_FDS); they come first. */
  listenFds?: number;
  /** Keep the caller's session keyring instead of making a new one. */
  noNewKeyring: boolean;
  /** Foreground `run`: the backend reports the exit status through `waitExit`. */
  foreground: boolean;
  /** Records the container's cgroup paths before any process is in them (so a crash leaks none). */
  recordCgroups(paths: Record<string, string>): void;
  /** Builds the OCI state JSON handed to hooks, for the given status and pid. */
  hookState(status: string, pid: number): string;
  log: Logger;
  /** Read `linux.cgroupsPath` in systemd's slice:prefix:name form (--systemd-cgroup). */
  systemdCgroup: boolean;
  /** Controller -> cgroup directory of the container, once the backend made them. */
  cgroupPaths?: Record<string, string>;
  /** `none` leaves a new network namespace without even loopback up (embedded default only). */
  network?: 'none' | 'loopback' | 'host';
  /** Backend-specific preparation of the rootfs (the embedded default uses it). */
  embedded?: EmbeddedRoot;
  /** What the user chose for the sentry (flags of create/run); other backends ignore it. */
  sentry?: SentryChoice;
  /** Set by the sentry backend for the container backend's plan: its filter and socket. */
  sentryJail?: SentryJail;
  /** Fds for the container process's stdin, stdout and stderr (default: the runtime's own). */
  stdio?: readonly [number, number, number];
  /** The runtime's fds that become the container process's 3, 4, ... (as many as preserveFds; default: its own 3, 4, ...). */
  passFds?: readonly number[];
  /** What the user chose for the microvm backend (flags of create/run). */
  microvm?: MicrovmChoice;
  /**
   * Restore the container from the checkpoint image in this directory: it runs once created
   * (`moat restore`), or with `paused` waits, restored, for `start` (a container made from a
   * snapshot by `create --from-snapshot`). With `share` the image is a snapshot Moat keeps
   * unchanged, whose memory pages the container may map copy-on-write instead of copying.
   */
  restore?: { imagePath: string; paused?: boolean; share?: boolean };
}

/** What `moat checkpoint` asks of a backend. */
export interface CheckpointRequest {
  /** Directory the image is written into (made if missing). */
  imagePath: string;
  /** Keep the container running afterwards (else it ends, as runc's checkpoint does). */
  leaveRunning: boolean;
}

/** The user's microvm settings. */
export interface MicrovmChoice {
  /** `qemu` or `firecracker` (default: the best available). */
  vmm?: string;
  /** `kvm` or `tcg` (default: KVM when it works here). */
  accel?: string;
}

/** The user's sentry settings: level, network policy, egress rules. */
export interface SentryChoice {
  /** `strict` or `balanced` (default). */
  level?: string;
  /** The level when neither `level` nor the spec's annotation gives one (the global --sentry-level). */
  defaultLevel?: string;
  /** `none` or `loopback`. */
  network?: string;
  /** --allow-egress rules. */
  egress: string[];
}

/** How the container backend jails a sentry workload. */
export interface SentryJail {
  /** The sentry's seccomp filter (struct sock_filter[]), loaded right before execve. */
  filter: Buffer;
  /** Unix socket of the sentry that receives the notify fd. */
  socket: string;
  /** Bundle rootfs only: the overlay (upper and work dirs, merged mount point) under the state dir. */
  overlay?: { upper: string; work: string; merged: string };
  /** A restore: the init waits, jailed, for the sentry checkpointer instead of loading the filter and exec'ing. */
  restoreStop?: boolean;
  /** With restoreStop: the process tree the init recreates (pids in the container) and the number of pipes it makes. */
  restoreTree?: { processes: readonly RestoreNode[]; pipes: number; sockets: readonly RestoreSocket[] };
  /** With restoreStop: a snapshot image the init opens (read-only) so its pages can be mapped copy-on-write. */
  restoreImage?: string;
}

/** A unix socket object of a restored tree: a connected pair of SOCK_* `type`, or a listener at a path in the container. */
export interface RestoreSocket {
  type: number;
  listen?: { path: string; backlog: number; uid: number; gid: number; mode: number };
}

/** A process of a restored tree: its pid, parent, process group and session in the container; a zombie's wait status. */
export interface RestoreNode {
  pid: number;
  ppid: number;
  pgid: number;
  sid: number;
  zombie?: number;
}

/** How the embedded default builds its root: the host root read-only under a private overlay. */
export interface EmbeddedRoot {
  /** Host directory whose tree becomes the read-only lower layer ("/"). */
  lower: string;
}

/** A container that create left blocked before its program. */
export interface Created {
  pid: number;
  pidStartTime: string;
  /** Resolves with the exit status (128+signal when killed), foreground mode only. */
  waitExit?: Promise<number>;
  /** Controller -> cgroup directory of the container, recorded in its state. */
  cgroupPaths?: Record<string, string>;
  /** Backend data kept in the container record (ContainerRecord.backendState). */
  backendState?: Record<string, string | number>;
}

/** A new process to run in a running container (`moat exec`). */
export interface ExecRequest {
  process: ProcessSpec;
  consoleSocket?: string;
  preserveFds: number;
  /** Foreground: the backend reports the exit status through `waitExit`. */
  foreground: boolean;
  /** Set by the sentry backend: the exec'd process runs under the sentry too. */
  sentryJail?: SentryJail;
  /** Fds for the process's stdin, stdout and stderr (default: the runtime's own). */
  stdio?: readonly [number, number, number];
}

/** One isolation backend. */
export interface Backend {
  readonly name: Isolation;
  /** Sets everything up and leaves the container process blocked before the user program. */
  create(req: CreateRequest): Promise<Created>;
  /** Releases the blocked process so it runs the user program. */
  start(rec: ContainerRecord, dir: string): Promise<void>;
  /** Runs another process inside the running container, with its own process settings. */
  exec(rec: ContainerRecord, req: ExecRequest): Promise<Created>;
  /** Sends a signal to the container init (or, with `all`, every process of the container). */
  kill(rec: ContainerRecord, signal: number, all: boolean): Promise<void>;
  /** Freezes every process of the container. */
  pause(rec: ContainerRecord): Promise<void>;
  /** Thaws a paused container. */
  resume(rec: ContainerRecord): Promise<void>;
  /** Changes the resource limits of a container. */
  update(rec: ContainerRecord, resources: Resources): Promise<void>;
  /** Resource usage, shaped like runc's `events --stats` data. */
  stats(rec: ContainerRecord): Promise<CgroupStats>;
  /** How many processes the OOM killer has killed in the container so far. */
  oomKillCount(rec: ContainerRecord): Promise<number>;
  /** Host pids of every process of the container. */
  pids(rec: ContainerRecord): Promise<number[]>;
  /** Frees what the backend holds for a stopped container (the state dir is removed by the caller). */
  destroy(rec: ContainerRecord, dir: string): Promise<void>;
  /** Writes a checkpoint image of the running container; absent where the backend cannot (yet). */
  checkpoint?(rec: ContainerRecord, dir: string, req: CheckpointRequest): Promise<void>;
}
