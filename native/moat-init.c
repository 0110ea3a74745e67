/*
 * moat-init: Moat's pre-exec stage. It executes a container set-up plan that the TypeScript
 * runtime has already validated, then execs the container's program. It decides nothing on its
 * own: every path, flag and id comes from the plan, in the order the plan gives.
 *
 * Build line (scripts/build.mjs runs it during `npm ci`):
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -fno-strict-aliasing -static \
 *      -o dist/moat-init native/moat-init.c
 *
 * Invocation: moat-init PLAN_FD SYNC_FD
 *   It first re-executes itself from a sealed memfd copy (run_from_sealed_copy: CVE-2019-5736).
 *   PLAN_FD  a pipe carrying the whole plan; read to EOF.
 *   SYNC_FD  a unix stream socket to the runtime (both directions).
 *   Fds 3 .. 3+N-1 (N from the PRESERVE_FDS record) are handed to the container unchanged;
 *   every other fd is close-on-exec by the time the container program runs.
 *
 * Plan format (all integers little-endian):
 *   header  "MOATPLAN" u32 version(=1) u32 body_length
 *   body    records: u32 tag, u32 length, payload[length]
 *   payload fields: u32 | u64 | str (u32 n, n bytes, no NUL) | strv (u32 count, count x str) |
 *           bytes (u32 n, n bytes)
 *   Tags and payloads are listed in `enum tag` below; rootfs operations (tags 20..39) run in
 *   plan order inside the container's namespaces; the other records are settings.
 *
 * Processes:
 *   P  (this process, host namespaces) forks S1 and writes the user-namespace maps for it. With
 *      MONITOR=1 it stays to wait for the container and reports its exit status.
 *   S1 joins namespaces by path, unshares new ones, and clones S2 with CLONE_PARENT, so the
 *      container init is P's child; S1 then exits.
 *   S2 (the container init) waits for the runtime's GO, sets up the rootfs, drops privileges,
 *      reports READY, blocks opening the exec fifo for writing until `moat start` opens it
 *      for reading, runs startContainer hooks, and execs the program.
 *   `moat exec` sends a plan with no rootfs operations and no exec fifo: S1 joins every
 *      namespace of the running container and S2 execs the new process right after READY.
 *
 * Sync protocol:
 *   stage -> runtime: one JSON object per line:
 *     {"type":"pid","pid":N}      host pid of S2 (from P)
 *     {"type":"hooks"}            S2 reached the createRuntime hook point; waits for RESUME
 *     {"type":"ready"}            S2 is set up and about to block on the exec fifo
 *     {"type":"error","op":"...","path":"...","errno":N,"message":"..."}
 *     {"type":"exit","status":N,"signal":N}   (P, MONITOR=1 only)
 *   runtime -> stage: frames u8 type, u32 length, payload:
 *     'G' go: cgroups are placed, S2 may continue; payload (may be empty): u32 S2's host pid,
 *         str the container state JSON, both forwarded to the seccomp listener
 *     'R' resume: u32 n, state JSON for createContainer hooks, u32 m, state JSON for
 *         startContainer hooks
 *     'A' abort (empty): S2 exits at once
 *
 * Sentry hand-over (SENTRY_FILTER, with SECCOMP_LISTENER naming the sentry's socket): right
 * before execve, S2 loads the sentry's filter with a new listener and writes one line on the
 * socket P connected, {"pid":HOST_PID,"fd":N}; the sentry copies fd N with pidfd_getfd(2) and
 * answers the byte 'K'. (sendmsg cannot carry the fd: the sentry itself serves sendmsg.)
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <linux/filter.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5) /* Linux 5.19 */
#endif

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

enum tag {
  /* settings read by P and S1 */
  T_NS_UNSHARE = 1,     /* u32 clone flags of namespaces to create */
  T_NS_JOIN = 2,        /* u32 nstype, str path */
  T_UID_MAP = 3,        /* str uid_map contents */
  T_GID_MAP = 4,        /* str gid_map contents */
  T_SETGROUPS_DENY = 5, /* (empty) write "deny" to setgroups before gid_map */
  T_MONITOR = 6,        /* u32 1: P waits for the container and reports its exit */
  /* rootfs operations, run by S2 in plan order */
  T_ROOT_PROPAGATION = 20, /* u64 mount flags applied to "/" (e.g. MS_SLAVE|MS_REC) */
  T_HOST_MKDIR = 21,       /* str absolute runtime-owned host path, u32 mode (run by S1, see stage1) */
  T_HOST_MOUNT = 22,       /* str source, str target (runtime-owned host path), str fstype, u64 flags, str data */
  T_ROOTFS = 23,           /* str host path, u64 propagation flags (0: none) */
  T_MOUNT = 24,            /* str source, str dest, str fstype, u64 flags, u64 propagation, str data, u32 mflags */
  T_MKNOD = 25,            /* str path, u32 mode (type|perm), u32 major, u32 minor, u32 uid, u32 gid */
  T_BIND_DEV = 26,         /* str host device path, str path */
  T_SYMLINK = 27,          /* str target, str path */
  T_SYNC_HOOKS = 28,       /* (empty) report "hooks", wait for RESUME */
  T_HOOK = 29,             /* u32 when (0 now: createContainer, 1 after start: startContainer), str path, strv args, strv env, u32 timeout s */
  T_PIVOT_ROOT = 30,       /* (empty) */
  T_MASK = 31,             /* str path */
  T_READONLY = 32,         /* str path */
  T_ROOT_READONLY = 33,    /* (empty) */
  T_SYSCTL = 34,           /* str key as a path under /proc/sys, str value */
  T_HOSTNAME = 35,         /* str */
  T_DOMAINNAME = 36,       /* str */
  T_LOOPBACK_UP = 37,      /* (empty) */
  T_MKDIR = 38,            /* str path in rootfs: directories created (0755) where missing */
  /* process settings, applied by S2 after the rootfs operations */
  T_ARGS = 40,           /* strv */
  T_ENV = 41,            /* strv */
  T_CWD = 42,            /* str */
  T_USER = 43,           /* u32 uid, u32 gid, u32 umask (0xffffffff: keep), u32 n, n x u32 groups */
  T_CAPS = 44,           /* u64 bounding, effective, permitted, inheritable, ambient */
  T_RLIMIT = 45,         /* u32 resource, u64 soft, u64 hard */
  T_NO_NEW_PRIVS = 46,   /* (empty) */
  T_CONSOLE = 47,        /* str console socket path, u32 rows, u32 cols */
  T_SECCOMP = 48,        /* u32 flags, bytes filter (struct sock_filter[]) */
  T_PRESERVE_FDS = 49,   /* u32 n */
  T_EXEC_FIFO = 50,      /* str host path where P creates the exec fifo (mode 0622) */
  T_NEW_KEYRING = 51,    /* str session keyring name */
  T_OOM_SCORE_ADJ = 52,  /* u32 (two's complement int32) */
  T_SETSID = 53,         /* (empty) start a new session even without a terminal */
  T_SECCOMP_LISTENER = 54, /* str listenerPath, str listenerMetadata: where the notify fd goes */
  T_SENTRY_FILTER = 55,  /* u32 flags, bytes filter: the sentry's filter, loaded right before execve (see below) */
  T_RESTORE_STOP = 56,   /* (empty) a restore: S2 waits for the checkpointer instead of exec (see below) */
  T_RESTORE_TREE = 57,   /* u32 n, n x (u32 pid, ppid, pgid, sid, zombie, status), u32 pipes,
                            u32 m, m x (u32 type, u32 listen, if listen: str path, u32 backlog, uid, gid, mode):
                            the tree to recreate, its pipes and unix sockets (pairs, or listeners at a path) */
  T_RESTORE_IMAGE = 58,  /* str host path of a snapshot image: opened by P (read-only, inherited, not close-on-exec)
                            so the checkpointer can map its pages into the restored processes */
};

/* mflags of T_MOUNT */
#define MF_DEST_FILE 1u       /* create the destination as a regular file */
#define MF_SYSFS_FALLBACK 2u  /* on EPERM, rbind the host /sys instead */

#define MAX_PLAN (16u << 20)
#define MAX_ITEMS 4096

struct rd { const uint8_t *p, *end; const char *what; };
struct strv { uint32_t n; char **v; };

struct hook { uint32_t when; char *path; struct strv args, env; uint32_t timeout; };

/* One process of a restored tree (pids in the container's pid namespace). */
struct tnode { uint32_t pid, ppid, pgid, sid, zombie, status; };
/* One unix socket object of a restored tree: a connected pair, or a listener bound to a path. */
struct tsock { uint32_t type, listen, backlog, uid, gid, mode; char *path; };
#define MAX_TREE 4096u

