/**
 * `exec` and `ps`, runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, processAlive, skipReason, waitFor } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping exec tests: ${skip}`);

describe(`exec and ps (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  /** Starts a detached container running `sleep 1000`; returns its id and init pid. */
  async function running(): Promise<{ id: string; pid: number }> {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    return { id, pid: (await sb.state(id)).pid };
  }

  it('runs in every namespace of the container and passes its exit code through', async () => {
    const { id, pid } = await running();
    const nss = ['pid', 'mnt', 'net', 'uts', 'ipc'];
    const r = await sb.rt(['exec', id, 'sh', '-c', `for n in ${nss.join(' ')}; do readlink /proc/self/ns/$n; done; hostname; exit 7`]);
    assert.equal(r.status, 7, r.stderr);
    const lines = r.stdout.trim().split('\n');
    nss.forEach((n, i) => assert.equal(lines[i], readlinkSync(`/proc/${pid}/ns/${n}`), `${n} namespace differs from the init's`));
    assert.equal(lines[nss.length], 'fixture');
    await sb.ok(['delete', '--force', id]);
  });

  it('applies --env, --cwd and --user', async () => {
    const { id } = await running();
    const r = await sb.ok(['exec', '--env', 'MOAT_E=42', '--cwd', '/tmp', '--user', '1000:1000', id, 'sh', '-c', 'echo $MOAT_E; pwd; id -u; id -g']);
    assert.deepEqual(r.stdout.trim().split('\n'), ['42', '/tmp', '1000', '1000']);
    await sb.ok(['delete', '--force', id]);
  });

  it('takes the whole process from --process', async () => {
    const { id } = await running();
    const file = join(sb.tmp, 'process.json');
    writeFileSync(file, JSON.stringify({ args: ['sh', '-c', 'echo from-json $P; cat /proc/self/status | grep NoNewPrivs'], env: ['P=x', 'PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 }, noNewPrivileges: true }));
    const r = await sb.ok(['exec', '--process', file, id]);
    assert.match(r.stdout, /^from-json x\nNoNewPrivs:\s+1\n$/);
    await sb.ok(['delete', '--force', id]);
  });

  it('--detach leaves the process running and writes --pid-file; ps lists it', async () => {
    const { id, pid } = await running();
    const pidFile = join(sb.tmp, `${id}-exec.pid`);
    await sb.ok(['exec', '--detach', '--pid-file', pidFile, id, 'sleep', '500']);
    const execPid = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(execPid > 0 && processAlive(execPid));
    const listed = JSON.parse((await sb.ok(['ps', '--format', 'json', id])).stdout) as number[];
    assert.ok(listed.includes(pid), `init ${pid} not in ${listed}`);
    assert.ok(listed.includes(execPid), `exec'd ${execPid} not in ${listed}`);
    const table = (await sb.ok(['ps', id])).stdout;
    assert.match(table, /PID/);
    assert.match(table, new RegExp(`\\b${execPid}\\b`));
    await sb.ok(['delete', '--force', id]);
    assert.ok(await waitFor(() => !processAlive(execPid)), 'the exec\'d process outlived its container');
  });

  it('refuses to exec in a stopped container', async () => {
    const b = await sb.bundle(['true']);
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'));
    const r = await sb.rt(['exec', id, 'true']);
    assert.notEqual(r.status, 0);
    await sb.ok(['delete', id]);
  });
});
