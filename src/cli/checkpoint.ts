/**
 * `moat checkpoint` and `moat restore`, with runc's flags: the image goes to (and comes from)
 * `--image-path DIR` as Moat's checkpoint image (docs/checkpoint.md), one file in DIR. runc's
 * CRIU-only flags are accepted and ignored: Moat's checkpoints are taken by the backend itself
 * (a microVM's whole machine), so there are no TCP, unix-socket, shell-job or lock options to
 * choose.
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { context } from './common.js';

interface CheckpointFlags {
  imagePath?: string;
  leaveRunning?: boolean;
}

interface RestoreFlags {
  imagePath?: string;
  bundle?: string;
  detach?: boolean;
  pidFile?: string;
  consoleSocket?: string;
  isolation?: string;
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const;

/** runc's CRIU flags, accepted for compatibility (see the file comment). */
function criuFlags(cmd: Command): Command {
  return cmd
    .option('--work-path <dir>', 'accepted for runc compatibility (Moat writes no CRIU logs)')
    .option('--tcp-established', 'accepted for runc compatibility')
    .option('--ext-unix-sk', 'accepted for runc compatibility')
    .option('--shell-job', 'accepted for runc compatibility')
    .option('--file-locks', 'accepted for runc compatibility')
    .option('--manage-cgroups-mode <mode>', 'accepted for runc compatibility')
    .option('--empty-ns <ns>', 'accepted for runc compatibility')
    .option('--auto-dedup', 'accepted for runc compatibility')
    .option('--lazy-pages', 'accepted for runc compatibility');
}

/** The isolation a checkpoint image was taken under (its MANIFEST's `backend`). */
function imageBackend(imagePath: string, manifest: Record<string, unknown>): string {
  const backend = manifest['backend'];
  if (backend !== 'microvm' && backend !== 'sentry' && backend !== 'container') throw new UsageError(`restore: the image in ${imagePath} names no known isolation (${String(backend)})`);
  return backend;
}

/** Registers `checkpoint` and `restore`. */
export function register(program: Command): void {
  criuFlags(program.command('checkpoint').description('checkpoint a running container').argument('<container-id>'))
    .requiredOption('--image-path <dir>', 'directory for the checkpoint image')
    .option('--leave-running', 'leave the container running after the checkpoint')
    .option('--parent-path <dir>', 'accepted for runc compatibility (no incremental images)')
    .option('--pre-dump', 'accepted for runc compatibility')
    .option('--page-server <addr>', 'accepted for runc compatibility')
    .option('--status-fd <fd>', 'accepted for runc compatibility')
    .action(async (id: string, flags: CheckpointFlags, cmd: Command) => {
      const { checkpoint } = await import('../container/lifecycle.js');
      await checkpoint(context(cmd), id, { imagePath: flags.imagePath ?? '', leaveRunning: flags.leaveRunning === true });
    });

  criuFlags(program.command('restore').description('restore a container from a checkpoint').argument('<container-id>'))
    .requiredOption('--image-path <dir>', 'directory of the checkpoint image')
    .option('-b, --bundle <dir>', 'path to the root of the bundle directory (default: the current directory)')
    .option('-d, --detach', 'detach from the container process')
    .option('--pid-file <path>', 'file to write the container process id to')
    .option('--console-socket <path>', 'accepted for runc compatibility (a restored process keeps its terminal)')
    .option('--isolation <name>', 'isolation backend (default: the one the image was taken under)')
    .option('--no-subreaper', 'accepted for runc compatibility')
    .option('--no-pivot', 'accepted for runc compatibility')
    .option('--lsm-profile <profile>', 'accepted for runc compatibility')
    .option('--lsm-mount-context <ctx>', 'accepted for runc compatibility')
    .action(async (id: string, flags: RestoreFlags, cmd: Command) => {
      const lifecycle = await import('../container/lifecycle.js');
      const { loadSpec, parseSpec } = await import('../spec/validate.js');
      const ctx = context(cmd);
      const imagePath = resolve(flags.imagePath ?? '');
      const bundle = resolve(flags.bundle ?? '.');
      const { readManifest } = await import('../checkpoint/snapshots.js');
      const manifest = await readManifest(imagePath);
      const isolation = flags.isolation ?? imageBackend(imagePath, manifest);
      // an image of the embedded default is restored as one, with the spec it was taken with
      const embedded = manifest['embedded'] === true && flags.bundle === undefined;
      const { rec, waitExit } = await lifecycle.create(ctx, {
        id,
        bundle: embedded ? '' : bundle,
        spec: embedded ? parseSpec(manifest['spec']) : loadSpec(bundle),
        ...(embedded ? { embedded: { lower: '/' } } : {}),
        isolation,
        ...(flags.pidFile ? { pidFile: flags.pidFile } : {}),
        preserveFds: 0,
        noNewKeyring: false,
        foreground: flags.detach !== true,
        restore: { imagePath },
      });
      if (!waitExit) return;
      // in the foreground, as runc restore without --detach: wait for the process, then delete
      const forward = (sig: NodeJS.Signals): void => {
        lifecycle.kill(ctx, id, sigNumber(sig as (typeof FORWARDED)[number]), false).catch(() => {});
      };
      for (const s of FORWARDED) process.on(s, forward);
      try {
        process.exitCode = await waitExit;
      } finally {
        for (const s of FORWARDED) process.off(s, forward);
        await lifecycle.remove(ctx, rec.id, true);
      }
    });
}

/** The number of a forwarded signal. */
function sigNumber(sig: (typeof FORWARDED)[number]): number {
  return { SIGINT: 2, SIGTERM: 15, SIGHUP: 1, SIGQUIT: 3, SIGUSR1: 10, SIGUSR2: 12 }[sig];
}
