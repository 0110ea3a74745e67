/**
 * ttrpc (github.com/containerd/ttrpc, the protocol containerd speaks to its shims) over a unix
 * stream socket: a frame decoder, a server and a client.
 *
 * Wire format (ttrpc channel.go): every message is a frame of a 10-byte header and a payload.
 *
 *     u32 length (big-endian, payload bytes after the header, at most 4 MiB)
 *     u32 stream id (big-endian; clients use odd ids 1, 3, 5, ...)
 *     u8  type (1 request, 2 response, 3 data: the streaming extension of ttrpc 1.2, ignored here)
 *     u8  flags (reserved, 0)
 *
 * A request payload is a protobuf `ttrpc.Request` {service, method, payload, timeout_nano,
 * metadata}; the response, on the same stream id, a `ttrpc.Response` {status (google.rpc.Status),
 * payload}. Requests on one connection are served concurrently and answered in completion order.
 *
 * A frame whose length exceeds 4 MiB is handled as ttrpc does: its payload is skipped (never
 * buffered), the peer gets a RESOURCE_EXHAUSTED response on that stream id, and the connection
 * stays usable. Like ttrpc, the server ignores frames that are not requests and answers a
 * request it cannot parse, or one on an even stream id, with INVALID_ARGUMENT.
 */
import net from 'node:net';
import { MoatError } from '../errors.js';
import { ShimProtocolError, decode, encode } from './proto.js';
import type { KeyValue, TtrpcRequest, TtrpcResponse } from './proto.js';

/** Bytes of a frame header. */
export const HEADER_LENGTH = 10;
/** Largest frame payload either side accepts (ttrpc's messageLengthMax, 4 MiB). */
export const MAX_MESSAGE_LENGTH = 4 << 20;

/** Frame type bytes. */
export const MessageType = {
  REQUEST: 1,
  RESPONSE: 2,
  /** Stream data (ttrpc 1.2 streaming); Moat neither sends nor serves it. */
  DATA: 3,
} as const;

/** gRPC status codes, as ttrpc responses carry them. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
/** One value of {@link Code}. */
export type Code = (typeof Code)[keyof typeof Code];

const CODE_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(Code).map(([k, v]) => [v, k]));

/** The name of a status code (`NOT_FOUND`), or `CODE(<n>)` for one gRPC does not define. */
export function codeName(code: number): string {
  return CODE_NAMES.get(code) ?? `CODE(${code})`;
}

/**
 * A non-OK ttrpc status: what a handler throws to answer with a given code, and what
 * TtrpcClient.call rejects with when the server answers with one. `message` is the status
 * message exactly as sent.
 */
export class TtrpcStatusError extends MoatError {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** The ttrpc connection could not be made, or was closed (or timed out connecting) before the answer came. */
export class TtrpcConnectionError extends MoatError {}

// ---------------------------------------------------------------------------------------------
// Framing

/** A complete frame. */
export interface Frame {
  kind: 'frame';
  streamId: number;
  type: number;
  flags: number;
  payload: Buffer;
}

/** The header of a frame longer than the decoder's limit; its payload is skipped, not returned. */
export interface OversizedFrame {
  kind: 'oversized';
  streamId: number;
  type: number;
  flags: number;
  length: number;
}

/** What {@link FrameDecoder.push} yields. */
export type DecodedFrame = Frame | OversizedFrame;

/** Encodes one frame; throws ShimProtocolError for a payload longer than {@link MAX_MESSAGE_LENGTH}. */
export function encodeFrame(streamId: number, type: number, payload: Uint8Array, flags = 0): Buffer {
  if (payload.length > MAX_MESSAGE_LENGTH) {
    throw new ShimProtocolError(`ttrpc frame of ${payload.length} bytes exceeds the maximum of ${MAX_MESSAGE_LENGTH}`);
  }
  const frame = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt32BE(streamId >>> 0, 4);
  frame.writeUInt8(type & 0xff, 8);
  frame.writeUInt8(flags & 0xff, 9);
  frame.set(payload, HEADER_LENGTH);
  return frame;
}

/**
 * Splits a byte stream into frames: feed it chunks as they arrive, get the frames they complete.
 * Pure (no I/O). It holds at most one header plus `maxLength` payload bytes, and skips the
 * payload of an oversized frame after reporting its header.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private skipping = 0;
  private header: Omit<OversizedFrame, 'kind'> | undefined;

  constructor(private readonly maxLength: number = MAX_MESSAGE_LENGTH) {}

  /** Bytes held: a partial header or payload. */
  get pending(): number {
    return this.buffered;
  }

