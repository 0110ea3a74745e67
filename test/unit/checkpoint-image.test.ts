/**
 * The checkpoint image format (src/checkpoint/image.ts): round trips through the writer and the
 * reader, the exact byte layout, the writer's refusals, the reader's refusal of every truncation
 * and every flipped header byte, payload corruption caught on read, and a seeded fuzz.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';

import {
  FILE_HEADER_SIZE,
  IMAGE_FILE,
  IMAGE_VERSION,
  ImageError,
  ImageReader,
  ImageWriter,
  MAX_SECTIONS,
  SECTION,
  SECTION_CAPS,
  SECTION_HEADER_SIZE,
  TRAILER_SIZE,
} from '../../src/checkpoint/image.js';
import type { SectionInfo } from '../../src/checkpoint/image.js';
import { MoatError } from '../../src/errors.js';

const work = mkdtempSync(join(tmpdir(), 'moat-ckpt-test-'));
after(() => rmSync(work, { recursive: true, force: true }));
let seq = 0;
/** A path in the temp dir that does not exist yet. */
const fresh = (): string => join(work, `${seq++}-${IMAGE_FILE}`);
const sha = (b: Uint8Array): Buffer => createHash('sha256').update(b).digest();
const MiB = 2 ** 20;

/** xorshift32: a small seeded PRNG, so a failure replays. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Deterministic pseudo-random bytes. */
function noise(n: number, seed: number): Buffer {
  const next = xorshift(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE(next(), i);
  for (let i = n - (n % 4); i < n; i++) b[i] = next() & 0xff;
  return b;
}

/** `data` as an async iterable of chunks of the given sizes (cycled), alternating Buffer and plain Uint8Array. */
async function* chunked(data: Buffer, sizes: number[]): AsyncGenerator<Buffer | Uint8Array> {
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = sizes[i % sizes.length]!;
    const part = data.subarray(off, off + n);
    yield i % 2 === 0 ? part : new Uint8Array(part.buffer, part.byteOffset, part.length);
    off += n;
    i++;
    await Promise.resolve();
  }
}

/** An async iterable of nothing. */
async function* empty(): AsyncGenerator<Buffer> {}

/** Writes an image of these sections (Buffer sources) and returns its path and bytes. */
async function build(sections: [number, Buffer][]): Promise<{ path: string; bytes: Buffer; infos: SectionInfo[] }> {
  const path = fresh();
  const w = await ImageWriter.create(path);
  const infos: SectionInfo[] = [];
  for (const [type, data] of sections) infos.push(await w.addSection(type, data));
  await w.finish();
  return { path, bytes: readFileSync(path), infos };
}

/** Asserts that `p` rejects with an ImageError whose message matches `re`. */
async function rejects(p: Promise<unknown>, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    if (!(e instanceof ImageError)) throw new Error(`expected an ImageError, got ${String(e)}`, { cause: e });
    if (re && !re.test(e.message)) throw new Error(`message ${JSON.stringify(e.message)} does not match ${String(re)}`);
    return true;
  });
}

/** Opens `bytes` as an image; the reader is closed after `use`. */
async function withImage<T>(path: string, bytes: Buffer, use: (r: ImageReader) => Promise<T>): Promise<T> {
  await writeFile(path, bytes);
  const r = await ImageReader.open(path);
  try {
    return await use(r);
  } finally {
    await r.close();
  }
}

/** Everything a stream yields, then its error (if any). */
async function drain(it: AsyncIterable<Buffer>): Promise<{ chunks: Buffer[]; error: unknown }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of it) chunks.push(c);
    return { chunks, error: undefined };
  } catch (e) {
    return { chunks, error: e };
  }
}

/** The small image most rejection tests mutate: three sections, one of them empty. */
const SMALL: [number, Buffer][] = [
  [SECTION.MANIFEST, Buffer.from('{"kind":"x"}')],
  [SECTION.VM_MIGRATION, Buffer.from('0123456789abc')],
  [SECTION.VM_DISK, Buffer.alloc(0)],
];

/** Byte ranges of the file header, the section headers and the trailer of `infos`' image of `size` bytes. */
function headerRanges(infos: SectionInfo[], size: number): [number, number][] {
  return [
    [0, FILE_HEADER_SIZE],
    ...infos.map((s): [number, number] => [s.offset - SECTION_HEADER_SIZE, s.offset]),
    [size - TRAILER_SIZE, size],
  ];
}

