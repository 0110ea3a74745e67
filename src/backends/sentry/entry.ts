/** Process entry of dist/sentry.cjs: the sentry itself, or one of its worker threads. */
import { isMainThread, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { sentryMain, sentryWorker } from './main.js';
import type { WorkerSetup } from './workers.js';

if (isMainThread) {
  try {
    process.exitCode = sentryMain(process.argv.slice(2), fileURLToPath(import.meta.url));
  } catch (e) {
    process.stderr.write(`sentry: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  }
  process.exit();
} else {
  sentryWorker(workerData as { index: number; busy: Int32Array; setup: WorkerSetup });
}
