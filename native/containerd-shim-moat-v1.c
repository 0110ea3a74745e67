/*
 * containerd-shim-moat-v1: the executable containerd runs for Moat's shim v2 (runtime type
 * io.containerd.moat.v1). The shim itself is TypeScript (src/shim/, entry point
 * bin/containerd-shim-moat-v1.cjs); this launcher exists because containerd 1.6 executes the
 * shim binary twice per container on the critical path of `ctr run` — `start` (containerd waits
 * for the ttrpc address) and `delete` (after the shim's connection closes) — and Node.js alone
 * needs ~65 ms to start on this class of machine, more than runc's whole container. It answers
 * the two common cases itself and executes the TypeScript shim, argv unchanged, for everything
 * else:
 *
 *   start   hands the request to the installation's warm standby shim (src/shim/standby.ts),
 *           which becomes the sandbox's shim (or names the sandbox's running shim), and prints
 *           the address it answers. No standby, or it passes: the TypeScript `start`, with the
 *           runtime options containerd wrote to stdin handed on unchanged.
 *   delete  when the shim cleaned up already (no moat-shim.json in the bundle, no Moat state
 *           under the default root, nothing mounted on rootfs) it writes containerd's
 *           task.v2.DeleteResponse {exit_status: 137, exited_at: now}; else the TypeScript delete.
 *
 * Standby claim protocol, over the unix stream socket
 * /run/containerd/s/moat-standby-<dev>-<ino> (dev and ino: stat of the TypeScript entry point,
 * so that every spelling of the installation's path finds the same standby; the socket is 0600):
 *   request  "MOATCLAIM", u8 version (1), then records u8 tag, u32 length (little-endian), bytes:
 *            1 argument (argv[1..], in order), 2 environment entry "K=V", 3 working directory,
 *            4 stdin (containerd's runtime options), 0 end (length 0). At most 1 MiB in all.
 *   reply    one line: "ok PID ADDRESS" (PID 0: the sandbox's shim was running already),
 *            "error MESSAGE" (the start failed; containerd shows MESSAGE), or
 *            "pass REASON" (the standby cannot take it: start the slow way).
 *
 * Build line (scripts/build.mjs runs it during `npm ci`):
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -fno-strict-aliasing -static \
 *      -o dist/containerd-shim-moat-v1 native/containerd-shim-moat-v1.c
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "launcher.h"

extern char **environ;

#define SOCKET_DIR "/run/containerd/s"
#define STATE_ROOT "/run/containerd/moat" /* the shim's default Moat root; one directory per namespace */
#define ENTRY "bin/containerd-shim-moat-v1.cjs" /* relative to the installation (../ of dist/) */
#define MAX_REQUEST (1 << 20)
#define MAX_REPLY 4096
#define REPLY_TIMEOUT_MS 2000
#define PROGRAM "containerd-shim-moat-v1"

enum { T_END = 0, T_ARG = 1, T_ENV = 2, T_CWD = 3, T_STDIN = 4 };

/* The flags containerd passes (Go's flag syntax); ok is 0 when something is not understood. */
struct flags {
  const char *namespace, *id, *bundle, *action;
  int version, ok;
};


static char entry[PATH_MAX];

static void complain(const char *what, int err) {
  if (err) dprintf(2, PROGRAM ": %s: %s\n", what, strerror(err));
  else dprintf(2, PROGRAM ": %s\n", what);
}




/* The installation's entry point (bin/containerd-shim-moat-v1.cjs). */
static int find_entry(void) { return installation_path(entry, sizeof entry, ENTRY); }

/* Executes the TypeScript shim with this process's arguments; returns only on failure. */
static int exec_typescript(char **argv) {
  argv[0] = entry;
  execv(entry, argv);
  complain(entry, errno);
  return 1;
}