static struct plan {
  uint32_t unshare_flags;
  uint32_t njoin; uint32_t join_type[16]; char *join_path[16];
  char *uid_map, *gid_map; int setgroups_deny; int monitor;
  const uint8_t *ops; size_t ops_len;  /* the whole body, re-walked for ordered ops */
  struct strv args, env; char *cwd;
  int has_user; uint32_t uid, gid, umask_v, ngroups; gid_t *groups;
  int has_caps; uint64_t cap_bound, cap_eff, cap_perm, cap_inh, cap_amb;
  uint32_t nrlim; uint32_t rl_res[32]; uint64_t rl_soft[32], rl_hard[32];
  int nnp; char *console; uint32_t rows, cols; int host_ops;
  uint32_t seccomp_flags; uint8_t *seccomp; uint32_t seccomp_len;
  uint32_t sentry_flags; uint8_t *sentry; uint32_t sentry_len;
  uint32_t preserve; char *fifo; char *keyring; int has_oom; int32_t oom; int setsid; int restore;
  char *listener, *listener_meta;
  uint32_t nstart; struct hook start_hooks[64];
  uint32_t ntree; struct tnode *tree; uint32_t npipes; uint32_t nsocks; struct tsock *socks;
  char *restore_image;
} pl;

static int sync_fd = -1;
static int fifo_fd = -1;      /* O_PATH fd of the exec fifo, opened by P with host credentials */
static int console_fd = -1;   /* connected console socket, opened by P */
static int listener_fd = -1;  /* connected seccomp listener socket, opened by P */
static char *state_go;        /* the container state the runtime sent with GO (for the listener) */
static pid_t host_pid;        /* this process's pid as the runtime sees it (sent with GO) */
static int proc_fd = -1;      /* O_PATH fd of the host's /proc/self/fd, for post-pivot reopen */
static int root_fd = -1;      /* O_PATH fd of the container rootfs */
static char *state_create, *state_start;
static int host_ops_done;  /* S1 already ran the T_HOST_* operations (privileged case) */

/* ---------- reporting ---------- */

static void write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; return; }
    p += w; n -= (size_t)w;
  }
}

/* Appends s to buf as a JSON string body (without quotes), escaping what JSON requires. */
static size_t json_escape(char *buf, size_t cap, size_t at, const char *s) {
  for (; s && *s && at + 8 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') { buf[at++] = '\\'; buf[at++] = (char)c; }
    else if (c < 0x20) at += (size_t)snprintf(buf + at, cap - at, "\\u%04x", c);
    else buf[at++] = (char)c;
  }
  buf[at] = 0;
  return at;
}

static void send_line(const char *line) { if (sync_fd >= 0) write_all(sync_fd, line, strlen(line)); }

/* Reports a failure of `op` on `path` with errno `err` to the runtime and exits. */
static void __attribute__((noreturn)) fail(const char *op, const char *path, int err, const char *fmt, ...) {
  char detail[512] = "", msg[2048];
  if (fmt) { va_list ap; va_start(ap, fmt); vsnprintf(detail, sizeof detail, fmt, ap); va_end(ap); }
  size_t at = (size_t)snprintf(msg, sizeof msg, "{\"type\":\"error\",\"op\":\"");
  at = json_escape(msg, sizeof msg, at, op);
  at += (size_t)snprintf(msg + at, sizeof msg - at, "\",\"path\":\"");
  at = json_escape(msg, sizeof msg, at, path ? path : "");
  at += (size_t)snprintf(msg + at, sizeof msg - at, "\",\"errno\":%d,\"message\":\"", err);
  at = json_escape(msg, sizeof msg, at, detail[0] ? detail : (err ? strerror(err) : "failed"));
  snprintf(msg + at, sizeof msg - at, "\"}\n");
  if (sync_fd >= 0) send_line(msg);
  else dprintf(2, "moat-init: %s %s: %s\n", op, path ? path : "", detail[0] ? detail : strerror(err));
  _exit(1);
}

/* ---------- plan decoding ---------- */

static void need(struct rd *r, size_t n) {
  if ((size_t)(r->end - r->p) < n) fail("plan", r->what, EINVAL, "truncated plan record");
}
static uint32_t rd_u32(struct rd *r) { need(r, 4); uint32_t v; memcpy(&v, r->p, 4); r->p += 4; return v; }
static uint64_t rd_u64(struct rd *r) { need(r, 8); uint64_t v; memcpy(&v, r->p, 8); r->p += 8; return v; }
static char *rd_str(struct rd *r) {
  uint32_t n = rd_u32(r); need(r, n);
  if (memchr(r->p, 0, n)) fail("plan", r->what, EINVAL, "string with NUL byte");
  char *s = malloc((size_t)n + 1);
  if (!s) fail("plan", r->what, ENOMEM, NULL);
  memcpy(s, r->p, n); s[n] = 0; r->p += n;
  return s;
}
static struct strv rd_strv(struct rd *r) {
  struct strv v; v.n = rd_u32(r);
  if (v.n > MAX_ITEMS) fail("plan", r->what, E2BIG, "too many strings");
  v.v = calloc((size_t)v.n + 1, sizeof(char *));
  if (!v.v) fail("plan", r->what, ENOMEM, NULL);
  for (uint32_t i = 0; i < v.n; i++) v.v[i] = rd_str(r);
  return v;
}
static uint8_t *rd_bytes(struct rd *r, uint32_t *len) {
  uint32_t n = rd_u32(r); need(r, n);
  uint8_t *b = malloc(n ? n : 1);
  if (!b) fail("plan", r->what, ENOMEM, NULL);
  memcpy(b, r->p, n); r->p += n; *len = n;
  return b;
}

/* Calls fn for every record of the body in order. */
static void walk(const uint8_t *body, size_t len, void (*fn)(uint32_t tag, struct rd *r)) {
  struct rd all = { body, body + len, "record" };
  while (all.p < all.end) {
    uint32_t tag = rd_u32(&all), n = rd_u32(&all);
    need(&all, n);
    struct rd r = { all.p, all.p + n, "record" };
    fn(tag, &r);
    all.p += n;
  }
}

static void read_setting(uint32_t tag, struct rd *r) {
  switch (tag) {
  case T_NS_UNSHARE: pl.unshare_flags = rd_u32(r); break;
  case T_NS_JOIN:
    if (pl.njoin >= 16) fail("plan", "namespaces", E2BIG, "too many namespaces to join");
    pl.join_type[pl.njoin] = rd_u32(r); pl.join_path[pl.njoin] = rd_str(r); pl.njoin++;
    break;
  case T_UID_MAP: pl.uid_map = rd_str(r); break;
  case T_GID_MAP: pl.gid_map = rd_str(r); break;
  case T_SETGROUPS_DENY: pl.setgroups_deny = 1; break;
  case T_MONITOR: pl.monitor = (int)rd_u32(r); break;
  case T_ARGS: pl.args = rd_strv(r); break;
  case T_ENV: pl.env = rd_strv(r); break;
  case T_CWD: pl.cwd = rd_str(r); break;
  case T_USER:
    pl.has_user = 1; pl.uid = rd_u32(r); pl.gid = rd_u32(r); pl.umask_v = rd_u32(r);
    pl.ngroups = rd_u32(r);
    if (pl.ngroups > 65536) fail("plan", "process.user.additionalGids", E2BIG, NULL);
    pl.groups = calloc((size_t)pl.ngroups + 1, sizeof(gid_t));
    for (uint32_t i = 0; i < pl.ngroups; i++) pl.groups[i] = rd_u32(r);
    break;
  case T_CAPS:
    pl.has_caps = 1; pl.cap_bound = rd_u64(r); pl.cap_eff = rd_u64(r); pl.cap_perm = rd_u64(r);
    pl.cap_inh = rd_u64(r); pl.cap_amb = rd_u64(r);
    break;
  case T_RLIMIT:
    if (pl.nrlim >= 32) fail("plan", "process.rlimits", E2BIG, NULL);
    pl.rl_res[pl.nrlim] = rd_u32(r); pl.rl_soft[pl.nrlim] = rd_u64(r); pl.rl_hard[pl.nrlim] = rd_u64(r);
    pl.nrlim++;
    break;
  case T_NO_NEW_PRIVS: pl.nnp = 1; break;
  case T_CONSOLE: pl.console = rd_str(r); pl.rows = rd_u32(r); pl.cols = rd_u32(r); break;
  case T_SECCOMP: pl.seccomp_flags = rd_u32(r); pl.seccomp = rd_bytes(r, &pl.seccomp_len); break;
  case T_SENTRY_FILTER: pl.sentry_flags = rd_u32(r); pl.sentry = rd_bytes(r, &pl.sentry_len); break;
  case T_PRESERVE_FDS: pl.preserve = rd_u32(r); break;
  case T_EXEC_FIFO: pl.fifo = rd_str(r); break;
  case T_NEW_KEYRING: pl.keyring = rd_str(r); break;
  case T_OOM_SCORE_ADJ: pl.has_oom = 1; pl.oom = (int32_t)rd_u32(r); break;
  case T_SETSID: pl.setsid = 1; break;
  case T_RESTORE_STOP: pl.restore = 1; break;
  case T_RESTORE_IMAGE: pl.restore_image = rd_str(r); break;
  case T_RESTORE_TREE:
    pl.ntree = rd_u32(r);
    if (pl.ntree == 0 || pl.ntree > MAX_TREE) fail("plan", "restore tree", E2BIG, "%u processes", pl.ntree);
    pl.tree = calloc(pl.ntree, sizeof *pl.tree);
    if (!pl.tree) fail("plan", "restore tree", ENOMEM, NULL);
    for (uint32_t i = 0; i < pl.ntree; i++) {
      struct tnode *t = &pl.tree[i];
      t->pid = rd_u32(r); t->ppid = rd_u32(r); t->pgid = rd_u32(r); t->sid = rd_u32(r);
      t->zombie = rd_u32(r); t->status = rd_u32(r);
    }
    pl.npipes = rd_u32(r);
    if (pl.npipes > 512) fail("plan", "restore tree", E2BIG, "%u pipes", pl.npipes);
    pl.nsocks = rd_u32(r);
    if (pl.nsocks > 512) fail("plan", "restore tree", E2BIG, "%u sockets", pl.nsocks);
    pl.socks = calloc(pl.nsocks + 1, sizeof *pl.socks);
    if (!pl.socks) fail("plan", "restore tree", ENOMEM, NULL);
    for (uint32_t i = 0; i < pl.nsocks; i++) {
      struct tsock *k = &pl.socks[i];
      k->type = rd_u32(r); k->listen = rd_u32(r);
      if (k->listen) { k->path = rd_str(r); k->backlog = rd_u32(r); k->uid = rd_u32(r); k->gid = rd_u32(r); k->mode = rd_u32(r); }
    }
    break;
  case T_SECCOMP_LISTENER: pl.listener = rd_str(r); pl.listener_meta = rd_str(r); break;
  case T_HOST_MKDIR: case T_HOST_MOUNT: pl.host_ops = 1; break;
  case T_HOOK: {
    struct hook h; h.when = rd_u32(r); h.path = rd_str(r); h.args = rd_strv(r); h.env = rd_strv(r);
    h.timeout = rd_u32(r);
    if (h.when == 1) {
      if (pl.nstart >= 64) fail("plan", "hooks.startContainer", E2BIG, NULL);
      pl.start_hooks[pl.nstart++] = h;
    }
    break;
  }
  default: break; /* rootfs operations are run later, in order */
  }
}

