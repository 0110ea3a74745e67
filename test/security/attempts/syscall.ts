/**
 * Dangerous kernel interfaces reached by plain system calls: eBPF, perf events, userfaultfd,
 * the kernel keyrings, io_uring, kexec, module loading and new user namespaces. Each workload
 * makes the call (harmlessly: nothing is loaded, no kernel is replaced, any key it adds it
 * invalidates) and prints the errno's name. EPERM or ENOSYS means the call was stopped (by the
 * seccomp filter, the sentry, or the kernel's own privilege check); success or any other errno
 * (EINVAL, EFAULT, EACCES, ENOEXEC...) means the call reached the host kernel's code for it and
 * had its arguments checked there: that is the escape, but only when the kernel is the host's
 * (same boot id). A microVM's guest kernel has its own boot id, gVisor's (runsc) kernel has no
 * boot id but its own release; Moat's sentry synthesizes /proc without one, and since it lets
 * some calls through to the host kernel, a call that got past it counts as reaching the host.
 */
import { readFileSync } from 'node:fs';
import { blocked, escaped, excerpt, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';

/** Errnos that mean "stopped before the kernel's code for the call ran". */
const STOPPED = new Set(['EPERM', 'ENOSYS']);

const HOST_RELEASE = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();

/**
 * Whether the workload's calls went to the host's kernel: the same boot id; else, under Moat's
 * sentry, yes (it serves calls itself or lets them through to the host kernel, and reports a
 * fixed kernel identity); else a different kernel release (gVisor's own, which has no boot id)
 * says no.
 */
function onHostKernel(t: Trial, r: Map<string, string>): boolean {
  const boot = r.get('BOOT');
  if (boot) return boot === t.hostBootId;
  if (t.runtime === 'moat-sentry') return true;
  const release = r.get('KREL');
  return !release || release === HOST_RELEASE;
}

/** The kernel a workload ran on, for a verdict's detail. */
function kernelOf(r: Map<string, string>): string {
  return r.has('BOOT') ? `boot id ${r.get('BOOT')}` : `release ${r.get('KREL') ?? '?'}`;
}

/**
 * A judge for calls reported as KEY=OK or KEY=ERRNAME: escaped when one of `keys` succeeded or
 * failed with an errno other than EPERM/ENOSYS on the host kernel; `okOnly` keys count only
 * when they succeeded (e.g. opening a device node that is simply absent).
 */
function judgeCalls(keys: string[], okOnly: string[] = []) {
  return (t: Trial, out: RunOutput): Verdict => {
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    const r = report(out);
    const seen = [...keys, ...okOnly].map((k) => `${k}=${r.get(k) ?? '?'}`).join(' ');
    const reached = [
      ...keys.filter((k) => r.has(k) && !STOPPED.has(r.get(k) ?? '')),
      ...okOnly.filter((k) => r.get(k) === 'OK'),
    ];
    if (keys.some((k) => !r.has(k))) return trialError(`a call was not reported: ${seen}`);
    if (reached.length === 0) return blocked(`stopped: ${seen}`);
    if (onHostKernel(t, r)) return escaped(`the host kernel took the call: ${seen}`);
    return blocked(`reached only a kernel other than the host's (${kernelOf(r)}): ${seen}`);
  };
}

/** Common C: headers, errno names, the boot id, the alarm. */
const PRELUDE = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>

static const char *ename(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "EUNKNOWN";
}
/* KEY=OK when r >= 0, else KEY=<errno name> (errno as it was right after the call) */
static long res(const char *key, long r, int e) {
  if (r >= 0) printf("%s=OK\n", key);
  else printf("%s=%s\n", key, ename(e));
  return r;
}
#define CALL(key, expr) ({ errno = 0; long r_ = (long)(expr); res(key, r_, errno); })
static void boot(void) {
  char b[80] = {0};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, b, sizeof b - 1);
  close(fd);
  if (n <= 0) return;
  b[strcspn(b, "\n")] = 0;
  printf("BOOT=%s\n", b);
}
static void start(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  struct utsname u;
  if (uname(&u) == 0) printf("KREL=%s\n", u.release);
}
`;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'syscall-bpf-prog-load',
    category: 'syscall',
    title: 'loads a trivial eBPF socket filter (r0 = 0; exit) with bpf(BPF_PROG_LOAD)',
    shows: 'bpf() is refused (EPERM) before the host kernel\'s verifier sees the program',
    c: String.raw`${PRELUDE}
