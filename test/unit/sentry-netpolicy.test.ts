import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { UsageError } from '../../src/errors.js';
import { AF, decodeSockaddr, egressAllowed, formatAddr, parseEgressRule, parsePolicy } from '../../src/backends/sentry/netpolicy.js';
import type { NetworkPolicy } from '../../src/backends/sentry/types.js';

const v4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));
/** IPv6 bytes through the same parser the rules use (a bare /128 rule; a mapped one comes back as IPv4). */
const v6 = (s: string): Buffer => {
  const r = parseEgressRule(s);
  if (r.family === 6) return r.addr;
  return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), r.addr]);
};

/** Asserts that a rule is refused with a UsageError naming the flag, the rule and `part`. */
function refused(text: string, part: RegExp): void {
  assert.throws(
    () => parseEgressRule(text),
    (e: unknown) => {
      assert.ok(e instanceof UsageError, `expected a UsageError for ${JSON.stringify(text)}`);
      assert.match(e.message, /--allow-egress/);
      assert.ok(e.message.includes(`"${text}"`), `message names the rule: ${e.message}`);
      assert.match(e.message, part);
      return true;
    },
  );
}

const sin = (addr: number[], port: number, len = 16): Buffer => {
  const b = Buffer.alloc(len);
  b.writeUInt16LE(AF.INET, 0);
  b.writeUInt16BE(port, 2);
  Buffer.from(addr).copy(b, 4);
  return b;
};
const sin6 = (addr: Buffer, port: number, len = 28): Buffer => {
  const b = Buffer.alloc(len);
  b.writeUInt16LE(AF.INET6, 0);
  b.writeUInt16BE(port, 2);
  addr.copy(b, 8);
  return b;
};
const sun = (path: Buffer): Buffer => Buffer.concat([Buffer.from([AF.UNIX, 0]), path]);

describe('parseEgressRule', () => {
  test('IPv4 address with a port', () => {
    const r = parseEgressRule('93.184.216.34:443');
    assert.deepEqual(r, { text: '93.184.216.34:443', family: 4, addr: v4('93.184.216.34'), prefix: 32, port: 443 });
  });

  test('IPv4 address alone is a /32 for any port', () => {
    const r = parseEgressRule('10.1.2.3');
    assert.equal(r.prefix, 32);
    assert.equal(r.port, 0);
  });

  test('IPv4 CIDR, with and without a port', () => {
    assert.deepEqual(parseEgressRule('10.0.0.0/8'), { text: '10.0.0.0/8', family: 4, addr: v4('10.0.0.0'), prefix: 8, port: 0 });
    const r = parseEgressRule('192.168.0.0/16:53');
    assert.equal(r.prefix, 16);
    assert.equal(r.port, 53);
    assert.equal(parseEgressRule('0.0.0.0/0').prefix, 0);
  });

  test('IPv6 in brackets with a port, bare IPv6, IPv6 CIDR', () => {
    const a = parseEgressRule('[2001:db8::1]:443');
    assert.equal(a.family, 6);
    assert.equal(a.prefix, 128);
    assert.equal(a.port, 443);
    assert.equal(formatAddr(6, a.addr), '2001:db8::1');

    const b = parseEgressRule('fd00::/8');
    assert.equal(b.family, 6);
    assert.equal(b.prefix, 8);
    assert.equal(b.port, 0);
    assert.equal(b.addr[0], 0xfd);

    const c = parseEgressRule('[fd00::]/8:53');
    assert.equal(c.prefix, 8);
    assert.equal(c.port, 53);
    assert.deepEqual(parseEgressRule('[fd00::/8]:53'), { ...c, text: '[fd00::/8]:53' });

    assert.equal(parseEgressRule('[::1]').prefix, 128);
    assert.equal(parseEgressRule('::/0').prefix, 0);
  });

  test('IPv6 text forms: full, compressed, embedded IPv4', () => {
    assert.deepEqual(v6('2001:0db8:0000:0000:0000:0000:0000:0001'), v6('2001:db8::1'));
    assert.deepEqual(v6('::'), Buffer.alloc(16));
    assert.equal(formatAddr(6, v6('1::')), '1::');
    assert.equal(formatAddr(6, v6('64:ff9b::1.2.3.4')), '64:ff9b::102:304');
  });

  test('a bare IPv6 address takes no port: the last group is part of the address', () => {
    const r = parseEgressRule('2001:db8::1:443');
    assert.equal(r.port, 0);
    assert.equal(formatAddr(6, r.addr), '2001:db8::1:443');
  });

  test('an IPv4-mapped IPv6 rule becomes an IPv4 rule', () => {
    const r = parseEgressRule('[::ffff:10.0.0.0]/104:80');
    assert.equal(r.family, 4);
    assert.deepEqual(r.addr, v4('10.0.0.0'));
    assert.equal(r.prefix, 8);
    assert.equal(r.port, 80);
  });

  test('host names are refused: no DNS at policy time', () => {
    refused('example.com:443', /host name.*no DNS/);
    refused('example.com', /host name/);
    refused('localhost', /host name/);
    refused('[example.com]:443', /not an IPv6 address/);
  });

  test('bad addresses, prefixes and ports are refused with the flag and the rule', () => {
    refused('', /empty/);
    refused('10.0.0.256', /not an IPv4 address/);
    refused('10.0.0', /not an IPv4 address/);
    refused('010.0.0.1', /not an IPv4 address/);
    refused('10.0.0.1:0', /port must be 1-65535/);
    refused('10.0.0.1:65536', /port must be 1-65535/);
    refused('10.0.0.1:http', /port must be 1-65535/);
    refused('10.0.0.1:', /port must be 1-65535/);
    refused('10.0.0.0/33', /prefix length must be 0-32/);
    refused('fd00::/129', /prefix length must be 0-128/);
    refused('10.0.0.0/', /prefix length/);
    refused('10.1.2.3/8', /host bits are set.*10\.0\.0\.0\/8/);
    refused('fd00::1/8', /host bits are set/);
    refused('2001:db8::1:65536', /\[ADDRESS\]:PORT/);
    refused('[2001:db8::1', /missing "\]"/);
    refused('[10.0.0.1]:80', /brackets are for IPv6/);
    refused('[fe80::1%eth0]:80', /zone/);
    refused('1:2:3:4:5:6:7:8:9', /not an IPv6 address/);
    refused('1::2::3', /not an IPv6 address/);
    refused(' 10.0.0.1', /whitespace/);
    refused('[fd00::]/8/8:53', /unexpected|prefix length/);
  });
});

