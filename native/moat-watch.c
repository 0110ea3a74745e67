/*
 * moat-watch: fails a detached sentry container closed when its sentry dies first. Without its
 * sentry, every served call of the workload fails with ENOSYS while its fast-path code runs on;
 * a container created in the foreground has a waiter that notices (src/backends/sentry/index.ts
 * failClosed), a detached one (`run -d`, `create` under conmon) has this process instead: one
 * per sandbox, so it is C and small (no Node: ~40 MB of RSS for a poll(2)).
 *
 * Build line (scripts/build.mjs runs it during `npm ci`):
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -fno-strict-aliasing -static \
 *      -o dist/moat-watch native/moat-watch.c
 *
 * Invocation: moat-watch ID SENTRY_PID SENTRY_START INIT_PID INIT_START LOG
 *   START  field 22 of /proc/PID/stat (clock ticks after boot): tells a reused pid apart.
 *   LOG    the sentry's log file: a kill is recorded there (appended, one line).
 *   Started by `moat create` once the sentry serves the sandbox, with stdio on /dev/null and in
 *   a session of its own. It reads nothing else and answers nothing.
 *
 * What it does: holds a pidfd of each process and waits in ppoll(2) until one ends. The init
 * first (the normal end: the sentry outlives the sandbox's last task): it exits. The sentry
 * first: unless the init's pidfd says within GRACE_MS that it ended too (a watcher that started
 * as the sandbox ended finds the sentry gone already), it sends SIGKILL to the init, which takes
 * the container's pid namespace with it, logs that and exits. Once both pidfds are open it keeps
 * only CAP_KILL, sets no_new_privs and confines itself with a seccomp allowlist of the few calls
 * left to make.
 *
 * Exit status: 0 after either end, 2 on a bad invocation (the caller checks its arguments first).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Parses a decimal number that fills all of `s`; -1 if it is not one. */
static long long parse_num(const char *s) {
  if (*s == '\0') return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) return -1;
  return v;
}

/*
 * Whether `pid` is the process that started at `start` and has not ended (not a zombie): field
 * 3 (state) and field 22 (starttime) of /proc/PID/stat, read after the comm's closing paren.
 */
static int same_and_running(long long pid, const char *start) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%lld/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL || p[1] != ' ') return 0;
  p += 2; /* field 3 */
  char state = *p;
  if (state == 'Z' || state == 'X') return 0;
  for (int field = 3; field < 22; field++) {
    p = strchr(p, ' ');
    if (p == NULL) return 0;
    p++;
  }
  size_t len = strcspn(p, " ");
  return len == strlen(start) && strncmp(p, start, len) == 0;
}

/* How long (ms) an init may take to show it ended once the sentry is gone (see main). */
#define GRACE_MS 100

/* A pidfd of `pid` if it is still the process that started at `start`, else -1. */
static int open_checked(long long pid, const char *start) {
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) return -1;
  /* checked after the open: the pidfd names the process the stat line describes */
  if (!same_and_running(pid, start)) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Keeps CAP_KILL only (effective and permitted); no_new_privs; a seccomp allowlist. */
static void confine(void) {
  struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  data[0].effective = data[0].permitted = 1u << CAP_KILL;
  /* unprivileged, there is no CAP_KILL to keep: the init is then this user's own */
  (void)syscall(SYS_capset, &hdr, data);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return;
#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    ALLOW(SYS_ppoll), ALLOW(SYS_restart_syscall), ALLOW(SYS_pidfd_send_signal),
    ALLOW(SYS_clock_gettime), ALLOW(SYS_write), ALLOW(SYS_exit_group), ALLOW(SYS_exit),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
  };
#undef ALLOW
  struct sock_fprog prog = { .len = (unsigned short)(sizeof f / sizeof f[0]), .filter = f };
  (void)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: moat-watch ID SENTRY_PID SENTRY_START INIT_PID INIT_START LOG\n");
    return 2;
  }
  const char *id = argv[1];
  long long sentry = parse_num(argv[2]), init = parse_num(argv[4]);
  if (sentry <= 0 || init <= 0 || parse_num(argv[3]) < 0 || parse_num(argv[5]) < 0) {
    fprintf(stderr, "moat-watch: pids and start times are decimal numbers\n");
    return 2;
  }
  /* nothing the creating process inherited stays open here (a conmon's sync pipe would never
   * see its end); stdio is /dev/null */
  (void)syscall(SYS_close_range, 3u, ~0u, 0u);
  if (chdir("/") != 0) return 2;
  int initfd = open_checked(init, argv[5]);
  if (initfd < 0) return 0; /* the container ended already */
  int logfd = open(argv[6], O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
  int sentryfd = open_checked(sentry, argv[3]);
  tzset(); /* glibc reads the zone file once, here: gmtime_r below then opens nothing */
  confine();

  /* sentryfd < 0: the sentry was gone before this started; the init is killed at once */
  if (sentryfd >= 0) {
    struct pollfd p[2] = { { .fd = initfd, .events = POLLIN }, { .fd = sentryfd, .events = POLLIN } };
    for (;;) {
      int n = (int)syscall(SYS_ppoll, p, 2, NULL, NULL, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return 0; /* cannot wait: nothing it could do */
      if (p[0].revents != 0) return 0; /* the init ended first, as it should */
      if (p[1].revents != 0) break;
    }
  }
  /* The sentry is gone. It also goes at the normal end, once its last listener hung up as the
   * init died, and a watcher that started just then finds it gone first (a dying init, or a
   * zombie, still takes the signal below). So the init has GRACE_MS to show it ended; only one
   * that still runs then is killed. Meanwhile every served call of it fails with ENOSYS. */
  struct pollfd q = { .fd = initfd, .events = POLLIN };
  struct timespec grace = { 0, GRACE_MS * 1000000L };
  for (;;) {
    int n = (int)syscall(SYS_ppoll, &q, 1, &grace, NULL, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 1) return 0;
    break;
  }
  if (syscall(SYS_pidfd_send_signal, initfd, SIGKILL, NULL, 0) != 0) return 0; /* ended meanwhile */
  if (logfd >= 0) {
    char line[512], when[32];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    int len = snprintf(line, sizeof line, "%s.%03ldZ sentry[%s] moat-watch: the sentry (pid %lld) is gone while the container runs: killed the container (init pid %lld)\n",
                       when, ts.tv_nsec / 1000000, id, sentry, init);
    if (len > 0) (void)!write(logfd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
  }
  return 0;
}
