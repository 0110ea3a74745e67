/**
 * `moat events`: container events as runc prints them: one JSON object per line, `stats` every
 * --interval and `oom` whenever the OOM killer strikes; --stats prints one `stats` and exits.
 */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { writeOut } from '../util/log.js';
import { context } from './common.js';

/** Parses a Go-style duration such as 5s, 500ms or 1m. */
function duration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(v);
  if (!m) throw new UsageError(`--interval: expected a duration such as 5s or 500ms, got "${v}"`);
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
  if (ms < 10) throw new UsageError('--interval: must be at least 10ms');
  return ms;
}

/** Registers `events`. */
export function register(program: Command): void {
  program.command('events').description('display container events such as OOM notifications and usage statistics').argument('<container-id>')
    .option('--stats', 'display the container\'s stats once, then exit')
    .option('--interval <duration>', 'how often to collect stats', '5s')
    .action(async (id: string, f: { stats?: boolean; interval: string }, cmd: Command) => {
      const { stats } = await import('../container/lifecycle.js');
      const ctx = context(cmd);
      const interval = duration(f.interval);
      const emit = (type: string, data?: unknown) => writeOut(JSON.stringify({ type, id, ...(data !== undefined ? { data } : {}) }) + '\n');
      let last = await stats(ctx, id);
      if (f.stats) {
        if (!last.stats) throw new UsageError(`container "${id}" is stopped: it has no stats`);
        emit('stats', last.stats);
        return;
      }
      // OOM kills are counted by the kernel; a rise between two looks is an event
      let nextStats = 0;
      for (;;) {
        const now = Date.now();
        const cur = await stats(ctx, id);
        for (let i = last.oomKills; i < cur.oomKills; i++) emit('oom');
        if (cur.status === 'stopped') return;
        if (now >= nextStats && cur.stats) {
          emit('stats', cur.stats);
          nextStats = now + interval;
        }
        last = cur;
        await new Promise((r) => setTimeout(r, Math.min(interval, 100)));
      }
    });
}
