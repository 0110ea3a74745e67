/**
 * The host side of the control protocol between Moat and its guest agent (native/moat-agent.c,
 * whose header comment is the protocol's reference). Frames are little-endian:
 * `u32 len` (bytes after this field, 5 ..= 1 MiB + 5), `u8 type`, `u32 stream`, payload.
 *
 * The host trusts nothing the guest sends: the decoder accepts only guest-to-host types, checks
 * each one's payload size (and HELLO's text) before buffering the payload, and never holds more
 * than one frame.
 */
import { ConfigError, MoatError } from '../../errors.js';

/** Frame type bytes, as one-character strings. */
export const MSG = {
  // host -> guest
  RUN: 'R',
  STDIN: 'I',
  KILL: 'K',
  PS: 'P',
  SHUTDOWN: 'Q',
  RESIZE: 'T',
  NAME_ANSWER: 'A',
  // guest -> host
  HELLO: 'H',
  STARTED: 'S',
  STDOUT: 'O',
  STDERR: 'D',
  EXIT: 'W',
  FAILURE: 'F',
  LIST: 'L',
  NAME_QUERY: 'N',
} as const;

/** The stream that means "every process" (KILL) or "the agent itself" (FAILURE). */
export const STREAM_ALL = 0xffffffff;
/** Bytes of a frame before its payload: u32 len, u8 type, u32 stream. */
export const HEADER_SIZE = 9;
/** Largest payload of any frame. */
export const MAX_PAYLOAD = 1 << 20;
/** Smallest and largest value of a frame's length field. */
export const MIN_FRAME_LEN = 5;
export const MAX_FRAME_LEN = MAX_PAYLOAD + 5;
/** Largest STDOUT or STDERR payload. */
export const MAX_OUTPUT = 64 * 1024;
/** Largest HELLO payload (printable ASCII). */
export const MAX_HELLO = 256;
/** Largest FAILURE payload. */
export const MAX_FAILURE = 4096;
/** Bytes the agent queues for one process's stdin before it closes that stdin. */
export const MAX_STDIN_QUEUE = 1 << 20;

/** Largest DNS message NAME_QUERY and NAME_ANSWER carry (DNS over TCP's 16-bit length). */
export const MAX_DNS_MESSAGE = 65535;
/** Bytes of a DNS message header: the smallest query. */
export const DNS_HEADER = 12;
/** NAME_QUERY's transports: how the container sent the query, and so how the host sends it on. */
export const DNS_TRANSPORT = { udp: 0, tcp: 1 } as const;

/** The signal number KILL carries for SIGKILL (x86-64 and arm64 alike). */
export const SIGKILL = 9;

/** A frame of either direction. `type` is one character of {@link MSG}. */
export interface Frame {
  type: string;
  stream: number;
  payload: Buffer;
}

/** The guest sent something the protocol does not allow, or a frame cannot be encoded. */
export class ProtocolError extends MoatError {
  constructor(detail: string) {
    super(`microvm agent protocol: ${detail}`);
  }
}

const HOST_TYPES: ReadonlySet<string> = new Set([MSG.RUN, MSG.STDIN, MSG.KILL, MSG.PS, MSG.SHUTDOWN, MSG.RESIZE, MSG.NAME_ANSWER]);
const GUEST_TYPES: ReadonlySet<string> = new Set([MSG.HELLO, MSG.STARTED, MSG.STDOUT, MSG.STDERR, MSG.EXIT, MSG.FAILURE, MSG.LIST, MSG.NAME_QUERY]);
const NAMES: Readonly<Record<string, string>> = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k]));

/** `'Z' (0x5a)` or `0x07`: a type byte as an error message shows it. */
function showType(byte: number): string {
  const hex = `0x${byte.toString(16).padStart(2, '0')}`;
  return byte >= 0x20 && byte < 0x7f ? `'${String.fromCharCode(byte)}' (${hex})` : hex;
}

