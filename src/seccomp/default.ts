/**
 * Moat's default seccomp profile: an explicit allowlist for x86_64, i386 and x32 programs, at
 * least as strict as Docker's default profile for a container without extra capabilities.
 *
 * Error codes, a deliberate choice that differs from Docker:
 * - A syscall the profile does not name gets ENOSYS (defaultErrnoRet 38). The allowlist names
 *   every syscall a normal program needs up to Linux 6.19, so an unnamed one is either obsolete or
 *   newer than this list; ENOSYS is what libc expects from a kernel without the call and makes it
 *   fall back (as it must for clone3, faccessat2, fchmodat2, ...). Docker returns EPERM by default
 *   and relies on runc's "ENOSYS for numbers above the profile's largest" stub for that, which
 *   Moat does not have (see compile.ts).
 * - The dangerous syscalls below are denied by name with EPERM, the answer of a kernel that has
 *   the call but refuses it: tools then report "Operation not permitted", as under Docker.
 * - clone3 gets ENOSYS (as Docker) because its flags live in memory a filter cannot read; libc
 *   falls back to clone, whose flags are checked.
 */
import type { SeccompSpec } from '../spec/schema.js';

const EPERM = 1;
const ENOSYS = 38;

/** Namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. */
const CLONE_NAMESPACE_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];
const CLONE_NAMESPACE_MASK = CLONE_NAMESPACE_FLAGS.reduce((a, b) => a | b, 0); // 0x7e020000

/** AF_VSOCK: sockets to the hypervisor/host, outside the container's network namespace. */
const AF_VSOCK = 40;

/** personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and the 0xffffffff query. */
const SAFE_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

