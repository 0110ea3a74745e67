/**
 * A microVM's loopback nameservers. Docker gives a container on a user-defined network the
 * resolv.conf line `nameserver 127.0.0.11`: its embedded DNS server, reached through NAT rules
 * in the container's network namespace. In a microVM, 127.0.0.11 is the guest's own loopback,
 * so the agent listens there (moat.dns= on the kernel command line) and relays each query over
 * the control channel; the VM monitor, which lives in the pod's namespace, asks the same address
 * there and sends the answer back (NAME_QUERY and NAME_ANSWER in protocol.ts). The container
 * sees what it would see under runc: the namespace's own resolver at that address.
 */
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BlockList, Socket, connect, isIP } from 'node:net';
import { resolve } from 'node:path';
import type { Spec } from '../../spec/schema.js';
import { DNS_HEADER, MAX_DNS_MESSAGE } from './protocol.js';
import type { NameQuery } from './protocol.js';

/** Nameservers a resolver uses from resolv.conf (glibc's and musl's MAXNS). */
export const MAX_NAMESERVERS = 3;
/** How long the monitor waits for the namespace's nameserver to answer one query. */
export const QUERY_TIMEOUT_MS = 5000;
/** Queries the monitor has out at once; more are answered empty (the client retries). */
export const MAX_INFLIGHT = 64;
/** The most of a resolv.conf that is read. */
const MAX_RESOLV_CONF = 64 * 1024;

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether `ip` is a loopback address: 127.0.0.0/8 or ::1. */
export function isLoopback(ip: string): boolean {
  const family = isIP(ip);
  if (ip.includes('%')) return false; // a scoped (link-local) address
  return family !== 0 && LOOPBACK.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

/** `ip` as Node writes a peer's address (IPv6 in its shortest form), so that the two compare. */
function canonical(ip: string): string {
  return isIP(ip) === 6 && !ip.includes('%') ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
}

/** The nameservers a resolver would use from resolv.conf text: the first MAX_NAMESERVERS valid `nameserver` lines. */
export function parseNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m || isIP(m[1]!) === 0) continue;
    out.push(canonical(m[1]!));
    if (out.length === MAX_NAMESERVERS) break;
  }
  return out;
}

/**
 * The loopback nameservers of the resolv.conf an engine mounts at /etc/resolv.conf (the last
 * such mount of `spec`, its source relative to `bundle`), without duplicates; none if there is
 * no such mount or its source cannot be read (the image's own file names the image's servers,
 * which no engine runs in the pod's namespace).
 */
export function loopbackNameservers(spec: Spec, bundle: string): string[] {
  const mount = (spec.mounts ?? []).filter((m) => m.destination.replace(/\/+$/, '') === '/etc/resolv.conf').at(-1);
  if (mount?.source === undefined) return [];
  let text: string;
  let fd: number | undefined;
  try {
    fd = openSync(resolve(bundle, mount.source), 'r');
    if (!fstatSync(fd).isFile()) return [];
    const buf = Buffer.alloc(MAX_RESOLV_CONF);
    const n = readSync(fd, buf, 0, buf.length, 0);
    text = buf.subarray(0, n).toString('utf8');
  } catch {
    return [];
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return [...new Set(parseNameservers(text).filter(isLoopback))];
}

/**
 * The monitor's side of the relay: asks the namespace's nameservers the guest's queries, a
 * fresh socket (so a fresh source port) per query, UDP or TCP as the container asked, and
 * answers each query exactly once: with the server's reply, or empty on an error, a timeout,
 * a reply whose DNS id is not the query's, or too many queries at once.
 */
export class NameRelay {
  /** The queries out: each one's finish (with an empty answer). */
  private readonly out = new Set<() => void>();

  /**
   * `servers`: the addresses the agent listens on, in moat.dns order (read at each query: the
   * monitor learns them after it starts); `port` and `timeoutMs` are 53 and QUERY_TIMEOUT_MS but
   * for tests.
   */
  constructor(
    private readonly servers: () => readonly string[],
    private readonly log: (m: string) => void,
    private readonly port = 53,
    private readonly timeoutMs = QUERY_TIMEOUT_MS,
  ) {}

  /** Asks query `q`'s nameserver; calls `answer` once, with the reply or an empty buffer. */
  query(q: NameQuery, answer: (message: Buffer) => void): void {
    const server = this.servers()[q.server];
    if (server === undefined) {
      this.log(`name relay: query ${q.id} for nameserver #${q.server}, which the guest was not given`);
      answer(Buffer.alloc(0));
      return;
    }
    if (this.out.size >= MAX_INFLIGHT) {
      answer(Buffer.alloc(0));
      return;
    }
    const qid = q.message.readUInt16BE(0);
    let done = false;
    let sock: UdpSocket | Socket | undefined;
    const timer = setTimeout(() => finish(Buffer.alloc(0), 'timed out'), this.timeoutMs);
    const drop = (): void => finish(Buffer.alloc(0));
    this.out.add(drop);
    const finish = (message: Buffer, why?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.out.delete(drop);
      if (sock instanceof Socket) sock.destroy();
      else sock?.close();
      if (why !== undefined) this.log(`name relay: ${q.transport} query to ${server}: ${why}`);
      // a reply for another query (a stray or forged datagram) is no answer to this one
      if (message.length > 0 && (message.length < DNS_HEADER || message.readUInt16BE(0) !== qid)) {
        this.log(`name relay: ${q.transport} reply from ${server} does not answer query id ${qid}`);
        message = Buffer.alloc(0);
      }
      answer(message);
    };
    if (q.transport === 'udp') {
      const udp = createSocket(isIP(server) === 6 ? 'udp6' : 'udp4');
      sock = udp;
      udp.on('error', (e) => finish(Buffer.alloc(0), e.message));
      udp.on('message', (msg, from) => {
        // only the server's reply (NAT rewrites its source back to the address asked)
        if (from.port === this.port && from.address === server) finish(msg);
      });
      udp.send(q.message, this.port, server);
      return;
    }
    const tcp = connect({ host: server, port: this.port });
    sock = tcp;
    let got = Buffer.alloc(0);
    tcp.on('error', (e) => finish(Buffer.alloc(0), e.message));
    tcp.on('connect', () => {
      const len = Buffer.allocUnsafe(2);
      len.writeUInt16BE(q.message.length, 0);
      tcp.write(Buffer.concat([len, q.message]));
    });
    tcp.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length > 2 + MAX_DNS_MESSAGE) return finish(Buffer.alloc(0), 'reply too long');
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) finish(got.subarray(2, 2 + got.readUInt16BE(0)));
    });
    tcp.on('end', () => finish(Buffer.alloc(0), 'closed before a whole reply'));
  }

  /** Answers every query still out empty, closing its socket (the VM is gone). */
  close(): void {
    for (const drop of [...this.out]) drop();
  }
}
