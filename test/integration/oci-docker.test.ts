/**
 * The runtime under test as a Docker runtime (`runtimes` in daemon.json): every container
 * operation goes docker -> dockerd -> containerd -> containerd's runc shim -> RUNTIME. A private
 * engine (test/helpers/docker.ts), the image imported from the busybox fixture's root filesystem.
 * Runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc; Moat's sentry is picked
 * the way a Docker engine without annotations can pick it: a runtime registered with the runtime
 * argument `--isolation=sentry`.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildBusyboxRootfs } from '../fixtures/busybox.js';
import { Docker, dockerSkipReason, MICROVM_RUNTIME_NAME, SENTRY_RUNTIME_NAME } from '../helpers/docker.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { assertTtyShell, freezerState, leftoverProcesses, ptySkipReason, runtimeBinaryMissing, TTY_SHELL_INPUT } from '../helpers/harness.js';
import { RUNTIME, processAlive, skipReason, waitFor } from '../helpers/runtime.js';

const IMAGE = 'moat.test/busybox:latest';

const skip = skipReason() ?? dockerSkipReason() ?? runtimeBinaryMissing();
if (skip) console.log(`# skipping docker tests: ${skip}`);


describe(`docker (${RUNTIME})`, { skip }, () => {
  let engine: Docker | undefined;
  const d = (): Docker => {
    assert.ok(engine, 'dockerd was not set up');
    return engine;
  };
  const name = (tag: string): string => `moat-${RUNTIME}-${process.pid}-${tag}`;
  const made: string[] = [];
  /** Where the runtime keeps a container's state: dockerd has the runc shim pass --root EXEC-ROOT/runtime-runc/moby. */
  const runtimeState = (id: string): string => join(d().runtimeRoot, id);
  /** `docker run --network none ...args` (the engine has no bridge), remembering named containers. */
  const run = (args: string[]) => d().docker(['run', '--network', 'none', ...args], { timeoutMs: 60_000 });

  before(async () => {
    engine = await Docker.start();
    const rootfs = mkdtempSync(join(tmpdir(), 'moat-docker-rootfs-'));
    try {
      await buildBusyboxRootfs(rootfs);
      await engine.importRootfs(rootfs, IMAGE);
    } finally {
      rmSync(rootfs, { recursive: true, force: true });
    }
  });
  after(async () => {
    await engine?.stop();
  });

  it('run --rm: output and exit code pass through; the process is pid 1', async () => {
    const r = await run(['--rm', IMAGE, 'sh', '-c', 'echo hello $$; echo oops >&2; exit 6']);
    assert.equal(r.status, 6, r.stderr);
    assert.equal(r.stdout, 'hello 1\n');
    assert.match(r.stderr, /oops/);
  });

  it('run -it: an interactive shell on a terminal; its exit code passes through', { skip: ptySkipReason() }, async () => {
    assertTtyShell(await d().tty(['run', '--rm', '-it', '--network', 'none', IMAGE, 'sh'], { input: TTY_SHELL_INPUT, timeoutMs: 60_000 }));
  });

  describe('a detached container (run -d --name N ... sleep 1000)', () => {
    const n = name('det');
    let cid = '';
    let pid = 0;
    before(async () => {
      const r = await run(['-d', '--name', n, IMAGE, 'sleep', '1000']);
      assert.equal(r.status, 0, r.stderr);
      cid = r.stdout.trim();
      made.push(cid);
      assert.match(cid, /^[0-9a-f]{64}$/);
      pid = Number((await d().ok(['inspect', '-f', '{{.State.Pid}}', n])).stdout.trim());
      assert.ok(pid > 0 && processAlive(pid), `State.Pid ${pid} is not a live process`);
      assert.equal(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), 'sleep\u00001000\u0000');
      assert.ok(existsSync(runtimeState(cid)), `the runtime keeps no state at ${runtimeState(cid)}`);
    });

    it('exec: a process in the container (its pid namespace), as another user; output and exit code pass through', async () => {
      const r = await d().docker(['exec', '-u', '1000', n, 'sh', '-c', 'echo in $(id -u); ps -o comm | grep -c sleep; exit 4']);
      assert.equal(r.status, 4, r.stderr);
      assert.equal(r.stdout, 'in 1000\n1\n');
    });

    it('exec -it: an interactive shell on a terminal in the container', { skip: ptySkipReason() }, async () => {
      const r = await d().tty(['exec', '-it', n, 'sh'], { input: 'tty; echo $((5*5)); exit 2\n' });
      assert.equal(r.status, 2, `terminal showed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^25\r*$/m);
    });

    it('top lists the container\'s process; pause freezes it, unpause thaws it', async () => {
      const top = await d().ok(['top', n]);
      assert.match(top.stdout, /sleep 1000/);
      await d().ok(['pause', n]);
      assert.equal((await d().ok(['inspect', '-f', '{{.State.Status}}', n])).stdout.trim(), 'paused');
      assert.equal(freezerState(pid), 'FROZEN');
      await d().ok(['unpause', n]);
      assert.equal((await d().ok(['inspect', '-f', '{{.State.Status}}', n])).stdout.trim(), 'running');
      assert.equal(freezerState(pid), 'THAWED');
    });

    it('stop: SIGTERM, then SIGKILL after the timeout (pid 1 ignores SIGTERM): exit code 137; rm removes the runtime state', async () => {
      await d().ok(['stop', '-t', '1', n], { timeoutMs: 60_000 });
      assert.equal((await d().ok(['inspect', '-f', '{{.State.ExitCode}}', n])).stdout.trim(), '137');
      assert.ok(await waitFor(() => !processAlive(pid), 5000), 'the container process outlived stop');
      await d().ok(['rm', n]);
      assert.equal(existsSync(runtimeState(cid)), false, `rm left the runtime's state ${runtimeState(cid)}`);
    });
  });

  // Debian's Docker 20.10 passes no annotations to the runtime: a runtime registered with the
  // runtime argument --isolation=sentry is how its users pick the sentry. The engine's own
  // settings must hold there too: its default sysctl (net.ipv4.ip_unprivileged_port_start=0), an
  // exec's process.json without no_new_privs, and --oom-score-adj for an exec.
  it('the sentry through a runtime argument: run, its engine\'s sysctl, exec with an oom score', { skip: RUNTIME === 'runc' ? 'the sentry is Moat\'s' : false }, async () => {
    const sentry = ['--runtime', SENTRY_RUNTIME_NAME];
    const r = await run(['--rm', ...sentry, IMAGE, 'sh', '-c', 'echo under $$; cat /proc/version; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; exit 3']);
    assert.equal(r.status, 3, r.stderr);
    const [first, version, port] = r.stdout.split('\n');
    assert.equal(first, 'under 1');
    assert.notEqual(version, readFileSync('/proc/version', 'utf8').trim(), 'the host /proc/version: not under the sentry');
    assert.equal(port, '0', "Docker's sysctl is not what the sandbox shows");
    const n = name('sentry');
    const det = await run(['-d', '--name', n, ...sentry, '--oom-score-adj', '300', IMAGE, 'sleep', '1000']);
    assert.equal(det.status, 0, det.stderr);
    made.push(det.stdout.trim());
    // uid 1000 binds port 80: the sysctl took effect in the sandbox's network namespace
    const e = await d().docker(['exec', '-u', '1000', n, 'sh', '-c', 'cat /proc/version; cat /proc/self/oom_score_adj; nc -l -p 80 2>&1 & sleep 0.3; kill $! 2>/dev/null && echo bound 80']);
    assert.equal(e.status, 0, e.stderr);
    assert.deepEqual(e.stdout.split('\n').slice(1), ['300', 'bound 80', '']);
    assert.equal(e.stdout.split('\n')[0], version, 'the exec did not run under the sentry');
    await d().ok(['rm', '-f', n], { timeoutMs: 60_000 });
  });

  // The runc shim (and conmon) wait on the pid a create or exec writes and signal an exec's pid
  // themselves: under microvm those are the VM's monitor and an exec's host relay, which end with
  // the guest processes' statuses. `docker top` looks the runtime's ps pids up on the host.
  it('the microvm isolation through a runtime argument: exit codes of run and exec, the engine\'s binds, top, stats, pause, stop', { skip: RUNTIME === 'runc' ? 'the microvm isolation is Moat\'s' : microvmSkipReason(), timeout: 600_000 }, async () => {
    const vm = ['--runtime', MICROVM_RUNTIME_NAME];
    const r = await d().docker(['run', '--rm', '--network', 'none', ...vm, IMAGE, 'sh', '-c', 'echo in the guest $$; uname -r; exit 3'], { timeoutMs: 300_000 });
    assert.equal(r.status, 3, r.stderr);
    const [first, release] = r.stdout.split('\n');
    assert.equal(first, 'in the guest 1', 'the process is not pid 1 of its pid namespace');
    assert.notEqual(release, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), 'uname -r printed the host kernel');
    const n = name('vm');
    const det = await d().docker(['run', '-d', '--name', n, '--network', 'none', ...vm, IMAGE, 'sleep', '1000'], { timeoutMs: 300_000 });
    assert.equal(det.status, 0, det.stderr);
    made.push(det.stdout.trim());
    // Docker's binds reach the guest (9p shares): /etc/hostname is the engine's file for it
    const e = await d().docker(['exec', n, 'sh', '-c', 'uname -r; cat /etc/hostname; exit 4'], { timeoutMs: 60_000 });
    assert.equal(e.status, 4, e.stderr);
    assert.equal(e.stdout, `${release}\n${det.stdout.trim().slice(0, 12)}\n`);
    const top = await d().ok(['top', n]);
    assert.match(top.stdout, /qemu-system-x86_64/, 'top does not list the VMM');
    const pidCol = top.stdout.split('\n')[0]!.trim().split(/\s+/).indexOf('PID');
    const listed = top.stdout.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)[pidCol]);
    assert.ok(!listed.includes('1'), `top lists host pid 1: a guest pid taken for a host one\n${top.stdout}`);
    // the shim reads the cgroups of the pid it was given: the VM's (its memory limit, its processes)
    const st = await d().ok(['stats', '--no-stream', '--format', '{{.MemUsage}} {{.PIDs}}', n]);
    const m = /\/ ([\d.]+)MiB (\d+)$/.exec(st.stdout.trim());
    assert.ok(m && Number(m[1]) < 1024 && Number(m[2]) >= 2, `docker stats shows no VM's cgroup: ${st.stdout}`);
    await d().ok(['pause', n]);
    assert.equal((await d().ok(['inspect', '-f', '{{.State.Status}}', n])).stdout.trim(), 'paused');
    await d().ok(['unpause', n]);
    await d().ok(['stop', '-t', '1', n], { timeoutMs: 60_000 });
    // as under runc: the sleep is pid 1 of its pid namespace, which ignores SIGTERM; SIGKILL follows
    assert.equal((await d().ok(['inspect', '-f', '{{.State.ExitCode}}', n])).stdout.trim(), '137');
    await d().ok(['rm', n]);
  });

  // A user-defined bridge network (the engine's default bridge is off here): libnetwork puts a
  // veth end in the container's namespace from its prestart hook. The host's end of the bridge
  // is the gateway; a server there answers with the address it sees.
  const bridged = async (tag: string, runtime: string[]): Promise<void> => {
    const n = 100 + ((process.pid + tag.length) % 100);
    const net = name(tag);
    const gw = `10.232.${n}.1`;
    const c = await d().docker(['network', 'create', '--driver', 'bridge', '--subnet', `10.232.${n}.0/24`, '--gateway', gw, '-o', `com.docker.network.bridge.name=mbr${tag}${process.pid % 10000}`, net]);
    assert.equal(c.status, 0, c.stderr);
    const server = createServer((q, res) => res.end(`hello ${q.socket.remoteAddress ?? '?'}\n`));
    const peer = name(`${tag}peer`);
    try {
      await new Promise<void>((ok) => server.listen(0, gw, ok));
      const port = (server.address() as AddressInfo).port;
      // another container of the network (engine's default runtime), known to the embedded DNS by its name
      const p = await d().docker(['run', '-d', '--name', peer, '--network', net, IMAGE, 'sleep', '1000'], { timeoutMs: 300_000 });
      assert.equal(p.status, 0, p.stderr);
      made.push(p.stdout.trim());
      const peerAddr = (await d().ok(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, peer])).stdout.trim();
      const r = await d().docker(['run', '--rm', '--network', net, ...runtime, IMAGE, 'sh', '-c', `ip -o -4 addr show eth0; wget -q -O- http://${gw}:${port}/; cat /etc/resolv.conf; nslookup ${peer}`], { timeoutMs: 300_000 });
      assert.equal(r.status, 0, r.stderr);
      const addr = new RegExp(`inet (10\\.232\\.${n}\\.\\d+)/24`).exec(r.stdout)?.[1];
      assert.ok(addr, `eth0 has no address of the network:\n${r.stdout}`);
      assert.match(r.stdout, new RegExp(`^hello ${addr.replace(/\./g, '\\.')}$`, 'm'), 'the host did not see the container\'s address');
      // Docker's embedded DNS (127.0.0.11 in the container's namespace) names the peer
      assert.match(r.stdout, /^nameserver 127\.0\.0\.11$/m);
      assert.match(r.stdout, new RegExp(`^Address:\\s+${peerAddr.replace(/\./g, '\\.')}$`, 'm'), `the embedded DNS did not name ${peer} (${peerAddr}):\n${r.stdout}`);
      return;
    } finally {
      server.close();
      await d().docker(['rm', '-f', peer], { timeoutMs: 60_000 });
      await d().docker(['network', 'rm', net]);
    }
  };

  it('a user-defined bridge network: the container has its address and reaches the host across the bridge', async () => {
    await bridged('n', []);
  });

  it('the sentry on a bridge network: the sandbox uses the engine\'s network (policy pod)', { skip: RUNTIME === 'runc' ? 'the sentry is Moat\'s' : undefined }, async () => {
    await bridged('s', ['--runtime', SENTRY_RUNTIME_NAME]);
  });

  it('the microvm isolation on a bridge network: the guest takes over the container\'s interface', { skip: RUNTIME === 'runc' ? 'the microvm isolation is Moat\'s' : microvmSkipReason(), timeout: 600_000 }, async () => {
    await bridged('v', ['--runtime', MICROVM_RUNTIME_NAME]);
  });

  it('leaves no container, runtime state or process behind', async () => {
    assert.equal((await d().ok(['ps', '-aq'])).stdout.trim(), '');
    assert.ok(made.length >= 1, 'the tests made no named container');
    for (const id of made) assert.equal(existsSync(runtimeState(id)), false, `${runtimeState(id)} is left`);
    const match = { ids: made };
    await waitFor(() => leftoverProcesses(match).length === 0, 10_000);
    assert.deepEqual(leftoverProcesses(match), []);
  });
});