describe('constants', () => {
  it('match the format', () => {
    assert.equal(IMAGE_FILE, 'moat-checkpoint.img');
    assert.equal(IMAGE_VERSION, 1);
    assert.deepEqual({ ...SECTION }, { MANIFEST: 1, VM_MIGRATION: 2, VM_DISK: 3, SENTRY_PAGES: 4, SENTRY_FS: 5, PAD: 6 });
    assert.equal(SECTION_CAPS[SECTION.MANIFEST], 1024 * 1024);
    assert.equal(SECTION_CAPS[SECTION.VM_MIGRATION], 64 * 1024 ** 3);
    assert.equal(SECTION_CAPS[SECTION.VM_DISK], 1024 ** 4);
    assert.equal(SECTION_CAPS[SECTION.SENTRY_PAGES], 64 * 1024 ** 3);
    assert.equal(SECTION_CAPS[SECTION.SENTRY_FS], 1024 ** 4);
    assert.equal(SECTION_CAPS[SECTION.PAD], 64 * 1024);
    assert.equal(MAX_SECTIONS, 64);
    assert.ok(Object.isFrozen(SECTION_CAPS));
    assert.ok(new ImageError('/x', 'y') instanceof MoatError);
    assert.equal(new ImageError('/x', 'y').message, 'checkpoint image /x: y');
  });
});

describe('round trip', () => {
  const manifest = Buffer.from(JSON.stringify({ kind: 'moat-checkpoint', version: 1 }));
  const migration = noise(5 * MiB + 12345, 0xc0ffee);

  it('padTo makes the next payload start at a multiple of the alignment', async () => {
    for (const lead of [0, 1, 4000, 4048, 4096, 10_000]) {
      const path = fresh();
      const w = await ImageWriter.create(path);
      await w.addSection(SECTION.MANIFEST, Buffer.alloc(lead, 1));
      await w.padTo(4096);
      const pages = await w.addSection(SECTION.SENTRY_PAGES, Buffer.alloc(8192, 7));
      await w.finish();
      assert.equal(pages.offset % 4096, 0, `after ${lead} bytes`);
      const r = await ImageReader.open(path);
      assert.deepEqual(await r.readAll(r.section(SECTION.SENTRY_PAGES)!), Buffer.alloc(8192, 7));
      assert.ok(r.section(SECTION.PAD)!.length < 4096);
      await r.close();
    }
  });

  it('writes three sections (Buffer, odd-sized async chunks, empty) and reads them back', async () => {
    const path = fresh();
    const w = await ImageWriter.create(path);
    const a = await w.addSection(SECTION.MANIFEST, manifest);
    const b = await w.addSection(SECTION.VM_MIGRATION, chunked(migration, [1, 4093, 65537, 1_000_003, 7, 333_333]));
    const c = await w.addSection(SECTION.VM_DISK, empty());
    await w.finish();

    assert.deepEqual(a, { type: SECTION.MANIFEST, offset: 80, length: manifest.length, sha256: sha(manifest) });
    assert.deepEqual(b, { type: SECTION.VM_MIGRATION, offset: 80 + manifest.length + 48, length: migration.length, sha256: sha(migration) });
    assert.deepEqual(c, { type: SECTION.VM_DISK, offset: b.offset + migration.length + 48, length: 0, sha256: sha(Buffer.alloc(0)) });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal(statSync(path).size, 32 + 3 * 48 + manifest.length + migration.length + 48);

    const r = await ImageReader.open(path);
    try {
      assert.equal(r.path, path);
      assert.deepEqual(r.sections, [a, b, c]);
      assert.deepEqual(r.section(SECTION.VM_MIGRATION), b);
      assert.equal(r.section(99), undefined);
      assert.deepEqual(await r.readAll(a), manifest);
      assert.deepEqual(await r.readAll(b), migration);
      assert.deepEqual(await r.readAll(c), Buffer.alloc(0));
      for (const s of r.sections) await r.verify(s);

      // stream(): 1 MiB chunks by default, the last one shorter
      const def = await drain(r.stream(b));
      assert.equal(def.error, undefined);
      assert.deepEqual(def.chunks.map((x) => x.length), [MiB, MiB, MiB, MiB, MiB, 12345]);
      assert.deepEqual(Buffer.concat(def.chunks), migration);
      const odd = await drain(r.stream(b, 999_999));
      assert.ok(odd.chunks.slice(0, -1).every((x) => x.length === 999_999));
      assert.equal(odd.chunks.length, Math.ceil(migration.length / 999_999));
      assert.deepEqual(Buffer.concat(odd.chunks), migration);
      assert.deepEqual((await drain(r.stream(c))).chunks, []);
      assert.deepEqual(Buffer.concat((await drain(r.stream(a, 5))).chunks), manifest);
      const zero = await drain(r.stream(a, 0));
      assert.ok(zero.error instanceof ImageError && /stream chunk size 0 is not a positive integer/.test(zero.error.message));
      // a caller's copy of a SectionInfo works; a made-up one does not
      assert.deepEqual(await r.readAll({ ...a, sha256: Buffer.alloc(32) }), manifest);
      await rejects(r.readAll({ type: SECTION.VM_DISK, offset: 5, length: 3, sha256: Buffer.alloc(32) }), /no VM_DISK section with its payload at byte 5/);
    } finally {
      await r.close();
    }
    await rejects(r.readAll(a), /the reader is closed/);
  });

  it('lays the file out as documented', async () => {
    const { bytes, infos } = await build(SMALL);
    assert.equal(bytes.toString('latin1', 0, 8), 'MOATCKPT');
    assert.equal(bytes.readUInt32LE(8), 1);
    assert.equal(bytes.readUInt32LE(12), 32);
    assert.equal(bytes.readBigUInt64LE(16), 0n);
    assert.equal(bytes.readBigUInt64LE(24), 0n);
    let off = 32;
    const table = createHash('sha256').update(bytes.subarray(0, 32));
    for (const [i, [type, data]] of SMALL.entries()) {
      assert.equal(bytes.readUInt32LE(off), type);
      assert.equal(bytes.readUInt32LE(off + 4), 0);
      assert.equal(bytes.readBigUInt64LE(off + 8), BigInt(data.length));
      assert.deepEqual(bytes.subarray(off + 16, off + 48), sha(data));
      assert.deepEqual(bytes.subarray(off + 48, off + 48 + data.length), data);
      assert.equal(infos[i]!.offset, off + 48);
      table.update(bytes.subarray(off, off + 48));
      off += 48 + data.length;
    }
    assert.equal(bytes.length, off + 48);
    assert.equal(bytes.toString('latin1', off, off + 8), 'MOATTAIL');
    assert.equal(bytes.readUInt32LE(off + 8), 3);
    assert.equal(bytes.readUInt32LE(off + 12), 0);
    assert.deepEqual(bytes.subarray(off + 16), table.digest());
  });

  it('accepts an image of no sections, and sections in any order', async () => {
    const none = await build([]);
    assert.equal(none.bytes.length, 80);
    const r = await ImageReader.open(none.path);
    assert.deepEqual(r.sections, []);
    await r.close();
    const rev = await build([...SMALL].reverse());
    const r2 = await ImageReader.open(rev.path);
    assert.deepEqual(r2.sections.map((s) => s.type), [3, 2, 1]);
    await r2.close();
  });
});

