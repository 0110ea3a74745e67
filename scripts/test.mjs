#!/usr/bin/env node
// The test command (`npm test`, run as root): type-checks and compiles the tests, rebuilds
// dist/, runs every test with Moat as the runtime under test, runs the runtime-agnostic
// behaviour tests again through Moat's native front end (dist/moat, which hands commands to warm
// standby CLI processes: MOAT_TEST_FRONT_END=1), then with runc (MOAT_TEST_RUNTIME=runc) to
// prove the tests themselves right. Ends with one "N passed, N failed" line covering every pass.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args, env = {}) => spawnSync(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });

function step(name, cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${name} failed`);
    process.exit(1);
  }
}

step('type check', process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);
step('build', process.execPath, [join(root, 'scripts/build.mjs')]);

function testFiles(dir, filter = () => true) {
  const out = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true, recursive: true })) {
    const rel = join(e.parentPath ?? e.path, e.name);
    if (e.isFile() && e.name.endsWith('.test.js') && filter(rel)) out.push(rel);
  }
  return out.sort();
}

const only = process.argv.slice(2);
const pick = (f) => only.length === 0 || only.some((o) => f.includes(o));
let passed = 0;
let failed = 0;
function pass(label, files, env) {
  if (files.length === 0) return;
  console.log(`\n# ${label}: ${files.length} test files`);
  const r = run(process.execPath, ['--test', '--test-reporter=spec', ...files], env);
  const out = r.stdout.toString();
  process.stdout.write(out);
  const num = (re) => Number(re.exec(out)?.[1] ?? 0);
  passed += num(/^ℹ pass (\d+)/m);
  failed += num(/^ℹ fail (\d+)/m) + (r.status !== 0 && num(/^ℹ fail (\d+)/m) === 0 ? 1 : 0);
}

pass('moat', testFiles('build/test', pick), { MOAT_TEST_RUNTIME: 'moat' });
const runc = spawnSync('runc', ['--version']);
const behaviour = testFiles('build/test/integration', (f) => /\/(lifecycle|oci|namespaces|network|process|mounts|hooks|terminal|exec|rootless|resources|seccomp)[^/]*\.test\.js$/.test(f) && pick(f));
{
  // the pass's standbys live in a directory of their own and go with it
  const dir = mkdtempSync('/run/moat-cli-test-');
  pass('moat through its native front end (the same behaviour tests)', behaviour, { MOAT_TEST_RUNTIME: 'moat', MOAT_TEST_FRONT_END: '1', MOAT_CLI_STANDBY_DIR: dir });
  spawnSync('pkill', ['-f', '--', `--cli-standby ${dir} `]);
  rmSync(dir, { recursive: true, force: true });
}
if (runc.status === 0) pass('runc (the same behaviour tests, to prove them right)', behaviour, { MOAT_TEST_RUNTIME: 'runc' });
else console.log('\n# skipped the runc pass: runc is not installed (apt-get install runc)');

console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
