/**
 * The OCI lifecycle, runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, runtimeArgv, Sandbox, processAlive, skipReason, waitFor } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping lifecycle tests: ${skip}`);

describe(`lifecycle (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  it('run passes the exit code through', async () => {
    const b = await sb.bundle(['sh', '-c', 'echo out; echo err >&2; exit 42']);
    const r = await sb.rt(['run', '-b', b, sb.id()]);
    assert.equal(r.status, 42);
    assert.equal(r.stdout, 'out\n');
    assert.match(r.stderr, /err/);
  });

  it('run exits with 128+signal when the container is killed', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    const running = sb.rt(['run', '-b', b, id]);
    assert.ok(await waitFor(async () => (await sb.rt(['state', id])).stdout.includes('"running"')), 'container never ran');
    await sb.ok(['kill', id, 'KILL']);
    const r = await running;
    assert.equal(r.status, 137);
  });

  it('run in the foreground: a SIGTERM to its whole process group reaches the program, whose exit code passes through', async () => {
    // as \`timeout\` or a supervisor sends it: the runtime and whatever it runs get the signal
    const b = await sb.bundle(['sh', '-c', 'trap "exit 7" TERM; echo ready; sleep 100 & wait']);
    const [cmd, pre] = runtimeArgv();
    const child = spawn(cmd, [...pre, '--root', sb.root, 'run', '-b', b, sb.id()], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    try {
      assert.ok(await waitFor(() => out.includes('ready'), 10_000), `the program never started: ${err}`);
      process.kill(-child.pid!, 'SIGTERM');
      assert.equal(await exited, 7, `stderr: ${err}`);
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // ended
      }
    }
  });

  it('create blocks the process before the program; start releases it; statuses follow', async () => {
    const mark = join(sb.tmp, 'mark-dir');
    mkdirSync(mark);
    const b = await sb.bundle(['sh', '-c', 'touch /mark/started; exec sleep 100'], (s) => {
      s.mounts.push({ destination: '/mark', type: 'bind', source: mark, options: ['rbind', 'rw'] });
    });
    const id = sb.id();
    const pidFile = join(sb.tmp, `${id}.pid`);
    await sb.ok(['create', '-b', b, '--pid-file', pidFile, id]);
    const created = await sb.state(id);
    assert.equal(created.status, 'created');
    assert.equal(created.id, id);
    assert.equal(created.bundle, b);
    assert.ok(created.pid > 0);
    assert.equal(Number(readFileSync(pidFile, 'utf8')), created.pid);
    assert.ok(processAlive(created.pid));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(existsSync(join(mark, 'started')), false, 'the program ran before start');

    await sb.ok(['start', id]);
    assert.ok(await waitFor(() => existsSync(join(mark, 'started'))), 'the program did not run after start');
    const running = await sb.state(id);
    assert.equal(running.status, 'running');
    assert.equal(running.pid, created.pid);

    const again = await sb.rt(['start', id]);
    assert.notEqual(again.status, 0, 'a second start must fail');

    await sb.ok(['kill', id, 'KILL']);
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'), 'container did not stop');
    await sb.ok(['delete', id]);
    assert.notEqual((await sb.rt(['state', id])).status, 0, 'state of a deleted container must fail');
  });

  it('kill of a created container stops it', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['create', '-b', b, id]);
    const { pid } = await sb.state(id);
    await sb.ok(['kill', id, 'SIGKILL']);
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'));
    assert.equal(processAlive(pid), false);
    await sb.ok(['delete', id]);
  });

  it('delete refuses a running container, delete --force kills it', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    const { pid, status } = await sb.state(id);
    assert.equal(status, 'running');
    const refused = await sb.rt(['delete', id]);
    assert.notEqual(refused.status, 0);
    assert.ok(processAlive(pid), 'a refused delete must not kill');
    await sb.ok(['delete', '--force', id]);
    assert.equal(processAlive(pid), false);
    assert.notEqual((await sb.rt(['state', id])).status, 0);
  });

  it('delete --force of a missing container succeeds; other commands on unknown ids fail', async () => {
    await sb.ok(['delete', '--force', 'no-such-container']);
    for (const args of [['state', 'nope'], ['start', 'nope'], ['kill', 'nope', 'KILL'], ['delete', 'nope']]) {
      const r = await sb.rt(args);
      assert.notEqual(r.status, 0, `${args.join(' ')} must fail`);
    }
  });

  it('a duplicate id is refused and leaves the first container alone', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['create', '-b', b, id]);
    const first = await sb.state(id);
    const dup = await sb.rt(['create', '-b', b, id]);
    assert.notEqual(dup.status, 0);
    const still = await sb.state(id);
    assert.equal(still.pid, first.pid);
    assert.equal(still.status, 'created');
    await sb.ok(['delete', '--force', id]);
  });

  it('list shows containers in table and json form', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['create', '-b', b, id]);
    const json = JSON.parse((await sb.ok(['list', '--format', 'json'])).stdout) as { id: string; status: string; pid: number }[];
    const mine = json.find((c) => c.id === id);
    assert.ok(mine);
    assert.equal(mine.status, 'created');
    const table = (await sb.ok(['list'])).stdout;
    assert.match(table, /^ID\s+PID\s+STATUS\s+BUNDLE\s+CREATED\s+OWNER/);
    assert.match(table, new RegExp(`^${id}\\s+${mine.pid}\\s+created\\s`, 'm'));
    await sb.ok(['delete', '--force', id]);
  });

  it('no fd of the runtime leaks into the container; --preserve-fds passes extra ones', async () => {
    const b = await sb.bundle(['sh', '-c', 'ls /proc/$$/fd; true']);
    const r = await sb.ok(['run', '-b', b, sb.id()]);
    assert.deepEqual(r.stdout.trim().split(/\s+/).sort(), ['0', '1', '2']);

    const file = join(sb.tmp, 'preserved.txt');
    writeFileSync(file, 'through fd 3\n');
    const fd = openSync(file, 'r');
    try {
      const b2 = await sb.bundle(['sh', '-c', 'cat <&3; ls /proc/$$/fd; true']);
      const r2 = await sb.ok(['run', '--preserve-fds', '1', '-b', b2, sb.id()], { extraFds: [fd] });
      const lines = r2.stdout.trim().split('\n');
      assert.equal(lines[0], 'through fd 3');
      assert.deepEqual(lines.slice(1).join(' ').split(/\s+/).sort(), ['0', '1', '2', '3']);
    } finally {
      closeSync(fd);
    }
  });

  it('systemd socket activation: with LISTEN_PID the runtime\'s pid, LISTEN_FDS fds become the process\'s 3.. (before --preserve-fds ones) with LISTEN_FDS and LISTEN_PID=1', async () => {
    const files = ['listen-a', 'listen-b', 'preserved'].map((n) => {
      const f = join(sb.tmp, `${n}.txt`);
      writeFileSync(f, `${n}\n`);
      return openSync(f, 'r');
    });
    try {
      // ls, forked (`; true`: as the last command the shell would exec it, and list its own
      // directory fd), writes straight to stdout: with `ls /proc/$$/fd | tr` the shell may still
      // hold the pipeline's pipe while ls lists its fds (a stray fd 3 under runc, 1 run in 30)
      const b = await sb.bundle(['sh', '-c', 'echo "$LISTEN_FDS $LISTEN_PID"; cat <&3; cat <&4; cat <&5; ls /proc/$$/fd; true']);
      const r = await sb.rt(['run', '--preserve-fds', '1', '-b', b, sb.id()], { extraFds: files, env: { LISTEN_FDS: '2' }, listenPid: true });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, '2 1\nlisten-a\nlisten-b\npreserved\n0\n1\n2\n3\n4\n5\n');
      // LISTEN_PID naming another process: the fds are not the runtime's to pass, and nothing is said
      const other = await sb.bundle(['sh', '-c', 'echo "${LISTEN_FDS:-unset}"; ls /proc/$$/fd; true']);
      const r2 = await sb.rt(['run', '-b', other, sb.id()], { extraFds: files, env: { LISTEN_FDS: '2', LISTEN_PID: '1' } });
      assert.equal(r2.status, 0, r2.stderr);
      assert.equal(r2.stdout, 'unset\n0\n1\n2\n');
    } finally {
      for (const fd of files) closeSync(fd);
    }
  });

  it('the working directory is inside the container (CVE-2024-21626)', async () => {
    const b = await sb.bundle(['sh', '-c', 'pwd; readlink /proc/self/cwd; ls /proc/self/cwd/.. >/dev/null && echo ok'], (s) => {
      s.process.cwd = '/tmp';
    });
    const r = await sb.ok(['run', '-b', b, sb.id()]);
    assert.deepEqual(r.stdout.trim().split('\n'), ['/tmp', '/tmp', 'ok']);
  });

  it('leaves no process behind after run, even children the program forked (zombie reaping)', async () => {
    const b = await sb.bundle(['sh', '-c', 'sleep 100 & sleep 100 & echo $$; exit 0']);
    const id = sb.id();
    const before = new Set(readdirSync('/proc').filter((p) => /^\d+$/.test(p)));
    const r = await sb.rt(['run', '-b', b, id]);
    assert.equal(r.status, 0);
    await new Promise((res) => setTimeout(res, 100));
    const leftovers = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && !before.has(p)).filter((p) => {
      try {
        const exe = readlinkSync(`/proc/${p}/exe`);
        return exe.includes('busybox');
      } catch {
        return false;
      }
    });
    assert.deepEqual(leftovers, [], 'container processes survived the container');
    const zombies = readdirSync('/proc').filter((p) => /^\d+$/.test(p) && !before.has(p)).filter((p) => {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'latin1');
        return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z') && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid;
      } catch {
        return false;
      }
    });
    assert.deepEqual(zombies, [], 'zombies left under the test process');
  });

  it('state reports stopped when the container process exited by itself', async () => {
    const b = await sb.bundle(['true']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'));
    await sb.ok(['delete', id]);
  });
});