describe('ImageWriter', () => {
  it('refuses to create over an existing file and leaves it alone', async () => {
    const path = fresh();
    writeFileSync(path, 'precious');
    await rejects(ImageWriter.create(path), /already exists/);
    assert.equal(readFileSync(path, 'utf8'), 'precious');
    await rejects(ImageWriter.create(join(work, 'no-such-dir', IMAGE_FILE)), /cannot create: ENOENT/);
  });

  it('refuses unknown and duplicate types, and payloads over the cap, and stays usable', async () => {
    const path = fresh();
    const w = await ImageWriter.create(path);
    for (const t of [0, 7, 1.5, -1, 0xffffffff]) await rejects(w.addSection(t, Buffer.alloc(1)), /unknown type/);
    await rejects(w.addSection(SECTION.MANIFEST, Buffer.alloc(MiB + 1)), /MANIFEST payload of 1048577 bytes exceeds the MANIFEST cap of 1048576/);
    // a streamed payload is cut off at the cap and its partial bytes are removed again
    await rejects(w.addSection(SECTION.MANIFEST, chunked(Buffer.alloc(MiB + 1), [600 * 1024])), /exceeds the MANIFEST cap/);
    assert.equal(statSync(path).size, 32);
    // a failing source's error passes through, and also leaves no trace
    async function* broken(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(100);
      throw new Error('source broke');
    }
    await assert.rejects(w.addSection(SECTION.VM_DISK, broken()), /^Error: source broke$/);
    await rejects(w.addSection(SECTION.VM_DISK, (async function* () {
      yield 'text' as unknown as Buffer;
    })()), /yielded a string/);
    assert.equal(statSync(path).size, 32);
    // exactly the cap is fine
    const full = await w.addSection(SECTION.MANIFEST, Buffer.alloc(MiB, 0x20));
    assert.equal(full.length, MiB);
    await rejects(w.addSection(SECTION.MANIFEST, Buffer.alloc(1)), /second MANIFEST section/);
    await w.addSection(SECTION.VM_DISK, Buffer.from('disk'));
    await w.finish();
    await rejects(w.addSection(SECTION.VM_MIGRATION, Buffer.alloc(1)), /the image is finished/);
    await rejects(w.finish(), /the image is finished/);
    const r = await ImageReader.open(path);
    assert.deepEqual(r.sections.map((s) => [s.type, s.length]), [[SECTION.MANIFEST, MiB], [SECTION.VM_DISK, 4]]);
    for (const s of r.sections) await r.verify(s);
    await r.close();
  });

  it('takes a Node stream, even one already resumed, without losing its first bytes', async () => {
    const path = fresh();
    const w = await ImageWriter.create(path);
    const data = noise(200_000, 3);
    const p = new PassThrough();
    p.end(data);
    p.resume();
    const info = await w.addSection(SECTION.VM_MIGRATION, p);
    assert.equal(info.length, data.length);
    const disk = await w.addSection(SECTION.VM_DISK, Readable.from([Buffer.from('ab'), Buffer.from('cd')]));
    await w.finish();
    await withImage(path, readFileSync(path), async (r) => {
      assert.deepEqual(await r.readAll(r.section(SECTION.VM_MIGRATION)!), data);
      assert.deepEqual(await r.readAll(disk), Buffer.from('abcd'));
    });
  });

  it('adds one section at a time', async () => {
    const path = fresh();
    const w = await ImageWriter.create(path);
    const first = w.addSection(SECTION.VM_DISK, chunked(Buffer.alloc(10), [3]));
    await rejects(w.addSection(SECTION.MANIFEST, Buffer.alloc(1)), /another section is being written/);
    await first;
    await w.addSection(SECTION.MANIFEST, Buffer.alloc(1));
    await w.finish();
    await (await ImageReader.open(path)).close();
  });

  it('abort removes the file, at any point, and never throws', async () => {
    const p1 = fresh();
    const w1 = await ImageWriter.create(p1);
    await w1.addSection(SECTION.MANIFEST, Buffer.from('{}'));
    await w1.abort();
    assert.ok(!existsSync(p1));
    await w1.abort();
    await rejects(w1.addSection(SECTION.VM_DISK, Buffer.alloc(1)), /aborted/);
    await rejects(w1.finish(), /aborted/);

    const p2 = fresh();
    const w2 = await ImageWriter.create(p2);
    await w2.abort();
    assert.ok(!existsSync(p2));

    // in the middle of a streamed section
    const p3 = fresh();
    const w3 = await ImageWriter.create(p3);
    let release: () => void = () => undefined;
    const gate = new Promise<void>((res) => (release = res));
    async function* slow(): AsyncGenerator<Buffer> {
      yield Buffer.alloc(10);
      await gate;
      yield Buffer.alloc(10);
    }
    const pending = w3.addSection(SECTION.VM_MIGRATION, slow());
    await new Promise((res) => setTimeout(res, 20));
    await w3.abort();
    release();
    await rejects(pending);
    assert.ok(!existsSync(p3));
  });
});