static void read_plan(int fd) {
  size_t cap = 65536, len = 0;
  uint8_t *buf = malloc(cap);
  if (!buf) fail("plan", "", ENOMEM, NULL);
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_PLAN) fail("plan", "", E2BIG, "plan larger than %u bytes", MAX_PLAN);
      cap *= 2; buf = realloc(buf, cap);
      if (!buf) fail("plan", "", ENOMEM, NULL);
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0) { if (errno == EINTR) continue; fail("plan", "", errno, "reading the plan"); }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  if (len < 16 || memcmp(buf, "MOATPLAN", 8) != 0) fail("plan", "", EINVAL, "bad plan header");
  uint32_t version, body;
  memcpy(&version, buf + 8, 4); memcpy(&body, buf + 12, 4);
  if (version != 1) fail("plan", "", EINVAL, "plan version %u is not supported", version);
  if (body != len - 16) fail("plan", "", EINVAL, "plan length mismatch");
  pl.ops = buf + 16; pl.ops_len = body;
  walk(pl.ops, pl.ops_len, read_setting);
}

/* ---------- sync with the runtime ---------- */

static void read_exact(int fd, void *buf, size_t n, const char *what) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0) { if (errno == EINTR) continue; fail("sync", what, errno, NULL); }
    if (r == 0) fail("sync", what, EPIPE, "the runtime went away");
    p += r; n -= (size_t)r;
  }
}

/* Reads one frame from the runtime; returns its type and stores a malloc'd payload. */
static char read_frame(uint8_t **payload, uint32_t *len) {
  uint8_t hdr[5];
  read_exact(sync_fd, hdr, 5, "frame header");
  memcpy(len, hdr + 1, 4);
  if (*len > (1u << 20)) fail("sync", "frame", E2BIG, "frame too large");
  *payload = malloc(*len + 1);
  if (!*payload) fail("sync", "frame", ENOMEM, NULL);
  read_exact(sync_fd, *payload, *len, "frame payload");
  (*payload)[*len] = 0;
  if (hdr[0] == 'A') _exit(1);
  return (char)hdr[0];
}

static void expect_frame(char want) {
  uint8_t *payload; uint32_t len;
  char t = read_frame(&payload, &len);
  if (t != want) fail("sync", "frame", EPROTO, "expected frame '%c', got '%c'", want, t);
  if (want == 'R') {
    struct rd r = { payload, payload + len, "resume" };
    state_create = rd_str(&r); state_start = rd_str(&r);
  } else if (want == 'G' && len > 0) {
    struct rd r = { payload, payload + len, "go" };
    host_pid = (pid_t)rd_u32(&r);
    state_go = rd_str(&r);
  }
  free(payload);
}

/* ---------- paths inside the rootfs ---------- */

static int resolve_in(int dirfd, const char *path, uint64_t flags) {
  struct open_how how = { .flags = flags | O_CLOEXEC,
                          .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

#define MAX_DEPTH 256
#define MAX_SYMLINKS 40

/*
 * Opens `path` inside the tree rooted at `dirfd` as if dirfd were "/", creating what is missing
 * (directories, and the last component as a file when `file` is set) the way runc's securejoin
 * does: symlinks are followed, absolute ones from the root, ".." never climbs above the root,
 * and a symlink to a missing target gets that target created inside the root.
 * When everything exists, openat2(RESOLVE_IN_ROOT) alone answers. Otherwise each component is
 * opened with O_NOFOLLOW relative to the fd of its resolved parent, so nothing created or
 * opened can be outside the root. Returns an O_PATH fd; the caller mounts on /proc/self/fd/N
 * so the kernel acts on exactly the inode that was resolved.
 */
static int open_in_root(int dirfd, const char *path, int create, int file) {
  int fd = resolve_in(dirfd, path, O_PATH);
  if (fd >= 0 || errno != ENOENT || !create) return fd;

  int stack[MAX_DEPTH], depth = 0, links = 0, err = 0;
  /* `todo` holds the components still to walk; a symlink's target is put in front of them */
  size_t cap = strlen(path) + 2;
  char *todo = malloc(cap);
  if (!todo) return -1;
  snprintf(todo, cap, "%s", path);
  stack[0] = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (stack[0] < 0) { free(todo); return -1; }
  char *p = todo;
  for (;;) {
    while (*p == '/') p++;
    if (!*p) break;
    char *slash = strchr(p, '/');
    char comp[NAME_MAX + 1];
    size_t clen = slash ? (size_t)(slash - p) : strlen(p);
    if (clen > NAME_MAX) { err = ENAMETOOLONG; break; }
    memcpy(comp, p, clen); comp[clen] = 0;
    p += clen;
    const char *rest = p;
    while (*rest == '/') rest++;
    int last = *rest == 0;
    if (strcmp(comp, ".") == 0) continue;
    if (strcmp(comp, "..") == 0) { if (depth > 0) close(stack[depth--]); continue; }
    int cur = stack[depth];
    struct stat st;
    if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) { err = errno; break; }
      int r;
      if (last && file) {
        r = openat(cur, comp, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (r >= 0) close(r);
      } else {
        r = mkdirat(cur, comp, 0755);
      }
      if (r < 0 && errno != EEXIST) { err = errno; break; }
      if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) != 0) { err = errno; break; }
    }
    if (S_ISLNK(st.st_mode)) {
      if (++links > MAX_SYMLINKS) { err = ELOOP; break; }
      char target[PATH_MAX];
      ssize_t n = readlinkat(cur, comp, target, sizeof target - 1);
      if (n < 0) { err = errno; break; }
      target[n] = 0;
      if (target[0] == '/') while (depth > 0) close(stack[depth--]); /* absolute: from the root */
      size_t need = (size_t)n + strlen(p) + 2;
      char *next = malloc(need);
      if (!next) { err = ENOMEM; break; }
      snprintf(next, need, "%s/%s", target, p);
      free(todo);
      todo = p = next;
      continue;
    }
    if (!last && !S_ISDIR(st.st_mode)) { err = ENOTDIR; break; }
    if (depth + 1 >= MAX_DEPTH) { err = ENAMETOOLONG; break; }
    int next = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) { err = errno; break; }
    stack[++depth] = next;
  }
  free(todo);
  if (err) { while (depth >= 0) close(stack[depth--]); errno = err; return -1; }
  int result = stack[depth];
  while (depth > 0) close(stack[--depth]);
  return result;
}

static void fdpath(char *buf, size_t n, int fd) { snprintf(buf, n, "/proc/self/fd/%d", fd); }