/**
 * Why a guest frame of this type and payload size is not allowed, or undefined if it is.
 * Checked from the header alone, before the payload is buffered.
 */
function guestSizeProblem(type: string, size: number): string | undefined {
  switch (type) {
    case MSG.STARTED:
    case MSG.EXIT:
      return size === 4 ? undefined : `${NAMES[type]} payload of ${size} bytes (must be 4)`;
    case MSG.STDOUT:
    case MSG.STDERR:
      return size <= MAX_OUTPUT ? undefined : `${NAMES[type]} payload of ${size} bytes (limit ${MAX_OUTPUT})`;
    case MSG.HELLO:
      return size >= 1 && size <= MAX_HELLO ? undefined : `HELLO payload of ${size} bytes (must be 1 to ${MAX_HELLO})`;
    case MSG.FAILURE:
      return size <= MAX_FAILURE ? undefined : `FAILURE payload of ${size} bytes (limit ${MAX_FAILURE})`;
    case MSG.LIST:
      return size % 4 === 0 ? undefined : `LIST payload of ${size} bytes (not a multiple of 4)`;
    case MSG.NAME_QUERY:
      return size >= 6 + DNS_HEADER && size <= 6 + MAX_DNS_MESSAGE ? undefined : `NAME_QUERY payload of ${size} bytes (must be ${6 + DNS_HEADER} to ${6 + MAX_DNS_MESSAGE})`;
    default:
      return `unexpected frame type ${type}`;
  }
}

/** Encodes one frame (either direction; the guest-side test double uses guest types). */
export function encodeFrame(f: Frame): Buffer {
  const known = f.type.length === 1 && (HOST_TYPES.has(f.type) || GUEST_TYPES.has(f.type));
  if (!known) throw new ProtocolError(`cannot encode a frame of unknown type ${JSON.stringify(f.type)}`);
  if (!Number.isInteger(f.stream) || f.stream < 0 || f.stream > 0xffffffff) {
    throw new ProtocolError(`cannot encode a frame for stream ${f.stream} (must be a u32)`);
  }
  if (f.payload.length > MAX_PAYLOAD) {
    throw new ProtocolError(`cannot encode a ${NAMES[f.type]} payload of ${f.payload.length} bytes (limit ${MAX_PAYLOAD})`);
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + f.payload.length);
  out.writeUInt32LE(f.payload.length + 5, 0);
  out.writeUInt8(f.type.charCodeAt(0), 4);
  out.writeUInt32LE(f.stream, 5);
  f.payload.copy(out, HEADER_SIZE);
  return out;
}

