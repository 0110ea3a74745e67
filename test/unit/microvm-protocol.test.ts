/**
 * The microvm control protocol, host side (src/backends/microvm/protocol.ts): frame and RUN
 * encoding, the decoder across chunk boundaries, its refusal of everything a guest must not
 * send, a seeded fuzz, and a check that the built agent (dist/moat-agent) is a static ELF.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  BIND_FLAG,
  FrameDecoder,
  MOUNT_FS,
  MAX_FRAME_LEN,
  MAX_OUTPUT,
  MAX_PAYLOAD,
  MSG,
  ProtocolError,
  RLIM_INFINITY,
  RUN_TAG,
  STREAM_ALL,
  DNS_HEADER,
  DNS_TRANSPORT,
  MAX_DNS_MESSAGE,
  decodeExit,
  decodeNameQuery,
  decodePids,
  encodeFrame,
  encodeNameAnswer,
  encodeRun,
  u32Payload,
} from '../../src/backends/microvm/protocol.js';
import type { Frame, GuestMount, ProcessSpec } from '../../src/backends/microvm/protocol.js';
import { REPO } from '../helpers/runtime.js';
import { ConfigError } from '../../src/errors.js';


/** A raw frame, for what encodeFrame refuses to build. */
function raw(len: number, type: number, stream = 0, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUInt32LE(len, 0);
  h.writeUInt8(type, 4);
  h.writeUInt32LE(stream, 5);
  return Buffer.concat([h, payload]);
}

/** Decodes one input fed as a single chunk. */
const decode = (b: Buffer): Frame[] => new FrameDecoder().push(b);

/** Asserts that `b` is refused with a ProtocolError whose message matches `re`. */
function refused(b: Buffer, re: RegExp): void {
  assert.throws(() => decode(b), (e: unknown) => e instanceof ProtocolError && re.test(e.message));
}

/** The guest-side reading of a RUN payload, as the agent parses it. */
function parseRun(p: Buffer): { tag: number; value: Buffer }[] {
  const out: { tag: number; value: Buffer }[] = [];
  let off = 0;
  while (off < p.length) {
    const tag = p.readUInt8(off);
    const len = p.readUInt32LE(off + 1);
    out.push({ tag, value: p.subarray(off + 5, off + 5 + len) });
    off += 5 + len;
  }
  assert.equal(off, p.length);
  return out;
}

const SPEC: ProcessSpec = {
  args: ['sh', '-c', 'echo hi'],
  env: ['PATH=/usr/bin:/bin', 'HOME=/root'],
  cwd: '/work',
  uid: 1000,
  gid: 100,
  groups: [10, 20],
  hostname: 'box',
  umask: 0o022,
  rlimits: [{ resource: 7, soft: 1024n, hard: RLIM_INFINITY }],
};

/** Every guest-to-host frame type with a valid payload. */
const GUEST_FRAMES: Frame[] = [
  { type: MSG.HELLO, stream: 0, payload: Buffer.from('6.1.0-56-amd64') },
  { type: MSG.STARTED, stream: 0, payload: u32Payload(1234) },
  { type: MSG.STDOUT, stream: 1, payload: Buffer.from('out\n') },
  { type: MSG.STDERR, stream: 1, payload: Buffer.alloc(MAX_OUTPUT, 0x61) },
  { type: MSG.NAME_QUERY, stream: STREAM_ALL, payload: Buffer.concat([u32Payload(3), Buffer.from([0, 0]), Buffer.alloc(MAX_DNS_MESSAGE, 1)]) },
  { type: MSG.STDOUT, stream: 2, payload: Buffer.alloc(0) },
  { type: MSG.EXIT, stream: 1, payload: u32Payload(137) },
  { type: MSG.FAILURE, stream: STREAM_ALL, payload: Buffer.from('exec /nonexistent: No such file or directory') },
  { type: MSG.LIST, stream: 0, payload: Buffer.concat([u32Payload(1), u32Payload(42), u32Payload(4_000_000)]) },
];

