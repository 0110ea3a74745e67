/**
 * The embedded default, `moat run -- CMD`: a host command sandboxed with no image (Moat only).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'the embedded default is Moat-only' : skipReason();
if (skip) console.log(`# skipping embedded-default tests: ${skip}`);
const python = skip || (spawnSync('python3', ['-c', '0']).status === 0 ? false : 'python3 is not installed (.ci/run installs it)');
if (python && !skip) console.log(`# skipping an embedded-default test: ${python}`);

describe('embedded default: moat run -- CMD', { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());
  const run = (args: string[], input?: string) => sb.rt(['run', ...args], input !== undefined ? { input } : {});

  it('passes stdio and the exit code through', async () => {
    const r = await run(['--', 'sh', '-c', 'read line; echo "got $line"; echo oops >&2; exit 7'], 'hello\n');
    assert.equal(r.status, 7);
    assert.equal(r.stdout, 'got hello\n');
    assert.equal(r.stderr, 'oops\n');
  });

  it('shows the host root read-only under a private overlay that is discarded at exit', async () => {
    const name = `moat-overlay-${process.pid}-${Date.now()}`;
    const r = await run(['--', 'sh', '-c', `echo inside > /etc/${name} && cat /etc/${name} && test -x /bin/sh && echo host-root`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'inside\nhost-root\n');
    assert.equal(existsSync(`/etc/${name}`), false, 'a write inside reached the host');
    const again = await run(['--', 'sh', '-c', `test -e /etc/${name} && echo leaked || echo fresh`]);
    assert.equal(again.stdout, 'fresh\n', 'the overlay outlived its container');
  });

  it('has a private /tmp, its own /proc and a minimal /dev', async () => {
    const hostFile = `/tmp/moat-host-${process.pid}`;
    writeFileSync(hostFile, 'x');
    const r = await run(['--', 'sh', '-c', `test -e ${hostFile} && echo sees-host-tmp; echo $$; ls /proc | grep -c '^[0-9]'; ls /dev`]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], '1', 'the command is not pid 1 of its own pid namespace');
    assert.ok(Number(lines[1]) <= 3, `the sandbox sees ${lines[1]} processes`);
    const dev = lines.slice(2).join(' ').split(/\s+/);
    for (const d of ['null', 'zero', 'urandom', 'tty', 'pts', 'shm']) assert.ok(dev.includes(d), `/dev/${d} missing`);
    assert.ok(!dev.includes('sda') && !dev.includes('vda') && !dev.includes('kvm') && !dev.includes('mem'), `host devices visible: ${dev.join(' ')}`);
  });

  it('runs in every namespace, with no capabilities and no_new_privs', async () => {
    const nss = ['pid', 'mnt', 'net', 'uts', 'ipc', 'cgroup', 'user'];
    const r = await run(['--', 'sh', '-c', `for n in ${nss.join(' ')}; do readlink /proc/self/ns/$n; done; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status`]);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    nss.forEach((n, i) => assert.notEqual(lines[i], readlinkSync(`/proc/self/ns/${n}`), `${n} namespace is the host's`));
    const status = lines.slice(nss.length).join('\n');
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapAmb']) assert.match(status, new RegExp(`${cap}:\\s+0000000000000000`));
    assert.match(status, /NoNewPrivs:\s+1/);
  });

  it('has loopback-only network by default, none with --network none, the host network with --network host', async () => {
    const ifaces = (out: string) => out.trim().split('\n').slice(2).map((l) => l.split(':')[0]!.trim()).sort();
    const lo = await run(['--', 'sh', '-c', 'cat /proc/net/dev; cat /sys/class/net/lo/operstate 2>/dev/null; cat /sys/class/net/lo/flags']);
    assert.equal(lo.status, 0, lo.stderr);
    const loLines = lo.stdout.trim().split('\n');
    assert.deepEqual(ifaces(loLines.slice(0, -2).join('\n')), ['lo']);
    assert.equal(Number(loLines.at(-1)) & 1, 1, 'loopback is not up');

    const none = await run(['--network', 'none', '--', 'cat', '/sys/class/net/lo/flags']);
    assert.equal(none.status, 0, none.stderr);
    assert.equal(Number(none.stdout.trim()) & 1, 0, 'loopback is up with --network none');

    const host = await run(['--network', 'host', '--', 'readlink', '/proc/self/ns/net']);
    assert.equal(host.stdout.trim(), readlinkSync('/proc/self/ns/net'));
  });

  it('binds volumes read-write and read-only, and honours --env and --cwd', async () => {
    const rw = join(sb.tmp, 'rw');
    const ro = join(sb.tmp, 'ro');
    mkdirSync(rw);
    mkdirSync(ro);
    writeFileSync(join(ro, 'data'), 'ro-data\n');
    const r = await run(['--volume', `${rw}:/mnt/rw`, '--volume', `${ro}:/mnt/ro:ro`, '--env', 'MOAT_X=42', '--cwd', '/mnt/rw', '--',
      'sh', '-c', 'echo written > out; cat /mnt/ro/data; touch /mnt/ro/nope 2>/dev/null && echo ro-writable; echo "x=$MOAT_X"; pwd']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'ro-data\nx=42\n/mnt/rw\n');
    assert.equal(readFileSync(join(rw, 'out'), 'utf8'), 'written\n');
    assert.equal(existsSync(join(ro, 'nope')), false);
  });

  it('refuses bad options with a clear error and leaves nothing behind', async () => {
    for (const [args, re] of [
      [['--volume', 'relative-only', '--', 'true'], /--volume/],
      [['--volume', '/nonexistent-moat:/x', '--', 'true'], /does not exist/],
      [['--network', 'bridge', '--', 'true'], /--network/],
      [['--env', 'NOEQUALS', '--', 'true'], /--env/],
      [['--user', 'root', '--', 'true'], /--user/],
      [['--', 'no-such-program-moat'], /not found/],
    ] as const) {
      const r = await run([...args]);
      assert.notEqual(r.status, 0, `${args.join(' ')} succeeded`);
      assert.match(r.stderr, re);
    }
    const list = await sb.ok(['list', '--format', 'json']);
    assert.equal(JSON.parse(list.stdout), null, 'a failed run left a container behind');
  });

  // Docker's daemon.json (runtimeArgs) and podman's --runtime-flag give a runtime arguments
  // before every command: the only way a Docker engine without annotations picks the sentry
  it('takes a default isolation from a flag before the command; the command\'s flag and the annotation win', async () => {
    const host = readFileSync('/proc/version', 'utf8');
    const viaGlobal = await sb.rt(['--isolation', 'sentry', 'run', '--', 'cat', '/proc/version']);
    assert.equal(viaGlobal.status, 0, viaGlobal.stderr);
    assert.notEqual(viaGlobal.stdout, host, 'the global --isolation sentry did not put the command under the sentry');
    const flagWins = await sb.rt(['--isolation', 'sentry', 'run', '--isolation', 'container', '--', 'cat', '/proc/version']);
    assert.equal(flagWins.stdout, host, "run's own --isolation did not win");
    const b = await sb.bundle(['cat', '/proc/version'], (spec) => {
      spec['annotations'] = { 'io.moat.isolation': 'container' };
    });
    const annotationWins = await sb.rt(['--isolation', 'sentry', 'run', '-b', b, sb.id('global-iso')]);
    assert.equal(annotationWins.stdout, host, 'the io.moat.isolation annotation did not win over the global flag');
    for (const [args, re] of [
      [['--isolation', 'bogus', 'run', '--', 'true'], /--isolation \(before the command\): unknown isolation "bogus"/],
      [['--sentry-level', 'lax', 'run', '--', 'true'], /--sentry-level \(before the command\): expected strict or balanced/],
    ] as const) {
      const r = await sb.rt([...args]);
      assert.notEqual(r.status, 0, `${args.join(' ')} succeeded`);
      assert.match(r.stderr, re);
    }
    const list = await sb.ok(['list', '--format', 'json']);
    assert.equal(JSON.parse(list.stdout), null, 'a run left a container behind');
  });

  it('takes a default sentry level from a flag before the command; the command\'s flag wins', { skip: python }, async () => {
    // io_setup is served under balanced, refused with ENOSYS under strict (docs/syscalls.md)
    const aio = ['python3', '-c', 'import ctypes; c = ctypes.CDLL(None, use_errno=True); x = ctypes.c_ulong(0); print(c.syscall(206, 1, ctypes.byref(x)), ctypes.get_errno())'];
    const strict = await sb.rt(['--isolation', 'sentry', '--sentry-level', 'strict', 'run', '--', ...aio]);
    assert.equal(strict.stdout, '-1 38\n', strict.stderr);
    const balanced = await sb.rt(['--isolation', 'sentry', '--sentry-level', 'strict', 'run', '--sentry-level', 'balanced', '--', ...aio]);
    assert.equal(balanced.stdout, '0 0\n', balanced.stderr);
  });

  it('runs as the given --user', async () => {
    const r = await run(['--user', '1000:1000', '--cwd', '/', '--', 'sh', '-c', 'id -u; id -g']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '1000\n1000\n');
  });
});