/**
 * Splits the guest's byte stream into frames. Header problems are reported as soon as the
 * header's bytes are in; at most one frame (9 bytes + its payload) is ever buffered. After a
 * ProtocolError the decoder stays failed: every later push throws the same error.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(HEADER_SIZE);
  private headerHave = 0;
  private type = '';
  private stream = 0;
  private payload: Buffer | undefined;
  private payloadHave = 0;
  private failed: ProtocolError | undefined;

  /** Bytes currently buffered (at most one frame). */
  get buffered(): number {
    return this.headerHave + this.payloadHave;
  }

  /** The bytes of the incomplete frame buffered now (a checkpoint carries them to the restored monitor). */
  pendingBytes(): Buffer {
    const head = Buffer.from(this.header.subarray(0, this.headerHave));
    return this.payload === undefined ? head : Buffer.concat([head, this.payload.subarray(0, this.payloadHave)]);
  }

  push(chunk: Buffer): Frame[] {
    if (this.failed) throw this.failed;
    try {
      return this.consume(chunk);
    } catch (e) {
      if (e instanceof ProtocolError) this.failed = e;
      throw e;
    }
  }

  private consume(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.payload === undefined) {
        const take = Math.min(HEADER_SIZE - this.headerHave, chunk.length - off);
        chunk.copy(this.header, this.headerHave, off, off + take);
        this.headerHave += take;
        off += take;
        this.checkHeader();
        if (this.headerHave < HEADER_SIZE) break;
        this.stream = this.header.readUInt32LE(5);
        this.payload = Buffer.allocUnsafe(this.header.readUInt32LE(0) - 5);
        this.payloadHave = 0;
      } else {
        const take = Math.min(this.payload.length - this.payloadHave, chunk.length - off);
        chunk.copy(this.payload, this.payloadHave, off, off + take);
        this.payloadHave += take;
        off += take;
      }
      // (a frame with an empty payload is complete with its header)
      if (this.payload.length === this.payloadHave) frames.push(this.finish());
    }
    return frames;
  }

  /** Validates what of the header is in: the length from 4 bytes on, the type from 5. */
  private checkHeader(): void {
    if (this.headerHave < 4) return;
    const len = this.header.readUInt32LE(0);
    if (len < MIN_FRAME_LEN) throw new ProtocolError(`frame length ${len} is below the minimum of ${MIN_FRAME_LEN}`);
    if (len > MAX_FRAME_LEN) throw new ProtocolError(`frame length ${len} exceeds the maximum of ${MAX_FRAME_LEN}`);
    if (this.headerHave < 5) return;
    const byte = this.header.readUInt8(4);
    const type = String.fromCharCode(byte);
    if (HOST_TYPES.has(type)) throw new ProtocolError(`frame type ${showType(byte)} (${NAMES[type]}) is only sent by the host`);
    if (!GUEST_TYPES.has(type)) throw new ProtocolError(`unknown frame type ${showType(byte)}`);
    const problem = guestSizeProblem(type, len - 5);
    if (problem) throw new ProtocolError(problem);
    this.type = type;
  }

  private finish(): Frame {
    const payload = this.payload ?? Buffer.alloc(0);
    if (this.type === MSG.HELLO) {
      for (const b of payload) {
        if (b < 0x20 || b > 0x7e) throw new ProtocolError(`HELLO contains the non-printable byte 0x${b.toString(16).padStart(2, '0')}`);
      }
    }
    const frame: Frame = { type: this.type, stream: this.stream, payload };
    this.payload = undefined;
    this.payloadHave = 0;
    this.headerHave = 0;
    return frame;
  }
}

/** A terminal size as RUN's TERMINAL record and RESIZE carry it: u16 rows, u16 columns. */
export function encodeWinsize(rows: number, cols: number, field = 'size'): Buffer {
  const u16 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff;
  if (!u16(rows) || !u16(cols)) throw new ConfigError(field, `rows and columns must be integers from 0 to 65535, got ${rows}x${cols}`);
  const b = Buffer.alloc(4);
  b.writeUInt16LE(rows, 0);
  b.writeUInt16LE(cols, 2);
  return b;
}

/** A process for the agent to run (RUN's payload). */
export interface ProcessSpec {
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  groups: number[];
  /** Set for stream 0 only (the agent ignores it elsewhere). */
  hostname?: string;
  umask?: number;
  /** `resource` is Linux's RLIMIT_* number; 2^64-1 means infinity. */
  rlimits: { resource: number; soft: bigint; hard: bigint }[];
  /** Run on a new terminal in the guest of this size (its output all comes as STDOUT). */
  terminal?: { rows: number; cols: number };
  /** The spec's mounts the guest makes before stream 0 runs, in the spec's order; stream 0 only. */
  mounts?: GuestMount[];
  /** Remount the guest's root read-only once they are made (the spec's root.readonly); stream 0 only. */
  readonlyRoot?: boolean;
}

/** A mount the guest makes for the spec: a bind mount (a 9p share), or a tmpfs or mqueue of its own. */
export type GuestMount = GuestBind | GuestFsMount;

/** Flags of a guest mount, from the spec's options. */
interface MountFlags {
  readonly: boolean;
  nosuid: boolean;
  nodev: boolean;
  noexec: boolean;
}

