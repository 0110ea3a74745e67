import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { defaultSpec } from '../../src/spec/default.js';
import { CAPABILITIES, NAMESPACE_TYPES, RLIM_INFINITY, RLIMITS, rlimitValue } from '../../src/spec/schema.js';
import { formatPath, loadSpec, parseProcess, parseSpec } from '../../src/spec/validate.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** A valid config that touches most sections; each invalid case edits a fresh copy. */
function baseConfig(): JsonObject {
  return {
    ociVersion: '1.2.0',
    root: { path: 'rootfs', readonly: true },
    hostname: 'box',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
    ],
    process: {
      terminal: false,
      user: { uid: 0, gid: 0, additionalGids: [10] },
      args: ['sh', '-c', 'true'],
      env: ['PATH=/usr/bin:/bin', 'TERM=xterm'],
      cwd: '/',
      capabilities: { bounding: ['CAP_KILL', 'CAP_CHOWN'], effective: ['CAP_KILL'] },
      rlimits: [{ type: 'RLIMIT_NOFILE', soft: 1024, hard: 1024 }],
      noNewPrivileges: true,
      oomScoreAdj: 0,
    },
    hooks: { prestart: [{ path: '/usr/bin/true', args: ['true'], timeout: 5 }] },
    annotations: { 'org.example.key': 'value' },
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      devices: [{ type: 'c', path: '/dev/fuse', major: 10, minor: 229, fileMode: 438 }],
      resources: { devices: [{ allow: false, access: 'rwm' }], memory: { limit: 1048576 } },
      sysctl: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '4096' },
      rootfsPropagation: 'rprivate',
      maskedPaths: ['/proc/kcore'],
      readonlyPaths: ['/proc/sys'],
      seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mount'], action: 'SCMP_ACT_ERRNO' }] },
    },
  };
}

const USER_NS_MAPPED = {
  namespaces: [{ type: 'pid' }, { type: 'mount' }, { type: 'user' }],
  uidMappings: [{ containerID: 0, hostID: 1000, size: 1 }],
  gidMappings: [{ containerID: 0, hostID: 1000, size: 1 }],
};

type Key = string | number;

/** Sets (or, for `undefined`, deletes) the value at `path` inside `obj`, creating nothing. */
function edit(obj: JsonObject, path: Key[], value: Json | undefined): void {
  let node: Json = obj;
  for (const key of path.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(node)
      ? node[Number(key)]
      : typeof node === 'object' && node !== null
        ? node[String(key)]
        : undefined;
    if (next === undefined) throw new Error(`test bug: no ${String(key)} in path ${path.join('.')}`);
    node = next;
  }
  const last = path[path.length - 1];
  if (last === undefined || typeof node !== 'object' || node === null) throw new Error('test bug: bad path');
  if (Array.isArray(node)) {
    if (value === undefined) node.splice(Number(last), 1);
    else node[Number(last)] = value;
  } else if (value === undefined) {
    delete node[String(last)];
  } else {
    node[String(last)] = value;
  }
}

/** Splits `a.b.0.c` into keys, numbers for array indices. */
function keys(path: string): Key[] {
  return path.split('.').map((k) => (/^\d+$/.test(k) ? Number(k) : k));
}

interface InvalidCase {
  name: string;
  /** Edits to apply to the base config: [dotted path or key list, new value or undefined to delete]. */
  edits: [string | Key[], Json | undefined][];
  /** The whole input instead of edits, for inputs that are not a config-shaped object. */
  input?: unknown;
  path: string;
  message?: RegExp;
}