#include <linux/bpf.h>
int main(void) {
  start();
  struct bpf_insn insns[2];
  memset(insns, 0, sizeof insns);
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = 0 */
  insns[1].code = BPF_JMP | BPF_EXIT;
  char log[256] = {0};
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = 2;
  a.license = (uint64_t)(uintptr_t)"GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof log;
  a.log_level = 1;
  long fd = CALL("PROG_LOAD", syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof a));
  if (fd >= 0) close((int)fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['PROG_LOAD']),
  },
  {
    id: 'syscall-bpf-map-create',
    category: 'syscall',
    title: 'creates an eBPF array map with bpf(BPF_MAP_CREATE)',
    shows: 'bpf() is refused (EPERM): no eBPF object is created in the host kernel',
    c: String.raw`${PRELUDE}
#include <linux/bpf.h>
int main(void) {
  start();
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = 4;
  a.value_size = 4;
  a.max_entries = 1;
  long fd = CALL("MAP_CREATE", syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a));
  if (fd >= 0) close((int)fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['MAP_CREATE']),
  },
  {
    id: 'syscall-perf-event-open',
    category: 'syscall',
    title: 'opens perf events: a software CPU-clock counter on host CPU 0 (pid -1) and one on itself',
    shows: 'perf_event_open is refused (EPERM) before the host kernel\'s perf subsystem checks it',
    c: String.raw`${PRELUDE}
#include <linux/perf_event.h>
int main(void) {
  start();
  struct perf_event_attr a;
  memset(&a, 0, sizeof a);
  a.type = PERF_TYPE_SOFTWARE;
  a.size = sizeof a;
  a.config = PERF_COUNT_SW_CPU_CLOCK;
  a.disabled = 1;
  /* every task on CPU 0: host-wide data, needs CAP_PERFMON (EACCES from the kernel's paranoid check) */
  long fd = CALL("PERF_CPU", syscall(SYS_perf_event_open, &a, -1, 0, -1, 0));
  if (fd >= 0) close((int)fd);
  /* its own user-space time: allowed by the host kernel to anyone at perf_event_paranoid <= 2 */
  a.exclude_kernel = 1;
  a.exclude_hv = 1;
  fd = CALL("PERF_SELF", syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
  if (fd >= 0) close((int)fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['PERF_CPU', 'PERF_SELF']),
  },
  {
    id: 'syscall-userfaultfd',
    category: 'syscall',
    title: 'creates a userfaultfd (user-mode-only, then full) and opens /dev/userfaultfd (an exploit\'s race aid)',
    shows: 'userfaultfd is refused (EPERM) and the device node is absent',
    c: String.raw`${PRELUDE}
#include <linux/userfaultfd.h>
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
int main(void) {
  start();
  /* user-mode-only faults: the host kernel grants this one to anybody */
  long fd = CALL("UFFD_USER", syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
  if (fd >= 0) {
    struct uffdio_api api = { .api = UFFD_API };
    CALL("UFFD_API", ioctl((int)fd, UFFDIO_API, &api));
    close((int)fd);
  }
  fd = CALL("UFFD_FULL", syscall(SYS_userfaultfd, O_CLOEXEC));
  if (fd >= 0) close((int)fd);
  fd = CALL("DEV_UFFD", open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (fd >= 0) close((int)fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['UFFD_USER', 'UFFD_FULL'], ['DEV_UFFD']),
  },
  {
    id: 'syscall-keyctl-user-keyring',
    category: 'syscall',
    title: 'reaches root\'s user keyring in the (un-namespaced) kernel key store: keyctl GET_KEYRING_ID + DESCRIBE',
    shows: 'keyctl is refused (EPERM): the host\'s keyrings stay out of reach',
    c: String.raw`${PRELUDE}
#include <linux/keyctl.h>
int main(void) {
  start();
  long id = CALL("USER_KEYRING", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
  if (id >= 0) {
    char d[256] = {0};
    long n = CALL("DESCRIBE", syscall(SYS_keyctl, KEYCTL_DESCRIBE, id, d, sizeof d - 1));
    if (n > 0) printf("DESC=%s\n", d);
  }
  CALL("SESSION_KEYRING", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['USER_KEYRING', 'SESSION_KEYRING'], ['DESCRIBE']),
  },
  {
    id: 'syscall-add-key',
    category: 'syscall',
    title: 'adds a "user" key to its session keyring with add_key (kernel memory outside any cgroup)',
    shows: 'add_key is refused (EPERM): nothing is stored in the host kernel\'s key store',
    c: String.raw`${PRELUDE}
#include <linux/keyctl.h>
int main(void) {
  start();
  long k = CALL("ADD_KEY", syscall(SYS_add_key, "user", "moat-breakout-test", "x", 1, KEY_SPEC_SESSION_KEYRING));
  if (k >= 0) CALL("INVALIDATE", syscall(SYS_keyctl, KEYCTL_INVALIDATE, k)); /* leave nothing behind */
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['ADD_KEY']),
  },
  {
    id: 'syscall-io-uring-setup',
    category: 'syscall',
    title: 'sets up an io_uring instance (its submissions bypass seccomp; a large host attack surface)',
    shows: 'io_uring_setup is refused (EPERM/ENOSYS)',
    c: String.raw`${PRELUDE}
#include <linux/io_uring.h>
int main(void) {
  start();
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  long fd = CALL("IO_URING", syscall(SYS_io_uring_setup, 4, &p));
  if (fd >= 0) close((int)fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['IO_URING']),
  },
  {
    id: 'syscall-kexec-load',
    category: 'syscall',
    title: 'calls kexec_load (zero segments, a foreign architecture) and kexec_file_load (an unknown flag)',
    shows: 'both are refused (EPERM/ENOSYS) before the kernel looks at their arguments',
    // harmless even where permitted: the foreign arch and the unknown flag are rejected (EINVAL)
    // right after the permission checks, before anything is loaded or unloaded
    c: String.raw`${PRELUDE}
#include <linux/kexec.h>
int main(void) {
  start();
  CALL("KEXEC_LOAD", syscall(SYS_kexec_load, 0UL, 0UL, NULL, (unsigned long)KEXEC_ARCH_ARM));
  CALL("KEXEC_FILE", syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0x80000000UL));
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['KEXEC_LOAD', 'KEXEC_FILE']),
  },
  {
    id: 'syscall-init-module',
    category: 'syscall',
    title: 'hands the module loader an empty image: init_module (0 bytes) and finit_module (an empty memfd)',
    shows: 'module loading is refused (EPERM/ENOSYS); EINVAL/ENOEXEC would mean the loader parsed it',
    c: String.raw`${PRELUDE}
int main(void) {
  start();
  static char img[64];
  CALL("INIT_MODULE", syscall(SYS_init_module, img, 0UL, ""));
  int fd = memfd_create("empty.ko", MFD_CLOEXEC);
  if (fd < 0) fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CALL("FINIT_MODULE", syscall(SYS_finit_module, fd, "", 0));
  if (fd >= 0) close(fd);
  printf("DONE=1\n");
  return 0;
}
`,
    judge: judgeCalls(['INIT_MODULE', 'FINIT_MODULE']),
  },
  {
    id: 'syscall-userns-caps',
    category: 'syscall',
    title: 'creates a user namespace (unshare, then clone, then clone3) to regain all capabilities and mount a tmpfs',
    shows: 'no new user namespace: unshare/clone with CLONE_NEWUSER are refused (EPERM), clone3 ENOSYS',
    c: String.raw`${PRELUDE}
#include <linux/sched.h>
static void put(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) { if (write(fd, s, strlen(s)) < 0) {} close(fd); }
}
/* inside the new user namespace: map root, show the capabilities, mount a tmpfs */
static void regain(const char *how) {
  printf("USERNS=%s\n", how);
  put("/proc/self/setgroups", "deny");
  put("/proc/self/uid_map", "0 0 1");
  put("/proc/self/gid_map", "0 0 1");
  char buf[4096] = {0};
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    char *c = n > 0 ? strstr(buf, "CapEff:") : NULL;
    if (c) { c[strcspn(c, "\n")] = 0; printf("CAPEFF=%s\n", c + 7 + strspn(c + 7, " \t")); }
  }
  if (CALL("MOUNT", mount("none", "/tmp", "tmpfs", 0, "size=1m")) == 0) umount2("/tmp", MNT_DETACH);
}
int main(void) {
  start();
  if (CALL("UNSHARE", syscall(SYS_unshare, CLONE_NEWUSER | CLONE_NEWNS)) == 0) {
    regain("unshare");
  } else {
    long p = CALL("CLONE", syscall(SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0));
    if (p == 0) { regain("clone"); _exit(0); }
    if (p > 0) waitpid((pid_t)p, NULL, 0);
    else {
      struct clone_args ca;
      memset(&ca, 0, sizeof ca);
      ca.flags = CLONE_NEWUSER | CLONE_NEWNS;
      ca.exit_signal = SIGCHLD;
      p = CALL("CLONE3", syscall(SYS_clone3, &ca, sizeof ca));
      if (p == 0) { regain("clone3"); _exit(0); }
      if (p > 0) waitpid((pid_t)p, NULL, 0);
    }
  }
  printf("DONE=1\n");
  return 0;
}
`,
    judge: (t, out) => {
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const r = report(out);
      const seen = ['UNSHARE', 'CLONE', 'CLONE3', 'USERNS', 'CAPEFF', 'MOUNT'].filter((k) => r.has(k)).map((k) => `${k}=${r.get(k)}`).join(' ');
      if (!r.has('UNSHARE')) return trialError(`unshare was not reported: ${excerpt(out)}`);
      if (!r.has('USERNS')) return blocked(`no user namespace: ${seen}`);
      if (onHostKernel(t, r)) return escaped(`the host kernel gave the container a user namespace with full capabilities: ${seen}`);
      return blocked(`a user namespace of a kernel other than the host's (${kernelOf(r)}): ${seen}`);
    },
  },
];
