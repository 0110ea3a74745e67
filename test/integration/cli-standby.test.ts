/**
 * The native front end (dist/moat, native/moat.c) and the warm standby CLI processes it hands
 * commands to (src/cli/standby.ts): a command served by a standby behaves as the same command
 * run cold (stdio, working directory, umask, environment, exit status, signals), only a caller
 * of the standby's own context is served, and what a standby must not take runs cold. Moat only.
 * (MOAT_TEST_FRONT_END=1 runs the runtime-agnostic behaviour tests through the front end too.)
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { REPO, RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'the front end and its standbys are Moat\'s' : skipReason();
if (skip) console.log(`# skipping CLI standby tests: ${skip}`);

const FRONT = join(REPO, 'dist/moat');

/** What one call of the front end did. */
interface Call {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** How the front end ran it: through a standby, or itself (cold). */
  via: 'standby' | 'cold' | 'unknown';
}

describe('native front end and CLI standbys', { skip }, () => {
  const sb = new Sandbox();
  // a standby directory of this suite's own: its standbys serve only these calls
  const dir = mkdtempSync('/run/moat-cli-test-');
  after(async () => {
    spawnSync('pkill', ['-f', '--', `--cli-standby ${dir} `]);
    await sb.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the front end with `args` (after --root) from `cwd`, output through files; `pre` wraps it (prlimit, script). */
  function front(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; pre?: string[]; umask?: number; onSpawn?: (pid: number) => void } = {}): Promise<Call> {
    const out = join(sb.tmp, `fe-out-${process.hrtime.bigint()}`);
    const err = `${out}.err`;
    const fds = [openSync(out, 'w'), openSync(err, 'w')];
    const argv = [...(opts.pre ?? []), FRONT, '--root', sb.root, ...args];
    const old = opts.umask === undefined ? undefined : process.umask(opts.umask);
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd ?? sb.tmp,
      stdio: ['ignore', fds[0]!, fds[1]!],
      // MOAT_TRACE=1 (unless opts.env takes it out): the front end says which way it went
      env: Object.fromEntries(Object.entries({ PATH: process.env.PATH, MOAT_CLI_STANDBY_DIR: dir, MOAT_TRACE: '1', ...opts.env }).filter(([, v]) => v !== undefined)),
    });
    if (old !== undefined) process.umask(old);
    if (child.pid) opts.onSpawn?.(child.pid);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('exit', (status, signal) => {
        clearTimeout(timer);
        for (const fd of fds) closeSync(fd);
        const stderr = readFileSync(err, 'utf8');
        const via = /front end: standby checked, go/.test(stderr) ? 'standby' : /front end: runs the command itself/.test(stderr) ? 'cold' : 'unknown';
        resolve({ status, signal, stdout: readFileSync(out, 'utf8'), stderr: stderr.split('\n').filter((l) => !l.startsWith('moat-trace:')).join('\n'), via });
      });
    });
  }

  /** The standby sockets waiting in the suite's directory. */
  const sockets = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.sock')).map((f) => join(dir, f));

  /** Calls the front end until a standby of its context waits (two calls make a context worth one). */
  async function standbyReady(): Promise<void> {
    for (let i = 0; i < 2 && sockets().length === 0; i++) await front(['list']);
    assert.ok(await waitFor(() => sockets().length > 0, 20_000), 'a standby is waiting after two calls');
  }

  it('runs a command in a standby like a cold run: stdio, working directory, umask, exit status', async () => {
    const bundle = await sb.bundle(['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 7']);
    const cold = await front(['run', '--pid-file', 'cold.pid', sb.id('cold')], { cwd: bundle, umask: 0o077, env: { MOAT_CLI_STANDBY: '0' } });
    assert.equal(cold.via, 'cold');
    await standbyReady();
    const id = sb.id('warm');
    const warm = await front(['run', '--pid-file', 'warm.pid', id], { cwd: bundle, umask: 0o077 });
    assert.equal(warm.via, 'standby', `served by a standby: ${warm.stderr}`);
    for (const r of [cold, warm]) {
      assert.equal(r.status, 7, 'the container\'s exit status');
      assert.equal(r.stdout, 'to-stdout\n');
      assert.match(r.stderr, /to-stderr/);
    }
    // the bundle is the working directory (no -b) and the pid file lands there, with the caller's umask
    assert.equal(statSync(join(bundle, 'warm.pid')).mode & 0o777, 0o600);
    assert.equal(statSync(join(bundle, 'cold.pid')).mode & 0o777, 0o600);
  });

  it('takes the caller\'s environment, not the one it booted with', async () => {
    await standbyReady(); // booted by calls with MOAT_TRACE=1
    const standby = (): string[] => spawnSync('pgrep', ['-f', '--', `--cli-standby ${dir} `], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    const before = standby();
    assert.ok(before.length >= 1);
    const r = await front(['state', 'no-such-container'], { env: { MOAT_TRACE: undefined } });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /container "no-such-container" does not exist/);
    // a standby ran it (it is gone: one command each), and without MOAT_TRACE it traced nothing
    assert.ok(await waitFor(() => before.some((p) => !standby().includes(p)), 5000), 'a standby served the call');
    assert.doesNotMatch(r.stderr + r.stdout, /moat-trace/);
  });

  it('passes a signal the front end gets on to the container, as `moat run` does', async () => {
    await standbyReady();
    // the container's init handles SIGTERM (an init without a handler would ignore it)
    const bundle = await sb.bundle(['sh', '-c', 'trap "exit 42" TERM; while :; do sleep 1; done']);
    const id = sb.id('sig');
    let pid = 0;
    const call = front(['run', '-b', bundle, id], { onSpawn: (p) => (pid = p) });
    assert.ok(await waitFor(async () => {
      const s = await sb.rt(['state', id]);
      return s.status === 0 && JSON.parse(s.stdout).status === 'running';
    }, 20_000), 'the container runs');
    // past the 5 s a claimed standby waits for "go": a command runs as long as it runs
    await new Promise((r) => setTimeout(r, 6000));
    process.kill(pid, 'SIGTERM');
    const r = await call;
    assert.equal(r.via, 'standby');
    assert.equal(r.status, 42, 'the container got the SIGTERM the front end got');
  });

  it('runs cold what a standby must not take: a create, a detached run, a terminal', async () => {
    await standbyReady();
    const bundle = await sb.bundle(['sleep', '60']);
    const id = sb.id('create');
    const c = await front(['create', '-b', bundle, id]);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(c.via, 'cold', 'the init belongs in the caller\'s process tree');
    assert.equal((await front(['delete', '--force', id])).status, 0);
    const d = await front(['run', '-d', '-b', bundle, sb.id('detached')]);
    assert.equal(d.via, 'cold');
    if (spawnSync('script', ['--version']).status === 0) {
      // script(1) gives the front end a terminal on fds 0-2
      const t = spawnSync('script', ['-qec', `${FRONT} --root ${sb.root} list`, '/dev/null'], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { PATH: process.env.PATH, MOAT_CLI_STANDBY_DIR: dir, MOAT_TRACE: '1' },
      });
      assert.equal(t.status, 0, t.stderr);
      assert.match(t.stdout, /front end: runs the command itself/, 'a terminal keeps the command in the caller\'s session');
    }
  });

  it('serves only callers of its own context', async () => {
    await standbyReady();
    // another rlimit makes another context: that caller never reaches this standby ...
    const other = await front(['list'], { pre: ['prlimit', '--core=1:1', '--'] });
    assert.equal(other.status, 0);
    assert.notEqual(other.via, 'standby');
    // ... and a request of such a process, sent to the standby's socket directly, is refused
    const sock = sockets()[0]!;
    const script = `
      const s = require('node:net').connect(${JSON.stringify(sock)});
      const rec = (tag, b) => { const h = Buffer.alloc(5); h[0] = tag; h.writeUInt32LE(b.length, 1); return Buffer.concat([h, b]); };
      s.on('connect', () => s.write(Buffer.concat([Buffer.from('MOATCLI\\x01', 'latin1'), rec(1, Buffer.from('list')), rec(0, Buffer.alloc(0))])));
      let got = ''; s.on('data', (d) => (got += d)); s.on('close', () => { process.stdout.write(got); });`;
    const forged = spawnSync('prlimit', ['--core=1:1', '--', process.execPath, '-e', script], { encoding: 'utf8', timeout: 10_000 });
    assert.match(forged.stdout, /^pass .*context differs/, `refused: ${forged.stdout}${forged.stderr}`);
    // garbage is refused too, and the standby stays for its own callers
    const garbage = await new Promise<string>((resolve) => {
      const s = connect(sock);
      let got = '';
      s.on('connect', () => s.write('GET / HTTP/1.0\r\n\r\n'));
      s.on('data', (d) => (got += d.toString()));
      s.on('close', () => resolve(got));
      s.on('error', () => resolve(got));
    });
    assert.match(garbage, /^pass .*bad magic/);
    assert.equal((await front(['list'])).via, 'standby');
  });

  it('keeps a second standby for commands in quick succession', async () => {
    await standbyReady();
    // each call takes a standby and starts the next one, which boots while the next call comes
    const calls: Call[] = [];
    for (let i = 0; i < 6; i++) calls.push(await front(['list']));
    assert.ok(calls.every((c) => c.status === 0));
    assert.ok(calls.filter((c) => c.via === 'standby').length >= 2, `served: ${calls.map((c) => c.via).join(' ')}`);
    assert.ok(await waitFor(() => sockets().length === 2, 20_000), 'two standbys wait once the burst is over');
  });

  it('starts no standby a subreaper among the caller\'s ancestors would adopt', () => {
    // conmon and containerd's shims are subreapers: a standby started from below one would be
    // its child, keeping it alive or confusing its reaping. A NODE_* variable makes this context
    // one of its own (the other tests' standbys stay usable).
    const env = { PATH: process.env.PATH, MOAT_CLI_STANDBY_DIR: dir, MOAT_TRACE: '1', NODE_MOAT_TEST: 'subreaper' };
    const py = `
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for i in range(3):
    r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    print(r.returncode, 'cold' if 'runs the command itself' in r.stderr else 'standby', flush=True)
    time.sleep(1.5)`;
    const r = spawnSync('python3', ['-c', py, FRONT, '--root', sb.root, 'list'], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), ['0 cold', '0 cold', '0 cold'], 'every call ran cold: no standby was left to take it');
    assert.ok(readdirSync(dir).some((f) => f.endsWith('.adopted')), 'the context is marked');
  });

  it('goes on cold past a standby that died, and starts another', async () => {
    await standbyReady();
    const sock = sockets()[0]!;
    const pids = spawnSync('pgrep', ['-f', '--', `--cli-standby ${dir} `], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    assert.ok(pids.length > 0, 'the standby process is there');
    for (const p of pids) process.kill(Number(p), 'SIGKILL');
    assert.ok(await waitFor(() => spawnSync('pgrep', ['-f', '--', `--cli-standby ${dir} `]).status !== 0, 5000));
    assert.ok(existsSync(sock), 'the dead standby left its socket');
    const r = await front(['list']);
    assert.equal(r.status, 0);
    assert.equal(r.via, 'cold');
    assert.ok(await waitFor(() => sockets().length > 0 && spawnSync('pgrep', ['-f', '--', `--cli-standby ${dir} `]).status === 0, 20_000), 'a new standby waits');
    assert.ok(await waitFor(async () => (await front(['list'])).via === 'standby', 20_000));
  });
});
