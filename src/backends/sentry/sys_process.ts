/**
 * The process family: fork, clone, wait, signals, identity. The workload's processes are real
 * host processes inside the sandbox's pid namespace, so the kernel does the work; the sentry
 * checks the value arguments (never a pointer) and lets the call continue. The pid namespace
 * bounds every pid argument: a signal or a wait can only reach the sandbox's own processes.
 * One exception: a kill that ends a child of the caller, which the sentry sends and waits out
 * (see `kill`).
 */
import * as k from '../../sys/kernel.js';
import { E } from '../../sys/kernel.js';
import { asSentry } from './ident.js';
import { readProcFile, statusIds, statusMask } from './task.js';
import { CONTINUE, fail, ok } from './types.js';
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

/** Signals whose default action ends the process (terminate or dump core): all but the stop, continue and ignored ones. */
function fatalByDefault(sig: number): boolean {
  if (sig < 1 || sig > 64) return false;
  return !(sig >= 17 && sig <= 23) && sig !== 28; // CHLD CONT STOP TSTP TTIN TTOU URG, WINCH
}

/** How long (ms) a kill's answer waits for the child to be gone before it is given anyway. */
const KILL_WAIT_MS = 200;
const CAP_KILL = 5n;

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

/** Per caller (host tgid): its children's sandbox pids to host pids, as last seen (checked on use). */
const childPids = new Map<number, Map<number, number>>();

/**
 * The caller's child whose pid in the sandbox is `pid`, with its /proc status; null if it has
 * none (a child of another of its threads counts as none). The children it has seen before are
 * not read again, so killing each of many children reads each one's status about once.
 */
function childOf(t: Task, pid: number): { host: number; status: string } | null {
  const tgid = t.tgid;
  let known = childPids.get(tgid);
  if (!known) {
    if (childPids.size >= 256) childPids.clear();
    known = new Map();
    childPids.set(tgid, known);
  }
  const check = (host: number): { host: number; status: string } | null => {
    const status = readProcFile(`/proc/${host}/status`);
    const ns = statusIds(status, 'NSpid');
    const nsPid = ns[ns.length - 1];
    if (nsPid === undefined || statusIds(status, 'PPid')[0] !== tgid) return null;
    known.set(nsPid, host);
    return nsPid === pid ? { host, status } : null;
  };
  const cached = known.get(pid);
  if (cached !== undefined) {
    const hit = check(cached);
    if (hit) return hit;
    known.delete(pid);
  }
  const seen = new Set(known.values());
  const list = `${readProcFile(`/proc/${tgid}/task/${t.tid}/children`)} ${tgid === t.tid ? '' : readProcFile(`/proc/${tgid}/task/${tgid}/children`)}`;
  for (const word of list.split(' ')) {
    const host = Number(word);
    if (word === '' || !Number.isSafeInteger(host) || host <= 0 || seen.has(host)) continue;
    const hit = check(host);
    if (hit) return hit;
  }
  return null;
}

/**
 * kill(pid, sig) of one of the caller's children with a signal that ends it: the sentry sends
 * the signal itself and answers once the child is gone (or after KILL_WAIT_MS), so the child's
 * SIGCHLD reaches the caller while it still waits in this call, which a signal cannot cut short
 * once the sentry has received it. Let the kernel run the kill instead and the SIGCHLD comes
 * just after, often while the caller's next served call waits for the sentry to receive it;
 * a handler without SA_RESTART then makes that call fail with EINTR (dash's `kill $a $b $c` of
 * children just started printed "Interrupted system call" for most of them). Natively the
 * child may well be gone before kill(2) returns too. Every other kill continues.
 */
function kill(t: Task, sb: Sandbox): Reply {
  const pid = t.int(0);
  const sig = t.int(1);
  if (pid <= 0 || !fatalByDefault(sig)) return CONTINUE;
  const child = childOf(t, pid);
  if (!child) return CONTINUE;
  const st = child.status;
  const state = /\nState:\s*(\S)/.exec(st)?.[1] ?? 'X';
  if ('TtZX'.includes(state)) return CONTINUE; // stopped: the signal waits for a SIGCONT; dead already
  const bit = 1n << BigInt(sig - 1);
  if (sig !== 9 && ((statusMask(st, 'SigBlk') | statusMask(st, 'SigIgn') | statusMask(st, 'SigCgt')) & bit) !== 0n) return CONTINUE;
  // the kernel's permission check for the caller (same user namespace): a real or effective uid
  // that is the target's real or saved uid, or CAP_KILL; otherwise it refuses the kill itself
  const me = readProcFile(`/proc/${t.tid}/status`);
  const [ruid, euid] = statusIds(me, 'Uid');
  const [truid, , tsuid] = statusIds(st, 'Uid');
  const allowed = ((statusMask(me, 'CapEff') >> CAP_KILL) & 1n) === 1n || [ruid, euid].some((u) => u === truid || u === tsuid);
  if (!allowed) return CONTINUE;
  const pidfd = asSentry(sb, () => k.pidfdOpen(child.host, 0));
  if (pidfd < 0) return CONTINUE;
  // the pidfd names one process for good: still the caller's child of that pid, and the call still pending?
  const again = childOf(t, pid);
  if (again?.host !== child.host || !t.valid()) {
    k.close(pidfd);
    return CONTINUE;
  }
  const rc = asSentry(sb, () => k.pidfdSendSignal(pidfd, sig));
  if (rc < 0) {
    k.close(pidfd);
    return CONTINUE; // not sent (the sentry may lack the right to): the kernel does it as the caller
  }
  return { kind: 'await', fd: pidfd, timeoutMs: KILL_WAIT_MS, then: () => ok(0) };
}

/** Handlers of the process family. */
export const handlers: HandlerTable = {
  fork: pass,
  vfork: pass,
  clone,
  clone3,
  wait4: pass,
  waitid: pass,
  kill,
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
