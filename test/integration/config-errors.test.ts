/**
 * Moat's refusals: invalid config.json variants, bad command-line input, operations in the wrong
 * state, `spec` and `doctor`. Moat only: runc words its errors differently, and these tests check
 * the words (each error names the exact config field path, flag, or container id and status).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';

const skip = skipReason() ?? (RUNTIME === 'runc' ? 'Moat only: runc words its errors differently' : undefined);
if (skip) console.log(`# skipping config-error tests: ${skip}`);

/** The config as the fixture writes it; `any` because each case breaks it in a different way. */
type SpecObj = Record<string, any>;

/** One invalid config: how to break the fixture's config, and the field path the error must name. */
interface BadConfig {
  name: string;
  /** Edits the fixture's config; omitted when `raw` replaces the whole file. */
  mutate?: (s: SpecObj) => void;
  /** Replaces config.json with this text. */
  raw?: string;
  /** The exact field path in the error (`(root)` for the document itself). */
  path: string;
  /** Words the explanation must contain as well. */
  says: RegExp;
}

const CASES: BadConfig[] = [
  { name: 'unknown rlimit type', path: 'process.rlimits[0].type', says: /RLIMIT_BOGUS/, mutate: (s) => (s.process.rlimits[0].type = 'RLIMIT_BOGUS') },
  {
    name: 'rlimit soft above hard',
    path: 'process.rlimits[0].soft',
    says: /above hard/,
    mutate: (s) => (s.process.rlimits[0] = { type: 'RLIMIT_NOFILE', soft: 2048, hard: 1024 }),
  },
  {
    name: 'duplicate rlimit type',
    path: 'process.rlimits[1].type',
    says: /duplicate/,
    mutate: (s) => s.process.rlimits.push({ type: 'RLIMIT_NOFILE', soft: 1, hard: 1 }),
  },
  { name: 'unknown namespace type', path: 'linux.namespaces[1].type', says: /bogus/, mutate: (s) => (s.linux.namespaces[1].type = 'bogus') },
  { name: 'duplicate namespace', path: 'linux.namespaces[5].type', says: /duplicate/, mutate: (s) => s.linux.namespaces.push({ type: 'pid' }) },
  {
    name: 'namespace path that does not exist',
    path: 'linux.namespaces[1].path',
    says: /does not exist/,
    mutate: (s) => (s.linux.namespaces[1] = { type: 'network', path: '/proc/999999999/ns/net' }),
  },
  {
    name: 'relative namespace path',
    path: 'linux.namespaces[2].path',
    says: /absolute/,
    mutate: (s) => (s.linux.namespaces[2] = { type: 'ipc', path: 'proc/1/ns/ipc' }),
  },
  { name: 'relative mount destination', path: 'mounts[2].destination', says: /absolute/, mutate: (s) => (s.mounts[2].destination = 'dev/pts') },
  { name: 'mount over the container root', path: 'mounts[6].destination', says: /root/, mutate: (s) => s.mounts.push({ destination: '/', type: 'tmpfs', source: 'tmpfs' }) },
  {
    name: 'bind mount of a missing source',
    path: 'mounts[6].source',
    says: /does not exist/,
    mutate: (s) => s.mounts.push({ destination: '/mnt', type: 'bind', source: '/no/such/source', options: ['rbind'] }),
  },
  { name: 'unsupported idmap mount option', path: 'mounts[0].options[0]', says: /idmap/, mutate: (s) => (s.mounts[0].options = ['idmap']) },
  { name: 'relative cwd', path: 'process.cwd', says: /absolute/, mutate: (s) => (s.process.cwd = 'tmp') },
  { name: 'terminal not a boolean', path: 'process.terminal', says: /boolean/, mutate: (s) => (s.process.terminal = 'yes') },
  { name: 'empty args', path: 'process.args', says: /empty/, mutate: (s) => (s.process.args = []) },
  { name: 'env entry without "="', path: 'process.env[0]', says: /KEY=value/, mutate: (s) => (s.process.env = ['NOEQUALS']) },
  { name: 'negative uid', path: 'process.user.uid', says: />= 0, got -1/, mutate: (s) => (s.process.user.uid = -1) },
  { name: 'unknown capability', path: 'process.capabilities.bounding[0]', says: /CAP_BOGUS/, mutate: (s) => (s.process.capabilities.bounding[0] = 'CAP_BOGUS') },
  { name: 'oomScoreAdj out of range', path: 'process.oomScoreAdj', says: /<= 1000, got 5000/, mutate: (s) => (s.process.oomScoreAdj = 5000) },
  { name: 'no process', path: 'process', says: /required/, mutate: (s) => delete s.process },
  {
    name: 'uid mappings without a user namespace',
    path: 'linux.uidMappings',
    says: /user namespace/,
    mutate: (s) => (s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }]),
  },
  {
    name: 'hostname without a uts namespace',
    path: 'hostname',
    says: /uts/,
    mutate: (s) => (s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== 'uts')),
  },
  { name: 'sysctl that is not namespaced', path: 'linux.sysctl["kernel.foo"]', says: /not namespaced/, mutate: (s) => (s.linux.sysctl = { 'kernel.foo': '1' }) },
  {
    name: 'network sysctl without a network namespace',
    path: 'linux.sysctl["net.ipv4.ip_forward"]',
    says: /network namespace/,
    mutate: (s) => {
      s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== 'network');
      s.linux.sysctl = { 'net.ipv4.ip_forward': '1' };
    },
  },
  { name: 'unknown device type', path: 'linux.devices[0].type', says: /"x"/, mutate: (s) => (s.linux.devices = [{ type: 'x', path: '/dev/foo', major: 1, minor: 1 }]) },
  { name: 'device outside /dev', path: 'linux.devices[0].path', says: /\/dev/, mutate: (s) => (s.linux.devices = [{ type: 'c', path: '/etc/foo', major: 1, minor: 3 }]) },
  { name: 'relative masked path', path: 'linux.maskedPaths[0]', says: /absolute/, mutate: (s) => (s.linux.maskedPaths[0] = 'proc/kcore') },
  { name: 'unknown rootfs propagation', path: 'linux.rootfsPropagation', says: /sideways/, mutate: (s) => (s.linux.rootfsPropagation = 'sideways') },
  { name: 'relative hook path', path: 'hooks.prestart[0].path', says: /absolute/, mutate: (s) => (s.hooks = { prestart: [{ path: 'hook.sh' }] }) },
  { name: 'hook timeout of 0', path: 'hooks.poststop[0].timeout', says: />= 1, got 0/, mutate: (s) => (s.hooks = { poststop: [{ path: '/bin/true', timeout: 0 }] }) },
  { name: 'empty root path', path: 'root.path', says: /empty/, mutate: (s) => (s.root.path = '') },
  { name: 'rootfs that does not exist', path: 'root.path', says: /not a directory/, mutate: (s) => (s.root.path = 'no-such-rootfs') },
  { name: 'ociVersion missing', path: 'ociVersion', says: /missing/, mutate: (s) => delete s.ociVersion },
  { name: 'ociVersion not a string', path: 'ociVersion', says: /string/, mutate: (s) => (s.ociVersion = 1) },
  {
    name: 'a user namespace that moves ids, under the sentry',
    path: 'linux.uidMappings[0]',
    says: /identity mappings/,
    mutate: (s) => {
      s.annotations = { 'io.moat.isolation': 'sentry' };
      s.linux.namespaces.push({ type: 'user' });
      s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
    },
  },
  { name: 'unknown isolation annotation', path: 'annotations["io.moat.isolation"]', says: /nonsense/, mutate: (s) => (s.annotations = { 'io.moat.isolation': 'nonsense' }) },
  { name: 'config.json is not JSON', path: '(root)', says: /not valid JSON/, raw: '{"ociVersion": "1.0.2",' },
  { name: 'config.json is an array', path: '(root)', says: /object/, raw: '[]' },
];

