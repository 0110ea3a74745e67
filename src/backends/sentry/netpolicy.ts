/**
 * The sentry's network policy: parsing `--network` and `--allow-egress` into a NetworkPolicy,
 * decoding the socket addresses a workload passes (struct sockaddr_un/_in/_in6), and deciding
 * whether a destination is allowed. Pure functions: no system calls, no DNS.
 *
 * Rules are IP addresses and CIDRs only; a host name would need a DNS answer at policy time
 * (and would silently go stale), so it is refused with a clear message.
 */
import { UsageError } from '../../errors.js';
import type { EgressRule, NetworkPolicy } from './types.js';

/** Address family numbers of the socket addresses the sentry decodes (linux/socket.h). */
export const AF = { UNSPEC: 0, UNIX: 1, INET: 2, INET6: 10, NETLINK: 16, PACKET: 17 } as const;

/** A decoded socket address. */
export type SockAddr =
  /** AF_UNIX: a path (bytes before the first NUL), an abstract name, or unnamed (empty path). */
  | { family: 'unix'; path: Buffer; abstract: boolean }
  /** AF_INET (4) or AF_INET6 (10): the address bytes (4 or 16) and the port (host order). */
  | { family: 4 | 6; addr: Buffer; port: number }
  /** Any other family: only its number. */
  | { family: 'other'; af: number };

/** sizeof(struct sockaddr_un): the family plus 108 bytes of sun_path. */
const SUN_LEN_MAX = 110;
/** sizeof(struct sockaddr_in). */
const SIN_LEN = 16;
/** SIN6_LEN_RFC2133: a struct sockaddr_in6 without sin6_scope_id, the shortest the kernel takes. */
const SIN6_LEN_MIN = 24;

/** Decodes a socket address as the kernel reads it; null if its length does not fit its family. */
export function decodeSockaddr(buf: Buffer): SockAddr | null {
  if (buf.length < 2) return null;
  const af = buf.readUInt16LE(0);
  switch (af) {
    case AF.UNIX: {
      if (buf.length > SUN_LEN_MAX) return null;
      if (buf.length === 2) return { family: 'unix', path: Buffer.alloc(0), abstract: false };
      // abstract: every byte after the leading NUL is the name, NULs included
      if (buf[2] === 0) return { family: 'unix', path: Buffer.from(buf.subarray(3)), abstract: true };
      // a path ends at its first NUL or at the address length (unix_mkname_bsd)
      const body = buf.subarray(2);
      const nul = body.indexOf(0);
      return { family: 'unix', path: Buffer.from(nul < 0 ? body : body.subarray(0, nul)), abstract: false };
    }
    case AF.INET:
      if (buf.length < SIN_LEN) return null;
      return { family: 4, addr: Buffer.from(buf.subarray(4, 8)), port: buf.readUInt16BE(2) };
    case AF.INET6:
      if (buf.length < SIN6_LEN_MIN) return null;
      return { family: 6, addr: Buffer.from(buf.subarray(8, 24)), port: buf.readUInt16BE(2) };
    default:
      return { family: 'other', af };
  }
}

/** The error of a bad rule: names the flag and the rule as written. */
function bad(text: string, problem: string): UsageError {
  return new UsageError(`--allow-egress "${text}": ${problem}`);
}

