/**
 * Shared helper of the fuzz tests (test/fuzz/*.test.ts): a seeded PRNG, a runner that feeds a
 * target thousands of generated inputs, and byte-level mutators.
 *
 * Every run is deterministic. Case `i` of a target draws from its own PRNG, seeded from the base
 * seed and `i` only, so one case replays alone:
 *
 *     MOAT_FUZZ_SEED=<n>   base seed (default 0x5eed_0008, the same every run)
 *     MOAT_FUZZ_CASE=<i>   run only case i of each target (the failure message names it)
 *     MOAT_FUZZ_SCALE=<x>  multiply every target's number of cases (e.g. 10 for a long soak)
 *
 * A failing case throws with the target, the replay line, the input (rendered, long ones cut)
 * and the original error as `cause`. Each check is synchronous and timed: one input taking more
 * than `maxMs` (1 s) fails, and so does resident memory growing by more than `rssLimitMb`.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadKoffi } from '../../src/sys/koffi.js';

/*
 * Full garbage collections, to tell retained memory from garbage not yet collected before a
 * resident-memory check fails (the flag is set at run time, so plain `node --test` works).
 */
setFlagsFromString('--expose-gc');
const v8gc = runInNewContext('gc') as () => void;
/**
 * glibc keeps freed heap pages (its mmap threshold grows after large frees), so resident memory
 * can stay high after a collection though nothing is retained: malloc_trim(0) hands them back,
 * and what then remains resident is memory really in use.
 */
const mallocTrim = ((): (() => void) => {
  try {
    const koffi = loadKoffi() as { load(lib: string): { func(sig: string): (pad: number) => number } };
    const trim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)');
    return () => void trim(0);
  } catch {
    return () => {}; // not glibc: resident memory is then measured as it is
  }
})();
/**
 * Two collections (V8 frees ArrayBuffer backing stores concurrently after the first; the second
 * finishes that) and a malloc_trim: what stays resident after this is really in use.
 */
const collectGarbage = (): void => {
  v8gc();
  v8gc();
  mallocTrim();
};

/** mulberry32: a small, fast 32-bit PRNG; the same seed gives the same sequence everywhere. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  /** The next 32 random bits as an unsigned integer. */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi] (both inclusive). */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('fuzz helper: pick from an empty array');
    return items[this.int(items.length)] as T;
  }

  /** One of several choices, each with a weight. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((n, [w]) => n + w, 0);
    let r = this.next() * total;
    for (const [w, v] of choices) {
      r -= w;
      if (r < 0) return v;
    }
    return choices[choices.length - 1]![1];
  }

  /** A size in [0, max], skewed toward small values (log-uniform), so edge lengths are common. */
  size(max: number): number {
    return Math.min(max, Math.floor(Math.exp(this.next() * Math.log(max + 2))) - 1);
  }

  /** A random 64-bit value. */
  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  /** `n` random bytes. */
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      for (let j = 0; j < 4 && i + j < n; j++) b[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return b;
  }

  /** A fresh generator seeded from this one (for a sub-step that must not shift the main sequence). */
  fork(): Rng {
    return new Rng(this.u32());
  }
}

