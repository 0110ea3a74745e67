/**
 * The sentry's syscall table: every x86_64 system call, with what each isolation level does with
 * it. A call is *fast* (SECCOMP_RET_ALLOW: the host kernel runs it directly, because its effect is
 * local to the caller's memory or to fds it already holds), *served* (SECCOMP_RET_USER_NOTIF: the
 * sentry handles it with its family's handler) or *refused* (the sentry logs it and answers a
 * fixed errno; it never lets one run). A fast call may carry argument filters: it takes the fast path only when one of them
 * matches, and is served otherwise. `filter.ts` compiles this table into the seccomp program and
 * `docs.ts` into docs/syscalls.md; nothing else decides a call's class.
 */
import type { SentryLevel } from './types.js';

/** How a syscall is handled at one level: run by the kernel, served by the sentry, or refused. */
export type SyscallClass = 'fast' | 'served' | 'refused';

/** The sentry module that serves a call (handlers are keyed by family, then syscall name). */
export type Family = 'file' | 'proc' | 'socket' | 'process' | 'info' | 'misc';

/**
 * One test of a 64-bit argument: `eq` compares with `values[0]`, `masked_eq` compares
 * `arg & mask` with `values[0]`, `in` matches any of `values`.
 */
export interface ArgFilter {
  arg: number;
  op: 'eq' | 'masked_eq' | 'in';
  mask?: bigint;
  values: bigint[];
}

/** One system call of the x86_64 ABI and its class at each sentry level. */
export interface SyscallEntry {
  name: string;
  nr: number;
  balanced: SyscallClass;
  strict: SyscallClass;
  /** The class at the internal `network` level (derived: see NETWORK_SERVED). */
  network: SyscallClass;
  /** Argument filters of a call fast at the `network` level only under them. */
  networkFastWhen?: ArgFilter[][];
  /** Who serves the call when it is served (also when a fast call's filters do not match). */
  family?: Family;
  /** Fast only when all filters of one alternative match (OR of ANDs); otherwise served. */
  fastWhen?: ArgFilter[][];
  /** errno of a refused call (ENOSYS when absent). */
  errno?: number;
  /** Why the call has its class, in one line. */
  note: string;
}

/** `EPERM`: the errno of refused privileged calls. */
export const EPERM = 1;
/** `ENOSYS`: the errno of refused obsolete or unsupported calls (libc then falls back). */
export const ENOSYS = 38;

/** Optional parts of a row. */
interface Extra {
  strict?: SyscallClass;
  family?: Family;
  fastWhen?: ArgFilter[][];
  errno?: number;
}

/** A row for a call that is fast at the balanced level (and at strict unless `x.strict` says). */
function fast(nr: number, name: string, note: string, x: Extra = {}): SyscallEntry {
  return { name, nr, balanced: 'fast', strict: x.strict ?? 'fast', network: 'fast', ...pick(x), note };
}

/** A row for a call served by `family` (at strict too, unless `x.strict` says). */
function served(nr: number, name: string, family: Family, note: string, x: Extra = {}): SyscallEntry {
  return { name, nr, balanced: 'served', strict: x.strict ?? 'served', network: 'fast', family, ...pick(x), note };
}

/** A row for a call refused at both levels with `errno`. */
function refused(nr: number, name: string, errno: number, note: string): SyscallEntry {
  return { name, nr, balanced: 'refused', strict: 'refused', network: 'fast', errno, note };
}

/** The optional fields of `x` that are set (so rows carry no `undefined` keys). */
function pick(x: Extra): Pick<SyscallEntry, 'family' | 'fastWhen' | 'errno'> {
  const out: Pick<SyscallEntry, 'family' | 'fastWhen' | 'errno'> = {};
  if (x.family !== undefined) out.family = x.family;
  if (x.fastWhen !== undefined) out.fastWhen = x.fastWhen;
  if (x.errno !== undefined) out.errno = x.errno;
  return out;
}

/** Filter: argument `arg` is one of `values`. */
const oneOf = (arg: number, ...values: number[]): ArgFilter => ({ arg, op: 'in', values: values.map(BigInt) });
/** Filter: argument `arg` equals `value`. */
const eq = (arg: number, value: number): ArgFilter => ({ arg, op: 'eq', values: [BigInt(value)] });
/** Filter: argument `arg` masked with `mask` equals `value`. */
const masked = (arg: number, mask: number, value: number): ArgFilter => ({
  arg,
  op: 'masked_eq',
  mask: BigInt(mask),
  values: [BigInt(value)],
});

/** CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | UTS | IPC | USER | PID | NET. */
const CLONE_NEW_ANY = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

/** CLONE_PTRACE | CLONE_UNTRACED: tracing flags the sentry refuses. */
const CLONE_TRACE = 0x2000 | 0x00800000;

/**
 * clone: a new thread or process that creates no namespace and asks for no tracing. The flags
 * are a register value, so the filter checks them as well as the sentry would; served, a fork
 * could also fail with EINTR when a signal came before the sentry took it (fork never does).
 */
const CLONE_FAST = [[masked(0, CLONE_NEW_ANY | CLONE_TRACE, 0)]];

/** fcntl: descriptor flags, status flags, record and OFD locks, dup, pipe size query, seals. */
const FCNTL_FAST = [[oneOf(1, 0, 1, 2, 3, 4, 5, 6, 7, 1030, 36, 37, 38, 1032, 1033, 1034)]];

/** ioctl: termios, window size, process group, FIONREAD/FIONBIO/FIOCLEX/FIONCLEX, pty number/lock/peer. */
const IOCTL_FAST = [
  [
    oneOf(
      1,
      0x5401, // TCGETS
      0x5402, // TCSETS
      0x5403, // TCSETSW
      0x5404, // TCSETSF
      0x540f, // TIOCGPGRP
      0x5410, // TIOCSPGRP
      0x5413, // TIOCGWINSZ
      0x5414, // TIOCSWINSZ
      0x541b, // FIONREAD
      0x5421, // FIONBIO
      0x5451, // FIOCLEX
      0x5450, // FIONCLEX
      0x80045430, // TIOCGPTN
      0x40045431, // TIOCSPTLCK
      0x5441, // TIOCGPTPEER
    ),
  ],
];

/** prctl: thread name, dumpable query, parent-death signal, VMA names, and read-only queries. */
const PRCTL_FAST = [[oneOf(0, 15, 16, 3, 1, 2, 0x53564d41, 39, 23, 21)]];