/** Parses a dotted quad (four decimal bytes, no leading zeros); null if it is not one. */
function parseIPv4(s: string): Buffer | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/** Parses an IPv6 address (RFC 4291 text forms, an IPv4 tail allowed, no zone); null if invalid. */
function parseIPv6(s: string): Buffer | null {
  if (s.length === 0 || s.length > 45) return null;
  let head = s;
  let tail4: Buffer | null = null;
  if (s.includes('.')) {
    const cut = s.lastIndexOf(':');
    if (cut < 0) return null;
    tail4 = parseIPv4(s.slice(cut + 1));
    if (!tail4) return null;
    // keep the ':' of a '::' just before the IPv4 part ("::1.2.3.4")
    head = s[cut - 1] === ':' ? s.slice(0, cut + 1) : s.slice(0, cut);
  }
  const want = tail4 ? 6 : 8;
  const group = (g: string): number | null => (/^[0-9a-fA-F]{1,4}$/.test(g) ? parseInt(g, 16) : null);
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const split = (h: string): string[] => (h === '' ? [] : h.split(':'));
  let groups: number[];
  if (halves.length === 2) {
    const left = split(halves[0]!);
    const right = split(halves[1]!);
    const missing = want - left.length - right.length;
    if (missing < 1) return null;
    const all = [...left, ...Array<string>(missing).fill('0'), ...right];
    groups = [];
    for (const g of all) {
      const v = group(g);
      if (v === null) return null;
      groups.push(v);
    }
  } else {
    const all = split(head);
    if (all.length !== want) return null;
    groups = [];
    for (const g of all) {
      const v = group(g);
      if (v === null) return null;
      groups.push(v);
    }
  }
  const out = Buffer.alloc(16);
  groups.forEach((v, i) => out.writeUInt16BE(v, i * 2));
  if (tail4) tail4.copy(out, 12);
  return out;
}

/** Whether the bits of `addr` after the first `prefix` are all zero. */
function hostBitsClear(addr: Buffer, prefix: number): boolean {
  for (let bit = prefix; bit < addr.length * 8; bit++) {
    if ((addr[bit >> 3]! >> (7 - (bit & 7))) & 1) return false;
  }
  return true;
}

/** Whether the first `prefix` bits of `a` and `b` are equal. */
function samePrefix(a: Buffer, b: Buffer, prefix: number): boolean {
  const whole = prefix >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (a[whole]! & mask) === (b[whole]! & mask);
}

/** The network address of `addr`/`prefix` (host bits cleared). */
function networkOf(addr: Buffer, prefix: number): Buffer {
  const out = Buffer.alloc(addr.length);
  for (let bit = 0; bit < prefix; bit++) {
    if ((addr[bit >> 3]! >> (7 - (bit & 7))) & 1) out[bit >> 3]! |= 1 << (7 - (bit & 7));
  }
  return out;
}

/** Text of an address, for messages and logs (IPv6 in full groups, zeros shortened). */
export function formatAddr(family: 4 | 6, addr: Buffer): string {
  if (family === 4) return [...addr.subarray(0, 4)].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(addr.readUInt16BE(i).toString(16));
  // shorten the longest run of zero groups (two or more) to '::'
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

const V4_MAPPED = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), or null. */
function v4Mapped(addr: Buffer): Buffer | null {
  return addr.length === 16 && addr.subarray(0, 12).equals(V4_MAPPED) ? Buffer.from(addr.subarray(12)) : null;
}

/**
 * Parses one `--allow-egress` rule: `ADDR`, `ADDR:PORT`, `CIDR` or `CIDR:PORT`, with IPv6 in
 * brackets when a port follows (`[2001:db8::1]:443`, `[fd00::]/8:53`; `fd00::/8` without a
 * port needs none). A bare address means /32 or /128; no port means any port. IPv4-mapped IPv6
 * rules (::ffff:a.b.c.d/96+) become IPv4 rules, since mapped destinations are checked as IPv4.
 * Throws UsageError naming the flag and the rule.
 */
