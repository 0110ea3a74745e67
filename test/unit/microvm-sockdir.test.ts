/**
 * Where a VM's unix sockets live (src/backends/microvm/sockdir.ts): in its state directory when
 * the names fit a socket address, else in a short private directory, which the VMM's jail binds
 * writable. Engines' state directories (dockerd's, containerd's runc shim's) are the long case.
 * And what else vmmSpec binds into the VMM's jail: the spec's bind mounts QEMU shares.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { vmmSpec } from '../../src/backends/microvm/index.js';
import { makeSocketDir, removeSocketDir, socketDir } from '../../src/backends/microvm/sockdir.js';

const ID = 'a'.repeat(64);
const longDir = `/var/run/docker/runtime-runc/moby/${ID}`;

describe('socketDir', () => {
  test('keeps a short state directory', () => {
    assert.equal(socketDir('/run/moat/ctr-1'), '/run/moat/ctr-1');
  });

  test("moves an engine's long state directory's sockets to a short directory where every name fits", () => {
    const dir = socketDir(longDir);
    assert.notEqual(dir, longDir);
    assert.ok(Buffer.byteLength(join(dir, 'fc-vsock.sock_1024')) <= 107, `${dir} leaves no room`);
    assert.equal(socketDir(longDir), dir, 'not the same directory each time');
    assert.notEqual(socketDir(`/var/run/docker/runtime-runc/moby/${'b'.repeat(64)}`), dir, 'two containers share one');
  });

  test('makes the short directory private (0700) and removes it', { skip: process.geteuid?.() !== 0 ? 'needs root (/run/moat-sock)' : false }, () => {
    const state = `/run/moat-test-state-${process.pid}/${'c'.repeat(80)}`;
    const dir = makeSocketDir(state);
    try {
      assert.equal(statSync(dir).mode & 0o777, 0o700);
    } finally {
      removeSocketDir(state);
    }
    assert.equal(existsSync(dir), false);
  });
});

describe('vmmSpec', () => {
  const launch = { argv: ['/usr/bin/qemu-system-x86_64'], paths: [], devices: [] };
  const binds = (vmDir: string) => (vmmSpec(launch, '/run/moat/vmm-root', vmDir, 256).mounts ?? []).filter((m) => m.type === 'bind').map((m) => [m.destination, m.options?.includes('rw') === true]);

  test("binds the short socket directory writable into the VMM's jail, beside the state directory", () => {
    const got = binds(longDir);
    assert.deepEqual(got.find(([d]) => d === socketDir(longDir)), [socketDir(longDir), true]);
    assert.deepEqual(got.find(([d]) => d === longDir), [longDir, true]);
  });

  test('binds nothing more for a short state directory', () => {
    assert.deepEqual(binds('/run/moat/ctr-1').filter(([d]) => String(d).startsWith('/run/')), [['/run/moat/ctr-1', true]]);
  });

  test("binds the spec's bind mounts where QEMU shares them: a file alone, never its directory; read-only where the mount is", () => {
    const spec = vmmSpec(launch, '/run/moat/vmm-root', '/run/moat/ctr-1', 256, undefined, [
      { source: '/srv/data', jailPath: '/.moat-binds/0', guest: { readonly: false } },
      { source: '/var/lib/docker/containers/c1/hosts', jailPath: '/.moat-binds/1/file', guest: { readonly: true } },
    ]);
    const got = (spec.mounts ?? []).filter((m) => m.destination.startsWith('/.moat-binds')).map((m) => [m.destination, m.source, m.options?.includes('ro')]);
    assert.deepEqual(got, [
      ['/.moat-binds/0', '/srv/data', false],
      ['/.moat-binds/1/file', '/var/lib/docker/containers/c1/hosts', true],
    ]);
    assert.ok(!(spec.mounts ?? []).some((m) => m.source === '/var/lib/docker/containers/c1'), "the file's host directory is not in the jail");
    // QEMU holds no capability but those a passthrough bind needs
    assert.deepEqual(spec.process?.capabilities?.effective, []);
    const pass = vmmSpec(launch, '/run/moat/vmm-root', '/run/moat/ctr-1', 256, undefined, [{ source: '/srv/data', jailPath: '/.moat-binds/0', guest: { readonly: false }, passthrough: true }]);
    for (const set of ['bounding', 'effective', 'permitted'] as const) assert.deepEqual(pass.process?.capabilities?.[set], ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID']);
    assert.deepEqual(pass.process?.capabilities?.ambient, []);
  });
});
