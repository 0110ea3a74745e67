/**
 * The sentry's own confinement: once it listens, every thread of the sentry process runs under
 * a seccomp allowlist (SECCOMP_FILTER_FLAG_TSYNC) of the calls Node and the handlers use.
 * Mounting, namespaces, ptrace, module loading, bpf, keyrings, io_uring and exec are not on it,
 * so a compromised sentry cannot use them either. Its capabilities were already reduced by the
 * launcher (setpriv with a bounding set: the workload's capabilities plus CAP_SYS_PTRACE).
 */
import { compileSeccomp, SECCOMP_FILTER_FLAG_TSYNC } from '../../seccomp/index.js';
import * as k from '../../sys/kernel.js';

/** System calls the sentry process keeps (Node's runtime plus every call the handlers make). */
export const SENTRY_ALLOWLIST: readonly string[] = [
  // memory, threads, signals, time: Node and V8 themselves (restart_syscall: a poll or sleep
  // resumed after a stop, e.g. SIGSTOP or the cgroup freezer, continues through it)
  'brk', 'mmap', 'munmap', 'mprotect', 'mremap', 'madvise', 'mincore', 'msync', 'membarrier',
  'futex', 'futex_waitv', 'set_robust_list', 'get_robust_list', 'rseq', 'set_tid_address', 'sched_yield',
  'sched_getaffinity', 'sched_setaffinity', 'sched_getscheduler', 'getcpu', 'rt_sigaction', 'rt_sigprocmask', 'rt_sigreturn', 'sigaltstack', 'rt_sigtimedwait',
  'clock_gettime', 'clock_getres', 'clock_nanosleep', 'nanosleep', 'gettimeofday', 'getrandom',
  'getpid', 'gettid', 'getppid', 'getuid', 'geteuid', 'getgid', 'getegid', 'getresuid', 'getresgid', 'getgroups',
  'tgkill', 'exit', 'exit_group', 'restart_syscall', 'prlimit64', 'getrusage', 'uname', 'sysinfo', 'clone', 'clone3',
  'epoll_create1', 'epoll_ctl', 'epoll_wait', 'epoll_pwait', 'epoll_pwait2', 'eventfd2', 'poll', 'ppoll',
  'pipe2', 'dup', 'dup3', 'close', 'close_range', 'fcntl', 'ioctl', 'lseek',
  'read', 'write', 'pread64', 'pwrite64', 'readv', 'writev', 'getcwd', 'prctl', 'capget', 'statfs',
  // the gofer and the synthesized /proc
  'openat', 'openat2', 'readlink', 'readlinkat', 'newfstatat', 'fstat', 'statx', 'fstatfs', 'getdents64', 'access', 'faccessat2',
  'mkdirat', 'mknodat', 'unlinkat', 'renameat2', 'linkat', 'symlinkat', 'fchmodat', 'fchmodat2', 'fchownat',
  'utimensat', 'ftruncate', 'fchmod', 'fchown', 'memfd_create', 'fgetxattr', 'flistxattr',
  // path extended attributes, as the caller, on an object already resolved (through /proc/self/fd/N)
  'getxattr', 'setxattr', 'listxattr', 'removexattr',
  // a blocking open of a FIFO for reading: waiting for its writer (sys_file.ts awaitFifoWriter)
  'tee', 'inotify_init1', 'inotify_add_watch',
  // the same through Node's fs (libuv calls glibc, which uses the old path calls on x86_64)
  'open', 'stat', 'lstat', 'mkdir', 'rmdir', 'unlink', 'symlink', 'rename', 'chmod', 'fsync', 'fdatasync',
  // acting with a caller's file-system identity (ident.ts): per-thread calls
  'setresuid', 'setresgid', 'setfsuid', 'setfsgid', 'setgroups', 'capset',
  // the workload's tasks: pidfds, the fd hand-over and their memory
  'pidfd_open', 'pidfd_getfd', 'process_vm_readv', 'process_vm_writev',
  // a fatal signal the sentry sends for a caller's kill of its child, to answer once it is dead (sys_process.ts)
  'pidfd_send_signal',
  // sockets: the hand-over socket and brokered network calls
  'socket', 'bind', 'connect', 'listen', 'accept4', 'sendto', 'sendmsg', 'recvmsg', 'recvfrom',
  'getsockopt', 'setsockopt', 'getsockname', 'getpeername', 'shutdown',
];

/** Installs the allowlist on every thread; logs (and carries on) if the kernel refuses it. */
export function confineSentry(log: (msg: string) => void): void {
  const compiled = compileSeccomp({
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 1,
    architectures: ['SCMP_ARCH_X86_64'],
    syscalls: [
      { names: [...SENTRY_ALLOWLIST], action: 'SCMP_ACT_ALLOW' },
      // real-time for the length of an fd hand-over (pin.ts): its own thread's policy only
      { names: ['sched_setscheduler'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 0, op: 'SCMP_CMP_EQ' }] },
    ],
  });
  if (k.prctl(38 /* PR_SET_NO_NEW_PRIVS */, 1) < 0) log('cannot set no_new_privs for the sentry');
  const rc = k.seccompFilter(SECCOMP_FILTER_FLAG_TSYNC, compiled.filter);
  if (rc !== 0) log(`cannot confine the sentry with seccomp: errno ${-rc}`);
}
