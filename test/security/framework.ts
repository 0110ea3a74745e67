/**
 * The breakout suite's frame: what an attempt is, how one trial of an attempt runs under one
 * runtime, and how its outcome is judged.
 *
 * An attempt is a small workload (a busybox shell script or a static C program) that tries one
 * way out of a container, plus a judge. Every trial gets a fresh bundle made from Moat's default
 * spec (`moat spec`: namespaces, the default capabilities, the default seccomp profile, masked
 * and read-only paths; process.terminal off) around the busybox fixture rootfs, so runc, runsc
 * and Moat's backends all run the very same config. The judge decides from the host's side
 * wherever it can (a host file changed, a host process signalled, a host secret printed), so a
 * microVM root that rewrites its own guest kernel's settings is not mistaken for an escape.
 *
 * Outcomes: `blocked` (the host was not reached), `escaped` (it was: the detail says how),
 * `n/a` (the attempt does not apply to this runtime, e.g. a volume under a microVM, which has
 * none), `error` (the trial itself failed to run: the runtime did not start the workload).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeBundle } from '../fixtures/busybox.js';
import { REPO } from '../helpers/runtime.js';

/** The runtimes a trial can run under. */
export type RuntimeName = 'moat-container' | 'moat-sentry' | 'moat-microvm' | 'runc' | 'runsc';

/** Every runtime, in table order. */
export const RUNTIMES: readonly RuntimeName[] = ['moat-container', 'moat-sentry', 'moat-microvm', 'runc', 'runsc'];

/** What a trial came to. */
export type Outcome = 'blocked' | 'escaped' | 'n/a' | 'error';

/** A judge's decision with one line of why. */
export interface Verdict {
  outcome: Outcome;
  detail: string;
}

/** Kinds of attempt (the list). */
export type Category =
  | 'mount-namespace'
  | 'proc-sys'
  | 'device'
  | 'capability'
  | 'syscall'
  | 'traversal'
  | 'fd-leak'
  | 'runtime-binary'
  | 'exhaustion'
  | 'network';

/** What the workload printed and how it ended. */
export interface RunOutput {
  status: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Wall time of the runtime's run, ms. */
  ms: number;
}

/** One trial: an attempt under one runtime, with its own bundle and host scratch directory. */
export interface Trial {
  runtime: RuntimeName;
  /** The container id (short: the sentry's socket path under the state root must fit 108 bytes). */
  id: string;
  /** The runtime's state root (--root) for this suite run. */
  stateRoot: string;
  /** Scratch directory on the host for this trial only (volumes, markers); removed afterwards. */
  hostDir: string;
  /** The bundle directory (config.json and rootfs/). */
  bundle: string;
  /** The bundle's rootfs on the host. */
  rootfs: string;
  /** The OCI config, editable by `setup` before the run (written after setup). */
  spec: Record<string, any>; // `any`: attempts edit arbitrary fields of the OCI config
  /** A random token written to a host-only file (`secretFile`): printing it is an escape. */
  secret: string;
  /** A host file outside every container holding `secret` (mode 0600, root's). */
  secretFile: string;
  /** The host's kernel boot id: equal inside means the workload shares the host kernel. */
  hostBootId: string;
  /** Adds a bind mount of host path `source` at `destination` (a volume). */
  addVolume(source: string, destination: string, readonly?: boolean): void;
}

/** One breakout attempt. */
export interface Attempt {
  /** Short unique id, e.g. `proc-sysrq-trigger`. */
  id: string;
  category: Category;
  /** What it tries, in one line (docs/security.md). */
  title: string;
  /** What a `blocked` result shows, in one line (docs/security.md). */
  shows: string;
  /** The workload as a busybox sh script (run as `/bin/sh -c SCRIPT`). */
  sh?: string;
  /** The workload as C source: compiled statically on the host, run as /attempt. */
  c?: string;
  /** Arguments for the C program. */
  args?: string[];
  /** Runtimes where the attempt does not apply, with the reason (they get `n/a` without a run). */
  notApplicable?: Partial<Record<RuntimeName, string>>;
  /** Prepares the trial (volumes, host files, spec edits) before the bundle is written. */
  setup?(t: Trial): void | Promise<void>;
  /** Decides the outcome after the run (host checks first, the output second). */
  judge(t: Trial, out: RunOutput): Verdict | Promise<Verdict>;
  /** Runs concurrently with the workload, from the host (e.g. a racing symlink swapper). */
  during?(t: Trial, running: Promise<RunOutput>): Promise<void>;
  /** Wall-time limit of the run (default 60 s; a microVM gets 3x). */
  timeoutMs?: number;
}

