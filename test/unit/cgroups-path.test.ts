/**
 * Cgroup path computation (pure functions): layout detection from mountinfo, /proc/self/cgroup
 * parsing, runc's cgroupfs rules for absolute, relative and empty cgroupsPath, and the systemd
 * `slice:prefix:name` form mapped onto cgroupfs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  cleanPath,
  computeCgroupPaths,
  detectLayout,
  expandSlice,
  parseCgroupMounts,
  parseProcCgroup,
  systemdCgroupPath,
} from '../../src/cgroups/index.js';
import { ConfigError, HostError } from '../../src/errors.js';

/** This machine's layout: v1 hierarchies plus cgroup2 at /sys/fs/cgroup/unified. */
const HYBRID = `\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

/** A classic systemd v1 host: cpu and cpuacct co-mounted, no cgroup2. */
const V1 = `\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,devices
33 25 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
`;

/** A unified host. */
const V2 = `\
26 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe('detectLayout', () => {
  it('tells v1, v2 and hybrid apart', () => {
    assert.equal(detectLayout(V1), 'v1');
    assert.equal(detectLayout(V2), 'v2');
    assert.equal(detectLayout(HYBRID), 'hybrid');
  });

  it('takes cgroup2 mounted alone somewhere else as v2, and throws HostError without any cgroup fs', () => {
    assert.equal(detectLayout('40 1 0:38 / /cg2 rw - cgroup2 cgroup2 rw\n'), 'v2');
    assert.throws(() => detectLayout('22 1 0:21 / /sys rw - sysfs sysfs rw\n'), HostError);
  });

  it('classifies this machine (a real /proc/self/mountinfo)', () => {
    assert.ok(['v1', 'v2', 'hybrid'].includes(detectLayout()));
  });
});