describe('ImageReader refuses', () => {
  it('every truncation of a small image', async () => {
    const { bytes } = await build(SMALL);
    const path = fresh();
    for (let n = 0; n < bytes.length; n++) {
      writeFileSync(path, bytes.subarray(0, n));
      await rejects(ImageReader.open(path)).catch((e: unknown) => {
        throw new Error(`truncated to ${n} bytes: ${String(e)}`);
      });
    }
  });

  it('a flipped bit or byte anywhere in the headers and the trailer', async () => {
    const { bytes, infos } = await build(SMALL);
    const path = fresh();
    let n = 0;
    for (const [from, to] of headerRanges(infos, bytes.length)) {
      for (let i = from; i < to; i++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const bad = Buffer.from(bytes);
          bad[i]! ^= mask;
          writeFileSync(path, bad);
          await rejects(ImageReader.open(path)).catch((e: unknown) => {
            throw new Error(`byte ${i} ^ 0x${mask.toString(16)}: ${String(e)}`);
          });
          n++;
        }
      }
    }
    assert.equal(n, 3 * (32 + 3 * 48 + 48));
  });

  it('a flipped byte in a payload, on readAll, verify and at the end of stream', async () => {
    const { bytes, infos } = await build(SMALL);
    const path = fresh();
    for (const s of infos) {
      for (let i = s.offset; i < s.offset + s.length; i++) {
        const bad = Buffer.from(bytes);
        bad[i]! ^= 0x01;
        await withImage(path, bad, async (r) => {
          const hit = r.sections.find((x) => x.type === s.type)!;
          await rejects(r.readAll(hit), /SHA-256 .* \(the payload is corrupt\)/);
          await rejects(r.verify(hit), /the payload is corrupt/);
          const got = await drain(r.stream(hit, 4));
          assert.ok(got.error instanceof ImageError, `stream of byte ${i}: ${String(got.error)}`);
          assert.equal(Buffer.concat(got.chunks).length, s.length, 'the whole payload came before the error');
          for (const other of r.sections.filter((x) => x.type !== s.type)) await r.verify(other);
        });
      }
    }
  });

  it('a wrong magic, version 2, a bad header size and nonzero reserved fields', async () => {
    const { bytes } = await build(SMALL);
    const path = fresh();
    const mutate = async (f: (b: Buffer) => void, re: RegExp): Promise<void> => {
      const b = Buffer.from(bytes);
      f(b);
      writeFileSync(path, b);
      await rejects(ImageReader.open(path), re);
    };
    await mutate((b) => b.write('NOTMOAT!', 0, 'latin1'), /byte 0: magic "NOTMOAT!" is not "MOATCKPT"/);
    await mutate((b) => b.fill(0, 0, 8), /byte 0: magic 0x0000000000000000/);
    await mutate((b) => b.writeUInt32LE(2, 8), /byte 8: version 2 is not supported \(this Moat reads version 1\)/);
    await mutate((b) => b.writeUInt32LE(48, 12), /byte 12: header size 48 \(must be 32\)/);
    await mutate((b) => (b[24] = 1), /byte 24: reserved field is 1 \(must be 0\)/);
    await mutate((b) => (b[32 + 4] = 1), /section 1 at byte 32: reserved field at byte 36 is 1/);
    await mutate((b) => b.writeUInt32LE(9, 32), /section 1 at byte 32: unknown section type 9/);
    await mutate((b) => b.writeUInt32LE(SECTION.VM_MIGRATION, 32), /section 2 at byte \d+: a second VM_MIGRATION section \(the first is at byte 32\)/);
    const tail = bytes.length - 48;
    await mutate((b) => b.write('MOATTAIX', tail, 'latin1'), new RegExp(`trailer at byte ${tail}: magic "MOATTAIX" is not "MOATTAIL"`));
    await mutate((b) => b.writeUInt32LE(2, tail + 8), /section count 2, but 3 sections precede it/);
    await mutate((b) => (b[tail + 12] = 1), /reserved field at byte \d+ is 1/);
    await mutate((b) => (b[tail + 47]! ^= 1), /does not match \(a header is corrupt\)/);
    // the payload hash in a section header is covered by the trailer
    await mutate((b) => (b[32 + 20]! ^= 1), /does not match/);
  });

  it('a huge length field, checked against the cap and the trailer before any arithmetic', async () => {
    const { bytes, infos } = await build(SMALL);
    const path = fresh();
    const disk = infos[2]!.offset - 48;
    for (const [len, re] of [
      [0xffff_ffff_ffff_ffffn, new RegExp(`^checkpoint image .*: section 3 at byte ${disk}: length 18446744073709551615 exceeds the VM_DISK cap of 1099511627776$`)],
      [99_999_999_999_999n, /section 3 at byte \d+: length 99999999999999 exceeds the VM_DISK cap of 1099511627776/],
      [2n ** 40n, new RegExp(`the VM_DISK payload of 1099511627776 bytes ends at byte ${disk + 48 + 2 ** 40}, past the trailer at byte ${bytes.length - 48}`)],
      [1n, /past the trailer/],
    ] as const) {
      const b = Buffer.from(bytes);
      b.writeBigUInt64LE(len, disk + 8);
      writeFileSync(path, b);
      await rejects(ImageReader.open(path), re);
    }
    const b = Buffer.from(bytes);
    b.writeBigUInt64LE(2n ** 20n + 1n, 32 + 8);
    writeFileSync(path, b);
    await rejects(ImageReader.open(path), /section 1 at byte 32: length 1048577 exceeds the MANIFEST cap of 1048576/);
  });

  it(`${MAX_SECTIONS + 1} sections`, async () => {
    // a well-formed table of 65 empty sections with a matching trailer: only their number and types are wrong
    const header = Buffer.alloc(32);
    header.write('MOATCKPT', 0, 'latin1');
    header.writeUInt32LE(1, 8);
    header.writeUInt32LE(32, 12);
    const table = createHash('sha256').update(header);
    const parts = [header];
    for (let i = 0; i < MAX_SECTIONS + 1; i++) {
      const h = Buffer.alloc(48);
      h.writeUInt32LE(SECTION.MANIFEST, 0);
      sha(Buffer.alloc(0)).copy(h, 16);
      table.update(h);
      parts.push(h);
    }
    const trailer = Buffer.alloc(48);
    trailer.write('MOATTAIL', 0, 'latin1');
    trailer.writeUInt32LE(MAX_SECTIONS + 1, 8);
    table.digest().copy(trailer, 16);
    const path = fresh();
    writeFileSync(path, Buffer.concat([...parts, trailer]));
    await rejects(ImageReader.open(path), /section 2 at byte 80: a second MANIFEST section|more than 64 sections/);
  });

  it('trailing garbage', async () => {
    const { bytes } = await build(SMALL);
    const path = fresh();
    for (const extra of [Buffer.from([0]), Buffer.from('garbage'), Buffer.alloc(48), noise(1000, 7), bytes.subarray(bytes.length - 48)]) {
      writeFileSync(path, Buffer.concat([bytes, extra]));
      await rejects(ImageReader.open(path), new RegExp(`section 4 at byte ${bytes.length - 48}: the trailer is here, but ${extra.length} bytes follow it \\(trailing garbage\\)`));
    }
  });

  it('an empty file, a short file, a directory and a missing file', async () => {
    const path = fresh();
    writeFileSync(path, '');
    await rejects(ImageReader.open(path), /: the file is empty$/);
    writeFileSync(path, 'MOATCKPT');
    await rejects(ImageReader.open(path), /truncated: the file is 8 bytes, shorter than the 32-byte file header/);
    const { bytes } = await build([]);
    writeFileSync(path, bytes.subarray(0, 79));
    await rejects(ImageReader.open(path), /too short for the file header and the 48-byte trailer/);
    await rejects(ImageReader.open(work), /not a regular file/);
    await rejects(ImageReader.open(join(work, 'missing')), /cannot open: ENOENT/);
  });
});

