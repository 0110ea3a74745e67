/**
 * Fuzz of the host side of the microvm control protocol (src/backends/microvm/protocol.ts): the
 * FrameDecoder and the payload decoders (decodeExit, decodePids) read what the guest agent sends,
 * and the guest is untrusted.
 *
 * Properties, for every input:
 * - the decoder returns frames, or throws a ProtocolError (never a RangeError or TypeError), and
 *   after one it stays failed with that same error;
 * - every frame it returns is a guest-to-host type with a payload its type allows (HELLO
 *   printable, STARTED/EXIT 4 bytes, output within MAX_OUTPUT, ...);
 * - how a stream is cut into chunks does not change what it decodes to (valid streams decode to
 *   exactly the frames encoded);
 * - a header is judged from its own 9 bytes: a bad length (0, 4, MAX+1, 2^32-1) or type is
 *   refused before any payload is buffered, so at most one frame is ever held and resident
 *   memory stays within 200 MB of its start;
 * - no input takes more than 1 s.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  FrameDecoder,
  HEADER_SIZE,
  MAX_FAILURE,
  MAX_FRAME_LEN,
  MAX_HELLO,
  MAX_OUTPUT,
  MAX_PAYLOAD,
  MIN_FRAME_LEN,
  MSG,
  DNS_HEADER,
  MAX_DNS_MESSAGE,
  ProtocolError,
  decodeExit,
  decodeNameQuery,
  decodePids,
  encodeFrame,
  u32Payload,
} from '../../src/backends/microvm/protocol.js';
import type { Frame } from '../../src/backends/microvm/protocol.js';
import { EDGE_U32, Rng, chunk, describeRun, expectTyped, fuzz, mutateBytes, render } from './prng.js';

const GUEST_TYPES = [MSG.HELLO, MSG.STARTED, MSG.STDOUT, MSG.STDERR, MSG.EXIT, MSG.FAILURE, MSG.LIST, MSG.NAME_QUERY] as const;

/** The payload sizes a guest frame of each type may have (mirrors the protocol's reference). */
function sizeAllowed(type: string, size: number): boolean {
  switch (type) {
    case MSG.STARTED:
    case MSG.EXIT:
      return size === 4;
    case MSG.STDOUT:
    case MSG.STDERR:
      return size <= MAX_OUTPUT;
    case MSG.HELLO:
      return size >= 1 && size <= MAX_HELLO;
    case MSG.FAILURE:
      return size <= MAX_FAILURE;
    case MSG.LIST:
      return size % 4 === 0;
    case MSG.NAME_QUERY:
      return size >= 6 + DNS_HEADER && size <= 6 + MAX_DNS_MESSAGE;
    default:
      return false;
  }
}

/** Asserts what any frame the decoder hands out must satisfy. */
function checkFrame(f: Frame): void {
  assert.ok((GUEST_TYPES as readonly string[]).includes(f.type), `decoded a frame of type ${JSON.stringify(f.type)}`);
  assert.ok(Number.isInteger(f.stream) && f.stream >= 0 && f.stream <= 0xffffffff, `stream ${f.stream}`);
  assert.ok(Buffer.isBuffer(f.payload) && f.payload.length <= MAX_PAYLOAD);
  assert.ok(sizeAllowed(f.type, f.payload.length), `${f.type} frame with a ${f.payload.length}-byte payload`);
  if (f.type === MSG.HELLO) assert.ok(f.payload.every((b) => b >= 0x20 && b <= 0x7e), 'HELLO with a non-printable byte');
  // the payload decoders the monitor applies must agree with the frame decoder's checks
  if (f.type === MSG.EXIT) assert.equal(decodeExit(f.payload), f.payload.readUInt32LE(0));
  if (f.type === MSG.LIST) assert.equal(decodePids(f.payload).length, f.payload.length / 4);
  if (f.type === MSG.NAME_QUERY) {
    // a transport byte other than 0 or 1 is the monitor's ProtocolError (it ends the VM); else the message is the rest
    const t = f.payload.readUInt8(5);
    if (t > 1) assert.throws(() => decodeNameQuery(f.payload), ProtocolError);
    else assert.equal(decodeNameQuery(f.payload).message.length, f.payload.length - 6);
  }
}

/** What feeding a byte stream did: the frames, and the error that ended it (if any). */
interface Outcome {
  frames: Frame[];
  error?: ProtocolError;
  /** Bytes of the stream consumed when the error came (the chunk that raised it included). */
  at: number;
}

