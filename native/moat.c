/*
 * moat: the `moat` command's native front end. Moat's command line is TypeScript (bin/moat.cjs),
 * and Node.js needs ~22 ms to start on this class of machine, Moat's bundle ~25 ms more, before
 * a command does anything (runc's whole `run` of /bin/true takes ~27 ms). This front end hands
 * the command to a warm standby CLI process of the same context (src/cli/standby.ts: Node
 * booted, the bundle loaded and warmed up, waiting on a socket) and relays its exit status. With
 * no standby, or one that passes, it executes bin/moat.cjs with argv unchanged. It starts the
 * next standby in the background (at idle priority as root) when one of the context's two slots
 * is free: after a command a standby ran, or a command that ran cold within a minute of another
 * of the same context.
 *
 * A standby is asked only when MOAT_CLI_STANDBY is not "0", none of fds 0-2 is a terminal (job
 * control and the controlling terminal belong to the caller's session, which a standby is not
 * in) and this process has no seccomp filter. The standby decides which commands it takes (a
 * foreground run, state, list, ps, kill, start, delete, features); the others pass.
 *
 * Context, what a process the caller starts inherits, and what both sides compare (each reads
 * the other's from /proc; a standby of another context is never used): uids, gids and groups,
 * capability sets, no_new_privs, seccomp, CPU and memory affinity, namespaces, root directory,
 * cgroups, rlimits (the soft open-files limit aside: Node raises it to the hard one in every Moat
 * process), LSM label, audit login uid and session, OOM score adjustment, nice value,
 * personality, and the environment that shapes a process from its start (NODE_*, UV_*, LD_*,
 * GLIBC_*, MALLOC_*). The installation (dev, ino and mtime of bin/moat.cjs and of the bundle
 * dist/moat.cjs) and the context make the key, the FNV-1a 64 hash that names the standbys' files
 * DIR/KEY-N.sock and DIR/KEY-N.lock (N: one of two slots; DIR/KEY.mark dates the context's last
 * call; DIR/KEY.adopted says a subreaper among its callers' ancestors would adopt a standby, so
 * it gets none); DIR is /run/moat-cli for root, $XDG_RUNTIME_DIR/moat-cli otherwise, a 0700 directory of
 * the user (MOAT_CLI_STANDBY_DIR overrides it, same rules).
 *
 * Protocol on DIR/KEY-N.sock (unix stream):
 *   front end -> "MOATCLI", u8 version (1), then records u8 tag, u32 length (little-endian),
 *                bytes: 1 argument (argv[1..], in order), 2 environment entry "K=V", 0 end
 *                (length 0). At most 1 MiB in all.
 *   standby   -> "pass REASON\n" (not taken: the front end runs the command itself), or
 *                "claim PID\n" (it will run the command as process PID)
 *   front end -> "go\n" once it has checked PID's context: from here on the command runs in
 *                the standby only. The standby copies fds 0-2 from the front end (pidfd_getfd
 *                on SO_PEERPIDFD) and takes its working directory and umask from /proc.
 *   standby   -> "exit CODE\n" when the command ends, or "pass REASON\n" when it could not take
 *                the caller's place after all (before anything of the command ran)
 * Signals the front end gets (INT TERM HUP QUIT USR1 USR2 WINCH) go to the standby, as `moat run`
 * forwards them to the container; a standby that ends without "exit" makes the front end die of
 * the last signal it forwarded, or exit 1.
 *
 * Build line (scripts/build.mjs runs it during `npm ci`):
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -fno-strict-aliasing -static \
 *      -o dist/moat native/moat.c
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher.h"

extern char **environ;

#define ENTRY "bin/moat.cjs" /* relative to the installation (../ of dist/) */
#define MAX_REQUEST (1 << 20)
#define MAX_CONTEXT (1 << 16)
#define MAX_REPLY 256
#define REPLY_TIMEOUT_MS 2000
#define DEMAND_S 60 /* a second call within this many seconds makes a context worth a standby */
#define SLOTS 2     /* standbys kept per context */

enum { T_END = 0, T_ARG = 1, T_ENV = 2 };

