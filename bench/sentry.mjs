#!/usr/bin/env node
// Moat's sentry isolation vs native, runc and runsc (gVisor): per-syscall cost, start-up time and
// two real workloads, side by side in one run.
//
//   node bench/sentry.mjs [--iterations N] [--quick] [--moat PATH] [--runc PATH] [--runsc PATH] [--floor PATH]
//
// (a) per-syscall cost. A small static C program (inline below, built with `cc -O2 -static`)
//     times open+close and stat (served by the sentry) and getppid and a 4 KiB pread (fast path:
//     the host kernel runs them) in loops, after a warm-up, with clock_gettime(CLOCK_MONOTONIC),
//     and prints "name ns_per_call" lines. The pread runs twice: on the program's own file, on the
//     root filesystem (an overlay under Moat's sentry, as under containerd), and on a 4 KiB file it
//     writes on a tmpfs (/tmp in the sandboxes, /dev/shm on the host), which no runtime stacks
//     anything on: that row is the fast path's own cost. It runs on the host (native), in a busybox
//     bundle under runc (also as containerd runs it: "runc overlay", the rootfs under an overlay
//     mounted in a private mount namespace around runc) and runsc, and under `moat run --isolation sentry -- PROG` (the embedded default: the
//     host root read-only; the bundle form `moat run --isolation sentry -b BUNDLE ID` is the
//     fallback when the embedded form fails). The file it opens, stats and reads is the program
//     itself, so it lives on the root filesystem in every case. The C floor of a served call comes
//     from notify-floor.c (a supervisor in plain C doing no work per call), built with `cc -O2`
//     and run plain and with SYNC=1 (synchronous wake-ups, Linux 6.6+). The column "C sentry" is
//     the floor of the sentry's design: the same program under a supervisor in plain C (inline
//     below) that serves open and stat with the same kernel work per call as Moat's sentry (path
//     read from the caller's memory, openat2 in the root, fstatat or an injected fd, the
//     notification checked before each answer); what Moat's sentry costs beyond it is what its
//     TypeScript layer adds. The served calls' "mechanism floor" in the summary is that column.
//     The fast path's floor is the column "filter+overlay": the same program on the host under one
//     allow-all seccomp filter, run from and reading itself through an overlay of "/" (upper on a
//     tmpfs) in a private mount namespace: what any sandbox with a seccomp filter and an overlay
//     root pays for a call the host kernel runs (Moat's sentry has both; the issue asks for both).
// (b) start-up: `run` of /bin/true (create+start+wait+delete, fresh id each time) in the busybox
//     bundle, for runc, runsc, moat (container isolation) and moat --isolation sentry, as a user
//     runs them: `moat` is the native front end dist/moat, which hands the command to a warm
//     standby CLI process, and the sentry comes from a warm standby too; "moat sentry, no
//     standbys" is the same run with both turned off (a cold Node CLI, a cold sentry). Each timed
//     run starts 0.5 s after the one before, whatever the runtime, so that no background work
//     (a teardown, a standby booting for the next command) lands in another run's time. For
//     scale: `node -e 0` (Node's own start) and `moat --version`.
// (c) workloads: untar 2,000 small files with busybox tar into a tmpfs /tmp, in the busybox
//     bundle (the tarball is put in its rootfs at prepare time); and
//     python3 -c "import json, email, http.client, decimal, sqlite3" from the host's /usr. Moat
//     runs python with the embedded default (host root visible read-only). runc and runsc get a
//     copy-free bundle: its rootfs is an empty directory holding the merged-/usr symlinks (bin,
//     lib, lib64, sbin -> usr/...) in which the runtime itself binds the host's /usr and /etc
//     read-only (config.json mounts). That serves the same files python opens under Moat, needs
//     no mount on the host side (nothing to undo if the bench dies) and works with both runtimes
//     (runsc serves binds through its gofer like the rest of the rootfs); a rootfs that is an rbind
//     of "/" would also expose /proc, /sys, /dev and the bench's own directory for no benefit.
//     PYTHONDONTWRITEBYTECODE=1 everywhere, so that no run writes .pyc files.
//
// Every timed run, in every measure, starts on a quiet machine: the bench waits (up to 5 s) until
// at most 5% of the CPUs' time is busy over 200 ms. A served call's cost depends on whether the
// other vCPU is halted (a cross-CPU wake-up then costs tens of µs on a VM) or busy, so without it
// a run measured while the previous runtime's teardown or a standby's start still ran looked
// several times faster than the same run on a quiet machine (the C sentry's open+close, before
// it kept a hand-over on one CPU: 13 µs right after a Moat run, 50-65 µs on a quiet machine).
//
// Every container gets a tmpfs at /tmp (the embedded default has one already; runsc would make
// one by itself anyway), so the untar target is the same kind of filesystem everywhere; the
// native untar goes to /dev/shm for the same reason.
//
// runsc on this kind of machine (runsc 0.0~20221219, Debian): `run` takes --bundle, not -b.
// --platform=ptrace (the default) works as root with no other flags: no --ignore-cgroups (the
// bundles set no cgroupsPath nor resources) and no --rootless. --platform=kvm hangs with the
// sandbox spinning at 100% CPU in a nested VM whose /dev/kvm exists but cannot run guests, and
// --platform=systrap does not exist in this release (it came in 2023). --network=none because the
// containers have no network to set up. Under ptrace, runsc's per-call cost is bimodal from one
// run to the next (about 18 or about 60 µs for getppid on a 2-vCPU VM, depending on where the
// sentry and the stub land), hence the min-max table under the medians.
//
// A runtime that is missing or fails prints "n/a (reason)" in its column and the rest of the bench
// goes on; one that times out (30 s) once is skipped by the later measures. The kernel release and
// Seccomp mode seen inside are printed, to show that each column ran where it claims (runsc shows
// gVisor's 4.4.0, the sentry its own release and Seccomp 2).
//
// All the files live in a directory under /var/tmp, not /tmp: the embedded default mounts a fresh
// tmpfs on /tmp, which would hide the program from the sandbox.
//
// Needs root, a C compiler with a static libc (libc6-dev) and a compiled test tree
// (`npx tsc -p tsconfig.json`): the busybox bundles come from build/test/fixtures/busybox.js.
// Plain JS on purpose, like bench/run.mjs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { C_PRELUDE, flagReader, interrupt, printTable, ratio, removeTemp, reportFailure, runtime, RuntimeFailure, settle, stats, tail, which } from './lib.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CALL_TIMEOUT_MS = 30_000;
const SERVED_TARGET = 0.5; // moat sentry / runsc, served calls
const FAST_TARGET = 1.2; // moat sentry / native, fast-path calls
const STARTUP_TARGET = 0.5; // moat sentry / runsc, run of /bin/true
/** Column of table (a): the host under one seccomp filter, reading through an overlay of "/". */
const FAST_FLOOR = 'filter+overlay';
/** Column of table (a): runc with the bundle's rootfs under an overlay, as containerd's overlayfs snapshotter gives it. */
const RUNC_OVERLAY = 'runc overlay';
const TMPFS_MAGIC = 0x01021994;
/** Column of table (a): the program under a supervisor in plain C doing the sentry's kernel work per served call. */
const C_SENTRY = 'C sentry';
/** Row of table (b): Node's own start, no script. */
const NODE_FLOOR = 'node -e 0';
/** The start-up column of Moat's sentry with no warm standby of the CLI or of the sentry. */
const COLD_SENTRY = 'moat sentry, no standbys';
const NO_STANDBYS = { MOAT_CLI_STANDBY: '0', MOAT_SENTRY_STANDBY: '0' };
/** The pause before each timed start-up run. */
const STARTUP_PAUSE_MS = 500;
const RUNSC_FLAGS = ['--network=none', '--platform=ptrace'];
const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const PYTHON = '/usr/bin/python3';
const PY_IMPORTS = 'import json, email, http.client, decimal, sqlite3';

