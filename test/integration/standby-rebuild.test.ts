/**
 * Warm standbys of an installation that has been rebuilt or upgraded leave at once, with the
 * files of their key: the CLI's (src/cli/standby.ts) and the sentry's (src/backends/sentry).
 * Each test works on a private copy of the installation, so that replacing its bundle leaves
 * the repository's own build and standbys alone. Moat only.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO, RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'standbys are Moat\'s' : skipReason();
if (skip) console.log(`# skipping standby rebuild tests: ${skip}`);

/** Pids of the processes whose command line contains `text`. */
function pidsOf(text: string): number[] {
  const r = spawnSync('pgrep', ['-f', '--', text], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).map(Number);
}

/** Replaces `file` by a copy of itself (a new inode, as a build or a package upgrade makes). */
function rebuild(file: string): void {
  copyFileSync(file, `${file}.new`);
  renameSync(`${file}.new`, file);
}

describe('standbys of a rebuilt installation', { skip, timeout: 120_000 }, () => {
  const sb = new Sandbox();
  const inst = join(sb.tmp, 'installation');
  const dir = mkdtempSync('/run/moat-cli-test-');
  after(async () => {
    spawnSync('pkill', ['-f', '--', `${inst}/bin/moat.cjs`]);
    await sb.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Copies the repository's installation (its entry point, bundles and native programs) to `inst`. */
  function install(): void {
    rmSync(inst, { recursive: true, force: true });
    cpSync(join(REPO, 'bin'), join(inst, 'bin'), { recursive: true });
    cpSync(join(REPO, 'dist'), join(inst, 'dist'), { recursive: true });
    copyFileSync(join(REPO, 'package.json'), join(inst, 'package.json'));
    symlinkSync(join(REPO, 'node_modules'), join(inst, 'node_modules'));
  }

  it('a CLI standby leaves with its socket, lock and mark once the bundle it loaded is replaced', async () => {
    install();
    const env = { PATH: process.env.PATH, MOAT_CLI_STANDBY_DIR: dir };
    // two calls within a minute make the context worth a standby
    for (let i = 0; i < 2; i++) assert.equal(spawnSync(join(inst, 'dist/moat'), ['--root', sb.root, 'list'], { env }).status, 0);
    assert.ok(await waitFor(() => readdirSync(dir).some((f) => f.endsWith('.sock')), 20_000), 'a standby waits after two calls');
    const before = readdirSync(dir);
    assert.ok(before.some((f) => f.endsWith('.lock')) && before.some((f) => f.endsWith('.mark')), `the key's files: ${before.join(' ')}`);
    assert.equal(pidsOf(`${inst}/bin/moat.cjs --cli-standby ${dir} `).length, 1);

    rebuild(join(inst, 'dist/moat.cjs'));
    assert.ok(await waitFor(() => pidsOf(`${inst}/bin/moat.cjs --cli-standby ${dir} `).length === 0, 20_000), 'the standby left after the rebuild');
    assert.deepEqual(readdirSync(dir), [], 'no socket, lock or mark of the old key is left');

    // the rebuilt installation works, cold and then through a standby of its new key
    const r = spawnSync(join(inst, 'dist/moat'), ['--root', sb.root, 'list'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('a sentry standby leaves with its socket and lock once the sentry bundle is replaced', async () => {
    install();
    const env = { PATH: process.env.PATH, MOAT_CLI_STANDBY: '0' };
    // a sentry create starts the next create's standby when it ends
    const r = spawnSync(join(inst, 'dist/moat'), ['--root', sb.root, 'run', '--isolation', 'sentry', '--', '/bin/true'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const marker = `${inst}/bin/moat.cjs --sentry-standby`;
    assert.ok(await waitFor(() => pidsOf(marker).length === 1, 20_000), 'a sentry standby of the copy waits');
    const cmdline = spawnSync('pgrep', ['-af', '--', marker], { encoding: 'utf8' }).stdout;
    const m = /"dir":"([^"]+)","key":"([0-9a-f]+)"/.exec(cmdline);
    assert.ok(m, `the standby's arguments: ${cmdline}`);
    const lock = join(m[1]!, `${m[2]!}.lock`);
    assert.ok(await waitFor(() => existsSync(join(m[1]!, `${m[2]!}.sock`)), 20_000), 'its socket is there');
    assert.ok(existsSync(lock), 'its lock is there');

    rebuild(join(inst, 'dist/sentry.cjs'));
    assert.ok(await waitFor(() => pidsOf(marker).length === 0, 20_000), 'the sentry standby left after the rebuild');
    assert.ok(!existsSync(lock) && !existsSync(join(m[1]!, `${m[2]!}.sock`)), 'no socket or lock of the old key is left');
  });
});
