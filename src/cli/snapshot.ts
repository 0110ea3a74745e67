/**
 * `moat snapshot create|list|inspect|delete`: named checkpoints of warmed-up containers under
 * the state root (src/checkpoint/snapshots.ts). New containers start from one with
 * `moat run --from-snapshot NAME` or `create --from-snapshot NAME` + `start`.
 */
import type { Command } from 'commander';
import { context, globals } from './common.js';

interface CreateSnapshotFlags {
  from: string;
  stop?: boolean;
}

/** Registers `snapshot`. */
export function register(program: Command): void {
  const snap = program.command('snapshot').description('named checkpoints of containers, to start new ones from');
  snap.command('create').description('save a running container as snapshot NAME (it keeps running unless --stop)').argument('<name>')
    .requiredOption('--from <container-id>', 'the running container to save')
    .option('--stop', 'end the container after the snapshot (as checkpoint without --leave-running)')
    .action(async (name: string, flags: CreateSnapshotFlags, cmd: Command) => {
      const lifecycle = await import('../container/lifecycle.js');
      const { createSnapshot } = await import('../checkpoint/snapshots.js');
      const ctx = context(cmd);
      const rec = ctx.store.read(flags.from);
      await createSnapshot(globals(cmd).root, name, { id: flags.from, isolation: rec.isolation, bundle: rec.bundle }, (imagePath) =>
        lifecycle.checkpoint(ctx, flags.from, { imagePath, leaveRunning: flags.stop !== true }));
    });
  snap.command('list').description('list the snapshots')
    .option('--format <format>', 'table or json', 'table')
    .action(async (flags: { format: string }, cmd: Command) => {
      const { listSnapshots } = await import('../checkpoint/snapshots.js');
      const all = listSnapshots(globals(cmd).root);
      if (flags.format === 'json') {
        process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
        return;
      }
      process.stdout.write('NAME\tFROM\tISOLATION\tCREATED\n');
      for (const s of all) process.stdout.write(`${s.name}\t${s.from}\t${s.isolation}\t${s.created}\n`);
    });
  snap.command('inspect').description('show a snapshot\'s processes, open files, memory regions and sizes (runs nothing)').argument('<name>')
    .option('--format <format>', 'text or json', 'text')
    .action(async (name: string, flags: { format: string }, cmd: Command) => {
      const { inspectSnapshot } = await import('../checkpoint/snapshots.js');
      const r = await inspectSnapshot(globals(cmd).root, name);
      if (flags.format === 'json') {
        process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        return;
      }
      const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
      const out = [
        `snapshot ${r.record.name}: from container ${r.record.from} (${r.record.isolation}), ${r.record.created}`,
        'processes:',
        ...r.processes.map((p) => `  ${p.pid} (${p.where}) uid ${p.uid}: ${p.args.join(' ')}`),
        'open files:',
        ...r.openFiles.map((f) => `  ${f.path}${f.bytes !== undefined ? ` (${mib(f.bytes)})` : ''}: ${f.role}`),
        'memory regions:',
        ...r.memoryRegions.map((m) => `  ${m.name}: ${mib(m.bytes)}${m.saved !== undefined ? ` (${mib(m.saved)} saved)` : ""}`),
        'image sections:',
        ...r.sections.map((s) => `  ${s.type}: ${mib(s.bytes)} sha256 ${s.sha256}`),
        `machine: ${JSON.stringify(r.machine)}`,
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    });
  snap.command('delete').description('remove a snapshot').argument('<name>')
    .action(async (name: string, _f: unknown, cmd: Command) => {
      const { removeSnapshot } = await import('../checkpoint/snapshots.js');
      removeSnapshot(globals(cmd).root, name);
    });
}