/** The timed program. Usage: bench-sys FILE FAST SERVED [TMPFS-DIR]; prints "name ns_per_call" lines. */
const SYS_C = String.raw`${C_PRELUDE}
static char buf[4096];

/* One pass of each loop; returns 0, or 1 after printing why. tmpfd: a 4 KiB file on a tmpfs, or -1. */
static int loops(const char *file, int tmpfd, long fast, long served, double out[5]) {
  struct stat st;
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) { perror(file); return 1; }
  double t0 = now();
  for (long i = 0; i < served; i++) {
    int f = open(file, O_RDONLY | O_CLOEXEC);
    if (f < 0) { perror("open"); return 1; }
    close(f);
  }
  double t1 = now();
  for (long i = 0; i < served; i++)
    if (stat(file, &st) != 0) { perror("stat"); return 1; }
  double t2 = now();
  for (long i = 0; i < fast; i++) syscall(SYS_getppid);
  double t3 = now();
  for (long i = 0; i < fast; i++)
    if (pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) { fprintf(stderr, "pread: short read of %s\n", file); return 1; }
  double t4 = now();
  for (long i = 0; tmpfd >= 0 && i < fast; i++)
    if (pread(tmpfd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) { fprintf(stderr, "pread: short read of the tmpfs file\n"); return 1; }
  double t5 = now();
  close(fd);
  out[0] = (t1 - t0) / served;
  out[1] = (t2 - t1) / served;
  out[2] = (t3 - t2) / fast;
  out[3] = (t4 - t3) / fast;
  out[4] = (t5 - t4) / fast;
  return 0;
}

/* A 4 KiB file in dir (a tmpfs), already unlinked; -1 after printing why. */
static int tmpfile4k(const char *dir) {
  char name[4096];
  snprintf(name, sizeof name, "%s/bench-pread-%d", dir, (int)getpid());
  int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) { perror(name); return -1; }
  memset(buf, 'x', sizeof buf);
  ssize_t n = write(fd, buf, sizeof buf);
  unlink(name);
  if (n != (ssize_t)sizeof buf) { fprintf(stderr, "%s: short write\n", name); close(fd); return -1; }
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) { fprintf(stderr, "usage: %s FILE FAST SERVED [TMPFS-DIR]\n", argv[0]); return 2; }
  long fast = atol(argv[2]), served = atol(argv[3]);
  if (fast < 1 || served < 1) { fprintf(stderr, "bad counts\n"); return 2; }
  int tmpfd = argc == 5 ? tmpfile4k(argv[4]) : -1;
  if (argc == 5 && tmpfd < 0) return 1;
  double r[5];
  long wf = fast / 10 > 100 ? fast / 10 : 100, ws = served / 10 > 100 ? served / 10 : 100;
  if (loops(argv[1], tmpfd, wf, ws, r)) return 1; /* warm-up */
  if (loops(argv[1], tmpfd, fast, served, r)) return 1;
  struct utsname u;
  uname(&u);
  printf("open+close %.1f\nstat %.1f\ngetppid %.1f\npread4k %.1f\n", r[0], r[1], r[2], r[3]);
  if (tmpfd >= 0) printf("pread4k-tmpfs %.1f\n", r[4]);
  printf("uname %s\nseccomp %d\n", u.release, seccomp_mode());
  return 0;
}
`;

/**
 * The fast path's mechanism floor: runs a program under one seccomp filter that allows every
 * call (after the architecture check), so that the kernel takes its filtered system-call entry
 * as it does for any sandboxed workload. Usage: bench-filtered PROG ARGS...
 */
const FILTERED_C = String.raw`
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (argc < 2) { fprintf(stderr, "usage: %s PROG ARGS...\n", argv[0]); return 2; }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) { perror("seccomp"); return 1; }
  execv(argv[1], argv + 1);
  perror(argv[1]);
  return 1;
}
`;

/**
 * The served calls' floor for the sentry's design: a supervisor in plain C doing, per call, the
 * same kernel work as Moat's sentry (see the comment in the program). Usage: bench-c-sentry PROG ARGS...
 */
const C_SENTRY_C = String.raw`/*
 * bench-c-sentry: the floor of Moat's sentry design, in plain C. Usage: bench-c-sentry PROG ARGS...
 * A child installs a seccomp filter that sends openat and newfstatat to a listener
 * (SECCOMP_FILTER_FLAG_NEW_LISTENER), passes the listener over a socketpair and executes PROG.
 * The parent serves those calls with the same kernel work per call as the sentry: poll and
 * NOTIF_RECV; the path read with process_vm_readv (256 bytes, then the rest); NOTIF_ID_VALID;
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) under a root fd; a stat answered with
 * fstatat(AT_EMPTY_PATH), close, NOTIF_ID_VALID and process_vm_writev; an open answered by
 * NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND, the supervisor SCHED_FIFO and the caller allowed only
 * the supervisor's CPU for the length of that ioctl (as Moat's sentry/pin.ts does: ADDFD's
 * wake-ups are plain ones, which would send each side to an idle CPU; real-time, the supervisor
 * gives the caller its CPUs back before the caller runs again). Synchronous wake-ups (Linux 6.6+)
 * where the kernel has them. Paths under /proc and relative paths are let through (CONTINUE): the floor serves
 * only what it times. Exits with PROG's status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#endif

static int pass_fd(int sock, int fd, int sending) {
  char byte = 0;
  struct iovec io = {&byte, 1};
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
  struct msghdr msg = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  if (sending) {
    struct cmsghdr *h = CMSG_FIRSTHDR(&msg);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    return sendmsg(sock, &msg, 0) < 0 ? -1 : 0;
  }
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) <= 0 || !CMSG_FIRSTHDR(&msg)) return -1;
  memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
  return fd;
}

static void child(int sock, char **argv) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_newfstatat, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("no_new_privs"); _exit(1); }
  int listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
  if (listener < 0) { perror("seccomp"); _exit(1); }
  if (pass_fd(sock, listener, 1)) { perror("sendmsg"); _exit(1); }
  close(listener);
  close(sock);
  execv(argv[0], argv);
  perror(argv[0]);
  _exit(1);
}

/* Copies the NUL-terminated path at addr in task tid into buf (4096 bytes); 0, or an errno. */
static int read_path(pid_t tid, uint64_t addr, char *buf) {
  size_t got = 0;
  while (got < 4096) {
    size_t want = got == 0 ? 256 : 4096 - got;
    struct iovec l = {buf + got, want}, r = {(void *)(uintptr_t)(addr + got), want};
    ssize_t n = process_vm_readv(tid, &l, 1, &r, 1, 0);
    if (n <= 0) return EFAULT;
    if (memchr(buf + got, 0, n)) return 0;
    got += n;
  }
  return ENAMETOOLONG;
}

static int valid(int listener, uint64_t id) { return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0; }

static void reply(int listener, uint64_t id, int64_t val, int error, unsigned flags) {
  struct seccomp_notif_resp resp = {.id = id, .val = val, .error = error, .flags = flags};
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
}

static void serve(int listener, int root, struct seccomp_notif *n) {
  char path[4096];
  int at = (int)n->data.args[0];
  int err = read_path(n->pid, n->data.args[1], path);
  if (err) { reply(listener, n->id, 0, -err, 0); return; }
  if (!valid(listener, n->id)) return;
  if (at != AT_FDCWD || path[0] != '/' || strncmp(path, "/proc/", 6) == 0) {
    reply(listener, n->id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    return;
  }
  struct open_how how = {.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  if (n->data.nr == SYS_openat) {
    how.flags = (n->data.args[2] & 0xffffffff) | O_CLOEXEC;
    if (how.flags & (O_CREAT | O_TMPFILE)) how.mode = n->data.args[3] & 07777;
  } else {
    how.flags = O_PATH | O_CLOEXEC | ((n->data.args[3] & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0);
  }
  int fd = syscall(SYS_openat2, root, path, &how, sizeof how);
  if (fd < 0) { reply(listener, n->id, 0, -errno, 0); return; }
  if (n->data.nr == SYS_openat) {
    struct seccomp_notif_addfd add = {.id = n->id, .flags = SECCOMP_ADDFD_FLAG_SEND, .srcfd = fd,
                                      .newfd_flags = (n->data.args[2] & O_CLOEXEC) ? O_CLOEXEC : 0};
    /* this thread real-time, then the caller (if its affinity was every CPU's) on this CPU for the ioctl */
    static const struct sched_param fifo = {.sched_priority = 1}, other = {.sched_priority = 0};
    static cpu_set_t own, every;
    static int ready;
    if (!ready) { CPU_ZERO(&own); sched_getaffinity(0, sizeof own, &own); memset(&every, 0xff, sizeof every); ready = 1; }
    cpu_set_t old, one;
    int pinned = 0;
    if (sched_getaffinity(n->pid, sizeof old, &old) == 0 && CPU_EQUAL(&old, &own) && sched_setscheduler(0, SCHED_FIFO, &fifo) == 0) {
      int cpu = sched_getcpu();
      CPU_ZERO(&one);
      if (cpu >= 0) CPU_SET(cpu, &one);
      if (cpu >= 0 && sched_setaffinity(n->pid, sizeof one, &one) == 0) pinned = 1;
      else sched_setscheduler(0, SCHED_OTHER, &other);
    }
    int rc = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
    int e = errno;
    if (pinned) {
      sched_setaffinity(n->pid, sizeof every, &every);
      sched_setscheduler(0, SCHED_OTHER, &other);
    }
    close(fd);
    if (rc < 0 && e != ENOENT) reply(listener, n->id, 0, -e, 0);
    return;
  }
  struct stat st;
  int rc = fstatat(fd, "", &st, AT_EMPTY_PATH);
  err = errno;
  close(fd);
  if (rc) { reply(listener, n->id, 0, -err, 0); return; }
  if (!valid(listener, n->id)) return;
  struct iovec l = {&st, sizeof st}, r = {(void *)(uintptr_t)n->data.args[2], sizeof st};
  if (process_vm_writev(n->pid, &l, 1, &r, 1, 0) != (ssize_t)sizeof st) { reply(listener, n->id, 0, -EFAULT, 0); return; }
  reply(listener, n->id, 0, 0, 0);
}

int main(int argc, char **argv) {
  int sv[2];
  if (argc < 2) { fprintf(stderr, "usage: %s PROG ARGS...\n", argv[0]); return 2; }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) { perror("socketpair"); return 1; }
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 1; }
  if (pid == 0) { close(sv[0]); child(sv[1], argv + 1); }
  close(sv[1]);
  int listener = pass_fd(sv[0], -1, 0);
  close(sv[0]);
  if (listener < 0) { fprintf(stderr, "no listener from the child\n"); return 1; }
  ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); /* best effort */
  int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) { perror("/"); return 1; }
  struct pollfd p = {.fd = listener, .events = POLLIN};
  for (;;) {
    if (poll(&p, 1, -1) < 0) { if (errno == EINTR) continue; perror("poll"); return 1; }
    if (p.revents & (POLLHUP | POLLERR)) break;
    struct seccomp_notif n;
    memset(&n, 0, sizeof n);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) continue; /* the caller went away */
    serve(listener, root, &n);
  }
  int status;
  if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return 1; }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
`;

