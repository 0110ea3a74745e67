/**
 * Fuzz of what the containerd shim decodes from its peer (containerd, or anything that reaches
 * its socket): the ttrpc framing (src/shim/ttrpc.ts, FrameDecoder) and the protobuf decoding of
 * ttrpc.Request/Response, google.protobuf.Any and every containerd.task.v2 request type
 * (src/shim/proto.ts, `decode` and `unpackAny`).
 *
 * Properties, for every input:
 * - `decode` returns an object or throws a ShimProtocolError naming the message type, never
 *   anything else (protobufjs's own RangeErrors and "invalid wire type" errors must be wrapped);
 * - decoding never changes Object.prototype (a map key "__proto__" stays data);
 * - the frame decoder never throws on any bytes, splits a stream the same way however it is
 *   chunked, skips an oversized frame's payload without buffering it (2^32-1 announced bytes
 *   cost nothing), and never holds more than a header and one frame's payload;
 * - no input takes more than 1 s; resident memory grows by less than 200 MB.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ShimProtocolError, decode, encode, isKnownType, unpackAny } from '../../src/shim/proto.js';
import { FrameDecoder, HEADER_LENGTH, MAX_MESSAGE_LENGTH, MessageType, encodeFrame } from '../../src/shim/ttrpc.js';
import type { DecodedFrame } from '../../src/shim/ttrpc.js';
import { EDGE_U32, Rng, chunk, describeRun, expectTyped, fuzz, mutateBytes, render } from './prng.js';

/** Every request type of the containerd.task.v2 Task service, and the envelope types around them. */
const TASK_REQUESTS = [
  'CreateTaskRequest', 'DeleteRequest', 'ExecProcessRequest', 'ResizePtyRequest', 'StateRequest', 'KillRequest', 'CloseIORequest',
  'PidsRequest', 'CheckpointTaskRequest', 'UpdateTaskRequest', 'StartRequest', 'WaitRequest', 'StatsRequest', 'ConnectRequest',
  'ShutdownRequest', 'PauseRequest', 'ResumeRequest',
].map((n) => `containerd.task.v2.${n}`);
const ENVELOPES = ['ttrpc.Request', 'ttrpc.Response', 'google.protobuf.Any', 'google.rpc.Status', 'containerd.runc.v1.Options', 'runtimeoptions.v1.Options'];
const TYPES = [...TASK_REQUESTS, ...ENVELOPES];

// ---------------------------------------------------------------------------------------------
// Valid messages (to mutate)

const strings = (rng: Rng): string => rng.pick(['', 'c1', 'exec-1', '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1', 'a'.repeat(300), 'ü€😀', '\u0000', '__proto__']);

