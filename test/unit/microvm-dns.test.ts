/**
 * The microVM's name relay, host side (src/backends/microvm/dns.ts): which nameservers of an
 * engine's resolv.conf are relayed, and the monitor's relay asking a real DNS server (the
 * fixture, on 127.0.0.1) over UDP and TCP, with its refusals: a reply for another query, a
 * server that never answers, a nameserver the guest was not given, too many queries at once.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MAX_INFLIGHT, NameRelay, isLoopback, loopbackNameservers, parseNameservers } from '../../src/backends/microvm/dns.js';
import type { NameQuery } from '../../src/backends/microvm/protocol.js';
import type { Spec } from '../../src/spec/schema.js';
import { dnsQuery, dnsReply, startDnsServer } from '../helpers/dns.js';
import type { DnsServer } from '../helpers/dns.js';

/** A TCP port free on 127.0.0.1 a moment ago. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** What `relay` answers to `q`. */
const ask = (relay: NameRelay, q: NameQuery): Promise<Buffer> => new Promise((res) => relay.query(q, res));

describe('which nameservers are relayed', () => {
  it('isLoopback: 127.0.0.0/8 and ::1, in any spelling', () => {
    for (const a of ['127.0.0.11', '127.0.0.1', '127.255.255.254', '::1', '0:0:0:0:0:0:0:1', '::0001']) assert.ok(isLoopback(a), a);
    for (const a of ['10.0.0.1', '128.0.0.1', '::2', 'fe80::1%eth0', '::ffff:10.0.0.1', 'localhost', '']) assert.ok(!isLoopback(a), a);
  });

  it('parseNameservers: the first three valid nameserver lines, IPv6 in its short form', () => {
    assert.deepEqual(parseNameservers('# x\nsearch a.b\nnameserver 127.0.0.11\noptions ndots:0\n'), ['127.0.0.11']);
    assert.deepEqual(parseNameservers('nameserver bogus\n  nameserver 0:0:0:0:0:0:0:1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 127.0.0.11\n'), ['::1', '10.0.0.2', '10.0.0.3']);
    assert.deepEqual(parseNameservers(''), []);
  });

  describe('loopbackNameservers', () => {
    let dir = '';
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'moat-dns-'));
      writeFileSync(join(dir, 'docker.conf'), 'nameserver 127.0.0.11\nnameserver 127.0.0.11\nnameserver ::1\noptions ndots:0\n');
      writeFileSync(join(dir, 'podman.conf'), 'nameserver 10.89.0.1\n');
      mkdirSync(join(dir, 'adir'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));
    const spec = (mounts: { destination: string; source?: string }[]): Spec => ({ ociVersion: '1.0.2', mounts: mounts.map((m) => ({ type: 'bind', options: ['rbind'], ...m })) }) as unknown as Spec;

    it('the loopback ones of the file mounted at /etc/resolv.conf, once each (a relative source is the bundle\'s)', () => {
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/resolv.conf', source: join(dir, 'docker.conf') }]), '/'), ['127.0.0.11', '::1']);
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/resolv.conf/', source: 'docker.conf' }]), dir), ['127.0.0.11', '::1']);
    });

    it('none for routable nameservers, no mount, another destination, a directory or a missing source', () => {
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/resolv.conf', source: join(dir, 'podman.conf') }]), '/'), []);
      assert.deepEqual(loopbackNameservers(spec([]), '/'), []);
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/hosts', source: join(dir, 'docker.conf') }]), '/'), []);
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/resolv.conf', source: join(dir, 'adir') }]), '/'), []);
      assert.deepEqual(loopbackNameservers(spec([{ destination: '/etc/resolv.conf', source: join(dir, 'nope') }]), '/'), []);
    });

    it('the last mount at /etc/resolv.conf is the one the container sees', () => {
      const s = spec([{ destination: '/etc/resolv.conf', source: join(dir, 'docker.conf') }, { destination: '/etc/resolv.conf', source: join(dir, 'podman.conf') }]);
      assert.deepEqual(loopbackNameservers(s, '/'), []);
    });
  });
});