/** Syscalls a program may always make, by area. Names of one ABI only are fine (e.g. `_llseek` is i386). */
const ALLOWED: readonly (readonly string[])[] = [
  // Process life cycle and identity.
  ['exit', 'exit_group', 'fork', 'vfork', 'execve', 'execveat', 'wait4', 'waitid', 'waitpid',
    'getpid', 'getppid', 'gettid', 'getpgid', 'getpgrp', 'setpgid', 'getsid', 'setsid',
    'set_tid_address', 'kill', 'tkill', 'tgkill', 'restart_syscall', 'pidfd_open',
    'pidfd_send_signal', 'process_mrelease'],
  // Credentials (the kernel still checks CAP_SETUID etc.), with the i386 32-bit-id variants.
  ['getuid', 'geteuid', 'getgid', 'getegid', 'getresuid', 'getresgid', 'getgroups', 'setuid',
    'setgid', 'setreuid', 'setregid', 'setresuid', 'setresgid', 'setfsuid', 'setfsgid', 'setgroups',
    'capget', 'capset', 'getuid32', 'geteuid32', 'getgid32', 'getegid32', 'getresuid32',
    'getresgid32', 'getgroups32', 'setuid32', 'setgid32', 'setreuid32', 'setregid32', 'setresuid32',
    'setresgid32', 'setfsuid32', 'setfsgid32', 'setgroups32'],
  // Signals.
  ['rt_sigaction', 'rt_sigprocmask', 'rt_sigreturn', 'rt_sigpending', 'rt_sigtimedwait',
    'rt_sigtimedwait_time64', 'rt_sigqueueinfo', 'rt_tgsigqueueinfo', 'rt_sigsuspend', 'sigaltstack',
    'signalfd', 'signalfd4', 'sigreturn', 'sigprocmask', 'pause'],
  // Memory.
  ['brk', 'mmap', 'mmap2', 'munmap', 'mremap', 'mprotect', 'pkey_mprotect', 'pkey_alloc',
    'pkey_free', 'madvise', 'mincore', 'msync', 'mlock', 'mlock2', 'munlock', 'mlockall',
    'munlockall', 'membarrier', 'memfd_create', 'memfd_secret', 'remap_file_pages',
    'map_shadow_stack', 'mseal'],
  // File I/O.
  ['read', 'write', 'readv', 'writev', 'pread64', 'pwrite64', 'preadv', 'pwritev', 'preadv2',
    'pwritev2', 'open', 'openat', 'openat2', 'creat', 'close', 'close_range', 'lseek', '_llseek',
    'dup', 'dup2', 'dup3', 'pipe', 'pipe2', 'fcntl', 'fcntl64', 'flock', 'ioctl', 'fsync',
    'fdatasync', 'sync', 'syncfs', 'sync_file_range', 'truncate', 'truncate64', 'ftruncate',
    'ftruncate64', 'fallocate', 'fadvise64', 'fadvise64_64', 'readahead', 'sendfile', 'sendfile64',
    'splice', 'tee', 'vmsplice', 'copy_file_range', 'cachestat'],
  // File metadata, names and directories (mount points and devices are the kernel's and the
  // device cgroup's business).
  ['stat', 'fstat', 'lstat', 'stat64', 'fstat64', 'lstat64', 'newfstatat', 'fstatat64', 'statx',
    'statfs', 'fstatfs', 'statfs64', 'fstatfs64', 'access', 'faccessat', 'faccessat2', 'mkdir',
    'mkdirat', 'rmdir', 'rename', 'renameat', 'renameat2', 'link', 'linkat', 'unlink', 'unlinkat',
    'symlink', 'symlinkat', 'readlink', 'readlinkat', 'mknod', 'mknodat', 'chdir', 'fchdir',
    'getcwd', 'chroot', 'umask', 'chmod', 'fchmod', 'fchmodat', 'fchmodat2', 'chown', 'fchown',
    'lchown', 'fchownat', 'chown32', 'fchown32', 'lchown32', 'utime', 'utimes', 'utimensat',
    'utimensat_time64', 'futimesat', 'getdents', 'getdents64', 'setxattr', 'lsetxattr',
    'fsetxattr', 'getxattr', 'lgetxattr', 'fgetxattr', 'listxattr', 'llistxattr', 'flistxattr',
    'removexattr', 'lremovexattr', 'fremovexattr', 'setxattrat', 'getxattrat', 'listxattrat',
    'removexattrat', 'file_getattr', 'file_setattr', 'inotify_init', 'inotify_init1',
    'inotify_add_watch', 'inotify_rm_watch', 'fanotify_mark'],
  // Waiting for events.
  ['select', '_newselect', 'pselect6', 'pselect6_time64', 'poll', 'ppoll', 'ppoll_time64',
    'epoll_create', 'epoll_create1', 'epoll_ctl', 'epoll_wait', 'epoll_pwait', 'epoll_pwait2',
    'eventfd', 'eventfd2', 'timerfd_create', 'timerfd_settime', 'timerfd_gettime',
    'timerfd_settime64', 'timerfd_gettime64'],
  // POSIX asynchronous I/O (not io_uring, denied below).
  ['io_setup', 'io_destroy', 'io_submit', 'io_cancel', 'io_getevents', 'io_pgetevents',
    'io_pgetevents_time64'],
  // Clocks and timers. adjtimex and clock_adjtime are allowed as under Docker: glibc reads the
  // clock state through them, a filter cannot see their in-memory `modes`, and the kernel requires
  // CAP_SYS_TIME to change anything.
  ['time', 'gettimeofday', 'clock_gettime', 'clock_gettime64', 'clock_getres',
    'clock_getres_time64', 'clock_nanosleep', 'clock_nanosleep_time64', 'nanosleep', 'getitimer',
    'setitimer', 'alarm', 'times', 'timer_create', 'timer_settime', 'timer_settime64',
    'timer_gettime', 'timer_gettime64', 'timer_getoverrun', 'timer_delete', 'adjtimex',
    'clock_adjtime', 'clock_adjtime64'],
  // Threads and synchronisation.
  ['futex', 'futex_time64', 'futex_waitv', 'futex_wake', 'futex_wait', 'futex_requeue',
    'set_robust_list', 'get_robust_list', 'rseq', 'set_thread_area', 'get_thread_area'],
  // Scheduling (raising priority still needs CAP_SYS_NICE).
  ['sched_yield', 'sched_getaffinity', 'sched_setaffinity', 'sched_getparam', 'sched_setparam',
    'sched_getscheduler', 'sched_setscheduler', 'sched_get_priority_max', 'sched_get_priority_min',
    'sched_rr_get_interval', 'sched_rr_get_interval_time64', 'sched_getattr', 'sched_setattr',
    'getpriority', 'setpriority', 'ioprio_get', 'ioprio_set', 'getcpu'],
  // Limits and system information.
  ['getrlimit', 'setrlimit', 'ugetrlimit', 'prlimit64', 'getrusage', 'sysinfo', 'uname',
    'getrandom'],
  // Sockets (socket itself is below, without AF_VSOCK).
  ['socketpair', 'bind', 'connect', 'listen', 'accept', 'accept4', 'getsockname', 'getpeername',
    'sendto', 'recvfrom', 'send', 'recv', 'sendmsg', 'recvmsg', 'sendmmsg', 'recvmmsg',
    'recvmmsg_time64', 'shutdown', 'setsockopt', 'getsockopt'],
  // System V IPC and POSIX message queues (namespaced by the IPC namespace).
  ['semget', 'semop', 'semctl', 'semtimedop', 'semtimedop_time64', 'msgget', 'msgsnd', 'msgrcv',
    'msgctl', 'shmget', 'shmat', 'shmdt', 'shmctl', 'mq_open', 'mq_unlink', 'mq_timedsend',
    'mq_timedsend_time64', 'mq_timedreceive', 'mq_timedreceive_time64', 'mq_notify',
    'mq_getsetattr'],
  // i386 multiplexers of the two groups above, allowed as a whole as under Docker: their real
  // arguments are in memory a filter cannot read, and older i386 programs use them (with version
  // bits in the call number that per-operation rules would not match). This also means that on
  // i386 the AF_VSOCK restriction below cannot hold for socketcall(SYS_SOCKET, ...).
  ['socketcall', 'ipc'],
  // Self-restriction and per-process settings: prctl, seccomp and Landlock can only narrow what
  // the process may do; the LSM calls read or set the caller's own LSM attributes as
  // /proc/self/attr does. uretprobe/uprobe are only meaningful from a kernel-installed probe
  // trampoline (and recent kernels bypass seccomp for them anyway).
  ['prctl', 'arch_prctl', 'seccomp', 'landlock_create_ruleset', 'landlock_add_rule',
    'landlock_restrict_self', 'lsm_get_self_attr', 'lsm_set_self_attr', 'lsm_list_modules',
    'uretprobe', 'uprobe'],
];