/** Feeds `chunks` to a fresh decoder, checking every frame, the error's class and its stickiness. */
function feed(chunks: readonly Buffer[]): Outcome {
  const d = new FrameDecoder();
  const frames: Frame[] = [];
  let at = 0;
  for (const c of chunks) {
    at += c.length;
    let got: Frame[];
    try {
      got = d.push(c);
    } catch (e) {
      const err = expectTyped(e, ProtocolError, 'FrameDecoder.push');
      assert.match(err.message, /^microvm agent protocol: \S/);
      // failed for good: the next push (even of nothing) throws the same error
      assert.throws(() => d.push(Buffer.from('H')), (e2: unknown) => e2 === err);
      return { frames, error: err, at };
    }
    for (const f of got) checkFrame(f);
    frames.push(...got);
    assert.ok(d.buffered <= HEADER_SIZE + MAX_PAYLOAD, `decoder holds ${d.buffered} bytes`);
  }
  return { frames, at };
}

/** A valid random guest frame; `small` keeps output and LIST payloads short (for byte-at-a-time feeding). */
function randomFrame(rng: Rng, small = false): Frame {
  const type = rng.pick(GUEST_TYPES);
  const stream = rng.chance(0.2) ? rng.pick(EDGE_U32) : rng.int(8);
  let payload: Buffer;
  switch (type) {
    case MSG.HELLO:
      payload = Buffer.from(Array.from({ length: rng.range(1, MAX_HELLO) }, () => 0x20 + rng.int(0x5f)));
      break;
    case MSG.STARTED:
    case MSG.EXIT:
      payload = u32Payload(rng.chance(0.3) ? rng.pick(EDGE_U32) : rng.u32());
      break;
    case MSG.STDOUT:
    case MSG.STDERR:
      payload = rng.bytes(small ? rng.size(2048) : rng.chance(0.05) ? MAX_OUTPUT : rng.size(MAX_OUTPUT));
      break;
    case MSG.FAILURE:
      payload = rng.bytes(rng.chance(0.05) ? MAX_FAILURE : rng.size(MAX_FAILURE));
      break;
    case MSG.NAME_QUERY: {
      const head = Buffer.concat([u32Payload(rng.u32()), Buffer.from([rng.int(4), rng.int(2)])]);
      payload = Buffer.concat([head, rng.bytes(DNS_HEADER + (small ? rng.size(512) : rng.chance(0.02) ? MAX_DNS_MESSAGE - DNS_HEADER : rng.size(4096)))]);
      break;
    }
    default:
      // the largest LIST (1 MiB) now and then: rarely, as each one costs megabytes of test buffers
      payload = !small && rng.chance(0.005) ? Buffer.alloc(MAX_PAYLOAD, rng.int(256)) : rng.bytes(4 * rng.size(256));
  }
  return { type, stream, payload };
}

/** A stream of 1 to 12 valid frames. */
function validStream(rng: Rng, small = false): { frames: Frame[]; bytes: Buffer } {
  const frames = Array.from({ length: rng.range(1, 12) }, () => randomFrame(rng, small));
  return { frames, bytes: Buffer.concat(frames.map(encodeFrame)) };
}

/** A raw header. */
function header(len: number, type: number, stream: number): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt32LE(len >>> 0, 0);
  h.writeUInt8(type & 0xff, 4);
  h.writeUInt32LE(stream >>> 0, 5);
  return h;
}

/** Frame lengths on the edges of the protocol's limits and of u32. */
const EDGE_LENGTHS = [
  ...EDGE_U32, MIN_FRAME_LEN - 1, MIN_FRAME_LEN, MIN_FRAME_LEN + 1, MIN_FRAME_LEN + 3, MIN_FRAME_LEN + 4, MIN_FRAME_LEN + 5,
  MIN_FRAME_LEN + MAX_HELLO, MIN_FRAME_LEN + MAX_HELLO + 1, MIN_FRAME_LEN + MAX_FAILURE, MIN_FRAME_LEN + MAX_FAILURE + 1,
  MIN_FRAME_LEN + MAX_OUTPUT, MIN_FRAME_LEN + MAX_OUTPUT + 1, MIN_FRAME_LEN + 6 + DNS_HEADER - 1, MIN_FRAME_LEN + 6 + DNS_HEADER,
  MIN_FRAME_LEN + 6 + MAX_DNS_MESSAGE, MIN_FRAME_LEN + 6 + MAX_DNS_MESSAGE + 1, MAX_FRAME_LEN - 4, MAX_FRAME_LEN - 1, MAX_FRAME_LEN, MAX_FRAME_LEN + 1,
];