  /** Adds `chunk` and returns every frame (or oversized header) completed so far, in order. */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (chunk.length > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.length;
    }
    const out: DecodedFrame[] = [];
    for (;;) {
      if (this.skipping > 0) {
        this.skipping -= this.drop(Math.min(this.skipping, this.buffered));
        if (this.skipping > 0) break;
      }
      if (this.header === undefined) {
        if (this.buffered < HEADER_LENGTH) break;
        const h = this.take(HEADER_LENGTH);
        const header = { streamId: h.readUInt32BE(4), type: h.readUInt8(8), flags: h.readUInt8(9), length: h.readUInt32BE(0) };
        if (header.length > this.maxLength) {
          out.push({ kind: 'oversized', ...header });
          this.skipping = header.length;
          continue;
        }
        this.header = header;
      }
      const { length, streamId, type, flags } = this.header;
      if (this.buffered < length) break;
      this.header = undefined;
      out.push({ kind: 'frame', streamId, type, flags, payload: this.take(length) });
    }
    return out;
  }

  /** Removes and returns the first `n` buffered bytes (n <= buffered). */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    // one pass over the chunks and one splice: shifting chunk by chunk would make a frame that
    // arrives in k pieces cost O(k^2) (found by the fuzz tests)
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    let i = 0;
    while (off < n) {
      const c = this.chunks[i];
      if (c === undefined) throw new Error('FrameDecoder: take beyond buffered bytes'); // a bug, not input
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) i++;
      else this.chunks[i] = c.subarray(k);
    }
    this.chunks.splice(0, i);
    this.buffered -= n;
    return out;
  }

  /** Discards the first `n` buffered bytes and returns n. */
  private drop(n: number): number {
    let left = n;
    let i = 0;
    while (left > 0) {
      const c = this.chunks[i];
      if (c === undefined) break;
      if (c.length <= left) {
        i++;
        left -= c.length;
      } else {
        this.chunks[i] = c.subarray(left);
        left = 0;
      }
    }
    this.chunks.splice(0, i);
    this.buffered -= n - left;
    return n - left;
  }
}

/** The message ttrpc sends for an oversized frame (channel.go). */
function oversizedMessage(length: number): string {
  return `message length ${length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`;
}

// ---------------------------------------------------------------------------------------------
// Server

/** What a handler learns about its request besides the payload. */
export interface HandlerContext {
  /** The request's ttrpc metadata (e.g. `containerd-namespace-ttrpc`), keys as sent. */
  metadata: Record<string, string[]>;
  /**
   * Aborted when the request's deadline (its timeout_nano) passes, with a DEADLINE_EXCEEDED
   * TtrpcStatusError as reason, or when the connection closes, with a CANCELLED one.
   * Handlers may ignore it; the response is then dropped if the connection is gone.
   */
  signal: AbortSignal;
}

/**
 * Serves one method: gets the request's protobuf payload, resolves to the response's. It may
 * throw a TtrpcStatusError to answer with that status; a ShimProtocolError (a payload that does
 * not decode) answers INTERNAL, anything else UNKNOWN, each with the error's message.
 */
export type Handler = (payload: Buffer, ctx: HandlerContext) => Promise<Buffer>;

/**
 * A ttrpc server. Handlers are keyed by `"<service>/<method>"`, e.g.
 * `containerd.task.v2.Task/Create`. Each request runs as soon as it arrives, so a long Wait does
 * not hold up a Kill on the same connection.
 */
export class TtrpcServer {
  private readonly services: ReadonlySet<string>;
  private readonly servers = new Set<net.Server>();
  private readonly conns = new Set<ServerConnection>();
  private closing: Promise<void> | undefined;

  constructor(private readonly handlers: Map<string, Handler>) {
    this.services = new Set([...handlers.keys()].map((k) => k.slice(0, k.lastIndexOf('/'))));
  }

  /** Open connections. */
  get connections(): number {
    return this.conns.size;
  }

