/**
 * The CLI standby's own rules (src/cli/standby.ts): which commands it takes, and what makes two
 * processes the same context. The front end and the standby at work: test/integration/cli-standby.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { cliContext, standbyPasses } from '../../src/cli/standby.js';

describe('CLI standby', () => {
  it('takes a foreground run and the commands that start nothing lasting; passes the rest', () => {
    for (const argv of [
      ['run', 'c1'],
      ['run', '-b', '/b', '--keep', 'c1'],
      ['run', '--isolation', 'sentry', '--', 'sh', '-d'], // after "--": the command's own arguments
      ['--root', '/x', '--log', '/l', '--debug', 'state', 'c1'],
      ['--root=/x', 'delete', '-f', 'c1'],
      ['kill', 'c1', 'KILL'],
      ['start', 'c1'],
      ['list'],
      ['ps', 'c1'],
      ['features'],
      ['--version'],
    ]) assert.equal(standbyPasses(argv, {}), undefined, argv.join(' '));
    for (const [argv, why] of [
      [['create', '-b', '/b', 'c1'], /runs in a process of its own/],
      [['exec', 'c1', 'true'], /runs in a process of its own/],
      [['run', '-d', 'c1'], /detached/],
      [['run', '--detach', 'c1'], /detached/],
      [['run', '-dk', 'c1'], /combined short options/],
      [['run', '--preserve-fds', '2', 'c1'], /preserve-fds/],
      [['run', '--preserve-fds=1', 'c1'], /preserve-fds/],
      [['--root', '/x'], /no command/],
    ] as const) assert.match(standbyPasses(argv, {}) ?? '', why, argv.join(' '));
    assert.match(standbyPasses(['run', 'c1'], { LISTEN_FDS: '1' }) ?? '', /LISTEN_FDS/);
  });

  it('sees the same context in processes that differ only in what no command inherits', async () => {
    const env = { NODE_EXTRA: 'x', PATH: '/bin' };
    const own = cliContext('self', env);
    assert.equal(cliContext(process.pid, env), own, 'self and its pid');
    assert.match(own, /^ns mnt mnt:\[\d+\]$/m);
    assert.match(own, /^Seccomp:\s+\d$/m);
    assert.match(own, /^env NODE_EXTRA=x$/m);
    assert.doesNotMatch(own, /PATH=/, 'only the environment that shapes a process from its start counts');
    // Node raised its soft open-files limit; a process with another soft limit is the same context
    const sleeper = (args: string[]): Promise<{ pid: number; kill: () => void }> => new Promise((resolve, reject) => {
      const c = spawn('prlimit', [...args, '--', 'sleep', '30'], { stdio: 'ignore' });
      c.once('error', reject);
      c.once('spawn', () => setTimeout(() => resolve({ pid: c.pid!, kill: () => c.kill('SIGKILL') }), 200));
    });
    const nofile = await sleeper(['--nofile=64:']);
    const core = await sleeper(['--core=1:1']);
    try {
      assert.equal(cliContext(nofile.pid, env), own, 'the soft open-files limit does not count');
      const other = cliContext(core.pid, env);
      assert.notEqual(other, own, 'another core limit is another context');
      assert.match(other, /^limit Max core file size 1 1 bytes$/m);
      assert.notEqual(cliContext(process.pid, { ...env, LD_PRELOAD: '/x.so' }), own, 'LD_PRELOAD counts');
    } finally {
      nofile.kill();
      core.kill();
    }
  });
});