/** A valid random object of message `type` (the fields Moat reads, with edge values). */
function validObject(rng: Rng, type: string): Record<string, unknown> {
  const id = strings(rng);
  const execId = rng.chance(0.5) ? '' : strings(rng);
  const any = (): Record<string, unknown> => rng.pick([
    { typeUrl: 'containerd.runc.v1.Options', value: encode('containerd.runc.v1.Options', { root: '/run/moat', systemdCgroup: rng.chance(0.5), shimCgroup: strings(rng) }) },
    { typeUrl: 'runtimeoptions.v1.Options', value: encode('runtimeoptions.v1.Options', { typeUrl: 'x', configPath: '', configBody: Buffer.from('isolation = "sentry"\n') }) },
    { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify({ args: ['sh'], cwd: '/', user: { uid: 0, gid: 0 } })) },
    { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources', value: Buffer.from('{"memory":{"limit":1048576}}') },
    { typeUrl: '', value: Buffer.alloc(0) },
  ]);
  const u32 = (): number => rng.pick([0, 1, 9, 15, 0x7fffffff, 0xffffffff]);
  switch (type.replace(/^.*\./, '')) {
    case 'CreateTaskRequest':
      return {
        id, bundle: strings(rng), terminal: rng.chance(0.5), stdin: strings(rng), stdout: strings(rng), stderr: strings(rng),
        rootfs: Array.from({ length: rng.range(0, 3) }, () => ({ type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/a', 'upperdir=/b'] })),
        checkpoint: '', parentCheckpoint: '', ...(rng.chance(0.7) ? { options: any() } : {}),
      };
    case 'ExecProcessRequest':
      return { id, execId, terminal: rng.chance(0.5), stdin: strings(rng), stdout: '', stderr: '', spec: any() };
    case 'ResizePtyRequest':
      return { id, execId, width: u32(), height: u32() };
    case 'KillRequest':
      return { id, execId, signal: u32(), all: rng.chance(0.5) };
    case 'CloseIORequest':
      return { id, execId, stdin: rng.chance(0.5) };
    case 'CheckpointTaskRequest':
      return { id, path: strings(rng), options: any() };
    case 'UpdateTaskRequest':
      return { id, resources: any(), annotations: { a: 'b', [strings(rng)]: strings(rng), __proto__x: 'y' } };
    case 'ShutdownRequest':
      return { id, now: rng.chance(0.5) };
    case 'Request':
      return {
        service: 'containerd.task.v2.Task', method: rng.pick(['Create', 'Start', 'State', 'Kill', '']),
        payload: encode('containerd.task.v2.StateRequest', { id, execId }), timeoutNano: rng.pick([0, 1, 1e9, 2 ** 53 - 1, -1]),
        metadata: [{ key: 'containerd-namespace-ttrpc', value: 'k8s.io' }, { key: '__proto__', value: 'x' }],
      };
    case 'Response':
      return { status: { code: rng.int(17), message: strings(rng), details: [any()] }, payload: rng.bytes(rng.size(64)) };
    case 'Any':
      return any();
    case 'Status':
      return { code: rng.int(17), message: strings(rng), details: [any(), any()] };
    case 'Options':
      return type.startsWith('runtimeoptions') ? { typeUrl: 'x', configPath: strings(rng), configBody: rng.bytes(rng.size(64)) } : { root: strings(rng), systemdCgroup: true, binaryName: 'moat' };
    default: // the id/execId requests
      return { id, execId };
  }
}

// ---------------------------------------------------------------------------------------------
// Structure-aware wire bytes

/** A protobuf varint (up to 10 bytes for a u64); `overlong` pads it with 0x80 continuation bytes. */
function varint(v: bigint, overlong = 0): Buffer {
  const out: number[] = [];
  let x = BigInt.asUintN(64, v);
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x !== 0n || overlong > 0) b |= 0x80;
    out.push(b);
  } while (x !== 0n);
  for (let i = 0; i < overlong; i++) out.push(i === overlong - 1 ? 0x00 : 0x80);
  return Buffer.from(out);
}

const tag = (field: number, wire: number): Buffer => varint((BigInt(field) << 3n) | BigInt(wire));

/** One field whose encoding sits on an edge of the wire format. */
function edgeField(rng: Rng): Buffer {
  const field = rng.pick([0, 1, 2, 3, 4, 5, 7, 10, 15, 16, 2047, 2 ** 29 - 1, 2 ** 29]);
  switch (rng.int(8)) {
    case 0: {
      // a length-delimited field whose length is at an edge (most far beyond the bytes that follow)
      const len = rng.pick([0n, 1n, 127n, 128n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 35n, 2n ** 63n, 2n ** 64n - 1n]);
      return Buffer.concat([tag(field, 2), varint(len), rng.bytes(Number(len < 64n ? len : BigInt(rng.size(64))))]);
    }
    case 1: // a varint that is too long (11 bytes and more), or an unterminated one
      return Buffer.concat([tag(field, 0), rng.chance(0.5) ? varint(rng.u64(), rng.range(1, 6)) : Buffer.alloc(rng.range(1, 20), 0xff)]);
    case 2: {
      // groups nested deep (start-group without end, or balanced), around protobufjs's recursion limit
      const depth = rng.pick([1, 10, 99, 100, 101, 1000, 20000]);
      const start = tag(field || 1, 3);
      const end = tag(field || 1, 4);
      return Buffer.concat([Buffer.alloc(depth * start.length, start), rng.chance(0.5) ? Buffer.alloc(depth * end.length, end) : Buffer.alloc(0)]);
    }
    case 3: // the wire types that do not exist, and end-group alone
      return Buffer.concat([tag(field, rng.pick([4, 6, 7])), rng.bytes(rng.size(16))]);
    case 4: {
      // a nested message (a Mount, a Status, an Any) whose inner length overruns the outer one
      const inner = Buffer.concat([tag(1, 2), varint(BigInt(rng.range(0, 200))), rng.bytes(rng.size(32))]);
      return Buffer.concat([tag(field, 2), varint(BigInt(inner.length + rng.range(-3, 3))), inner]);
    }
    case 5: {
      // a map entry (UpdateTaskRequest.annotations is field 3) with odd keys, values or neither
      const key = Buffer.from(rng.pick(['__proto__', 'constructor', 'toString', '', 'k', '\u0000']));
      const entry = Buffer.concat([
        rng.chance(0.8) ? Buffer.concat([tag(1, 2), varint(BigInt(key.length)), key]) : Buffer.alloc(0),
        rng.chance(0.8) ? Buffer.concat([tag(2, 2), varint(1n), Buffer.from('v')]) : rng.chance(0.5) ? Buffer.concat([tag(2, 0), varint(5n)]) : Buffer.alloc(0),
      ]);
      return Buffer.concat([tag(rng.chance(0.7) ? 3 : field, 2), varint(BigInt(entry.length)), entry]);
    }
    case 6: // fixed32/fixed64 fields, truncated or not
      return Buffer.concat([tag(field, rng.pick([1, 5])), rng.bytes(rng.pick([0, 3, 4, 7, 8]))]);
    default: // a packed run where a scalar is expected
      return Buffer.concat([tag(field, 2), varint(BigInt(8)), Buffer.concat(Array.from({ length: 8 }, () => varint(BigInt(rng.int(200)))))]).subarray(0, rng.chance(0.5) ? undefined : 5);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks

const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype).sort().join(',');

/** Decodes `bytes` as `type` (both 64-bit modes): an object, or a ShimProtocolError naming the type. */
function checkDecode(type: string, bytes: Buffer, tally: { ok: number; refused: number }): void {
  for (const longs of [Number, String] as const) {
    let out: unknown;
    try {
      out = decode(type, bytes, longs);
    } catch (e) {
      const err = expectTyped(e, ShimProtocolError, `decode(${type})`);
      assert.ok(err.message.startsWith(`cannot decode ${type}: `) && err.message.length > `cannot decode ${type}: `.length, `unclear message: ${err.message}`);
      tally.refused++;
      continue;
    }
    assert.ok(typeof out === 'object' && out !== null, `decode(${type}) gave ${String(out)}`);
    tally.ok++;
    // the Any fields the shim unpacks: a ShimProtocolError for an unknown type or bad bytes, never more
    for (const key of ['options', 'spec', 'resources']) {
      const any = (out as Record<string, unknown>)[key] as { typeUrl?: unknown; value?: unknown } | null | undefined;
      if (any && typeof any.typeUrl === 'string' && Buffer.isBuffer(any.value)) {
        try {
          unpackAny(any as { typeUrl: string; value: Buffer });
        } catch (e) {
          expectTyped(e, ShimProtocolError, `unpackAny(${render(any.typeUrl, 80)})`);
        }
      }
    }
  }
  assert.equal(Object.getOwnPropertyNames(Object.prototype).sort().join(','), PROTO_NAMES, 'decoding changed Object.prototype');
  assert.equal(({} as Record<string, unknown>).v, undefined, 'decoding polluted Object.prototype');
}

/** Frames of a stream, as the decoder yields them (payloads copied, for comparing). */
function decodeAll(chunks: readonly Buffer[], maxLength?: number): { frames: DecodedFrame[]; peak: number } {
  const d = new FrameDecoder(maxLength);
  const frames: DecodedFrame[] = [];
  let peak = 0;
  const limit = HEADER_LENGTH + (maxLength ?? MAX_MESSAGE_LENGTH);
  for (const c of chunks) {
    let got: DecodedFrame[];
    try {
      got = d.push(c);
    } catch (e) {
      expectTyped(e, ShimProtocolError, 'FrameDecoder.push');
      throw e;
    }
    for (const f of got) {
      if (f.kind === 'frame') {
        assert.ok(f.payload.length <= (maxLength ?? MAX_MESSAGE_LENGTH));
        frames.push({ ...f, payload: Buffer.from(f.payload) });
      } else {
        assert.ok(f.length > (maxLength ?? MAX_MESSAGE_LENGTH));
        frames.push(f);
      }
    }
    peak = Math.max(peak, d.pending);
    assert.ok(d.pending < limit, `the decoder holds ${d.pending} bytes after a push`);
  }
  return { frames, peak };
}

/** A random frame header. */
function frameHeader(length: number, streamId: number, type: number, flags: number): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH);
  h.writeUInt32BE(length >>> 0, 0);
  h.writeUInt32BE(streamId >>> 0, 4);
  h.writeUInt8(type & 0xff, 8);
  h.writeUInt8(flags & 0xff, 9);
  return h;
}

