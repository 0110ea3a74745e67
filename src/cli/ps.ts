/** `moat ps`: the processes of a container, as runc prints them (ps(1) lines, or JSON pids). */
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { MoatError, UsageError } from '../errors.js';
import { writeOut } from '../util/log.js';
import { context } from './common.js';

/** Registers `ps`. */
export function register(program: Command): void {
  program.command('ps').description('list the processes running inside a container')
    .argument('<container-id>').argument('[ps-options...]', 'options for ps(1) (default -ef)')
    .option('-f, --format <format>', 'table or json', 'table')
    .passThroughOptions()
    .action(async (id: string, psArgs: string[], flags: { format: string }, cmd: Command) => {
      const { pids } = await import('../container/lifecycle.js');
      if (flags.format !== 'table' && flags.format !== 'json') throw new UsageError(`--format: expected table or json, got "${flags.format}"`);
      const list = await pids(context(cmd), id);
      if (flags.format === 'json') {
        writeOut(JSON.stringify(list) + '\n');
        return;
      }
      let out: string;
      try {
        out = execFileSync('ps', psArgs.length ? psArgs : ['-ef'], { encoding: 'utf8' });
      } catch (e) {
        throw new MoatError(`ps ${psArgs.join(' ')}: ${(e as Error).message}`);
      }
      const [header = '', ...lines] = out.split('\n');
      const col = header.trim().split(/\s+/).indexOf('PID');
      if (col < 0) throw new MoatError('ps output has no PID column');
      const wanted = new Set(list.map(String));
      writeOut([header, ...lines.filter((l) => wanted.has(l.trim().split(/\s+/)[col] ?? ''))].join('\n') + '\n');
    });
}