/** Mixes the base seed and a case index into the case's seed (splitmix32-style finalizer). */
export function caseSeed(base: number, i: number): number {
  let h = (base ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

/** The base seed of this run (MOAT_FUZZ_SEED, or a fixed default). */
export const BASE_SEED = (envInt('MOAT_FUZZ_SEED') ?? 0x5eed_0008) >>> 0;
const ONLY_CASE = envInt('MOAT_FUZZ_CASE');
/** True when MOAT_FUZZ_CASE replays one case: checks on the volume of a whole run do not apply. */
export const REPLAYING = ONLY_CASE !== undefined;
const SCALE = envInt('MOAT_FUZZ_SCALE') ?? 1;

/** Renders an input for a failure message: JSON-ish, Buffers as hex, everything cut at `max` characters. */
export function render(value: unknown, max = 2000): string {
  let text: string;
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    const b = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    text = `<${b.length} bytes> ${b.subarray(0, Math.ceil(max / 2)).toString('hex')}`;
  } else if (typeof value === 'string') {
    text = JSON.stringify(value.length > max ? value.slice(0, max) : value) + (value.length > max ? ` (${value.length} chars)` : '');
  } else {
    try {
      text = JSON.stringify(value, (_k, v: unknown) => {
        if (typeof v === 'bigint') return `${v}n`;
        if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
        if (v === undefined) return '<undefined>';
        if (Buffer.isBuffer(v)) return `<${v.length} bytes> ${v.subarray(0, 64).toString('hex')}`;
        if (typeof v === 'string' && v.length > 200) return `${v.slice(0, 200)}... (${v.length} chars)`;
        return v;
      }) ?? String(value);
    } catch (e) {
      text = `<unrenderable: ${e instanceof Error ? e.message : String(e)}>`;
    }
  }
  return text.length > max ? `${text.slice(0, max)}... (${text.length} chars)` : text;
}

/** One fuzz target: how to make input `i` and what must hold for it. */
export interface FuzzTarget<T> {
  /** Name of the target, for messages. */
  name: string;
  /** Number of cases (before MOAT_FUZZ_SCALE). */
  count: number;
  /** Makes case `i`'s input from its own PRNG. */
  generate(rng: Rng, i: number): T;
  /**
   * Runs the target on the input and asserts the properties; throws on a violation. `rng` is the
   * case's PRNG after generation (for random chunkings and the like: still deterministic).
   */
  check(input: T, rng: Rng, i: number): void;
  /** Renders the input for a failure message (default: {@link render}). */
  show?(input: T): string;
  /** Slowest allowed check, in ms (default 1000). */
  maxMs?: number;
  /** Largest allowed growth of resident memory over the whole run, in MB (default 200). */
  rssLimitMb?: number;
}

/** What a fuzz run did, for the test's diagnostic line. */
export interface FuzzReport {
  cases: number;
  totalMs: number;
  slowestMs: number;
  slowestCase: number;
  rssGrowthMb: number;
}

/** Runs every case of `target`; throws (with replay instructions) at the first failing one. */
export function fuzz<T>(target: FuzzTarget<T>): FuzzReport {
  const maxMs = target.maxMs ?? 1000;
  const rssLimit = (target.rssLimitMb ?? 200) * 1024 * 1024;
  const count = Math.max(1, Math.round(target.count * SCALE));
  collectGarbage();
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  const start = performance.now();
  const report: FuzzReport = { cases: 0, totalMs: 0, slowestMs: 0, slowestCase: -1, rssGrowthMb: 0 };
  const fail = (i: number, seed: number, input: T | undefined, what: string, cause?: unknown): never => {
    const shown = input === undefined ? '(not generated)' : target.show ? target.show(input) : render(input);
    const detail = cause instanceof Error ? `${cause.name}: ${cause.message}\n${cause.stack ?? ''}` : cause === undefined ? '' : String(cause);
    throw new Error(
      `fuzz ${target.name}: case ${i} ${what}\n` +
        `  replay: MOAT_FUZZ_SEED=${BASE_SEED} MOAT_FUZZ_CASE=${i} (case seed ${seed})\n` +
        `  input: ${shown}\n` +
        (detail ? `  error: ${detail}` : ''),
      { cause },
    );
  };
  for (let i = 0; i < count; i++) {
    if (ONLY_CASE !== undefined && i !== ONLY_CASE) continue;
    const seed = caseSeed(BASE_SEED, i);
    const rng = new Rng(seed);
    let input: T | undefined;
    try {
      input = target.generate(rng, i);
    } catch (e) {
      fail(i, seed, undefined, 'could not be generated (a bug of the test)', e);
    }
    const t0 = performance.now();
    try {
      target.check(input as T, rng, i);
    } catch (e) {
      fail(i, seed, input, 'failed', e);
    }
    const ms = performance.now() - t0;
    if (ms > report.slowestMs) {
      report.slowestMs = ms;
      report.slowestCase = i;
    }
    if (ms > maxMs) fail(i, seed, input, `took ${ms.toFixed(0)} ms (limit ${maxMs} ms): a near-hang`);
    if ((i & 63) === 63) {
      let rss = process.memoryUsage().rss;
      if (rss - rss0 > rssLimit) {
        collectGarbage(); // garbage of earlier cases is not a blow-up; what survives a full collection is
        rss = process.memoryUsage().rss;
      }
      peak = Math.max(peak, rss);
      if (rss - rss0 > rssLimit) {
        const m = process.memoryUsage();
        const mb = (n: number): string => (n / 1048576).toFixed(0);
        fail(i, seed, input, `left resident memory ${mb(rss - rss0)} MB above its start (limit ${rssLimit / 1048576} MB) after a full GC ` +
          `(V8 heap used ${mb(m.heapUsed)} MB, external ${mb(m.external)} MB, array buffers ${mb(m.arrayBuffers)} MB)`);
      }
    }
    report.cases++;
  }
  peak = Math.max(peak, process.memoryUsage().rss);
  report.totalMs = performance.now() - start;
  report.rssGrowthMb = (peak - rss0) / 1048576;
  return report;
}

/** One line about a run, for `t.diagnostic`. */
export function describeRun(name: string, r: FuzzReport): string {
  return `${name}: ${r.cases} inputs in ${(r.totalMs / 1000).toFixed(2)} s (slowest ${r.slowestMs.toFixed(1)} ms, case ${r.slowestCase}; rss +${r.rssGrowthMb.toFixed(0)} MB; seed ${BASE_SEED})`;
}

// ---------------------------------------------------------------------------------------------
// Byte-level generators and mutators

/** 32-bit values that sit on the edges of length and count fields. */
export const EDGE_U32 = [
  0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 127, 128, 255, 256, 4095, 4096, 4097, 65535, 65536,
  0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
] as const;

/**
 * Splits `data` into random chunks (empty ones and 1-byte ones included) whose concatenation is
 * `data`; at most about `maxChunks` of them (longer inputs get proportionally longer chunks).
 */
export function chunk(rng: Rng, data: Buffer, maxChunks = Infinity): Buffer[] {
  const out: Buffer[] = [];
  const mode = rng.int(4);
  const least = Math.max(1, Math.ceil(data.length / maxChunks));
  let off = 0;
  while (off < data.length) {
    if (rng.chance(0.05)) out.push(Buffer.alloc(0));
    const n = Math.max(least, mode === 0 ? 1 : mode === 1 ? rng.range(1, 16) : mode === 2 ? rng.range(1, Math.max(1, data.length)) : 1 + rng.size(4096));
    out.push(data.subarray(off, off + n));
    off += n;
  }
  if (rng.chance(0.1)) out.push(Buffer.alloc(0));
  return out;
}

/** Applies 1 to `max` random byte-level mutations: bit flips, edge values, truncation, splices, repeats. */
export function mutateBytes(rng: Rng, input: Buffer, max = 4): Buffer {
  let b = Buffer.from(input);
  const n = rng.range(1, max);
  for (let k = 0; k < n; k++) {
    const at = b.length === 0 ? 0 : rng.int(b.length);
    switch (rng.int(9)) {
      case 0: // flip one bit
        if (b.length > 0) b[at] = b[at]! ^ (1 << rng.int(8));
        break;
      case 1: // an edge byte
        if (b.length > 0) b[at] = rng.pick([0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]);
        break;
      case 2: // an edge u32 (either byte order) over whatever is there
        if (b.length >= 4) {
          const v = rng.pick(EDGE_U32);
          const pos = rng.int(b.length - 3);
          if (rng.chance(0.5)) b.writeUInt32LE(v, pos);
          else b.writeUInt32BE(v, pos);
        }
        break;
      case 3: // truncate
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 4: // insert random bytes
        b = Buffer.concat([b.subarray(0, at), rng.bytes(rng.size(64)), b.subarray(at)]);
        break;
      case 5: // delete a slice
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + rng.size(32))]);
        break;
      case 6: {
        // duplicate a slice in place
        const len = rng.size(64);
        b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
        break;
      }
      case 7: // append garbage
        b = Buffer.concat([b, rng.bytes(rng.size(256))]);
        break;
      default: // random byte
        if (b.length > 0) b[at] = rng.int(256);
    }
  }
  return b;
}

/** Asserts that `err` is an instance of `cls` and has a non-empty message; returns it typed. */
export function expectTyped<E extends Error>(err: unknown, cls: abstract new (...args: never[]) => E, what: string): E {
  if (!(err instanceof cls)) {
    const got = err instanceof Error ? `${err.constructor.name}: ${err.message}` : `a thrown ${typeof err} ${String(err)}`;
    throw new Error(`${what} threw ${got}, not a ${cls.name}`, { cause: err });
  }
  if (typeof err.message !== 'string' || err.message.trim() === '') throw new Error(`${what} threw a ${cls.name} with an empty message`);
  if (/\[object \w+\]/.test(err.message)) throw new Error(`${what}: unclear message ${JSON.stringify(err.message.slice(0, 300))}`);
  return err;
}
