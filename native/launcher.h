/*
 * launcher.h: what the native launchers native/moat.c and native/containerd-shim-moat-v1.c
 * share: where their installation is, and the buffer and records of their standby requests
 * (header only; each .c that includes it is built on its own, see its build line).
 */
#ifndef MOAT_LAUNCHER_H
#define MOAT_LAUNCHER_H
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Writes into `out` the path `rel` relative to the installation: the directory above dist/, in
 * which this binary really is (/proc/self/exe, symlinks resolved). 0, or -1 when it does not fit.
 */
static inline int installation_path(char *out, size_t size, const char *rel) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return -1;
  self[n] = 0;
  for (int k = 0; k < 2; k++) { /* drop the binary's name, then "/dist" */
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = 0;
  }
  return snprintf(out, size, "%s/%s", self, rel) < (int)size ? 0 : -1;
}

/* A growable byte buffer with a hard cap. */
struct buf {
  char *p;
  size_t n, cap, max;
  int over; /* set once an append would pass max */
};

/* Appends n bytes (kept NUL-terminated); past b->max it only sets b->over. */
static inline void append(struct buf *b, const void *p, size_t n) {
  if (b->over || b->n + n > b->max) {
    b->over = 1;
    return;
  }
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->over = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  b->p[b->n] = 0;
}

/* Appends a C string (without its NUL). */
static inline void appends(struct buf *b, const char *s) { append(b, s, strlen(s)); }

/* One request record: u8 tag, u32 length (little-endian), the bytes. */
static inline void record(struct buf *b, uint8_t tag, const void *p, size_t n) {
  uint8_t h[5] = {tag, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16), (uint8_t)(n >> 24)};
  append(b, h, sizeof h);
  append(b, p, n);
}

/* Writes all of p (send without SIGPIPE on a socket, write otherwise). */
static inline int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

#endif
