// Helpers shared by the benches in this folder (plain JS ESM, like them).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A runtime failed (non-zero exit, timeout, bad output): the bench reports it and exits 1. */
export class RuntimeFailure extends Error {}

/** Finds an executable on PATH (or checks an explicit path); undefined when absent. */
export function which(program) {
  const candidates = program.includes('/')
    ? [path.resolve(program)]
    : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, program));
  for (const c of candidates) {
    try {
      if (fs.statSync(c).isFile()) {
        fs.accessSync(c, fs.constants.X_OK);
        return c;
      }
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Describes how to invoke a runtime: scripts run under this node, binaries directly. */
export function runtime(name, file) {
  const cmd = /\.(mjs|cjs|js)$/.test(file) ? [process.execPath, file] : [file];
  return { name, cmd, label: cmd.join(' '), root: '', ids: new Set() };
}

/** The last lines of a command's output, indented for an error message. */
export function tail(text, lines = 15) {
  const t = text.trimEnd().split('\n').slice(-lines).join('\n');
  return t === '' ? '  (no output)' : t.replace(/^/gm, '  | ');
}

/** Median, p90, mean, min and max of a list of numbers. */
export function stats(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
  const mid = s.length / 2;
  const median = s.length % 2 ? s[Math.floor(mid)] : (s[mid - 1] + s[mid]) / 2;
  return { median, p90: at(0.9), mean: s.reduce((a, b) => a + b, 0) / s.length, min: s[0], max: s[s.length - 1] };
}

/** a/b as a ratio such as 1.23x. */
export const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}x` : 'n/a');

/**
 * C source every timed program starts with: the headers they use, now() in nanoseconds from
 * CLOCK_MONOTONIC and seccomp_mode() from /proc/self/status (so a run can show it was filtered).
 */
export const C_PRELUDE = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int seccomp_mode(void) {
  char line[256];
  int mode = -1;
  FILE *f = fopen("/proc/self/status", "re");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "Seccomp:", 8) == 0) { sscanf(line + 8, "%d", &mode); break; }
  fclose(f);
  return mode;
}
`;

/** Ctrl-C handling of a bench: `stop()` from a signal handler, `check()`/`tick()` in the loops. */
export const interrupt = {
  stopped: false,
  /** Marks the run as interrupted (from a SIGINT/SIGTERM handler). */
  stop() {
    interrupt.stopped = true;
  },
  /** Throws if the run was interrupted. */
  check() {
    if (interrupt.stopped) throw new Error('interrupted by a signal');
  },
  /** Lets the event loop run once, so that a pending signal handler can mark the run, then checks. */
  tick() {
    return new Promise((resolve) => setImmediate(resolve)).then(interrupt.check);
  },
};

/**
 * Reads a bench's command-line flags in order: `next()` gives the next flag; `value()` and
 * `count(min)` take its argument (an integer >= min for count), or print the problem and
 * `usage(2)` (which exits).
 */
export function flagReader(argv, usage) {
  let i = -1;
  const reader = {
    next() {
      i += 1;
      return argv[i];
    },
    value() {
      const flag = argv[i];
      const v = argv[++i];
      if (v === undefined) {
        console.error(`${flag} needs a value`);
        usage(2);
      }
      return v;
    },
    count(min) {
      const flag = argv[i];
      const raw = reader.value();
      const n = Number(raw);
      if (!Number.isInteger(n) || n < min) {
        console.error(`${flag}: expected an integer >= ${min}, got "${raw}"`);
        usage(2);
      }
      return n;
    },
  };
  return reader;
}

/** Prints why a bench run failed (a runtime's error, Ctrl-C, or a bug of the bench) and returns exit code 1. */
export function reportFailure(err) {
  if (err instanceof RuntimeFailure) console.error(`\nbench failed: runtime error\n${err.message}`);
  else if (interrupt.stopped) console.error('\nbench interrupted; cleaning up');
  else console.error(`\nbench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return 1;
}

/** Removes a bench's temporary directory, saying so (and carrying on) if it cannot. */
export function removeTemp(dir) {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    console.error(`cleanup: cannot remove ${dir}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
