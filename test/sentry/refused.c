/*
 * refused.c - test-only probe of the sentry's refused system calls, for
 * test/integration/sentry-security.test.ts. It runs inside a sentry container (static, so the
 * rootfs needs no libc) and is never part of Moat itself.
 *
 * Build: cc -O2 -static -o <bundle>/rootfs/bin/refused test/sentry/refused.c
 *
 * Usage:
 *   refused             makes one raw syscall(2) per refused class, each in a forked child
 *                       (so a call that wrongly succeeds, e.g. unshare, changes nothing here),
 *                       and prints one line per call:
 *                         <name> <return value> <errno>      (errno 0 when the call succeeded)
 *                         <name> signal <n>                  (the child was killed)
 *                       then, for the same calls, one "probe" line each:
 *                         probe <name> <return value> <errno>
 *                       where the child first stacks a filter of its own answering that one
 *                       number with SECCOMP_RET_TRACE. With no tracer the kernel then skips
 *                       the call and returns ENOSYS, unless an outer filter takes precedence
 *                       (ERRNO, or USER_NOTIF answered by the sentry). So a probe errno of EPERM
 *                       proves the sandbox refused the call itself, not the host kernel for lack
 *                       of a capability; a probe ENOSYS proves nothing for ENOSYS-class calls.
 *                         probe <name> unavailable <errno>   (the probe filter did not load)
 *   refused PID         tries to reach the process PID (a host pid, outside the sandbox):
 *                         kill <ret> <errno>                 kill(PID, 0)
 *                         ptrace <ret> <errno>               ptrace(PTRACE_ATTACH, PID)
 *                         process_vm_readv <ret> <errno>     one byte from PID's stack area
 *                         pidfd_open <ret> <errno>
 *
 * Every call's arguments are chosen so that, should the sandbox let it through to the host
 * kernel, it fails harmlessly (a nonexistent path, an invalid size) or acts only on the forked
 * child (unshare, keyrings of the thread).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AUDIT_ARCH_X86_64
#define AUDIT_ARCH_X86_64 0xc000003eU
#endif

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0) {
    ssize_t w = write(1, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
  }
}

static char hostname_buf[1000];

/* One call: its name, number and a function making it with harmless arguments. */
struct call {
  const char *name;
  long nr;
  long (*make)(long nr);
};

static long c_mount(long nr) { return syscall(nr, "none", "/nonexistent-moat", "tmpfs", 0L, NULL); }
static long c_umount2(long nr) { return syscall(nr, "/nonexistent-moat", 0L); }
static long c_pivot_root(long nr) { return syscall(nr, "/nonexistent-moat", "/nonexistent-moat"); }
static long c_swapon(long nr) { return syscall(nr, "/nonexistent-moat", 0L); }
/* magic numbers 0: EINVAL even with CAP_SYS_BOOT */
static long c_reboot(long nr) { return syscall(nr, 0L, 0L, 0L, NULL); }
/* length 1000 > __NEW_UTS_LEN: EINVAL even with CAP_SYS_ADMIN */
static long c_sethostname(long nr) { return syscall(nr, hostname_buf, (long)sizeof hostname_buf); }
static long c_init_module(long nr) { return syscall(nr, NULL, 0L, ""); }
/* 1000 segments > KEXEC_SEGMENT_MAX: EINVAL even with CAP_SYS_BOOT */
static long c_kexec_load(long nr) { return syscall(nr, 0L, 1000L, NULL, 0L); }
static long c_bpf(long nr) { return syscall(nr, 0L /* BPF_MAP_CREATE */, NULL, 0L); }
static long c_perf_event_open(long nr) { return syscall(nr, NULL, 0L, -1L, -1L, 0L); }
static long c_userfaultfd(long nr) { return syscall(nr, (long)O_CLOEXEC); }
static long c_keyctl(long nr) { return syscall(nr, 0L /* KEYCTL_GET_KEYRING_ID */, -1L /* thread keyring */, 1L); }
static long c_add_key(long nr) { return syscall(nr, "user", "moat-refused-probe", "x", 1L, -1L /* thread keyring */); }
static long c_io_uring_setup(long nr) {
  static char params[120];
  memset(params, 0, sizeof params);
  return syscall(nr, 1L, params);
}
static long c_unshare(long nr) { return syscall(nr, (long)CLONE_NEWUSER); }
static long c_setns(long nr) { return syscall(nr, -1L, 0L); }
static long c_ptrace(long nr) { return syscall(nr, (long)PTRACE_ATTACH, 1L, NULL, NULL); }
static long c_process_vm_readv(long nr) {
  static char buf[8];
  struct iovec local = {buf, 1}, remote = {buf, 1};
  return syscall(nr, 1L, &local, 1L, &remote, 1L, 0L);
}
static long c_open_by_handle_at(long nr) {
  static char handle[64];
  memset(handle, 0, sizeof handle);
  return syscall(nr, (long)AT_FDCWD, handle, (long)O_RDONLY);
}
static long c_fanotify_init(long nr) { return syscall(nr, 0L, 0L); }
static long c_fsopen(long nr) { return syscall(nr, "moat-no-such-fs", 0L); }
static long c_settimeofday(long nr) { return syscall(nr, NULL, NULL); }
static long c_acct(long nr) { return syscall(nr, "/nonexistent-moat/acct"); }
static long c_clone3(long nr) {
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.exit_signal = SIGCHLD;
  long r = syscall(nr, &args, sizeof args);
  if (r == 0) _exit(0); /* a new process: it must not report */
  if (r > 0) waitpid((pid_t)r, NULL, 0);
  return r;
}