const invalidCases: InvalidCase[] = [
  { name: 'process.terminal of the wrong type', edits: [['process.terminal', 'yes']], path: 'process.terminal', message: /expected a boolean, got string/ },
  { name: 'unknown namespace type', edits: [['linux.namespaces.0.type', 'foo']], path: 'linux.namespaces[0].type', message: /unknown namespace type "foo" \(expected one of pid, network/ },
  { name: 'relative mount destination', edits: [['mounts.0.destination', 'proc']], path: 'mounts[0].destination', message: /expected an absolute path, got "proc"/ },
  { name: 'relative process.cwd', edits: [['process.cwd', 'tmp']], path: 'process.cwd', message: /absolute path/ },
  { name: 'malformed rlimit type', edits: [['process.rlimits.0.type', 'NOFILE']], path: 'process.rlimits[0].type', message: /unknown rlimit type "NOFILE"/ },
  { name: 'soft limit above hard limit', edits: [['process.rlimits.0', { type: 'RLIMIT_CORE', soft: 10, hard: 5 }]], path: 'process.rlimits[0].soft', message: /soft limit 10 is above hard limit 5/ },
  { name: 'negative rlimit', edits: [['process.rlimits.0.hard', -1]], path: 'process.rlimits[0].hard', message: /non-negative integer, got -1/ },
  { name: 'duplicate rlimit type', edits: [['process.rlimits.1', { type: 'RLIMIT_NOFILE', soft: 1, hard: 1 }]], path: 'process.rlimits[1].type', message: /duplicate/ },
  { name: 'negative uid', edits: [['process.user.uid', -1]], path: 'process.user.uid', message: />= 0, got -1/ },
  { name: 'non-integer gid', edits: [['process.user.gid', 1.5]], path: 'process.user.gid', message: /expected an integer, got 1.5/ },
  { name: 'uid given as a string', edits: [['process.user.uid', '0']], path: 'process.user.uid', message: /expected an integer, got string/ },
  { name: 'additional gid above uint32', edits: [['process.user.additionalGids.0', 2 ** 32]], path: 'process.user.additionalGids[0]' },
  { name: 'duplicate namespace', edits: [['linux.namespaces.5', { type: 'pid' }]], path: 'linux.namespaces[5].type', message: /duplicate namespace type "pid"/ },
  { name: 'new user namespace without mappings', edits: [['linux.namespaces.5', { type: 'user' }]], path: 'linux.uidMappings', message: /needs at least one uid mapping/ },
  { name: 'new user namespace without gid mappings', edits: [['linux.namespaces.5', { type: 'user' }], ['linux.uidMappings', [{ containerID: 0, hostID: 1000, size: 1 }]]], path: 'linux.gidMappings' },
  { name: 'uid mappings without user namespace', edits: [['linux.uidMappings', [{ containerID: 0, hostID: 1000, size: 1 }]]], path: 'linux.uidMappings', message: /no user namespace/ },
  { name: 'gid mappings without user namespace', edits: [['linux.gidMappings', [{ containerID: 0, hostID: 1000, size: 1 }]]], path: 'linux.gidMappings' },
  { name: 'mapping size 0', edits: [['linux', { ...USER_NS_MAPPED, uidMappings: [{ containerID: 0, hostID: 1000, size: 0 }] }]], path: 'linux.uidMappings[0].size', message: />= 1, got 0/ },
  { name: 'hostname without uts namespace', edits: [['linux.namespaces.3', undefined]], path: 'hostname', message: /uts namespace/ },
  { name: 'domainname without uts namespace', edits: [['hostname', undefined], ['domainname', 'example.org'], ['linux.namespaces.3', undefined]], path: 'domainname' },
  { name: 'hostname of the wrong type', edits: [['hostname', 7]], path: 'hostname', message: /expected a string, got 7/ },
  { name: 'net sysctl without network namespace', edits: [['linux.namespaces.1', undefined]], path: 'linux.sysctl["net.ipv4.ip_forward"]', message: /needs a network namespace/ },
  { name: 'ipc sysctl without ipc namespace', edits: [['linux.namespaces.2', undefined]], path: 'linux.sysctl["kernel.shmmax"]', message: /needs a ipc namespace/ },
  { name: 'sysctl that is not namespaced', edits: [[['linux', 'sysctl', 'vm.swappiness'], '10']], path: 'linux.sysctl["vm.swappiness"]', message: /not namespaced/ },
  { name: 'sysctl name with a slash', edits: [[['linux', 'sysctl', 'net/ipv4/ip_forward'], '1']], path: 'linux.sysctl["net/ipv4/ip_forward"]' },
  { name: 'sysctl name with ..', edits: [[['linux', 'sysctl', 'net..ipv4'], '1']], path: 'linux.sysctl["net..ipv4"]' },
  { name: 'env entry without =', edits: [['process.env.1', 'TERM']], path: 'process.env[1]', message: /expected "KEY=value", got "TERM"/ },
  { name: 'relative hook path', edits: [['hooks.prestart.0.path', 'bin/true']], path: 'hooks.prestart[0].path' },
  { name: 'hook timeout 0', edits: [['hooks.prestart.0.timeout', 0]], path: 'hooks.prestart[0].timeout', message: />= 1, got 0/ },
  { name: 'hook without path', edits: [['hooks.poststop', [{ args: ['x'] }]]], path: 'hooks.poststop[0].path', message: /required field is missing/ },
  { name: 'invalid capability name', edits: [['process.capabilities.bounding.1', 'CAP_FLY']], path: 'process.capabilities.bounding[1]', message: /unknown capability "CAP_FLY"/ },
  { name: 'empty args', edits: [['process.args', []]], path: 'process.args', message: /must not be empty/ },
  { name: 'missing args', edits: [['process.args', undefined]], path: 'process.args', message: /required field is missing/ },
  { name: 'device type "x"', edits: [['linux.devices.0.type', 'x']], path: 'linux.devices[0].type', message: /unknown device type "x"/ },
  { name: 'device path outside /dev', edits: [['linux.devices.0.path', '/etc/passwd']], path: 'linux.devices[0].path', message: /under \/dev/ },
  { name: 'device path escaping /dev', edits: [['linux.devices.0.path', '/dev/../etc/passwd']], path: 'linux.devices[0].path' },
  { name: 'char device without major', edits: [['linux.devices.0.major', undefined]], path: 'linux.devices[0].major' },
  { name: 'oomScoreAdj 5000', edits: [['process.oomScoreAdj', 5000]], path: 'process.oomScoreAdj', message: /<= 1000, got 5000/ },
  { name: 'rootfsPropagation "weird"', edits: [['linux.rootfsPropagation', 'weird']], path: 'linux.rootfsPropagation', message: /unknown rootfs propagation "weird"/ },
  { name: 'missing ociVersion', edits: [['ociVersion', undefined]], path: 'ociVersion', message: /required field is missing/ },
  { name: 'missing root', edits: [['root', undefined]], path: 'root' },
  { name: 'empty root.path', edits: [['root.path', '']], path: 'root.path', message: /must not be empty/ },
  { name: 'relative namespace path', edits: [['linux.namespaces.1.path', 'proc/1/ns/net']], path: 'linux.namespaces[1].path' },
  { name: 'relative maskedPaths entry', edits: [['linux.maskedPaths.0', 'proc/kcore']], path: 'linux.maskedPaths[0]' },
  { name: 'relative readonlyPaths entry', edits: [['linux.readonlyPaths.0', 'proc/sys']], path: 'linux.readonlyPaths[0]' },
  { name: 'mount option that is not a string', edits: [['mounts.1.options.0', 1]], path: 'mounts[1].options[0]' },
  { name: 'annotation value that is not a string', edits: [[['annotations', 'org.example.key'], 1]], path: 'annotations["org.example.key"]' },
  { name: 'device rule without allow', edits: [['linux.resources.devices.0.allow', undefined]], path: 'linux.resources.devices[0].allow' },
  { name: 'seccomp syscall without names', edits: [['linux.seccomp.syscalls.0.names', undefined]], path: 'linux.seccomp.syscalls[0].names' },
  { name: 'seccomp without defaultAction', edits: [['linux.seccomp.defaultAction', undefined]], path: 'linux.seccomp.defaultAction' },
  { name: 'config that is an array', edits: [], input: [], path: '', message: /expected an object, got array/ },
];

/** Runs `fn` and returns the ConfigError it throws, failing the test if it throws anything else. */
function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError, but nothing was thrown');
}

