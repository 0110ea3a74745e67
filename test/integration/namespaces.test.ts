/**
 * Linux namespaces, runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, readlinkSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping namespace tests: ${skip}`);

/** The namespaces a container gets new ones of in these tests (plus `user` where asked for). */
const KINDS = ['pid', 'mnt', 'net', 'uts', 'ipc', 'cgroup'] as const;

/** Prints `kind=<link>` for each namespace kind, one a line. */
const PRINT_NS = (kinds: readonly string[]): string => kinds.map((k) => `echo ${k}=$(readlink /proc/self/ns/${k})`).join('; ');

/** Parses `kind=<link>` lines into a map. */
function parseNs(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of stdout.trim().split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** The id mapping of the user namespace tests: container 0..65535 is host 100000..165535. */
const MAPPING = { containerID: 0, hostID: 100000, size: 65536 };

describe(`namespaces (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  const sh = sb.sh.bind(sb);

  it('new pid, mnt, net, uts, ipc and cgroup namespaces differ from the host; the user namespace is the host one', async () => {
    const out = parseNs(
      await sh(PRINT_NS([...KINDS, 'user']), (s) => {
        s.linux.namespaces.push({ type: 'cgroup' });
      }),
    );
    for (const kind of KINDS) {
      const inside = out.get(kind);
      assert.match(inside ?? '', new RegExp(`^${kind}:\\[\\d+\\]$`), `no ${kind} namespace link printed`);
      assert.notEqual(inside, readlinkSync(`/proc/self/ns/${kind}`), `${kind} namespace is the host's`);
    }
    assert.equal(out.get('user'), readlinkSync('/proc/self/ns/user'), 'an unrequested user namespace must be the host one');
  });

  it('a user namespace applies uidMappings and gidMappings; the process is root inside', async () => {
    // mkdtemp made the scratch dir 0700: the mapped root (host uid 100000) must be able to reach the rootfs
    chmodSync(sb.tmp, 0o755);
    const out = await sh('cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g; readlink /proc/self/ns/user', (s) => {
      s.linux.namespaces.push({ type: 'user' });
      s.linux.uidMappings = [{ ...MAPPING }];
      s.linux.gidMappings = [{ ...MAPPING }];
    });
    const [uidMap, gidMap, rest] = out.split('--\n');
    const norm = (text: string | undefined): string => (text ?? '').trim().split(/\s+/).join(' ');
    const expected = `${MAPPING.containerID} ${MAPPING.hostID} ${MAPPING.size}`;
    assert.equal(norm(uidMap), expected);
    assert.equal(norm(gidMap), expected);
    const [uid, gid, userNs] = (rest ?? '').trim().split('\n');
    assert.equal(uid, '0');
    assert.equal(gid, '0');
    assert.match(userNs ?? '', /^user:\[\d+\]$/);
    assert.notEqual(userNs, readlinkSync('/proc/self/ns/user'), 'the user namespace is the host one');
  });

  it('the host sees a container uid through the uidMappings', async () => {
    chmodSync(sb.tmp, 0o755); // see above: the mapped users must reach the rootfs
    const b = await sb.bundle(['sleep', '100'], (s) => {
      s.linux.namespaces.push({ type: 'user' });
      s.linux.uidMappings = [{ ...MAPPING }];
      s.linux.gidMappings = [{ ...MAPPING }];
      s.process.user = { uid: 1000, gid: 1000 };
    });
    const id = sb.id();
    await sb.ok(['run', '-d', '-b', b, id]);
    try {
      const { pid } = await sb.state(id);
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const host = String(MAPPING.hostID + 1000);
      assert.deepEqual(/^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/), [host, host, host, host]);
      assert.deepEqual(/^Gid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/), [host, host, host, host]);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  it('joins the network and uts namespaces of another container by path', async () => {
    const a = await sb.bundle(['sleep', '100'], (s) => {
      s.hostname = 'host-a';
    });
    const idA = sb.id('a');
    await sb.ok(['run', '-d', '-b', a, idA]);
    try {
      const { pid } = await sb.state(idA);
      const netA = readlinkSync(`/proc/${pid}/ns/net`);
      const utsA = readlinkSync(`/proc/${pid}/ns/uts`);
      const out = await sh(`${PRINT_NS(['net', 'uts', 'ipc'])}; echo host=$(hostname)`, (s) => {
        delete s.hostname; // the joined uts namespace keeps A's hostname
        s.linux.namespaces = [
          { type: 'pid' },
          { type: 'network', path: `/proc/${pid}/ns/net` },
          { type: 'ipc' },
          { type: 'uts', path: `/proc/${pid}/ns/uts` },
          { type: 'mount' },
        ];
      });
      const ns = parseNs(out);
      assert.equal(ns.get('net'), netA);
      assert.equal(ns.get('uts'), utsA);
      assert.equal(ns.get('host'), 'host-a');
      assert.notEqual(ns.get('ipc'), readlinkSync(`/proc/${pid}/ns/ipc`), 'a new ipc namespace must not be A\'s');
      assert.notEqual(netA, readlinkSync('/proc/self/ns/net'), 'A must have had its own network namespace');
    } finally {
      await sb.rt(['delete', '--force', idA]);
    }
  });

  it('sets the hostname from the config', async () => {
    const out = await sh('hostname; cat /proc/sys/kernel/hostname', (s) => {
      s.hostname = 'moat-host';
    });
    assert.deepEqual(out.trim().split('\n'), ['moat-host', 'moat-host']);
  });

  it(
    'sets the domainname from the config',
    // runtime-spec 1.1 added `domainname`; runc 1.1 (spec 1.0.2) ignores it and leaves "(none)"
    { skip: RUNTIME === 'runc' ? 'runc 1.1 predates domainname support (runc >= 1.2)' : false },
    async () => {
      const out = await sh('cat /proc/sys/kernel/domainname', (s) => {
        s.hostname = 'moat-host';
        s.domainname = 'moat.example';
      });
      assert.equal(out.trim(), 'moat.example');
    },
  );

  it('a new network namespace has only the loopback interface, and it is up', async () => {
    const out = await sh("tail -n +3 /proc/net/dev | cut -d: -f1; echo flags=$(cat /sys/class/net/lo/flags); ls /sys/class/net");
    const lines = out.trim().split('\n');
    const flagsLine = lines.findIndex((l) => l.startsWith('flags='));
    assert.deepEqual(lines.slice(0, flagsLine).map((l) => l.trim()), ['lo'], '/proc/net/dev must list only lo');
    const flags = Number(lines[flagsLine]?.slice('flags='.length));
    const IFF_UP = 0x1;
    const IFF_LOOPBACK = 0x8;
    assert.equal(flags & IFF_LOOPBACK, IFF_LOOPBACK, 'lo is not a loopback device');
    assert.equal(flags & IFF_UP, IFF_UP, 'lo is down');
    assert.deepEqual(lines.slice(flagsLine + 1), ['lo']);
  });
});