describe(`config errors (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  /** Ids of the containers `list` shows. */
  async function listed(): Promise<string[]> {
    const r = await sb.ok(['list', '--format', 'json']);
    return ((JSON.parse(r.stdout || 'null') ?? []) as { id: string }[]).map((c) => c.id);
  }

  it(`has at least 22 invalid config cases (${CASES.length})`, () => {
    assert.ok(CASES.length >= 22);
  });

  for (const c of CASES) {
    it(`refuses ${c.name}: names ${c.path}`, async () => {
      const b = await sb.bundle(['true'], c.mutate);
      if (c.raw !== undefined) writeFileSync(join(b, 'config.json'), c.raw);
      const id = sb.id();
      const r = await sb.rt(['create', '-b', b, id]);
      assert.equal(r.status, 1, `create must exit 1; stderr: ${r.stderr}`);
      assert.ok(r.stderr.includes(`invalid config: ${c.path}: `), `stderr must name ${c.path}: ${r.stderr}`);
      assert.match(r.stderr, c.says);
      assert.equal(existsSync(join(sb.root, id)), false, 'a refused create left its state directory');
      assert.ok(!(await listed()).includes(id), 'a refused create is listed');
    });
  }

  it('refuses a bundle without config.json, naming the file', async () => {
    const dir = join(sb.tmp, 'empty-bundle');
    mkdirSync(dir);
    const r = await sb.rt(['create', '-b', dir, sb.id()]);
    assert.equal(r.status, 1);
    assert.ok(r.stderr.includes(join(dir, 'config.json')), r.stderr);
  });

  describe('command-line input', { skip }, () => {
    it('--preserve-fds abc is refused, naming the flag', async () => {
      const b = await sb.bundle(['true']);
      const id = sb.id();
      const r = await sb.rt(['create', '--preserve-fds', 'abc', '-b', b, id]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /--preserve-fds/);
      assert.match(r.stderr, /abc/);
      assert.equal(existsSync(join(sb.root, id)), false);
    });

    it('--isolation nonsense is refused, naming the flag', async () => {
      const b = await sb.bundle(['true']);
      const id = sb.id();
      const r = await sb.rt(['create', '--isolation', 'nonsense', '-b', b, id]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /--isolation/);
      assert.match(r.stderr, /nonsense/);
      assert.equal(existsSync(join(sb.root, id)), false);
      assert.ok(!(await listed()).includes(id));
    });

    it('kill with an unknown signal is refused, names it, and sends nothing', async () => {
      const b = await sb.bundle(['sleep', '100']);
      const id = sb.id();
      await sb.ok(['create', '-b', b, id]);
      try {
        const r = await sb.rt(['kill', id, 'NOTASIGNAL']);
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, /signal/);
        assert.match(r.stderr, /NOTASIGNAL/);
        assert.equal((await sb.state(id)).status, 'created');
      } finally {
        await sb.rt(['delete', '--force', id]);
      }
    });

    it('list --format xml is refused, naming the flag', async () => {
      const r = await sb.rt(['list', '--format', 'xml']);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /--format/);
      assert.match(r.stderr, /xml/);
    });

    it('--log-format yaml is refused, naming the flag', async () => {
      const r = await sb.rt(['--log-format', 'yaml', 'list']);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /--log-format/);
      assert.match(r.stderr, /yaml/);
    });

    it('an invalid container id is refused by every command, and creates nothing', async () => {
      const b = await sb.bundle(['true']);
      for (const args of [['create', '-b', b, 'bad/id'], ['state', 'bad/id'], ['start', 'bad/id'], ['kill', 'bad/id', 'KILL'], ['delete', 'bad/id'], ['create', '-b', b, '..']]) {
        const r = await sb.rt(args);
        assert.notEqual(r.status, 0, `${args.join(' ')} must fail`);
        assert.match(r.stderr, /invalid container id/, `${args.join(' ')}: ${r.stderr}`);
      }
      assert.equal(existsSync(join(sb.root, 'bad')), false, 'an id with "/" made a directory');
    });
  });

  describe('operations in the wrong state name the container and its status', { skip }, () => {
    it('start of a running container, delete of a running one, kill of a stopped one', async () => {
      const b = await sb.bundle(['sleep', '100']);
      const id = sb.id();
      await sb.ok(['run', '-d', '-b', b, id]);
      try {
        assert.equal((await sb.state(id)).status, 'running');
        const start = await sb.rt(['start', id]);
        assert.notEqual(start.status, 0);
        assert.ok(start.stderr.includes(`"${id}"`) && /\brunning\b/.test(start.stderr), `start: ${start.stderr}`);

        const del = await sb.rt(['delete', id]);
        assert.notEqual(del.status, 0);
        assert.ok(del.stderr.includes(`"${id}"`) && /\brunning\b/.test(del.stderr), `delete: ${del.stderr}`);
        assert.equal((await sb.state(id)).status, 'running', 'a refused delete must leave the container running');

        await sb.ok(['kill', id, 'KILL']);
        assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped'), 'container did not stop');
        const kill = await sb.rt(['kill', id, 'TERM']);
        assert.notEqual(kill.status, 0);
        assert.ok(kill.stderr.includes(`"${id}"`) && /\bstopped\b/.test(kill.stderr), `kill: ${kill.stderr}`);

        const again = await sb.rt(['start', id]);
        assert.notEqual(again.status, 0);
        assert.ok(again.stderr.includes(`"${id}"`) && /\bstopped\b/.test(again.stderr), `start of a stopped container: ${again.stderr}`);
      } finally {
        await sb.rt(['delete', '--force', id]);
      }
    });
  });

  describe('spec', { skip }, () => {
    it('writes a config.json that create accepts; a second spec refuses to overwrite it', async () => {
      const dir = join(sb.tmp, 'spec-default');
      mkdirSync(dir);
      await sb.ok(['spec', '-b', dir]);
      const file = join(dir, 'config.json');
      const text = readFileSync(file, 'utf8');
      const spec = JSON.parse(text) as SpecObj;
      assert.equal(typeof spec.ociVersion, 'string');
      assert.equal(spec.process.terminal, true, 'the default spec asks for a terminal, as runc spec does');

      const again = await sb.rt(['spec', '-b', dir]);
      assert.notEqual(again.status, 0, 'a second spec must refuse to overwrite config.json');
      assert.ok(again.stderr.includes(file), again.stderr);
      assert.match(again.stderr, /exists/);
      assert.equal(readFileSync(file, 'utf8'), text, 'the refused spec changed config.json');

      // the default spec as written, with only root.path pointing at a busybox rootfs
      const rootfsBundle = await sb.bundle(['true']);
      spec.root.path = join(rootfsBundle, 'rootfs');
      writeFileSync(file, JSON.stringify(spec));
      // process.terminal is true: create needs a console socket to hand the pty master to
      const sock = join(sb.tmp, 'spec-console.sock');
      const conns: Socket[] = [];
      const server = createServer({ pauseOnConnect: true }, (s) => conns.push(s));
      await new Promise<void>((res) => server.listen(sock, () => res()));
      const id = sb.id();
      try {
        await sb.ok(['create', '--console-socket', sock, '-b', dir, id]);
        assert.equal((await sb.state(id)).status, 'created');
      } finally {
        for (const s of conns) s.destroy();
        server.close();
        await sb.rt(['delete', '--force', id]);
      }
    });

    it('spec --rootless has a user namespace with mappings', async () => {
      const dir = join(sb.tmp, 'spec-rootless');
      mkdirSync(dir);
      await sb.ok(['spec', '--rootless', '-b', dir]);
      const spec = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as SpecObj;
      const types = (spec.linux.namespaces as { type: string }[]).map((n) => n.type);
      assert.ok(types.includes('user'), `namespaces: ${types.join(', ')}`);
      assert.ok(spec.linux.uidMappings.length > 0);
      assert.ok(spec.linux.gidMappings.length > 0);
    });
  });

  it('doctor exits 0 and reports namespaces, cgroup, seccomp, overlayfs, kvm, qemu and runc', async () => {
    const r = await sb.ok(['doctor'], { timeoutMs: 60_000 });
    for (const word of ['namespaces', 'cgroup', 'seccomp', 'overlayfs', 'kvm', 'qemu', 'runc']) {
      assert.match(r.stdout, new RegExp(`^(ok|no)\\s+[^:\\n]*${word}[^:\\n]*:`, 'im'), `no doctor line for ${word}:\n${r.stdout}`);
    }
  });
});