describe('parseSpec: valid configs', () => {
  it('accepts the base test config', () => {
    const spec = parseSpec(baseConfig());
    assert.equal(spec.process?.cwd, '/');
    assert.equal(spec.linux?.namespaces?.length, 5);
  });

  it('accepts a minimal config', () => {
    const spec = parseSpec({ ociVersion: '1.2.0', root: { path: 'rootfs' } });
    assert.equal(spec.root.path, 'rootfs');
    assert.equal(spec.process, undefined);
  });

  it('keeps unknown keys at every level', () => {
    const config = baseConfig();
    edit(config, ['futureField'], { a: 1 });
    edit(config, ['vm'], { hypervisor: { path: '/usr/bin/qemu' } });
    edit(config, ['windows'], { layerFolders: ['C:\\x'] });
    edit(config, keys('process.vendorExtension'), true);
    edit(config, keys('linux.somethingNew'), [1, 2]);
    edit(config, keys('mounts.0.extra'), 'x');
    const spec = parseSpec(config);
    assert.deepEqual(spec['futureField'], { a: 1 });
    assert.deepEqual(spec['vm'], { hypervisor: { path: '/usr/bin/qemu' } });
    assert.equal(spec.process?.['vendorExtension'], true);
    assert.deepEqual(spec.linux?.['somethingNew'], [1, 2]);
    assert.equal(spec.mounts?.[0]?.['extra'], 'x');
    assert.deepEqual(spec.linux?.resources?.['memory'], { limit: 1048576 });
  });

  it('defaults a missing process.user to uid 0, gid 0', () => {
    const config = baseConfig();
    edit(config, keys('process.user'), undefined);
    assert.deepEqual(parseSpec(config).process?.user, { uid: 0, gid: 0 });
  });

  it('accepts a new user namespace with mappings, and a joined one without', () => {
    const mapped = baseConfig();
    edit(mapped, ['linux'], USER_NS_MAPPED);
    edit(mapped, ['hostname'], undefined);
    assert.equal(parseSpec(mapped).linux?.uidMappings?.[0]?.hostID, 1000);

    const joined = baseConfig();
    edit(joined, ['hostname'], undefined);
    edit(joined, ['linux'], { namespaces: [{ type: 'user', path: '/proc/42/ns/user' }] });
    parseSpec(joined);
  });

  it('accepts rlimits up to 2^64-1 and treats them as unlimited', () => {
    const config = baseConfig();
    edit(config, keys('process.rlimits.0'), { type: 'RLIMIT_CORE', soft: 18446744073709551615, hard: 18446744073709551615 });
    const limit = parseSpec(config).process?.rlimits?.[0];
    assert.ok(limit);
    assert.equal(rlimitValue(limit.hard), RLIM_INFINITY);
    assert.equal(rlimitValue(1024), 1024n);
  });

  it('exports the constant tables', () => {
    assert.equal(Object.keys(CAPABILITIES).length, 41);
    assert.equal(CAPABILITIES.CAP_CHECKPOINT_RESTORE, 40);
    assert.equal(CAPABILITIES.CAP_SYS_ADMIN, 21);
    assert.equal(Object.keys(RLIMITS).length, 16);
    assert.equal(RLIMITS.RLIMIT_NOFILE, 7);
    assert.deepEqual([...NAMESPACE_TYPES].sort(), ['cgroup', 'ipc', 'mount', 'network', 'pid', 'time', 'user', 'uts']);
  });
});