describe('fuzz: microvm agent protocol (FrameDecoder, decodeExit, decodePids, decodeNameQuery)', { timeout: 120_000 }, () => {
  it('random bytes in random chunks: frames or a ProtocolError, never anything else', (t) => {
    let refused = 0;
    let decoded = 0;
    const r = fuzz({
      name: 'microvm random bytes',
      count: 10000,
      generate: (rng) => {
        const b = rng.bytes(rng.size(rng.chance(0.1) ? 70000 : 2048));
        // a plausible first byte pair now and then, so headers get past the length check more often
        if (b.length >= 5 && rng.chance(0.5)) {
          b.writeUInt32LE(rng.range(MIN_FRAME_LEN, 300), 0);
          b[4] = rng.pick(GUEST_TYPES).charCodeAt(0);
        }
        return b;
      },
      check: (input, rng) => {
        const out = feed(chunk(rng, input));
        if (out.error) refused++;
        decoded += out.frames.length;
      },
    });
    t.diagnostic(`${describeRun('microvm random bytes', r)}; ${refused} refused, ${decoded} frames decoded`);
  });

  it('valid frame streams: any chunking decodes to exactly the frames encoded', (t) => {
    let frames = 0;
    const r = fuzz({
      name: 'microvm valid streams',
      count: 2500,
      generate: (rng) => validStream(rng),
      show: (s) => `${s.frames.length} frames: ${render(s.bytes, 600)}`,
      check: (s, rng) => {
        const whole = feed([s.bytes]);
        const cut = feed(chunk(rng, s.bytes, 65536)); // at most 64K pieces: a 1 MiB frame byte by byte is the test's own second
        assert.equal(whole.error, undefined, `a valid stream was refused: ${whole.error?.message}`);
        assert.equal(cut.error, undefined, `a valid stream cut into chunks was refused: ${cut.error?.message}`);
        assert.deepEqual(whole.frames, s.frames);
        assert.deepEqual(cut.frames, s.frames);
        frames += s.frames.length;
      },
    });
    t.diagnostic(`${describeRun('microvm valid streams', r)}; ${frames} frames round-tripped`);
  });

  it('mutated valid streams: frames or a ProtocolError; chunking does not change the outcome', (t) => {
    let refused = 0;
    const r = fuzz({
      name: 'microvm mutated streams',
      count: 8000,
      generate: (rng) => mutateBytes(rng, validStream(rng, true).bytes, 6),
      check: (input, rng) => {
        const whole = feed([input]);
        const cut = feed(chunk(rng, input));
        // the finest chunking is the reference (1-byte chunks; 7-byte ones for long inputs, for time)
        const step = input.length <= 16384 ? 1 : 7;
        const bytewise = feed(Array.from({ length: Math.ceil(input.length / step) }, (_, i) => input.subarray(i * step, (i + 1) * step)));
        // the same error whatever the chunking, found at the same byte
        assert.equal(cut.error?.message, whole.error?.message);
        assert.equal(bytewise.error?.message, whole.error?.message);
        // the frames are the same; when an error ends the stream, a push that throws drops the frames
        // its own chunk completed before it (the monitor ends the VM then), so each chunking yields
        // a prefix of the frames that byte-at-a-time feeding yields
        const prefix = (a: Frame[], of: Frame[]): void => assert.deepEqual(a, of.slice(0, a.length));
        prefix(whole.frames, bytewise.frames);
        if (step === 1) prefix(cut.frames, bytewise.frames);
        else prefix(...(cut.frames.length <= bytewise.frames.length ? [cut.frames, bytewise.frames] : [bytewise.frames, cut.frames]) as [Frame[], Frame[]]);
        if (!whole.error) assert.equal(whole.frames.length, bytewise.frames.length);
        if (whole.error) refused++;
      },
    });
    t.diagnostic(`${describeRun('microvm mutated streams', r)}; ${refused} refused`);
  });

  it('headers at the edges: judged from their 9 bytes, refused before any payload is buffered', (t) => {
    let accepted = 0;
    const r = fuzz({
      name: 'microvm edge headers',
      count: 8000,
      generate: (rng) => ({
        len: rng.pick(EDGE_LENGTHS),
        type: rng.chance(0.6) ? rng.pick(GUEST_TYPES).charCodeAt(0) : rng.int(256),
        stream: rng.pick(EDGE_U32),
      }),
      check: ({ len, type, stream }, rng) => {
        const typeChar = String.fromCharCode(type);
        const ok = len >= MIN_FRAME_LEN && len <= MAX_FRAME_LEN && (GUEST_TYPES as readonly string[]).includes(typeChar) && sizeAllowed(typeChar, len - 5);
        const d = new FrameDecoder();
        const h = header(len, type, stream);
        const frames: Frame[] = [];
        let err: unknown;
        try {
          for (const c of chunk(rng, h)) frames.push(...d.push(c));
        } catch (e) {
          err = e;
        }
        if (!ok) {
          expectTyped(err, ProtocolError, `header len=${len} type=${type}`);
          return;
        }
        assert.equal(err, undefined, `a valid header (len=${len} type=${typeChar}) was refused: ${String(err)}`);
        assert.ok(d.buffered <= HEADER_SIZE, `after a header alone the decoder holds ${d.buffered} bytes`);
        // the payload completes the frame (an empty one is complete with its header)
        const payload = typeChar === MSG.HELLO ? Buffer.alloc(len - 5, 0x41) : rng.bytes(len - 5);
        if (len > MIN_FRAME_LEN) assert.equal(frames.length, 0);
        frames.push(...d.push(payload));
        assert.equal(frames.length, 1);
        checkFrame(frames[0]!);
        assert.equal(frames[0]!.stream, stream >>> 0);
        assert.equal(d.buffered, 0);
        accepted++;
      },
    });
    t.diagnostic(`${describeRun('microvm edge headers', r)}; ${accepted} accepted`);
  });

  it('a flood of oversized headers allocates nothing (resident memory stays flat)', (t) => {
    const r = fuzz({
      name: 'microvm oversized flood',
      count: 2000,
      rssLimitMb: 200,
      generate: (rng) => header(rng.pick([MAX_FRAME_LEN + 1, 0x7fffffff, 0xfffffffe, 0xffffffff]), rng.pick(GUEST_TYPES).charCodeAt(0), rng.u32()),
      check: (h) => {
        // each decoder fails on its header; none may have reserved room for the announced payload
        const d = new FrameDecoder();
        assert.throws(() => d.push(h), (e: unknown) => e instanceof ProtocolError && /exceeds the maximum/.test(e.message));
        assert.ok(d.buffered <= HEADER_SIZE);
      },
    });
    t.diagnostic(describeRun('microvm oversized flood', r));
  });

  it('decodeExit and decodePids: any payload gives a value or a ProtocolError', (t) => {
    const r = fuzz({
      name: 'microvm payload decoders',
      count: 6000,
      generate: (rng) => rng.bytes(rng.chance(0.5) ? rng.pick([0, 1, 3, 4, 5, 8, 12, 4095, 4096]) : rng.size(8192)),
      check: (p) => {
        try {
          const status = decodeExit(p);
          assert.ok(p.length === 4 && status === p.readUInt32LE(0));
        } catch (e) {
          expectTyped(e, ProtocolError, 'decodeExit');
          assert.notEqual(p.length, 4);
        }
        try {
          const pids = decodePids(p);
          assert.ok(p.length % 4 === 0 && pids.length === p.length / 4 && pids.every((n) => Number.isInteger(n) && n >= 0));
        } catch (e) {
          expectTyped(e, ProtocolError, 'decodePids');
          assert.notEqual(p.length % 4, 0);
        }
      },
    });
    t.diagnostic(describeRun('microvm payload decoders', r));
  });

  it('encodeFrame: any frame description encodes or raises a ProtocolError', (t) => {
    const r = fuzz({
      name: 'microvm encodeFrame',
      count: 4000,
      generate: (rng) => ({
        type: rng.pick([...GUEST_TYPES, MSG.RUN, MSG.STDIN, MSG.KILL, MSG.PS, MSG.SHUTDOWN, '', 'HH', 'Z', '\u0000', '\u0148', 'constructor']),
        stream: rng.pick([0, 1, 0xffffffff, 2 ** 32, -1, 1.5, NaN, Infinity, 2 ** 53]),
        payload: rng.chance(0.02) ? Buffer.alloc(MAX_PAYLOAD + rng.range(0, 1)) : rng.bytes(rng.size(512)),
      }),
      show: (f) => render({ ...f, payload: `<${f.payload.length} bytes>` }),
      check: (f) => {
        let out: Buffer;
        try {
          out = encodeFrame(f);
        } catch (e) {
          expectTyped(e, ProtocolError, 'encodeFrame');
          return;
        }
        assert.equal(out.length, HEADER_SIZE + f.payload.length);
        assert.equal(out.readUInt32LE(0), f.payload.length + 5);
        assert.equal(out.readUInt32LE(5), f.stream);
      },
    });
    t.diagnostic(describeRun('microvm encodeFrame', r));
  });
});
