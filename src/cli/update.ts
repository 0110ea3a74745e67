/** `moat update`: change the resource limits of a container (runc's flags, or -r JSON). */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigError, UsageError } from '../errors.js';
import { context } from './common.js';

interface UpdateFlags {
  resources?: string;
  memory?: string;
  memoryReservation?: string;
  memorySwap?: string;
  cpuShares?: string;
  cpuQuota?: string;
  cpuPeriod?: string;
  cpusetCpus?: string;
  cpusetMems?: string;
  pidsLimit?: string;
  blkioWeight?: string;
}

/** Parses a size like 512, 64k, 128m or 2g (runc's units: powers of 1024); -1 means unlimited. */
function size(flag: string, v: string): number {
  const m = /^(-1|\d+)([kmgt]?)b?$/i.exec(v.trim());
  if (!m) throw new UsageError(`--${flag}: expected a size such as 512m, got "${v}"`);
  const n = Number(m[1]);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return n < 0 ? -1 : n * unit;
}

function int(flag: string, v: string): number {
  if (!/^-?\d+$/.test(v)) throw new UsageError(`--${flag}: expected an integer, got "${v}"`);
  return Number(v);
}

/** Registers `update`. */
export function register(program: Command): void {
  program.command('update').description('update container resource constraints').argument('<container-id>')
    .option('-r, --resources <file>', 'path to a JSON file of linux.resources, or - for stdin')
    .option('--memory <size>', 'memory limit')
    .option('--memory-reservation <size>', 'memory soft limit')
    .option('--memory-swap <size>', 'memory plus swap limit')
    .option('--cpu-shares <n>', 'CPU shares (relative weight)')
    .option('--cpu-quota <us>', 'CPU CFS quota in microseconds')
    .option('--cpu-period <us>', 'CPU CFS period in microseconds')
    .option('--cpuset-cpus <list>', 'CPUs to use, e.g. 0-1')
    .option('--cpuset-mems <list>', 'memory nodes to use')
    .option('--pids-limit <n>', 'maximum number of processes')
    .option('--blkio-weight <n>', 'block IO weight (10-1000)')
    .action(async (id: string, f: UpdateFlags, cmd: Command) => {
      const { update } = await import('../container/lifecycle.js');
      const { parseResources } = await import('../cgroups/index.js');
      let input: Record<string, Record<string, unknown>> = {};
      if (f.resources) {
        try {
          input = JSON.parse(readFileSync(f.resources === '-' ? 0 : f.resources, 'utf8')) as typeof input;
        } catch (e) {
          throw new ConfigError('', `--resources ${f.resources}: ${(e as Error).message}`);
        }
      }
      const put = (section: string, key: string, value: unknown) => {
        input[section] = { ...(input[section] ?? {}), [key]: value };
      };
      if (f.memory) put('memory', 'limit', size('memory', f.memory));
      if (f.memoryReservation) put('memory', 'reservation', size('memory-reservation', f.memoryReservation));
      if (f.memorySwap) put('memory', 'swap', size('memory-swap', f.memorySwap));
      if (f.cpuShares) put('cpu', 'shares', int('cpu-shares', f.cpuShares));
      if (f.cpuQuota) put('cpu', 'quota', int('cpu-quota', f.cpuQuota));
      if (f.cpuPeriod) put('cpu', 'period', int('cpu-period', f.cpuPeriod));
      if (f.cpusetCpus) put('cpu', 'cpus', f.cpusetCpus);
      if (f.cpusetMems) put('cpu', 'mems', f.cpusetMems);
      if (f.pidsLimit) put('pids', 'limit', int('pids-limit', f.pidsLimit));
      if (f.blkioWeight) put('blockIO', 'weight', int('blkio-weight', f.blkioWeight));
      await update(context(cmd), id, parseResources(input, ''));
    });
}
