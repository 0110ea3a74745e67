/**
 * The runtime under test as Podman's OCI runtime (`podman --runtime RUNTIME`): every container
 * operation goes podman -> conmon -> RUNTIME create/start/exec, or podman -> RUNTIME
 * state/pause/resume/kill/delete. A private store (test/helpers/podman.ts), images from the fixture
 * archive only. Runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeOciImageArchive } from '../fixtures/ociimage.js';
import { assertTtyShell, freezerState, leftoverProcesses, ptySkipReason, runtimeBinaryMissing, TTY_SHELL_INPUT } from '../helpers/harness.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { Podman, podmanSkipReason } from '../helpers/podman.js';
import { RUNTIME, processAlive, skipReason, waitFor } from '../helpers/runtime.js';

const IMAGE = 'moat.test/busybox:latest';

const skip = skipReason() ?? podmanSkipReason() ?? runtimeBinaryMissing();
if (skip) console.log(`# skipping podman tests: ${skip}`);

/**
 * Where the runtime keeps a container's state when podman runs it: podman passes no --root, so
 * the runtime's default root (runc: /run/runc; Moat, as root: /run/moat) holds ID/.
 */
const runtimeState = (id: string): string => join(RUNTIME === 'runc' ? '/run/runc' : '/run/moat', id);

