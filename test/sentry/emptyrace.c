/*
 * emptyrace.c - test-only time-of-check/time-of-use attack on the sentry's handling of an empty
 * path with AT_EMPTY_PATH (glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH)), for
 * test/integration/sentry-security.test.ts. It runs inside a sentry container (static) and is
 * never part of Moat itself.
 *
 * Build: cc -O2 -static -pthread -o <bundle>/rootfs/bin/emptyrace test/sentry/emptyrace.c
 *
 * Usage: emptyrace [STATS]
 *   The directory fd is /proc opened as a directory: under the sentry, a scratch listing whose
 *   entries are empty files, while a path through it (/proc/cpuinfo) is the sentry's synthetic
 *   file. Thread A rewrites a path buffer between "" and "cpuinfo" as fast as it can; thread B
 *   calls fstatat(dirfd, buffer, AT_EMPTY_PATH) STATS times (default 20000). If the sentry ever
 *   reads "" and lets the kernel run the call, the kernel reads the buffer again and may find
 *   "cpuinfo": it then stats the scratch entry, which the sentry never shows (another device or
 *   inode than stat("/proc/cpuinfo") reports).
 *
 * Prints one line:  empty stats=<n> dir=<n> synth=<n> kernel=<n> failed=<n> flips=<n>
 *   dir     results of the directory itself (the empty path)
 *   synth   results equal to stat("/proc/cpuinfo") (> 0 with dir > 0 proves the race ran)
 *   kernel  any other result (must be 0)
 * Exit status 0 after printing, 2 on a setup error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile char path_buf[16]; /* volatile: the flips are stores nothing in this thread reads */
static atomic_int stop;
static atomic_long flips;

/* A few microseconds of busy waiting, so that each content of the buffer lasts a while. */
static void spin(void) {
  for (volatile int i = 0; i < 2000; i++) {
  }
}

/* Thread A: flips the path buffer between "" and "cpuinfo", each held for a moment. */
static void *flip(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    path_buf[0] = 'c';
    spin();
    path_buf[0] = '\0';
    spin();
    atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long stats = argc > 1 ? atol(argv[1]) : 20000;
  struct stat ref, dir, st;
  int dirfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0 || fstat(dirfd, &dir) != 0 || stat("/proc/cpuinfo", &ref) != 0) {
    perror("emptyrace: /proc");
    return 2;
  }
  pthread_t a;
  if (pthread_create(&a, NULL, flip, NULL) != 0) {
    fprintf(stderr, "emptyrace: pthread_create failed\n");
    return 2;
  }
  memcpy((char *)path_buf, "\0puinfo", 8); /* the first byte alone flips it: "" or "cpuinfo" */
  while (atomic_load(&flips) == 0) sched_yield();
  long ndir = 0, synth = 0, kernel = 0, failed = 0;
  for (long i = 0; i < stats; i++) {
    if (fstatat(dirfd, (const char *)path_buf, &st, AT_EMPTY_PATH) != 0) failed++;
    else if (st.st_dev == dir.st_dev && st.st_ino == dir.st_ino) ndir++;
    else if (st.st_dev == ref.st_dev && st.st_ino == ref.st_ino) synth++;
    else kernel++;
  }
  atomic_store(&stop, 1);
  pthread_join(a, NULL);
  printf("empty stats=%ld dir=%ld synth=%ld kernel=%ld failed=%ld flips=%ld\n", stats, ndir, synth, kernel, failed, atomic_load(&flips));
  return 0;
}
