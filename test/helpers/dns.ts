/**
 * DNS for tests: query messages built and replies read here, and the fixture server
 * (test/fixtures/dns-server.mjs) started on an address, in a network namespace if asked.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO, waitFor } from './runtime.js';

/** A standard query (recursion desired) for `name`, type 1 (A) or 28 (AAAA). */
export function dnsQuery(id: number, name: string, qtype = 1): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(qtype, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([head, ...labels, Buffer.from([0]), tail]);
}

/** A reply's id, response code and A/AAAA addresses (as the fixture writes them: one question, compressed names). */
export function dnsReply(msg: Buffer): { id: number; rcode: number; addresses: string[] } {
  let off = 12;
  while (msg[off] !== 0) off += 1 + msg[off]!;
  off += 5;
  const addresses: string[] = [];
  for (let i = 0; i < msg.readUInt16BE(6); i++) {
    const len = msg.readUInt16BE(off + 10);
    const data = msg.subarray(off + 12, off + 12 + len);
    const v6 = (data.toString('hex').match(/.{4}/g) ?? []).join(':');
    addresses.push(len === 4 ? [...data].join('.') : new URL(`http://[${v6}]/`).hostname.slice(1, -1));
    off += 12 + len;
  }
  return { id: msg.readUInt16BE(0), rcode: msg.readUInt16BE(2) & 0xf, addresses };
}

/** The fixture server, running; `lines` is what it printed ("udp NAME" per answered query). */
export interface DnsServer {
  proc: ChildProcess;
  lines: () => string[];
  stop: () => void;
}

/** Starts the fixture on `address`:`port` (in network namespace `netns` if given) with `zone`; resolves once it listens. */
export async function startDnsServer(address: string, port: number, zone: Record<string, string[]>, netns?: string): Promise<DnsServer> {
  const args = [join(REPO, 'test/fixtures/dns-server.mjs'), address, String(port), JSON.stringify(zone)];
  const proc = netns ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const ok = await waitFor(() => out.includes('listening\n') || proc.exitCode !== null, 10_000);
  assert.ok(ok && out.includes('listening\n'), `the DNS fixture did not start on ${address}:${port}: ${err}`);
  return { proc, lines: () => out.split('\n').filter(Boolean), stop: () => proc.kill('SIGKILL') };
}
