import assert from 'node:assert/strict';
import { test } from 'node:test';

import { detectCgroupLayout, formatDoctor, runDoctor } from '../../src/doctor.js';

test('runDoctor reports every namespace type and the host features Moat depends on', async () => {
  const checks = await runDoctor();
  const names = checks.map((c) => c.name);
  for (const ns of ['user', 'pid', 'mount', 'network', 'uts', 'ipc', 'cgroup', 'time']) {
    assert.ok(names.includes(`${ns} namespaces`), `missing check for ${ns} namespaces`);
  }
  for (const name of ['cgroup layout', 'seccomp', 'overlayfs', '/dev/kvm', 'qemu', 'runc', 'nsenter (checkpoints)', 'ss (checkpoints)', 'tar (checkpoints)']) {
    assert.ok(names.includes(name), `missing check ${name}`);
  }
  for (const c of checks) {
    assert.equal(typeof c.ok, 'boolean');
    assert.ok(c.detail.length > 0, `${c.name} has no detail`);
    assert.ok(!c.detail.includes('\n'), `${c.name} detail spans lines`);
  }
  const layout = checks.find((c) => c.name === 'cgroup layout');
  assert.match(layout?.detail ?? '', /^(v1|v2|hybrid|no cgroup)/);

  const lines = formatDoctor(checks).split('\n');
  assert.equal(lines.length, checks.length);
  lines.forEach((line, i) => {
    const c = checks[i];
    assert.ok(c !== undefined);
    assert.ok(line.startsWith(c.ok ? 'ok    ' : 'no    '), line);
    assert.ok(line.includes(`${c.name}: ${c.detail}`), line);
  });
});

const hybrid = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate',
].join('\n');

test('detectCgroupLayout tells v2, v1 and hybrid apart', () => {
  const none = (): string | undefined => undefined;
  const h = detectCgroupLayout(hybrid, (f) => (f === '/sys/fs/cgroup/unified/cgroup.controllers' ? '\n' : undefined));
  assert.equal(h.layout, 'hybrid');
  assert.deepEqual(h.v1Controllers, ['cpu', 'cpuacct', 'memory', 'name=systemd']);
  assert.equal(h.v2Mount, '/sys/fs/cgroup/unified');

  const v1 = detectCgroupLayout(hybrid.split('\n').slice(0, 4).join('\n'), none);
  assert.equal(v1.layout, 'v1');

  const v2 = detectCgroupLayout('29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate', (f) =>
    f === '/sys/fs/cgroup/cgroup.controllers' ? 'cpuset cpu io memory pids\n' : undefined,
  );
  assert.equal(v2.layout, 'v2');
  assert.deepEqual(v2.v2Controllers, ['cpuset', 'cpu', 'io', 'memory', 'pids']);
  assert.deepEqual(v2.v1Controllers, []);

  assert.equal(detectCgroupLayout('', none).layout, 'none');
});