describe('encodeFrame and FrameDecoder', () => {
  it('round-trip every guest-to-host type', () => {
    for (const f of GUEST_FRAMES) {
      const back = decode(encodeFrame(f));
      assert.equal(back.length, 1);
      assert.equal(back[0]!.type, f.type);
      assert.equal(back[0]!.stream, f.stream);
      assert.deepEqual(back[0]!.payload, f.payload);
    }
  });

  it('lays frames out as u32 len, u8 type, u32 stream, payload (little-endian)', () => {
    const b = encodeFrame({ type: MSG.KILL, stream: 7, payload: u32Payload(9) });
    assert.deepEqual([...b], [9, 0, 0, 0, 0x4b, 7, 0, 0, 0, 9, 0, 0, 0]);
    assert.deepEqual([...encodeFrame({ type: MSG.PS, stream: 0, payload: Buffer.alloc(0) })], [5, 0, 0, 0, 0x50, 0, 0, 0, 0]);
  });

  it('decodes the same frames fed byte by byte, and in every split of two', () => {
    const all = Buffer.concat(GUEST_FRAMES.map(encodeFrame));
    const d = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < all.length; i++) got.push(...d.push(all.subarray(i, i + 1)));
    assert.deepEqual(got, GUEST_FRAMES);
    assert.equal(d.buffered, 0);

    const small = Buffer.concat(GUEST_FRAMES.filter((f) => f.payload.length < 100).map(encodeFrame));
    for (let cut = 0; cut <= small.length; cut++) {
      const d2 = new FrameDecoder();
      const frames = [...d2.push(small.subarray(0, cut)), ...d2.push(small.subarray(cut))];
      assert.equal(frames.length, GUEST_FRAMES.filter((f) => f.payload.length < 100).length, `cut at ${cut}`);
    }
  });

  it('decodes several frames from one chunk and keeps a partial one', () => {
    const a = encodeFrame(GUEST_FRAMES[0]!);
    const b = encodeFrame(GUEST_FRAMES[1]!);
    const d = new FrameDecoder();
    assert.equal(d.push(Buffer.concat([a, b.subarray(0, 6)])).length, 1);
    assert.equal(d.buffered, 6);
    assert.deepEqual(d.push(b.subarray(6)), [GUEST_FRAMES[1]]);
  });

  it('refuses lengths below 5 and above 1 MiB + 5 from the length field alone', () => {
    refused(raw(4, 0x48), /frame length 4 is below the minimum of 5/);
    refused(raw(0, 0x48), /frame length 0 is below/);
    refused(raw(MAX_FRAME_LEN + 1, 0x4c), /frame length 1048582 exceeds the maximum of 1048581/);
    refused(raw(0xffffffff, 0x4c), /exceeds the maximum/);
    // four bytes are enough: nothing of the oversized frame is awaited or buffered
    assert.throws(() => new FrameDecoder().push(raw(0xffffffff, 0).subarray(0, 4)), ProtocolError);
  });

  it('refuses unknown types and host-only types', () => {
    refused(raw(5, 0x5a), /unknown frame type 'Z' \(0x5a\)/);
    refused(raw(5, 0x00), /unknown frame type 0x00$/);
    refused(raw(5, 0xff), /unknown frame type 0xff$/);
    for (const t of [MSG.RUN, MSG.STDIN, MSG.KILL, MSG.PS, MSG.SHUTDOWN, MSG.NAME_ANSWER]) {
      refused(encodeFrame({ type: t, stream: 0, payload: t === MSG.KILL ? u32Payload(9) : Buffer.alloc(0) }), /is only sent by the host/);
    }
  });

  it('refuses payloads of the wrong size for their type', () => {
    refused(raw(5 + 3, 0x53, 0, Buffer.alloc(3)), /STARTED payload of 3 bytes \(must be 4\)/);
    refused(raw(5 + 5, 0x57, 0, Buffer.alloc(5)), /EXIT payload of 5 bytes \(must be 4\)/);
    refused(raw(5, 0x57), /EXIT payload of 0 bytes/);
    refused(raw(5 + 6, 0x4c, 0, Buffer.alloc(6)), /LIST payload of 6 bytes \(not a multiple of 4\)/);
    refused(raw(5 + MAX_OUTPUT + 1, 0x4f), /STDOUT payload of 65537 bytes \(limit 65536\)/);
    refused(raw(5 + MAX_OUTPUT + 1, 0x44), /STDERR payload of 65537 bytes/);
    refused(raw(5 + 4097, 0x46), /FAILURE payload of 4097 bytes \(limit 4096\)/);
    refused(raw(5 + 257, 0x48), /HELLO payload of 257 bytes/);
    refused(raw(5, 0x48), /HELLO payload of 0 bytes/);
    refused(raw(5 + 17, 0x4e, STREAM_ALL, Buffer.alloc(17)), /NAME_QUERY payload of 17 bytes \(must be 18 to 65541\)/);
    refused(raw(5 + 65542, 0x4e, STREAM_ALL), /NAME_QUERY payload of 65542 bytes/);
    // the size is judged from the header: a 9-byte prefix is enough
    assert.throws(() => new FrameDecoder().push(raw(5 + MAX_OUTPUT + 1, 0x4f)), ProtocolError);
  });

  it('refuses a HELLO with control characters or non-ASCII bytes', () => {
    refused(encodeFrame({ type: MSG.HELLO, stream: 0, payload: Buffer.from('6.1.0\n') }), /non-printable byte 0x0a/);
    refused(encodeFrame({ type: MSG.HELLO, stream: 0, payload: Buffer.from('6.1\x1b[2J') }), /non-printable byte 0x1b/);
    refused(encodeFrame({ type: MSG.HELLO, stream: 0, payload: Buffer.from([0x36, 0xc3, 0xa9]) }), /non-printable byte 0xc3/);
  });

  it('stays failed after a ProtocolError', () => {
    const d = new FrameDecoder();
    assert.throws(() => d.push(raw(3, 0x48)), ProtocolError);
    assert.throws(() => d.push(encodeFrame(GUEST_FRAMES[0]!)), /below the minimum/);
  });

  it('refuses to encode what no frame can carry', () => {
    assert.throws(() => encodeFrame({ type: 'Z', stream: 0, payload: Buffer.alloc(0) }), ProtocolError);
    assert.throws(() => encodeFrame({ type: MSG.STDIN, stream: -1, payload: Buffer.alloc(0) }), ProtocolError);
    assert.throws(() => encodeFrame({ type: MSG.STDIN, stream: 0, payload: Buffer.alloc(MAX_PAYLOAD + 1) }), ProtocolError);
    assert.equal(encodeFrame({ type: MSG.STDIN, stream: 0, payload: Buffer.alloc(MAX_PAYLOAD) }).length, MAX_PAYLOAD + 9);
  });

  it('never buffers more than one frame, and nothing after a complete frame', () => {
    const big = encodeFrame({ type: MSG.LIST, stream: 0, payload: Buffer.alloc(MAX_PAYLOAD) });
    const d = new FrameDecoder();
    for (let off = 0; off < big.length - 1; off += 65536) {
      assert.deepEqual(d.push(big.subarray(off, Math.min(off + 65536, big.length - 1))), []);
      assert.ok(d.buffered <= MAX_FRAME_LEN + 4);
    }
    assert.equal(d.push(big.subarray(big.length - 1)).length, 1);
    assert.equal(d.buffered, 0);
  });
});