/** One of the spec's tmpfs or mqueue mounts, made in the guest. */
export interface GuestFsMount extends MountFlags {
  kind: 'tmpfs' | 'mqueue';
  /** Absolute path in the container. */
  destination: string;
  /** The file system's options (tmpfs: size=, mode=, uid=, gid=, nr_inodes=), comma-separated. */
  data: string;
}

/** One of the spec's bind mounts as the guest mounts it: the 9p share `tag` at `destination`. */
export interface GuestBind extends MountFlags {
  kind: 'bind';
  tag: string;
  /** Absolute path in the container. */
  destination: string;
  /** The share holds one file, named "file", bound at `destination` (else the share is the directory). */
  file: boolean;
}

/** BIND's and MOUNT's flag bits (FILE: BIND only). */
export const BIND_FLAG = { READONLY: 1, FILE: 2, NOSUID: 4, NODEV: 8, NOEXEC: 16 } as const;
/** MOUNT's file system codes. */
export const MOUNT_FS = { tmpfs: 1, mqueue: 2 } as const;

/** RUN's TLV tags. */
export const RUN_TAG = { ARG: 1, ENV: 2, CWD: 3, UID: 4, GID: 5, GROUP: 6, HOSTNAME: 7, RLIMIT: 8, UMASK: 9, TERMINAL: 10, BIND: 11, MOUNT: 12, READONLY_ROOT: 13 } as const;
/** Limits the agent enforces on RUN (`mounts`: BIND and MOUNT records together). */
export const RUN_LIMITS = { strings: 4096, groups: 64, rlimits: 16, stringBytes: 128 * 1024, hostnameBytes: 64, mounts: 64, pathBytes: 4095, mountDataBytes: 1024 } as const;
/** A 9p mount tag QEMU and the agent accept. */
export const SHARE_TAG = /^[A-Za-z0-9_.-]{1,31}$/;
/** All ones: RLIM_INFINITY. */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