export function parseEgressRule(text: string): EgressRule {
  if (text.length === 0) throw bad(text, 'empty rule');
  if (/\s/.test(text)) throw bad(text, 'whitespace is not allowed in a rule');
  let host: string;
  let prefixText: string | undefined;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw bad(text, 'missing "]" after the IPv6 address');
    host = text.slice(1, close);
    const slashIn = host.indexOf('/');
    if (slashIn >= 0) {
      prefixText = host.slice(slashIn + 1);
      host = host.slice(0, slashIn);
    }
    const rest = text.slice(close + 1);
    const restMatch = /^(?:\/([^:]*))?(?::(.*))?$/.exec(rest);
    if (!restMatch) throw bad(text, `unexpected "${rest}" after "]" (expected /PREFIX or :PORT)`);
    if (restMatch[1] !== undefined) {
      if (prefixText !== undefined) throw bad(text, 'the prefix length is given twice');
      prefixText = restMatch[1];
    }
    portText = restMatch[2];
    if (host.includes('%')) throw bad(text, 'IPv6 zone ids (%IFACE) are not supported');
    if (parseIPv6(host) === null) {
      throw bad(text, /^[0-9.]+$/.test(host) ? 'brackets are for IPv6 addresses only' : `"${host}" is not an IPv6 address`);
    }
  } else {
    const colons = (text.match(/:/g) ?? []).length;
    if (colons >= 2) {
      // a bare IPv6 address or CIDR: no port possible without brackets
      const slash = text.indexOf('/');
      host = slash >= 0 ? text.slice(0, slash) : text;
      if (slash >= 0) prefixText = text.slice(slash + 1);
      if (host.includes('%')) throw bad(text, 'IPv6 zone ids (%IFACE) are not supported');
      if (parseIPv6(host) === null) {
        if (/^[0-9a-fA-F:.]+$/.test(host)) {
          throw bad(text, `"${host}" is not an IPv6 address (write [ADDRESS]:PORT to give an IPv6 address a port)`);
        }
        throw bad(text, `"${host}" is not an IP address`);
      }
    } else {
      const colon = text.indexOf(':');
      const left = colon >= 0 ? text.slice(0, colon) : text;
      if (colon >= 0) portText = text.slice(colon + 1);
      const slash = left.indexOf('/');
      host = slash >= 0 ? left.slice(0, slash) : left;
      if (slash >= 0) prefixText = left.slice(slash + 1);
    }
  }

  let family: 4 | 6;
  let addr: Buffer | null = parseIPv4(host);
  if (addr) {
    family = 4;
  } else {
    addr = parseIPv6(host);
    if (!addr) {
      if (host.length === 0) throw bad(text, 'no address before the prefix or port');
      if (/[a-zA-Z_-]/.test(host)) {
        throw bad(text, `"${host}" looks like a host name; rules take IP addresses or CIDRs only (no DNS lookups at policy time)`);
      }
      throw bad(text, `"${host}" is not an IPv4 address (a.b.c.d) or a bracketed IPv6 address`);
    }
    family = 6;
  }

  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      throw bad(text, `the prefix length must be 0-${max}, got "${prefixText}"`);
    }
    prefix = Number(prefixText);
  }
  if (!hostBitsClear(addr, prefix)) {
    const net = networkOf(addr, prefix);
    const shown = family === 4 ? formatAddr(4, net) : `[${formatAddr(6, net)}]`;
    throw bad(text, `host bits are set after /${prefix}; did you mean ${shown}/${prefix}?`);
  }

  let port = 0;
  if (portText !== undefined) {
    if (!/^[1-9][0-9]{0,4}$/.test(portText) || Number(portText) > 65535) {
      throw bad(text, `the port must be 1-65535, got "${portText}" (leave the port out to allow any)`);
    }
    port = Number(portText);
  }

  const mapped = family === 6 && prefix >= 96 ? v4Mapped(addr) : null;
  if (mapped) return { text, family: 4, addr: mapped, prefix: prefix - 96, port };
  return { text, family, addr, prefix, port };
}

/** Network policies `--network` may name under the sentry. */
const MODES = ['none', 'loopback', 'pod', 'egress'] as const;

/**
 * Builds the sandbox's network policy from `--network` (`none` by default, `loopback`, `pod`, or
 * `egress`) and the `--allow-egress` rules: any rule makes the policy `egress` (the loopback
 * interface of the sandbox is then down); `none` or `pod` with rules, or `egress` without, is a
 * UsageError.
 */