/** Syscalls denied with EPERM, by reason. */
const DENIED: readonly (readonly string[])[] = [
  // Loading or replacing kernel code: modules and kexec, and rebooting the host.
  ['init_module', 'finit_module', 'delete_module', 'create_module', 'get_kernel_syms',
    'query_module', 'kexec_load', 'kexec_file_load', 'reboot'],
  // Large kernel attack surface, host-wide effects or information leaks: eBPF programs,
  // performance counters, userfaultfd (a classic exploit primitive to win kernel races) and
  // io_uring (its own syscall-like interface that seccomp cannot see into).
  ['bpf', 'perf_event_open', 'userfaultfd', 'io_uring_setup', 'io_uring_enter', 'io_uring_register'],
  // Kernel keyrings are not namespaced: keys would be shared with the host and other containers.
  ['keyctl', 'add_key', 'request_key'],
  // Reading or controlling other processes' memory and file descriptors.
  ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise'],
  // Changing the mount table (old and new mount API) or inspecting other mount namespaces.
  ['mount', 'umount', 'umount2', 'pivot_root', 'fsopen', 'fsconfig', 'fsmount', 'fspick',
    'move_mount', 'open_tree', 'open_tree_attr', 'mount_setattr', 'statmount', 'listmount'],
  // Creating or joining namespaces (clone with namespace flags is handled below).
  ['unshare', 'setns', 'listns'],
  // File handles bypass path-based access checks and mount boundaries ("shocker");
  // name_to_handle_at is only useful to feed open_by_handle_at.
  ['open_by_handle_at', 'name_to_handle_at'],
  // Host-wide state: swap, the kernel log, process accounting, the host clock, quotas, the
  // hostname (without CAP_SYS_ADMIN, as Docker), the terminal hang-up, fanotify on whole mounts.
  ['swapon', 'swapoff', 'syslog', 'acct', 'settimeofday', 'stime', 'clock_settime',
    'clock_settime64', 'quotactl', 'quotactl_fd', 'sethostname', 'setdomainname', 'vhangup',
    'fanotify_init'],
  // Direct hardware and legacy x86 execution modes: port I/O, LDT editing, virtual 8086 mode.
  ['iopl', 'ioperm', 'modify_ldt', 'vm86', 'vm86old'],
  // NUMA memory placement affects the whole host and other processes' pages (Docker: only with
  // CAP_SYS_NICE).
  ['mbind', 'set_mempolicy', 'get_mempolicy', 'set_mempolicy_home_node', 'migrate_pages', 'move_pages'],
  // Obsolete interfaces with a history of kernel bugs.
  ['lookup_dcookie', 'nfsservctl', 'uselib', '_sysctl'],
];

type SyscallRule = NonNullable<SeccompSpec['syscalls']>[number];

/** Every syscall name the default profile allows unconditionally (for tests and documentation). */
export const DEFAULT_ALLOWED_SYSCALLS: readonly string[] = ALLOWED.flat();

/** Every syscall name the default profile denies with EPERM (for tests and documentation). */
export const DEFAULT_DENIED_SYSCALLS: readonly string[] = DENIED.flat();

/** Moat's default seccomp profile for containers (x86_64, i386 and x32 programs). */
export function defaultSeccompProfile(): SeccompSpec {
  const syscalls: SyscallRule[] = [
    { names: [...DEFAULT_ALLOWED_SYSCALLS], action: 'SCMP_ACT_ALLOW' },
    // socket(2) for every family except AF_VSOCK.
    { names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_NE' }] },
    // personality(2): only the values Docker allows; others (e.g. ADDR_NO_RANDOMIZE, which turns
    // off ASLR) get the default ENOSYS.
    ...SAFE_PERSONALITIES.map((value): SyscallRule => ({
      names: ['personality'],
      action: 'SCMP_ACT_ALLOW',
      args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }],
    })),
    // clone(2) without any namespace flag (argument 0 is the flags word on all three ABIs)...
    { names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NAMESPACE_MASK, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
    // ...and EPERM, not ENOSYS, when it asks for a namespace: one rule per flag, each disjoint from
    // the rule above, so no rule order question arises.
    ...CLONE_NAMESPACE_FLAGS.map((flag): SyscallRule => ({
      names: ['clone'],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: EPERM,
      args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
    })),
    // clone3(2): ENOSYS so that libc falls back to clone (its flags are in memory). This equals
    // the default action and compiles to nothing; it is listed so that the intent survives a
    // change of the default.
    { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    { names: [...DEFAULT_DENIED_SYSCALLS], action: 'SCMP_ACT_ERRNO', errnoRet: EPERM },
  ];
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: ENOSYS,
    architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
    syscalls,
  };
}
