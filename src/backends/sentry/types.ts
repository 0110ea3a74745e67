/**
 * Contracts shared by the sentry's core and its syscall families: a notification, the
 * calling task (with safe access to its memory), the sandbox a handler serves, and the reply a
 * handler gives. Handlers are synchronous functions; they never throw for a workload error
 * (they answer with an errno), only for a bug or a host failure.
 */
import { E } from '../../sys/kernel.js';
import type { FifoWaiters } from './fifos.js';
import type { HandoverPinning } from './pin.js';
import type { Identities } from './ident.js';

/** One seccomp user notification (struct seccomp_notif), decoded. */
export interface Notif {
  /** Cookie of the notification; every answer names it. */
  id: bigint;
  /** Host thread id of the caller (the notification's `pid`). */
  tid: number;
  /** System call number (x86_64). */
  nr: number;
  /** AUDIT_ARCH_* of the call. */
  arch: number;
  /** The six raw argument registers. */
  readonly args: readonly [bigint, bigint, bigint, bigint, bigint, bigint];
  /**
   * The same registers as 32-bit halves (low, high, low, high, ...) and then the id's two
   * halves, when decoded from a notification: NotifTask reads int and address arguments and
   * checks the id from them without BigInts.
   */
  readonly words?: Uint32Array;
}

/** What a handler answers. */
export type Reply =
  /** The syscall returns `val` (a non-negative result). */
  | { kind: 'ok'; val: number | bigint }
  /** The syscall fails with `errno` (positive). */
  | { kind: 'err'; errno: number }
  /**
   * The kernel runs the syscall as the workload asked. Only for calls whose checked arguments
   * are values, or whose effect the jail bounds anyway (see docs/syscalls.md).
   */
  | { kind: 'continue' }
  /**
   * The sentry opened `fd` itself: it is installed in the workload (close-on-exec if asked)
   * and its number is the syscall's result. The sentry closes its own copy afterwards.
   */
  | { kind: 'fd'; fd: number; cloexec: boolean }
  /** The handler passed the notification to a worker that answers it later. */
  | { kind: 'deferred' }
  /**
   * The call would block (e.g. opening a FIFO with no peer yet): the core hands it to a worker
   * thread, which runs the handler again with `onWorker` set and may block there, then closes
   * `hold` (an fd the serving thread keeps open until then, or -1).
   */
  | { kind: 'offload'; hold: number }
  /**
   * The handler has acted; the answer waits until `fd` polls readable or `timeoutMs` passed,
   * and is then `then()`. The serving thread serves other calls meanwhile and closes `fd`.
   */
  | { kind: 'await'; fd: number; timeoutMs: number; then: () => Reply };

/** Reply: success with a value. */
export const ok = (val: number | bigint = 0): Reply => ({ kind: 'ok', val });
/** Reply: failure with a positive errno. */
export const fail = (errno: number): Reply => ({ kind: 'err', errno });
/** Reply: let the kernel run the call. */
export const CONTINUE: Reply = { kind: 'continue' };
/** Reply: run this call again on a worker thread, where it may block (closing `hold` afterwards). */
export const offload = (hold = -1): Reply => ({ kind: 'offload', hold });
/** Reply: install a sentry-opened fd in the workload. */
export const giveFd = (fd: number, cloexec: boolean): Reply => ({ kind: 'fd', fd, cloexec });
/** Reply from a kernel-style result: a negative number is -errno, otherwise the value. */
export const fromResult = (rc: number): Reply => (rc < 0 ? fail(-rc) : ok(rc));

/** Credentials of a workload thread (host ids), as /proc/TID/status shows them. */
export interface Creds {
  uid: number;
  gid: number;
  euid: number;
  egid: number;
  fsuid: number;
  fsgid: number;
  groups: number[];
  /** The effective capability set (CapEff); absent: none. */
  caps?: bigint;
}