/* Splits `path` into its parent (opened inside the root) and its last component. */
static int open_parent(const char *path, char *name, size_t namecap) {
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) { errno = EINVAL; return -1; }
  snprintf(name, namecap, "%s", base);
  char parent[PATH_MAX];
  size_t plen = slash ? (size_t)(slash - path) : 0;
  if (plen >= sizeof parent) { errno = ENAMETOOLONG; return -1; }
  memcpy(parent, path, plen); parent[plen] = 0;
  if (!plen) strcpy(parent, "/");
  return open_in_root(root_fd, parent, 1, 0);
}

/* Mount flags that a less privileged user namespace may not clear on a remount. */
static unsigned long locked_flags(const char *target) {
  struct statvfs sv;
  unsigned long f = 0;
  if (statvfs(target, &sv) != 0) return 0;
  if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (sv.f_flag & ST_RDONLY) f |= MS_RDONLY;
  if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

static int remount_bind(const char *target, unsigned long flags) {
  if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL) == 0) return 0;
  if (errno != EPERM) return -1;
  return mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags | locked_flags(target), NULL);
}

/* ---------- rootfs operations ---------- */

#define BIND_FLAGS (MS_BIND | MS_REC)
#define PROPAGATION (MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE)

static void op_mount(struct rd *r) {
  char *src = rd_str(r), *dest = rd_str(r), *type = rd_str(r);
  unsigned long flags = (unsigned long)rd_u64(r), prop = (unsigned long)rd_u64(r);
  char *data = rd_str(r);
  uint32_t mflags = rd_u32(r);
  int file = (mflags & MF_DEST_FILE) != 0;
  if (flags & MS_BIND) {
    struct stat st;
    if (stat(src, &st) != 0) fail("mount", dest, errno, "bind source %s: %s", src, strerror(errno));
    file = !S_ISDIR(st.st_mode);
  }
  int fd = open_in_root(root_fd, dest, 1, file);
  if (fd < 0) fail("mount", dest, errno, "cannot create the mount point inside the rootfs: %s", strerror(errno));
  char target[64];
  fdpath(target, sizeof target, fd);
  if (flags & MS_BIND) {
    if (mount(src, target, NULL, flags & BIND_FLAGS, NULL) != 0)
      fail("mount", dest, errno, "bind mount of %s: %s", src, strerror(errno));
    unsigned long extra = flags & ~(BIND_FLAGS | PROPAGATION | MS_REMOUNT);
    close(fd);
    fd = open_in_root(root_fd, dest, 0, 0); /* reopen: now it is the new mount's root */
    if (fd < 0) fail("mount", dest, errno, "reopening the mount point");
    fdpath(target, sizeof target, fd);
    if (extra && remount_bind(target, extra) != 0)
      fail("mount", dest, errno, "remounting the bind mount with its options: %s", strerror(errno));
  } else {
    if (mount(src, target, type, flags & ~PROPAGATION, data[0] ? data : NULL) != 0) {
      if ((mflags & MF_SYSFS_FALLBACK) && (errno == EPERM || errno == EACCES)) {
        if (mount("/sys", target, NULL, MS_BIND | MS_REC, NULL) != 0)
          fail("mount", dest, errno, "bind of /sys after sysfs was refused: %s", strerror(errno));
        close(fd);
        fd = open_in_root(root_fd, dest, 0, 0);
        if (fd < 0) fail("mount", dest, errno, "reopening the mount point");
        fdpath(target, sizeof target, fd);
        remount_bind(target, (flags & ~PROPAGATION) | MS_RDONLY);
      } else {
        fail("mount", dest, errno, "mount of %s (type %s): %s", src, type, strerror(errno));
      }
    } else {
      close(fd);
      fd = open_in_root(root_fd, dest, 0, 0);
      if (fd < 0) fail("mount", dest, errno, "reopening the mount point");
      fdpath(target, sizeof target, fd);
    }
  }
  if (prop && mount(NULL, target, NULL, prop, NULL) != 0)
    fail("mount", dest, errno, "setting mount propagation: %s", strerror(errno));
  close(fd);
  free(src); free(dest); free(type); free(data);
}

static void op_mknod(struct rd *r) {
  char *path = rd_str(r), name[NAME_MAX + 1];
  uint32_t mode = rd_u32(r), maj = rd_u32(r), min = rd_u32(r), uid = rd_u32(r), gid = rd_u32(r);
  int dir = open_parent(path, name, sizeof name);
  if (dir < 0) fail("device", path, errno, "opening its directory: %s", strerror(errno));
  char dpath[64];
  fdpath(dpath, sizeof dpath, dir);
  int dfd = open(dpath, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (dfd < 0) fail("device", path, errno, NULL);
  if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT)
    fail("device", path, errno, "removing what was there: %s", strerror(errno));
  if (mknodat(dfd, name, mode, makedev(maj, min)) != 0) fail("device", path, errno, "mknod: %s", strerror(errno));
  if (fchmodat(dfd, name, mode & 07777, 0) != 0) fail("device", path, errno, "chmod: %s", strerror(errno));
  if (fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) fail("device", path, errno, "chown: %s", strerror(errno));
  close(dfd); close(dir); free(path);
}

static void op_bind_dev(struct rd *r) {
  char *host = rd_str(r), *path = rd_str(r);
  int fd = open_in_root(root_fd, path, 1, 1);
  if (fd < 0) fail("device", path, errno, "creating the bind target: %s", strerror(errno));
  char target[64];
  fdpath(target, sizeof target, fd);
  if (mount(host, target, NULL, MS_BIND, NULL) != 0) fail("device", path, errno, "bind of %s: %s", host, strerror(errno));
  close(fd); free(host); free(path);
}

static void op_symlink(struct rd *r) {
  char *target = rd_str(r), *path = rd_str(r), name[NAME_MAX + 1];
  int dir = open_parent(path, name, sizeof name);
  if (dir < 0) fail("symlink", path, errno, NULL);
  char dpath[64];
  fdpath(dpath, sizeof dpath, dir);
  int dfd = open(dpath, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (dfd < 0 || (symlinkat(target, dfd, name) != 0 && errno != EEXIST))
    fail("symlink", path, errno, NULL);
  close(dfd); close(dir); free(target); free(path);
}

static void op_mkdir(struct rd *r) {
  char *path = rd_str(r);
  int fd = open_in_root(root_fd, path, 1, 0); /* creates what is missing, leaves what exists */
  if (fd < 0) fail("mkdir", path, errno, "%s: %s", path, strerror(errno));
  close(fd); free(path);
}

/* Runs one hook program with the state JSON on stdin, capturing its output for errors. */
static void run_hook(const char *kind, struct hook *h, const char *state) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) fail("hook", h->path, errno, NULL);
  pid_t pid = fork();
  if (pid < 0) fail("hook", h->path, errno, NULL);
  if (pid == 0) {
    dup2(in[0], 0); dup2(out[1], 1); dup2(out[1], 2);
    syscall(SYS_close_range, 3, ~0U, 0);
    execve(h->path, h->args.n ? h->args.v : (char *[]){h->path, NULL}, h->env.v ? h->env.v : (char *[]){NULL});
    dprintf(2, "cannot execute: %s", strerror(errno));
    _exit(127);
  }
  close(in[0]); close(out[1]);
  signal(SIGPIPE, SIG_IGN);
  write_all(in[1], state, strlen(state));
  close(in[1]);
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
  char output[2048]; size_t got = 0;
  int timeout_ms = h->timeout ? (int)h->timeout * 1000 : -1, timed_out = 0;
  struct pollfd fds[2] = { { out[0], POLLIN, 0 }, { pfd, POLLIN, 0 } };
  for (;;) {
    int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) { timed_out = 1; kill(pid, SIGKILL); break; }
    if (fds[0].revents) {
      char tmp[512];
      ssize_t k = read(out[0], tmp, sizeof tmp);
      if (k <= 0) { fds[0].fd = -1; }
      else { size_t c = (size_t)k; if (got + c > sizeof output - 1) c = sizeof output - 1 - got; memcpy(output + got, tmp, c); got += c; }
    }
    if (fds[1].revents && fds[0].fd < 0) break;
    if (fds[1].revents && fds[0].fd >= 0) { fds[1].fd = -1; } /* exited: drain output */
    if (fds[0].fd < 0 && fds[1].fd < 0) break;
  }
  output[got] = 0;
  int status = 0;
  waitpid(pid, &status, 0);
  close(out[0]); if (pfd >= 0) close(pfd);
  signal(SIGPIPE, SIG_DFL);
  if (timed_out) fail("hook", h->path, ETIMEDOUT, "%s hook %s timed out after %u s", kind, h->path, h->timeout);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("hook", h->path, 0, "%s hook %s failed (%s %d): %s", kind, h->path,
         WIFEXITED(status) ? "exit status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), output);
}

static void op_hook(struct rd *r) {
  struct hook h; h.when = rd_u32(r); h.path = rd_str(r); h.args = rd_strv(r); h.env = rd_strv(r);
  h.timeout = rd_u32(r);
  if (h.when == 0) run_hook("createContainer", &h, state_create ? state_create : "{}");
}