  /**
   * Listens on a new unix socket at `path` (which must not exist) and serves it; resolves once
   * listening.
   */
  listen(path: string): Promise<void> {
    const server = net.createServer();
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        this.serve(server);
        resolve();
      });
    });
  }

  /**
   * Serves a listening socket inherited as file descriptor `fd` (how a shim started by
   * `containerd-shim-* start` receives its socket); resolves once listening.
   */
  serveFd(fd: number): Promise<void> {
    const server = net.createServer();
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        this.serve(server);
        resolve();
      });
    });
  }

  /** Serves the connections of an existing net.Server (listening or not yet); close() closes it. */
  serve(server: net.Server): void {
    if (this.closing !== undefined) throw new TtrpcConnectionError('ttrpc: server closed');
    this.servers.add(server);
    server.on('connection', (socket: net.Socket) => {
      if (this.closing !== undefined) {
        socket.destroy();
        return;
      }
      const conn = new ServerConnection(socket, this);
      this.conns.add(conn);
      socket.once('close', () => this.conns.delete(conn));
    });
    // A listening socket that fails (e.g. EMFILE on accept) must not crash the shim.
    server.on('error', () => undefined);
  }

  /**
   * Stops accepting connections, lets in-flight requests finish and their responses go out,
   * then closes every connection; requests arriving meanwhile get UNAVAILABLE. Resolves when
   * all is closed. With `timeoutMs`, connections still busy after that long are dropped (their
   * handlers' signals abort). Do not await this inside a handler: it waits for that handler.
   */
  close(timeoutMs?: number): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    const servers = [...this.servers].map(
      (s) =>
        new Promise<void>((resolve) => {
          if (!s.listening) resolve();
          else s.close(() => resolve());
        }),
    );
    const conns = [...this.conns].map((c) => c.shutdown());
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        for (const c of this.conns) c.destroy();
      }, timeoutMs);
    }
    this.closing = Promise.all([...servers, ...conns]).then(() => {
      if (timer !== undefined) clearTimeout(timer);
    });
    return this.closing;
  }

  /** Whether close() has been called. */
  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  /** Runs the request `req` and resolves to its response; never rejects. */
  async dispatch(req: TtrpcRequest, ctx: HandlerContext): Promise<TtrpcResponse> {
    const handler = this.handlers.get(`${req.service}/${req.method}`);
    if (handler === undefined) {
      const message = this.services.has(req.service) ? `method ${req.method}` : `service ${req.service}`;
      return failure(Code.UNIMPLEMENTED, message);
    }
    try {
      const payload: unknown = await handler(req.payload, ctx);
      if (!(payload instanceof Uint8Array)) return failure(Code.INTERNAL, `ttrpc: ${req.service}/${req.method} returned no payload`);
      return { status: { code: Code.OK, message: '', details: [] }, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength) };
    } catch (e) {
      if (e instanceof TtrpcStatusError) return failure(e.code | 0, String(e.message));
      if (e instanceof ShimProtocolError) return failure(Code.INTERNAL, e.message);
      return failure(Code.UNKNOWN, e instanceof Error ? e.message : String(e));
    }
  }
}

/** A response carrying only a non-OK status. */
function failure(code: number, message: string): TtrpcResponse {
  return { status: { code, message, details: [] }, payload: Buffer.alloc(0) };
}

/** One accepted connection of a TtrpcServer. */
class ServerConnection {
  private readonly decoder = new FrameDecoder();
  private readonly inflight = new Set<AbortController>();
  private shuttingDown = false;
  private readonly closed: Promise<void>;

  constructor(private readonly socket: net.Socket, private readonly server: TtrpcServer) {
    this.closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // ECONNRESET and the like: the 'close' that follows cleans up.
    socket.on('error', () => undefined);
    socket.once('close', () => {
      for (const ac of this.inflight) ac.abort(new TtrpcStatusError(Code.CANCELLED, 'connection closed'));
      this.inflight.clear();
    });
  }

  /** Ends the connection once no request is in flight; resolves when it is closed. */
  shutdown(): Promise<void> {
    this.shuttingDown = true;
    this.endIfIdle();
    return this.closed;
  }

  /** Drops the connection now. */
  destroy(): void {
    this.socket.destroy();
  }