static char entry[PATH_MAX];
static volatile sig_atomic_t standby_pid, last_signal;
static int tracing;         /* MOAT_TRACE=1: timing lines on stderr, as the TypeScript side prints */
static struct timespec t0;  /* this process's start (CLOCK_REALTIME) */

/* A `moat-trace:` line: milliseconds since this process started and the origin (ms since the epoch). */
static void trace(const char *label) {
  if (!tracing) return;
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  double ms = (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
  dprintf(2, "moat-trace: %.2f ms front end: %s (since process start; origin %lld)\n", ms, label,
          (long long)t0.tv_sec * 1000 + t0.tv_nsec / 1000000);
}




/* Reads a whole (small) file into `out` (emptied first); -1 when it cannot be read. */
static int slurp(const char *path, struct buf *out) {
  out->n = 0;
  out->over = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char chunk[4096];
  for (;;) {
    ssize_t r = read(fd, chunk, sizeof chunk);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      close(fd);
      return -1;
    }
    if (r == 0) break;
    append(out, chunk, (size_t)r);
  }
  close(fd);
  append(out, "", 0); /* NUL-terminated even when empty */
  return out->over ? -1 : 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Appends the sorted entries of `env` that shape a process from its start (Node's, libuv's, the loader's, glibc's). */
static void context_env(struct buf *c, char **env, size_t count) {
  char **sel = calloc(count + 1, sizeof *sel);
  size_t k = 0;
  if (!sel) {
    c->over = 1;
    return;
  }
  for (size_t i = 0; i < count; i++)
    if (strncmp(env[i], "NODE_", 5) == 0 || strncmp(env[i], "UV_", 3) == 0 || strncmp(env[i], "LD_", 3) == 0 ||
        strncmp(env[i], "GLIBC_", 6) == 0 || strncmp(env[i], "MALLOC_", 7) == 0)
      sel[k++] = env[i];
  qsort(sel, k, sizeof *sel, cmp_str);
  for (size_t i = 0; i < k; i++) {
    appends(c, "env ");
    appends(c, sel[i]);
    appends(c, "\n");
  }
  free(sel);
}

/*
 * The context of process `pid` (0: this one) as text, into `c`; -1 when part of it cannot be
 * read (then no standby is used). The same facts as cliContext() in src/cli/standby.ts, though
 * not the same text: each side only compares texts it made itself.
 */
static int context(pid_t pid, struct buf *c) {
  static const char *status_keys[] = {"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                      "NoNewPrivs", "Seccomp", "Cpus_allowed_list", "Mems_allowed_list"};
  static const char *ns_names[] = {"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"};
  char base[64], path[128], link[256];
  struct buf f = {.max = MAX_CONTEXT};
  int ok = 0;
  if (pid) snprintf(base, sizeof base, "/proc/%d", (int)pid);
  else snprintf(base, sizeof base, "/proc/self");
  c->n = 0;
  appends(c, "moat-cli-context 1\n");
  snprintf(path, sizeof path, "%s/status", base);
  if (slurp(path, &f) < 0) goto out;
  for (char *line = f.p; line && *line;) {
    char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    for (size_t i = 0; i < sizeof status_keys / sizeof *status_keys; i++) {
      size_t kl = strlen(status_keys[i]);
      if (len > kl && strncmp(line, status_keys[i], kl) == 0 && line[kl] == ':') {
        append(c, line, len);
        appends(c, "\n");
      }
    }
    line = nl ? nl + 1 : NULL;
  }
  for (size_t i = 0; i < sizeof ns_names / sizeof *ns_names; i++) {
    snprintf(path, sizeof path, "%s/ns/%s", base, ns_names[i]);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0 && errno != ENOENT) goto out;
    link[n < 0 ? 0 : n] = 0;
    appends(c, "ns ");
    appends(c, ns_names[i]);
    appends(c, " ");
    appends(c, n < 0 ? "-" : link);
    appends(c, "\n");
  }
  struct stat st;
  snprintf(path, sizeof path, "%s/root", base);
  if (stat(path, &st) < 0) goto out;
  snprintf(link, sizeof link, "root %llu %llu\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  appends(c, link);
  snprintf(path, sizeof path, "%s/cgroup", base);
  if (slurp(path, &f) < 0) goto out;
  for (char *line = f.p; line && *line;) {
    char *nl = strchr(line, '\n');
    appends(c, "cgroup ");
    append(c, line, nl ? (size_t)(nl - line) : strlen(line));
    appends(c, "\n");
    line = nl ? nl + 1 : NULL;
  }
  snprintf(path, sizeof path, "%s/limits", base);
  if (slurp(path, &f) < 0) goto out;
  {
    char *line = strchr(f.p, '\n'); /* the header line goes */
    while (line && *++line) {
      char *nl = strchr(line, '\n');
      if (nl) *nl = 0;
      /* whitespace runs folded to one space: "Max open files 1024 1048576 files" */
      char folded[256];
      size_t k = 0;
      for (char *s = line; *s && k < sizeof folded - 1; s++) {
        if (*s == ' ' || *s == '\t') {
          if (k > 0 && folded[k - 1] != ' ') folded[k++] = ' ';
        } else {
          folded[k++] = *s;
        }
      }
      while (k > 0 && folded[k - 1] == ' ') k--;
      folded[k] = 0;
      appends(c, "limit ");
      static const char nofile[] = "Max open files ";
      if (strncmp(folded, nofile, sizeof nofile - 1) == 0) {
        char *soft_end = strchr(folded + sizeof nofile - 1, ' ');
        appends(c, nofile);
        appends(c, "-");
        appends(c, soft_end ? soft_end : "");
      } else {
        appends(c, folded);
      }
      appends(c, "\n");
      line = nl;
    }
  }
  /* one-line files, trailing blanks dropped; "-" when absent (no LSM, no audit) */
  static const char *const words[][2] = {{"lsm", "attr/current"}, {"loginuid", "loginuid"}, {"sessionid", "sessionid"},
                                         {"oom_score_adj", "oom_score_adj"}, {"personality", "personality"}};
  for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
    snprintf(path, sizeof path, "%s/%s", base, words[i][1]);
    appends(c, words[i][0]);
    appends(c, " ");
    if (slurp(path, &f) == 0) {
      size_t n = strlen(f.p);
      while (n > 0 && (f.p[n - 1] == '\n' || f.p[n - 1] == ' ')) n--;
      append(c, f.p, n);
    } else {
      appends(c, "-");
    }
    appends(c, "\n");
  }
  /* the nice value: field 19 of stat, the 17th after the command's closing parenthesis */
  snprintf(path, sizeof path, "%s/stat", base);
  if (slurp(path, &f) < 0) goto out;
  {
    char *p = strrchr(f.p, ')');
    if (!p) goto out;
    p++;
    for (int field = 3; field < 19 && p; field++) p = strchr(p + 1, ' '); /* to the space before field 19 */
    if (!p) goto out;
    long nice = strtol(p + 1, NULL, 10);
    snprintf(link, sizeof link, "nice %ld\n", nice);
    appends(c, link);
  }
  if (pid) {
    snprintf(path, sizeof path, "%s/environ", base);
    if (slurp(path, &f) < 0) goto out;
    size_t count = 0;
    for (size_t i = 0; i < f.n; i += strlen(f.p + i) + 1) count++;
    char **env = calloc(count + 1, sizeof *env);
    if (!env) goto out;
    size_t k = 0;
    for (size_t i = 0; i < f.n && k < count; i += strlen(f.p + i) + 1) env[k++] = f.p + i;
    context_env(c, env, k);
    free(env);
  } else {
    size_t count = 0;
    while (environ[count]) count++;
    context_env(c, environ, count);
  }
  ok = !c->over;
out:
  free(f.p);
  return ok ? 0 : -1;
}

/* The installation's entry point (bin/moat.cjs). */
static int find_entry(void) { return installation_path(entry, sizeof entry, ENTRY); }

/* The standby directory of this user (made 0700 if missing); -1 when there is none to trust. */
static int standby_dir(char *dir, size_t size) {
  const char *over = getenv("MOAT_CLI_STANDBY_DIR");
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  int n;
  if (over && *over == '/') n = snprintf(dir, size, "%s", over);
  else if (geteuid() == 0) n = snprintf(dir, size, "/run/moat-cli");
  else if (xdg && *xdg == '/') n = snprintf(dir, size, "%s/moat-cli", xdg);
  else return -1;
  if (n < 0 || (size_t)n >= size - 32) return -1;
  if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -1;
  struct stat st;
  if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) return -1;
  return 0;
}