describe('parseCgroupMounts', () => {
  it('maps each v1 controller, co-mounted ones to the same mount, and finds the cgroup2 mount', () => {
    const v1 = parseCgroupMounts(V1);
    assert.equal(v1.v1.get('cpu')?.mountpoint, '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(v1.v1.get('cpuacct')?.mountpoint, '/sys/fs/cgroup/cpu,cpuacct');
    assert.equal(v1.v1.get('net_prio')?.mountpoint, '/sys/fs/cgroup/net_cls,net_prio');
    assert.equal(v1.v1.get('name=systemd')?.mountpoint, '/sys/fs/cgroup/systemd');
    assert.equal(v1.v2, undefined);
    const hybrid = parseCgroupMounts(HYBRID);
    assert.equal(hybrid.v2?.mountpoint, '/sys/fs/cgroup/unified');
    assert.equal(hybrid.v1.get('hugetlb'), undefined);
    assert.deepEqual([...hybrid.v1.keys()].sort(), ['blkio', 'cpu', 'cpuacct', 'cpuset', 'devices', 'freezer', 'memory', 'name=systemd', 'pids']);
  });

  it('unescapes octal escapes in mount points', () => {
    const m = parseCgroupMounts('41 31 0:38 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n');
    assert.equal(m.v2?.mountpoint, '/mnt/my cg');
  });
});

describe('parseProcCgroup', () => {
  it('splits co-mounted controllers and keys the v2 line by ""', () => {
    const own = parseProcCgroup('4:memory:/process_api/abc\n3:cpu,cpuacct:/x\n1:name=systemd:/init.scope\n0::/user.slice/s.scope\n');
    assert.equal(own.get('memory'), '/process_api/abc');
    assert.equal(own.get('cpu'), '/x');
    assert.equal(own.get('cpuacct'), '/x');
    assert.equal(own.get('name=systemd'), '/init.scope');
    assert.equal(own.get(''), '/user.slice/s.scope');
  });
});

describe('cleanPath', () => {
  it('keeps .. from climbing above the start, like runc CleanPath', () => {
    assert.equal(cleanPath('../../etc'), 'etc');
    assert.equal(cleanPath('a/../../b'), 'b');
    assert.equal(cleanPath('/a/../../b'), '/b');
    assert.equal(cleanPath('a//b/'), 'a/b');
    assert.equal(cleanPath('/'), '/');
    assert.equal(cleanPath('..'), '');
    assert.equal(cleanPath(''), '');
  });
});

describe('expandSlice', () => {
  it('expands dashes into nested slices', () => {
    assert.equal(expandSlice('system.slice'), '/system.slice');
    assert.equal(expandSlice('a-b.slice'), '/a.slice/a-b.slice');
    assert.equal(expandSlice('a-b-c.slice'), '/a.slice/a-b.slice/a-b-c.slice');
    assert.equal(expandSlice('-.slice'), '/');
  });

  it('rejects names systemd rejects', () => {
    for (const bad of ['a--b.slice', '-a.slice', 'a-.slice', 'foo', '.slice', 'a/b.slice', 'foo.scope']) {
      assert.throws(() => expandSlice(bad), ConfigError, bad);
    }
  });
});

describe('systemdCgroupPath', () => {
  it('maps slice:prefix:name to <slice path>/<prefix>-<name>.scope', () => {
    assert.equal(systemdCgroupPath('system.slice:docker:abc', 'id'), '/system.slice/docker-abc.scope');
    assert.equal(systemdCgroupPath('a-b.slice:pre:n1', 'id'), '/a.slice/a-b.slice/pre-n1.scope');
    assert.equal(systemdCgroupPath('user-1000.slice:crio:x', 'id'), '/user.slice/user-1000.slice/crio-x.scope');
  });

  it('uses a name ending in .slice as is, system.slice for an empty slice, and moat-<id> for an empty path', () => {
    assert.equal(systemdCgroupPath('machine.slice:p:my.slice', 'id'), '/machine.slice/my.slice');
    assert.equal(systemdCgroupPath(':p:n', 'id'), '/system.slice/p-n.scope');
    assert.equal(systemdCgroupPath('', 'c1'), '/system.slice/moat-c1.scope');
    assert.equal(systemdCgroupPath(undefined, 'c1'), '/system.slice/moat-c1.scope');
  });

  it('rejects paths not of the form slice:prefix:name, and unit names with slashes', () => {
    for (const bad of ['/foo/bar', 'a:b', 'a.slice:b:c:d', 'system.slice:p:../x', 'system.slice:p:', 'bad:p:n']) {
      assert.throws(
        () => systemdCgroupPath(bad, 'id'),
        (err: unknown) => err instanceof ConfigError && err.path === 'linux.cgroupsPath',
        bad,
      );
    }
  });
});

describe('computeCgroupPaths', () => {
  const hybrid = parseCgroupMounts(HYBRID);
  const own = parseProcCgroup(
    '9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/process_api/b63\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n',
  );

  it('puts an absolute path under each hierarchy root, and under the cgroup2 mount as ""', () => {
    const p = computeCgroupPaths({ id: 'c1', cgroupsPath: '/moat/c1', systemd: false }, hybrid, own);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/moat/c1');
    assert.equal(p.cpu, '/sys/fs/cgroup/cpu/moat/c1');
    assert.equal(p['name=systemd'], '/sys/fs/cgroup/systemd/moat/c1');
    assert.equal(p[''], '/sys/fs/cgroup/unified/moat/c1');
    assert.equal(p.hugetlb, undefined);
    assert.equal(Object.keys(p).length, 10);
  });

  it('puts a relative path under the own v1 cgroup of each hierarchy (runc 1.1 GetOwnCgroupPath)', () => {
    const p = computeCgroupPaths({ id: 'c1', cgroupsPath: 'moat/c1', systemd: false }, hybrid, own);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/process_api/b63/moat/c1');
    assert.equal(p.pids, '/sys/fs/cgroup/pids/moat/c1');
    assert.equal(p[''], '/sys/fs/cgroup/unified/moat/c1');
  });

  it('uses the container id, relative, for an empty path (runc default for cgroupfs)', () => {
    const p = computeCgroupPaths({ id: 'c1', cgroupsPath: '', systemd: false }, hybrid, own);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/process_api/b63/c1');
    assert.equal(p.devices, '/sys/fs/cgroup/devices/c1');
    assert.equal(computeCgroupPaths({ id: 'c1', systemd: false }, hybrid, own).devices, '/sys/fs/cgroup/devices/c1');
  });

  it('keeps a relative path with .. inside the own cgroup', () => {
    const p = computeCgroupPaths({ id: 'c1', cgroupsPath: '../../escape', systemd: false }, hybrid, own);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/process_api/b63/escape');
  });

  it('on v2 puts a relative path under the parent of the own cgroup (runc fs2 defaultDirPath)', () => {
    const v2 = parseCgroupMounts(V2);
    const ownV2 = parseProcCgroup('0::/user.slice/user-1000.slice/session-1.scope\n');
    assert.deepEqual(computeCgroupPaths({ id: 'c1', systemd: false }, v2, ownV2), {
      '': '/sys/fs/cgroup/user.slice/user-1000.slice/c1',
    });
    assert.deepEqual(computeCgroupPaths({ id: 'c1', cgroupsPath: '/a/b', systemd: false }, v2, ownV2), { '': '/sys/fs/cgroup/a/b' });
  });

  it('maps the systemd form onto every hierarchy', () => {
    const p = computeCgroupPaths({ id: 'c1', cgroupsPath: 'moat-test.slice:pfx:c1', systemd: true }, hybrid, own);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/moat.slice/moat-test.slice/pfx-c1.scope');
    assert.equal(p[''], '/sys/fs/cgroup/unified/moat.slice/moat-test.slice/pfx-c1.scope');
    const d = computeCgroupPaths({ id: 'c1', systemd: true }, hybrid, own);
    assert.equal(d.cpu, '/sys/fs/cgroup/cpu/system.slice/moat-c1.scope');
  });

  it('gives co-mounted controllers the same directory and honours a bind-mounted hierarchy root', () => {
    const v1 = parseCgroupMounts(V1.replace('/ /sys/fs/cgroup/memory', '/docker/abc /sys/fs/cgroup/memory'));
    const ownV1 = parseProcCgroup('4:memory:/docker/abc/sub\n3:cpu,cpuacct:/u\n2:devices:/\n1:name=systemd:/\n');
    const p = computeCgroupPaths({ id: 'c1', systemd: false }, v1, ownV1);
    assert.equal(p.cpu, '/sys/fs/cgroup/cpu,cpuacct/u/c1');
    assert.equal(p.cpuacct, p.cpu);
    assert.equal(p.memory, '/sys/fs/cgroup/memory/sub/c1');
    assert.equal(p.net_cls, '/sys/fs/cgroup/net_cls,net_prio/c1');
  });

  it('rejects a path that names the hierarchy root', () => {
    assert.throws(() => computeCgroupPaths({ id: 'c1', cgroupsPath: '/', systemd: false }, hybrid, own), ConfigError);
    assert.throws(() => computeCgroupPaths({ id: '..', cgroupsPath: '', systemd: false }, hybrid, own), ConfigError);
  });
});