// ---------------------------------------------------------------------------------------------

describe('fuzz: shim ttrpc framing and protobuf decoding', { timeout: 120_000 }, () => {
  it('every type named here is declared (the targets are real)', () => {
    for (const type of TYPES) assert.ok(isKnownType(type), type);
  });

  it(
    'FrameDecoder: a frame sent 1 byte per read decodes in time linear in its size',
    // it was quadratic (one Array.shift per buffered chunk) until this test found it
    () => {
      // 4 times the pieces: about 4 times the time if linear, 16 times if quadratic
      const cost = (kib: number): number => {
        const frame = encodeFrame(1, MessageType.REQUEST, Buffer.alloc(kib * 1024, 7));
        const d = new FrameDecoder();
        const t0 = performance.now();
        let frames = 0;
        for (let off = 0; off < frame.length; off++) frames += d.push(frame.subarray(off, off + 1)).length;
        assert.equal(frames, 1);
        return performance.now() - t0;
      };
      cost(4); // warm-up
      // the best of three runs each: a scheduling hiccup on a loaded machine adds, never removes, time
      const best = (kib: number): number => Math.min(cost(kib), cost(kib), cost(kib));
      const small = best(8);
      const large = best(32);
      assert.ok(large < 8 * small + 20, `8 KiB in 1-byte pieces took ${small.toFixed(1)} ms, 32 KiB ${large.toFixed(1)} ms (${(large / small).toFixed(1)}x)`);
    },
  );

  it('decode: random bytes as every request type', (t) => {
    const tally = { ok: 0, refused: 0 };
    const r = fuzz({
      name: 'shim decode random bytes',
      count: 8000,
      generate: (rng) => ({ type: rng.pick(TYPES), bytes: rng.bytes(rng.size(rng.chance(0.05) ? 65536 : 512)) }),
      show: (i) => `${i.type} ${render(i.bytes)}`,
      check: ({ type, bytes }) => checkDecode(type, bytes, tally),
    });
    t.diagnostic(`${describeRun('shim decode random bytes', r)}; ${tally.ok} decoded, ${tally.refused} refused`);
  });

  it('decode: mutations of valid encodings', (t) => {
    const tally = { ok: 0, refused: 0 };
    const r = fuzz({
      name: 'shim decode mutations',
      count: 8000,
      generate: (rng) => {
        const type = rng.pick(TYPES);
        const valid = encode(type, validObject(rng, type));
        // sometimes decoded as another type: the same bytes, the wrong schema
        return { type: rng.chance(0.15) ? rng.pick(TYPES) : type, bytes: rng.chance(0.1) ? valid : mutateBytes(rng, valid, 5) };
      },
      show: (i) => `${i.type} ${render(i.bytes)}`,
      check: ({ type, bytes }) => checkDecode(type, bytes, tally),
    });
    t.diagnostic(`${describeRun('shim decode mutations', r)}; ${tally.ok} decoded, ${tally.refused} refused`);
  });

  it('decode: wire-format edges (length fields at 0, max, 2^32-1, 2^64-1; overlong varints; deep groups; map keys)', (t) => {
    const tally = { ok: 0, refused: 0 };
    const r = fuzz({
      name: 'shim decode edges',
      count: 8000,
      generate: (rng) => {
        const type = rng.pick(TYPES);
        const parts = Array.from({ length: rng.range(1, 4) }, () => edgeField(rng));
        if (rng.chance(0.5)) parts.splice(rng.int(parts.length + 1), 0, encode(type, validObject(rng, type)));
        return { type, bytes: Buffer.concat(parts) };
      },
      show: (i) => `${i.type} ${render(i.bytes)}`,
      check: ({ type, bytes }) => checkDecode(type, bytes, tally),
    });
    t.diagnostic(`${describeRun('shim decode edges', r)}; ${tally.ok} decoded, ${tally.refused} refused`);
  });

  it('FrameDecoder: random bytes never throw, and chunking does not change the frames', (t) => {
    let frames = 0;
    const r = fuzz({
      name: 'shim frames random',
      count: 6000,
      generate: (rng) => {
        const b = rng.bytes(rng.size(4096));
        // plausible lengths now and then, so frames complete; a small decoder limit makes oversized frames cheap
        for (let off = 0; off + HEADER_LENGTH <= b.length && rng.chance(0.5); off += rng.range(HEADER_LENGTH, 300)) b.writeUInt32BE(rng.size(400), off);
        return { bytes: b, max: rng.chance(0.5) ? undefined : rng.pick([0, 1, 16, 256]) };
      },
      show: (i) => `max=${i.max} ${render(i.bytes)}`,
      check: ({ bytes, max }, rng) => {
        const whole = decodeAll([bytes], max);
        const cut = decodeAll(chunk(rng, bytes), max);
        assert.deepEqual(cut.frames, whole.frames);
        frames += whole.frames.length;
      },
    });
    t.diagnostic(`${describeRun('shim frames random', r)}; ${frames} frames`);
  });

  it('FrameDecoder: valid streams (oversized frames included) decode exactly, in any chunking', (t) => {
    const r = fuzz({
      name: 'shim frames valid',
      count: 5000,
      generate: (rng) => {
        // small decoder limits make the oversized path cheap; the real 4 MiB limit now and then
        const max = rng.chance(0.1) ? MAX_MESSAGE_LENGTH : rng.pick([64, 1024]);
        const expected: DecodedFrame[] = [];
        const parts: Buffer[] = [];
        const n = rng.range(1, 10);
        for (let i = 0; i < n; i++) {
          const streamId = rng.chance(0.3) ? rng.pick(EDGE_U32) : 2 * rng.int(100) + 1;
          const type = rng.chance(0.8) ? rng.pick([MessageType.REQUEST, MessageType.RESPONSE, MessageType.DATA]) : rng.int(256);
          const flags = rng.chance(0.8) ? 0 : rng.int(256);
          const len = rng.chance(0.15) ? max + rng.range(1, 300) : rng.chance(0.1) ? max : rng.size(Math.min(max, 2048));
          const payload = len > 4096 ? Buffer.alloc(len, rng.int(256)) : rng.bytes(len);
          if (len > max) {
            // an oversized frame: its header, then its payload, which the decoder skips
            parts.push(frameHeader(len, streamId, type, flags), payload);
            expected.push({ kind: 'oversized', streamId, type, flags, length: len });
          } else {
            parts.push(encodeFrame(streamId, type, payload, flags));
            expected.push({ kind: 'frame', streamId, type, flags, payload });
          }
        }
        return { bytes: Buffer.concat(parts), expected, max };
      },
      show: (i) => `max=${i.max} ${i.expected.length} frames ${render(i.bytes, 400)}`,
      check: ({ bytes, expected, max }, rng) => {
        assert.deepEqual(decodeAll([bytes], max).frames, expected);
        assert.deepEqual(decodeAll(chunk(rng, bytes, 8192), max).frames, expected);
      },
    });
    t.diagnostic(describeRun('shim frames valid', r));
  });

  it('FrameDecoder: oversized lengths (max+1 .. 2^32-1) are skipped, never buffered', (t) => {
    const r = fuzz({
      name: 'shim frames oversized',
      count: 2000,
      generate: (rng) => ({
        length: rng.pick([MAX_MESSAGE_LENGTH + 1, 2 ** 31 - 1, 2 ** 31, 0xfffffffe, 0xffffffff]),
        stream: rng.u32(),
        // what follows: up to 1 MiB of the skipped payload, in chunks of up to 64 KiB
        follow: rng.size(1 << 20),
      }),
      check: ({ length, stream, follow }, rng) => {
        const d = new FrameDecoder();
        const got = d.push(frameHeader(length, stream, MessageType.REQUEST, 0));
        assert.deepEqual(got, [{ kind: 'oversized', streamId: stream, type: MessageType.REQUEST, flags: 0, length }]);
        const block = Buffer.alloc(65536);
        for (let sent = 0; sent < follow; ) {
          const n = Math.min(follow - sent, 1 + rng.size(block.length - 1));
          assert.deepEqual(d.push(block.subarray(0, n)), []);
          assert.equal(d.pending, 0, 'the skipped payload was buffered');
          sent += n;
        }
      },
    });
    t.diagnostic(describeRun('shim frames oversized', r));
  });
});
