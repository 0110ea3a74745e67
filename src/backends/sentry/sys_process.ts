/**
 * The process family: fork, clone, wait, signals, identity. The workload's processes are real
 * host processes inside the sandbox's pid namespace, so the kernel does the work; the sentry
 * checks the value arguments (never a pointer) and lets the call continue. The pid namespace
 * bounds every pid argument: a signal or a wait can only reach the sandbox's own processes.
 */
import { E } from '../../sys/kernel.js';
import { CONTINUE, fail } from './types.js';
import type { HandlerTable, Reply, Sandbox, Task } from './types.js';

/** clone(2) flags that create namespaces (or otherwise leave the sandbox's view). */
const NAMESPACE_FLAGS =
  0x00020000 /* NEWNS */ | 0x02000000 /* NEWCGROUP */ | 0x04000000 /* NEWUTS */ | 0x08000000 /* NEWIPC */ |
  0x10000000 /* NEWUSER */ | 0x20000000 /* NEWPID */ | 0x40000000 /* NEWNET */ | 0x00000080 /* NEWTIME */;
/** CLONE_PIDFD and CLONE_PARENT_SETTID write through pointers: harmless, the workload's own memory. */
const CLONE_UNTRACED = 0x00800000;
const CLONE_PTRACE = 0x00002000;

/** clone(flags, ...): a new process or thread without new namespaces or tracing. */
function clone(t: Task): Reply {
  const flags = Number(t.notif.args[0] & 0xffffffffn);
  if (flags & NAMESPACE_FLAGS) return fail(E.EPERM);
  if (flags & (CLONE_PTRACE | CLONE_UNTRACED)) return fail(E.EPERM);
  return CONTINUE;
}

/**
 * clone3 takes its flags through a pointer the kernel reads after the sentry would: checking
 * them would be a time-of-check/time-of-use race, so clone3 answers ENOSYS and libc falls
 * back to clone(2), whose flags are a register value.
 */
function clone3(): Reply {
  return fail(E.ENOSYS);
}

const pass = (): Reply => CONTINUE;

/** sched_setscheduler(pid, policy, param): no real-time policy (FIFO 1, RR 2, DEADLINE 6). */
function schedSetscheduler(t: Task): Reply {
  const policy = t.int(1) & ~0x40000000; // SCHED_RESET_ON_FORK
  return policy === 1 || policy === 2 || policy === 6 ? fail(E.EPERM) : CONTINUE;
}

/** sched_setattr: may change a thread's class, which fd hand-overs look at before pinning it (pin.ts). */
function schedSetattr(_t: Task, sb: Sandbox): Reply {
  sb.pinning?.policyChanged();
  return CONTINUE;
}

/** sched_setaffinity: the workload manages affinity, so the sentry stops pinning hand-overs (pin.ts). */
function schedSetaffinity(_t: Task, sb: Sandbox): Reply {
  sb.pinning?.stop();
  return CONTINUE;
}

/** sched_getaffinity of another thread could see one mid hand-over: the sentry stops pinning them (pin.ts). */
function schedGetaffinity(t: Task, sb: Sandbox): Reply {
  if (t.int(0) !== 0) sb.pinning?.stop();
  return CONTINUE;
}

/** Handlers of the process family. */
export const handlers: HandlerTable = {
  fork: pass,
  vfork: pass,
  clone,
  clone3,
  wait4: pass,
  waitid: pass,
  kill: pass,
  tkill: pass,
  tgkill: pass,
  rt_sigqueueinfo: pass,
  rt_tgsigqueueinfo: pass,
  pidfd_open: pass,
  pidfd_send_signal: pass,
  pidfd_getfd: () => fail(E.EPERM),
  setpgid: pass,
  setsid: pass,
  umask: pass,
  getpgid: pass,
  getsid: pass,
  getpriority: pass,
  setpriority: pass,
  sched_setaffinity: schedSetaffinity,
  sched_getaffinity: schedGetaffinity,
  ioprio_set: pass,
  ioprio_get: pass,
  get_robust_list: pass,
  sched_setparam: pass,
  sched_getparam: pass,
  sched_setscheduler: schedSetscheduler,
  sched_getscheduler: pass,
  sched_get_priority_max: pass,
  sched_get_priority_min: pass,
  sched_rr_get_interval: pass,
  sched_setattr: schedSetattr,
  sched_getattr: pass,
  setuid: pass,
  setgid: pass,
  setreuid: pass,
  setregid: pass,
  setresuid: pass,
  setresgid: pass,
  setgroups: pass,
  setfsuid: pass,
  setfsgid: pass,
  capget: pass,
  capset: pass,
  prlimit64: pass,
  setrlimit: pass,
  getrlimit: pass,
  getrusage: pass,
};