static void op_pivot_root(void) {
  if (fchdir(root_fd) != 0) fail("pivot_root", "", errno, NULL);
  if (syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot_root", "", errno, NULL);
  /* the old root is now stacked under "."; keep its unmount from propagating to the host */
  if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) != 0) fail("pivot_root", "old root", errno, NULL);
  if (umount2(".", MNT_DETACH) != 0) fail("pivot_root", "old root", errno, "unmount: %s", strerror(errno));
  if (chdir("/") != 0) fail("pivot_root", "/", errno, NULL);
  close(root_fd);
  root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) fail("pivot_root", "/", errno, NULL);
}

static void op_mask(struct rd *r) {
  char *path = rd_str(r);
  int fd = open_in_root(root_fd, path, 0, 0);
  if (fd < 0) { if (errno == ENOENT) { free(path); return; } fail("maskedPaths", path, errno, NULL); }
  struct stat st;
  char target[64];
  fdpath(target, sizeof target, fd);
  if (fstat(fd, &st) != 0) fail("maskedPaths", path, errno, NULL);
  int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", target, "tmpfs", MS_RDONLY, NULL)
                               : mount("/dev/null", target, NULL, MS_BIND, NULL);
  if (rc != 0) fail("maskedPaths", path, errno, NULL);
  close(fd); free(path);
}

static void op_readonly(struct rd *r) {
  char *path = rd_str(r);
  int fd = open_in_root(root_fd, path, 0, 0);
  if (fd < 0) { if (errno == ENOENT) { free(path); return; } fail("readonlyPaths", path, errno, NULL); }
  char target[64];
  fdpath(target, sizeof target, fd);
  if (mount(target, target, NULL, MS_BIND | MS_REC, NULL) != 0) fail("readonlyPaths", path, errno, NULL);
  close(fd);
  fd = open_in_root(root_fd, path, 0, 0);
  if (fd < 0) fail("readonlyPaths", path, errno, NULL);
  fdpath(target, sizeof target, fd);
  if (remount_bind(target, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC) != 0)
    fail("readonlyPaths", path, errno, "remount read-only: %s", strerror(errno));
  close(fd); free(path);
}

static void op_sysctl(struct rd *r) {
  char *key = rd_str(r), *value = rd_str(r);
  int dir = openat(AT_FDCWD, "/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) fail("sysctl", key, errno, "/proc/sys is not mounted");
  int fd = resolve_in(dir, key, O_WRONLY);
  if (fd < 0) fail("sysctl", key, errno, NULL);
  if (write(fd, value, strlen(value)) < 0) fail("sysctl", key, errno, "writing %s: %s", value, strerror(errno));
  close(fd); close(dir); free(key); free(value);
}

static void op_loopback_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0) fail("network", "lo", errno, NULL);
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) fail("network", "lo", errno, "bringing loopback up: %s", strerror(errno));
  close(s);
}

static void op_rootfs(struct rd *r) {
  char *path = rd_str(r);
  unsigned long prop = (unsigned long)rd_u64(r);
  if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) fail("rootfs", path, errno, "bind mount: %s", strerror(errno));
  if (prop && mount(NULL, path, NULL, prop, NULL) != 0) fail("rootfs", path, errno, "propagation: %s", strerror(errno));
  root_fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) fail("rootfs", path, errno, NULL);
  free(path);
}

/* Runs the host-side preparation (T_HOST_*) in S1, before any user namespace exists. */
static void run_host_op(uint32_t tag, struct rd *r) {
  switch (tag) {
  case T_HOST_MKDIR: {
    char *p = rd_str(r);
    uint32_t mode = rd_u32(r);
    if (mkdir(p, 0700) != 0 && errno != EEXIST) fail("mkdir", p, errno, NULL);
    if (chmod(p, mode & 07777) != 0) fail("mkdir", p, errno, "chmod: %s", strerror(errno));
    free(p); break;
  }
  case T_HOST_MOUNT: {
    char *src = rd_str(r), *tgt = rd_str(r), *type = rd_str(r);
    unsigned long flags = (unsigned long)rd_u64(r);
    char *data = rd_str(r);
    if (mount(src, tgt, type[0] ? type : NULL, flags, data[0] ? data : NULL) != 0)
      fail("mount", tgt, errno, "mount of %s (type %s): %s", src, type, strerror(errno));
    free(src); free(tgt); free(type); free(data); break;
  }
  default: break;
  }
}

static void run_op(uint32_t tag, struct rd *r) {
  switch (tag) {
  case T_ROOT_PROPAGATION: {
    unsigned long f = (unsigned long)rd_u64(r);
    if (mount(NULL, "/", NULL, f, NULL) != 0) fail("rootfsPropagation", "/", errno, NULL);
    break;
  }
  case T_ROOTFS: op_rootfs(r); break;
  case T_MOUNT: op_mount(r); break;
  case T_MKNOD: op_mknod(r); break;
  case T_BIND_DEV: op_bind_dev(r); break;
  case T_SYMLINK: op_symlink(r); break;
  case T_MKDIR: op_mkdir(r); break;
  case T_SYNC_HOOKS: send_line("{\"type\":\"hooks\"}\n"); expect_frame('R'); break;
  case T_HOOK: op_hook(r); break;
  case T_PIVOT_ROOT: op_pivot_root(); break;
  case T_MASK: op_mask(r); break;
  case T_READONLY: op_readonly(r); break;
  case T_ROOT_READONLY:
    if (remount_bind("/", MS_RDONLY) != 0) fail("root.readonly", "/", errno, NULL);
    break;
  case T_SYSCTL: op_sysctl(r); break;
  case T_HOSTNAME: {
    char *h = rd_str(r);
    if (sethostname(h, strlen(h)) != 0) fail("hostname", h, errno, NULL);
    free(h); break;
  }
  case T_DOMAINNAME: {
    char *h = rd_str(r);
    if (setdomainname(h, strlen(h)) != 0) fail("domainname", h, errno, NULL);
    free(h); break;
  }
  case T_LOOPBACK_UP: op_loopback_up(); break;
  default: break;
  }
}

/* ---------- process set-up in S2 ---------- */

static void setup_console(void) {
  int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) fail("terminal", "/dev/ptmx", errno, "is devpts mounted at /dev/pts? %s", strerror(errno));
  int unlock = 0;
  if (ioctl(master, TIOCSPTLCK, &unlock) != 0) fail("terminal", "/dev/ptmx", errno, NULL);
  int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
  if (slave < 0) fail("terminal", "/dev/ptmx", errno, "opening the pty peer: %s", strerror(errno));
  unsigned int ptyno = 0;
  ioctl(master, TIOCGPTN, &ptyno);
  if (pl.rows || pl.cols) {
    struct winsize ws = { .ws_row = (unsigned short)pl.rows, .ws_col = (unsigned short)pl.cols };
    ioctl(slave, TIOCSWINSZ, &ws);
  }
  char name[64];
  snprintf(name, sizeof name, "/dev/pts/%u", ptyno);
  struct iovec iov = { name, strlen(name) };
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &master, sizeof(int));
  if (sendmsg(console_fd, &msg, 0) < 0) fail("terminal", pl.console, errno, "sending the pty to the console socket: %s", strerror(errno));
  close(master); close(console_fd); console_fd = -1;
  if (ioctl(slave, TIOCSCTTY, 0) != 0) fail("terminal", name, errno, "TIOCSCTTY: %s", strerror(errno));
  for (int i = 0; i < 3; i++) if (dup3(slave, i, 0) < 0) fail("terminal", name, errno, NULL);
  if (slave > 2) close(slave);
}