export function parsePolicy(network: string | undefined, egress: string[]): NetworkPolicy {
  const mode = network === undefined || network === '' ? undefined : network;
  if (mode !== undefined && !(MODES as readonly string[]).includes(mode)) {
    throw new UsageError(`--network: expected none, loopback, pod or egress under the sentry, got "${mode}"`);
  }
  const rules = egress.map(parseEgressRule);
  if (rules.length === 0) {
    if (mode === 'egress') throw new UsageError('--network egress needs at least one --allow-egress rule');
    return mode === 'loopback' ? { mode: 'loopback' } : mode === 'pod' ? { mode: 'pod' } : { mode: 'none' };
  }
  if (mode === 'pod') {
    throw new UsageError(`--network pod gives the sandbox its namespace's own network, whose routes decide; --allow-egress rules (${egress.join(', ')}) apply to the host's network instead: choose one`);
  }
  if (mode === 'none') {
    throw new UsageError(`--network none forbids all networking, but --allow-egress rules were given (${egress.join(', ')})`);
  }
  return { mode: 'egress', rules };
}

/** Address ranges a broad rule never opens: only a rule inside the range itself does. */
const SPECIAL: readonly { family: 4 | 6; addr: Buffer; prefix: number }[] = [
  { family: 4, addr: Buffer.from([127, 0, 0, 0]), prefix: 8 }, // loopback
  { family: 4, addr: Buffer.from([0, 0, 0, 0]), prefix: 8 }, // "this host": 0.0.0.0 reaches loopback
  { family: 4, addr: Buffer.from([169, 254, 0, 0]), prefix: 16 }, // link-local (cloud metadata)
  { family: 6, addr: Buffer.from([...Array<number>(15).fill(0), 1]), prefix: 128 }, // ::1
  { family: 6, addr: Buffer.alloc(16), prefix: 128 }, // :: reaches loopback
  { family: 6, addr: Buffer.from([0xfe, 0x80, ...Array<number>(14).fill(0)]), prefix: 10 }, // link-local
];

/** Whether a destination is this sandbox's own loopback (127/8, ::1, or the unspecified address). */
function isLoopbackOrAny(family: 4 | 6, addr: Buffer): boolean {
  if (family === 4) return addr[0] === 127 || addr.equals(Buffer.alloc(4));
  return addr.equals(SPECIAL[3]!.addr) || addr.equals(SPECIAL[4]!.addr);
}

/**
 * Whether the policy lets a socket reach `addr` (4 or 16 bytes) port `port`: `none` never;
 * `loopback` only loopback (127/8, ::1, and the unspecified address, which means loopback);
 * `pod` any (the namespace's interfaces and routes, which its engine set up, decide);
 * `egress` when a rule covers the address and port. IPv4-mapped IPv6 addresses are checked as
 * IPv4. Loopback, 0.0.0.0/8, :: and link-local addresses need a rule inside that range (e.g.
 * `127.0.0.1:8080` or `169.254.169.254`): a broad rule such as `0.0.0.0/0` does not open them.
 */
export function egressAllowed(policy: NetworkPolicy, family: 4 | 6, addr: Buffer, port: number): boolean {
  if (addr.length !== (family === 4 ? 4 : 16)) return false;
  if (family === 6) {
    const v4 = v4Mapped(addr);
    if (v4) return egressAllowed(policy, 4, v4, port);
  }
  switch (policy.mode) {
    case 'none':
      return false;
    case 'loopback':
      return isLoopbackOrAny(family, addr);
    case 'pod':
      return true;
    case 'egress': {
      const special = SPECIAL.find((s) => s.family === family && samePrefix(s.addr, addr, s.prefix));
      return policy.rules.some(
        (r) =>
          r.family === family &&
          (r.port === 0 || r.port === port) &&
          samePrefix(r.addr, addr, r.prefix) &&
          (special === undefined || r.prefix >= special.prefix),
      );
    }
  }
}