const isU32 = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** The RUN payload for `spec`; throws ConfigError naming the field that breaks a limit. */
export function encodeRun(spec: ProcessSpec): Buffer {
  const parts: Buffer[] = [];
  const record = (tag: number, value: Buffer): void => {
    const h = Buffer.allocUnsafe(5);
    h.writeUInt8(tag, 0);
    h.writeUInt32LE(value.length, 1);
    parts.push(h, value);
  };
  const str = (path: string, s: unknown, maxBytes: number = RUN_LIMITS.stringBytes): Buffer => {
    if (typeof s !== 'string') throw new ConfigError(path, 'must be a string');
    const b = Buffer.from(s, 'utf8');
    if (b.includes(0)) throw new ConfigError(path, 'must not contain a NUL byte');
    if (b.length > maxBytes) throw new ConfigError(path, `is ${b.length} bytes long (limit ${maxBytes})`);
    return b;
  };
  const u32 = (path: string, n: unknown): Buffer => {
    if (!isU32(n)) throw new ConfigError(path, `must be an integer from 0 to ${0xffffffff}`);
    return u32Payload(n);
  };

  if (!Array.isArray(spec.args) || spec.args.length === 0) throw new ConfigError('process.args', 'must name at least the program');
  if (!Array.isArray(spec.env)) throw new ConfigError('process.env', 'must be an array');
  if (spec.args.length + spec.env.length > RUN_LIMITS.strings) {
    throw new ConfigError('process.args', `args and env have ${spec.args.length + spec.env.length} entries together (limit ${RUN_LIMITS.strings})`);
  }
  if (spec.args[0] === '') throw new ConfigError('process.args[0]', 'must not be empty');
  spec.args.forEach((a, i) => record(RUN_TAG.ARG, str(`process.args[${i}]`, a)));
  spec.env.forEach((e, i) => {
    const b = str(`process.env[${i}]`, e);
    if (e.indexOf('=') <= 0) throw new ConfigError(`process.env[${i}]`, 'must have the form KEY=VALUE');
    record(RUN_TAG.ENV, b);
  });
  const cwd = str('process.cwd', spec.cwd);
  if (!spec.cwd.startsWith('/')) throw new ConfigError('process.cwd', 'must be an absolute path');
  record(RUN_TAG.CWD, cwd);
  record(RUN_TAG.UID, u32('process.user.uid', spec.uid));
  record(RUN_TAG.GID, u32('process.user.gid', spec.gid));
  if (!Array.isArray(spec.groups)) throw new ConfigError('process.user.additionalGids', 'must be an array');
  if (spec.groups.length > RUN_LIMITS.groups) {
    throw new ConfigError('process.user.additionalGids', `has ${spec.groups.length} entries (limit ${RUN_LIMITS.groups})`);
  }
  spec.groups.forEach((g, i) => record(RUN_TAG.GROUP, u32(`process.user.additionalGids[${i}]`, g)));
  if (spec.hostname !== undefined) record(RUN_TAG.HOSTNAME, str('hostname', spec.hostname, RUN_LIMITS.hostnameBytes));
  if (spec.umask !== undefined) {
    if (!isU32(spec.umask) || spec.umask > 0o777) throw new ConfigError('process.user.umask', 'must be an integer from 0 to 0o777');
    record(RUN_TAG.UMASK, u32Payload(spec.umask));
  }
  if (spec.terminal !== undefined) record(RUN_TAG.TERMINAL, encodeWinsize(spec.terminal.rows, spec.terminal.cols, 'process.consoleSize'));
  if (!Array.isArray(spec.rlimits)) throw new ConfigError('process.rlimits', 'must be an array');
  if (spec.rlimits.length > RUN_LIMITS.rlimits) {
    throw new ConfigError('process.rlimits', `has ${spec.rlimits.length} entries (limit ${RUN_LIMITS.rlimits})`);
  }
  spec.rlimits.forEach((r, i) => {
    const path = `process.rlimits[${i}]`;
    if (!isU32(r.resource)) throw new ConfigError(`${path}.type`, 'must be a resource number (u32)');
    for (const k of ['soft', 'hard'] as const) {
      const v = r[k];
      if (typeof v !== 'bigint' || v < 0n || v > RLIM_INFINITY) throw new ConfigError(`${path}.${k}`, 'must be a bigint from 0 to 2^64-1');
    }
    if (r.soft > r.hard) throw new ConfigError(`${path}.soft`, `${r.soft} is above the hard limit ${r.hard}`);
    const b = Buffer.allocUnsafe(20);
    b.writeUInt32LE(r.resource, 0);
    b.writeBigUInt64LE(r.soft, 4);
    b.writeBigUInt64LE(r.hard, 12);
    record(RUN_TAG.RLIMIT, b);
  });
  const mounts = spec.mounts ?? [];
  if (mounts.length > RUN_LIMITS.mounts) throw new ConfigError('mounts', `has ${mounts.length} mounts the guest makes (limit ${RUN_LIMITS.mounts} under microvm)`);
  mounts.forEach((m, i) => {
    const path = `mounts (guest mount ${i})`;
    const dest = str(`${path}.destination`, m.destination, RUN_LIMITS.pathBytes);
    if (!m.destination.startsWith('/') || m.destination.split('/').includes('..')) throw new ConfigError(`${path}.destination`, `must be an absolute path without "..", got "${m.destination}"`);
    const flags = (m.readonly ? BIND_FLAG.READONLY : 0) | (m.kind === 'bind' && m.file ? BIND_FLAG.FILE : 0) | (m.nosuid ? BIND_FLAG.NOSUID : 0) | (m.nodev ? BIND_FLAG.NODEV : 0) | (m.noexec ? BIND_FLAG.NOEXEC : 0);
    if (m.kind === 'bind') {
      if (!SHARE_TAG.test(m.tag)) throw new ConfigError(`${path}.tag`, `must be 1 to 31 of [A-Za-z0-9_.-], got "${m.tag}"`);
      const tag = Buffer.from(m.tag, 'latin1');
      // u8 flags, u8 tag length, the tag, the destination (the rest)
      record(RUN_TAG.BIND, Buffer.concat([Buffer.from([flags, tag.length]), tag, dest]));
      return;
    }
    const data = str(`${path}.options`, m.data, RUN_LIMITS.mountDataBytes);
    // u8 flags, u8 file system, the destination, NUL, the options (the rest)
    record(RUN_TAG.MOUNT, Buffer.concat([Buffer.from([flags, MOUNT_FS[m.kind]]), dest, Buffer.from([0]), data]));
  });
  if (spec.readonlyRoot === true) record(RUN_TAG.READONLY_ROOT, Buffer.alloc(0));
  const payload = Buffer.concat(parts);
  if (payload.length > MAX_PAYLOAD) {
    throw new ConfigError('process', `encodes to ${payload.length} bytes, more than a frame carries (${MAX_PAYLOAD})`);
  }
  return payload;
}

