/**
 * The state store under concurrency and pid recycling, and runc-style logging (Moat only: the
 * tests look inside Moat's state directory).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, processAlive, skipReason, waitFor } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'these tests read Moat\'s own state files' : skipReason();
if (skip) console.log(`# skipping state-store tests: ${skip}`);

describe('state store', { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  it('concurrent creates of one id: exactly one wins, the state stays readable', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    const results = await Promise.all(Array.from({ length: 8 }, () => sb.rt(['create', '-b', b, id])));
    assert.equal(results.filter((r) => r.status === 0).length, 1, results.map((r) => r.stderr).join('\n'));
    for (const r of results.filter((x) => x.status !== 0)) assert.match(r.stderr, /already exists/);
    const st = await sb.state(id);
    assert.equal(st.status, 'created');
    assert.ok(processAlive(st.pid));
    await sb.ok(['delete', '--force', id]);
  });

  it('concurrent commands on one container never corrupt its state', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    const ops = [
      ...Array.from({ length: 6 }, () => sb.rt(['state', id])),
      ...Array.from({ length: 3 }, () => sb.rt(['kill', id, 'CONT'])),
      ...Array.from({ length: 3 }, () => sb.rt(['list', '--format', 'json'])),
    ];
    const results = await Promise.all(ops);
    for (const r of results) assert.equal(r.status, 0, r.stderr);
    for (const r of results.slice(0, 6)) assert.equal(JSON.parse(r.stdout).status, 'running');
    const deletes = await Promise.all(Array.from({ length: 4 }, () => sb.rt(['delete', '--force', id])));
    for (const r of deletes) assert.equal(r.status, 0, r.stderr);
    assert.equal(existsSync(join(sb.root, id)), false);
    assert.notEqual((await sb.rt(['state', id])).status, 0);
  });

  it('a recycled pid is never signalled: the start time must match too', async () => {
    const b = await sb.bundle(['sleep', '100']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    const { pid } = await sb.state(id);
    await sb.ok(['kill', id, 'KILL']);
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'));
    assert.equal(processAlive(pid), false);

    // an unrelated process now sits under the recorded pid (as if the kernel recycled it)
    const bystander = spawn('sleep', ['100'], { stdio: 'ignore' });
    try {
      const file = join(sb.root, id, 'state.json');
      const rec = JSON.parse(readFileSync(file, 'utf8')) as { pid: number };
      rec.pid = bystander.pid!;
      writeFileSync(file, JSON.stringify(rec));
      const st = await sb.state(id);
      assert.equal(st.status, 'stopped', 'a pid with another start time counts as the container');
      const k = await sb.rt(['kill', id, 'KILL']);
      assert.notEqual(k.status, 0);
      await sb.ok(['delete', '--force', id]);
      assert.ok(processAlive(bystander.pid!), 'the bystander was signalled');
    } finally {
      bystander.kill('SIGKILL');
    }
  });

  it('a create killed with -9 midway leaves a stale entry that list shows stopped and delete --force removes, cgroups included', async () => {
    const b = await sb.bundle(['sleep', '100'], (s) => {
      // a prestart hook that never finishes keeps create inside its critical section
      s.hooks = { prestart: [{ path: '/bin/sleep', args: ['sleep', '5'] }] };
    });
    const id = sb.id();
    const pending = sb.rt(['create', '-b', b, id]);
    // the record is written first, its cgroups once they are made (before the hook runs)
    const recorded = (): string[] => {
      try {
        return Object.values((JSON.parse(readFileSync(join(sb.root, id, 'state.json'), 'utf8')) as { cgroupPaths?: Record<string, string> }).cgroupPaths ?? {});
      } catch {
        return []; // not written yet
      }
    };
    assert.ok(await waitFor(() => recorded().length > 0, 4000), 'the cgroups were not recorded before the process started');
    const creator = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).find((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`create\0-b\0${b}\0${id}`);
      } catch {
        return false;
      }
    });
    assert.ok(creator, 'cannot find the create process');
    const cgroupPaths = recorded();
    process.kill(Number(creator), 'SIGKILL');
    await pending;
    const list = JSON.parse((await sb.ok(['list', '--format', 'json'])).stdout) as { id: string; status: string }[];
    assert.equal(list.find((c) => c.id === id)?.status, 'stopped');
    await sb.ok(['delete', '--force', id]);
    assert.equal(existsSync(join(sb.root, id)), false);
    for (const dir of cgroupPaths) assert.equal(existsSync(dir), false, `cgroup ${dir} outlived the container`);
  });

  it('--log with --log-format json records errors as JSON lines (containerd reads them)', async () => {
    const log = join(sb.tmp, 'moat-log.json');
    const r = await sb.rt(['--log', log, '--log-format', 'json', 'state', 'no-such-id']);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no-such-id/);
    const entries = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { level: string; msg: string; time: string });
    assert.equal(entries.at(-1)?.level, 'error');
    assert.match(entries.at(-1)!.msg, /no-such-id/);
    assert.ok(!Number.isNaN(Date.parse(entries.at(-1)!.time)));
    const text = join(sb.tmp, 'moat-log.txt');
    await sb.rt(['--log', text, '--log-format', 'text', 'state', 'no-such-id']);
    assert.match(readFileSync(text, 'utf8'), /level=error msg=".*no-such-id/);
  });
});