describe('parsePolicy', () => {
  test('none is the default', () => {
    assert.deepEqual(parsePolicy(undefined, []), { mode: 'none' });
    assert.deepEqual(parsePolicy('none', []), { mode: 'none' });
  });

  test('loopback', () => {
    assert.deepEqual(parsePolicy('loopback', []), { mode: 'loopback' });
  });

  test('pod: the namespace\'s own routes decide, so every destination passes the policy; rules with it are a usage error', () => {
    const pod = parsePolicy('pod', []);
    assert.deepEqual(pod, { mode: 'pod' });
    for (const [family, addr] of [[4, [10, 231, 9, 1]], [4, [127, 0, 0, 1]], [4, [169, 254, 169, 254]], [6, [0x20, 0x01, 0x0d, 0xb8, ...Array<number>(12).fill(0)]]] as const) {
      assert.equal(egressAllowed(pod, family, Buffer.from(addr), 443), true);
    }
    assert.throws(() => parsePolicy('pod', ['1.1.1.1:53']), (e: unknown) => e instanceof UsageError && /--network pod/.test(e.message) && /1\.1\.1\.1:53/.test(e.message));
  });

  test('any rule makes the policy egress', () => {
    const p = parsePolicy(undefined, ['10.0.0.0/8', '[2001:db8::1]:443']);
    assert.equal(p.mode, 'egress');
    assert.equal(p.mode === 'egress' && p.rules.length, 2);
    assert.equal(parsePolicy('loopback', ['1.1.1.1:53']).mode, 'egress');
    assert.equal(parsePolicy('egress', ['1.1.1.1:53']).mode, 'egress');
  });

  test('none with rules, egress without rules, unknown modes and bad rules are usage errors', () => {
    assert.throws(() => parsePolicy('none', ['1.1.1.1']), (e: unknown) => e instanceof UsageError && /--network none/.test(e.message) && /1\.1\.1\.1/.test(e.message));
    assert.throws(() => parsePolicy('egress', []), (e: unknown) => e instanceof UsageError && /--allow-egress/.test(e.message));
    assert.throws(() => parsePolicy('host', []), (e: unknown) => e instanceof UsageError && /--network/.test(e.message) && /"host"/.test(e.message));
    assert.throws(() => parsePolicy(undefined, ['1.1.1.1', 'dns.google:53']), (e: unknown) => e instanceof UsageError && /--allow-egress "dns\.google:53"/.test(e.message));
  });
});