describe('parseSpec: invalid configs', () => {
  for (const c of invalidCases) {
    it(`${c.name} -> ${c.path || '(root)'}`, () => {
      let input: unknown = c.input;
      if (input === undefined) {
        const config = baseConfig();
        for (const [path, value] of c.edits) edit(config, typeof path === 'string' ? keys(path) : path, value);
        input = config;
      }
      const err = configErrorOf(() => parseSpec(input));
      assert.equal(err.path, c.path, `message was: ${err.message}`);
      if (c.message) assert.match(err.problem, c.message);
    });
  }

  it('has at least 25 distinct cases', () => {
    assert.ok(invalidCases.length >= 25);
    assert.equal(new Set(invalidCases.map((c) => c.name)).size, invalidCases.length);
  });

  it('puts the path and the problem in the error message', () => {
    const config = baseConfig();
    edit(config, keys('process.cwd'), 'tmp');
    const err = configErrorOf(() => parseSpec(config));
    assert.equal(err.message, 'invalid config: process.cwd: expected an absolute path, got "tmp"');
  });
});

describe('parseProcess', () => {
  it('accepts a process spec and reports paths from its root', () => {
    const ok = parseProcess({ args: ['ls'], cwd: '/tmp', user: { uid: 1, gid: 2 } });
    assert.deepEqual(ok.args, ['ls']);
    assert.equal(configErrorOf(() => parseProcess({ args: [], cwd: '/' })).path, 'args');
    assert.equal(configErrorOf(() => parseProcess({ args: ['ls'], cwd: 'x' })).path, 'cwd');
    assert.equal(configErrorOf(() => parseProcess({ args: ['ls'], cwd: '/', env: ['A'] })).path, 'env[0]');
  });
});

