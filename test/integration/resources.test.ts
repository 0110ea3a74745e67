/**
 * cgroup limits seen from the workload, runtime-agnostic (runc runs them too): OOM kills and
 * their events, a pids limit against a fork bomb, CPU throttling, update, pause and resume.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, processAlive, runtimeArgv, skipReason, waitFor } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping resources tests: ${skip}`);

const MiB = 1024 * 1024;

describe(`resources (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  /** Parsed `events --stats` data of a running container. */
  async function stats(id: string): Promise<{ cpu: { throttling: { throttledPeriods: number } }; memory: { usage: { limit: number } }; pids: { current: number; limit: number } }> {
    const r = await sb.ok(['events', '--stats', id]);
    const ev = JSON.parse(r.stdout.trim().split('\n')[0]!) as { type: string; data: never };
    assert.equal(ev.type, 'stats');
    return ev.data;
  }

  it('a memory limit OOM-kills a process that exceeds it, and events reports the OOM', async () => {
    const b = await sb.bundle(['sh', '-c', 'sleep 1; x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'], (s) => {
      s.linux.resources = { memory: { limit: 32 * MiB, swap: 32 * MiB } };
    });
    const id = sb.id();
    await sb.ok(['create', '-b', b, id]);
    // follow the event stream from before the program starts
    const [cmd, pre] = runtimeArgv();
    const events = spawn(cmd, [...pre, '--root', sb.root, 'events', '--interval', '100ms', id], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    events.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await sb.ok(['start', id]);
      assert.ok(await waitFor(() => out.includes('"type":"oom"'), 20_000), `no oom event; events printed: ${out.slice(0, 500)}`);
    } finally {
      events.kill();
    }
    const oom = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; id: string }).find((e) => e.type === 'oom');
    assert.equal(oom?.id, id);
    await sb.ok(['delete', '--force', id]);
  });

  it('a pids limit stops a fork bomb', async () => {
    // the bomb runs in a subshell, which ash ends when a fork fails; the count uses a glob,
    // since once the limit is reached the shell cannot fork even for ls
    const out = await sb.sh('(for i in $(seq 40); do sleep 3 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#; exit 0', (s) => {
      s.linux.resources = { pids: { limit: 10 } };
    });
    const procs = Number(out.trim().split('\n').at(-1));
    assert.ok(procs >= 5 && procs <= 10, `${procs} processes ran under a limit of 10`);
  });

  it('a CPU quota throttles a busy loop measurably', async () => {
    const b = await sb.bundle(['sh', '-c', 'while :; do :; done'], (s) => {
      s.linux.resources = { cpu: { quota: 10000, period: 100000 } };
    });
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    await new Promise((r) => setTimeout(r, 1500));
    const st = await stats(id);
    assert.ok(st.cpu.throttling.throttledPeriods > 3, `throttled in ${st.cpu.throttling.throttledPeriods} periods`);
    await sb.ok(['delete', '--force', id]);
  });

  it('update changes the limits of a running container', async () => {
    const b = await sb.bundle(['sleep', '100'], (s) => {
      s.linux.resources = { memory: { limit: 128 * MiB }, pids: { limit: 50 } };
    });
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    assert.equal((await stats(id)).memory.usage.limit, 128 * MiB);
    await sb.ok(['update', '--memory', '64m', '--pids-limit', '20', id]);
    const st = await stats(id);
    assert.equal(st.memory.usage.limit, 64 * MiB);
    assert.equal(st.pids.limit, 20);
    await sb.ok(['delete', '--force', id]);
  });

  it('pause freezes a counter and resume lets it go on', async () => {
    const dir = join(sb.tmp, `counter-${Date.now()}`);
    mkdirSync(dir);
    const b = await sb.bundle(['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /c/n; sleep 0.02; done'], (s) => {
      s.mounts.push({ destination: '/c', type: 'bind', source: dir, options: ['rbind', 'rw'] });
    });
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    const count = () => {
      try {
        return Number(readFileSync(join(dir, 'n'), 'utf8') || '0');
      } catch {
        return 0; // not written yet
      }
    };
    assert.ok(await waitFor(() => count() > 3));
    await sb.ok(['pause', id]);
    assert.equal((await sb.state(id)).status, 'paused');
    const frozen = count();
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(count(), frozen, 'the counter moved while paused');
    await sb.ok(['resume', id]);
    assert.equal((await sb.state(id)).status, 'running');
    assert.ok(await waitFor(() => count() > frozen + 3), 'the counter did not go on after resume');
    await sb.ok(['delete', '--force', id]);
  });

  it('kill -9 of a paused container stops it (the runtime thaws it)', async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    const pid = (await sb.state(id)).pid;
    await sb.ok(['pause', id]);
    assert.equal((await sb.state(id)).status, 'paused');
    await sb.ok(['kill', id, 'KILL']);
    assert.ok(await waitFor(() => !processAlive(pid), 5000), 'the paused process survived SIGKILL');
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped', 5000), 'the container is not stopped');
    await sb.ok(['delete', id]);
  });
});
