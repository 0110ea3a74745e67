/*
 * sysc.c - test-only probe of what a seccomp filter lets through, for
 * test/integration/seccomp.test.ts. It runs inside a container (static, no libc needed in the
 * rootfs) and is never part of Moat itself.
 *
 * Build (the test does this into each bundle's rootfs):
 *   cc -static -O2 -Wall -Wextra -Werror -o <bundle>/rootfs/bin/sysc test/seccomp/sysc.c
 *
 * Numbers are decimal or 0x hex (64-bit unsigned; a leading '-' is accepted for -1 and the like).
 *
 *   sysc NR [ARG...]        calls syscall(NR, ARG...) once (up to 6 arguments, missing ones are
 *                           0) and prints one line:
 *                             ok <return value>
 *                             err <errno> <strerror text>
 *                           then exits 0. If the filter kills the process, nothing is printed and
 *                           the exit is by the signal (SIGSYS). If the call created a process
 *                           (clone, fork), the new process exits 0 at once without printing.
 *   sysc list ITEM...       makes each call in a forked child and prints one line per item:
 *                             <nr> ok <return value>
 *                             <nr> err <errno>
 *                             <nr> signal <signal number>   (the child was killed, e.g. SIGSYS)
 *                             <nr> timeout                  (no answer within 1 s; child killed)
 *                           An ITEM is NR or NR,ARG,ARG,... (comma-separated, up to 6 arguments,
 *                           missing ones are 0), so plain numbers make the call with all-zero
 *                           arguments: pick calls for which that is harmless.
 *   sysc probe ITEM...      as list, but the child first stacks a filter of its own that answers
 *                           the probed number with SECCOMP_RET_TRACE: no tracer is attached, so
 *                           the kernel skips the call (it never runs) and returns ENOSYS, unless
 *                           an outer filter takes precedence (ERRNO, TRAP, KILL, and a
 *                           USER_NOTIF with a listener). So "err 1" proves the outer filter
 *                           returned ERRNO(EPERM), whatever the kernel itself would have said.
 *                           Needs no_new_privs (the container's noNewPrivileges) or CAP_SYS_ADMIN.
 *
 * Exit status: 0 after printing, 2 on a usage error, 3 if the probe filter cannot be loaded.
 * stdout is written with write(2) directly, one line per write, so nothing is lost to buffering
 * when a call kills the process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ARGS 6
#define TIMEOUT_NS 1000000000LL

struct call {
  long nr;
  unsigned long args[MAX_ARGS];
};

static void __attribute__((noreturn)) usage(void) {
  static const char text[] =
      "usage: sysc NR [ARG...] | sysc list NR[,ARG...]... | sysc probe NR[,ARG...]...\n";
  if (write(2, text, sizeof text - 1) < 0) _exit(2);
  _exit(2);
}

/* Writes one line to stdout with a single write(2). */
static void __attribute__((format(printf, 1, 2))) out(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) n = sizeof line - 1;
  if (write(1, line, (size_t)n) < 0) _exit(1);
}

/* Parses a decimal or 0x-hex number ending at a ',' or the string's end; *rest points there. */
static unsigned long number(const char *s, const char **rest) {
  int neg = 0;
  if (*s == '-') { neg = 1; s++; }
  int base = (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) ? 16 : 10;
  if (base == 16) s += 2;
  if (!*s || *s == ',') usage();
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  if (errno || (*end && *end != ',')) usage();
  *rest = end;
  return neg ? (unsigned long)(-(long long)v) : (unsigned long)v;
}

/* Parses "NR[,ARG...]". */
static struct call parse_item(const char *s) {
  struct call c;
  memset(&c, 0, sizeof c);
  const char *p;
  c.nr = (long)number(s, &p);
  for (int i = 0; *p == ','; i++) {
    if (i == MAX_ARGS) usage();
    c.args[i] = number(p + 1, &p);
  }
  return c;
}

/* Makes the call; returns its raw result and stores errno. */
static long do_call(const struct call *c, int *err) {
  errno = 0;
  long r = syscall(c->nr, c->args[0], c->args[1], c->args[2], c->args[3], c->args[4], c->args[5]);
  *err = errno;
  return r;
}

/* Stacks a filter that answers `nr` (x86_64) with SECCOMP_RET_TRACE and allows everything else. */
static void stack_trace_filter(long nr) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    out("probe filter: %s\n", strerror(errno));
    _exit(3);
  }
}

/* Report of a child in list mode, through a pipe. */
struct report {
  long ret;
  int err;
};

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void run_one_child(const struct call *c, int probe) {
  int fds[2];
  if (pipe(fds) != 0) { out("%ld pipe %d\n", c->nr, errno); return; }
  pid_t pid = fork();
  if (pid < 0) { out("%ld fork %d\n", c->nr, errno); close(fds[0]); close(fds[1]); return; }
  if (pid == 0) {
    close(fds[0]);
    if (probe) stack_trace_filter(c->nr);
    pid_t self = getpid();
    struct report rep;
    rep.ret = do_call(c, &rep.err);
    if (getpid() != self) _exit(0); /* a process the call created: it has nothing to report */
    if (write(fds[1], &rep, sizeof rep) != (ssize_t)sizeof rep) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  int status = 0;
  long long deadline = now_ns() + TIMEOUT_NS;
  pid_t w;
  while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_ns() < deadline) {
    struct timespec ms = { 0, 1000000 };
    nanosleep(&ms, NULL);
  }
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    out("%ld timeout\n", c->nr);
  } else if (w < 0) {
    out("%ld waitpid %d\n", c->nr, errno);
  } else if (WIFSIGNALED(status)) {
    out("%ld signal %d\n", c->nr, WTERMSIG(status));
  } else {
    struct report rep;
    if (read(fds[0], &rep, sizeof rep) != (ssize_t)sizeof rep) out("%ld noreport %d\n", c->nr, WEXITSTATUS(status));
    else if (rep.ret == -1) out("%ld err %d\n", c->nr, rep.err);
    else out("%ld ok %ld\n", c->nr, rep.ret);
  }
  close(fds[0]);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  int list = strcmp(argv[1], "list") == 0, probe = strcmp(argv[1], "probe") == 0;
  if (list || probe) {
    for (int i = 2; i < argc; i++) {
      struct call c = parse_item(argv[i]);
      run_one_child(&c, probe);
    }
    return 0;
  }
  if (argc > 2 + MAX_ARGS) usage();
  struct call c;
  memset(&c, 0, sizeof c);
  const char *rest;
  c.nr = (long)number(argv[1], &rest);
  if (*rest) usage();
  for (int i = 2; i < argc; i++) {
    c.args[i - 2] = number(argv[i], &rest);
    if (*rest) usage();
  }
  pid_t self = getpid();
  int err;
  long r = do_call(&c, &err);
  if (getpid() != self) _exit(0);
  if (r == -1) out("err %d %s\n", err, strerror(err));
  else out("ok %ld\n", r);
  return 0;
}