describe(`podman (${RUNTIME})`, { skip }, () => {
  let pm: Podman | undefined;
  const p = (): Podman => {
    assert.ok(pm, 'podman store was not set up');
    return pm;
  };
  const name = (tag: string): string => `moat-${RUNTIME}-${process.pid}-${tag}`;

  before(async () => {
    pm = await Podman.start();
    const image = await makeOciImageArchive(join(pm.dir, 'busybox-oci.tar'), { ref: IMAGE });
    await pm.load(image.path);
  });
  after(async () => {
    await pm?.stop();
  });

  it('run --rm: output and exit code pass through; pid 1, the rlimits and the empty network namespace of the spec', async () => {
    const r = await p().run(['--rm', IMAGE, 'sh', '-c', 'echo hello $$ $(ulimit -n); grep -c : /proc/net/dev; echo oops >&2; exit 6']);
    assert.equal(r.status, 6, r.stderr);
    // /proc/net/dev: one line per interface (each has a colon), lo only
    assert.equal(r.stdout, 'hello 1 1024\n1\n');
    assert.match(r.stderr, /oops/);
  });

  it('run -it: an interactive shell on a terminal; its exit code passes through', { skip: ptySkipReason() }, async () => {
    assertTtyShell(await p().tty(['run', '--rm', '-it', IMAGE, 'sh'], { input: TTY_SHELL_INPUT }));
  });

  describe('a detached container (run -d --name N ... sleep 1000)', () => {
    const n = name('det');
    let cid = '';
    let pid = 0;
    before(async () => {
      cid = (await p().ok(['run', '-d', '--name', n, IMAGE, 'sleep', '1000'])).stdout.trim();
      assert.match(cid, /^[0-9a-f]{64}$/);
      pid = Number((await p().ok(['inspect', '-f', '{{.State.Pid}}', n])).stdout.trim());
      assert.ok(pid > 0 && processAlive(pid), `State.Pid ${pid} is not a live process`);
      assert.equal(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), 'sleep\u00001000\u0000');
    });

    it('exec: a process in the container (its pid namespace); output and exit code pass through', async () => {
      const r = await p().podman(['exec', n, 'sh', '-c', 'echo in-exec; tr "\\0" " " </proc/1/cmdline; echo; exit 4']);
      assert.equal(r.status, 4, r.stderr);
      assert.equal(r.stdout, 'in-exec\nsleep 1000 \n');
    });

    it('exec -it: an interactive shell on a terminal in the container', { skip: ptySkipReason() }, async () => {
      const r = await p().tty(['exec', '-it', n, 'sh'], { input: 'tty; echo $((7*8)); exit 7\n' });
      assert.equal(r.status, 7, `terminal showed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r*$/m);
      assert.match(r.stdout, /^56\r*$/m);
    });

    it('top and ps show the running container', async () => {
      const top = await p().ok(['top', n, 'pid', 'args']);
      assert.match(top.stdout, /^\s*1\s+sleep 1000\s*$/m, `podman top printed:\n${top.stdout}`);
      const ps = await p().ok(['ps', '--filter', 'status=running', '--no-trunc', '--format', '{{.ID}} {{.Names}}']);
      assert.ok(ps.stdout.split('\n').includes(`${cid} ${n}`), `podman ps --filter status=running printed:\n${ps.stdout}`);
    });

    it('pause freezes it (paused), unpause thaws it (running)', async () => {
      const status = async (): Promise<string> => (await p().ok(['inspect', '-f', '{{.State.Status}}', n])).stdout.trim();
      await p().ok(['pause', n]);
      assert.equal(await status(), 'paused');
      const frozen = freezerState(pid);
      if (frozen !== undefined) assert.equal(frozen, 'FROZEN', 'the container is paused but its cgroup is not frozen');
      await p().ok(['unpause', n]);
      assert.equal(await status(), 'running');
      if (frozen !== undefined) assert.equal(freezerState(pid), 'THAWED');
      assert.ok(processAlive(pid));
    });

    it('kill: wait prints 137; rm removes the container and the runtime state', async () => {
      const state = runtimeState(cid);
      assert.ok(existsSync(state), `the runtime's state ${state} is missing while the container runs`);
      await p().ok(['kill', n]);
      const w = await p().ok(['wait', n]);
      assert.equal(w.stdout.trim(), '137');
      assert.ok(await waitFor(() => !processAlive(pid), 5000), 'the container exited but its process lives');
      await p().ok(['rm', n]);
      assert.equal((await p().podman(['inspect', n])).status === 0, false, 'rm left the container');
      assert.equal(existsSync(state), false, `rm left the runtime's state ${state}`);
    });
  });

  // Moat's isolation per container through podman: the annotation reaches the runtime's create
  // under conmon, a detached create with nothing of Moat waiting for it (moat-watch fails it
  // closed when its sentry dies)
  it('io.moat.isolation=sentry: runs under the sentry; a detached container whose sentry is killed exits 137', { skip: RUNTIME === 'runc' ? 'the sentry is Moat\'s' : false }, async () => {
    const sentry = ['--annotation', 'io.moat.isolation=sentry'];
    const r = await p().run(['--rm', ...sentry, IMAGE, 'sh', '-c', 'echo under $$; cat /proc/version; exit 3']);
    assert.equal(r.status, 3, r.stderr);
    const [first, version] = r.stdout.split('\n');
    assert.equal(first, 'under 1');
    assert.notEqual(version, readFileSync('/proc/version', 'utf8').trim(), 'the host /proc/version: not under the sentry');
    const n = name('sentry-det');
    const cid = (await p().ok(['run', '-d', '--name', n, ...sentry, IMAGE, 'sleep', '1000'])).stdout.trim();
    const rec = JSON.parse(readFileSync(join(runtimeState(cid), 'state.json'), 'utf8')) as { backendState?: { pid?: number } };
    const sentryPid = rec.backendState?.pid ?? 0;
    assert.ok(sentryPid > 0 && processAlive(sentryPid), `the container's record names no live sentry: ${JSON.stringify(rec.backendState)}`);
    process.kill(sentryPid, 'SIGKILL');
    const w = await p().ok(['wait', n]);
    assert.equal(w.stdout.trim(), '137');
    await p().ok(['rm', n]);
    // conmon waits for every process it adopted: nothing of Moat may stay its child (a warm
    // standby sentry started by the create would, for ten minutes)
    const conmon = (): ReturnType<typeof leftoverProcesses> => leftoverProcesses({ ids: [cid] }).filter((x) => x.cmdline.startsWith('/usr/bin/conmon') || x.cmdline.includes('conmon '));
    assert.ok(await waitFor(() => conmon().length === 0, 10_000), `conmon of ${n} stays: ${JSON.stringify(conmon())}`);
  });

  // conmon waits on the pids create and exec write: under microvm the VM's monitor and an exec's
  // host relay, which end with the guest processes' statuses
  it('io.moat.isolation=microvm: exit codes of run, exec and kill pass through conmon', { skip: RUNTIME === 'runc' ? 'the microvm isolation is Moat\'s' : microvmSkipReason(), timeout: 600_000 }, async () => {
    const vm = ['--annotation', 'io.moat.isolation=microvm'];
    const r = await p().run(['--rm', ...vm, IMAGE, 'sh', '-c', 'echo in the guest $$; uname -r; exit 3'], { timeoutMs: 300_000 });
    assert.equal(r.status, 3, r.stderr);
    const [first, release] = r.stdout.split('\n');
    assert.equal(first, 'in the guest 1', 'the process is not pid 1 of its pid namespace');
    assert.notEqual(release, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), 'uname -r printed the host kernel');
    const n = name('vm-det');
    await p().ok(['run', '-d', '--name', n, ...vm, IMAGE, 'sleep', '1000'], { timeoutMs: 300_000 });
    const e = await p().podman(['exec', n, 'sh', '-c', 'uname -r; exit 4'], { timeoutMs: 60_000 });
    assert.equal(e.status, 4, e.stderr);
    assert.equal(e.stdout, `${release}\n`);
    await p().ok(['kill', n]);
    assert.equal((await p().ok(['wait', n], { timeoutMs: 60_000 })).stdout.trim(), '137');
    await p().ok(['rm', n]);
  });

  // A bridge network (CNI here: Debian's podman 4.3 with containernetworking-plugins): podman
  // makes the container's network namespace, the bridge plugin puts a veth end in it, and the
  // runtime is given the namespace by path. The host's end of the bridge is the gateway; a
  // server there greets the container with the address it sees.
  const bridged = async (tag: string, extra: string[]): Promise<void> => {
    const n = 100 + ((process.pid + tag.length) % 100);
    const net = name(`net${tag}`);
    const gw = `10.233.${n}.1`;
    await p().ok(['network', 'create', '--subnet', `10.233.${n}.0/24`, '--gateway', gw, net]);
    // a TCP greeting, read with nc (busybox-static's wget crashes in podman's containers, any network)
    const server = createServer((c) => c.end(`hello ${c.remoteAddress ?? '?'}\n`));
    try {
      // on every address: the bridge, and so the gateway's address, exists once a container joins
      await new Promise<void>((ok) => server.listen(0, '0.0.0.0', ok));
      const port = (server.address() as AddressInfo).port;
      const r = await p().run(['--rm', '--network', net, ...extra, IMAGE, 'sh', '-c', `ip -o -4 addr show eth0; ip route; nc -w 10 ${gw} ${port} </dev/null`], { timeoutMs: 300_000 });
      assert.equal(r.status, 0, `${r.stderr}${r.stdout}`);
      const addr = new RegExp(`inet (10\\.233\\.${n}\\.\\d+)/24`).exec(r.stdout)?.[1];
      assert.ok(addr, `eth0 has no address of the network:\n${r.stdout}`);
      assert.match(r.stdout, new RegExp(`^default via ${gw.replace(/\./g, '\\.')} `, 'm'), `no default route via the gateway:\n${r.stdout}`);
      assert.match(r.stdout, new RegExp(`^hello ${addr.replace(/\./g, '\\.')}$`, 'm'), `the host did not see the container's address:\n${r.stdout}`);
    } finally {
      server.close();
      await p().podman(['network', 'rm', '-f', net]);
    }
  };

  it('a bridge network (CNI): the container has its address and route and reaches the host across the bridge', async () => {
    await bridged('n', []);
  });

  it('the sentry on a bridge network: the sandbox uses the engine\'s network (policy pod)', { skip: RUNTIME === 'runc' ? 'the sentry is Moat\'s' : false }, async () => {
    await bridged('s', ['--annotation', 'io.moat.isolation=sentry']);
  });

  it('the microvm isolation on a bridge network: the guest takes over the interface CNI made', { skip: RUNTIME === 'runc' ? 'the microvm isolation is Moat\'s' : microvmSkipReason(), timeout: 600_000 }, async () => {
    await bridged('v', ['--annotation', 'io.moat.isolation=microvm']);
  });

  it('leaves no container, runtime state or process behind', async () => {
    assert.equal((await p().ok(['ps', '-a', '-q'])).stdout.trim(), '');
    const ids = await p().containerIds();
    assert.ok(ids.length >= 3, `the events log names ${ids.length} containers, not the 3 the tests made`);
    for (const id of ids) assert.equal(existsSync(runtimeState(id)), false, `${runtimeState(id)} is left`);
    // conmon and its `podman container cleanup` outlive the container briefly: give them a moment
    const match = { paths: [p().dir], ids };
    await waitFor(() => leftoverProcesses(match).length === 0, 10_000);
    assert.deepEqual(leftoverProcesses(match), []);
  });
});