static void set_ids_and_caps(void) {
  if (pl.has_caps) {
    int last = 40;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f) { if (fscanf(f, "%d", &last) != 1) last = 40; fclose(f); }
    for (int c = 0; c <= last && c < 64; c++)
      if (!(pl.cap_bound & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
        fail("capabilities", "bounding", errno, "dropping capability %d: %s", c, strerror(errno));
  }
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail("capabilities", "keepcaps", errno, NULL);
  if (pl.has_user) {
    if (setgroups(pl.ngroups, pl.groups) != 0 && !(errno == EPERM && pl.ngroups == 0))
      fail("user", "process.user.additionalGids", errno, "setgroups: %s", strerror(errno));
    if (setresgid(pl.gid, pl.gid, pl.gid) != 0) fail("user", "process.user.gid", errno, "setresgid(%u): %s", pl.gid, strerror(errno));
    if (setresuid(pl.uid, pl.uid, pl.uid) != 0) fail("user", "process.user.uid", errno, "setresuid(%u): %s", pl.uid, strerror(errno));
  }
  if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) fail("capabilities", "keepcaps", errno, NULL);
  if (pl.has_caps) {
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    for (int i = 0; i < 2; i++) {
      d[i].effective = (uint32_t)(pl.cap_eff >> (32 * i));
      d[i].permitted = (uint32_t)(pl.cap_perm >> (32 * i));
      d[i].inheritable = (uint32_t)(pl.cap_inh >> (32 * i));
    }
    if (syscall(SYS_capset, &hdr, d) != 0) fail("capabilities", "capset", errno, NULL);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
      fail("capabilities", "ambient", errno, NULL);
    for (int c = 0; c < 64; c++)
      if ((pl.cap_amb & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
        fail("capabilities", "ambient", errno, "raising capability %d: %s", c, strerror(errno));
  }
}

/*
 * Sends the seccomp notify fd to listenerPath as runc does: one message whose body is the
 * container process state JSON ({"ociVersion","fds":["seccompFd"],"pid","metadata","state"})
 * and whose SCM_RIGHTS carries the fd.
 */
static void send_listener_fd(int notify_fd) {
  size_t cap = 8192 + (state_go ? strlen(state_go) : 2) + strlen(pl.listener_meta) * 6;
  char *msg = malloc(cap);
  if (!msg) fail("seccomp", "listenerPath", ENOMEM, NULL);
  size_t at = (size_t)snprintf(msg, cap, "{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":%d,\"metadata\":\"",
                               host_pid ? host_pid : getpid());
  at = json_escape(msg, cap, at, pl.listener_meta);
  snprintf(msg + at, cap - at, "\",\"state\":%s}", state_go ? state_go : "{}");
  struct iovec iov = { msg, strlen(msg) };
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
  c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &notify_fd, sizeof(int));
  if (sendmsg(listener_fd, &mh, 0) < 0) fail("seccomp", pl.listener, errno, "sending the notify fd: %s", strerror(errno));
  free(msg);
  close(notify_fd); close(listener_fd); listener_fd = -1;
}

static void load_seccomp(void) {
  if (!pl.seccomp) return;
  struct sock_fprog prog = { .len = (unsigned short)(pl.seccomp_len / sizeof(struct sock_filter)),
                             .filter = (struct sock_filter *)pl.seccomp };
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, pl.seccomp_flags, &prog);
  if (rc < 0) fail("seccomp", "linux.seccomp", errno, "loading the filter: %s", strerror(errno));
  if (pl.seccomp_flags & SECCOMP_FILTER_FLAG_NEW_LISTENER) {
    if (listener_fd < 0) fail("seccomp", "linux.seccomp.listenerPath", EINVAL, "a notify filter needs listenerPath");
    send_listener_fd((int)rc);
  }
  free(pl.seccomp); pl.seccomp = NULL;
}

/*
 * Loads the sentry's filter as the very last step before execve. Its notify fd cannot be sent
 * with sendmsg (sendmsg is itself served by the sentry, which does not have the fd yet), so the
 * stage writes {"pid":HOST_PID,"fd":N} on the listener socket (write is on the fast path) and
 * waits for one byte back: the sentry has copied the fd with pidfd_getfd(2) by then. Every
 * call between the filter and execve must be on the fast path (write, read, close, signal
 * set-up, fcntl, close_range) or wait for the sentry (execve).
 */
static void load_sentry_filter(void) {
  if (!pl.sentry) return;
  if (listener_fd < 0) fail("sentry", "listener", EINVAL, "the sentry filter needs a listener socket");
  struct sock_fprog prog = { .len = (unsigned short)(pl.sentry_len / sizeof(struct sock_filter)),
                             .filter = (struct sock_filter *)pl.sentry };
  /* The sentry copies the fd with pidfd_getfd, a ptrace-mode access: the stage turns dumpable
     for the few calls left before execve (which sets it anyway). No workload process can use
     that window: under the sentry there is no /proc in the container and ptrace is refused. */
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) { dprintf(2, "moat-init: dumpable: %s\n", strerror(errno)); _exit(1); }
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, pl.sentry_flags | SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
  /* WAIT_KILLABLE_RECV (Linux 5.19+): without it, a signal that comes while the sentry serves a
     call makes the call fail with EINTR or run twice; older kernels refuse the flag */
  if (rc < 0 && errno == EINVAL && (pl.sentry_flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV))
    rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (pl.sentry_flags & ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) | SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
  if (rc < 0) { dprintf(2, "moat-init: loading the sentry filter: %s\n", strerror(errno)); _exit(1); }
  char msg[64];
  int len = snprintf(msg, sizeof msg, "{\"pid\":%d,\"fd\":%ld}\n", host_pid ? host_pid : getpid(), rc);
  char ack = 0;
  if (write(listener_fd, msg, (size_t)len) != len || read(listener_fd, &ack, 1) != 1 || ack != 'K') {
    /* Nobody will answer this filter's notifications: close the notify fd first (served calls
       then fail with ENOSYS instead of waiting forever, dprintf's among them), then give up. */
    close((int)rc);
    dprintf(2, "moat-init: handing the notify fd to the sentry failed\n");
    _exit(1);
  }
  close((int)rc); close(listener_fd); listener_fd = -1;
}

/*
 * A restore of a process tree (T_RESTORE_TREE), run by the init while it still holds its
 * capabilities: the pipes of the tree are made first (every process inherits them; the
 * checkpointer moves each end to where it belongs and closes the rest), then each process
 * clones its children with clone3's set_tid, so every process gets its checkpointed pid, and
 * joins its session and process group. A zombie exits at once with its status. Every process
 * then goes on through the rest of the set-up (credentials, capabilities, seccomp) to the
 * restore stop. Returns 1 in the init, 0 in the processes it made.
 */
struct moat_clone_args { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup; };

static void join_session(const struct tnode *t) {
  if (t->sid == t->pid && getsid(0) != (pid_t)t->pid && setsid() < 0)
    fail("restore", "tree", errno, "setsid in pid %u: %s", t->pid, strerror(errno));
  if ((uint32_t)getpgid(0) != t->pgid && setpgid(0, (pid_t)t->pgid) != 0)
    fail("restore", "tree", errno, "process group %u for pid %u: %s", t->pgid, t->pid, strerror(errno));
}

static void make_listener(const struct tsock *k) {
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen(k->path) >= sizeof sa.sun_path) fail("restore", k->path, ENAMETOOLONG, NULL);
  strcpy(sa.sun_path, k->path);
  int fd = socket(AF_UNIX, (int)k->type, 0);
  if (fd < 0) fail("restore", k->path, errno, "socket: %s", strerror(errno));
  /* only a socket left at the path is replaced: an image cannot have this stage (which still
     holds its capabilities) remove any other file */
  struct stat st;
  if (lstat(k->path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) fail("restore", k->path, EEXIST, "a file that is not a socket is where the listener was");
    if (unlink(k->path) != 0) fail("restore", k->path, errno, "unlink: %s", strerror(errno));
  }
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, (int)k->backlog) != 0)
    fail("restore", k->path, errno, "listening again: %s", strerror(errno));
  if (lchown(k->path, k->uid, k->gid) != 0 || fchmodat(AT_FDCWD, k->path, k->mode & 07777, 0) != 0)
    fail("restore", k->path, errno, "owner and mode: %s", strerror(errno));
}

static int restore_tree(void) {
  if (!pl.tree) return 1;
  /* the restorer hands the notify fds over itself: the listener connection is not needed, and
     every socket above fd 2 is then one of the tree's (the restorer finds them by fd order) */
  if (listener_fd >= 0) { close(listener_fd); listener_fd = -1; }
  for (uint32_t i = 0; i < pl.npipes; i++) {
    int p[2];
    if (pipe2(p, 0) != 0) fail("restore", "pipes", errno, NULL);
  }
  for (uint32_t i = 0; i < pl.nsocks; i++) {
    int sv[2];
    if (pl.socks[i].listen) make_listener(&pl.socks[i]);
    else if (socketpair(AF_UNIX, (int)pl.socks[i].type, 0, sv) != 0) fail("restore", "socket pairs", errno, NULL);
  }
  uint32_t me = 1;
  int init = 1;
  for (uint32_t i = 0; i < pl.ntree; i++) if (pl.tree[i].pid == 1) join_session(&pl.tree[i]);
again:
  for (uint32_t i = 0; i < pl.ntree; i++) {
    const struct tnode *t = &pl.tree[i];
    if (t->ppid != me || t->pid == 1) continue;
    pid_t want = (pid_t)t->pid;
    struct moat_clone_args a;
    memset(&a, 0, sizeof a);
    a.exit_signal = SIGCHLD;
    a.set_tid = (uint64_t)(uintptr_t)&want;
    a.set_tid_size = 1;
    long c = syscall(SYS_clone3, &a, sizeof a);
    if (c < 0) fail("restore", "tree", errno, "clone3 of pid %u: %s", t->pid, strerror(errno));
    if (c == 0) {
      /* the child: raw clone3 leaves libc's idea of the thread id stale, so nothing here uses it */
      me = t->pid;
      init = 0;
      join_session(t);
      if (t->zombie) {
        if ((t->status & 0x7f) == 0) _exit((int)((t->status >> 8) & 0xff));
        signal((int)(t->status & 0x7f), SIG_DFL);
        kill(getpid(), (int)(t->status & 0x7f));
        _exit(128 + (int)(t->status & 0x7f));
      }
      goto again;
    }
  }
  return init;
}