/** Judge helpers: a verdict in one call. */
export const blocked = (detail: string): Verdict => ({ outcome: 'blocked', detail });
/** An escape, saying how. */
export const escaped = (detail: string): Verdict => ({ outcome: 'escaped', detail });
/** Does not apply. */
export const notApplicable = (detail: string): Verdict => ({ outcome: 'n/a', detail });
/** The trial did not run as meant. */
export const trialError = (detail: string): Verdict => ({ outcome: 'error', detail });

/**
 * The `KEY=value` lines an attempt prints (its report to the judge), as a map. Scripts print
 * `RESULT=...` and similar keys; a key printed twice keeps its last value.
 */
export function report(out: RunOutput): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of out.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0 && /^[A-Z][A-Z0-9_]*$/.test(line.slice(0, eq))) m.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return m;
}

/** The workload's output for a verdict's detail: first lines, shortened. */
export function excerpt(out: RunOutput, n = 3): string {
  const text = `${out.stdout}${out.stderr}`.trim().split('\n').slice(0, n).join(' | ');
  return text.length > 160 ? `${text.slice(0, 157)}...` : text;
}

/** Whether the output shows the host's secret (read through whatever path). */
export function leaksSecret(t: Trial, out: RunOutput): boolean {
  return out.stdout.includes(t.secret) || out.stderr.includes(t.secret);
}

/** A run whose workload never ran (the runtime failed) is an error, not a pass. */
export function ranToEnd(out: RunOutput, marker = 'DONE=1'): boolean {
  return out.stdout.includes(marker);
}

let compiled = new Map<string, string>();

/** Compiles C source statically (cached per source), returning the binary's path. */
export function compileStatic(source: string, workDir: string): string {
  const hit = compiled.get(source);
  if (hit && existsSync(hit)) return hit;
  mkdirSync(workDir, { recursive: true });
  const name = `attempt-${compiled.size}-${randomBytes(4).toString('hex')}`;
  const src = join(workDir, `${name}.c`);
  const bin = join(workDir, name);
  writeFileSync(src, source);
  execFileSync('cc', ['-static', '-O1', '-Wall', '-Werror', '-o', bin, src], { stdio: ['ignore', 'pipe', 'pipe'] });
  compiled.set(source, bin);
  return bin;
}

/** Forgets compiled programs (their work directory is going away). */
export function resetCompiled(): void {
  compiled = new Map();
}

/** Where a runtime keeps its state for this suite. */
interface RuntimeCall {
  cmd: string;
  args: string[];
}

/** The command line that runs bundle `bundle` as container `id` under `runtime`, in the foreground. */
export function runCommand(runtime: RuntimeName, root: string, bundle: string, id: string): RuntimeCall {
  const moat = [join(REPO, 'bin', 'moat.cjs'), '--root', root, 'run', '-b', bundle];
  switch (runtime) {
    case 'moat-container':
      return { cmd: process.execPath, args: [...moat, '--isolation', 'container', id] };
    case 'moat-sentry':
      return { cmd: process.execPath, args: [...moat, '--isolation', 'sentry', id] };
    case 'moat-microvm':
      return { cmd: process.execPath, args: [...moat, '--isolation', 'microvm', id] };
    case 'runc':
      return { cmd: 'runc', args: ['--root', root, 'run', '-b', bundle, id] };
    case 'runsc':
      // the ptrace platform works everywhere (no KVM needed); no network stack, as the others have none either
      return { cmd: 'runsc', args: ['--root', root, '--network=none', '--platform=ptrace', 'run', '--bundle', bundle, id] };
  }
}

/** Force-deletes container `id` under `runtime` (after a timeout or a failure). */
export function forceDelete(runtime: RuntimeName, root: string, id: string): void {
  const call = runtime.startsWith('moat-')
    ? { cmd: process.execPath, args: [join(REPO, 'bin', 'moat.cjs'), '--root', root, 'delete', '--force', id] }
    : { cmd: runtime, args: ['--root', root, 'delete', '--force', id] };
  try {
    execFileSync(call.cmd, call.args, { stdio: 'ignore', timeout: 30_000 });
  } catch {
    // not there, or gone already
  }
}

/** Moat's default config (`moat spec`), with process.terminal off, as a plain object. */
export function defaultSpec(workDir: string): Record<string, any> {
  // `any`: the OCI config as JSON
  const dir = join(workDir, 'spec');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  execFileSync(process.execPath, [join(REPO, 'bin', 'moat.cjs'), 'spec', '--bundle', dir], { stdio: 'ignore' });
  const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, any>;
  spec['process'].terminal = false;
  return spec;
}

