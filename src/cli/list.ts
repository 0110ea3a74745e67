/** `moat list`: the containers under --root, as runc prints them. */
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { writeOut } from '../util/log.js';
import { context } from './common.js';

/** Registers `list`. */
export function register(program: Command): void {
  program.command('list').alias('ls').description('list containers')
    .option('-f, --format <format>', 'table or json', 'table')
    .option('-q, --quiet', 'print only the container ids')
    .action(async (flags: { format: string; quiet?: boolean }, cmd: Command) => {
      const { list } = await import('../container/lifecycle.js');
      if (flags.format !== 'table' && flags.format !== 'json') throw new UsageError(`--format: expected table or json, got "${flags.format}"`);
      const states = list(context(cmd));
      if (flags.quiet) {
        writeOut(states.map((s) => s.id + '\n').join(''));
      } else if (flags.format === 'json') {
        // runc prints null for an empty list; containerd's client accepts both
        writeOut(JSON.stringify(states.length ? states : null) + '\n');
      } else {
        const rows = [['ID', 'PID', 'STATUS', 'BUNDLE', 'CREATED', 'OWNER'],
          ...states.map((s) => [s.id, String(s.pid), s.status, s.bundle, s.created, s.owner])];
        const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)) + 3);
        writeOut(rows.map((r) => r.map((cell, c) => (c < r.length - 1 ? cell.padEnd(widths[c]!) : cell)).join('') + '\n').join(''));
      }
    });
}