describe('decodeSockaddr', () => {
  test('truncated and empty addresses are malformed', () => {
    assert.equal(decodeSockaddr(Buffer.alloc(0)), null);
    assert.equal(decodeSockaddr(Buffer.from([AF.INET])), null);
    assert.equal(decodeSockaddr(sin([1, 2, 3, 4], 80, 15)), null);
    assert.equal(decodeSockaddr(sin6(Buffer.alloc(16), 80, 23)), null);
    assert.equal(decodeSockaddr(sun(Buffer.alloc(109, 0x61))), null); // 111 bytes: longer than sockaddr_un
  });

  test('IPv4', () => {
    assert.deepEqual(decodeSockaddr(sin([127, 0, 0, 1], 8080)), { family: 4, addr: v4('127.0.0.1'), port: 8080 });
  });

  test('IPv6, with or without the scope id; v4-mapped stays IPv6 here', () => {
    const a = v6('2001:db8::2');
    assert.deepEqual(decodeSockaddr(sin6(a, 443, 24)), { family: 6, addr: a, port: 443 });
    assert.deepEqual(decodeSockaddr(sin6(a, 443, 28)), { family: 6, addr: a, port: 443 });
    const mapped = v6('::ffff:10.0.0.1');
    assert.deepEqual(decodeSockaddr(sin6(mapped, 80)), { family: 6, addr: mapped, port: 80 });
  });

  test('unix: path up to the first NUL, abstract names with their NULs, unnamed', () => {
    assert.deepEqual(decodeSockaddr(sun(Buffer.from('/run/x.sock\0garbage'))), { family: 'unix', path: Buffer.from('/run/x.sock'), abstract: false });
    assert.deepEqual(decodeSockaddr(sun(Buffer.from('rel'))), { family: 'unix', path: Buffer.from('rel'), abstract: false });
    assert.deepEqual(decodeSockaddr(sun(Buffer.from('\0name\0x'))), { family: 'unix', path: Buffer.from('name\0x'), abstract: true });
    assert.deepEqual(decodeSockaddr(sun(Buffer.alloc(0))), { family: 'unix', path: Buffer.alloc(0), abstract: false });
    assert.deepEqual(decodeSockaddr(sun(Buffer.alloc(108, 0x61)))?.family, 'unix'); // a full sun_path
  });

  test('other families keep only their number', () => {
    assert.deepEqual(decodeSockaddr(Buffer.from([AF.NETLINK, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])), { family: 'other', af: AF.NETLINK });
    assert.deepEqual(decodeSockaddr(Buffer.from([0, 0])), { family: 'other', af: AF.UNSPEC });
    assert.deepEqual(decodeSockaddr(Buffer.from([0x11, 0x01, 1, 2])), { family: 'other', af: 0x111 });
  });
});