/** The calling thread of one notification, with checked access to its memory. */
export interface Task {
  /** Host thread id. */
  readonly tid: number;
  /** Host thread-group (process) id. */
  readonly tgid: number;
  /** The notification being served. */
  readonly notif: Notif;
  /** Argument `i` as a signed 32-bit int (fds, flags, modes). */
  int(i: number): number;
  /** Argument `i` as an unsigned number; addresses and sizes above 2^53 come back as -1. */
  num(i: number): number;
  /** Reads `len` bytes at `addr` in the task's memory; null if any of it is unmapped (EFAULT). */
  read(addr: number, len: number): Buffer | null;
  /**
   * Reads a NUL-terminated string (a path) at `addr`, at most `max` bytes without the NUL.
   * Returns the bytes, or -EFAULT / -ENAMETOOLONG. The read is confirmed with ID_VALID (the
   * task was alive, so the bytes are its own) unless `check` is false: only for a handler that
   * acts on them without side effects and answers through write() or the reply, both of which
   * confirm the notification again (a stale one is never answered).
   */
  readString(addr: number, max?: number, check?: boolean): Buffer | number;
  /** Writes `data` at `addr` in the task's memory; false if it is not all mapped (EFAULT). */
  write(addr: number, data: Buffer): boolean;
  /** Whether the notification is still pending (the task did not die or get interrupted). */
  valid(): boolean;
  /**
   * Whether a signal is pending that would interrupt the call if the kernel ran it: one sent to
   * the thread, or to its process when it has one thread, and not blocked. The task waits for
   * the answer killably (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV), so a handler that blocks
   * answers -ERESTARTSYS itself when this turns true.
   */
  signalPending(): boolean;
  /**
   * A sentry-owned duplicate of the task's fd `fd` (pidfd_getfd), or -errno (EBADF if the task
   * has no such fd). The caller closes it.
   */
  getFd(fd: number): number;
  /** The task's working directory as a path inside the container, or null if it is not in it. */
  cwd(): Buffer | null;
  /** The path (inside the container) of the task's open fd `fd`, or null if it has none. */
  fdPath(fd: number): Buffer | null;
  /** The task's credentials (host ids). */
  creds(): Creds;
  /** The task's umask (read at every call: a umask change takes effect at once). */
  umask(): number;
  /** True when the handler runs on a worker thread and may block. */
  readonly onWorker: boolean;
  /**
   * On a worker (or when no worker was free): the fd the serving thread kept open for this call
   * (the `hold` of Reply 'offload'), now owned by the caller of the handler; absent or -1 otherwise.
   */
  readonly held?: number;
}

/**
 * Why a handler that waits on behalf of its caller must stop now: -EINTR once the caller is
 * gone (killed), -ERESTARTSYS once it has a signal pending (the kernel then restarts the call or
 * fails it with EINTR, as the handler's SA_RESTART says, as for a wait of its own); 0 while it
 * still waits.
 */
export function interruption(t: Task): number {
  if (!t.valid()) return -E.EINTR;
  return t.signalPending() ? -E.ERESTARTSYS : 0;
}

/** The network policy of a sandbox. */
export type NetworkPolicy =
  | { mode: 'none' }
  | { mode: 'loopback' }
  /** The container's own network namespace as its engine equipped it (a Docker or CNI network): its routes decide. */
  | { mode: 'pod' }
  | { mode: 'egress'; rules: EgressRule[] };

/** One --allow-egress rule: a CIDR and an optional port (0 = any port). */
export interface EgressRule {
  /** The rule as written, for messages. */
  text: string;
  family: 4 | 6;
  /** Network address bytes (4 or 16). */
  addr: Buffer;
  prefix: number;
  /** 0 means any port. */
  port: number;
}

/** Resource limits the sentry reports in its synthesized files (meminfo, cpuinfo, sysinfo). */
export interface SandboxLimits {
  /** Memory limit in bytes, or undefined for none (host total is then reported). */
  memoryBytes?: number;
  /** CPUs available (quota/period rounded up, or the cpuset size). */
  cpus: number;
  /** The CPU bandwidth limit as configured (cpu.max), if there is one. */
  cpuQuota?: { quota: number; period: number };
  /** Maximum processes, if limited. */
  pids?: number;
}

/**
 * The sentry isolation levels (docs/syscalls.md says what each serves). `network` is internal:
 * the microVM's VMM runs under it to have its sockets brokered by the egress rules.
 */
export type SentryLevel = 'strict' | 'balanced' | 'network';

/** Everything a handler may need about the sandbox it serves. */
export interface Sandbox {
  /** Container id (for messages and logs). */
  readonly id: string;
  /** O_PATH fd of the container root (the overlay), owned by the sentry. */
  readonly rootFd: number;
  /** Host pid of the container init. */
  readonly initPid: number;
  readonly level: SentryLevel;
  readonly network: NetworkPolicy;
  readonly limits: SandboxLimits;
  /** The container's hostname (for uname and /proc/sys/kernel/hostname). */
  readonly hostname: string;
  /** The spec's linux.sysctl: set in the sandbox's network and IPC namespaces, shown under /proc/sys. */
  readonly sysctl?: Readonly<Record<string, string>>;
  /** Host path under which the synthesized /proc and /sys listings live (the container root, seen through /proc/INIT/root). */
  readonly scratchDir: string;
  /** Sentry start time (ms since the epoch), the sandbox's boot time. */
  readonly bootTime: number;
  /** Host pids of every process of the sandbox, init first. */
  pids(): number[];
  /** Logs one line to the sentry's log (refused calls, policy decisions). */
  log(msg: string): void;
  /** The FIFO read ends the sentry holds for readers waiting in open (absent where no worker pool serves). */
  readonly fifoWaiters?: FifoWaiters;
  /** This thread's switching to the caller's file-system identity (absent in tests that serve without one). */
  readonly ids?: Identities;
  /** Keeping fd hand-overs on the answering CPU (absent in tests that serve without one). */
  readonly pinning?: HandoverPinning;
}

/** A served syscall's implementation. */
export type Handler = (t: Task, sb: Sandbox) => Reply;

/** A family module: handlers keyed by syscall name (as in docs/syscalls.json). */
export type HandlerTable = Readonly<Record<string, Handler>>;