describe('fuzz', () => {
  it('2,000 mutated images open and verify, or fail with an ImageError, never anything else', async () => {
    const base = (await build([
      [SECTION.MANIFEST, Buffer.from('{"kind":"moat-checkpoint","version":1}')],
      [SECTION.VM_MIGRATION, noise(300, 1)],
      [SECTION.VM_DISK, noise(77, 2)],
    ])).bytes;
    const next = xorshift(0x6d6f6174);
    const below = (n: number): number => next() % n;
    const path = fresh();
    let ok = 0;
    let refused = 0;
    const start = Date.now();
    for (let i = 0; i < 2000; i++) {
      let b = Buffer.from(base);
      const ops: string[] = [];
      // one image in 20 stays intact, so the fuzz also sees the success path
      const n = i % 20 === 0 ? 0 : 1 + below(3);
      for (let k = 0; k < n; k++) {
        const op = below(4);
        if (op <= 1 && b.length > 0) {
          // flips favour the headers and the trailer, where the structure is
          const at = below(2) === 0 ? below(b.length) : [below(176), b.length - 1 - below(48)][below(2)]!;
          const pos = Math.max(0, Math.min(b.length - 1, at));
          b[pos]! ^= 1 + below(255);
          ops.push(`flip ${pos}`);
        } else if (op === 2) {
          const len = below(b.length + 1);
          b = b.subarray(0, len);
          ops.push(`truncate ${len}`);
        } else {
          const at = below(b.length + 1);
          const ins = noise(1 + below(64), next());
          b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
          ops.push(`insert ${ins.length} at ${at}`);
        }
      }
      try {
        await withImage(path, b, async (r) => {
          for (const s of r.sections) await r.verify(s);
        });
        ok++;
      } catch (e) {
        if (!(e instanceof ImageError)) throw new Error(`image ${i} (${ops.join(', ')}) threw ${String(e)}`, { cause: e });
        refused++;
      }
    }
    assert.ok(Date.now() - start < 30_000, 'the fuzz took over 30 s');
    assert.ok(ok >= 100 && refused > 1500, `${ok} opened and verified, ${refused} refused`);
  });
});
