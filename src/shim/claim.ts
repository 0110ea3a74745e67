/**
 * The standby claim protocol: how a `start` (the C launcher native/containerd-shim-moat-v1.c, or
 * start.ts) hands its request to the installation's warm standby shim (standby.ts).
 *
 *   socket   /run/containerd/s/moat-standby-<dev>-<ino>, mode 0600; dev and ino are the stat of
 *            the TypeScript entry point (bin/containerd-shim-moat-v1.cjs), so every spelling of
 *            the installation's path — a symlink on PATH, the launcher's /proc/self/exe — finds
 *            the same standby.
 *   request  "MOATCLAIM", u8 version (1), then records u8 tag, u32 length (little-endian), bytes:
 *            1 argument (argv after the program name, in order), 2 environment entry "K=V",
 *            3 working directory (the bundle), 4 stdin (containerd's runtime options), 0 end
 *            (length 0). MAX_CLAIM bytes at most.
 *   reply    one line: "ok PID ADDRESS" (PID 0: the sandbox's shim was running already),
 *            "error MESSAGE" (the start failed: containerd shows MESSAGE), or "pass REASON"
 *            (the standby does not take it: the caller starts the shim itself).
 *
 * Kept free of Moat's heavier modules: start.ts's small bundle loads it.
 */
import { statSync } from 'node:fs';
import { SOCKET_DIR } from './flags.js';

/** The request's first bytes: the magic and the protocol version. */
export const CLAIM_MAGIC = Buffer.from('MOATCLAIM\x01', 'latin1');
/** The largest request a standby reads. */
export const MAX_CLAIM = 1 << 20;

const T_END = 0;
const T_ARG = 1;
const T_ENV = 2;
const T_CWD = 3;
const T_STDIN = 4;
const CLAIM_TAGS: ReadonlySet<number> = new Set([T_ARG, T_ENV, T_CWD, T_STDIN]);

/** What a `start` hands the standby. */
export interface ClaimRequest {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  stdin: Buffer;
}

/** The standby's answer. */
export type ClaimReply = { kind: 'ok'; pid: number; address: string } | { kind: 'error'; message: string } | { kind: 'pass'; reason: string };

/** A claim request that breaks the protocol, with what was wrong. */
export class ClaimError extends Error {
  constructor(message: string) {
    super(`standby claim: ${message}`);
    this.name = 'ClaimError';
  }
}

/** The control socket of the standby of the installation whose TypeScript entry point is `daemon`. */
export function standbyPath(daemon: string): string {
  const st = statSync(daemon, { bigint: true });
  return `${SOCKET_DIR}/moat-standby-${st.dev}-${st.ino}`;
}

function rec(tag: number, data: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = tag;
  h.writeUInt32LE(data.length, 1);
  return Buffer.concat([h, data]);
}

/** Encodes a request (start.ts's side; the C launcher writes the same bytes). */
export function encodeClaim(r: ClaimRequest): Buffer {
  return encodeRecords(CLAIM_MAGIC, [
    ...r.argv.map((a) => ({ tag: T_ARG, data: Buffer.from(a) })),
    ...Object.entries(r.env).map(([k, v]) => ({ tag: T_ENV, data: Buffer.from(`${k}=${v}`) })),
    { tag: T_CWD, data: Buffer.from(r.cwd) },
    { tag: T_STDIN, data: r.stdin },
  ]);
}

/** A request of `magic` and `records`, closed by the end record: what decodeRecords reads. */
export function encodeRecords(magic: Buffer, records: readonly ClaimRecord[]): Buffer {
  return Buffer.concat([magic, ...records.map((r) => rec(r.tag, r.data)), rec(T_END, Buffer.alloc(0))]);
}

/** One record of a standby request (this protocol's, or the CLI standby's): its tag and bytes. */
export interface ClaimRecord {
  tag: number;
  data: Buffer;
}

/**
 * Splits the bytes received so far of a request that starts with `magic` into its records, up
 * to the end record (not included): undefined while incomplete; a ClaimError as soon as the
 * magic is wrong, a record's tag is not in `tags`, the request passes `max` bytes or bytes
 * follow the end record.
 */
export function decodeRecords(buf: Buffer, magic: Buffer, max: number, tags: ReadonlySet<number>): ClaimRecord[] | undefined {
  const head = buf.subarray(0, magic.length);
  if (!magic.subarray(0, head.length).equals(head)) throw new ClaimError('bad magic or version');
  if (buf.length > max) throw new ClaimError(`request larger than ${max} bytes`);
  const out: ClaimRecord[] = [];
  let off = magic.length;
  for (;;) {
    if (off + 5 > buf.length) return undefined;
    const tag = buf[off] ?? -1;
    if (tag !== T_END && !tags.has(tag)) throw new ClaimError(`unknown record tag ${tag}`);
    const len = buf.readUInt32LE(off + 1);
    if (off + 5 + len > max) throw new ClaimError(`record of ${len} bytes passes the ${max}-byte limit`);
    if (off + 5 + len > buf.length) return undefined;
    const data = buf.subarray(off + 5, off + 5 + len);
    off += 5 + len;
    if (tag === T_END) {
      if (off !== buf.length) throw new ClaimError('bytes after the end record');
      return out;
    }
    out.push({ tag, data });
  }
}

/**
 * Decodes a request from the bytes received so far: undefined while it is incomplete; a
 * ClaimError when it is malformed or too large.
 */
export function decodeClaim(buf: Buffer): ClaimRequest | undefined {
  const records = decodeRecords(buf, CLAIM_MAGIC, MAX_CLAIM, CLAIM_TAGS);
  if (!records) return undefined;
  const r: ClaimRequest = { argv: [], env: {}, cwd: '', stdin: Buffer.alloc(0) };
  let sawCwd = false;
  for (const { tag, data } of records) {
    switch (tag) {
      case T_ARG:
        r.argv.push(data.toString('utf8'));
        break;
      case T_ENV: {
        const s = data.toString('utf8');
        const eq = s.indexOf('=');
        if (eq > 0) r.env[s.slice(0, eq)] = s.slice(eq + 1);
        break;
      }
      case T_CWD:
        r.cwd = data.toString('utf8');
        sawCwd = true;
        break;
      case T_STDIN:
        r.stdin = Buffer.from(data);
        break;
    }
  }
  if (!sawCwd || !r.cwd.startsWith('/')) throw new ClaimError('the working directory must be an absolute path');
  return r;
}

/** The reply line for `r` (newline-terminated; messages folded onto one line). */
export function formatReply(r: ClaimReply): string {
  const one = (s: string): string => s.replace(/[\r\n]+/g, ' ');
  if (r.kind === 'ok') return `ok ${r.pid} ${one(r.address)}\n`;
  if (r.kind === 'error') return `error ${one(r.message)}\n`;
  return `pass ${one(r.reason)}\n`;
}

/** Parses a reply line (without its newline); anything unrecognised is a pass. */
export function parseReply(line: string): ClaimReply {
  const m = /^ok (\d+) (.+)$/.exec(line);
  if (m) return { kind: 'ok', pid: Number(m[1]), address: m[2] ?? '' };
  if (line.startsWith('error ')) return { kind: 'error', message: line.slice(6) };
  return { kind: 'pass', reason: line.startsWith('pass ') ? line.slice(5) : `unrecognised reply ${JSON.stringify(line.slice(0, 80))}` };
}