static const char *env_get(const char *name) {
  size_t n = strlen(name);
  for (uint32_t i = 0; i < pl.env.n; i++)
    if (strncmp(pl.env.v[i], name, n) == 0 && pl.env.v[i][n] == '=') return pl.env.v[i] + n + 1;
  return NULL;
}

/* Sets HOME from the container's /etc/passwd when the config does not, as runc does. */
static void default_home(void) {
  if (env_get("HOME")) return;
  uid_t uid = pl.has_user ? pl.uid : 0;
  char home[PATH_MAX] = "/", line[4096];
  FILE *f = fopen("/etc/passwd", "re");
  if (f) {
    while (fgets(line, sizeof line, f)) {
      char *fields[7] = { 0 }, *q = line;
      int n = 0;
      line[strcspn(line, "\n")] = 0;
      for (; n < 7; n++) { fields[n] = strsep(&q, ":"); if (!fields[n]) break; }
      if (n < 6 || !fields[2] || !fields[5]) continue;
      char *end;
      unsigned long u = strtoul(fields[2], &end, 10);
      if (*end || end == fields[2] || u != uid) continue;
      if (fields[5][0]) snprintf(home, sizeof home, "%s", fields[5]);
      break;
    }
    fclose(f);
  }
  char **v = realloc(pl.env.v, (pl.env.n + 2) * sizeof(char *));
  size_t len = strlen(home) + 6;
  char *entry = malloc(len);
  if (!v || !entry) fail("env", "HOME", ENOMEM, NULL);
  snprintf(entry, len, "HOME=%s", home);
  v[pl.env.n++] = entry; v[pl.env.n] = NULL;
  pl.env.v = v;
}

/* Finds the program as execvp would, with the container's PATH; fails before start if absent. */
static char *find_program(void) {
  const char *arg0 = pl.args.v[0];
  struct stat st;
  if (strchr(arg0, '/')) {
    if (stat(arg0, &st) != 0) fail("exec", arg0, errno, "%s: %s", arg0, strerror(errno));
    if (S_ISDIR(st.st_mode)) fail("exec", arg0, EISDIR, "%s is a directory", arg0);
    return strdup(arg0);
  }
  const char *path = env_get("PATH");
  if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  char *copy = strdup(path), *save = NULL;
  for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
    char cand[PATH_MAX];
    snprintf(cand, sizeof cand, "%s/%s", *dir ? dir : ".", arg0);
    if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) { free(copy); return strdup(cand); }
  }
  free(copy);
  fail("exec", arg0, ENOENT, "executable file \"%s\" not found in $PATH", arg0);
}

static void __attribute__((noreturn)) container_init(void) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl", "dumpable", errno, NULL);
  expect_frame('G');
  if ((pl.unshare_flags & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) != 0)
    fail("namespaces", "cgroup", errno, "unshare: %s", strerror(errno));
  if (pl.console || pl.setsid) { if (setsid() < 0) fail("setsid", "", errno, NULL); }
  if (pl.fifo) {
    proc_fd = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (proc_fd < 0) fail("open", "/proc/self/fd", errno, NULL);
  }
  if (pl.keyring && syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, pl.keyring) < 0 && errno != ENOSYS && errno != EDQUOT && errno != EACCES)
    fail("keyring", pl.keyring, errno, NULL);

  /* rootless: the host-side preparation can only run here, in the user namespace */
  if (pl.host_ops && !host_ops_done) walk(pl.ops, pl.ops_len, run_host_op);
  walk(pl.ops, pl.ops_len, run_op);
  /* create builds a rootfs and waits on the exec fifo; exec joined a running container's */
  if (pl.fifo && root_fd < 0) fail("rootfs", "", EINVAL, "the plan has no rootfs");
  if (root_fd >= 0) close(root_fd);

  int leader = restore_tree(); /* 0 in a restored child of the init */
  default_home();
  if (pl.console) setup_console();
  for (uint32_t i = 0; i < pl.nrlim; i++) {
    struct rlimit rl = { pl.rl_soft[i], pl.rl_hard[i] };
    if (setrlimit((int)pl.rl_res[i], &rl) != 0) fail("rlimit", "process.rlimits", errno, "resource %u: %s", pl.rl_res[i], strerror(errno));
  }
  if (pl.has_user && pl.umask_v != 0xffffffffu) umask(pl.umask_v & 0777);
  if (!pl.nnp) load_seccomp(); /* without no_new_privs the filter needs CAP_SYS_ADMIN: load it while we have it */
  set_ids_and_caps();
  if (pl.cwd && chdir(pl.cwd) != 0) fail("cwd", pl.cwd, errno, "chdir to %s: %s", pl.cwd, strerror(errno));
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/') fail("cwd", pl.cwd ? pl.cwd : "", EPERM, "working directory is outside the container");
  if (pl.args.n == 0 && !pl.restore) fail("exec", "process.args", EINVAL, "no program to run");
  char *prog = pl.restore ? NULL : find_program();

  /*
   * With no_new_privs the filter is loaded as late as possible while the runtime still listens
   * (as runc does): a notify fd then reaches its listener during create, and only the fifo
   * handshake, startContainer hooks and execve run under the filter before the program.
   */
  if (pl.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("noNewPrivileges", "process.noNewPrivileges", errno, NULL);
  if (pl.nnp) load_seccomp();
  if (leader) send_line("{\"type\":\"ready\"}\n");
  close(sync_fd); sync_fd = -1;

  if (pl.fifo && leader) {
    /* Block until `moat start` opens the fifo for reading. */
    char fifo_name[32];
    snprintf(fifo_name, sizeof fifo_name, "%d", fifo_fd);
    int w = openat(proc_fd, fifo_name, O_WRONLY | O_CLOEXEC);
    if (w < 0) { dprintf(2, "moat-init: opening the exec fifo: %s\n", strerror(errno)); _exit(1); }
    write_all(w, "0", 1);
    /* w stays open (close-on-exec): `moat start` reads until EOF, which comes with the exec, so
       its poststart hooks run after the program started, as the runtime spec orders them */
    close(fifo_fd); close(proc_fd);
    if (pl.restore) close(w); /* no exec will close it: `moat start` returns, the checkpointer takes over */
  }

  for (uint32_t i = 0; i < pl.nstart && leader; i++) {
    sync_fd = -1; /* a failing startContainer hook is printed on stderr: nobody is listening */
    run_hook("startContainer", &pl.start_hooks[i], state_start ? state_start : "{}");
  }

  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  for (int s = 1; s < NSIG; s++) if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
  if (pl.restore) {
    /*
     * A restore (T_RESTORE_STOP): this process, jailed exactly as the checkpointed one was, is
     * the shell the sentry checkpointer (src/checkpoint/sentry/restore.ts) fills. It seizes it
     * here with ptrace, replaces its memory, registers, fds and signal state by injected system
     * calls, loads the sentry's filter in it and hands the notify fd over itself. Until then the
     * process only waits; if nobody comes, `moat delete` kills it. Its signal actions are the
     * kernel's defaults after exec (no flags, no restorer), so only the checkpointed process's
     * own handlers need setting.
     */
    struct { uint64_t handler, flags, restorer, mask; } dfl = { 0, 0, 0, 0 };
    for (int s = 1; s <= 64; s++)
      if (s != SIGKILL && s != SIGSTOP) syscall(SYS_rt_sigaction, s, &dfl, NULL, (size_t)8);
    for (;;) pause();
  }
  load_sentry_filter();
  for (uint32_t fd = 3; fd < 3 + pl.preserve; fd++) fcntl((int)fd, F_SETFD, 0);
  if (syscall(SYS_close_range, 3 + pl.preserve, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3 + (int)pl.preserve; fd < 65536; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  execve(prog, pl.args.v, pl.env.v ? pl.env.v : (char *[]){NULL});
  dprintf(2, "moat-init: exec %s: %s\n", prog, strerror(errno));
  _exit(127);
}

/* ---------- S1: namespaces ---------- */

static void __attribute__((noreturn)) stage1(int pp) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl", "dumpable", errno, NULL);
  int fds[16];
  for (uint32_t i = 0; i < pl.njoin; i++) {
    fds[i] = open(pl.join_path[i], O_RDONLY | O_CLOEXEC);
    if (fds[i] < 0) fail("namespaces", pl.join_path[i], errno, "opening namespace: %s", strerror(errno));
  }
  /*
   * Host-side preparation (the embedded default's overlay of the host root) runs as real root in
   * a private mount namespace of its own, before the user namespace: a mount namespace owned by
   * a user namespace locks every inherited mount, and overlayfs refuses a lower layer with locked
   * submounts. The container's own mount namespace is made from this one below.
   */
  if (pl.host_ops && geteuid() == 0) {
    if (unshare(CLONE_NEWNS) != 0) fail("namespaces", "mount", errno, "unshare: %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) != 0) fail("mount", "/", errno, "making / a slave: %s", strerror(errno));
    walk(pl.ops, pl.ops_len, run_host_op);
    host_ops_done = 1;
  }
  /* the user namespace first: it decides what the other joins are allowed to do */
  for (int pass = 0; pass < 2; pass++)
    for (uint32_t i = 0; i < pl.njoin; i++) {
      int is_user = pl.join_type[i] == CLONE_NEWUSER;
      if (is_user != (pass == 0)) continue;
      if (setns(fds[i], (int)pl.join_type[i]) != 0) fail("namespaces", pl.join_path[i], errno, "setns: %s", strerror(errno));
      close(fds[i]);
      if (is_user && (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0))
        fail("namespaces", pl.join_path[i], errno, "becoming root in the joined user namespace");
    }
  if (pl.unshare_flags & CLONE_NEWUSER) {
    /* an unprivileged P may only write the maps of a dumpable process it owns (rootless) */
    int rootless = geteuid() != 0;
    if (unshare(CLONE_NEWUSER) != 0) fail("namespaces", "user", errno, "unshare: %s", strerror(errno));
    if (rootless && prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) fail("prctl", "dumpable", errno, NULL);
    char c = 'M';
    write_all(pp, &c, 1);
    if (read(pp, &c, 1) != 1 || c != 'm') _exit(1); /* P reported the error */
    if (rootless && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl", "dumpable", errno, NULL);
    if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)
      fail("namespaces", "user", errno, "becoming root in the new user namespace: is uid 0 mapped?");
  }
  uint32_t rest = pl.unshare_flags & ~(uint32_t)(CLONE_NEWUSER | CLONE_NEWCGROUP);
  if (rest && unshare((int)rest) != 0) fail("namespaces", "unshare", errno, "unshare(0x%x): %s", rest, strerror(errno));
  pid_t child = (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
  if (child < 0) fail("clone", "", errno, NULL);
  if (child == 0) { close(pp); container_init(); }
  char msg[5] = { 'P' };
  memcpy(msg + 1, &child, 4);
  write_all(pp, msg, 5);
  _exit(0);
}

/* ---------- P ---------- */

static void write_map(pid_t pid, const char *file, const char *data) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, data, strlen(data)) != (ssize_t)strlen(data))
    fail("namespaces", file, errno, "writing %s: %s", file, strerror(errno));
  close(fd);
}

