/**
 * Runs the breakout suite (test/security/attempts/) under each runtime and prints the table
 * attempt x runtime (blocked / ESCAPED / n/a / error); with --write-docs it also rewrites
 * docs/security.md with the table, the date and one line per attempt.
 *
 *   sudo node build/test/security/runner.js [--runtime NAME,...] [--attempt ID,...] [--write-docs]
 *
 * NAME is moat-container, moat-sentry, moat-microvm, runc or runsc (default: all that are
 * installed). Needs root, a compiled tree (`npx tsc -p tsconfig.json`), a built Moat (`npm run
 * build`) and a C compiler (the attempts written in C are compiled statically on the host).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ATTEMPTS } from './attempts/index.js';
import { RUNTIMES, resetCompiled, runTrial, runtimeMissing } from './framework.js';
import type { Attempt, Outcome, RuntimeName, TrialResult } from './framework.js';
import { REPO } from '../helpers/runtime.js';

/** Results of a suite run, by attempt id then runtime. */
export type Table = Map<string, Map<RuntimeName, TrialResult>>;

/** Runs `attempts` under `runtimes` (one trial at a time: some attempts exhaust resources). */
export async function runSuite(attempts: readonly Attempt[], runtimes: readonly RuntimeName[], progress?: (l: string) => void): Promise<Table> {
  const workDir = mkdtempSync(join(tmpdir(), 'moat-security-'));
  const table: Table = new Map();
  try {
    for (const a of attempts) {
      const row = new Map<RuntimeName, TrialResult>();
      table.set(a.id, row);
      for (const rt of runtimes) {
        const r = await runTrial(a, rt, { workDir });
        row.set(rt, r);
        progress?.(`${a.id} / ${rt}: ${r.outcome} (${r.ms} ms) ${r.detail}`);
      }
    }
  } finally {
    resetCompiled();
    rmSync(workDir, { recursive: true, force: true });
  }
  return table;
}

const MARK: Record<Outcome, string> = { blocked: 'blocked', escaped: 'ESCAPED', 'n/a': 'n/a', error: 'error' };

/** The table as Markdown: one row per attempt, one column per runtime. */
export function markdownTable(table: Table, runtimes: readonly RuntimeName[], attempts: readonly Attempt[]): string {
  const lines = [`| attempt | ${runtimes.join(' | ')} |`, `|---|${runtimes.map(() => '---').join('|')}|`];
  for (const a of attempts) {
    const row = table.get(a.id);
    if (!row) continue;
    lines.push(`| \`${a.id}\` | ${runtimes.map((rt) => MARK[row.get(rt)?.outcome ?? 'n/a']).join(' | ')} |`);
  }
  return lines.join('\n');
}

/** What a reader of the table should know beyond it (kept with the generator, so every run repeats it). */
const NOTES = `## Known limits and notes

- Known limits of \`moat-container\` (escapes with Moat's default spec): none in this run. The
  suite test fails if one appears that does not also escape under runc, or is not listed here
  as \`ID\` under moat-container.
- \`traversal-dest-race\` escaping under runc and runsc is CVE-2024-45310 (a bind-mount
  destination swapped for a symlink while the runtime creates it; runc 1.1.14 fixed it; Debian
  12 ships runc 1.1.5): the runtime creates directories on the host, outside the rootfs. Moat
  resolves every mount destination inside the rootfs (openat2 RESOLVE_IN_ROOT) and mounts on
  the opened fd, or refuses the start.
- \`moat-microvm\` counts as blocked whatever the workload does to its own guest kernel: the
  attempts judge the host. Inside the guest, the workload is root with every capability today
  (the agent applies the OCI user, env, cwd, hostname and rlimits, not capabilities, seccomp
  or masked paths), and it can reach the guest end of the control channel; the host treats
  every agent message as untrusted (sizes capped, unknown types refused). Volumes (bind
  mounts) and extra tmpfs mounts of the config are not given to a microVM yet, so the
  attempts that need them are n/a there.
- runsc's \`exhaust-fork-bomb\` error: the whole gVisor sandbox shares the pids limit, and the
  sandbox itself fails when the bomb hits it. Its \`exhaust-overlay-fill\` escape: runsc lets the
  workload write to its read-only root and keeps the data in the sandbox's memory, which this
  config does not limit.
- \`exhaust-overlay-fill\` with Moat's default spec finds a read-only root: only the 64 MiB tmpfs
  mounts take data. With a writable root, the sentry's copy-on-write upper directory for bundles
  lives in the state directory with no size limit yet, and the container backend writes a
  bundle's rootfs in place (no quota; runc the same).`;