describe('fuzz', () => {
  /** mulberry32: a small seeded PRNG, so a failure replays. */
  function prng(seed: number): () => number {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it('5,000 random inputs end in frames or a ProtocolError, never anything else, and quickly', () => {
    const rand = prng(0x6d6f6174);
    const byte = (): number => Math.floor(rand() * 256);
    const types = [...Object.values(MSG)].map((t) => t.charCodeAt(0));
    let frames = 0;
    let errors = 0;
    const start = Date.now();
    for (let i = 0; i < 5000; i++) {
      const n = Math.floor(rand() * 300);
      const b = Buffer.alloc(n);
      for (let j = 0; j < n; j++) b[j] = byte();
      // half the inputs start like a plausible frame, so the decoder gets past the header
      if (rand() < 0.5 && n >= 9) {
        b.writeUInt32LE(5 + Math.floor(rand() * (n - 8)), 0);
        b[4] = types[Math.floor(rand() * types.length)]!;
      }
      const d = new FrameDecoder();
      try {
        let off = 0;
        while (off < n) {
          const step = 1 + Math.floor(rand() * 16);
          frames += d.push(b.subarray(off, off + step)).length;
          off += step;
        }
        assert.ok(d.buffered <= n);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw new Error(`input ${i} (${b.toString('hex')}) threw ${String(e)}`);
        errors++;
      }
    }
    assert.ok(Date.now() - start < 10_000, 'the fuzz took over 10 s');
    assert.ok(errors > 0 && frames > 0, `${frames} frames, ${errors} errors: the fuzz reached both outcomes`);
  });
});

describe('encodeRun', () => {
  it('encodes every field as the agent reads it', () => {
    const recs = parseRun(encodeRun(SPEC));
    const strs = (tag: number): string[] => recs.filter((r) => r.tag === tag).map((r) => r.value.toString());
    const u32s = (tag: number): number[] => recs.filter((r) => r.tag === tag).map((r) => r.value.readUInt32LE(0));
    assert.deepEqual(strs(RUN_TAG.ARG), SPEC.args);
    assert.deepEqual(strs(RUN_TAG.ENV), SPEC.env);
    assert.deepEqual(strs(RUN_TAG.CWD), ['/work']);
    assert.deepEqual(strs(RUN_TAG.HOSTNAME), ['box']);
    assert.deepEqual(u32s(RUN_TAG.UID), [1000]);
    assert.deepEqual(u32s(RUN_TAG.GID), [100]);
    assert.deepEqual(u32s(RUN_TAG.GROUP), [10, 20]);
    assert.deepEqual(u32s(RUN_TAG.UMASK), [0o022]);
    const rl = recs.filter((r) => r.tag === RUN_TAG.RLIMIT);
    assert.equal(rl.length, 1);
    assert.equal(rl[0]!.value.length, 20);
    assert.equal(rl[0]!.value.readUInt32LE(0), 7);
    assert.equal(rl[0]!.value.readBigUInt64LE(4), 1024n);
    assert.equal(rl[0]!.value.readBigUInt64LE(12), 0xffff_ffff_ffff_ffffn);
    // optional fields are left out
    const bare = parseRun(encodeRun({ ...SPEC, hostname: undefined, umask: undefined, groups: [], rlimits: [] }));
    assert.ok(!bare.some((r) => r.tag === RUN_TAG.HOSTNAME || r.tag === RUN_TAG.UMASK || r.tag === RUN_TAG.GROUP || r.tag === RUN_TAG.RLIMIT));
    // strings are UTF-8 bytes
    assert.equal(parseRun(encodeRun({ ...SPEC, args: ['écho'] }))[0]!.value.length, 5);
  });

  it('encodes the guest mounts in order (BIND: flags, tag length, tag, destination; MOUNT: flags, fs, destination, NUL, options) and READONLY_ROOT', () => {
    const mounts: GuestMount[] = [
      { kind: 'bind', tag: 'moat.b0', destination: '/data', file: false, readonly: true, nosuid: true, nodev: false, noexec: false },
      { kind: 'tmpfs', destination: '/data/cache', data: 'size=65536k,mode=1777', readonly: false, nosuid: true, nodev: true, noexec: false },
      { kind: 'bind', tag: 'moat.b1', destination: '/etc/hosts', file: true, readonly: false, nosuid: false, nodev: true, noexec: true },
    ];
    const recs = parseRun(encodeRun({ ...SPEC, mounts, readonlyRoot: true })).filter((r) => r.tag === RUN_TAG.BIND || r.tag === RUN_TAG.MOUNT || r.tag === RUN_TAG.READONLY_ROOT);
    assert.deepEqual(recs.map((r) => r.tag), [RUN_TAG.BIND, RUN_TAG.MOUNT, RUN_TAG.BIND, RUN_TAG.READONLY_ROOT]);
    const [a, t, b, ro] = recs.map((r) => r.value);
    assert.equal(a![0], BIND_FLAG.READONLY | BIND_FLAG.NOSUID);
    assert.equal(a![1], 7);
    assert.equal(a!.subarray(2, 9).toString(), 'moat.b0');
    assert.equal(a!.subarray(9).toString(), '/data');
    assert.equal(t![0], BIND_FLAG.NOSUID | BIND_FLAG.NODEV);
    assert.equal(t![1], MOUNT_FS.tmpfs);
    assert.deepEqual(t!.subarray(2).toString().split('\0'), ['/data/cache', 'size=65536k,mode=1777']);
    assert.equal(b![0], BIND_FLAG.FILE | BIND_FLAG.NODEV | BIND_FLAG.NOEXEC);
    assert.equal(b!.subarray(9).toString(), '/etc/hosts');
    assert.equal(ro!.length, 0);
    assert.ok(!parseRun(encodeRun(SPEC)).some((r) => r.tag >= RUN_TAG.BIND), 'no mount records without mounts');
    const bind = mounts[0]!;
    const bad = (patch: Partial<GuestMount>, re: RegExp): void => {
      assert.throws(() => encodeRun({ ...SPEC, mounts: [{ ...bind, ...patch } as GuestMount] }), (e: unknown) => e instanceof ConfigError && re.test(`${e.path}: ${e.message}`));
    };
    bad({ tag: 'a b' }, /^mounts \(guest mount 0\)\.tag: .*\[A-Za-z0-9_\.-\]/);
    bad({ tag: 'x'.repeat(32) }, /tag/);
    bad({ destination: 'relative' }, /destination: .*absolute/);
    bad({ destination: '/a/../etc' }, /destination: .*"\.\."/);
    bad({ destination: '/a\0b' }, /NUL/);
    assert.throws(() => encodeRun({ ...SPEC, mounts: [{ ...mounts[1]!, data: 'x'.repeat(1025) } as GuestMount] }), /options.*limit 1024/);
    assert.throws(() => encodeRun({ ...SPEC, mounts: Array.from({ length: 65 }, (_, i) => ({ ...bind, tag: `t${i}` })) }), /65 mounts the guest makes \(limit 64/);
  });

  it('names the field that breaks a limit', () => {
    const bad = (patch: Partial<ProcessSpec>, path: string, re: RegExp): void => {
      assert.throws(
        () => encodeRun({ ...SPEC, ...patch }),
        (e: unknown) => e instanceof ConfigError && e.path === path && re.test(e.message),
      );
    };
    bad({ args: [] }, 'process.args', /at least the program/);
    bad({ args: [''] }, 'process.args[0]', /empty/);
    bad({ args: ['a', 'b\0c'] }, 'process.args[1]', /NUL/);
    bad({ args: ['a', 'x'.repeat(128 * 1024 + 1)] }, 'process.args[1]', /131073 bytes long \(limit 131072\)/);
    bad({ env: ['NOVALUE'] }, 'process.env[0]', /KEY=VALUE/);
    bad({ env: Array.from({ length: 4094 }, (_, i) => `V${i}=1`) }, 'process.args', /4097 entries together \(limit 4096\)/);
    bad({ cwd: 'relative' }, 'process.cwd', /absolute/);
    bad({ uid: -1 }, 'process.user.uid', /integer/);
    bad({ gid: 2 ** 32 }, 'process.user.gid', /integer/);
    bad({ groups: Array.from({ length: 65 }, (_, i) => i) }, 'process.user.additionalGids', /65 entries \(limit 64\)/);
    bad({ groups: [1, 1.5] }, 'process.user.additionalGids[1]', /integer/);
    bad({ hostname: 'h'.repeat(65) }, 'hostname', /limit 64/);
    bad({ umask: 0o1000 }, 'process.user.umask', /0o777/);
    bad({ rlimits: Array.from({ length: 17 }, () => ({ resource: 7, soft: 1n, hard: 1n })) }, 'process.rlimits', /17 entries \(limit 16\)/);
    bad({ rlimits: [{ resource: 7, soft: 2n, hard: 1n }] }, 'process.rlimits[0].soft', /above the hard limit/);
    bad({ rlimits: [{ resource: 7, soft: -1n, hard: 1n }] }, 'process.rlimits[0].soft', /bigint/);
    bad({ rlimits: [{ resource: 7, soft: 1n, hard: RLIM_INFINITY + 1n }] }, 'process.rlimits[0].hard', /bigint/);
    // within each limit, but too much for one frame together
    bad({ args: Array.from({ length: 9 }, () => 'a'.repeat(128 * 1024)) }, 'process', /more than a frame carries/);
  });
});

describe('payload helpers', () => {
  it('u32Payload, decodeExit and decodePids', () => {
    assert.deepEqual([...u32Payload(0x01020304)], [4, 3, 2, 1]);
    assert.throws(() => u32Payload(-1), RangeError);
    assert.throws(() => u32Payload(2 ** 32), RangeError);
    assert.equal(decodeExit(u32Payload(137)), 137);
    assert.throws(() => decodeExit(Buffer.alloc(3)), ProtocolError);
    assert.deepEqual(decodePids(Buffer.concat([u32Payload(1), u32Payload(77)])), [1, 77]);
    assert.deepEqual(decodePids(Buffer.alloc(0)), []);
    assert.throws(() => decodePids(Buffer.alloc(5)), ProtocolError);
  });

  it('decodeNameQuery and encodeNameAnswer', () => {
    const message = Buffer.alloc(DNS_HEADER + 5, 7);
    const q = Buffer.concat([u32Payload(0x01020304), Buffer.from([2, DNS_TRANSPORT.tcp]), message]);
    // it passes the decoder as a whole frame, and reads back field by field
    const [f] = new FrameDecoder().push(encodeFrame({ type: MSG.NAME_QUERY, stream: STREAM_ALL, payload: q }));
    assert.deepEqual(decodeNameQuery(f!.payload), { id: 0x01020304, server: 2, transport: 'tcp', message });
    assert.equal(decodeNameQuery(Buffer.concat([u32Payload(1), Buffer.from([0, DNS_TRANSPORT.udp]), message])).transport, 'udp');
    assert.throws(() => decodeNameQuery(Buffer.concat([u32Payload(1), Buffer.from([0, 2]), message])), /NAME_QUERY transport 2 \(must be 0 for UDP or 1 for TCP\)/);
    assert.throws(() => decodeNameQuery(Buffer.alloc(6 + DNS_HEADER - 1)), ProtocolError);
    assert.deepEqual([...encodeNameAnswer(0x0a0b0c0d, Buffer.from([9, 8]))], [0x0d, 0x0c, 0x0b, 0x0a, 9, 8]);
    assert.equal(encodeNameAnswer(5, Buffer.alloc(0)).length, 4);
    assert.throws(() => encodeNameAnswer(5, Buffer.alloc(MAX_DNS_MESSAGE + 1)), /DNS answer of 65536 bytes \(limit 65535\)/);
    assert.throws(() => encodeNameAnswer(-1, Buffer.alloc(0)), ProtocolError);
  });
});

describe('dist/moat-agent', () => {
  it('is a static ELF executable (no PT_INTERP program header)', (t) => {
    const path = join(REPO, 'dist/moat-agent');
    if (!existsSync(path)) {
      const why = `${path} is missing (build it with: node scripts/build.mjs)`;
      console.log(`# skipped: ${why}`);
      t.skip(why);
      return;
    }
    const elf = readFileSync(path);
    assert.deepEqual([...elf.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], 'ELF magic');
    const is64 = elf[4] === 2;
    assert.equal(elf[5], 1, 'little-endian');
    const type = elf.readUInt16LE(16);
    assert.ok(type === 2 || type === 3, `an executable (ET_EXEC or static-pie ET_DYN), not e_type ${type}`);
    const phoff = is64 ? Number(elf.readBigUInt64LE(32)) : elf.readUInt32LE(28);
    const phentsize = elf.readUInt16LE(is64 ? 54 : 42);
    const phnum = elf.readUInt16LE(is64 ? 56 : 44);
    assert.ok(phnum > 0, 'has program headers');
    const PT_INTERP = 3;
    const PT_DYNAMIC = 2;
    const kinds = Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * phentsize));
    assert.ok(!kinds.includes(PT_INTERP), 'no PT_INTERP: nothing for a dynamic loader to do (the initramfs has none)');
    if (type === 2) assert.ok(!kinds.includes(PT_DYNAMIC), 'no PT_DYNAMIC');
  });
});
