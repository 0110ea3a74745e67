/**
 * Resource exhaustion against the limits the spec sets (`linux.resources`, `process.rlimits`, a
 * tmpfs size): a fork bomb and a thread bomb against a pids limit, memory against a memory limit,
 * a size-limited tmpfs filled to the brim, and file descriptors against RLIMIT_NOFILE. Each
 * workload reports how far it got; getting clearly past the configured limit is an escape (the
 * host's resource was used beyond what the container was given). Every bomb is capped by the
 * workload itself (1000 processes or threads, 512 MiB, 64 MiB of tmpfs, 65536 fds) and cleans
 * up after itself, so a runtime that applies no limit cannot hurt the host. Inside a microVM the
 * processes, memory and files are the guest kernel's own: past the limit there, the host still
 * only ran one VMM bounded by its own limits.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { blocked, escaped, excerpt, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';

const MiB = 1024 * 1024;

/** The pids limit of the bombs. */
const PIDS_LIMIT = 64;
/**
 * The memory limit of the memory attempt: 128 MiB, not less, because a microVM's guest gets the
 * limit as its RAM and its kernel does not boot in 96 MiB or less.
 */
const MEMORY_LIMIT_MIB = 128;
/** The size of the tmpfs the fill attempt writes into. */
const TMPFS_MIB = 16;
/** RLIMIT_NOFILE of the fd attempt (Moat's default spec's). */
const NOFILE = 1024;

/** C: prints the kernel's boot id (BOOT=...), to tell a microVM's guest kernel from the host's. */
const BOOT_C = String.raw`
static void print_boot(void) {
  char b[64] = "";
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (f) {
    if (!fgets(b, sizeof b, f)) b[0] = 0;
    fclose(f);
  }
  b[strcspn(b, "\n")] = 0;
  printf("BOOT=%s\n", b);
}
`;

/** The shell's line reporting the kernel's boot id (absent under the sentry, gVisor's own under runsc). */
const BOOT_SH = 'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)';

/** Whether the workload ran on another kernel than the host's (a microVM's guest). */
function inGuest(t: Trial, out: RunOutput): boolean {
  const boot = report(out).get('BOOT') ?? '';
  return boot !== '' && boot !== t.hostBootId;
}