/* Go's flag parsing, as far as the shim's flags go: -name value, -name=value, --name, bools. */
static void parse_flags(int argc, char **argv, struct flags *f) {
  static const char *strings[] = {"namespace", "id", "address", "publish-binary", "bundle", "socket"};
  memset(f, 0, sizeof *f);
  f->ok = 1;
  f->action = "";
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-' || a[1] == 0) break;
    const char *name = a + (a[1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if ((len == 5 && strncmp(name, "debug", 5) == 0) || (len == 1 && name[0] == 'v')) {
      if (name[0] == 'v') f->version = !eq || strcmp(eq + 1, "true") == 0 || strcmp(eq + 1, "1") == 0;
      continue;
    }
    const char *value = NULL;
    for (size_t k = 0; k < sizeof strings / sizeof *strings; k++) {
      if (strlen(strings[k]) != len || strncmp(strings[k], name, len) != 0) continue;
      value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!value) break;
      if (k == 0) f->namespace = value;
      else if (k == 1) f->id = value;
      else if (k == 4) f->bundle = value;
      goto next;
    }
    f->ok = 0; /* unknown or incomplete: the TypeScript shim reports it */
    return;
  next:;
  }
  if (i < argc) f->action = argv[i];
}

/* A single path component: not empty, not . or .., no slash. */
static int component(const char *s) {
  return s && *s && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/') && strlen(s) < NAME_MAX;
}

/* 1 when `name` under `dirfd` is absent, 0 when present or unknown (any error but ENOENT). */
static int absent(int dirfd, const char *name) {
  struct stat st;
  return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
}

static size_t varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/*
 * `delete` after the shim cleaned up. Returns 0 once answered, -1 to leave it to the
 * TypeScript delete (which also handles every case this one is unsure of).
 */
static int quick_delete(const struct flags *f) {
  if (!component(f->namespace) || !component(f->id)) return -1;
  int bundle = open(f->bundle && *f->bundle ? f->bundle : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (bundle < 0) return -1;
  int clean = absent(bundle, "moat-shim.json");
  if (clean) {
    struct statx sx;
    if (statx(bundle, "rootfs", AT_SYMLINK_NOFOLLOW, STATX_TYPE, &sx) == 0)
      clean = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
    else
      clean = errno == ENOENT;
  }
  close(bundle);
  if (!clean) return -1;
  int root = open(STATE_ROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0 && errno != ENOENT) return -1;
  if (root >= 0) {
    int ns = openat(root, f->namespace, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(root);
    if (ns < 0 && err != ENOENT) return -1;
    if (ns >= 0) {
      clean = absent(ns, f->id);
      close(ns);
      if (!clean) return -1;
    }
  }
  /* task.v2.DeleteResponse: pid (1) is 0 and so absent; exit_status (2) = 137;
     exited_at (3) = google.protobuf.Timestamp {seconds (1), nanos (2)} */
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  uint8_t ts[24], msg[40];
  size_t tn = 0, n = 0;
  ts[tn++] = 0x08;
  tn += varint(ts + tn, (uint64_t)now.tv_sec);
  ts[tn++] = 0x10;
  tn += varint(ts + tn, (uint64_t)now.tv_nsec);
  msg[n++] = 0x10;
  n += varint(msg + n, 128 + 9);
  msg[n++] = 0x1a;
  n += varint(msg + n, tn);
  memcpy(msg + n, ts, tn);
  n += tn;
  return write_all(1, msg, n) == 0 ? 0 : -1;
}

/* The shim's OOM score: containerd's plus one, as the runc shim sets it. Best effort. */
static void adjust_oom(long pid) {
  char path[64], val[32];
  snprintf(path, sizeof path, "/proc/%ld/oom_score_adj", (long)getppid());
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, val, sizeof val - 1);
  close(fd);
  if (n <= 0) return;
  val[n] = 0;
  long v = strtol(val, NULL, 10) + 1;
  snprintf(path, sizeof path, "/proc/%ld/oom_score_adj", pid);
  fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  int len = snprintf(val, sizeof val, "%ld", v > 1000 ? 1000 : v);
  if (write(fd, val, (size_t)len) < 0) {
    /* not allowed to lower it (rootless): the default is fine */
  }
  close(fd);
}

/* Reads stdin to its end into `in` (containerd writes the runtime options there, or nothing). */
static void read_stdin(struct buf *in) {
  char chunk[16384];
  for (;;) {
    ssize_t n = read(0, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return; /* EOF, or no stdin at all */
    append(in, chunk, (size_t)n);
    if (in->over) return;
  }
}

/* Makes `in` stdin again (in a sealed-off memfd), for the TypeScript start. */
static int restore_stdin(const struct buf *in) {
  int fd = memfd_create("moat-shim-stdin", MFD_CLOEXEC);
  if (fd < 0 || write_all(fd, in->p, in->n) < 0 || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0) return -1;
  close(fd);
  return 0;
}

/* Waits up to REPLY_TIMEOUT_MS for the standby's one-line reply; returns its length or -1. */
static int read_reply(int s, char *line) {
  size_t n = 0;
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = REPLY_TIMEOUT_MS - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)left) <= 0) return -1;
    ssize_t r = read(s, line + n, MAX_REPLY - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    n += (size_t)r;
    line[n] = 0;
    char *nl = strchr(line, '\n');
    if (nl) {
      *nl = 0;
      return (int)(nl - line);
    }
    if (n == MAX_REPLY - 1) return -1;
  }
}

