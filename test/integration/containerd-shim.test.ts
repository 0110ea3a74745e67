/**
 * Moat's own containerd shim v2 (containerd-shim-moat-v1, runtime io.containerd.moat.v1) under a
 * real containerd: the same cases as the runc shim (test/helpers/containerd-cases.ts), then what
 * only this shim does: each isolation backend chosen per container (annotation) or per runtime
 * (config file), one shim process per sandbox, task events, and a clean `delete` after a shim
 * was killed. Moat only: runc has no shim of its own to compare with.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeOciImageArchive } from '../fixtures/ociimage.js';
import { containerdCases, IMAGE } from '../helpers/containerd-cases.js';
import { Containerd, containerdSkipReason, NAMESPACE } from '../helpers/containerd.js';
import { REPO, skipReason, waitFor } from '../helpers/runtime.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { assertTtyShell, ptySkipReason, TTY_SHELL_INPUT } from '../helpers/harness.js';
import { anyOf, decode, encode } from '../../src/shim/proto.js';
import { TtrpcClient } from '../../src/shim/ttrpc.js';
import { standbyPath } from '../../src/shim/claim.js';
import { canConnect } from '../../src/shim/start.js';

const RUNTIME_ARGS = ['--runtime', 'io.containerd.moat.v1'];
/** Moat's state root under the shim for the test namespace. */
const STATE = join('/run/containerd/moat', NAMESPACE);

/** A directory with `containerd-shim-moat-v1` in it, for containerd's PATH (as `npm install -g` would link it). */
function shimPathDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'moat-shim-bin-'));
  symlinkSync(join(REPO, 'dist', 'containerd-shim-moat-v1'), join(dir, 'containerd-shim-moat-v1')); // the launcher (package.json bin)
  return dir;
}

const binDir = skipReason() === undefined ? shimPathDir() : '';
const env = { PATH: `${binDir}:${process.env.PATH ?? ''}` };

containerdCases({
  label: 'moat-shim',
  runArgs: RUNTIME_ARGS,
  runtimeState: (id) => join(STATE, id),
  containerd: { env },
  ...(process.env.MOAT_TEST_RUNTIME === 'runc' ? { skip: 'the Moat shim has no runc counterpart' } : {}),
});

/** Live shim daemons (not the short-lived `start` processes). */
function shimDaemons(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv[0] === 'containerd-shim-moat-v1') out.push(Number(e)); // the daemon's process.title
    } catch {
      // gone
    }
  }
  return out;
}

/** This installation's standby control socket (another checkout's standby may run beside it). */
const CONTROL = standbyPath(join(REPO, 'bin', 'containerd-shim-moat-v1.cjs'));

/**
 * Pids of this installation's warm standbys (src/shim/standby.ts): titled apart from serving
 * shims, and holding this installation's standby lock while they wait.
 */
