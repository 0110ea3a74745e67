/**
 * A container's network as engines give it: a network namespace made beforehand with an
 * interface in it (linux.namespaces[].path, as containerd's CNI plugins and podman's netavark
 * do), or a new one that a prestart hook equips once it exists (as Docker's libnetwork does
 * through /proc/PID/ns/net). Each test builds the network itself: the pod's namespace, a peer
 * namespace at the other end of a veth pair, and an HTTP server in the peer that answers with the
 * address it sees. The behaviour tests run against Moat and (MOAT_TEST_RUNTIME=runc) runc; the
 * microvm ones check that the guest takes the pod's interface over (its MAC, address and routes)
 * and that the pod's namespace is left as it was found.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startDnsServer } from '../helpers/dns.js';
import type { DnsServer } from '../helpers/dns.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';

const ipSkip = spawnSync('ip', ['-V']).status === 0 ? undefined : 'iproute2 is not installed (apt-get install iproute2)';
const skip = skipReason() ?? ipSkip;
if (skip) console.log(`# skipping network tests: ${skip}`);
const vmSkip = skip ?? microvmSkipReason();
if (vmSkip) console.log(`# skipping microvm network tests: ${vmSkip}`);
const VM_TIMEOUT = 180_000;

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });

let nets = 0;

/**
 * Two network namespaces joined by a veth pair: `pod` (the container's, interface `podIf`
 * 10.231.N.2/24 and fd00:231:N::2/64, default routes via the peer and a route to 10.230.N.0/24
 * through it) and `peer` (10.231.N.1/24 and fd00:231:N::1/64, an HTTP server on port 8080 of
 * each answering "hello ADDRESS"). IPv6 addresses skip duplicate address detection, so they are
 * usable at once. With `staged`, the pod's end waits in a third namespace for a hook to move it,
 * unconfigured.
 */
class Net {
  readonly n: number;
  readonly pod: string;
  readonly peer: string;
  readonly stage: string;
  readonly podIf: string;
  readonly addr: string;
  readonly gw: string;
  readonly addr6: string;
  readonly gw6: string;
  private server: ChildProcess | undefined;
  private dnsServer: DnsServer | undefined;

  constructor(readonly staged = false) {
    this.n = 100 + ((process.pid + ++nets) % 150);
    const tag = `${process.pid % 100000}-${nets}`;
    this.pod = `mt-pod-${tag}`;
    this.peer = `mt-peer-${tag}`;
    this.stage = `mt-stage-${tag}`;
    this.podIf = `mtp${nets}`;
    this.addr = `10.231.${this.n}.2`;
    this.gw = `10.231.${this.n}.1`;
    this.addr6 = `fd00:231:${this.n.toString(16)}::2`;
    this.gw6 = `fd00:231:${this.n.toString(16)}::1`;
  }

  /** The ip commands that configure the pod's end (after `ip`, or `ip -n POD`). */
  private podSetup(): string[][] {
    return [
      ['addr', 'add', `${this.addr}/24`, 'dev', this.podIf],
      ['-6', 'addr', 'add', `${this.addr6}/64`, 'dev', this.podIf, 'nodad'],
      ['link', 'set', this.podIf, 'up'],
      ['route', 'add', 'default', 'via', this.gw],
      ['route', 'add', `10.230.${this.n}.0/24`, 'via', this.gw],
      ['-6', 'route', 'add', 'default', 'via', this.gw6],
    ];
  }

