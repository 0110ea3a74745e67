/** `moat create`: create a container from a bundle, leaving its process blocked until `start`. */
import type { Command } from 'commander';
import type { MicrovmChoice, SentryChoice } from '../backends/backend.js';
import { resolve } from 'node:path';
import type { Spec } from '../spec/schema.js';
import { collect, context, globals, nonNegativeInt } from './common.js';

/** Flags shared by `create` and `run`. */
export interface CreateFlags {
  bundle?: string;
  consoleSocket?: string;
  pidFile?: string;
  preserveFds: number;
  noNewKeyring?: boolean;
  noPivot?: boolean;
  isolation?: string;
  sentryLevel?: string;
  allowEgress: string[];
  vmm?: string;
  vmmAccel?: string;
  fromSnapshot?: string;
}

/** Adds the flags shared by `create` and `run` to a command. */
export function addCreateFlags(cmd: Command): Command {
  return cmd
    .option('-b, --bundle <dir>', 'path to the root of the bundle directory (default: the current directory)')
    .option('--console-socket <path>', 'unix socket that receives the pty master when process.terminal is set')
    .option('--pid-file <path>', 'file to write the container process id to')
    .option('--preserve-fds <n>', 'pass N extra fds (3, 4, ...) to the container', nonNegativeInt('--preserve-fds'), 0)
    .option('--no-new-keyring', 'do not create a new session keyring for the container')
    .option('--no-pivot', 'accepted for runc compatibility; Moat always uses pivot_root')
    .option('--isolation <name>', 'isolation backend: container, sentry or microvm (also set by the io.moat.isolation annotation)')
    .option('--sentry-level <level>', 'sentry: strict or balanced (default; see docs/syscalls.md)')
    .option('--allow-egress <rule>', 'sentry and microvm: allow connections to HOST:PORT, CIDR or CIDR:PORT (repeatable; microvm: gives the VM its network device)', collect, [])
    .option('--vmm <driver>', 'microvm: qemu or firecracker (default: the best available)')
    .option('--vmm-accel <accel>', 'microvm: kvm or tcg (default: KVM where it works)')
    .option('--from-snapshot <name>', 'start from snapshot NAME (moat snapshot create): its spec, disk and memory; no bundle needed');
}

/** The sentry settings given on the command line. */
export function sentryChoice(flags: CreateFlags, network?: string): SentryChoice {
  return { ...(flags.sentryLevel ? { level: flags.sentryLevel } : {}), ...(network ? { network } : {}), egress: flags.allowEgress };
}

/** The microvm settings given on the command line. */
export function microvmChoice(flags: CreateFlags): MicrovmChoice {
  return { ...(flags.vmm ? { vmm: flags.vmm } : {}), ...(flags.vmmAccel ? { accel: flags.vmmAccel } : {}) };
}

/**
 * What a container made from snapshot `name` starts with: the snapshot's spec and bundle, its
 * isolation, and its image, restored paused until `start` (its pages shared copy-on-write where the backend can).
 */
export async function fromSnapshot(cmd: Command, name: string): Promise<{ bundle: string; spec: Spec; isolation: string; restore: { imagePath: string; paused: boolean; share: boolean }; embedded?: { lower: string } }> {
  const { openSnapshot } = await import('../checkpoint/snapshots.js');
  const s = await openSnapshot(globals(cmd).root, name);
  return {
    bundle: s.record.bundle,
    spec: s.spec,
    isolation: s.record.isolation,
    restore: { imagePath: s.imagePath, paused: true, share: true },
    // a snapshot of the embedded default makes embedded-default containers
    ...(s.embedded ? { embedded: { lower: '/' } } : {}),
  };
}

/**
 * systemd socket activation, as runc does it: when LISTEN_PID is this process's pid and
 * LISTEN_FDS is N, its fds 3 .. 2+N become the container process's 3 .. 2+N (the --preserve-fds
 * ones follow them), and the process is told so with LISTEN_FDS=N and LISTEN_PID=1.
 */
export function socketActivation<T extends { spec: Spec; preserveFds: number; listenFds?: number }>(opts: T): T {
  const n = Number(process.env['LISTEN_FDS']);
  const proc = opts.spec.process;
  if (process.env['LISTEN_PID'] !== String(process.pid) || !Number.isInteger(n) || n <= 0 || proc === undefined) return opts;
  return { ...opts, preserveFds: opts.preserveFds + n, listenFds: n, spec: { ...opts.spec, process: { ...proc, env: [...(proc.env ?? []), `LISTEN_FDS=${n}`, 'LISTEN_PID=1'] } } };
}

/** Registers `create`. */
export function register(program: Command): void {
  addCreateFlags(program.command('create').description('create a container').argument('<container-id>'))
    .action(async (id: string, flags: CreateFlags, cmd: Command) => {
      const { loadSpec } = await import('../spec/validate.js');
      const { create } = await import('../container/lifecycle.js');
      const snap = flags.fromSnapshot ? await fromSnapshot(cmd, flags.fromSnapshot) : undefined;
      const bundle = snap?.bundle ?? resolve(flags.bundle ?? '.');
      const spec = snap?.spec ?? loadSpec(bundle);
      const activated: { spec: Spec; preserveFds: number; listenFds?: number } = snap
        ? { spec, preserveFds: flags.preserveFds }
        : socketActivation({ spec, preserveFds: flags.preserveFds });
      await create(context(cmd), {
        id,
        bundle,
        spec: activated.spec,
        ...(snap ? { isolation: snap.isolation, restore: snap.restore, ...(snap.embedded ? { embedded: snap.embedded } : {}) } : {}),
        ...(flags.isolation ? { isolation: flags.isolation } : {}),
        sentry: sentryChoice(flags),
        microvm: microvmChoice(flags),
        ...(flags.consoleSocket ? { consoleSocket: flags.consoleSocket } : {}),
        ...(flags.pidFile ? { pidFile: flags.pidFile } : {}),
        preserveFds: activated.preserveFds,
        ...(activated.listenFds ? { listenFds: activated.listenFds } : {}),
        noNewKeyring: flags.noNewKeyring === false,
        foreground: false,
      });
    });
}
