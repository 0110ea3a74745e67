/**
 * The shim's command line, socket naming, runtime options and config file (src/shim/flags.ts,
 * src/shim/main.ts) and the rootfs mount option split (src/shim/mount.ts), without containerd.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseShimFlags, socketAddress, ShimUsageError } from '../../src/shim/flags.js';
import { parseConfig, runtimeOptions } from '../../src/shim/main.js';
import { anyOf, encode } from '../../src/shim/proto.js';
import { UsageError } from '../../src/errors.js';

describe('shim flags (Go flag syntax, as containerd passes them)', () => {
  it('reads -name value, --name value, -name=value, booleans, and the action after the flags', () => {
    const f = parseShimFlags(['-namespace', 'k8s.io', '--address=/run/c.sock', '-publish-binary', '/usr/bin/containerd', '-id', 'abc', '-debug', 'start']);
    assert.equal(f.namespace, 'k8s.io');
    assert.equal(f.address, '/run/c.sock');
    assert.equal(f.publishBinary, '/usr/bin/containerd');
    assert.equal(f.id, 'abc');
    assert.equal(f.debug, true);
    assert.equal(f.action, 'start');
    assert.equal(parseShimFlags(['-id', 'x', '-bundle', '/b', 'delete']).bundle, '/b');
    assert.equal(parseShimFlags(['-v']).version, true);
    assert.equal(parseShimFlags(['-debug=false', '-id', 'x']).debug, false);
  });

  it('refuses unknown flags and a flag without its value', () => {
    assert.throws(() => parseShimFlags(['-bogus', 'x', 'start']), (e: unknown) => e instanceof ShimUsageError && /-bogus/.test((e as Error).message));
    assert.throws(() => parseShimFlags(['-id']), /flag needs an argument: -id/);
  });

  it("names the socket as containerd's runc shim does: sha256 of address/namespace/group under /run/containerd/s", () => {
    const want = createHash('sha256').update('/run/containerd/containerd.sock/default/sb1').digest('hex');
    assert.equal(socketAddress('/run/containerd/containerd.sock', 'default', 'sb1'), `unix:///run/containerd/s/${want}`);
    assert.notEqual(socketAddress('/a', 'ns', 'g1'), socketAddress('/a', 'ns', 'g2'));
  });
});

describe('shim runtime options', () => {
  it('reads containerd.runc.v1.Options (root, systemd cgroups, shim cgroup)', () => {
    const any = anyOf('containerd.runc.v1.Options', { root: '/run/x', systemdCgroup: true, shimCgroup: '/shims' });
    const o = runtimeOptions(encode('google.protobuf.Any', any));
    assert.deepEqual(o, { root: '/run/x', systemdCgroup: true, shimCgroup: '/shims' });
  });

  it("reads CRI's runtimeoptions.v1.Options: the config file it names", () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-shimcfg-'));
    try {
      const path = join(dir, 'moat.toml');
      writeFileSync(path, 'isolation = "sentry"\nsentry_level = "strict"\nallow_egress = ["10.0.0.0/8:443", "example.org:80"]\nsystemd_cgroup = true\n');
      const any = anyOf('runtimeoptions.v1.Options', { typeUrl: 'moat', configPath: path });
      assert.deepEqual(runtimeOptions(encode('google.protobuf.Any', any)), {
        isolation: 'sentry',
        sentryLevel: 'strict',
        allowEgress: ['10.0.0.0/8:443', 'example.org:80'],
        systemdCgroup: true,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no options: defaults; foreign option types: a clear error', () => {
    assert.deepEqual(runtimeOptions(Buffer.alloc(0)), {});
    const foreign = encode('google.protobuf.Any', { typeUrl: 'io.kata.Options', value: Buffer.from([8, 1]) });
    assert.throws(() => runtimeOptions(foreign), /io\.kata\.Options are not Moat's/);
  });

  it('config files: TOML or JSON; unknown keys, wrong types and bad syntax are errors naming the file', () => {
    assert.deepEqual(parseConfig('{"isolation": "microvm", "vmm": "qemu", "vmm_accel": "tcg"}', 'c.json'), { isolation: 'microvm', vmm: 'qemu', vmmAccel: 'tcg' });
    assert.deepEqual(parseConfig('# only a comment\n', 'c.toml'), {});
    assert.throws(() => parseConfig('isolaton = "sentry"', 'c.toml'), (e: unknown) => e instanceof UsageError && /c\.toml: unknown key isolaton/.test((e as Error).message));
    assert.throws(() => parseConfig('isolation = 3', 'c.toml'), /c\.toml: isolation: expected a string/);
    assert.throws(() => parseConfig('allow_egress = "10.0.0.1"', 'c.toml'), /allow_egress: expected a list of strings/);
    assert.throws(() => parseConfig('systemd_cgroup = "yes"', 'c.toml'), /systemd_cgroup: expected true or false/);
    assert.throws(() => parseConfig('isolation = ', 'c.toml'), /^UsageError: c\.toml: /);
  });
});

describe('shim delete fast path', () => {
  it("answers a DeleteResponse containerd decodes: exit status 137 and the time, no pid", async () => {
    const { killedDeleteResponse } = await import('../../src/shim/start.js');
    const { decode } = await import('../../src/shim/proto.js');
    const at = new Date('2026-11-29T02:34:56.789Z');
    const r = decode<{ pid: number; exitStatus: number; exitedAt: { seconds: number; nanos: number } }>('containerd.task.v2.DeleteResponse', killedDeleteResponse(at));
    assert.equal(r.pid, 0);
    assert.equal(r.exitStatus, 137);
    assert.equal(r.exitedAt.seconds, Math.floor(at.getTime() / 1000));
    assert.equal(r.exitedAt.nanos, 789_000_000);
  });
});