  async up(): Promise<this> {
    const home = this.staged ? this.stage : this.pod;
    ip('netns', 'add', home);
    ip('netns', 'add', this.peer);
    if (!this.staged) ip('-n', this.pod, 'link', 'set', 'lo', 'up');
    ip('link', 'add', this.podIf, 'netns', home, 'type', 'veth', 'peer', 'name', 'peer0', 'netns', this.peer);
    ip('-n', this.peer, 'addr', 'add', `${this.gw}/24`, 'dev', 'peer0');
    ip('-n', this.peer, '-6', 'addr', 'add', `${this.gw6}/64`, 'dev', 'peer0', 'nodad');
    ip('-n', this.peer, 'link', 'set', 'peer0', 'up');
    if (!this.staged) for (const args of this.podSetup()) ip('-n', this.pod, ...args);
    const serve = (host: string) => `require('http').createServer((q, s) => s.end('hello ' + q.socket.remoteAddress + '\\n')).listen(8080, '${host}', () => console.log('listening ${host}'));`;
    const script = serve(this.gw) + serve(this.gw6);
    this.server = spawn('ip', ['netns', 'exec', this.peer, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    this.server.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    assert.ok(await waitFor(() => out.includes(`listening ${this.gw}`) && out.includes(`listening ${this.gw6}`), 10_000), 'the peer\'s servers did not start');
    return this;
  }

  /** A prestart hook (a file in `dir`) that moves the staged interface into the container's namespace and configures it there, as libnetwork-setkey does. */
  hook(dir: string): string {
    const file = join(dir, `net-hook-${this.n}.sh`);
    writeFileSync(file, `#!/bin/sh
set -e
pid=$(sed -n 's/.*"pid" *: *\\([0-9]*\\).*/\\1/p')
ip -n ${this.stage} link set ${this.podIf} netns /proc/$pid/ns/net
nsenter --net=/proc/$pid/ns/net sh -c 'ip link set lo up && ${this.podSetup().map((a) => `ip ${a.join(' ')}`).join(' && ')}'
`, { mode: 0o755 });
    return file;
  }

  /**
   * A DNS server in the pod's namespace at 127.0.0.11:53, UDP and TCP, as Docker's embedded one
   * is reached there, naming the peer `peer.moat.test`; and a resolv.conf (in `dir`) naming it,
   * which the engine bind-mounts at /etc/resolv.conf. Returns that file.
   */
  async dns(dir: string): Promise<string> {
    this.dnsServer = await startDnsServer('127.0.0.11', 53, { 'peer.moat.test': [this.gw, this.gw6] }, this.pod);
    const file = join(dir, `resolv-${this.n}.conf`);
    writeFileSync(file, 'nameserver 127.0.0.11\noptions ndots:0\n');
    return file;
  }

  /** The names the DNS server answered, each as "udp NAME" or "tcp NAME". */
  dnsAnswered(): string[] {
    return this.dnsServer?.lines().filter((l) => l !== 'listening') ?? [];
  }

  /** The pod's interface's Ethernet address (from the pod's namespace). */
  mac(): string {
    return /link\/ether ([0-9a-f:]{17})/.exec(ip('-n', this.pod, 'link', 'show', this.podIf))?.[1] ?? '';
  }

  down(): void {
    this.server?.kill('SIGKILL');
    this.dnsServer?.stop();
    for (const ns of [this.pod, this.peer, this.stage]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}

/** What the container's script prints: its global addresses, its routes and the peer's answers over IPv4 and IPv6. */
const PROBE = (n: Net): string[] => [
  'sh',
  '-c',
  `ip -o -4 addr show; ip -o -6 addr show scope global; ip route; ip -6 route; wget -q -O- http://${n.gw}:8080/; echo "wget $?"; wget -q -O- 'http://[${n.gw6}]:8080/'; echo "wget6 $?"`,
];

/** A regular expression matching `text` literally. */
const lit = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Asserts that the probe's output shows the pod's addresses and routes, and that the peer saw the container come from those addresses. */
function assertReached(out: string, n: Net): void {
  assert.match(out, new RegExp(`inet ${lit(n.addr)}/24`), `no pod address in:\n${out}`);
  assert.match(out, new RegExp(`inet6 ${lit(n.addr6)}/64`), `no pod IPv6 address in:\n${out}`);
  assert.match(out, new RegExp(`^default via ${lit(n.gw)} `, 'm'), `no default route in:\n${out}`);
  assert.match(out, new RegExp(`^10\\.230\\.${n.n}\\.0/24 via ${lit(n.gw)} `, 'm'), `no route to 10.230.${n.n}.0/24 in:\n${out}`);
  assert.match(out, new RegExp(`^default via ${lit(n.gw6)} `, 'm'), `no IPv6 default route in:\n${out}`);
  assert.match(out, new RegExp(`^hello ${lit(n.addr)}$`, 'm'), `the peer did not answer the pod's address:\n${out}`);
  assert.match(out, new RegExp(`^hello ${lit(n.addr6)}$`, 'm'), `the peer did not answer the pod's IPv6 address:\n${out}`);
  assert.match(out, /^wget 0$/m);
  assert.match(out, /^wget6 0$/m);
}

/**
 * The container's questions to its nameserver 127.0.0.11: `peer.moat.test` and a name the
 * server does not know with nslookup (UDP), then `peer.moat.test` over TCP (busybox nc, a
 * length-prefixed query written with printf; the reply as one hex string on a line "tcp HEX").
 */
const DNS_PROBE = [
  'sh',
  '-c',
  "nslookup peer.moat.test; echo \"nslookup $?\"; nslookup nobody.moat.test; echo \"nxdomain $?\"; " +
    "printf '\\000\\040\\022\\064\\001\\000\\000\\001\\000\\000\\000\\000\\000\\000\\004peer\\004moat\\004test\\000\\000\\001\\000\\001' | nc 127.0.0.11 53 | od -An -v -tx1 | tr -d ' \\n' | sed 's/^/tcp /'; echo",
];

/** Asserts that the DNS probe got the pod namespace's answers: the peer's addresses over UDP and TCP, NXDOMAIN for the unknown name. */
function assertResolved(out: string, n: Net): void {
  assert.match(out, new RegExp(`^Address:\\s+${lit(n.gw)}$`, 'm'), `no A record in:\n${out}`);
  assert.match(out, new RegExp(`^Address:\\s+${lit(n.gw6)}$`, 'm'), `no AAAA record in:\n${out}`);
  assert.match(out, /^nslookup 0$/m);
  assert.match(out, /NXDOMAIN/);
  assert.match(out, /^nxdomain 1$/m);
  // the TCP reply: its length, the query's id 0x1234, then (after the question) the peer's address
  const hex = n.gw.split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join('');
  assert.match(out, new RegExp(`^tcp [0-9a-f]{4}1234[0-9a-f]*c00c000100010{6}3c0004${hex}$`, 'm'), `no TCP answer in:\n${out}`);
  assert.ok(n.dnsAnswered().includes('udp peer.moat.test') && n.dnsAnswered().includes('tcp peer.moat.test'), `the server answered: ${n.dnsAnswered().join(', ')}`);
}

/** Binds `file` at /etc/resolv.conf, as engines do. */
const resolvConf = (file: string) => (s: Record<string, any>): void => {
  // `any`: the bundle's config as JSON
  s.mounts = [...(s.mounts as object[]), { destination: '/etc/resolv.conf', type: 'bind', source: file, options: ['rbind', 'ro'] }];
};

/** A bundle of `sb` running DNS_PROBE in `n`'s pod namespace with its resolv.conf bound (the DNS server started). */
async function dnsBundle(sb: Sandbox, n: Net): Promise<string> {
  const conf = await n.dns(sb.tmp);
  return sb.bundle(DNS_PROBE, (s) => {
    netnsAt(`/run/netns/${n.pod}`)(s);
    resolvConf(conf)(s);
  });
}

/** Sets the spec's network namespace to `path` (absent: a new one). */
const netnsAt = (path?: string) => (s: Record<string, any>): void => {
  // `any`: the bundle's config as JSON
  s.linux.namespaces = (s.linux.namespaces as { type: string }[]).filter((x) => x.type !== 'network').concat([{ type: 'network', ...(path ? { path } : {}) }]);
};

/** A sandbox and a maker of networks for the suite it is called in; both go when the suite ends. */
function suiteNets(): { sb: Sandbox; net: (staged?: boolean) => Promise<Net> } {
  const sb = new Sandbox();
  const made: Net[] = [];
  after(async () => {
    await sb.cleanup();
    for (const n of made) n.down();
  });
  const net = async (staged = false): Promise<Net> => {
    const n = new Net(staged);
    made.push(n);
    return n.up();
  };
  return { sb, net };
}

describe(`network namespaces an engine equips (${RUNTIME})`, { skip }, () => {
  const { sb, net } = suiteNets();

  it('joins the namespace at linux.namespaces\' path: its interface, address and route, and the peer beyond it (CNI, netavark)', async () => {
    const n = await net();
    const b = await sb.bundle(PROBE(n), netnsAt(`/run/netns/${n.pod}`));
    const r = await sb.rt(['run', '-b', b, sb.id('net')]);
    assert.equal(r.status, 0, r.stderr);
    assertReached(r.stdout, n);
  });

  it('a prestart hook equips the new namespace through /proc/PID/ns/net before the process runs (Docker\'s libnetwork)', async () => {
    const n = await net(true);
    const b = await sb.bundle(PROBE(n), (s) => {
      netnsAt()(s);
      s.hooks = { prestart: [{ path: n.hook(sb.tmp) }] };
    });
    const r = await sb.rt(['run', '-b', b, sb.id('net')]);
    assert.equal(r.status, 0, r.stderr);
    assertReached(r.stdout, n);
  });

  it('a loopback nameserver of the namespace (Docker\'s embedded DNS at 127.0.0.11) answers the container over UDP and TCP', async () => {
    const n = await net();
    const b = await dnsBundle(sb, n);
    const r = await sb.rt(['run', '-b', b, sb.id('net')]);
    assert.equal(r.status, 0, r.stderr);
    assertResolved(r.stdout, n);
  });
});

const sentrySkip = skip ?? (RUNTIME !== 'moat' ? 'the sentry is Moat-only' : undefined);

describe('sentry: the engine\'s network is the sandbox\'s (network policy pod)', { skip: sentrySkip }, () => {
  const { sb, net } = suiteNets();

  it('a namespace at a path: the sandbox reaches the peer through the namespace\'s interface and routes, and ifconfig\'s queries see it', async () => {
    const n = await net();
    const b = await sb.bundle(['sh', '-c', `${PROBE(n)[2]!}; ifconfig ${n.podIf}`], netnsAt(`/run/netns/${n.pod}`));
    const r = await sb.rt(['run', '--isolation', 'sentry', '-b', b, sb.id('snet')]);
    assert.equal(r.status, 0, r.stderr);
    assertReached(r.stdout, n);
    // busybox ifconfig reads the interface through SIOCGIF* ioctls (address, mask, MTU, queue length)
    assert.match(r.stdout, new RegExp(`inet addr:${lit(n.addr)} .*Mask:255\\.255\\.255\\.0`));
    assert.match(r.stdout, /MTU:1500/);
    assert.doesNotMatch(r.stderr, /Inappropriate ioctl/);
  });

  it('a prestart hook equips the new namespace (Docker\'s libnetwork): the sandbox reaches the peer', async () => {
    const n = await net(true);
    const b = await sb.bundle(PROBE(n), (s) => {
      netnsAt()(s);
      s.hooks = { prestart: [{ path: n.hook(sb.tmp) }] };
    });
    const r = await sb.rt(['run', '--isolation', 'sentry', '-b', b, sb.id('snet')]);
    assert.equal(r.status, 0, r.stderr);
    assertReached(r.stdout, n);
  });

  it('the namespace\'s loopback nameserver (Docker\'s embedded DNS) answers the sandbox over UDP and TCP', async () => {
    const n = await net();
    const b = await dnsBundle(sb, n);
    const r = await sb.rt(['run', '--isolation', 'sentry', '-b', b, sb.id('snet')]);
    assert.equal(r.status, 0, r.stderr);
    assertResolved(r.stdout, n);
  });

  it('io.moat.sentry.network=loopback still confines it: the peer is unreachable', async () => {
    const n = await net();
    const b = await sb.bundle(['sh', '-c', `wget -q -O- http://${n.gw}:8080/; echo "wget $?"`], (s) => {
      netnsAt(`/run/netns/${n.pod}`)(s);
      s.annotations = { ...(s.annotations ?? {}), 'io.moat.sentry.network': 'loopback' };
    });
    const r = await sb.rt(['run', '--isolation', 'sentry', '-b', b, sb.id('snet')]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^wget 1$/m);
    assert.doesNotMatch(r.stdout, /hello/);
    assert.match(r.stderr, /Network is unreachable|unreachable/i);
  });
});

describe('microvm: the pod\'s interface becomes the guest\'s', { skip: vmSkip, timeout: 10 * 60_000 }, () => {
  const { sb, net } = suiteNets();
  /** tc's JSON list of the ingress qdisc on the pod's interface ("[]" without one). */
  const ingress = (n: Net): string => execFileSync('tc', ['-n', n.pod, '-j', 'qdisc', 'show', 'dev', n.podIf, 'ingress'], { encoding: 'utf8' });

  it('a namespace at a path: the guest has the interface\'s MAC, address and routes and reaches the peer; a second VM cannot take it; checkpoint refuses; delete leaves the namespace as it was', async () => {
    const n = await net();
    const b = await sb.bundle(['sleep', '1000'], netnsAt(`/run/netns/${n.pod}`));
    const id = sb.id('vmnet');
    const c = await sb.rt(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    assert.equal(c.status, 0, c.stderr);
    await sb.ok(['start', id]);
    // the container's pid (the VM monitor's) is in the pod's namespace, as an init would be
    const pid = (await sb.state(id)).pid;
    assert.equal(execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }), execFileSync('ip', ['netns', 'exec', n.pod, 'readlink', '/proc/self/ns/net'], { encoding: 'utf8' }));
    const e = await sb.rt(['exec', id, ...PROBE(n)], { timeoutMs: 60_000 });
    assert.equal(e.status, 0, e.stderr);
    assertReached(e.stdout, n);
    // a second VM on the same namespace (another container of the pod) cannot take the interface too
    const id2 = sb.id('vmnet');
    const c2 = await sb.rt(['create', '--isolation', 'microvm', '-b', b, id2], { timeoutMs: VM_TIMEOUT });
    assert.notEqual(c2.status, 0);
    assert.match(c2.stderr, /already carries another microVM's network \(its tap moat\d+\)/);
    const again = await sb.rt(['exec', id, ...PROBE(n)], { timeoutMs: 60_000 });
    assert.equal(again.status, 0, again.stderr);
    assertReached(again.stdout, n);
    const link = await sb.rt(['exec', id, 'cat', '/sys/class/net/eth0/address', '/sys/class/net/eth0/mtu'], { timeoutMs: 60_000 });
    assert.equal(link.stdout, `${n.mac()}\n1500\n`, link.stderr);
    assert.notEqual(ingress(n).trim(), '[]', 'no redirect on the pod\'s interface while the VM runs');
    const cp = await sb.rt(['checkpoint', '--image-path', join(sb.tmp, `cp-${id}`), id], { timeoutMs: 60_000 });
    assert.notEqual(cp.status, 0);
    assert.match(cp.stderr, /pod network \(interface mtp\d+\) cannot be checkpointed/);
    await sb.ok(['delete', '--force', id], { timeoutMs: 60_000 });
    assert.equal(ingress(n).trim(), '[]', 'the redirect outlived the VM');
    assert.match(ip('-n', n.pod, '-o', '-4', 'addr', 'show', 'dev', n.podIf), new RegExp(`inet ${lit(n.addr)}/24`));
  });

  it('a container of the pod made after another\'s VM ended takes the interface; deleting the old one leaves it working (a restart under Kubernetes)', async () => {
    const n = await net();
    const first = sb.id('vmnet');
    await sb.ok(['create', '--isolation', 'microvm', '-b', await sb.bundle(['true'], netnsAt(`/run/netns/${n.pod}`)), first], { timeoutMs: VM_TIMEOUT });
    await sb.ok(['start', first]);
    assert.ok(await waitFor(async () => (await sb.state(first)).status === 'stopped', 60_000), 'the first VM did not stop');
    const second = sb.id('vmnet');
    await sb.ok(['create', '--isolation', 'microvm', '-b', await sb.bundle(['sleep', '1000'], netnsAt(`/run/netns/${n.pod}`)), second], { timeoutMs: VM_TIMEOUT });
    await sb.ok(['start', second]);
    await sb.ok(['delete', first]);
    const e = await sb.rt(['exec', second, ...PROBE(n)], { timeoutMs: 60_000 });
    assert.equal(e.status, 0, e.stderr);
    assertReached(e.stdout, n);
    await sb.ok(['delete', '--force', second], { timeoutMs: 60_000 });
    assert.equal(ingress(n).trim(), '[]', 'the redirect outlived the last VM');
  });

  it('the namespace\'s loopback nameserver (Docker\'s embedded DNS at 127.0.0.11) answers the guest over UDP and TCP: the agent relays it to the pod\'s namespace', async () => {
    const n = await net();
    const b = await dnsBundle(sb, n);
    const r = await sb.rt(['run', '--isolation', 'microvm', '-b', b, sb.id('vmnet')], { timeoutMs: VM_TIMEOUT });
    assert.equal(r.status, 0, r.stderr);
    assertResolved(r.stdout, n);
  });

  it('a prestart hook equips the new namespace: the guest takes the interface over (Docker\'s libnetwork)', async () => {
    const n = await net(true);
    const b = await sb.bundle(PROBE(n), (s) => {
      netnsAt()(s);
      s.hooks = { prestart: [{ path: n.hook(sb.tmp) }] };
    });
    const r = await sb.rt(['run', '--isolation', 'microvm', '-b', b, sb.id('vmnet')], { timeoutMs: VM_TIMEOUT });
    assert.equal(r.status, 0, r.stderr);
    assertReached(r.stdout, n);
  });

  it('a namespace with two interfaces: create fails with the reason and leaves no container, process or redirect', async () => {
    const n = await net();
    ip('link', 'add', 'mtx0', 'netns', n.pod, 'type', 'veth', 'peer', 'name', 'mtx1', 'netns', n.peer);
    const b = await sb.bundle(['true'], netnsAt(`/run/netns/${n.pod}`));
    const id = sb.id('vmnet');
    const c = await sb.rt(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    assert.notEqual(c.status, 0);
    assert.match(c.stderr, new RegExp(`container "${id}": pod network: the network namespace has 2 interfaces \\(.*\\); a microVM has one network device`));
    const list = (JSON.parse((await sb.ok(['list', '--format', 'json'])).stdout || 'null') ?? []) as { id: string }[];
    assert.ok(!list.some((x) => x.id === id), 'the failed create left its container');
    assert.equal(ingress(n).trim(), '[]');
    // (killed by the failed create: it may take a moment to be gone)
    assert.ok(await waitFor(() => spawnSync('pgrep', ['-f', '--', `--vm-monitor.*${id}`]).status === 1, 5000), 'a VM monitor is left');
  });
});