/* FNV-1a, 64 bits. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ULL;
  return h;
}

/*
 * Whether a context is worth a standby: always after a command a standby ran (`proven`); after
 * a cold one only when the context's mark (DIR/KEY.mark, its mtime) shows another call in the
 * last DEMAND_S seconds, so that a context that calls once (conmon starting one container, say)
 * gets no standby to keep for nothing. Every call renews the mark.
 */
static int wanted(const char *dir, const char *key, int proven) {
  char mark[PATH_MAX];
  struct stat st;
  snprintf(mark, sizeof mark, "%s/%s.adopted", dir, key);
  if (lstat(mark, &st) == 0) return 0; /* a subreaper would keep the standby: see spawn_standby */
  snprintf(mark, sizeof mark, "%s/%s.mark", dir, key);
  int fd = open(mark, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd >= 0) {
    close(fd); /* the first call of this context */
    return proven;
  }
  fd = open(mark, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int recent = fstat(fd, &st) == 0 && now.tv_sec - st.st_mtim.tv_sec < DEMAND_S;
  futimens(fd, NULL);
  close(fd);
  return recent || proven;
}

/*
 * Starts a standby in the first of the context's SLOTS whose lock nobody holds (DIR/KEY-N.lock),
 * in the background; none when every slot's standby boots or waits. The lock is taken here and
 * handed to the standby (an inherited descriptor), so two front ends never boot two in one
 * slot. Two slots: commands in quick succession (a shim's create, start, state, delete) find a
 * standby while the one started by the previous command still boots. Double fork and setsid:
 * the standby is nobody's child here and in no terminal's session.
 */
static void spawn_standby(const char *dir, const char *key) {
  char lock[PATH_MAX], slot[32], fdarg[16];
  int fd = -1;
  for (int n = 0; n < SLOTS && fd < 0; n++) {
    snprintf(slot, sizeof slot, "%s-%d", key, n);
    snprintf(lock, sizeof lock, "%s/%s.lock", dir, slot);
    fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW, 0600); /* no O_CLOEXEC: the standby inherits it */
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
      close(fd); /* booting or waiting already */
      fd = -1;
    }
  }
  if (fd < 0) return;
  pid_t child = fork();
  if (child == 0) {
    setsid();
    pid_t middle = getpid();
    if (fork() != 0) _exit(0);
    /* once the middle process is gone this one is reparented: to pid 1 (of its pid namespace),
       or to a subreaper among the caller's ancestors (containerd's shim, conmon) that would
       wait for it or be kept alive by it. Then no standby for this context: mark it and go */
    while (getppid() == middle) usleep(50);
    if (getppid() != 1) {
      char adopted[PATH_MAX];
      snprintf(adopted, sizeof adopted, "%s/%s.adopted", dir, key);
      close(open(adopted, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
      _exit(0);
    }
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 || chdir("/") < 0) _exit(1);
    /* as root, boot at idle priority: the standby's boot (~80 ms of CPU) then takes no time from
       the command that started it; the standby turns every thread back to normal before it
       serves (an unprivileged process could not) */
    struct sched_param none_param = {0};
    if (geteuid() == 0) sched_setscheduler(0, SCHED_IDLE, &none_param);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    snprintf(fdarg, sizeof fdarg, "%d", fd);
    char *argv[] = {entry, "--cli-standby", (char *)dir, slot, fdarg, NULL};
    execv(entry, argv);
    _exit(127);
  }
  close(fd);
  if (child > 0) waitpid(child, NULL, 0);
}