static const struct call CALLS[] = {
    {"mount", SYS_mount, c_mount},
    {"umount2", SYS_umount2, c_umount2},
    {"pivot_root", SYS_pivot_root, c_pivot_root},
    {"swapon", SYS_swapon, c_swapon},
    {"reboot", SYS_reboot, c_reboot},
    {"sethostname", SYS_sethostname, c_sethostname},
    {"init_module", SYS_init_module, c_init_module},
    {"kexec_load", SYS_kexec_load, c_kexec_load},
    {"bpf", SYS_bpf, c_bpf},
    {"perf_event_open", SYS_perf_event_open, c_perf_event_open},
    {"userfaultfd", SYS_userfaultfd, c_userfaultfd},
    {"keyctl", SYS_keyctl, c_keyctl},
    {"add_key", SYS_add_key, c_add_key},
    {"io_uring_setup", 425, c_io_uring_setup},
    {"unshare", SYS_unshare, c_unshare},
    {"setns", SYS_setns, c_setns},
    {"ptrace", SYS_ptrace, c_ptrace},
    {"process_vm_readv", SYS_process_vm_readv, c_process_vm_readv},
    {"open_by_handle_at", SYS_open_by_handle_at, c_open_by_handle_at},
    {"fanotify_init", SYS_fanotify_init, c_fanotify_init},
    {"fsopen", 430, c_fsopen},
    {"settimeofday", SYS_settimeofday, c_settimeofday},
    {"acct", SYS_acct, c_acct},
    {"clone3", 435, c_clone3},
};

/* Stacks a filter that answers `nr` with SECCOMP_RET_TRACE (skipped: ENOSYS, no tracer). */
static int trace_filter(long nr) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0L, &prog);
}

/* Makes `c` in a forked child and prints its line (prefixed by "probe " when `probe`). */
static void run(const struct call *c, int probe) {
  const char *pre = probe ? "probe " : "";
  pid_t pid = fork();
  if (pid < 0) {
    out("%s%s fork-failed %d\n", pre, c->name, errno);
    return;
  }
  if (pid == 0) {
    if (probe && trace_filter(c->nr) != 0) {
      out("%s%s unavailable %d\n", pre, c->name, errno);
      _exit(0);
    }
    errno = 0;
    long r = c->make(c->nr);
    out("%s%s %ld %d\n", pre, c->name, r, r < 0 ? errno : 0);
    _exit(0);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) {
    out("%s%s wait-failed %d\n", pre, c->name, errno);
    return;
  }
  if (WIFSIGNALED(st)) out("%s%s signal %d\n", pre, c->name, WTERMSIG(st));
}

/* Tries to reach the host process `pid` from inside the sandbox. */
static void reach(pid_t pid) {
  long r;
  errno = 0;
  r = syscall(SYS_kill, (long)pid, 0L);
  out("kill %ld %d\n", r, r < 0 ? errno : 0);
  errno = 0;
  r = syscall(SYS_ptrace, (long)PTRACE_ATTACH, (long)pid, NULL, NULL);
  out("ptrace %ld %d\n", r, r < 0 ? errno : 0);
  static char buf[8];
  struct iovec local = {buf, 1}, remote = {(void *)0x400000, 1};
  errno = 0;
  r = syscall(SYS_process_vm_readv, (long)pid, &local, 1L, &remote, 1L, 0L);
  out("process_vm_readv %ld %d\n", r, r < 0 ? errno : 0);
  errno = 0;
  r = syscall(434 /* pidfd_open */, (long)pid, 0L);
  out("pidfd_open %ld %d\n", r, r < 0 ? errno : 0);
}

int main(int argc, char **argv) {
  memset(hostname_buf, 'h', sizeof hostname_buf);
  if (argc == 2) {
    reach((pid_t)atol(argv[1]));
    return 0;
  }
  size_t n = sizeof CALLS / sizeof CALLS[0];
  for (size_t i = 0; i < n; i++) run(&CALLS[i], 0);
  for (size_t i = 0; i < n; i++) run(&CALLS[i], 1);
  return 0;
}
