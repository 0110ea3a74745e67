// Helpers shared by the benches in this folder (plain JS ESM, like them).
import { spawnSync } from 'node:child_process';
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

/** Pads the cells of a table to the widest of each column; the first column is left-aligned. */
export function printTable(rows) {
  const widths = rows[0].map((_, j) => Math.max(...rows.map((r) => String(r[j] ?? '').length)));
  for (const r of rows) {
    console.log(r.map((c, j) => (j === 0 ? String(c ?? '').padEnd(widths[j]) : String(c ?? '').padStart(widths[j]))).join('  ').trimEnd());
  }
}

/** A "Key:   N kB" field of a /proc file's text, in KiB. */
export function kbField(text, key) {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/** VmRSS (status) and Pss (smaps_rollup) of a process, KiB; undefined where it is gone or the kernel lacks the file. */
export function procMemory(pid) {
  const read = (file, key) => {
    try {
      return kbField(fs.readFileSync(`/proc/${pid}/${file}`, 'utf8'), key);
    } catch {
      return undefined;
    }
  };
  return { rss: read('status', 'VmRSS'), pss: read('smaps_rollup', 'Pss') };
}

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

/** The machine's CPU time so far from /proc/stat, in ticks: [busy, total] (idle and iowait are not busy). */
function cpuTicks() {
  const f = fs.readFileSync('/proc/stat', 'latin1').split('\n', 1)[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return [total - f[3] - f[4], total];
}

/**
 * Waits until the machine is quiet: at most `busyShare` of all its CPU time busy over a `windowMs`
 * window, for at most `maxMs`. A run that follows another runtime's run would otherwise share the
 * CPUs with its background work (a teardown, a standby starting for the next command), and on a
 * VM a cross-CPU wake-up costs far more when the other vCPU is halted than when it is busy, so a
 * per-call cost depends on what ran just before. Resolves to whether the machine got quiet.
 */
export async function settle({ windowMs = 200, busyShare = 0.05, maxMs = 5000 } = {}) {
  const end = Date.now() + maxMs;
  for (;;) {
    const [b0, t0] = cpuTicks();
    await new Promise((r) => setTimeout(r, windowMs));
    const [b1, t1] = cpuTicks();
    if (t1 > t0 && (b1 - b0) / (t1 - t0) <= busyShare) return true;
    if (Date.now() >= end) return false;
  }
}

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
  if (interrupt.stopped) console.error('\nbench interrupted; cleaning up'); // first: Ctrl-C also fails the runtime it reached
  else if (err instanceof RuntimeFailure) console.error(`\nbench failed: runtime error\n${err.message}`);
  else console.error(`\nbench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return 1;
}

/** Mount points at or under `dir` in this mount namespace (/proc/self/mountinfo), deepest first. */
export function mountsUnder(dir) {
  const unescape = (s) => s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  const points = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Lazily unmounts (umount -l) whatever is left mounted at or under `dir` (by an engine the bench
 * started), before the directory is removed; returns the mount points it found.
 */
export function unmountUnder(dir) {
  const found = new Set();
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) break;
    for (const p of points) {
      found.add(p);
      spawnSync('umount', ['-l', p], { stdio: 'ignore' });
    }
  }
  return [...found];
}

/** Removes a bench's temporary directory, saying so (and carrying on) if it cannot. */
export function removeTemp(dir) {
  try {
    fs.rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    console.error(`cleanup: cannot remove ${dir}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