/* Runs the command in Node, here; returns only on failure. */
static int exec_cold(char **argv) {
  trace("runs the command itself (cold)");
  argv[0] = entry;
  execv(entry, argv);
  dprintf(2, "moat: %s: %s\n", entry, strerror(errno));
  return 127;
}

/* Reads one reply line (NUL-terminated, newline dropped) within `timeout_ms` (-1: no limit); its length or -1. */
static int read_line(int s, char *line, size_t size, int timeout_ms, size_t *have) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    char *nl = memchr(line, '\n', *have);
    if (nl) {
      *nl = 0;
      int len = (int)(nl - line);
      return len;
    }
    if (*have >= size - 1) return -1;
    int left = -1;
    if (timeout_ms >= 0) {
      clock_gettime(CLOCK_MONOTONIC, &now);
      long spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
      if (spent >= timeout_ms) return -1;
      left = (int)(timeout_ms - spent);
    }
    struct pollfd p = {.fd = s, .events = POLLIN};
    int r = poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t got = read(s, line + *have, size - 1 - *have);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    *have += (size_t)got;
  }
}

/* The signals the front end passes on to the standby (as `moat run` passes them to the container). */
static const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};

/* The forwarded signals back to their default action (before running the command here). */
static void signal_defaults(void) {
  for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) signal(forwarded[i], SIG_DFL);
  standby_pid = 0;
}