/*
 * CVE-2019-5736: a container process can reach the binary that execs it through /proc/self/exe
 * (an interpreter line "#!/proc/self/exe" in the program it is told to run makes the kernel run
 * this very binary again, inside the container) and then write to it through the fd it gets.
 * So this stage never runs from the host file: on entry it copies itself into a memfd, seals it
 * against every write, and re-executes from the copy (as runc's cloned binary does). A process
 * already running from such a copy (the seals show it) goes on. Errors here have no sync socket
 * yet: they go to stderr and exit 1.
 */
#define MOAT_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
extern char **environ;
static void run_from_sealed_copy(char **argv) {
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (self < 0) { dprintf(2, "moat-init: open /proc/self/exe: %s\n", strerror(errno)); exit(1); }
  int seals = fcntl(self, F_GET_SEALS);
  if (seals >= 0 && (seals & MOAT_SEALS) == MOAT_SEALS) { close(self); return; }
  struct stat st;
  int copy = memfd_create("moat-init", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (copy < 0 || fstat(self, &st) != 0) { dprintf(2, "moat-init: memfd: %s\n", strerror(errno)); exit(1); }
  for (off_t done = 0; done < st.st_size;) {
    ssize_t n = sendfile(copy, self, NULL, (size_t)(st.st_size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) { dprintf(2, "moat-init: copying itself: %s\n", n < 0 ? strerror(errno) : "short read"); exit(1); }
    done += n;
  }
  close(self);
  if (fcntl(copy, F_ADD_SEALS, MOAT_SEALS) != 0) { dprintf(2, "moat-init: sealing its copy: %s\n", strerror(errno)); exit(1); }
  fexecve(copy, argv, environ);
  dprintf(2, "moat-init: re-executing its sealed copy: %s\n", strerror(errno));
  exit(1);
}

/*
 * A unix stream socket connected to `path`, close-on-exec, or -1 with errno set. A path longer
 * than sun_path (a state directory named by a 64-hex engine id under a long --root) is reached
 * through an O_PATH fd of its directory: /proc/self/fd/N/NAME.
 */
static int connect_unix(const char *path) {
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int dir = -1;
  if (strlen(path) < sizeof sa.sun_path) {
    strcpy(sa.sun_path, path);
  } else {
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash == path) { errno = ENAMETOOLONG; return -1; }
    char *d = strndup(path, (size_t)(slash - path));
    if (d == NULL) return -1;
    dir = open(d, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(d);
    if (dir < 0) return -1;
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dir, slash + 1);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) { close(dir); errno = ENAMETOOLONG; return -1; }
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    fd = -1;
  }
  if (dir >= 0) { int e = errno; close(dir); errno = e; }
  return fd;
}

int main(int argc, char **argv) {
  /* before anything else, and before the argument check: a run through #!/proc/self/exe has odd argv */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  run_from_sealed_copy(argv);
  if (argc != 3) { dprintf(2, "usage: moat-init PLAN_FD SYNC_FD (run by moat, not by hand)\n"); return 2; }
  int plan_fd = atoi(argv[1]);
  sync_fd = atoi(argv[2]);
  /* non-dumpable: no container process may open /proc/<stage>/exe, mem or fds (CVE-2019-5736) */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl", "dumpable", errno, NULL);
  fcntl(sync_fd, F_SETFD, FD_CLOEXEC);
  read_plan(plan_fd);
  /* oom_score_adj here, in the host's namespaces, and inherited by every stage and the process:
     an exec joins a container whose /proc may be no procfs (under the sentry), and lowering the
     score needs CAP_SYS_RESOURCE in the initial user namespace (runc does the same) */
  if (pl.has_oom) {
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dprintf(fd, "%d", pl.oom) < 0) fail("oomScoreAdj", "process.oomScoreAdj", errno, NULL);
    close(fd);
  }

  if (pl.fifo) {
    /* 0622: the init may have dropped to any uid by the time it opens the fifo for writing */
    if (mkfifo(pl.fifo, 0622) != 0 || chmod(pl.fifo, 0622) != 0) fail("exec fifo", pl.fifo, errno, NULL);
    fifo_fd = open(pl.fifo, O_PATH | O_CLOEXEC);
    if (fifo_fd < 0) fail("exec fifo", pl.fifo, errno, NULL);
  }
  if (pl.console && (console_fd = connect_unix(pl.console)) < 0)
    fail("console socket", pl.console, errno, "connect: %s", strerror(errno));
  if (pl.listener && (listener_fd = connect_unix(pl.listener)) < 0)
    fail("seccomp listener", pl.listener, errno, "connect: %s", strerror(errno));
  int image_fd = -1;
  if (pl.restore_image && (image_fd = open(pl.restore_image, O_RDONLY)) < 0)
    fail("restore", pl.restore_image, errno, "opening the snapshot image: %s", strerror(errno));
  int pp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pp) != 0) fail("socketpair", "", errno, NULL);
  pid_t s1 = fork();
  if (s1 < 0) fail("fork", "", errno, NULL);
  if (s1 == 0) { close(pp[0]); stage1(pp[1]); }
  close(pp[1]);
  if (image_fd >= 0) close(image_fd);
  if (fifo_fd >= 0) close(fifo_fd);
  if (console_fd >= 0) close(console_fd);
  if (listener_fd >= 0) close(listener_fd);
  /* a terminal's ^C reaches this monitor too, and so does a SIGTERM sent to the runtime's whole
     process group (timeout, a supervisor): only the container decides what they mean, and the
     monitor stays to report how it ended */
  signal(SIGINT, SIG_IGN); signal(SIGQUIT, SIG_IGN); signal(SIGTSTP, SIG_IGN); signal(SIGHUP, SIG_IGN);
  signal(SIGTERM, SIG_IGN);

  pid_t init = 0;
  for (;;) {
    char c;
    ssize_t n = read(pp[0], &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (c == 'M') {
      if (pl.uid_map) write_map(s1, "uid_map", pl.uid_map);
      if (pl.setgroups_deny) write_map(s1, "setgroups", "deny");
      if (pl.gid_map) write_map(s1, "gid_map", pl.gid_map);
      c = 'm';
      write_all(pp[0], &c, 1);
    } else if (c == 'P') {
      read_exact(pp[0], &init, 4, "init pid");
    }
  }
  int st;
  while (waitpid(s1, &st, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || init <= 0) return 1; /* S1 reported why */
  char line[96];
  snprintf(line, sizeof line, "{\"type\":\"pid\",\"pid\":%d}\n", init);
  send_line(line);
  if (!pl.monitor) return 0;
  while (waitpid(init, &st, 0) < 0) { if (errno != EINTR) fail("wait", "", errno, NULL); }
  snprintf(line, sizeof line, "{\"type\":\"exit\",\"status\":%d,\"signal\":%d}\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  send_line(line);
  return 0;
}