/** Whether the host can still start a process (after a bomb). */
function hostForks(): boolean {
  try {
    execFileSync('true', { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** The host's number of tasks (processes and threads), from /proc/loadavg. */
function hostTasks(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[3]?.split('/')[1] ?? 'NaN');
  } catch {
    return NaN;
  }
}

/** The most host tasks seen above the count before the run, per trial (the bombs' `during`). */
const taskGrowth = new Map<string, number>();

/** Samples the host's task count while the workload runs; records the largest growth. */
async function sampleTasks(t: Trial, running: Promise<RunOutput>): Promise<void> {
  const base = hostTasks();
  let most = 0;
  const timer = setInterval(() => (most = Math.max(most, hostTasks() - base)), 10);
  timer.unref();
  try {
    await running;
  } finally {
    clearInterval(timer);
    taskGrowth.set(t.hostDir, most);
  }
}

/** Host tasks the bombs may add beyond the limit before the growth counts: the runtime's own, other work on the host. */
const HOST_NOISE = 400;

/**
 * A bomb's judge: past the limit in the workload's own count is an escape only if the host's
 * task count grew with it (a sandbox kernel such as gVisor's or a microVM's keeps its tasks to
 * itself).
 */
function judgeBomb(key: string, what: string) {
  return (t: Trial, out: RunOutput): Verdict => {
    const growth = taskGrowth.get(t.hostDir);
    taskGrowth.delete(t.hostDir);
    const v = judgeCount(t, out, key, PIDS_LIMIT, 0, what);
    if (v.outcome !== 'escaped' || growth === undefined || !ranToEnd(out)) return v;
    if (growth > PIDS_LIMIT + HOST_NOISE) return escaped(`${v.detail}; the host gained ${growth} tasks`);
    return blocked(`${report(out).get(key)} ${what} in the sandbox's own kernel, but the host gained only ${growth} tasks`);
  };
}

/**
 * Judges "got to `got` of something limited to `limit`": past `limit + slack` on the host's
 * kernel is an escape; in a microVM's guest kernel it is the guest's own resource.
 */
function judgeCount(t: Trial, out: RunOutput, key: string, limit: number, slack: number, what: string): Verdict {
  if (!hostForks()) return escaped('the host could not start a process after the run');
  if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
  const r = report(out);
  const raw = r.get(key);
  if (raw === undefined || !/^\d+$/.test(raw)) return trialError(`no ${key} in the report: ${excerpt(out)}`);
  const got = Number(raw);
  const err = r.get('ERR') ?? '';
  if (got > limit + slack) {
    if (inGuest(t, out)) return blocked(`${got} ${what} inside the microVM's own kernel (limit ${limit} not applied there; the host ran one bounded VMM)`);
    return escaped(`${got} ${what}, past the limit of ${limit}`);
  }
  return blocked(`stopped at ${got} ${what} (limit ${limit})${err ? `: ${err}` : ''}`);
}

const FORK_BOMB = String.raw`
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
${BOOT_C}
#define CAP 1000
static pid_t kids[CAP];
int main(void) {
  alarm(20);
  print_boot();
  fflush(stdout);
  int n = 0, err = 0;
  while (n < CAP) {
    pid_t p = fork();
    if (p < 0) { err = errno; break; }
    if (p == 0) { alarm(30); for (;;) pause(); }
    kids[n++] = p;
  }
  printf("FORKED=%d\nPROCS=%d\nERR=%s\n", n, n + 1, err ? strerror(err) : "none: reached the script's own cap");
  fflush(stdout);
  usleep(500000); /* held for a moment: the host counts its tasks meanwhile */
  for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
  for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
  pid_t again = fork();
  if (again == 0) _exit(0);
  if (again > 0) waitpid(again, NULL, 0);
  printf("FORK_AFTER=%d\nDONE=1\n", again > 0);
  return 0;
}
`;

const THREAD_BOMB = String.raw`
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
${BOOT_C}
#define CAP 1000
static void *idle(void *arg) { (void)arg; for (;;) pause(); return NULL; }
int main(void) {
  alarm(20);
  print_boot();
  pthread_attr_t a;
  pthread_attr_init(&a);
  pthread_attr_setstacksize(&a, 64 * 1024);
  int n = 0, err = 0;
  while (n < CAP) {
    pthread_t th;
    int rc = pthread_create(&th, &a, idle, NULL);
    if (rc != 0) { err = rc; break; }
    n++;
  }
  printf("THREADS=%d\nTASKS=%d\nERR=%s\nDONE=1\n", n, n + 1, err ? strerror(err) : "none: reached the script's own cap");
  fflush(stdout);
  usleep(500000); /* held for a moment: the host counts its tasks meanwhile */
  _exit(0); /* ends every thread */
}
`;

const MEMORY = String.raw`
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
${BOOT_C}
#define STEP (8 << 20)
int main(void) {
  alarm(20);
  print_boot();
  fflush(stdout);
  int fd[2];
  if (pipe(fd) != 0) { perror("pipe"); return 1; }
  pid_t p = fork();
  if (p < 0) { perror("fork"); return 1; }
  if (p == 0) {
    close(fd[0]);
    for (int mb = 8; mb <= 512; mb += 8) {
      char *b = malloc(STEP);
      if (!b) _exit(3);
      memset(b, 0x5a, STEP);
      if (write(fd[1], &mb, sizeof mb) != sizeof mb) _exit(4);
    }
    _exit(0);
  }
  close(fd[1]);
  int mb, st = 0;
  printf("TOUCHED_MB=0\n");
  fflush(stdout);
  /* each step as it comes: if the whole container is killed, the last line still says how far it got */
  while (read(fd[0], &mb, sizeof mb) == sizeof mb) {
    printf("TOUCHED_MB=%d\n", mb);
    fflush(stdout);
  }
  waitpid(p, &st, 0);
  if (WIFSIGNALED(st)) printf("ERR=the allocating child was killed by signal %d\n", WTERMSIG(st));
  else printf("ERR=the allocating child exited with %d\n", WEXITSTATUS(st));
  printf("DONE=1\n");
  return 0;
}
`;

const FDS = String.raw`
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
${BOOT_C}
int main(void) {
  alarm(20);
  print_boot();
  struct rlimit big = { 1 << 20, 1 << 20 }, now;
  printf("RAISED=%d\n", setrlimit(RLIMIT_NOFILE, &big) == 0);
  getrlimit(RLIMIT_NOFILE, &now);
  printf("SOFT=%llu\nHARD=%llu\n", (unsigned long long)now.rlim_cur, (unsigned long long)now.rlim_max);
  int high = dup2(0, 5000);
  printf("DUP_5000=%d\n", high == 5000);
  if (high == 5000) close(high);
  int n = 0, maxfd = -1, err = 0;
  while (n < 65536) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) { err = errno; break; }
    n++;
    if (fd > maxfd) maxfd = fd;
  }
  printf("OPENED=%d\nFDS=%d\nERR=%s\nDONE=1\n", n, maxfd + 1, err ? strerror(err) : "none: reached the script's own cap");
  return 0;
}
`;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'exhaust-fork-bomb',
    category: 'exhaustion',
    title: `forks until fork fails, against linux.resources.pids.limit = ${PIDS_LIMIT} (capped at 1000 by the bomb itself)`,
    shows: `the container never holds more than ${PIDS_LIMIT} processes, and the host can still fork`,
    c: FORK_BOMB,
    timeoutMs: 40_000,
    setup: (t) => {
      t.spec['linux'].resources = { ...(t.spec['linux'].resources ?? {}), pids: { limit: PIDS_LIMIT } };
    },
    during: sampleTasks,
    judge: judgeBomb('PROCS', 'processes'),
  },
  {
    id: 'exhaust-thread-bomb',
    category: 'exhaustion',
    title: `starts threads until clone fails, against linux.resources.pids.limit = ${PIDS_LIMIT} (capped at 1000)`,
    shows: `threads count against the pids limit: the container never holds more than ${PIDS_LIMIT} tasks`,
    c: THREAD_BOMB,
    timeoutMs: 40_000,
    setup: (t) => {
      t.spec['linux'].resources = { ...(t.spec['linux'].resources ?? {}), pids: { limit: PIDS_LIMIT } };
    },
    during: sampleTasks,
    judge: judgeBomb('TASKS', 'tasks'),
  },
  {
    id: 'exhaust-memory',
    category: 'exhaustion',
    title: `allocates and touches 512 MiB in 8 MiB steps against linux.resources.memory.limit = ${MEMORY_LIMIT_MIB} MiB`,
    shows: `the allocating process (or the whole container) is OOM-killed before it holds much more than ${MEMORY_LIMIT_MIB} MiB`,
    c: MEMORY,
    timeoutMs: 40_000,
    setup: (t) => {
      const bytes = MEMORY_LIMIT_MIB * MiB;
      // swap = memory + swap: no swap beyond the limit either
      t.spec['linux'].resources = { ...(t.spec['linux'].resources ?? {}), memory: { limit: bytes, swap: bytes } };
    },
    judge: (t, out) => {
      const touched = Number(report(out).get('TOUCHED_MB') ?? 'NaN');
      // a runtime may OOM-kill the whole container (gVisor's sandbox is one cgroup): the progress lines still count
      if (!ranToEnd(out) && out.status === 128 + 9 && !out.timedOut && Number.isFinite(touched)) {
        if (touched > MEMORY_LIMIT_MIB + 16 && !inGuest(t, out)) return escaped(`${touched} MiB touched, past the limit of ${MEMORY_LIMIT_MIB}, before the container was killed`);
        return blocked(`the whole container was killed (SIGKILL) at ${touched} MiB touched (limit ${MEMORY_LIMIT_MIB})`);
      }
      return judgeCount(t, out, 'TOUCHED_MB', MEMORY_LIMIT_MIB, 16, 'MiB touched');
    },
  },
  {
    id: 'exhaust-tmpfs-fill',
    category: 'exhaustion',
    title: `remounts a size=${TMPFS_MIB}m tmpfs bigger (no CAP_SYS_ADMIN), then writes into it until ENOSPC`,
    shows: `the tmpfs holds no more than its ${TMPFS_MIB} MiB: the host's memory behind it is bounded`,
    sh: [
      'mount -o remount,size=1g /fill 2>/dev/null && echo REMOUNTED=1',
      'dd if=/dev/zero of=/fill/big bs=1M count=64 2>/dev/null',
      'dd if=/dev/zero of=/fill/tail bs=4k count=16384 2>/dev/null',
      'set -- $(du -sk /fill); echo KB=$1',
      'echo ERR=$(echo x 2>&1 > /fill/one-more)',
      'echo DONE=1',
    ].join('\n'),
    notApplicable: { 'moat-microvm': 'the microVM does not mount the spec\'s tmpfs mounts in the guest (only its own /dev, /dev/shm and /tmp)' },
    setup: (t) => {
      (t.spec['mounts'] as object[]).push({ destination: '/fill', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', `size=${TMPFS_MIB}m`] });
    },
    judge: (t, out) => {
      if (ranToEnd(out) && !/^\d+$/.test(report(out).get('KB') ?? '')) return trialError(`no KB in the report: ${excerpt(out)}`);
      if (ranToEnd(out) && Number(report(out).get('KB')) < 1024) return trialError(`the tmpfs took less than 1 MiB: ${excerpt(out)}`);
      return judgeCount(t, out, 'KB', TMPFS_MIB * 1024, 0, 'KiB in the tmpfs');
    },
  },
  {
    id: 'exhaust-overlay-fill',
    category: 'exhaustion',
    title: 'fills its root filesystem and every writable mount of the default config (/, /tmp, /dev, /dev/shm, /run) with up to 256 MiB each',
    shows: 'the root is read-only (no copy-on-write layer to fill on the host) and each writable tmpfs stops at its size',
    sh: [
      BOOT_SH,
      'total=0',
      'for d in / /tmp /dev /dev/shm /run; do',
      '  f=$d/.moat-fill; dd if=/dev/zero of=$f bs=1M count=256 2>/dev/null',
      '  set -- $(du -sk $f 2>/dev/null || echo 0); total=$((total + $1)); echo "KB_$(echo $d | tr / _)=$1"; rm -f $f',
      'done',
      'echo KB=$total',
      'echo DONE=1',
    ].join('\n'),
    judge: (t, out) => {
      // the default config's writable tmpfs mounts: /dev and /dev/shm at 64 MiB each; nothing else
      return judgeCount(t, out, 'KB', 2 * 64 * 1024, 1024, 'KiB written in all');
    },
  },
  {
    id: 'exhaust-fds',
    category: 'exhaustion',
    title: `raises RLIMIT_NOFILE (no CAP_SYS_RESOURCE), dup2s to fd 5000, then opens /dev/null until EMFILE against a limit of ${NOFILE}`,
    shows: `the process cannot hold more than ${NOFILE} descriptors`,
    c: FDS,
    setup: (t) => {
      t.spec['process'].rlimits = [{ type: 'RLIMIT_NOFILE', hard: NOFILE, soft: NOFILE }];
    },
    judge: (t, out) => {
      if (ranToEnd(out) && report(out).get('DUP_5000') === '1' && !inGuest(t, out)) return escaped('dup2 to fd 5000 succeeded past RLIMIT_NOFILE');
      return judgeCount(t, out, 'FDS', NOFILE, 0, 'descriptors');
    },
  },
];