static void forward(int sig) {
  last_signal = sig;
  if (standby_pid > 0) kill(standby_pid, sig);
}

/*
 * Hands the command to the standby at `sock`: 0 once it runs there (*conn: the connection to
 * wait on), -1 when there is none there to take it (another slot may have one), -2 when the
 * standby will not take this command (no other will: nothing was done, run it here), 1 when it
 * may have started but the standby was lost. `self` is this process's context.
 */
static int through_standby(const char *sock, const struct buf *self, int argc, char **argv, int *conn) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(sock) >= sizeof sa.sun_path) return -1;
  strcpy(sa.sun_path, sock);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  /* a standby that stopped accepting (its backlog full) must not hold the caller: connect and
     sends give up after the reply timeout */
  struct timeval tv = {.tv_sec = REPLY_TIMEOUT_MS / 1000, .tv_usec = (REPLY_TIMEOUT_MS % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(s);
    return -1;
  }
  struct buf req = {.max = MAX_REQUEST};
  static const char magic[] = {'M', 'O', 'A', 'T', 'C', 'L', 'I', 1};
  append(&req, magic, sizeof magic);
  for (int i = 1; i < argc; i++) record(&req, T_ARG, argv[i], strlen(argv[i]));
  for (char **e = environ; *e; e++) record(&req, T_ENV, *e, strlen(*e));
  record(&req, T_END, "", 0);
  char line[MAX_REPLY];
  size_t have = 0;
  int n = -1;
  trace("connected");
  if (!req.over && write_all(s, req.p, req.n) == 0) n = read_line(s, line, sizeof line, REPLY_TIMEOUT_MS, &have);
  free(req.p);
  if (n < 0 || strncmp(line, "claim ", 6) != 0) {
    close(s); /* "pass", silence or garbage: nothing ran */
    return n >= 0 && strncmp(line, "pass ", 5) == 0 && strncmp(line, "pass taken", 10) != 0 ? -2 : -1;
  }
  trace("claimed");
  char *end;
  long pid = strtol(line + 6, &end, 10);
  struct ucred cred;
  socklen_t cl = sizeof cred;
  struct buf theirs = {.max = MAX_CONTEXT};
  /* the standby must be what it says, and of this very context: else it gets nothing */
  if (end == line + 6 || *end || pid <= 0 || getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.pid != pid ||
      cred.uid != geteuid() || context((pid_t)pid, &theirs) < 0 || theirs.n != self->n || memcmp(theirs.p, self->p, self->n) != 0) {
    free(theirs.p);
    close(s);
    return -1;
  }
  free(theirs.p);
  /* the standby copies fds 0-2 from this process with pidfd_getfd, a ptrace access check: under
     Yama's ptrace_scope 1 an unprivileged process must name the one allowed (the standby is not
     its ancestor) */
  if (geteuid() != 0) prctl(PR_SET_PTRACER, (unsigned long)pid, 0, 0, 0);
  standby_pid = (sig_atomic_t)pid;
  struct sigaction act = {.sa_handler = forward};
  sigemptyset(&act.sa_mask);
  for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaction(forwarded[i], &act, NULL);
  trace("standby checked, go");
  if (write_all(s, "go\n", 3) < 0) {
    /* it may have started: never run the command twice */
    dprintf(2, "moat: lost the standby process %ld before the command started\n", pid);
    return 1;
  }
  *conn = s; /* the caller waits for the exit line (after starting the next standby) */
  return 0;
}