/** Rows of table (a): the program's name for it, the label, and the path the sentry gives it. */
const SYSCALLS = [
  { key: 'open+close', label: 'open+close', path: 'served', floor: 'open' },
  { key: 'stat', label: 'stat', path: 'served' },
  { key: 'getppid', label: 'getppid', path: 'fast', floor: 'getppid' },
  { key: 'pread4k', label: 'pread 4 KiB, root', path: 'fast' },
  { key: 'pread4k-tmpfs', label: 'pread 4 KiB, tmpfs', path: 'fast' },
];

function usage(code) {
  const text = `usage: node bench/sentry.mjs [--iterations N] [--quick] [--moat PATH] [--runc PATH] [--runsc PATH] [--floor PATH]
  --iterations N  timed runs per runtime and measure (default 7; 3 with --quick)
  --quick         fewer runs, shorter loops, a smaller tarball (under a minute)
  --moat PATH     moat executable (default ${path.join(repo, 'dist/moat')}, the native front end; .mjs/.js/.cjs run with node)
  --runc PATH     runc executable (default: runc on PATH)
  --runsc PATH    runsc executable (default: runsc on PATH)
  --floor PATH    notify-floor.c (default ${path.resolve(repo, '../shared/reference/notify-floor.c')})`;
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = {
    iterations: undefined,
    quick: false,
    moat: path.join(repo, 'dist/moat'),
    runc: undefined,
    runsc: undefined,
    floor: path.resolve(repo, '../shared/reference/notify-floor.c'),
  };
  const flags = flagReader(argv, usage);
  for (let flag = flags.next(); flag !== undefined; flag = flags.next()) {
    const { value, count } = flags;
    if (flag === '--iterations') opts.iterations = count(1);
    else if (flag === '--quick') opts.quick = true;
    else if (flag === '--moat') opts.moat = path.resolve(value());
    else if (flag === '--runc') opts.runc = value();
    else if (flag === '--runsc') opts.runsc = value();
    else if (flag === '--floor') opts.floor = path.resolve(value());
    else if (flag === '--help' || flag === '-h') usage(0);
    else {
      console.error(`unknown argument: ${flag}`);
      usage(2);
    }
  }
  opts.iterations ??= opts.quick ? 3 : 7;
  opts.fast = opts.quick ? 5000 : 20000; // getppid and pread per run
  opts.served = opts.quick ? 1000 : 5000; // open+close and stat per run
  opts.files = opts.quick ? 500 : 2000; // files in the tarball
  return opts;
}


let logSeq = 0;
let logDir = '';

/**
 * Runs argv synchronously with stdout/stderr going to a fresh log file (not a pipe: a container
 * process may keep it open). Throws RuntimeFailure unless it exits 0 (or `allowFail`); returns
 * the exit status, the output and the wall time in ms.
 */
function exec(argv, { env, cwd = '/', allowFail = false, what = argv.join(' ') } = {}) {
  const log = path.join(logDir, `${++logSeq}.log`);
  const fd = fs.openSync(log, 'w');
  let r;
  const t0 = process.hrtime.bigint();
  try {
    r = spawnSync(argv[0], argv.slice(1), {
      stdio: ['ignore', fd, fd],
      timeout: CALL_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      env: env ?? process.env,
      cwd,
    });
  } finally {
    fs.closeSync(fd);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const output = fs.readFileSync(log, 'utf8');
  interrupt.check();
  if (r.error) {
    const why = r.error.code === 'ETIMEDOUT' ? `timed out after ${CALL_TIMEOUT_MS} ms` : r.error.message;
    throw new RuntimeFailure(`${what}: ${why}\n${tail(output)}`, { cause: { short: why, timeout: r.error.code === 'ETIMEDOUT' } });
  }
  if (r.status !== 0 && !allowFail) {
    const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
    throw new RuntimeFailure(`${what}: ${how}\n${tail(output)}`, { cause: { short: lastLine(output) ?? how } });
  }
  return { status: r.status, output, ms };
}

/** How many sandboxes the memory measure runs side by side. */
const MEM_SANDBOXES = 3;

/** VmRSS (status) and Pss (smaps_rollup) of one process, in KiB. */
function memoryOf(pid) {
  const read = (file, re) => {
    try {
      const m = re.exec(fs.readFileSync(`/proc/${pid}/${file}`, 'utf8'));
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined; // gone, or no smaps_rollup
    }
  };
  return { rss: read('status', /^VmRSS:\s+(\d+) kB/m) ?? 0, pss: read('smaps_rollup', /^Pss:\s+(\d+) kB/m) };
}

/** Host pids whose command line names one of `ids` and passes `pick` (the cmdline with NULs). */
function sandboxProcesses(ids, pick) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmd;
    try {
      cmd = `${fs.readFileSync(`/proc/${name}/cmdline`, 'latin1')}\0`;
    } catch {
      continue;
    }
    if (ids.some((id) => cmd.includes(id)) && pick(cmd)) out.push(Number(name));
  }
  return out;
}

