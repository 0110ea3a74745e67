/**
 * Entry of dist/sentry.cjs. `bin/moat.cjs --sentry CONFIG` loads it (with its V8 code cache)
 * and calls `run` (`--sentry-standby ARGS`: `standby`); the sentry's worker threads load the bundle file directly.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { sentryMain, sentryStandby, sentryWorker } from './main.js';
import { buildSentryFilter } from './filter.js';
import type { WorkerSetup } from './workers.js';

/**
 * The sentry's only work on libuv's threadpool is the serving loop's idle wait (core.ts): one
 * thread, not libuv's default four. Read when the pool starts, on its first use.
 */
function oneThreadpoolThread(): void {
  process.env.UV_THREADPOOL_SIZE = '1';
}

/** Runs the sentry with the JSON configuration in argv[0]; resolves with the exit code. */
export async function run(argv: string[]): Promise<number> {
  oneThreadpoolThread();
  try {
    return await sentryMain(argv, fileURLToPath(import.meta.url));
  } catch (e) {
    process.stderr.write(`sentry: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

/** Runs a warm standby sentry (standby.ts) with its JSON arguments in argv[0]; resolves with the exit code. */
export async function standby(argv: string[]): Promise<number> {
  oneThreadpoolThread();
  try {
    return await sentryStandby(argv, fileURLToPath(import.meta.url));
  } catch (e) {
    process.stderr.write(`sentry standby: ${(e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

/** Compiles what every sentry start runs, so the build's code cache holds it. */
export function warmUp(): void {
  buildSentryFilter('balanced');
}

const role = isMainThread ? undefined : (workerData as { role?: string } | null)?.role;
if (role === 'sentry-worker') sentryWorker(workerData as { index: number; busy: Int32Array; fifos: Int32Array; setup: WorkerSetup });