/** Options of one suite run. */
export interface SuiteOptions {
  /** Scratch root (bundles, state roots, compiled programs). */
  workDir: string;
  /** Progress lines (default: none). */
  progress?: (line: string) => void;
}

/** The result of one trial. */
export interface TrialResult extends Verdict {
  attempt: string;
  runtime: RuntimeName;
  ms: number;
}

/** Runs one attempt under one runtime and judges it. */
export async function runTrial(a: Attempt, runtime: RuntimeName, opts: SuiteOptions): Promise<TrialResult> {
  const na = a.notApplicable?.[runtime];
  if (na !== undefined) return { attempt: a.id, runtime, outcome: 'n/a', detail: na, ms: 0 };
  const id = `${a.id.slice(0, 24)}-${randomBytes(3).toString('hex')}`;
  const hostDir = join(opts.workDir, id);
  const root = join(opts.workDir, `state-${runtime}`);
  mkdirSync(hostDir, { recursive: true });
  const secret = `MOAT-SECRET-${randomBytes(12).toString('hex')}`;
  const secretFile = join(hostDir, 'host-secret');
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  const args = a.c ? ['/attempt', ...(a.args ?? [])] : ['/bin/sh', '-c', a.sh ?? 'echo no workload; exit 99'];
  const spec = defaultSpec(opts.workDir);
  spec['process'].args = args;
  const bundle = join(hostDir, 'bundle');
  const t: Trial = {
    runtime,
    id,
    stateRoot: root,
    hostDir,
    bundle,
    rootfs: join(bundle, 'rootfs'),
    spec,
    secret,
    secretFile,
    hostBootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    addVolume(source, destination, readonly = false) {
      (spec['mounts'] as object[]).push({ destination, type: 'bind', source, options: ['rbind', readonly ? 'ro' : 'rw'] });
    },
  };
  const started = Date.now();
  try {
    await a.setup?.(t);
    await makeBundle({ dir: bundle, args, mutate: (s) => Object.assign(s, JSON.parse(JSON.stringify(t.spec)) as object) });
    if (a.c) {
      const bin = compileStatic(a.c, join(opts.workDir, 'bin'));
      writeFileSync(join(t.rootfs, 'attempt'), readFileSync(bin));
      chmodSync(join(t.rootfs, 'attempt'), 0o755);
    }
    const timeout = (a.timeoutMs ?? 60_000) * (runtime === 'moat-microvm' ? 3 : 1);
    const running = runContainer(runtime, root, bundle, id, hostDir, timeout);
    if (a.during) await a.during(t, running);
    const out = await running;
    const v = await a.judge(t, out);
    return { attempt: a.id, runtime, ...v, ms: Date.now() - started };
  } catch (e) {
    return { attempt: a.id, runtime, outcome: 'error', detail: (e as Error).message.split('\n')[0] ?? '', ms: Date.now() - started };
  } finally {
    forceDelete(runtime, root, id);
    rmSync(hostDir, { recursive: true, force: true });
  }
}

/** Runs the container in the foreground with output to files; resolves when it exits or times out. */
function runContainer(runtime: RuntimeName, root: string, bundle: string, id: string, dir: string, timeoutMs: number): Promise<RunOutput> {
  const call = runCommand(runtime, root, bundle, id);
  const outFile = join(dir, 'stdout');
  const errFile = join(dir, 'stderr');
  const outFd = openSync(outFile, 'w');
  const errFd = openSync(errFile, 'w');
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(call.cmd, call.args, { stdio: ['ignore', outFd, errFd] });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      forceDelete(runtime, root, id);
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      closeSync(outFd);
      closeSync(errFd);
      reject(e);
    });
    child.on('exit', (status) => {
      clearTimeout(timer);
      closeSync(outFd);
      closeSync(errFd);
      resolve({ status, stdout: readFileSync(outFile, 'utf8'), stderr: readFileSync(errFile, 'utf8'), timedOut, ms: Date.now() - started });
    });
  });
}

/** Why `runtime` cannot run here, or undefined when it can. */
export function runtimeMissing(runtime: RuntimeName): string | undefined {
  const has = (cmd: string): boolean => {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (runtime === 'runc' && !has('runc')) return 'runc is not installed (apt-get install runc)';
  if (runtime === 'runsc' && !has('runsc')) return 'runsc is not installed (apt-get install runsc)';
  if (runtime === 'moat-microvm') {
    if (!has('qemu-system-x86_64')) return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
    if (!existsSync('/boot') || !readdirSync('/boot').some((f) => f.startsWith('vmlinuz-'))) {
      return 'no guest kernel in /boot (apt-get install linux-image-amd64)';
    }
  }
  return undefined;
}
