/*
 * race.c - test-only time-of-check/time-of-use attack on the sentry's path resolution, for
 * test/integration/sentry-security.test.ts. It runs inside a sentry container (static, so the
 * rootfs needs no libc) and is never part of Moat itself.
 *
 * Build: cc -O2 -static -pthread -o <bundle>/rootfs/bin/race test/sentry/race.c
 *
 * Usage: race MODE HOSTPATH SAFE_TOKEN SECRET_TOKEN [OPENS]
 *   HOSTPATH      absolute host path of a marker file outside the container root; its content
 *                 starts with SECRET_TOKEN
 *   SAFE_TOKEN    the content /safe (inside the container root) starts with
 *   OPENS         number of opens of thread B (default 20000)
 *
 *   buf    thread A rewrites a path buffer in memory between "/safe" and
 *          "/../../../../<HOSTPATH without its leading slash>" as fast as it can; thread B calls
 *          open(buffer) OPENS times and reads what it opened. The sentry reads the path out of
 *          the workload's memory: if it ever checks one string and lets the kernel (or itself)
 *          use another, B opens the marker.
 *   link   thread A repoints the symlink /race/link (by rename(2) of a fresh symlink over it)
 *          between "/safe", "HOSTPATH" and "../../../../../../../../<HOSTPATH>"; thread B opens
 *          /race/link OPENS times and reads what it opened.
 *
 * Prints one line:  <mode> opens=<n> safe=<n> secret=<n> other=<n> failed=<n> flips=<n>
 *   safe    opens that read SAFE_TOKEN (> 0 proves the race ran against real opens)
 *   secret  opens that read SECRET_TOKEN (must be 0)
 *   other   opens that read something else; failed: opens that failed
 * Exit status 0 after printing, 2 on a usage or setup error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path_buf[4096];
static char safe_path[] = "/safe";
static char evil_path[4096];
static const char *targets[3];
static atomic_int stop;
static atomic_long flips;

/* Thread A, mode buf: flips the path buffer between the safe and the escaping path. */
static void *flip_buf(void *arg) {
  (void)arg;
  size_t safe_len = strlen(safe_path) + 1, evil_len = strlen(evil_path) + 1;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    memcpy(path_buf, evil_path, evil_len);
    memcpy(path_buf, safe_path, safe_len);
    atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
  }
  return NULL;
}

/* Thread A, mode link: repoints /race/link between the safe and the escaping targets. */
static void *flip_link(void *arg) {
  (void)arg;
  unsigned i = 0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    const char *t = targets[i++ % 3];
    unlink("/race/tmp");
    if (symlink(t, "/race/tmp") != 0) continue;
    if (rename("/race/tmp", "/race/link") == 0) atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 5 || argv[2][0] != '/') {
    fprintf(stderr, "usage: race buf|link /HOSTPATH SAFE_TOKEN SECRET_TOKEN [OPENS]\n");
    return 2;
  }
  const char *mode = argv[1], *host = argv[2], *safe_tok = argv[3], *secret_tok = argv[4];
  long opens = argc > 5 ? atol(argv[5]) : 20000;
  int link_mode = strcmp(mode, "link") == 0;
  if (!link_mode && strcmp(mode, "buf") != 0) {
    fprintf(stderr, "race: unknown mode %s\n", mode);
    return 2;
  }
  static char rel[4096];
  snprintf(evil_path, sizeof evil_path, "/../../../..%s", host);
  snprintf(rel, sizeof rel, "../../../../../../../..%s", host);
  targets[0] = safe_path;
  targets[1] = host;
  targets[2] = rel;
  memcpy(path_buf, safe_path, sizeof safe_path);

  pthread_t a;
  if (link_mode) {
    if (mkdir("/race", 0755) != 0 && errno != EEXIST) {
      perror("race: mkdir /race");
      return 2;
    }
    unlink("/race/link");
    if (symlink(safe_path, "/race/link") != 0) {
      perror("race: symlink /race/link");
      return 2;
    }
  }
  if (pthread_create(&a, NULL, link_mode ? flip_link : flip_buf, NULL) != 0) {
    fprintf(stderr, "race: pthread_create failed\n");
    return 2;
  }
  /* let thread A get going before the first open */
  while (atomic_load(&flips) == 0) sched_yield();

  long safe = 0, secret = 0, other = 0, failed = 0;
  size_t safe_len = strlen(safe_tok), secret_len = strlen(secret_tok);
  char data[256];
  for (long i = 0; i < opens; i++) {
    int fd = open(link_mode ? "/race/link" : path_buf, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      failed++;
      continue;
    }
    ssize_t n = read(fd, data, sizeof data - 1);
    close(fd);
    if (n < 0) n = 0;
    data[n] = '\0';
    if ((size_t)n >= secret_len && memcmp(data, secret_tok, secret_len) == 0) {
      secret++;
    } else if ((size_t)n >= safe_len && memcmp(data, safe_tok, safe_len) == 0) {
      safe++;
    } else {
      other++;
    }
  }
  atomic_store(&stop, 1);
  pthread_join(a, NULL);
  printf("%s opens=%ld safe=%ld secret=%ld other=%ld failed=%ld flips=%ld\n", mode, opens, safe, secret, other, failed,
         atomic_load(&flips));
  return 0;
}