/*
 * Waits on `s` for the standby's "exit CODE" and returns CODE (or dies of the forwarded signal);
 * -1 when the standby could not take the caller's place after all ("pass": nothing ran).
 */
static int await_exit(int s) {
  char line[MAX_REPLY];
  size_t have = 0;
  int n = read_line(s, line, sizeof line, -1, &have);
  trace("exit status received");
  if (n >= 5 && strncmp(line, "pass ", 5) == 0) return -1;
  if (n > 5 && strncmp(line, "exit ", 5) == 0) {
    char *end;
    long code = strtol(line + 5, &end, 10);
    if (!*end && code >= 0 && code <= 255) return (int)code;
  }
  if (last_signal) {
    signal(last_signal, SIG_DFL);
    raise(last_signal);
  }
  dprintf(2, "moat: the standby process %d ended without an exit status\n", (int)standby_pid);
  return 1;
}

int main(int argc, char **argv) {
  clock_gettime(CLOCK_REALTIME, &t0);
  const char *tr = getenv("MOAT_TRACE");
  tracing = tr && strcmp(tr, "1") == 0;
  if (argc < 1) return 2;
  if (find_entry() < 0) {
    dprintf(2, "moat: cannot locate " ENTRY " from /proc/self/exe\n");
    return 1;
  }
  const char *off = getenv("MOAT_CLI_STANDBY");
  /* internal modes (a sentry, a VM monitor, a standby) and a bare `moat` go straight to Node */
  if ((off && strcmp(off, "0") == 0) || argc < 2 || strncmp(argv[1], "--sentry", 8) == 0 || strcmp(argv[1], "--vm-monitor") == 0 ||
      strcmp(argv[1], "--cli-standby") == 0)
    return exec_cold(argv);
  for (int fd = 0; fd <= 2; fd++)
    if (isatty(fd)) return exec_cold(argv);
  struct buf self = {.max = MAX_CONTEXT};
  char dir[PATH_MAX - 64], sock[PATH_MAX], key[17];
  struct stat st;
  if (context(0, &self) < 0 || strstr(self.p, "\nSeccomp:\t0\n") == NULL || standby_dir(dir, sizeof dir) < 0 || stat(entry, &st) < 0)
    return exec_cold(argv);
  /* the installation: its entry point and the bundle it loads (a rebuild makes a new key) */
  char inst[192], bundle[PATH_MAX];
  struct stat bst;
  if (installation_path(bundle, sizeof bundle, "dist/moat.cjs") < 0 || stat(bundle, &bst) < 0) return exec_cold(argv);
  snprintf(inst, sizeof inst, "%llu %llu %lld.%09ld %llu %llu %lld.%09ld\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (unsigned long long)bst.st_dev, (unsigned long long)bst.st_ino,
           (long long)bst.st_mtim.tv_sec, bst.st_mtim.tv_nsec);
  uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ULL, inst, strlen(inst)), self.p, self.n);
  snprintf(key, sizeof key, "%016llx", (unsigned long long)h);
  trace("context read");
  int conn = -1, r = -1;
  for (int n = 0; n < SLOTS && r == -1; n++) {
    snprintf(sock, sizeof sock, "%s/%s-%d.sock", dir, key, n);
    r = through_standby(sock, &self, argc, argv, &conn);
  }
  free(self.p);
  /* the next standby boots (at idle priority) while this command runs */
  if (wanted(dir, key, r == 0)) spawn_standby(dir, key);
  if (r < 0) return exec_cold(argv);
  if (r > 0) return r;
  int code = await_exit(conn);
  if (code < 0) {
    close(conn);
    signal_defaults();
    return exec_cold(argv);
  }
  return code;
}