describe('egressAllowed', () => {
  const egress = (...rules: string[]): NetworkPolicy => parsePolicy(undefined, rules);

  test('CIDR boundaries', () => {
    const p = egress('10.0.0.0/8', '192.168.1.128/25');
    assert.equal(egressAllowed(p, 4, v4('10.0.0.0'), 80), true);
    assert.equal(egressAllowed(p, 4, v4('10.255.255.255'), 80), true);
    assert.equal(egressAllowed(p, 4, v4('11.0.0.0'), 80), false);
    assert.equal(egressAllowed(p, 4, v4('9.255.255.255'), 80), false);
    assert.equal(egressAllowed(p, 4, v4('192.168.1.128'), 1), true);
    assert.equal(egressAllowed(p, 4, v4('192.168.1.255'), 1), true);
    assert.equal(egressAllowed(p, 4, v4('192.168.1.127'), 1), false);

    const q = egress('2001:db8::/33');
    assert.equal(egressAllowed(q, 6, v6('2001:db8:7fff:ffff::1'), 443), true);
    assert.equal(egressAllowed(q, 6, v6('2001:db8:8000::'), 443), false);
  });

  test('port rules', () => {
    const p = egress('1.1.1.1:53', '8.8.8.0/24:443');
    assert.equal(egressAllowed(p, 4, v4('1.1.1.1'), 53), true);
    assert.equal(egressAllowed(p, 4, v4('1.1.1.1'), 54), false);
    assert.equal(egressAllowed(p, 4, v4('8.8.8.8'), 443), true);
    assert.equal(egressAllowed(p, 4, v4('8.8.8.8'), 53), false);
    const any = egress('1.1.1.1');
    assert.equal(egressAllowed(any, 4, v4('1.1.1.1'), 1), true);
    assert.equal(egressAllowed(any, 4, v4('1.1.1.1'), 65535), true);
  });

  test('families do not cross, except IPv4-mapped IPv6 checked as IPv4', () => {
    const p = egress('10.0.0.0/8');
    assert.equal(egressAllowed(p, 6, v6('::ffff:10.1.2.3'), 80), true);
    assert.equal(egressAllowed(p, 6, v6('::ffff:11.1.2.3'), 80), false);
    assert.equal(egressAllowed(p, 6, v6('::a01:203'), 80), false); // IPv4-compatible is not mapped
    const all6 = egress('::/0');
    assert.equal(egressAllowed(all6, 6, v6('2001:db8::1'), 80), true);
    assert.equal(egressAllowed(all6, 6, v6('::ffff:10.1.2.3'), 80), false);
    assert.equal(egressAllowed(all6, 4, v4('10.1.2.3'), 80), false);
  });

  test('loopback, unspecified and link-local need a rule inside their range', () => {
    const broad = egress('0.0.0.0/0', '::/0');
    assert.equal(egressAllowed(broad, 4, v4('93.184.216.34'), 443), true);
    assert.equal(egressAllowed(broad, 4, v4('127.0.0.1'), 80), false);
    assert.equal(egressAllowed(broad, 4, v4('127.1.2.3'), 80), false);
    assert.equal(egressAllowed(broad, 4, v4('0.0.0.0'), 80), false);
    assert.equal(egressAllowed(broad, 4, v4('169.254.169.254'), 80), false);
    assert.equal(egressAllowed(broad, 6, v6('::1'), 80), false);
    assert.equal(egressAllowed(broad, 6, v6('::'), 80), false);
    assert.equal(egressAllowed(broad, 6, v6('fe80::1'), 80), false);
    assert.equal(egressAllowed(broad, 6, v6('febf::1'), 80), false);
    assert.equal(egressAllowed(broad, 6, v6('fec0::1'), 80), true);
    assert.equal(egressAllowed(broad, 6, v6('::ffff:127.0.0.1'), 80), false);
    assert.equal(egressAllowed(egress('120.0.0.0/5'), 4, v4('127.0.0.1'), 80), false);

    const explicit = egress('127.0.0.1:8080', '169.254.169.254', '[::1]:53', 'fe80::/10');
    assert.equal(egressAllowed(explicit, 4, v4('127.0.0.1'), 8080), true);
    assert.equal(egressAllowed(explicit, 4, v4('127.0.0.1'), 8081), false);
    assert.equal(egressAllowed(explicit, 4, v4('127.0.0.2'), 8080), false);
    assert.equal(egressAllowed(explicit, 6, v6('::ffff:127.0.0.1'), 8080), true);
    assert.equal(egressAllowed(explicit, 4, v4('169.254.169.254'), 80), true);
    assert.equal(egressAllowed(explicit, 4, v4('169.254.169.253'), 80), false);
    assert.equal(egressAllowed(explicit, 6, v6('::1'), 53), true);
    assert.equal(egressAllowed(explicit, 6, v6('fe80::abcd'), 1), true);
  });

  test('policies none and loopback', () => {
    const none: NetworkPolicy = { mode: 'none' };
    assert.equal(egressAllowed(none, 4, v4('127.0.0.1'), 80), false);
    const lo: NetworkPolicy = { mode: 'loopback' };
    assert.equal(egressAllowed(lo, 4, v4('127.0.0.1'), 80), true);
    assert.equal(egressAllowed(lo, 4, v4('127.9.9.9'), 80), true);
    assert.equal(egressAllowed(lo, 4, v4('0.0.0.0'), 80), true);
    assert.equal(egressAllowed(lo, 6, v6('::1'), 80), true);
    assert.equal(egressAllowed(lo, 6, v6('::ffff:127.0.0.1'), 80), true);
    assert.equal(egressAllowed(lo, 4, v4('10.0.0.1'), 80), false);
    assert.equal(egressAllowed(lo, 6, v6('2001:db8::1'), 80), false);
  });

  test('an address of the wrong length is never allowed', () => {
    assert.equal(egressAllowed(egress('0.0.0.0/0'), 4, Buffer.alloc(16), 80), false);
    assert.equal(egressAllowed(egress('::/0'), 6, Buffer.alloc(4), 80), false);
  });
});