/** docs/security.md: the date, the table, and one line per attempt on what it shows. */
export function securityDoc(table: Table, runtimes: readonly RuntimeName[], attempts: readonly Attempt[], missing: Map<RuntimeName, string>, date: Date): string {
  const cats = [...new Set(attempts.map((a) => a.category))];
  const perAttempt = cats
    .map((c) => [`### ${c}`, '', ...attempts.filter((a) => a.category === c).map((a) => `- \`${a.id}\`: ${a.title} — ${a.shows}`)].join('\n'))
    .join('\n\n');
  const notRun = [...missing].map(([rt, why]) => `- ${rt}: not run (${why})`).join('\n');
  const escapes = attempts
    .flatMap((a) => runtimes.map((rt) => ({ a, rt, r: table.get(a.id)?.get(rt) })))
    .filter((x) => x.r?.outcome === 'escaped')
    .map((x) => `- \`${x.a.id}\` under ${x.rt}: ${x.r?.detail ?? ''}`);
  return `# Breakout suite: results

Latest run: ${date.toISOString().slice(0, 10)} (\`sudo node build/test/security/runner.js --write-docs\`),
on ${process.arch} Linux ${readRelease()}. Each attempt is a small program run as root inside a
container made from Moat's default config (\`moat spec\`: namespaces, default capabilities, the
default seccomp profile, masked and read-only paths), the same bundle for every runtime. *blocked*:
the host was not reached; *ESCAPED*: it was (listed below); *n/a*: the attempt does not apply to
that runtime; *error*: the trial did not run as meant. The suite runs in CI as
test/security/suite.test.ts, which fails if anything escapes under \`moat-sentry\` or
\`moat-microvm\`, or under \`moat-container\` where it does not also escape under runc.

${markdownTable(table, runtimes, attempts)}

${notRun ? `${notRun}\n\n` : ''}## Escapes

${escapes.length ? escapes.join('\n') : 'None.'}

${NOTES}

## What each attempt does and what a block shows

${perAttempt}
`;
}

function readRelease(): string {
  try {
    return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    return '(unknown kernel)';
  }
}

/** The runtimes of `wanted` that can run here, and why the others cannot. */
export function availableRuntimes(wanted: readonly RuntimeName[]): { run: RuntimeName[]; missing: Map<RuntimeName, string> } {
  const run: RuntimeName[] = [];
  const missing = new Map<RuntimeName, string>();
  for (const rt of wanted) {
    const why = runtimeMissing(rt);
    if (why) missing.set(rt, why);
    else run.push(rt);
  }
  return { run, missing };
}

async function main(argv: string[]): Promise<number> {
  let wanted: RuntimeName[] = [...RUNTIMES];
  let only: string[] | undefined;
  let writeDocs = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--runtime') wanted = (argv[++i] ?? '').split(',') as RuntimeName[];
    else if (a === '--attempt') only = (argv[++i] ?? '').split(',');
    else if (a === '--write-docs') writeDocs = true;
    else {
      console.error(`usage: node build/test/security/runner.js [--runtime NAME,...] [--attempt ID,...] [--write-docs]`);
      return 2;
    }
  }
  const bad = wanted.filter((r) => !RUNTIMES.includes(r));
  if (bad.length) {
    console.error(`unknown runtime ${bad.join(', ')} (known: ${RUNTIMES.join(', ')})`);
    return 2;
  }
  const attempts = only ? ATTEMPTS.filter((a) => only.includes(a.id)) : ATTEMPTS;
  const { run, missing } = availableRuntimes(wanted);
  for (const [rt, why] of missing) console.log(`# ${rt}: not run (${why})`);
  const table = await runSuite(attempts, run, (l) => console.log(`# ${l}`));
  console.log(markdownTable(table, run, attempts));
  if (writeDocs) {
    writeFileSync(join(REPO, 'docs', 'security.md'), securityDoc(table, run, attempts, missing, new Date()));
    console.log('wrote docs/security.md');
  }
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await main(process.argv.slice(2));
}