function standbys(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0')[0] !== 'containerd-shim-moat-v1-standby') continue;
      if (readdirSync(`/proc/${e}/fd`).some((fd) => safeReadlink(`/proc/${e}/fd/${fd}`) === `${CONTROL}.lock`)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

function safeReadlink(p: string): string {
  try {
    return readlinkSync(p);
  } catch {
    return '';
  }
}

const skip = skipReason() ?? containerdSkipReason() ?? (process.env.MOAT_TEST_RUNTIME === 'runc' ? 'Moat only' : undefined);

describe('containerd shim: what only Moat\'s shim does', { skip }, () => {
  let ctd: Containerd | undefined;
  const c = (): Containerd => {
    assert.ok(ctd, 'containerd did not start');
    return ctd;
  };
  let n = 0;
  const newId = (tag: string): string => `shim-${process.pid}-${tag}-${++n}`;

  before(async () => {
    ctd = await Containerd.start(undefined, { env });
    const image = await makeOciImageArchive(join(ctd.dir, 'busybox-oci.tar'), { ref: IMAGE });
    await ctd.importImage(image.path);
  });
  after(async () => {
    await ctd?.stop();
    if (binDir) rmSync(binDir, { recursive: true, force: true });
    // the standby would otherwise wait out its idle timeout
    for (const pid of standbys()) process.kill(pid, 'SIGTERM');
  });

  it('a warm standby shim becomes the next sandbox\'s shim (no daemon boot on the critical path)', async () => {
    const warm = newId('warm');
    await c().ok(['run', '--rm', ...RUNTIME_ARGS, IMAGE, warm, 'true']);
    // the shim that served it left a standby behind when it exited
    assert.ok(await waitFor(() => standbys().length === 1, 10_000), `standbys: ${JSON.stringify(standbys())}`);
    const [standby] = standbys();
    // booted and listening: its control socket (this installation's; another one's, or a stale
    // file of a killed standby, may be there too) accepts a connection
    assert.ok(await waitFor(() => canConnect(CONTROL), 10_000), `${CONTROL} does not accept connections`);
    const id = newId('claimed');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, id, 'sleep', '1000']);
    try {
      assert.ok(shimDaemons().includes(standby!), `the standby ${standby} did not become ${id}'s shim (shims: ${shimDaemons().join(', ')})`);
      const exec = await c().ctr(['task', 'exec', '--exec-id', 'w', id, 'sh', '-c', 'echo served; exit 2']);
      assert.equal(exec.status, 2, exec.stderr);
      assert.equal(exec.stdout, 'served\n');
      // it serves from the bundle, with containerd's environment
      assert.equal(readlinkSync(`/proc/${standby}/cwd`), join(c().state, 'io.containerd.runtime.v2.task', NAMESPACE, id));
    } finally {
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
    }
  });

  it('io.moat.isolation=sentry: the task runs under the sentry (synthesized /proc), output and exit code pass through', async () => {
    const id = newId('sentry');
    const r = await c().ctr(['run', '--rm', ...RUNTIME_ARGS, '--annotation', 'io.moat.isolation=sentry', IMAGE, id,
      'sh', '-c', 'echo hi; cat /proc/version; exit 7'], { timeoutMs: 60_000 });
    assert.equal(r.status, 7, `${r.stderr}\n${c().logTail()}`);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'hi');
    // the sentry answers /proc/version itself, with its own kernel identity (docs/syscalls.md)
    assert.notEqual(lines[1], readFileSync('/proc/version', 'utf8').trim(), 'the host /proc/version leaked: not under the sentry');
  });

  it('a runtime config file (--runtime-config-path) sets the isolation for every container of the runtime', async () => {
    const cfg = join(c().dir, 'sentry.toml');
    writeFileSync(cfg, '# Moat shim config\nisolation = "sentry"\nsentry_level = "strict"\n');
    const id = newId('cfg');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, '--runtime-config-path', cfg, IMAGE, id, 'sleep', '1000'], { timeoutMs: 60_000 });
    try {
      const rec = JSON.parse(readFileSync(join(STATE, id, 'state.json'), 'utf8')) as { isolation: string };
      assert.equal(rec.isolation, 'sentry');
      const exec = await c().ctr(['task', 'exec', '--exec-id', 'x', id, 'sh', '-c', 'echo from-exec; exit 3']);
      assert.equal(exec.status, 3, exec.stderr);
      assert.equal(exec.stdout, 'from-exec\n');
    } finally {
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
    }
  });

  it('Update (as the CRI plugin sends it) changes the limits of a running task; Pids lists it', async () => {
    const id = newId('upd');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, id, 'sleep', '1000']);
    const pid = (await c().tasks()).get(id)?.pid ?? 0;
    const bundle = join(c().state, 'io.containerd.runtime.v2.task', NAMESPACE, id);
    const client = await TtrpcClient.connect(readFileSync(join(bundle, 'address'), 'utf8').replace(/^unix:\/\//, ''));
    try {
      const limit = 48 * 1024 * 1024;
      const resources = anyOf('google.protobuf.Empty', {});
      resources.typeUrl = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';
      resources.value = Buffer.from(JSON.stringify({ memory: { limit }, pids: { limit: 77 } }));
      await client.call('containerd.task.v2.Task', 'Update', encode('containerd.task.v2.UpdateTaskRequest', { id, resources }));
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const memPath = /^\d+:memory:(.*)$/m.exec(cg)?.[1];
      const pidsPath = /^\d+:pids:(.*)$/m.exec(cg)?.[1];
      if (memPath !== undefined) assert.equal(Number(readFileSync(`/sys/fs/cgroup/memory${memPath}/memory.limit_in_bytes`, 'utf8')), limit);
      if (pidsPath !== undefined) assert.equal(readFileSync(`/sys/fs/cgroup/pids${pidsPath}/pids.max`, 'utf8').trim(), '77');
      assert.ok(memPath !== undefined || pidsPath !== undefined, `no v1 memory or pids cgroup in:\n${cg}`);
      const pids = decode<{ processes: { pid: number }[] }>('containerd.task.v2.PidsResponse',
        await client.call('containerd.task.v2.Task', 'Pids', encode('containerd.task.v2.PidsRequest', { id })));
      assert.deepEqual(pids.processes.map((p) => p.pid), [pid]);
    } finally {
      await client.close();
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
    }
  });

  it('a bad runtime config file fails the task with a message naming the file and key', async () => {
    const cfg = join(c().dir, 'bad.toml');
    writeFileSync(cfg, 'isolation = "sentry"\nsentry_levle = "strict"\n');
    const id = newId('bad');
    const r = await c().ctr(['run', '--rm', ...RUNTIME_ARGS, '--runtime-config-path', cfg, IMAGE, id, 'true']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /bad\.toml: unknown key sentry_levle/);
    await c().ctr(['container', 'delete', id]);
    assert.equal(existsSync(join(STATE, id)), false, 'a failed create left Moat state');
  });

  it('io.moat.isolation=microvm: the task runs in a guest kernel', { skip: microvmSkipReason(), timeout: 240_000 }, async () => {
    const id = newId('vm');
    const r = await c().ctr(['run', '--rm', ...RUNTIME_ARGS, '--annotation', 'io.moat.isolation=microvm', IMAGE, id,
      'sh', '-c', 'echo hi-vm; uname -r; exit 4'], { timeoutMs: 200_000 });
    assert.equal(r.status, 4, `${r.stderr}\n${c().logTail()}`);
    const [first, release] = r.stdout.split('\n');
    assert.equal(first, 'hi-vm');
    assert.notEqual(release, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), 'uname -r printed the host kernel');
  });

  it('io.moat.isolation=microvm with run -t: a shell on a terminal in the guest', { skip: microvmSkipReason() ?? ptySkipReason(), timeout: 240_000 }, async () => {
    const id = newId('vmtty');
    const r = await c().ctrTty(['run', '--rm', '-t', ...RUNTIME_ARGS, '--annotation', 'io.moat.isolation=microvm', IMAGE, id, 'sh'], {
      input: TTY_SHELL_INPUT,
      timeoutMs: 200_000,
    });
    assertTtyShell(r, `\n${c().logTail()}`);
  });

  it('io.moat.isolation=microvm: ctr containers checkpoint --task, then ctr containers restore --live, goes on from the checkpoint', { skip: microvmSkipReason(), timeout: 300_000 }, async () => {
    const id = newId('vmck');
    const id2 = newId('vmrs');
    const ref = `moat.test/checkpoint-${id}:1`;
    await c().ok(['run', '-d', ...RUNTIME_ARGS, '--annotation', 'io.moat.isolation=microvm', IMAGE, id,
      // a token drawn once at start: only a restore of this very process has it
      // written aside and renamed: a reader never sees the file between its truncation and write
      'sh', '-c', 't=$RANDOM$RANDOM; i=0; while true; do i=$((i+1)); echo $t:$i > /count.new; mv /count.new /count; sleep 0.2; done'], { timeoutMs: 200_000 });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const ck = await c().ctr(['containers', 'checkpoint', '--task', id, ref], { timeoutMs: 120_000 });
      assert.equal(ck.status, 0, `${ck.stderr}\n${c().logTail()}`);
      assert.equal((await c().tasks()).get(id)?.status, 'RUNNING', 'the checkpointed task goes on');
      const read = async (task: string, exec: string): Promise<[string, number]> => {
        const r = await c().ctr(['task', 'exec', '--exec-id', exec, task, 'cat', '/count'], { timeoutMs: 60_000 });
        const [token = '', n = '0'] = r.stdout.trim().split(':');
        assert.ok(token !== '' && Number(n) > 0, `/count of ${task}: ${JSON.stringify(r)}`);
        return [token, Number(n)];
      };
      const [token, at] = await read(id, 'c1');
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 30_000);
      const rs = await c().ctr(['containers', 'restore', '--live', id2, ref], { timeoutMs: 200_000 });
      assert.equal(rs.status, 0, `${rs.stderr}\n${c().logTail()}`);
      assert.equal((await c().tasks()).get(id2)?.status, 'RUNNING', 'the restored task runs');
      const [token2, now] = await read(id2, 'c2');
      assert.equal(token2, token, 'the restored task is a new process, not the checkpointed one');
      assert.ok(now + 25 >= at, `the restored counter is at ${now}; the checkpoint was taken just before ${at}`);
    } finally {
      for (const x of [id, id2]) {
        await c().ctr(['task', 'kill', '-s', 'KILL', x]);
        await waitFor(async () => (await c().tasks()).get(x)?.status !== 'RUNNING', 30_000);
        await c().ctr(['task', 'delete', x]);
        await c().ctr(['container', 'delete', x]);
      }
      await c().ctr(['image', 'rm', ref]);
    }
  });

  it('io.moat.isolation=microvm: task exec -t runs a shell on a terminal in the running guest; task kill --exec-id signals an exec', { skip: microvmSkipReason() ?? ptySkipReason(), timeout: 240_000 }, async () => {
    const id = newId('vmexec');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, '--annotation', 'io.moat.isolation=microvm', IMAGE, id, 'sleep', '1000'], { timeoutMs: 200_000 });
    try {
      const r = await c().ctrTty(['task', 'exec', '-t', '--exec-id', 'e1', id, 'sh'], { input: 'tty; echo $((7*8)); exit 7\n', timeoutMs: 60_000 });
      assert.equal(r.status, 7, `terminal showed:\n${r.stdout}\n${r.stderr}\n${c().logTail()}`);
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r*$/m);
      assert.match(r.stdout, /^56\r*$/m);
      // the shim signals an exec's pid itself: the exec's host end, which passes it to the guest
      const marker = `echo trapped-${process.pid}`;
      const running = c().ctr(['task', 'exec', '--exec-id', 'e2', id, 'sh', '-c', `trap "${marker}; exit 9" TERM; echo ready; touch /trap-set; sleep 100 & wait`], { timeoutMs: 60_000 });
      let probe = 0;
      let last = '';
      const trapSet = async (): Promise<boolean> => {
        const p = await c().ctr(['task', 'exec', '--exec-id', `p${probe++}`, id, 'test', '-e', '/trap-set']);
        last = `${p.status} ${p.stderr}`;
        return p.status === 0;
      };
      assert.ok(await waitFor(trapSet, 30_000), `the exec never set its trap (last probe: ${last})\n${c().logTail()}`);
      const k = await c().ctr(['task', 'kill', '--exec-id', 'e2', '-s', 'TERM', id]);
      assert.equal(k.status, 0, k.stderr);
      const e = await running;
      assert.equal(e.status, 9, `${e.stdout}\n${e.stderr}\n${c().logTail()}`);
      assert.equal(e.stdout, `ready\ntrapped-${process.pid}\n`);
    } finally {
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 30_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
    }
  });

  it('containers of one sandbox (io.kubernetes.cri.sandbox-id) share one shim process', async () => {
    const sandbox = `sb-${process.pid}`;
    const a = newId('sa');
    const b = newId('sb');
    const before = new Set(shimDaemons());
    const ann = ['--annotation', `io.kubernetes.cri.sandbox-id=${sandbox}`];
    await c().ok(['run', '-d', ...RUNTIME_ARGS, ...ann, IMAGE, a, 'sleep', '1000']);
    await c().ok(['run', '-d', ...RUNTIME_ARGS, ...ann, IMAGE, b, 'sleep', '1000']);
    const other = newId('sc');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, other, 'sleep', '1000']);
    try {
      const added = shimDaemons().filter((p) => !before.has(p));
      assert.equal(added.length, 2, `expected one shim for the sandbox and one for the other container, found ${added.length}`);
      const addr = (id: string): string => readFileSync(join(c().state, 'io.containerd.runtime.v2.task', NAMESPACE, id, 'address'), 'utf8');
      assert.equal(addr(a), addr(b));
      assert.notEqual(addr(a), addr(other));
    } finally {
      for (const id of [a, b, other]) {
        await c().ctr(['task', 'kill', '-s', 'KILL', id]);
        await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
        await c().ctr(['task', 'delete', id]);
        await c().ctr(['container', 'delete', id]);
      }
    }
    assert.ok(await waitFor(() => shimDaemons().every((p) => before.has(p)), 5000), 'a shim stayed after its last task was deleted');
  });

  it('publishes task events to containerd (create, start, exec-added, exec-started, exit, delete)', async () => {
    const id = newId('ev');
    const events = c().spawnCtr(['events']);
    try {
      await new Promise((r) => setTimeout(r, 300)); // subscribed
      await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, id, 'sleep', '1000']);
      await c().ok(['task', 'exec', '--exec-id', 'ev1', id, 'true']);
      await c().ok(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
      const want = ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/delete'];
      assert.ok(await waitFor(() => want.every((t) => events.output().includes(t)), 5000), `ctr events showed:\n${events.output()}`);
    } finally {
      events.stop();
    }
  });

  it('ctr task metrics: Stats returns containerd\'s cgroups Metrics (v1 on v1/hybrid hosts, v2 on unified ones)', async () => {
    const id = newId('metrics');
    await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, id, 'sleep', '1000']);
    try {
      // ctr prints json.MarshalIndent of the unpacked *v1.Metrics or *v2.Metrics (zero fields omitted)
      const r = await c().ok(['task', 'metrics', '--format', 'json', id]);
      const m = JSON.parse(r.stdout) as {
        pids?: { current?: number; limit?: number };
        memory?: { usage?: number | { usage?: number; limit?: number } };
        cpu?: { usage?: { total?: number }; usage_usec?: number };
      };
      const memUsage = typeof m.memory?.usage === 'object' ? m.memory.usage.usage : m.memory?.usage;
      assert.ok((memUsage ?? 0) > 0, `memory usage is not > 0 in:\n${r.stdout}`);
      assert.ok((m.pids?.current ?? 0) >= 1, `pids current is not >= 1 in:\n${r.stdout}`);
      if (typeof m.memory?.usage === 'object') assert.ok((m.memory.usage.limit ?? 0) > 0, 'v1 memory limit missing');
      // the table form too: ctr only prints its rows once it could unpack the Any
      const table = await c().ok(['task', 'metrics', id]);
      assert.match(table.stdout, /pids\.current\s+[1-9]/, table.stdout);
      assert.match(table.stdout, /memory\.usage(_in_bytes)?\s+[1-9]/, table.stdout);
    } finally {
      await c().ctr(['task', 'kill', '-s', 'KILL', id]);
      await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000);
      await c().ctr(['task', 'delete', id]);
      await c().ctr(['container', 'delete', id]);
    }
  });

  it('a shim killed with SIGKILL: containerd cleans up through `containerd-shim-moat-v1 delete`, nothing is left', async () => {
    const id = newId('dead');
    const before = new Set(shimDaemons());
    await c().ok(['run', '-d', ...RUNTIME_ARGS, IMAGE, id, 'sleep', '1000']);
    const pid = (await c().tasks()).get(id)?.pid ?? 0;
    const shim = shimDaemons().filter((p) => !before.has(p));
    assert.equal(shim.length, 1);
    process.kill(shim[0]!, 'SIGKILL');
    assert.ok(await waitFor(() => !existsSync(join(STATE, id)), 10_000), `Moat state ${join(STATE, id)} is left after the shim died`);
    assert.ok(await waitFor(() => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '), 10_000),
      'the container process outlived its dead shim');
    await c().ctr(['task', 'delete', id]);
    await c().ctr(['container', 'delete', id]);
  });
});