describe('NameRelay against a DNS server', () => {
  let server: DnsServer;
  let port = 0;
  const logs: string[] = [];
  before(async () => {
    port = await freePort();
    server = await startDnsServer('127.0.0.1', port, { 'peer.moat.test': ['10.1.2.3', 'fd00::3'] });
  });
  after(() => server.stop());

  it('asks over UDP and over TCP, as the container asked, and returns the server\'s reply', async () => {
    const relay = new NameRelay(() => ['127.0.0.1'], (m) => logs.push(m), port);
    const udp = dnsReply(await ask(relay, { id: 1, server: 0, transport: 'udp', message: dnsQuery(0x1111, 'peer.moat.test') }));
    assert.deepEqual(udp, { id: 0x1111, rcode: 0, addresses: ['10.1.2.3'] });
    const tcp = dnsReply(await ask(relay, { id: 2, server: 0, transport: 'tcp', message: dnsQuery(0x2222, 'peer.moat.test', 28) }));
    assert.deepEqual(tcp, { id: 0x2222, rcode: 0, addresses: ['fd00::3'] });
    const nx = dnsReply(await ask(relay, { id: 3, server: 0, transport: 'udp', message: dnsQuery(0x3333, 'nobody.moat.test') }));
    assert.equal(nx.rcode, 3);
    assert.ok(server.lines().includes('udp peer.moat.test') && server.lines().includes('tcp peer.moat.test'), server.lines().join('\n'));
  });

  it('answers empty for a nameserver the guest was not given, a server that does not answer, and a reply with another id', async () => {
    const relay = new NameRelay(() => ['127.0.0.1'], (m) => logs.push(m), port, 300);
    assert.equal((await ask(relay, { id: 4, server: 1, transport: 'udp', message: dnsQuery(1, 'peer.moat.test') })).length, 0);
    assert.ok(logs.some((l) => /nameserver #1, which the guest was not given/.test(l)));
    // nobody listens on 127.0.0.2 at that port: UDP times out, TCP is refused
    const silent = new NameRelay(() => ['127.0.0.2'], (m) => logs.push(m), port, 300);
    assert.equal((await ask(silent, { id: 5, server: 0, transport: 'udp', message: dnsQuery(2, 'peer.moat.test') })).length, 0);
    assert.equal((await ask(silent, { id: 6, server: 0, transport: 'tcp', message: dnsQuery(3, 'peer.moat.test') })).length, 0);
    assert.ok(logs.some((l) => /udp query to 127\.0\.0\.2: timed out/.test(l)), logs.join('\n'));
    // a server whose reply carries another id than the query's
    const liar = createSocket('udp4');
    liar.on('message', (msg, from) => {
      const r = Buffer.from(msg);
      r.writeUInt16BE((msg.readUInt16BE(0) + 1) & 0xffff, 0);
      liar.send(r, from.port, from.address);
    });
    await new Promise<void>((r) => liar.bind(0, '127.0.0.1', r));
    const lying = new NameRelay(() => ['127.0.0.1'], (m) => logs.push(m), liar.address().port, 2000);
    assert.equal((await ask(lying, { id: 7, server: 0, transport: 'udp', message: dnsQuery(0x4444, 'peer.moat.test') })).length, 0);
    assert.ok(logs.some((l) => /does not answer query id 17476/.test(l)), logs.join('\n'));
    liar.close();
  });

  it(`answers empty at once beyond ${MAX_INFLIGHT} queries out; close() answers those out empty`, async () => {
    const silent = new NameRelay(() => ['127.0.0.2'], () => {}, port, 60_000);
    let answered = 0;
    const out = Array.from({ length: MAX_INFLIGHT }, (_, i) =>
      ask(silent, { id: i, server: 0, transport: 'udp', message: dnsQuery(i, 'peer.moat.test') }).then((m) => {
        answered++;
        return m;
      }),
    );
    assert.equal((await ask(silent, { id: 999, server: 0, transport: 'udp', message: dnsQuery(999, 'peer.moat.test') })).length, 0);
    assert.equal(answered, 0, 'the first queries were answered before the one over the limit');
    silent.close();
    assert.deepEqual((await Promise.all(out)).map((m) => m.length), Array(MAX_INFLIGHT).fill(0));
  });
});