/** The last non-empty line of some output, for a short reason. */
function lastLine(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : undefined;
}

/** `<runtime> --root R [global flags] ...args`. */
function call(rt, args, opts = {}) {
  return exec([...rt.cmd, '--root', rt.root, ...rt.global, ...args], { what: `${rt.name}: ${[rt.label, '--root', rt.root, ...rt.global, ...args].join(' ')}`, ...opts });
}

/** The environment of moat itself: a plain PATH (the embedded default copies it into the sandbox) and any MOAT_* setting. */
function moatEnv() {
  return { PATH: HOST_PATH, ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MOAT_'))) };
}

/** `run` of a bundle with a fresh id; the run deletes the container itself, cleanup only follows a failure. */
function runBundle(rt, runFlags, bundle, id, env = {}) {
  rt.ids.add(id);
  const r = call(rt, ['run', ...runFlags, '--bundle', bundle, id], rt.name.startsWith('moat') ? { env: { ...moatEnv(), ...env } } : {});
  rt.ids.delete(id);
  return r;
}

/**
 * `runc run` of a bundle whose rootfs is first covered by an overlay (lower: the rootfs itself,
 * upper and work on a tmpfs at scratch), in a private mount namespace that dies with the run.
 */
function runOverlaid(rt, bundle, id, scratch) {
  fs.mkdirSync(scratch, { recursive: true });
  const rootfs = path.join(bundle, 'rootfs');
  const script = [
    'set -e',
    `mount -t tmpfs -o mode=0755 tmpfs ${scratch}`,
    `mkdir ${scratch}/upper ${scratch}/work`,
    `mount -t overlay overlay -o lowerdir=${rootfs},upperdir=${scratch}/upper,workdir=${scratch}/work ${rootfs}`,
    'exec "$@"',
  ].join('\n');
  rt.ids.add(id);
  const r = exec(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...rt.cmd, '--root', rt.root, 'run', '--bundle', bundle, id],
    { env: { PATH: HOST_PATH }, what: `${rt.name} on an overlay root: run --bundle ${bundle} ${id}` });
  rt.ids.delete(id);
  return r;
}

/** `moat run [flags] --network none --name ID [-e ...] -- CMD...`: the embedded default. */
function runEmbedded(rt, runFlags, cmd, id, env = []) {
  rt.ids.add(id);
  const r = call(rt, ['run', ...runFlags, '--network', 'none', '--name', id, ...env.flatMap((e) => ['-e', e]), '--', ...cmd], { env: moatEnv() });
  rt.ids.delete(id);
  return r;
}

