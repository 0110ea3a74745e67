/**
 * The miscellaneous family: calls that are not on the fast path of the level in use but whose
 * arguments are values or buffers the workload owns, so the kernel may run them once the
 * sentry has looked (CONTINUE), plus a few refused by argument.
 */
import { E } from '../../sys/kernel.js';
import { CONTINUE, fail } from './types.js';
import type { HandlerTable, Reply, Task } from './types.js';

const pass = (): Reply => CONTINUE;

/** prctl options a sandboxed process may use (the rest reach kernel features it has no business with). */
const PRCTL_ALLOWED = new Set([
  1, 2, 3, 4, // PDEATHSIG get/set, DUMPABLE get/set
  15, 16, // SET_NAME, GET_NAME
  21, 22, // GET_SECCOMP, SET_SECCOMP (only stacks filters: cannot loosen the sentry's)
  23, 24, // CAPBSET_READ, CAPBSET_DROP
  36, 37, // SET/GET_CHILD_SUBREAPER
  38, 39, // SET/GET_NO_NEW_PRIVS
  40, 41, // GET_TID_ADDRESS, SET_THP_DISABLE
  42, // GET_THP_DISABLE
  47, // CAP_AMBIENT
  0x53564d41, // PR_SET_VMA
  8, 9, // SET/GET_KEEPCAPS
  10, 11, 12, 13, // FPEMU/FPEXC
  25, 26, // SECUREBITS
  27, 28, // TIMERSLACK
  29, 30, // TASK_PERF_EVENTS_DISABLE/ENABLE
  45, 46, // FP_MODE
  55, 56, // SET/GET_SPECULATION_CTRL... (52/53 on x86: harmless queries)
  52, 53,
]);

/** prctl(option, ...): allowed options continue, the rest are refused. */
function prctl(t: Task): Reply {
  return PRCTL_ALLOWED.has(t.int(0)) ? CONTINUE : fail(E.EINVAL);
}

/** ioctl on the served path: only the level's fast-path requests are not here; a few more pass. */
const IOCTL_ALLOWED = new Set([
  0x5401, 0x5402, 0x5403, 0x5404, 0x540f, 0x5410, 0x5413, 0x5414, 0x541b, 0x5421, 0x5450, 0x5451,
  0x80045430, 0x40045431, 0x5441, 0x540e /* TIOCSCTTY */, 0x5422 /* TIOCNOTTY */, 0x5429 /* TIOCGSID */,
  0x5452 /* FIOASYNC */, 0x5460 /* FIOQSIZE? */, 0x80086601 /* FS_IOC_GETFLAGS */,
  // queries of the sandbox's own network interfaces (what netlink-route already shows it;
  // ifconfig, ip and language runtimes use them): name, flags, addresses, MTU, queue length
  0x8910 /* SIOCGIFNAME */, 0x8912 /* SIOCGIFCONF */, 0x8913 /* SIOCGIFFLAGS */, 0x8915 /* SIOCGIFADDR */,
  0x8917 /* SIOCGIFDSTADDR */, 0x8919 /* SIOCGIFBRDADDR */, 0x891b /* SIOCGIFNETMASK */, 0x891d /* SIOCGIFMETRIC */,
  0x8921 /* SIOCGIFMTU */, 0x8927 /* SIOCGIFHWADDR */, 0x8933 /* SIOCGIFINDEX */, 0x8942 /* SIOCGIFTXQLEN */,
]);

/** ioctl(fd, request, ...): listed terminal, fd and interface queries continue; the rest ENOTTY. */
function ioctl(t: Task): Reply {
  return IOCTL_ALLOWED.has(Number(t.notif.args[1] & 0xffffffffn)) ? CONTINUE : fail(E.ENOTTY);
}

/** fcntl(fd, cmd, ...): every documented command acts on the fd only; F_SETOWN-style ones too. */
function fcntl(t: Task): Reply {
  const cmd = t.int(1);
  return cmd >= 0 && cmd <= 1034 ? CONTINUE : fail(E.EINVAL);
}

/** personality(persona): queries and the plain Linux persona only. */
function personality(t: Task): Reply {
  const p = Number(t.notif.args[0] & 0xffffffffn);
  // 0xffffffff queries; PER_LINUX (0), optionally with ADDR_NO_RANDOMIZE (0x0040000)
  return p === 0xffffffff || (p & ~0x0040000) === 0 ? CONTINUE : fail(E.EPERM);
}

/** Handlers of the misc family. */
export const handlers: HandlerTable = {
  prctl,
  ioctl,
  fcntl,
  personality,
  arch_prctl: pass,
  getdents64: pass,
  getdents: pass,
  flock: pass,
  fallocate: pass,
  copy_file_range: pass,
  sendfile: pass,
  splice: pass,
  tee: pass,
  vmsplice: pass,
  sync_file_range: pass,
  fadvise64: pass,
  readahead: pass,
  syncfs: pass,
  sync: pass,
  eventfd: pass,
  eventfd2: pass,
  inotify_init: pass,
  inotify_init1: pass,
  inotify_rm_watch: pass,
  timer_create: pass,
  timer_settime: pass,
  timer_gettime: pass,
  timer_getoverrun: pass,
  timer_delete: pass,
  timerfd_create: pass,
  timerfd_settime: pass,
  timerfd_gettime: pass,
  alarm: pass,
  setitimer: pass,
  getitimer: pass,
  pause: pass,
  memfd_create: pass,
  epoll_create: pass,
  epoll_create1: pass,
  epoll_pwait2: pass,
  signalfd: pass,
  signalfd4: pass,
  membarrier: pass,
  mlock: pass,
  mlock2: pass,
  munlock: pass,
  mlockall: pass,
  munlockall: pass,
  get_mempolicy: pass,
  set_mempolicy: pass,
  set_mempolicy_home_node: pass,
  pkey_alloc: pass,
  pkey_free: pass,
  pkey_mprotect: pass,
  msgget: pass,
  msgsnd: pass,
  msgrcv: pass,
  msgctl: pass,
  semget: pass,
  semop: pass,
  semtimedop: pass,
  semctl: pass,
  shmget: pass,
  shmat: pass,
  shmdt: pass,
  shmctl: pass,
  mq_open: pass,
  mq_unlink: pass,
  mq_timedsend: pass,
  mq_timedreceive: pass,
  mq_notify: pass,
  mq_getsetattr: pass,
  io_setup: pass,
  io_destroy: pass,
  io_submit: pass,
  io_cancel: pass,
  io_getevents: pass,
  io_pgetevents: pass,
  restart_syscall: pass,
  getcpu: pass,
  mincore: pass,
  clock_getres: pass,
  futex_waitv: pass,
  rt_sigpending: pass,
  madvise: pass,
  msync: pass,
  remap_file_pages: pass,
  getrandom: pass,
  close_range: pass,
  process_madvise: () => fail(E.EPERM),
  getpgid: pass,
  getsid: pass,
  prlimit64: pass,
  mseal: pass,
  // adding a filter only narrows what the caller may do; its own listener serves only itself
  seccomp: pass,
  futex_wake: pass,
  futex_wait: pass,
  futex_requeue: pass,
  getxattrat: () => fail(E.ENOSYS),
  setxattrat: () => fail(E.ENOSYS),
  listxattrat: () => fail(E.ENOSYS),
  removexattrat: () => fail(E.ENOSYS),
};