/** A u32 payload (KILL's signal, STARTED's pid, EXIT's status). */
export function u32Payload(n: number): Buffer {
  if (!isU32(n)) throw new RangeError(`${n} is not a u32`);
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/** EXIT's status: the exit code, or 128 + the signal. */
export function decodeExit(payload: Buffer): number {
  if (payload.length !== 4) throw new ProtocolError(`EXIT payload of ${payload.length} bytes (must be 4)`);
  return payload.readUInt32LE(0);
}

/** A DNS query the agent relays: a container sent `message` to the agent's listener for nameserver `server`. */
export interface NameQuery {
  /** The agent's number for it, echoed in the answer. */
  id: number;
  /** Index into the nameservers the host gave the agent (moat.dns=, in order). */
  server: number;
  transport: 'udp' | 'tcp';
  message: Buffer;
}

/** NAME_QUERY's fields (its size was checked by the decoder); throws ProtocolError on a bad transport. */
export function decodeNameQuery(payload: Buffer): NameQuery {
  if (payload.length < 6 + DNS_HEADER || payload.length > 6 + MAX_DNS_MESSAGE) throw new ProtocolError(`NAME_QUERY payload of ${payload.length} bytes (must be ${6 + DNS_HEADER} to ${6 + MAX_DNS_MESSAGE})`);
  const t = payload.readUInt8(5);
  if (t !== DNS_TRANSPORT.udp && t !== DNS_TRANSPORT.tcp) throw new ProtocolError(`NAME_QUERY transport ${t} (must be 0 for UDP or 1 for TCP)`);
  return { id: payload.readUInt32LE(0), server: payload.readUInt8(4), transport: t === DNS_TRANSPORT.udp ? 'udp' : 'tcp', message: payload.subarray(6) };
}

/** NAME_ANSWER's payload: query `id`'s answer, or no message (the query failed: UDP drops it, TCP closes). */
export function encodeNameAnswer(id: number, message: Buffer): Buffer {
  if (!isU32(id)) throw new ProtocolError(`cannot encode an answer to query ${id} (must be a u32)`);
  if (message.length > MAX_DNS_MESSAGE) throw new ProtocolError(`cannot encode a DNS answer of ${message.length} bytes (limit ${MAX_DNS_MESSAGE})`);
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32LE(id, 0);
  return Buffer.concat([head, message]);
}

/** LIST's pids. */
export function decodePids(payload: Buffer): number[] {
  if (payload.length % 4 !== 0) throw new ProtocolError(`LIST payload of ${payload.length} bytes (not a multiple of 4)`);
  const pids: number[] = [];
  for (let i = 0; i < payload.length; i += 4) pids.push(payload.readUInt32LE(i));
  return pids;
}