/*
 * `start` through the standby. Returns the exit code once answered; -1 when there is no
 * standby (stdin untouched); -2 when the standby passed (stdin read into `in`).
 */
static int quick_start(int argc, char **argv, struct buf *in) {
  const char *off = getenv("MOAT_SHIM_STANDBY");
  if (off && strcmp(off, "0") == 0) return -1;
  struct stat st;
  if (stat(entry, &st) < 0) return -1;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, SOCKET_DIR "/moat-standby-%llu-%llu", (unsigned long long)st.st_dev,
           (unsigned long long)st.st_ino);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(s);
    return -1;
  }
  read_stdin(in);
  char cwd[PATH_MAX];
  struct buf req = {.max = MAX_REQUEST};
  static const char magic[] = {'M', 'O', 'A', 'T', 'C', 'L', 'A', 'I', 'M', 1};
  append(&req, magic, sizeof magic);
  for (int i = 1; i < argc; i++) record(&req, T_ARG, argv[i], strlen(argv[i]));
  for (char **e = environ; *e; e++) record(&req, T_ENV, *e, strlen(*e));
  if (getcwd(cwd, sizeof cwd)) record(&req, T_CWD, cwd, strlen(cwd));
  record(&req, T_STDIN, in->p, in->n);
  record(&req, T_END, "", 0);
  char line[MAX_REPLY];
  int n = -1;
  if (!req.over && !in->over && write_all(s, req.p, req.n) == 0) {
    shutdown(s, SHUT_WR);
    n = read_reply(s, line);
  }
  close(s);
  free(req.p);
  if (n < 0) return -2;
  if (strncmp(line, "ok ", 3) == 0) {
    char *end;
    long pid = strtol(line + 3, &end, 10);
    if (end == line + 3 || *end != ' ' || pid < 0) return -2;
    if (write_all(1, end + 1, strlen(end + 1)) < 0) return 1;
    if (pid > 0) adjust_oom(pid);
    return 0;
  }
  if (strncmp(line, "error ", 6) == 0) {
    dprintf(2, PROGRAM ": %s\n", line + 6);
    return 1;
  }
  return -2; /* "pass", or anything else */
}

int main(int argc, char **argv) {
  if (argc < 1) return 2;
  if (find_entry() < 0) {
    complain("cannot locate " ENTRY " from /proc/self/exe", 0);
    return 1;
  }
  struct flags f;
  parse_flags(argc, argv, &f);
  if (f.ok && !f.version && strcmp(f.action, "delete") == 0 && quick_delete(&f) == 0) return 0;
  if (f.ok && !f.version && strcmp(f.action, "start") == 0) {
    struct buf in = {.max = MAX_REQUEST};
    int code = quick_start(argc, argv, &in);
    if (code >= 0) return code;
    if (code == -2 && (in.over || restore_stdin(&in) < 0)) {
      complain("start: cannot hand the runtime options on", in.over ? EFBIG : errno);
      return 1;
    }
  }
  return exec_typescript(argv);
}