describe('formatPath', () => {
  it('formats keys, indices and dotted record keys', () => {
    assert.equal(formatPath(['process', 'rlimits', 0, 'type']), 'process.rlimits[0].type');
    assert.equal(formatPath(['linux', 'sysctl', 'net.ipv4.ip_forward']), 'linux.sysctl["net.ipv4.ip_forward"]');
    assert.equal(formatPath([]), '');
  });
});

describe('defaultSpec', () => {
  it('parses and round-trips unchanged', () => {
    const spec = defaultSpec({});
    assert.deepEqual(parseSpec(JSON.parse(JSON.stringify(spec))), spec);
    assert.equal(spec.ociVersion, '1.2.0');
    assert.deepEqual(spec.process?.args, ['sh']);
    assert.deepEqual(spec.process?.capabilities?.bounding, ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE']);
    assert.deepEqual(
      spec.linux?.namespaces?.map((ns) => ns.type),
      ['pid', 'network', 'ipc', 'uts', 'mount', 'cgroup'],
    );
    assert.deepEqual(spec.linux?.resources?.devices, [{ allow: false, access: 'rwm' }]);
    assert.equal(spec.mounts?.length, 7);
  });

  it('rootless variant parses and has what runc spec --rootless changes', () => {
    const spec = defaultSpec({ rootless: true });
    assert.deepEqual(parseSpec(JSON.parse(JSON.stringify(spec))), spec);
    const types = spec.linux?.namespaces?.map((ns) => ns.type) ?? [];
    assert.ok(types.includes('user'));
    assert.ok(!types.includes('network'));
    assert.ok(!types.includes('cgroup'));
    assert.deepEqual(spec.linux?.uidMappings, [{ containerID: 0, hostID: process.geteuid?.() ?? 0, size: 1 }]);
    assert.deepEqual(spec.linux?.gidMappings, [{ containerID: 0, hostID: process.getegid?.() ?? 0, size: 1 }]);
    assert.equal(spec.linux?.resources, undefined);
    const pts = spec.mounts?.find((m) => m.destination === '/dev/pts');
    assert.ok(pts && !pts.options?.includes('gid=5'));
    const sys = spec.mounts?.find((m) => m.destination === '/sys');
    assert.deepEqual(sys?.options, ['rbind', 'nosuid', 'noexec', 'nodev', 'ro']);
    assert.equal(spec.mounts?.find((m) => m.destination === '/sys/fs/cgroup'), undefined);
  });

  it('puts a given seccomp profile in linux.seccomp', () => {
    const seccomp = { defaultAction: 'SCMP_ACT_ERRNO', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }] };
    const spec = parseSpec(defaultSpec({ seccomp }));
    assert.deepEqual(spec.linux?.seccomp, seccomp);
  });
});

describe('loadSpec', () => {
  it('reads, rejects a missing file and bad JSON', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-spec-'));
    try {
      const missing = configErrorOf(() => loadSpec(dir));
      assert.equal(missing.path, '');
      assert.match(missing.problem, /^cannot read .*config\.json: no such file or directory \(ENOENT\)$/);

      writeFileSync(join(dir, 'config.json'), '{ "ociVersion": ');
      const bad = configErrorOf(() => loadSpec(dir));
      assert.equal(bad.path, '');
      assert.match(bad.problem, /^config\.json is not valid JSON: /);

      writeFileSync(join(dir, 'config.json'), JSON.stringify(defaultSpec({})));
      assert.equal(loadSpec(dir).hostname, 'moat');

      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ociVersion: '1.2.0', root: { path: 'rootfs' }, mounts: [{ destination: 'x' }] }));
      assert.equal(configErrorOf(() => loadSpec(dir)).path, 'mounts[0].destination');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