  private endIfIdle(): void {
    if (this.shuttingDown && this.inflight.size === 0 && !this.socket.destroyed) {
      this.socket.end(() => this.socket.destroy());
    }
  }

  private onData(chunk: Buffer): void {
    for (const frame of this.decoder.push(chunk)) {
      if (frame.kind === 'oversized') {
        this.send(frame.streamId, failure(Code.RESOURCE_EXHAUSTED, oversizedMessage(frame.length)));
        continue;
      }
      if (frame.type !== MessageType.REQUEST) continue; // ttrpc ignores these, for future compatibility
      let req: TtrpcRequest;
      try {
        req = decode<TtrpcRequest>('ttrpc.Request', frame.payload);
      } catch (e) {
        this.send(frame.streamId, failure(Code.INVALID_ARGUMENT, `unmarshal request error: ${(e as Error).message}`));
        continue;
      }
      if (frame.streamId % 2 !== 1) {
        this.send(frame.streamId, failure(Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams'));
        continue;
      }
      if (this.shuttingDown) {
        this.send(frame.streamId, failure(Code.UNAVAILABLE, 'ttrpc: server closed'));
        continue;
      }
      this.run(frame.streamId, req);
    }
  }

  private run(streamId: number, req: TtrpcRequest): void {
    const ac = new AbortController();
    this.inflight.add(ac);
    const metadata: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
    for (const kv of req.metadata) (metadata[kv.key] ??= []).push(kv.value);
    let timer: NodeJS.Timeout | undefined;
    if (req.timeoutNano > 0) {
      // setTimeout's limit is 2^31-1 ms; a longer deadline is as good as none.
      const ms = Math.ceil(req.timeoutNano / 1e6);
      if (ms < 2 ** 31) {
        timer = setTimeout(() => ac.abort(new TtrpcStatusError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded')), ms);
      }
    }
    void this.server.dispatch(req, { metadata, signal: ac.signal }).then((resp) => {
      if (timer !== undefined) clearTimeout(timer);
      if (this.inflight.delete(ac)) this.send(streamId, resp);
      this.endIfIdle();
    });
  }

  private send(streamId: number, resp: TtrpcResponse): void {
    if (this.socket.destroyed || this.socket.writableEnded) return;
    let bytes: Buffer;
    try {
      bytes = encode('ttrpc.Response', resp);
    } catch (e) {
      // e.g. a status message that is not a string: still answer, never crash the shim
      bytes = encode('ttrpc.Response', failure(Code.INTERNAL, `ttrpc: cannot encode response: ${(e as Error).message}`));
    }
    if (bytes.length > MAX_MESSAGE_LENGTH) {
      bytes = encode('ttrpc.Response', failure(Code.RESOURCE_EXHAUSTED, oversizedMessage(bytes.length)));
    }
    this.socket.write(encodeFrame(streamId, MessageType.RESPONSE, bytes));
  }
}

// ---------------------------------------------------------------------------------------------
// Client

interface PendingCall {
  resolve(payload: Buffer): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * A ttrpc client over one unix socket connection. Calls may overlap; each gets its own odd
 * stream id (1, 3, 5, ...).
 */
export class TtrpcClient {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, PendingCall>();
  private nextStreamId = 1;
  private closeError: Error | undefined;
  private readonly closedPromise: Promise<void>;

  private constructor(private readonly socket: net.Socket) {
    this.closedPromise = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e: Error) => {
      this.closeError ??= new TtrpcConnectionError(`ttrpc: connection failed: ${e.message}`, { cause: e });
    });
    socket.once('close', () => {
      this.closeError ??= new TtrpcConnectionError('ttrpc: closed');
      for (const [id, call] of this.pending) {
        this.pending.delete(id);
        if (call.timer !== undefined) clearTimeout(call.timer);
        call.reject(this.closeError);
      }
    });
  }

  /** Connects to the ttrpc server listening at unix socket `path`; rejects with TtrpcConnectionError. */
  static connect(path: string, timeoutMs?: number): Promise<TtrpcClient> {
    return new Promise<TtrpcClient>((resolve, reject) => {
      const socket = net.createConnection({ path });
      let timer: NodeJS.Timeout | undefined;
      const fail = (e: Error): void => {
        if (timer !== undefined) clearTimeout(timer);
        socket.destroy();
        reject(new TtrpcConnectionError(`ttrpc: cannot connect to ${path}: ${e.message}`, { cause: e }));
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => fail(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }
      socket.once('error', fail);
      socket.once('connect', () => {
        if (timer !== undefined) clearTimeout(timer);
        socket.off('error', fail);
        resolve(new TtrpcClient(socket));
      });
    });
  }

  /** Whether the connection is closed (by close(), the server, or an error). */
  get closed(): boolean {
    return this.closeError !== undefined || this.socket.destroyed;
  }

  /**
   * Calls `service`/`method` with a protobuf payload and resolves to the response's payload.
   * Rejects with TtrpcStatusError for a non-OK status (DEADLINE_EXCEEDED when `timeoutMs`
   * passes first; the timeout is also sent to the server as the request's deadline), with
   * TtrpcConnectionError if the connection is or gets closed, and with ShimProtocolError for a
   * response that does not parse. `metadata` becomes the request's ttrpc metadata.
   */
  call(
    service: string,
    method: string,
    payload: Buffer,
    timeoutMs?: number,
    metadata?: Record<string, string | string[]>,
  ): Promise<Buffer> {
    if (this.closed) return Promise.reject(this.closeError ?? new TtrpcConnectionError('ttrpc: closed'));
    if (this.nextStreamId > 0xffffffff) {
      return Promise.reject(new TtrpcConnectionError('ttrpc: stream ids exhausted on this connection'));
    }
    const kvs: KeyValue[] = [];
    for (const [key, v] of Object.entries(metadata ?? {})) {
      for (const value of Array.isArray(v) ? v : [v]) kvs.push({ key, value });
    }
    let bytes: Buffer;
    try {
      bytes = encode('ttrpc.Request', {
        service,
        method,
        payload,
        timeoutNano: timeoutMs !== undefined && timeoutMs > 0 ? Math.round(timeoutMs * 1e6) : 0,
        metadata: kvs,
      });
    } catch (e) {
      return Promise.reject(e as Error);
    }
    if (bytes.length > MAX_MESSAGE_LENGTH) {
      return Promise.reject(new TtrpcStatusError(Code.RESOURCE_EXHAUSTED, oversizedMessage(bytes.length)));
    }
    const streamId = this.nextStreamId;
    this.nextStreamId += 2;
    return new Promise<Buffer>((resolve, reject) => {
      const call: PendingCall = { resolve, reject, timer: undefined };
      if (timeoutMs !== undefined) {
        call.timer = setTimeout(() => {
          this.pending.delete(streamId);
          reject(new TtrpcStatusError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded'));
        }, timeoutMs);
      }
      this.pending.set(streamId, call);
      this.socket.write(encodeFrame(streamId, MessageType.REQUEST, bytes));
    });
  }

  /** Closes the connection; pending calls reject with TtrpcConnectionError. */
  close(): Promise<void> {
    this.closeError ??= new TtrpcConnectionError('ttrpc: closed');
    this.socket.destroy();
    return this.closedPromise;
  }

  private onData(chunk: Buffer): void {
    for (const frame of this.decoder.push(chunk)) {
      const call = this.pending.get(frame.streamId);
      if (call === undefined) continue; // timed out, or never asked for: ttrpc logs and drops it
      this.pending.delete(frame.streamId);
      if (call.timer !== undefined) clearTimeout(call.timer);
      if (frame.kind === 'oversized') {
        call.reject(new TtrpcStatusError(Code.RESOURCE_EXHAUSTED, oversizedMessage(frame.length)));
        continue;
      }
      if (frame.type !== MessageType.RESPONSE) {
        call.reject(new ShimProtocolError(`ttrpc: unexpected message type ${frame.type} on stream ${frame.streamId}`));
        continue;
      }
      let resp: TtrpcResponse;
      try {
        resp = decode<TtrpcResponse>('ttrpc.Response', frame.payload);
      } catch (e) {
        call.reject(e as Error);
        continue;
      }
      if (resp.status !== null && resp.status.code !== Code.OK) {
        call.reject(new TtrpcStatusError(resp.status.code, resp.status.message));
      } else {
        call.resolve(resp.payload);
      }
    }
  }
}