/** Best-effort removal of a container left by a failed run. */
function forceDelete(rt, id) {
  const del = rt.name === 'runsc' ? ['delete', '--force', id] : ['delete', '-f', id];
  try {
    call(rt, ['kill', id, 'KILL'], { allowFail: true });
    call(rt, del, { allowFail: true });
  } catch (err) {
    console.error(`cleanup: ${rt.name} ${id}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Columns: one per runtime (or way of running), each with one or more forms tried in order at
// warm-up; the first that works is timed. A column that fails is n/a with the reason.

/** The short reason of an error, for a table cell. */
function shortReason(err) {
  const s = err?.cause?.short ?? (err instanceof Error ? err.message.split('\n')[0] : String(err));
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * @param name   column label
 * @param forms  [{ label, run(id) -> { output, ms } }], tried in order at warm-up
 * @param missing  reason the runtime is absent (the column is n/a without running anything)
 */
function column(name, forms, missing) {
  return { name, forms, missing, form: undefined, error: missing, notes: [], samples: [], inside: undefined };
}

/** Timed runs that started on a busy machine (settle gave up), by measure tag. */
const unsettled = new Map();

/**
 * Warm-up (which also picks the form) then `iterations` timed rounds over the columns, the order
 * rotating each round. `parse(output, ms)` turns one run into a sample or throws. Every timed run
 * starts on a quiet machine (`settle`), `pauseMs` at least after the run before it.
 */
async function measure(cols, iterations, tag, parse, pauseMs = 0) {
  let seq = 0;
  const timedOut = (col, err) => {
    if (err?.cause?.timeout) hung.set(col.name, shortReason(err));
  };
  for (const col of cols) {
    if (col.error === undefined && hung.has(col.name)) {
      col.error = `skipped: ${hung.get(col.name)} in an earlier measure`;
      col.cell = 'skipped: timed out earlier';
    }
    if (col.error !== undefined) continue;
    const reasons = [];
    for (const form of col.forms) {
      try {
        const r = form.run(`${tag}-w${seq++}`);
        parse(r.output, r.ms, col);
        col.form = form;
        break;
      } catch (err) {
        if (!(err instanceof RuntimeFailure)) throw err;
        reasons.push({ form: form.label, short: shortReason(err), full: err.message });
        timedOut(col, err);
      }
      await interrupt.tick();
    }
    if (col.form === undefined) {
      col.error = reasons.map((r) => (col.forms.length > 1 ? `${r.form}: ${r.short}` : r.short)).join('; ');
      col.cell = reasons[reasons.length - 1].short;
      for (const r of reasons) col.notes.push(`${col.name} (${r.form}) failed:\n${r.full.replace(/^/gm, '    ')}`);
    } else if (reasons.length > 0) {
      for (const r of reasons) col.notes.push(`${col.name}: ${r.form} failed (${r.short}); timed ${col.form.label} instead`);
    }
    await interrupt.tick();
  }
  for (let i = 0; i < iterations; i++) {
    const live = cols.filter((c) => c.error === undefined);
    const k = live.length ? i % live.length : 0;
    for (const col of [...live.slice(k), ...live.slice(0, k)]) {
      if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      if (!(await settle())) unsettled.set(tag, (unsettled.get(tag) ?? 0) + 1);
      try {
        const r = col.form.run(`${tag}-${seq++}`);
        col.samples.push(parse(r.output, r.ms, col));
      } catch (err) {
        if (!(err instanceof RuntimeFailure)) throw err;
        col.error = `run ${i + 1}: ${shortReason(err)}`;
        col.cell = col.error;
        timedOut(col, err);
        col.notes.push(`${col.name} failed at timed run ${i + 1}:\n${err.message.replace(/^/gm, '    ')}`);
      }
      await interrupt.tick();
    }
  }
}

/** `s` cut to `n` characters. */
const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 3)}...` : s);

/** A table cell for a column that is n/a: the reason, clipped (printReasons gives it whole). */
/** Columns (by name) that timed out once: later measures skip them rather than wait again. */
const hung = new Map();

const na = (col) => `n/a (${clip(col.cell ?? col.error, 32)})`;

/** Below a table: why each n/a column is n/a, in full. */
function printReasons(items) {
  for (const { name, error } of items) if (error !== undefined) console.log(`  ${name}: n/a (${error})`);
}

/** The reason a ratio is n/a, naming the missing side. */
function whyNA(cols, ...names) {
  const c = cols.find((x) => names.includes(x.name) && x.error !== undefined);
  return c ? `${c.name}: ${clip(c.cell ?? c.error, 70)}` : 'not measured';
}

/** µs with a sensible number of digits. */
function us(v) {
  if (v === undefined) return 'n/a';
  return v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(1);
}

const ms1 = (v) => (v === undefined ? 'n/a' : v.toFixed(1));
const median = (xs) => (xs.length ? stats(xs).median : undefined);
const verdict = (r, target) => (r <= target ? 'met' : 'NOT met');

// ---------------------------------------------------------------------------------------------

/** Builds notify-floor.c and runs it `iterations` times, plain and with SYNC=1; medians in µs. */
async function measureFloor(opts, tmp, cc) {
  const out = { plain: { error: undefined, getppid: [], open: [] }, sync: { error: undefined, getppid: [], open: [] } };
  if (!fs.existsSync(opts.floor)) {
    out.plain.error = out.sync.error = `notify-floor.c not found at ${opts.floor}`;
    return out;
  }
  const bin = path.join(tmp, 'notify-floor');
  const build = spawnSync(cc, ['-O2', '-o', bin, opts.floor], { encoding: 'utf8' });
  if (build.status !== 0) {
    out.plain.error = out.sync.error = `cannot build notify-floor.c: ${lastLine(build.stderr ?? '') ?? String(build.error)}`;
    return out;
  }
  for (let i = 0; i < opts.iterations + 1; i++) {
    for (const [mode, env] of [['plain', {}], ['sync', { SYNC: '1' }]]) {
      const m = out[mode];
      if (m.error !== undefined) continue;
      try {
        const { output } = exec([bin], { env: { PATH: HOST_PATH, ...env }, what: `notify-floor${mode === 'sync' ? ' (SYNC=1)' : ''}` });
        if (mode === 'sync' && /SET_FLAGS/.test(output)) throw new RuntimeFailure(output, { cause: { short: `SYNC=1 refused by this kernel: ${lastLine(output)}` } });
        const g = /notified getppid round trip:\s*([\d.]+)\s*us/.exec(output);
        const o = /brokered open \(ADDFD\) \+ close:\s*([\d.]+)\s*us/.exec(output);
        if (!g || !o) throw new RuntimeFailure(output, { cause: { short: `unexpected output: ${lastLine(output) ?? '(none)'}` } });
        if (i === 0) continue; // warm-up
        m.getppid.push(Number(g[1]));
        m.open.push(Number(o[1]));
      } catch (err) {
        if (!(err instanceof RuntimeFailure)) throw err;
        m.error = shortReason(err);
      }
      await interrupt.tick();
    }
  }
  return out;
}

/** The path of file `i` in the tarball's tree. */
const treeFile = (i) => `d${String(Math.floor(i / 100)).padStart(2, '0')}/f${String(i % 100).padStart(2, '0')}.txt`;

/** A tarball of `count` small files in directories of 100 (see treeFile), written to `file` (by the host's tar, else busybox's). */
function makeTarball(tmp, file, count, busybox) {
  const src = path.join(tmp, 'tree');
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  const words = ['alpha', 'beta', 'gamma', 'delta', 'sentry', 'moat', 'gofer', 'seccomp', 'notify', 'bundle'];
  for (let i = 0; i < count; i++) {
    const file = path.join(src, treeFile(i));
    if (i % 100 === 0) fs.mkdirSync(path.dirname(file), { recursive: true });
    const n = 40 + (rand() % 300); // about 250 B to 2 KiB of text
    fs.writeFileSync(file, `${Array.from({ length: n }, () => words[rand() % words.length]).join(' ')}\n`);
  }
  const tar = which('tar') ? ['tar', '-czf', file, '--owner=0', '--group=0', '-C', src, '.'] : [busybox, 'tar', '-czf', file, '-C', src, '.'];
  exec(tar, { what: 'making the tarball' });
  fs.rmSync(src, { recursive: true, force: true });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const fixture = path.join(repo, 'build/test/fixtures/busybox.js');
  if (!fs.existsSync(fixture)) {
    console.error(`${fixture} is missing: compile first with "npx tsc -p tsconfig.json"`);
    return 1;
  }
  const cc = process.env.CC ?? 'cc';
  if (which(cc) === undefined) {
    console.error(`no C compiler (${cc}) to build the timed program: apt-get install gcc libc6-dev`);
    return 1;
  }
  if (process.getuid?.() !== 0) console.warn('warning: not running as root; the runtimes will probably fail');
  const { makeBundle } = await import(pathToFileURL(fixture).href);

  const runcPath = which(opts.runc ?? 'runc');
  const runscPath = which(opts.runsc ?? 'runsc');
  const moatOk = fs.existsSync(opts.moat);
  const runc = runcPath ? runtime('runc', runcPath) : undefined;
  const runsc = runscPath ? runtime('runsc', runscPath) : undefined;
  const moat = moatOk ? runtime('moat', opts.moat) : undefined;
  const missing = {
    runc: runc ? undefined : `runc not found (${opts.runc ?? 'runc on PATH'})`,
    runsc: runsc ? undefined : `runsc not found (${opts.runsc ?? 'runsc on PATH'}); Debian package runsc`,
    moat: moat ? undefined : `moat not found at ${opts.moat}`,
  };
  const runtimes = [runc, runsc, moat].filter(Boolean);

  fs.mkdirSync('/var/tmp', { recursive: true });
  const tmp = fs.mkdtempSync('/var/tmp/moat-bench-sentry-');
  fs.chmodSync(tmp, 0o755); // searchable by the sandboxes' users (runsc's sandbox runs as nobody)
  logDir = path.join(tmp, 'logs');
  fs.mkdirSync(logDir);
  for (const rt of runtimes) {
    rt.root = path.join(tmp, `${rt.name}-root`);
    rt.global = rt.name === 'runsc' ? RUNSC_FLAGS : [];
  }

  const onSignal = () => {
    interrupt.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  const summary = [];
  const notes = [];
  try {
    // ---- preparation
    const prog = path.join(tmp, 'bench-sys');
    const build = spawnSync(cc, ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-x', 'c', '-o', prog, '-'], { input: SYS_C, encoding: 'utf8' });
    if (build.status !== 0) {
      console.error(`cannot compile the timed program (is libc6-dev installed for -static?):\n${tail(build.stderr ?? String(build.error))}`);
      return 1;
    }
    const cSentry = path.join(tmp, 'bench-c-sentry');
    const buildS = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-x', 'c', '-o', cSentry, '-'], { input: C_SENTRY_C, encoding: 'utf8' });
    const cSentryMissing = buildS.status === 0 ? undefined : `cannot build the C sentry: ${lastLine(buildS.stderr ?? '') ?? String(buildS.error)}`;
    const filtered = path.join(tmp, 'bench-filtered');
    const buildF = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-x', 'c', '-o', filtered, '-'], { input: FILTERED_C, encoding: 'utf8' });
    if (buildF.status !== 0) {
      console.error(`cannot compile the filter wrapper (linux-libc-dev headers?):\n${tail(buildF.stderr ?? String(buildF.error))}`);
      return 1;
    }
    const withTmp = (s) => {
      s.mounts.push({ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] });
    };
    // the pread of a tmpfs file: /tmp in every container (a tmpfs in each), /dev/shm on the host
    const hostTmpfs = '/dev/shm';
    if (fs.statfsSync(hostTmpfs, { throwIfNoEntry: false })?.type !== TMPFS_MAGIC) {
      console.error(`${hostTmpfs} is not a tmpfs: the native pread of a tmpfs file needs one`);
      return 1;
    }
    const loopArgs = (file, tmpfsDir) => [file, file, String(opts.fast), String(opts.served), tmpfsDir];
    const sysBundle = await makeBundle({ dir: path.join(tmp, 'bundle-sys'), args: loopArgs('/bench-sys', '/tmp'), mutate: withTmp });
    fs.copyFileSync(prog, path.join(sysBundle, 'rootfs/bench-sys'));
    fs.chmodSync(path.join(sysBundle, 'rootfs/bench-sys'), 0o755);
    const trueBundle = await makeBundle({ dir: path.join(tmp, 'bundle-true'), args: ['/bin/true'], mutate: withTmp });
    const sleepBundle = await makeBundle({ dir: path.join(tmp, 'bundle-sleep'), args: ['sleep', '1000'], mutate: withTmp });
    // bb: how to call busybox's applets (plain names in the bundle; on the host, through the
    // bundle's static busybox, so that the native run uses the same tar and not the host's)
    const untarCmd = (bb, data, dir) => `${bb}mkdir ${dir} && ${bb}tar -xzf ${data} -C ${dir} && ${bb}test -f ${dir}/${treeFile(opts.files - 1)}`;
    const tarBundle = await makeBundle({ dir: path.join(tmp, 'bundle-tar'), args: ['/bin/sh', '-c', untarCmd('', '/data.tgz', '/tmp/x')], mutate: withTmp });
    const busybox = path.join(tarBundle, 'rootfs/bin/busybox');
    makeTarball(tmp, path.join(tarBundle, 'rootfs/data.tgz'), opts.files, busybox);
    const pyEnv = ['PYTHONDONTWRITEBYTECODE=1'];
    const pyCmd = [PYTHON, '-c', PY_IMPORTS];
    // the host's /usr and /etc bound read-only; /bin, /lib, /lib64 and /sbin as on the host:
    // symlinks into usr/ on a merged-/usr system, else bound read-only too
    const binds = ['/usr', '/etc'];
    const links = [];
    for (const d of ['/bin', '/lib', '/lib64', '/sbin']) {
      const st = fs.lstatSync(d, { throwIfNoEntry: false });
      if (st?.isSymbolicLink()) links.push([d, fs.readlinkSync(d)]);
      else if (st?.isDirectory()) binds.push(d);
    }
    const pyBundle = await makeBundle({
      dir: path.join(tmp, 'bundle-python'),
      args: pyCmd,
      mutate: (s) => {
        s.root = { path: 'hostroot', readonly: true };
        s.process.env = [`PATH=${HOST_PATH}`, ...pyEnv];
        withTmp(s);
        for (const d of binds) s.mounts.push({ destination: d, type: 'bind', source: d, options: ['rbind', 'ro', 'nosuid', 'nodev'] });
      },
    });
    fs.rmSync(path.join(pyBundle, 'rootfs'), { recursive: true, force: true }); // the busybox copy is not used
    const hostroot = path.join(pyBundle, 'hostroot');
    for (const d of ['proc', 'dev', 'sys', 'tmp', ...binds]) fs.mkdirSync(path.join(hostroot, d), { recursive: true, mode: 0o755 });
    for (const [l, target] of links) fs.symlinkSync(target, path.join(hostroot, l));

    console.log(`moat sentry bench: ${opts.iterations} timed runs per runtime and measure (+1 warm-up)${opts.quick ? ', --quick' : ''}; medians`);
    console.log(`  native: the programs run on the host`);
    console.log(`  runc:   ${runc ? runc.label : `n/a (${missing.runc})`}`);
    console.log(`  runsc:  ${runsc ? `${runsc.label} ${RUNSC_FLAGS.join(' ')}` : `n/a (${missing.runsc})`}`);
    console.log(`  moat:   ${moat ? moat.label : `n/a (${missing.moat})`}`);
    console.log(`  files:  ${tmp}`);
    // wake-ups between tasks cost far more when the other CPUs are idle (on a VM, waking a halted
    // vCPU): the served and ptrace'd calls measure differently on a busy and on a quiet machine,
    // so every timed run waits for a quiet machine first (settle), and this says what it was like
    const load = os.loadavg()[0];
    const cpus = os.availableParallelism?.() ?? os.cpus().length;
    console.log(`  load:   ${load.toFixed(2)} on ${cpus} CPUs${load > cpus / 2 ? ' (busy: other work is running; per-call costs of served and ptrace\'d calls depend on it)' : ''}`);

    // ---- (a) per-syscall cost
    const parseSys = (output, _ms, col) => {
      const m = {};
      for (const line of output.split('\n')) {
        const kv = /^(\S+) (.*)$/.exec(line.trim());
        if (kv) m[kv[1]] = kv[2];
      }
      const sample = {};
      for (const s of SYSCALLS) {
        const v = Number(m[s.key]);
        if (!(v > 0)) throw new RuntimeFailure(`${col.name}: no "${s.key}" measure in:\n${tail(output)}`, { cause: { short: `bad output: ${lastLine(output) ?? '(none)'}` } });
        sample[s.key] = v / 1000; // ns -> µs
      }
      col.inside ??= `kernel ${m.uname ?? '?'}, Seccomp ${m.seccomp ?? '?'}`;
      return sample;
    };
    // the fast path's floor: what every sandbox under a seccomp filter with an overlay root
    // pays (Moat's sentry has both: its filter, and the per-container overlay over the host
    // root): the program on the host, in a private mount namespace whose overlay of "/" (upper
    // on a tmpfs) it runs and reads itself from, under one allow-all filter
    const floorScript = [
      'set -e',
      `o=${tmp}/floor-ovl`,
      'mkdir -p $o',
      'mount -t tmpfs -o mode=0755 tmpfs $o',
      'mkdir $o/upper $o/work $o/merged',
      'mount -t overlay overlay -o lowerdir=/,upperdir=$o/upper,workdir=$o/work $o/merged',
      `exec ${filtered} ${loopArgs(`$o/merged${prog}`, hostTmpfs).join(' ')}`,
    ].join('\n');
    const sysCols = [
      column('native', [{ label: 'host', run: () => exec(loopArgs(prog, hostTmpfs), { what: 'native bench-sys' }) }]),
      column(FAST_FLOOR, [{ label: 'host', run: () => exec(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', floorScript], { env: { PATH: HOST_PATH }, what: 'bench-sys under a filter on an overlay' }) }],
        which('unshare') ? undefined : 'unshare (util-linux) not found'),
      column('runc', runc ? [{ label: 'bundle', run: (id) => runBundle(runc, [], sysBundle, id) }] : [], missing.runc),
      // runc as containerd and Docker run it: the bundle's rootfs an overlay (the overlayfs
      // snapshotter's), here mounted over the rootfs in a private mount namespace of runc's
      column(RUNC_OVERLAY, runc && which('unshare') ? [{ label: 'bundle', run: (id) => runOverlaid(runc, sysBundle, id, path.join(tmp, 'runc-ovl')) }] : [],
        missing.runc ?? (which('unshare') ? undefined : 'unshare (util-linux) not found')),
      column('runsc', runsc ? [{ label: 'bundle', run: (id) => runBundle(runsc, [], sysBundle, id) }] : [], missing.runsc),
      column(
        'moat sentry',
        moat
          ? [
              { label: 'embedded (run -- PROG)', run: (id) => runEmbedded(moat, ['--isolation', 'sentry'], loopArgs(prog, '/tmp'), id) },
              { label: 'bundle (run -b BUNDLE ID)', run: (id) => runBundle(moat, ['--isolation', 'sentry'], sysBundle, id) },
            ]
          : [],
        missing.moat,
      ),
      // the floor of the sentry's design: the same kernel work per served call, in plain C
      column(C_SENTRY, [{ label: 'host', run: () => exec([cSentry, ...loopArgs(prog, hostTmpfs)], { env: { PATH: HOST_PATH }, what: 'bench-sys under the C sentry' }) }], cSentryMissing),
    ];
    console.log(`\n(a) per-call cost in µs: ${opts.served} open+close and stat, ${opts.fast} getppid and pread of 4 KiB per run (after a warm-up pass)`);
    await measure(sysCols, opts.iterations, 'sys', parseSys);
    const floor = await measureFloor(opts, tmp, cc);
    const med = Object.fromEntries(sysCols.map((c) => [c.name, c.error === undefined ? Object.fromEntries(SYSCALLS.map((s) => [s.key, median(c.samples.map((x) => x[s.key]))])) : undefined]));
    const floorMed = (mode, key) => (floor[mode].error === undefined ? median(floor[mode][key]) : undefined);
    const header = ['syscall', 'sentry path', ...sysCols.map((c) => c.name), 'C floor', 'C floor SYNC=1', 'ratio', 'target'];
    const rows = [header];
    const sysTargets = [];
    for (const s of SYSCALLS) {
      const cells = sysCols.map((c) => (c.error === undefined ? us(med[c.name][s.key]) : na(c)));
      const floorCell = (mode) => (s.floor === undefined ? '-' : floor[mode].error === undefined ? us(floorMed(mode, s.floor)) : `n/a (${clip(floor[mode].error, 32)})`);
      const sentry = med['moat sentry']?.[s.key];
      const baseName = s.path === 'served' ? 'runsc' : 'native';
      const base = med[baseName]?.[s.key];
      const target = s.path === 'served' ? SERVED_TARGET : FAST_TARGET;
      let r;
      let result;
      if (sentry !== undefined && base !== undefined) {
        r = `moat/${baseName} ${ratio(sentry, base)}`;
        result = `${ratio(sentry, base)} ${verdict(sentry / base, target)}`;
      } else {
        r = `moat/${baseName} n/a`;
        result = `n/a (${whyNA(sysCols, 'moat sentry', baseName)})`;
      }
      rows.push([s.label, s.path, ...cells, floorCell('plain'), floorCell('sync'), r, `<= ${target}`]);
      // what no implementation of the mechanism can beat here: a served call's C floor (fd
      // injection for open, a plain notified round trip otherwise) against runsc; a fast-path
      // call's cost under a filter on an overlay against native
      const fl = med[s.path === 'served' ? C_SENTRY : FAST_FLOOR]?.[s.key];
      const flWhat = s.path === 'served' ? `${C_SENTRY}: the same kernel work in plain C` : FAST_FLOOR;
      const floorNote = fl !== undefined && base !== undefined ? `; mechanism floor (${flWhat}) / ${baseName} ${ratio(fl, base)}${fl / base > target ? ', above the target' : ''}` : '';
      // a fast-path call's cost in runc as containerd runs it (an overlay root, no filter here)
      const ro = med[RUNC_OVERLAY]?.[s.key];
      const peerNote = s.path === 'fast' && ro !== undefined && base !== undefined ? `; ${RUNC_OVERLAY} / native ${ratio(ro, base)}` : '';
      sysTargets.push(`  ${s.label.padEnd(18)} (${s.path}) moat sentry / ${baseName} <= ${target}: ${result}${floorNote}${peerNote}`);
    }
    printTable(rows);
    // medians hide how much a runtime varies from one run to the next (runsc's ptrace platform
    // does, a lot, on a small VM): the spread, min-max over the timed runs
    const spread = (xs) => (xs.length ? `${us(Math.min(...xs))}-${us(Math.max(...xs))}` : 'n/a');
    const srows0 = [['spread (min-max)', ...sysCols.map((c) => c.name), 'C floor', 'C floor SYNC=1']];
    for (const s of SYSCALLS) {
      const fl = (mode) => (s.floor === undefined ? '-' : floor[mode].error === undefined ? spread(floor[mode][s.floor]) : 'n/a');
      srows0.push([s.label, ...sysCols.map((c) => (c.error === undefined ? spread(c.samples.map((x) => x[s.key])) : 'n/a')), fl('plain'), fl('sync')]);
    }
    printTable(srows0);
    printReasons([...sysCols, { name: 'C floor', error: floor.plain.error }, { name: 'C floor SYNC=1', error: floor.sync.error }]);
    const ctx = [];
    for (const c of sysCols) if (c.inside) ctx.push(`${c.name}${c.form && c.forms.length > 1 ? ` [${c.form.label}]` : ''}: ${c.inside}`);
    if (ctx.length) console.log(`inside: ${ctx.join('; ')}`);
    const runcMed = med.runc;
    const runscMed = med.runsc;
    if (runcMed && runscMed) console.log(`context: runsc/runc ${SYSCALLS.map((s) => `${s.label} ${ratio(runscMed[s.key], runcMed[s.key])}`).join(', ')}`);
    const sMed = med['moat sentry'];
    const fo = floorMed('plain', 'open');
    const fg = floorMed('plain', 'getppid');
    const cMed = med[C_SENTRY];
    if (sMed && cMed) console.log(`context: moat sentry / ${C_SENTRY} (what the TypeScript layer adds to the same kernel work) ${SYSCALLS.filter((s) => s.path === 'served').map((s) => `${s.label} ${ratio(sMed[s.key], cMed[s.key])}`).join(', ')}`);
    if (sMed && fo !== undefined) console.log(`context: moat sentry open+close / C floor open+close ${ratio(sMed['open+close'], fo)} (the floor serves no path lookup)`);
    if (fg !== undefined && fo !== undefined) console.log(`C floor: a notified getppid round trip costs ${us(fg)} µs plain${floorMed('sync', 'getppid') !== undefined ? `, ${us(floorMed('sync', 'getppid'))} µs with SYNC=1` : ''}`);
    summary.push('served and fast system calls:', ...sysTargets);
    for (const c of sysCols) notes.push(...c.notes);

    // ---- (b) start-up
    const parseRun = (_output, ms) => ms;
    const startCols = [
      column('runc', runc ? [{ label: 'bundle', run: (id) => runBundle(runc, [], trueBundle, id) }] : [], missing.runc),
      column('runsc', runsc ? [{ label: 'bundle', run: (id) => runBundle(runsc, [], trueBundle, id) }] : [], missing.runsc),
      column('moat', moat ? [{ label: 'bundle', run: (id) => runBundle(moat, [], trueBundle, id) }] : [], missing.moat),
      column('moat sentry', moat ? [{ label: 'bundle', run: (id) => runBundle(moat, ['--isolation', 'sentry'], trueBundle, id) }] : [], missing.moat),
      // the same with no warm standby, neither of the CLI nor of the sentry: every process boots
      column(COLD_SENTRY, moat ? [{ label: 'bundle', run: (id) => runBundle(moat, ['--isolation', 'sentry'], trueBundle, id, NO_STANDBYS) }] : [], missing.moat),
      // what a CLI in Node costs: the interpreter's own start, and Moat's CLI doing nothing
      column(NODE_FLOOR, [{ label: 'host', run: () => exec([process.execPath, '-e', '0'], { env: { PATH: HOST_PATH }, what: 'node -e 0' }) }]),
      column('moat --version', moat ? [{ label: 'host', run: () => exec([...moat.cmd, '--version'], { env: moatEnv(), what: 'moat --version' }) }] : [], missing.moat),
    ];
    console.log(`\n(b) start-up: run of /bin/true in the busybox bundle (create+start+wait+delete, fresh id), wall ms`);
    // every timed run starts on a quiet machine, 0.5 s after the one before: no runtime's
    // background work (a run's teardown, a standby Moat starts for the next command) lands in
    // the next run's time
    await measure(startCols, opts.iterations, 'start', parseRun, STARTUP_PAUSE_MS);
    const srows = [['runtime', 'median', 'p90', 'min', 'max']];
    const st = {};
    for (const c of startCols) {
      if (c.error !== undefined) {
        srows.push([c.name, na(c), '', '', '']);
        continue;
      }
      const s = stats(c.samples);
      st[c.name] = s.median;
      srows.push([c.name, ms1(s.median), ms1(s.p90), ms1(s.min), ms1(s.max)]);
    }
    printTable(srows);
    printReasons(startCols);
    const pair = (a, b) => (st[a] !== undefined && st[b] !== undefined ? ratio(st[a], st[b]) : 'n/a');
    console.log(`ratios: moat sentry/runsc ${pair('moat sentry', 'runsc')} (target <= ${STARTUP_TARGET}), ${COLD_SENTRY}/runsc ${pair(COLD_SENTRY, 'runsc')}, moat sentry/moat ${pair('moat sentry', 'moat')}, moat/runc ${pair('moat', 'runc')}, runsc/runc ${pair('runsc', 'runc')}`);
    console.log(`moat runs through ${moat?.cmd.join(' ') ?? 'n/a'}; "${COLD_SENTRY}": MOAT_CLI_STANDBY=0 MOAT_SENTRY_STANDBY=0 (a cold Node CLI and a cold sentry)`);
    {
      const s = st['moat sentry'];
      const b = st.runsc;
      const c = st[COLD_SENTRY];
      const coldNote = c !== undefined && b !== undefined ? `; with no standbys ${ratio(c, b)}` : '';
      summary.push(`start-up (run /bin/true):`, `  moat sentry / runsc <= ${STARTUP_TARGET}: ${s !== undefined && b !== undefined ? `${ratio(s, b)} ${verdict(s / b, STARTUP_TARGET)}${coldNote}` : `n/a (${whyNA(startCols, 'moat sentry', 'runsc')})`}`);
    }
    for (const c of startCols) notes.push(...c.notes);

    // ---- (c) workloads
    console.log(`\n(c) workloads, wall ms of the whole run (start-up included)`);
    const shm = fs.existsSync('/dev/shm') ? '/dev/shm' : tmp;
    const nativeUntar = () => {
      const dir = fs.mkdtempSync(path.join(shm, 'moat-bench-untar-'));
      try {
        const cmd = untarCmd(`${busybox} `, path.join(tarBundle, 'rootfs/data.tgz'), `${dir}/x`);
        return exec([busybox, 'sh', '-c', cmd], { env: { PATH: HOST_PATH }, what: 'native untar' });
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    };
    const workloads = [
      {
        label: `untar ${opts.files} files`,
        tag: 'tar',
        cols: [
          column('native', [{ label: 'host', run: nativeUntar }]),
          column('runc', runc ? [{ label: 'bundle', run: (id) => runBundle(runc, [], tarBundle, id) }] : [], missing.runc),
          column('runsc', runsc ? [{ label: 'bundle', run: (id) => runBundle(runsc, [], tarBundle, id) }] : [], missing.runsc),
          column('moat', moat ? [{ label: 'bundle', run: (id) => runBundle(moat, [], tarBundle, id) }] : [], missing.moat),
          column('moat sentry', moat ? [{ label: 'bundle', run: (id) => runBundle(moat, ['--isolation', 'sentry'], tarBundle, id) }] : [], missing.moat),
        ],
      },
      {
        label: 'python3 imports',
        tag: 'py',
        cols: [
          column('native', [{ label: 'host', run: () => exec(pyCmd, { env: { PATH: HOST_PATH, PYTHONDONTWRITEBYTECODE: '1' }, what: 'native python3' }) }]),
          column('runc', runc ? [{ label: 'host /usr bundle', run: (id) => runBundle(runc, [], pyBundle, id) }] : [], missing.runc),
          column('runsc', runsc ? [{ label: 'host /usr bundle', run: (id) => runBundle(runsc, [], pyBundle, id) }] : [], missing.runsc),
          column('moat', moat ? [{ label: 'embedded', run: (id) => runEmbedded(moat, [], pyCmd, id, pyEnv) }] : [], missing.moat),
          column(
            'moat sentry',
            moat
              ? [
                  { label: 'embedded', run: (id) => runEmbedded(moat, ['--isolation', 'sentry'], pyCmd, id, pyEnv) },
                  { label: 'host /usr bundle', run: (id) => runBundle(moat, ['--isolation', 'sentry'], pyBundle, id) },
                ]
              : [],
            missing.moat,
          ),
        ],
      },
    ];
    if (!fs.existsSync(PYTHON)) for (const c of workloads[1].cols) c.error ??= `${PYTHON} not found on the host`;
    for (const w of workloads) await measure(w.cols, opts.iterations, w.tag, parseRun);
    const names = workloads[0].cols.map((c) => c.name);
    const wrows = [['workload', ...names, 'moat sentry/runsc', 'moat sentry/runc']];
    const wsum = [];
    for (const w of workloads) {
      const m = Object.fromEntries(w.cols.map((c) => [c.name, c.error === undefined ? median(c.samples) : undefined]));
      const rr = (a, b) => (m[a] !== undefined && m[b] !== undefined ? ratio(m[a], m[b]) : 'n/a');
      wrows.push([w.label, ...w.cols.map((c) => (c.error === undefined ? ms1(m[c.name]) : na(c))), rr('moat sentry', 'runsc'), rr('moat sentry', 'runc')]);
      const wr = rr('moat sentry', 'runsc');
      wsum.push(`  ${w.label}: moat sentry / runsc ${wr === 'n/a' ? `n/a (${whyNA(w.cols, 'moat sentry', 'runsc')})` : wr} (no target; for information)`);
      for (const c of w.cols) notes.push(...c.notes.map((n) => `[${w.label}] ${n}`));
      const forms = w.cols.filter((c) => c.form && c.forms.length > 1).map((c) => `${c.name} ran ${c.form.label}`);
      if (forms.length) notes.push(`[${w.label}] ${forms.join('; ')}`);
    }
    printTable(wrows);
    for (const w of workloads) printReasons(w.cols.map((c) => ({ name: `${w.label}, ${c.name}`, error: c.error })));
    console.log(`untar: busybox tar -xzf into a tmpfs /tmp (native: into ${shm}); python: ${PYTHON} -c "${PY_IMPORTS}", PYTHONDONTWRITEBYTECODE=1`);
    summary.push('workloads:', ...wsum);

    // ---- (d) memory of the sandbox machinery
    console.log(`\n(d) memory per sandbox: the sentry process and its watcher (moat) and runsc's sandbox and gofer processes, K=${MEM_SANDBOXES} detached "sleep 1000" sandboxes each, KiB`);
    const mrows = [['runtime', 'processes', 'RSS each', 'PSS each']];
    for (const [name, rt, flags, pick] of [
      ['moat sentry', moat, ['--isolation', 'sentry'], (cmd) => cmd.includes('--sentry') || cmd.startsWith('moat-watch\0')],
      ['runsc', runsc, [], (cmd) => /runsc(-sandbox|-gofer)?\0/.test(cmd) && !/\0(create|start|kill|delete|state)\0/.test(cmd)],
    ]) {
      if (!rt) {
        mrows.push([name, `n/a (${name === 'runsc' ? missing.runsc : missing.moat})`, '', '']);
        continue;
      }
      const ids = [];
      try {
        for (let i = 0; i < MEM_SANDBOXES; i++) {
          const id = `mem-${name.replace(' ', '-')}-${process.pid}-${i}`;
          rt.ids.add(id);
          ids.push(id);
          const env = name.startsWith('moat') ? { env: moatEnv() } : {};
          call(rt, ['create', ...flags, '--bundle', sleepBundle, id], env);
          call(rt, ['start', id], env);
        }
        await new Promise((r) => setTimeout(r, 500));
        const procs = sandboxProcesses([...ids, sleepBundle], pick);
        const mem = procs.map(memoryOf);
        const per = (k) => mem.reduce((a, m) => a + (m[k] ?? 0), 0) / MEM_SANDBOXES;
        mrows.push([name, `${(procs.length / MEM_SANDBOXES).toFixed(1)} per sandbox`, per('rss').toFixed(0), mem.every((m) => m.pss !== undefined) ? per('pss').toFixed(0) : 'n/a']);
      } catch (err) {
        mrows.push([name, `n/a (${shortReason(err)})`, '', '']);
      } finally {
        for (const id of ids) {
          forceDelete(rt, id);
          rt.ids.delete(id);
        }
      }
    }
    printTable(mrows);
    console.log('RSS counts shared pages in full (Node or Go runtime code); PSS divides them among the processes that share them.');

    // ---- summary
    for (const [tag, n] of unsettled) notes.push(`${n} timed run(s) of "${tag}" started on a busy machine (other work kept more than 5% of the CPUs busy for 5 s)`);
    if (notes.length) {
      console.log('\nnotes:');
      for (const n of notes) console.log(`  ${n}`);
    }
    console.log(`\nsummary (targets), ${((Date.now() - t0) / 1000).toFixed(0)} s in all:`);
    for (const l of summary) console.log(`  ${l}`);
    return 0;
  } catch (err) {
    return reportFailure(err);
  } finally {
    interrupt.stopped = false; // cleanup must run even after Ctrl-C
    for (const rt of runtimes) for (const id of rt.ids) forceDelete(rt, id);
    removeTemp(tmp);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main();