/** prlimit64(0, resource, NULL, old): reading the caller's own limits. */
const PRLIMIT_FAST = [[eq(0, 0), eq(2, 0)]];

/** get_robust_list(0, ...): the caller's own list. */
const ROBUST_FAST = [[eq(0, 0)]];

/** Served at balanced, refused (ENOSYS, so programs fall back) at strict. */
const STRICT_ENOSYS: Extra = { strict: 'refused', errno: ENOSYS };

const ROWS: SyscallEntry[] = [
  fast(0, 'read', 'fd-local: reads from an fd the workload already holds'),
  fast(1, 'write', 'fd-local: writes to an fd the workload already holds'),
  served(2, 'open', 'file', 'resolves the path inside the container root and installs the opened fd'),
  fast(3, 'close', 'fd-local: closes one of the caller\'s fds'),
  served(4, 'stat', 'file', 'resolves the path inside the container root and reports its stat'),
  served(5, 'fstat', 'file', 'fd-local: the sentry lets the kernel report the stat of an fd the workload holds'),
  served(6, 'lstat', 'file', 'resolves the path (last component not followed) inside the container root'),
  fast(7, 'poll', 'fd-local: waits on fds the workload holds'),
  fast(8, 'lseek', 'fd-local: moves the offset of an open file'),
  fast(9, 'mmap', 'memory-local: maps memory or an fd the workload holds (PROT_EXEC included)'),
  fast(10, 'mprotect', 'memory-local: changes protection of the caller\'s mappings'),
  fast(11, 'munmap', 'memory-local: unmaps the caller\'s memory'),
  fast(12, 'brk', 'memory-local: moves the caller\'s heap end'),
  fast(13, 'rt_sigaction', 'process-local: sets the caller\'s signal handlers'),
  fast(14, 'rt_sigprocmask', 'thread-local: changes the caller\'s signal mask'),
  fast(15, 'rt_sigreturn', 'thread-local: returns from the caller\'s signal handler'),
  fast(16, 'ioctl', 'fd-local tty/pty/fd-flag requests run directly; any other request is checked by the sentry', {
    strict: 'served',
    family: 'file',
    fastWhen: IOCTL_FAST,
  }),
  fast(17, 'pread64', 'fd-local: positioned read from an fd the workload holds'),
  fast(18, 'pwrite64', 'fd-local: positioned write to an fd the workload holds'),
  fast(19, 'readv', 'fd-local: vectored read from an fd the workload holds'),
  fast(20, 'writev', 'fd-local: vectored write to an fd the workload holds'),
  served(21, 'access', 'file', 'resolves the path inside the container root and checks access'),
  fast(22, 'pipe', 'fd-local: creates an anonymous pipe'),
  fast(23, 'select', 'fd-local: waits on fds the workload holds'),
  fast(24, 'sched_yield', 'thread-local: yields the CPU'),
  fast(25, 'mremap', 'memory-local: resizes or moves the caller\'s mappings'),
  fast(26, 'msync', 'memory-local: flushes the caller\'s shared file mappings'),
  served(27, 'mincore', 'misc', 'memory-local, served to keep the fast set small; the sentry lets it run'),
  fast(28, 'madvise', 'memory-local: advice on the caller\'s mappings'),
  served(29, 'shmget', 'misc', 'SysV shared memory in the sandbox\'s own IPC namespace; the sentry lets it continue'),
  served(30, 'shmat', 'misc', 'SysV shared memory attach in the sandbox\'s own IPC namespace; the sentry lets it continue'),
  served(31, 'shmctl', 'misc', 'SysV shared memory control: the sentry allows stat/remove of sandbox segments'),
  fast(32, 'dup', 'fd-local: duplicates one of the caller\'s fds'),
  fast(33, 'dup2', 'fd-local: duplicates one of the caller\'s fds'),
  served(34, 'pause', 'misc', 'waits for a signal; the sentry lets it run'),
  fast(35, 'nanosleep', 'thread-local: sleeps'),
  served(36, 'getitimer', 'misc', 'process interval timers: the sentry lets it run'),
  served(37, 'alarm', 'misc', 'process alarm timer: the sentry lets it run'),
  served(38, 'setitimer', 'misc', 'process interval timers: the sentry lets it run'),
  fast(39, 'getpid', 'process-local: the caller\'s pid'),
  fast(40, 'sendfile', 'fd-local: copies between fds the workload holds (busybox cat, cp and tar use it for every file)', { strict: 'served', family: 'misc' }),
  served(41, 'socket', 'socket', 'the sentry checks the address family and type against the network policy'),
  served(42, 'connect', 'socket', 'the sentry checks the destination against the network policy'),
  served(43, 'accept', 'socket', 'the sentry accepts on a socket the policy admitted'),
  served(44, 'sendto', 'socket', 'the sentry checks an explicit destination against the network policy'),
  served(45, 'recvfrom', 'socket', 'the sentry receives on a socket the policy admitted'),
  served(46, 'sendmsg', 'socket', 'the sentry checks the destination and SCM_RIGHTS/credentials in the message'),
  served(47, 'recvmsg', 'socket', 'the sentry receives, checking passed fds and credentials'),
  served(48, 'shutdown', 'socket', 'shuts down a socket the policy admitted'),
  served(49, 'bind', 'socket', 'the sentry checks the address (unix socket paths resolved in the container root)'),
  served(50, 'listen', 'socket', 'the sentry checks that listening is allowed by the network policy'),
  served(51, 'getsockname', 'socket', 'reports the local address of a sandbox socket'),
  served(52, 'getpeername', 'socket', 'reports the peer address of a sandbox socket'),
  served(53, 'socketpair', 'socket', 'creates a connected pair (unix domain only)'),
  served(54, 'setsockopt', 'socket', 'the sentry refuses options that bypass the policy (e.g. SO_BINDTODEVICE, filters)'),
  served(55, 'getsockopt', 'socket', 'reads socket options of a sandbox socket'),
  fast(56, 'clone', 'a new thread or process without namespaces or tracing runs directly; namespace and tracing flags are served (refused)', {
    family: 'process',
    fastWhen: CLONE_FAST,
  }),
  served(57, 'fork', 'process', 'the new process stays in the sandbox\'s namespaces and cgroup (pids limit); the sentry lets it run'),
  served(58, 'vfork', 'process', 'the new process stays in the sandbox\'s namespaces and cgroup (pids limit); the sentry lets it run'),
  served(59, 'execve', 'file', 'resolves the program inside the container root and checks it before running'),
  fast(60, 'exit', 'thread-local: ends the calling thread'),
  served(61, 'wait4', 'process', 'waits for the caller\'s own children (bounded by the pid namespace); the sentry lets it continue'),
  served(62, 'kill', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target; a signal that ends a child of the caller the sentry sends itself and answers once the child is gone (its SIGCHLD then cannot cut the caller\'s next call short), any other kill continues'),
  served(63, 'uname', 'info', 'reports the sandbox hostname and a fixed kernel identity'),
  served(64, 'semget', 'misc', 'SysV semaphores in the sandbox\'s own IPC namespace; the sentry lets it continue'),
  served(65, 'semop', 'misc', 'SysV semaphore operations on sandbox sets'),
  served(66, 'semctl', 'misc', 'SysV semaphore control on sandbox sets'),
  served(67, 'shmdt', 'misc', 'SysV shared memory detach'),
  served(68, 'msgget', 'misc', 'SysV message queues in the sandbox\'s own IPC namespace; the sentry lets it continue'),
  served(69, 'msgsnd', 'misc', 'SysV message send on sandbox queues'),
  served(70, 'msgrcv', 'misc', 'SysV message receive on sandbox queues'),
  served(71, 'msgctl', 'misc', 'SysV message queue control on sandbox queues'),
  fast(72, 'fcntl', 'fd-local commands (flags, locks, dup, seals) run directly; others (F_SETOWN, leases, notify) are served', {
    strict: 'served',
    family: 'file',
    fastWhen: FCNTL_FAST,
  }),
  served(73, 'flock', 'misc', 'fd-local advisory lock, served to keep the fast set small; the sentry lets it run'),
  fast(74, 'fsync', 'fd-local: flushes one open file'),
  fast(75, 'fdatasync', 'fd-local: flushes one open file\'s data'),
  served(76, 'truncate', 'file', 'resolves the path inside the container root and truncates it'),
  fast(77, 'ftruncate', 'fd-local: truncates an open file'),
  served(78, 'getdents', 'file', 'old directory listing: the sentry lists the directory (synthesized ones too)'),
  served(79, 'getcwd', 'file', 'the kernel prints the working directory relative to the task\'s root (the container root)'),
  served(80, 'chdir', 'file', 'resolves the path inside the container root and changes directory'),
  served(81, 'fchdir', 'file', 'fd-local: every directory fd the workload holds is inside its root (the sentry hands out no other), so it continues'),
  served(82, 'rename', 'file', 'resolves both paths inside the container root'),
  served(83, 'mkdir', 'file', 'resolves the path inside the container root and creates the directory'),
  served(84, 'rmdir', 'file', 'resolves the path inside the container root and removes the directory'),
  served(85, 'creat', 'file', 'resolves the path inside the container root and creates the file'),
  served(86, 'link', 'file', 'resolves both paths inside the container root'),
  served(87, 'unlink', 'file', 'resolves the path inside the container root and removes it'),
  served(88, 'symlink', 'file', 'resolves the link path inside the container root (the target is stored as is)'),
  served(89, 'readlink', 'file', 'resolves the path inside the container root (synthesized /proc links too)'),
  served(90, 'chmod', 'file', 'resolves the path inside the container root and changes its mode'),
  served(91, 'fchmod', 'file', 'fd-local: the kernel changes the mode of an open file, with the workload\'s credentials'),
  served(92, 'chown', 'file', 'resolves the path inside the container root and changes its owner'),
  served(93, 'fchown', 'file', 'fd-local: the kernel changes the owner of an open file, with the workload\'s credentials'),
  served(94, 'lchown', 'file', 'resolves the path (last component not followed) and changes its owner'),
  served(95, 'umask', 'process', 'process-local: sets the caller\'s file creation mask; served (a few calls per process) to keep the fast set small, the sentry lets it run'),
  fast(96, 'gettimeofday', 'reads the clock (normally the vDSO)'),
  served(97, 'getrlimit', 'process', 'reports the caller\'s limits; served to keep the fast set small'),
  served(98, 'getrusage', 'process', 'reports resource usage of the caller or its children'),
  served(99, 'sysinfo', 'info', 'reports the sandbox memory limit, uptime and process count, not the host\'s'),
  served(100, 'times', 'info', 'the caller\'s CPU times as the kernel keeps them; the result counts clock ticks from the sandbox\'s boot, not the host\'s'),
  refused(101, 'ptrace', EPERM, 'would reach the host kernel\'s tracing of other processes, bypassing the sentry'),
  fast(102, 'getuid', 'process-local: the caller\'s uid'),
  refused(103, 'syslog', EPERM, 'would read or control the host kernel log'),
  fast(104, 'getgid', 'process-local: the caller\'s gid'),
  served(105, 'setuid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  served(106, 'setgid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  fast(107, 'geteuid', 'process-local: the caller\'s effective uid'),
  fast(108, 'getegid', 'process-local: the caller\'s effective gid'),
  served(109, 'setpgid', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  fast(110, 'getppid', 'process-local: the caller\'s parent pid'),
  fast(111, 'getpgrp', 'process-local: the caller\'s process group'),
  served(112, 'setsid', 'process', 'starts a new session for the caller; the sentry lets it continue'),
  served(113, 'setreuid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  served(114, 'setregid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  fast(115, 'getgroups', 'process-local: the caller\'s supplementary groups'),
  served(116, 'setgroups', 'process', 'the group list is read by the kernel, which needs CAP_SETGID in the sandbox\'s user namespace; the sentry lets it continue'),
  served(117, 'setresuid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  fast(118, 'getresuid', 'process-local: the caller\'s uids'),
  served(119, 'setresgid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  fast(120, 'getresgid', 'process-local: the caller\'s gids'),
  served(121, 'getpgid', 'misc', 'process group of a pid (bounded by the pid namespace), served to keep the fast set small'),
  served(122, 'setfsuid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  served(123, 'setfsgid', 'process', 'value arguments only: the kernel enforces the caller\'s capabilities in its user namespace; the sentry lets it continue'),
  served(124, 'getsid', 'misc', 'session of a pid (bounded by the pid namespace), served to keep the fast set small'),
  served(125, 'capget', 'process', 'reports the caller\'s own capabilities; the sentry lets it continue'),
  served(126, 'capset', 'process', 'the kernel never lets a thread gain capabilities beyond its bounding set (no_new_privs is set); the sentry lets it continue'),
  served(127, 'rt_sigpending', 'misc', 'thread-local, served to keep the fast set small; the sentry lets it run'),
  fast(128, 'rt_sigtimedwait', 'thread-local: waits for a signal'),
  served(129, 'rt_sigqueueinfo', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  fast(130, 'rt_sigsuspend', 'thread-local: waits for a signal with a temporary mask'),
  fast(131, 'sigaltstack', 'thread-local: sets the caller\'s signal stack'),
  served(132, 'utime', 'file', 'resolves the path inside the container root and sets its times'),
  served(133, 'mknod', 'file', 'resolves the path inside the container root; only FIFOs, sockets and regular files'),
  refused(134, 'uselib', ENOSYS, 'obsolete a.out library loader of the host kernel'),
  served(135, 'personality', 'misc', 'the sentry answers queries (0xffffffff) and allows PER_LINUX with ADDR_NO_RANDOMIZE; other execution domains get EPERM'),
  refused(136, 'ustat', ENOSYS, 'obsolete: would report host filesystem statistics by device number'),
  served(137, 'statfs', 'file', 'resolves the path inside the container root and reports its filesystem'),
  served(138, 'fstatfs', 'file', 'fd-local: the kernel reports the filesystem of an open file'),
  refused(139, 'sysfs', ENOSYS, 'obsolete: would list the host kernel\'s filesystem types'),
  served(140, 'getpriority', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(141, 'setpriority', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue (raising priority needs CAP_SYS_NICE)'),
  served(142, 'sched_setparam', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(143, 'sched_getparam', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(144, 'sched_setscheduler', 'process', 'the sentry refuses real-time policies (SCHED_FIFO, SCHED_RR, SCHED_DEADLINE) with EPERM; otherwise bounded by the pid namespace'),
  served(145, 'sched_getscheduler', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(146, 'sched_get_priority_max', 'process', 'priority range of a policy; the sentry lets it run'),
  served(147, 'sched_get_priority_min', 'process', 'priority range of a policy; the sentry lets it run'),
  served(148, 'sched_rr_get_interval', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(149, 'mlock', 'misc', 'locks memory; the sentry lets it run within RLIMIT_MEMLOCK'),
  served(150, 'munlock', 'misc', 'unlocks memory; the sentry lets it run'),
  served(151, 'mlockall', 'misc', 'locks all memory; the sentry lets it run within RLIMIT_MEMLOCK'),
  served(152, 'munlockall', 'misc', 'unlocks all memory; the sentry lets it run'),
  refused(153, 'vhangup', EPERM, 'would hang up the host terminal (CAP_SYS_TTY_CONFIG)'),
  refused(154, 'modify_ldt', ENOSYS, 'would install 16-bit/LDT segments in the host kernel (attack surface, unneeded on x86_64)'),
  refused(155, 'pivot_root', EPERM, 'would change the root mount of the host mount namespace'),
  refused(156, '_sysctl', ENOSYS, 'removed binary sysctl interface to host kernel parameters'),
  fast(157, 'prctl', 'thread name, dumpable and pdeathsig queries and VMA names run directly; other options are checked by the sentry', {
    strict: 'served',
    family: 'misc',
    fastWhen: PRCTL_FAST,
  }),
  served(158, 'arch_prctl', 'misc', 'thread-local FS/GS base and CET status, once or twice per program start: served to keep the fast set small, the sentry lets it run'),
  refused(159, 'adjtimex', EPERM, 'would read or tune the host clock (CAP_SYS_TIME)'),
  served(160, 'setrlimit', 'process', 'the kernel refuses raising hard limits without CAP_SYS_RESOURCE; the sentry lets it continue'),
  served(161, 'chroot', 'file', 'refused by the sentry with EPERM: a sandbox has no root to change'),
  served(162, 'sync', 'misc', 'the sentry syncs the container filesystem only, not every host filesystem'),
  refused(163, 'acct', EPERM, 'would switch host process accounting (CAP_SYS_PACCT)'),
  refused(164, 'settimeofday', EPERM, 'would set the host clock (CAP_SYS_TIME)'),
  refused(165, 'mount', EPERM, 'would mount filesystems through the host kernel (CAP_SYS_ADMIN)'),
  refused(166, 'umount2', EPERM, 'would unmount filesystems through the host kernel (CAP_SYS_ADMIN)'),
  refused(167, 'swapon', EPERM, 'would add host swap space (CAP_SYS_ADMIN)'),
  refused(168, 'swapoff', EPERM, 'would remove host swap space (CAP_SYS_ADMIN)'),
  refused(169, 'reboot', EPERM, 'would reboot or halt the host (CAP_SYS_BOOT)'),
  refused(170, 'sethostname', EPERM, 'would set the kernel hostname (the sandbox hostname is fixed by its config)'),
  refused(171, 'setdomainname', EPERM, 'would set the kernel NIS domain name'),
  refused(172, 'iopl', EPERM, 'would grant raw I/O port access on the host (CAP_SYS_RAWIO)'),
  refused(173, 'ioperm', EPERM, 'would grant raw I/O port access on the host (CAP_SYS_RAWIO)'),
  refused(174, 'create_module', ENOSYS, 'obsolete kernel module interface'),
  refused(175, 'init_module', EPERM, 'would load code into the host kernel (CAP_SYS_MODULE)'),
  refused(176, 'delete_module', EPERM, 'would unload host kernel modules (CAP_SYS_MODULE)'),
  refused(177, 'get_kernel_syms', ENOSYS, 'obsolete kernel module interface'),
  refused(178, 'query_module', ENOSYS, 'obsolete kernel module interface'),
  refused(179, 'quotactl', EPERM, 'would manage host disk quotas (CAP_SYS_ADMIN)'),
  refused(180, 'nfsservctl', ENOSYS, 'removed NFS server control interface'),
  refused(181, 'getpmsg', ENOSYS, 'unimplemented STREAMS call'),
  refused(182, 'putpmsg', ENOSYS, 'unimplemented STREAMS call'),
  refused(183, 'afs_syscall', ENOSYS, 'unimplemented AFS call'),
  refused(184, 'tuxcall', ENOSYS, 'unimplemented TUX web server call'),
  refused(185, 'security', ENOSYS, 'unimplemented LSM multiplexer'),
  fast(186, 'gettid', 'thread-local: the caller\'s thread id'),
  served(187, 'readahead', 'misc', 'fd-local page-cache hint, served to keep the fast set small; the sentry lets it run'),
  served(188, 'setxattr', 'file', 'resolves the path inside the container root; the kernel sets a user.* or ACL attribute on that object as the caller (others EPERM)'),
  served(189, 'lsetxattr', 'file', 'resolves the path (not following it); the kernel sets a user.* or ACL attribute on that object as the caller (others EPERM)'),
  served(190, 'fsetxattr', 'file', 'fd-local: the kernel sets an attribute on an open file, with the workload\'s credentials'),
  served(191, 'getxattr', 'file', 'resolves the path inside the container root; the kernel reads the attribute of that object as the caller'),
  served(192, 'lgetxattr', 'file', 'resolves the path (not following it); the kernel reads the attribute of that object as the caller'),
  served(193, 'fgetxattr', 'file', 'fd-local: the kernel reads an attribute of an open file'),
  served(194, 'listxattr', 'file', 'resolves the path inside the container root; the kernel lists the attributes of that object as the caller'),
  served(195, 'llistxattr', 'file', 'resolves the path (not following it); the kernel lists the attributes of that object as the caller'),
  served(196, 'flistxattr', 'file', 'fd-local: the kernel lists the attributes of an open file'),
  served(197, 'removexattr', 'file', 'resolves the path inside the container root; the kernel removes a user.* or ACL attribute of that object as the caller (others EPERM)'),
  served(198, 'lremovexattr', 'file', 'resolves the path (not following it); the kernel removes a user.* or ACL attribute of that object as the caller (others EPERM)'),
  served(199, 'fremovexattr', 'file', 'fd-local: the kernel removes an attribute of an open file, with the workload\'s credentials'),
  served(200, 'tkill', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  fast(201, 'time', 'reads the clock (normally the vDSO)'),
  fast(202, 'futex', 'memory-local: waits on or wakes the caller\'s futex words'),
  served(203, 'sched_setaffinity', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue (the cgroup cpuset bounds the CPUs), first ending fd hand-overs kept on one CPU for the sandbox (pin.ts)'),
  served(204, 'sched_getaffinity', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue (the cgroup cpuset bounds the CPUs it reports); of another thread, first ending fd hand-overs kept on one CPU for the sandbox (pin.ts)'),
  refused(205, 'set_thread_area', ENOSYS, '32-bit TLS descriptors of the host GDT; x86_64 uses arch_prctl'),
  served(206, 'io_setup', 'misc', 'Linux AIO context (libaio); the sentry bounds the number of events', STRICT_ENOSYS),
  served(207, 'io_destroy', 'misc', 'Linux AIO context teardown', STRICT_ENOSYS),
  served(208, 'io_getevents', 'misc', 'Linux AIO completion wait', STRICT_ENOSYS),
  served(209, 'io_submit', 'misc', 'Linux AIO submission on fds the workload holds', STRICT_ENOSYS),
  served(210, 'io_cancel', 'misc', 'Linux AIO cancellation', STRICT_ENOSYS),
  refused(211, 'get_thread_area', ENOSYS, '32-bit TLS descriptors of the host GDT; x86_64 uses arch_prctl'),
  refused(212, 'lookup_dcookie', ENOSYS, 'removed oprofile interface that returned host paths'),
  served(213, 'epoll_create', 'misc', 'old epoll constructor; the sentry lets it run'),
  refused(214, 'epoll_ctl_old', ENOSYS, 'unimplemented early epoll interface'),
  refused(215, 'epoll_wait_old', ENOSYS, 'unimplemented early epoll interface'),
  refused(216, 'remap_file_pages', ENOSYS, 'deprecated nonlinear mappings (the host kernel emulates them)'),
  fast(217, 'getdents64', 'fd-local: lists a directory the workload opened', { strict: 'served', family: 'file' }),
  fast(218, 'set_tid_address', 'thread-local: sets the caller\'s clear_child_tid pointer'),
  fast(219, 'restart_syscall', 'thread-local: resumes an interrupted sleep that was already allowed'),
  served(220, 'semtimedop', 'misc', 'SysV semaphore operations with a timeout on sandbox sets'),
  served(221, 'fadvise64', 'misc', 'fd-local page-cache hint, served to keep the fast set small; the sentry lets it run'),
  served(222, 'timer_create', 'misc', 'POSIX timer of the caller; signals stay within its thread group; the sentry lets it continue'),
  served(223, 'timer_settime', 'misc', 'arms a POSIX timer of the caller'),
  served(224, 'timer_gettime', 'misc', 'reads a POSIX timer of the caller'),
  served(225, 'timer_getoverrun', 'misc', 'reads the overrun count of a POSIX timer'),
  served(226, 'timer_delete', 'misc', 'deletes a POSIX timer of the caller'),
  refused(227, 'clock_settime', EPERM, 'would set the host clock (CAP_SYS_TIME)'),
  fast(228, 'clock_gettime', 'reads a clock (normally the vDSO)'),
  served(229, 'clock_getres', 'misc', 'clock resolution (normally the vDSO), served to keep the fast set small'),
  fast(230, 'clock_nanosleep', 'thread-local: sleeps on a clock'),
  fast(231, 'exit_group', 'process-local: ends the calling process'),
  fast(232, 'epoll_wait', 'fd-local: waits on an epoll fd the workload holds'),
  fast(233, 'epoll_ctl', 'fd-local: edits an epoll set with fds the workload holds'),
  served(234, 'tgkill', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(235, 'utimes', 'file', 'resolves the path inside the container root and sets its times'),
  refused(236, 'vserver', ENOSYS, 'unimplemented Linux-VServer call'),
  refused(237, 'mbind', ENOSYS, 'would bind memory to host NUMA nodes; unsupported (libnuma then assumes no NUMA)'),
  served(238, 'set_mempolicy', 'misc', 'memory policy of the caller (the cgroup cpuset bounds the nodes); the sentry lets it continue'),
  served(239, 'get_mempolicy', 'misc', 'reports the caller\'s NUMA policy'),
  served(240, 'mq_open', 'misc', 'POSIX message queue of the sandbox IPC namespace', STRICT_ENOSYS),
  served(241, 'mq_unlink', 'misc', 'removes a POSIX message queue of the sandbox', STRICT_ENOSYS),
  served(242, 'mq_timedsend', 'misc', 'sends on a POSIX message queue the workload holds', STRICT_ENOSYS),
  served(243, 'mq_timedreceive', 'misc', 'receives from a POSIX message queue the workload holds', STRICT_ENOSYS),
  served(244, 'mq_notify', 'misc', 'POSIX message queue notification in the sandbox\'s IPC namespace; the sentry lets it continue', STRICT_ENOSYS),
  served(245, 'mq_getsetattr', 'misc', 'reads or sets POSIX message queue attributes', STRICT_ENOSYS),
  refused(246, 'kexec_load', EPERM, 'would load a new kernel to replace the host\'s (CAP_SYS_BOOT)'),
  served(247, 'waitid', 'process', 'waits for the caller\'s own children (bounded by the pid namespace); the sentry lets it continue'),
  refused(248, 'add_key', ENOSYS, 'the host kernel keyring is not namespaced; unsupported'),
  refused(249, 'request_key', ENOSYS, 'the host kernel keyring is not namespaced; unsupported'),
  refused(250, 'keyctl', ENOSYS, 'the host kernel keyring is not namespaced; unsupported'),
  served(251, 'ioprio_set', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue (real-time classes need CAP_SYS_ADMIN)'),
  served(252, 'ioprio_get', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(253, 'inotify_init', 'misc', 'creates an inotify fd'),
  served(254, 'inotify_add_watch', 'file', 'resolves the path inside the container root and adds a watch'),
  served(255, 'inotify_rm_watch', 'misc', 'removes a watch of an inotify fd the workload holds'),
  refused(256, 'migrate_pages', EPERM, 'would move pages of other processes between host NUMA nodes'),
  served(257, 'openat', 'file', 'resolves the path inside the container root and installs the opened fd'),
  served(258, 'mkdirat', 'file', 'resolves the path inside the container root and creates the directory'),
  served(259, 'mknodat', 'file', 'resolves the path inside the container root; only FIFOs, sockets and regular files'),
  served(260, 'fchownat', 'file', 'resolves the path inside the container root and changes its owner'),
  served(261, 'futimesat', 'file', 'resolves the path inside the container root and sets its times'),
  served(262, 'newfstatat', 'file', 'resolves the path inside the container root and reports its stat'),
  served(263, 'unlinkat', 'file', 'resolves the path inside the container root and removes it'),
  served(264, 'renameat', 'file', 'resolves both paths inside the container root'),
  served(265, 'linkat', 'file', 'resolves both paths inside the container root'),
  served(266, 'symlinkat', 'file', 'resolves the link path inside the container root (the target is stored as is)'),
  served(267, 'readlinkat', 'file', 'resolves the path inside the container root (synthesized /proc links too)'),
  served(268, 'fchmodat', 'file', 'resolves the path inside the container root and changes its mode'),
  served(269, 'faccessat', 'file', 'resolves the path inside the container root and checks access'),
  fast(270, 'pselect6', 'fd-local: waits on fds the workload holds'),
  fast(271, 'ppoll', 'fd-local: waits on fds the workload holds'),
  refused(272, 'unshare', EPERM, 'would create host namespaces (new attack surface in the host kernel)'),
  fast(273, 'set_robust_list', 'thread-local: registers the caller\'s robust futex list'),
  fast(274, 'get_robust_list', 'the caller\'s own list (pid 0) runs directly; for another pid, which the sandbox\'s pid namespace bounds, the sentry lets it continue', {
    family: 'process',
    fastWhen: ROBUST_FAST,
  }),
  served(275, 'splice', 'misc', 'moves data between fds the workload holds; the sentry lets it continue'),
  served(276, 'tee', 'misc', 'duplicates pipe data between fds the workload holds'),
  served(277, 'sync_file_range', 'misc', 'fd-local flush of a file range; the sentry lets it run'),
  served(278, 'vmsplice', 'misc', 'maps user memory into a pipe; the sentry lets it run'),
  refused(279, 'move_pages', EPERM, 'would move pages of other processes between host NUMA nodes'),
  served(280, 'utimensat', 'file', 'resolves the path inside the container root and sets its times'),
  fast(281, 'epoll_pwait', 'fd-local: waits on an epoll fd the workload holds'),
  served(282, 'signalfd', 'misc', 'creates or updates a signalfd'),
  fast(283, 'timerfd_create', 'fd-local: creates a timer fd'),
  served(284, 'eventfd', 'misc', 'old eventfd constructor; the sentry lets it run'),
  served(285, 'fallocate', 'misc', 'allocates space in a file the workload opened; the sentry lets it continue'),
  fast(286, 'timerfd_settime', 'fd-local: arms a timer fd'),
  fast(287, 'timerfd_gettime', 'fd-local: reads a timer fd'),
  served(288, 'accept4', 'socket', 'the sentry accepts on a socket the policy admitted'),
  served(289, 'signalfd4', 'misc', 'creates or updates a signalfd'),
  fast(290, 'eventfd2', 'fd-local: creates an eventfd'),
  fast(291, 'epoll_create1', 'fd-local: creates an epoll fd'),
  fast(292, 'dup3', 'fd-local: duplicates one of the caller\'s fds'),
  fast(293, 'pipe2', 'fd-local: creates an anonymous pipe'),
  served(294, 'inotify_init1', 'misc', 'creates an inotify fd'),
  fast(295, 'preadv', 'fd-local: positioned vectored read'),
  fast(296, 'pwritev', 'fd-local: positioned vectored write'),
  served(297, 'rt_tgsigqueueinfo', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  refused(298, 'perf_event_open', EPERM, 'would reach the host kernel\'s perf subsystem (large attack surface, host data)'),
  served(299, 'recvmmsg', 'socket', 'the sentry receives, checking passed fds and credentials'),
  refused(300, 'fanotify_init', EPERM, 'would watch host filesystems (CAP_SYS_ADMIN)'),
  refused(301, 'fanotify_mark', EPERM, 'would watch host filesystems (CAP_SYS_ADMIN)'),
  fast(302, 'prlimit64', 'reading the caller\'s own limits runs directly; setting limits or another pid is checked by the sentry', {
    strict: 'served',
    family: 'misc',
    fastWhen: PRLIMIT_FAST,
  }),
  refused(303, 'name_to_handle_at', EPERM, 'would expose host file handles usable outside the container root'),
  refused(304, 'open_by_handle_at', EPERM, 'would open any host file by handle, escaping the container root (CAP_DAC_READ_SEARCH)'),
  refused(305, 'clock_adjtime', EPERM, 'would tune a host clock (CAP_SYS_TIME)'),
  served(306, 'syncfs', 'misc', 'the sentry syncs the filesystem only when it is the container\'s'),
  served(307, 'sendmmsg', 'socket', 'the sentry checks every destination and passed fd'),
  refused(308, 'setns', EPERM, 'would join other host namespaces'),
  served(309, 'getcpu', 'misc', 'current CPU (normally the vDSO or rseq), served to keep the fast set small'),
  refused(310, 'process_vm_readv', EPERM, 'would read other processes\' memory directly (ptrace access)'),
  refused(311, 'process_vm_writev', EPERM, 'would write other processes\' memory directly (ptrace access)'),
  refused(312, 'kcmp', EPERM, 'would compare kernel objects of other processes (ptrace access, pointer leaks)'),
  refused(313, 'finit_module', EPERM, 'would load code into the host kernel (CAP_SYS_MODULE)'),
  served(314, 'sched_setattr', 'process', 'the policy is in memory the kernel re-reads, so the sentry does not judge it: the kernel needs CAP_SYS_NICE for real-time ones'),
  served(315, 'sched_getattr', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(316, 'renameat2', 'file', 'resolves both paths inside the container root (RENAME_WHITEOUT refused)'),
  served(317, 'seccomp', 'misc', 'stacking a filter only narrows the workload (its own listener serves only itself); the sentry lets it continue'),
  fast(318, 'getrandom', 'reads the kernel random pool; no fd or path'),
  served(319, 'memfd_create', 'misc', 'creates an anonymous memory file (a name, no path); the sentry lets it continue'),
  refused(320, 'kexec_file_load', EPERM, 'would load a new kernel to replace the host\'s (CAP_SYS_BOOT)'),
  refused(321, 'bpf', EPERM, 'would load eBPF programs or maps into the host kernel'),
  served(322, 'execveat', 'file', 'resolves the program inside the container root and checks it before running'),
  refused(323, 'userfaultfd', EPERM, 'would let the workload stall host kernel page faults (exploit aid)'),
  served(324, 'membarrier', 'misc', 'the sentry allows the private-expedited commands only'),
  served(325, 'mlock2', 'misc', 'locks memory; the sentry lets it run within RLIMIT_MEMLOCK'),
  fast(326, 'copy_file_range', 'fd-local: copies between fds the workload holds (coreutils cat, cp and install use it for every file)', { strict: 'served', family: 'misc' }),
  fast(327, 'preadv2', 'fd-local: positioned vectored read with flags'),
  fast(328, 'pwritev2', 'fd-local: positioned vectored write with flags'),
  served(329, 'pkey_mprotect', 'misc', 'memory-local protection keys, served to keep the fast set small'),
  served(330, 'pkey_alloc', 'misc', 'memory-local protection keys, served to keep the fast set small'),
  served(331, 'pkey_free', 'misc', 'memory-local protection keys, served to keep the fast set small'),
  served(332, 'statx', 'file', 'resolves the path inside the container root and reports its stat'),
  served(333, 'io_pgetevents', 'misc', 'Linux AIO completion wait with a signal mask', STRICT_ENOSYS),
  fast(334, 'rseq', 'thread-local: registers the caller\'s restartable-sequence area'),
  refused(335, 'uretprobe', ENOSYS, 'only valid from the kernel\'s uretprobe trampoline (the kernel bypasses seccomp there)'),
  refused(336, 'uprobe', ENOSYS, 'only valid from the kernel\'s uprobe trampoline (the kernel bypasses seccomp there)'),
  served(424, 'pidfd_send_signal', 'process', 'signals through a pidfd the workload holds (only sandbox processes are nameable); the sentry lets it continue'),
  refused(425, 'io_uring_setup', ENOSYS, 'io_uring would bypass the filter and reach a large host attack surface; libuv falls back'),
  refused(426, 'io_uring_enter', ENOSYS, 'io_uring would bypass the filter and reach a large host attack surface'),
  refused(427, 'io_uring_register', ENOSYS, 'io_uring would bypass the filter and reach a large host attack surface'),
  refused(428, 'open_tree', EPERM, 'would clone host mount trees (new mount API, CAP_SYS_ADMIN)'),
  refused(429, 'move_mount', EPERM, 'would attach mounts in the host kernel (new mount API)'),
  refused(430, 'fsopen', EPERM, 'would create a filesystem context in the host kernel (new mount API)'),
  refused(431, 'fsconfig', EPERM, 'would configure a host filesystem context (new mount API)'),
  refused(432, 'fsmount', EPERM, 'would create a host mount (new mount API)'),
  refused(433, 'fspick', EPERM, 'would reconfigure a host mount (new mount API)'),
  served(434, 'pidfd_open', 'process', 'value arguments only: the sandbox\'s pid namespace bounds the target, so the sentry lets it continue'),
  served(435, 'clone3', 'process', 'flags live in memory the kernel would re-read after the check: the sentry answers ENOSYS and libc falls back to clone'),
  fast(436, 'close_range', 'fd-local: closes a range of the caller\'s fds'),
  served(437, 'openat2', 'file', 'resolves the path inside the container root (honouring RESOLVE_*) and installs the fd'),
  refused(438, 'pidfd_getfd', EPERM, 'would take fds out of another process (ptrace access)'),
  served(439, 'faccessat2', 'file', 'resolves the path inside the container root and checks access'),
  refused(440, 'process_madvise', EPERM, 'would act on the memory of another process'),
  served(441, 'epoll_pwait2', 'misc', 'epoll wait with a timespec; the sentry lets it run'),
  refused(442, 'mount_setattr', EPERM, 'would change host mount attributes (new mount API)'),
  refused(443, 'quotactl_fd', EPERM, 'would manage host disk quotas (CAP_SYS_ADMIN)'),
  refused(444, 'landlock_create_ruleset', ENOSYS, 'Landlock unsupported inside the sentry; programs treat ENOSYS as absent'),
  refused(445, 'landlock_add_rule', ENOSYS, 'Landlock unsupported inside the sentry'),
  refused(446, 'landlock_restrict_self', ENOSYS, 'Landlock unsupported inside the sentry'),
  refused(447, 'memfd_secret', ENOSYS, 'secret memory areas in the host kernel; unsupported'),
  refused(448, 'process_mrelease', ENOSYS, 'would reap the memory of another (dying) process; unsupported'),
  served(449, 'futex_waitv', 'misc', 'memory-local multi-futex wait, served to keep the fast set small'),
  refused(450, 'set_mempolicy_home_node', ENOSYS, 'would bind memory to host NUMA nodes; unsupported'),
  refused(451, 'cachestat', ENOSYS, 'would reveal host page-cache state (side channel); unsupported'),
  served(452, 'fchmodat2', 'file', 'resolves the path inside the container root and changes its mode'),
  refused(453, 'map_shadow_stack', ENOSYS, 'user shadow stacks unsupported (CET stays off)'),
  served(454, 'futex_wake', 'misc', 'memory-local futex2 wake; the sentry lets it run'),
  served(455, 'futex_wait', 'misc', 'memory-local futex2 wait; the sentry lets it run'),
  served(456, 'futex_requeue', 'misc', 'memory-local futex2 requeue; the sentry lets it run'),
  refused(457, 'statmount', ENOSYS, 'would describe host mounts; unsupported'),
  refused(458, 'listmount', ENOSYS, 'would list host mounts; unsupported'),
  refused(459, 'lsm_get_self_attr', ENOSYS, 'would expose host LSM attributes; unsupported'),
  refused(460, 'lsm_set_self_attr', ENOSYS, 'would change host LSM attributes; unsupported'),
  refused(461, 'lsm_list_modules', ENOSYS, 'would list host LSMs; unsupported'),
  refused(462, 'mseal', ENOSYS, 'memory sealing unsupported; programs treat ENOSYS as absent'),
  served(463, 'setxattrat', 'file', 'new in Linux 6.13 and not served yet: ENOSYS, so a caller falls back to the path call, which is served'),
  served(464, 'getxattrat', 'file', 'new in Linux 6.13 and not served yet: ENOSYS, so a caller falls back to the path call, which is served'),
  served(465, 'listxattrat', 'file', 'new in Linux 6.13 and not served yet: ENOSYS, so a caller falls back to the path call, which is served'),
  served(466, 'removexattrat', 'file', 'new in Linux 6.13 and not served yet: ENOSYS, so a caller falls back to the path call, which is served'),
  refused(467, 'open_tree_attr', EPERM, 'would clone host mount trees with new attributes (new mount API)'),
  refused(468, 'file_getattr', ENOSYS, 'new in Linux 6.17 and not served yet; programs treat ENOSYS as absent'),
  refused(469, 'file_setattr', ENOSYS, 'new in Linux 6.17 and not served yet; programs treat ENOSYS as absent'),
  refused(470, 'listns', ENOSYS, 'would list host namespaces; unsupported'),
];

/** Checks the rows' internal consistency (families, filters, errnos); throws on a table bug. */
function validate(rows: readonly SyscallEntry[]): void {
  const seen = new Set<string>();
  let last = -1;
  for (const e of rows) {
    const at = `syscall table: ${e.name} (${e.nr})`;
    if (seen.has(e.name) || e.nr <= last) throw new Error(`${at}: duplicate or out of order`);
    seen.add(e.name);
    last = e.nr;
    const canServe = e.balanced === 'served' || e.strict === 'served' || e.fastWhen !== undefined;
    if (canServe !== (e.family !== undefined)) throw new Error(`${at}: family must be set exactly when it can be served`);
    if ((e.network === 'served' || e.networkFastWhen !== undefined) && e.family !== 'socket') throw new Error(`${at}: the network level serves socket calls only`);
    const refusedSomewhere = e.balanced === 'refused' || e.strict === 'refused';
    if (refusedSomewhere !== (e.errno !== undefined)) throw new Error(`${at}: errno must be set exactly when it is refused`);
    if (e.network === 'refused' && e.errno === undefined) throw new Error(`${at}: refused at the network level without an errno`);
    if (e.fastWhen !== undefined && e.balanced !== 'fast' && e.strict !== 'fast') throw new Error(`${at}: fastWhen on a call never fast`);
    if (e.networkFastWhen !== undefined && e.network !== 'fast') throw new Error(`${at}: networkFastWhen on a call not fast at the network level`);
    for (const f of [...(e.fastWhen ?? []), ...(e.networkFastWhen ?? [])].flat()) {
      const mask = f.mask ?? (1n << 64n) - 1n;
      if (f.arg < 0 || f.arg > 5 || f.values.length === 0) throw new Error(`${at}: bad filter`);
      if ((f.op === 'masked_eq') !== (f.mask !== undefined)) throw new Error(`${at}: mask only with masked_eq`);
      if (f.op !== 'in' && f.values.length !== 1) throw new Error(`${at}: ${f.op} takes one value`);
      if (f.values.some((v) => v < 0n || v >= 1n << 64n || (v & ~mask) !== 0n)) throw new Error(`${at}: value outside the mask`);
    }
  }
}

/**
 * The internal `network` level: the microVM's VMM (QEMU and its user-mode network, libslirp)
 * runs under it when the VM has egress rules. Everything is fast (the VMM's own jail and seccomp
 * allowlist still apply underneath) except the calls that create host sockets or choose where
 * they send — those are served by the socket family under the --allow-egress rules, exactly as
 * for a sentry workload — and io_uring, which would reach them around the filter.
 */
const NETWORK_SERVED = new Set(['socket', 'connect', 'bind', 'listen', 'sendto', 'sendmsg', 'sendmmsg', 'setsockopt']);
/** sendto without a destination (arg 4, dest_addr, is NULL) goes where the socket is connected: fast. */
const NETWORK_FAST_WHEN: Readonly<Record<string, ArgFilter[][]>> = { sendto: [[{ arg: 4, op: 'eq', values: [0n] }]] };

for (const e of ROWS) {
  if (NETWORK_SERVED.has(e.name)) {
    const when = NETWORK_FAST_WHEN[e.name];
    e.network = when ? 'fast' : 'served';
    if (when) e.networkFastWhen = when;
  } else if (e.name.startsWith('io_uring_')) {
    e.network = 'refused';
  }
}

validate(ROWS);

/** Every x86_64 system call (64-bit ABI) with its classes, sorted by number. */
export const SYSCALL_TABLE: readonly SyscallEntry[] = Object.freeze(ROWS);

const BY_NAME = new Map(SYSCALL_TABLE.map((e) => [e.name, e]));
const BY_NR = new Map(SYSCALL_TABLE.map((e) => [e.nr, e]));

/** The table entry of syscall `name`, or undefined if x86_64 has no such call. */
export function entryByName(name: string): SyscallEntry | undefined {
  return BY_NAME.get(name);
}

/** The table entry of syscall number `nr` (x86_64 ABI), or undefined if it is unassigned. */
export function entryByNr(nr: number): SyscallEntry | undefined {
  return BY_NR.get(nr);
}

/** The argument filters under which `e` is fast at `level` (undefined: unconditionally, if fast). */
export function fastWhenAt(e: SyscallEntry, level: SentryLevel): ArgFilter[][] | undefined {
  return level === 'network' ? e.networkFastWhen : e.fastWhen;
}

/** How many syscalls are fast (always or under argument filters) at `level`. */
export function fastCount(level: SentryLevel): number {
  return SYSCALL_TABLE.filter((e) => e[level] === 'fast').length;
}
