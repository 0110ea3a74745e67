/**
 * Moat's checkpoint image: one file, `<image dir>/moat-checkpoint.img`, into which a backend
 * writes its checkpoint as typed sections (docs/checkpoint.md is the format's reference).
 * All integers are little-endian:
 *
 *   file header  32 B  "MOATCKPT", u32 version (1), u32 header size (32), u64 0, u64 0
 *   section      48 B  u32 type, u32 0, u64 payload length, SHA-256 of the payload
 *                 ...  the payload (no padding); one header and payload per section
 *   trailer      48 B  "MOATTAIL", u32 section count, u32 0,
 *                      SHA-256 of the file header followed by every section header
 *
 * The writer streams each payload, hashing and counting it, then fills in the section header it
 * left as a placeholder. The reader trusts nothing in the file: `open` walks and checks every
 * header and the trailer without reading a payload, and every payload read is checked against
 * the SHA-256 in its section header.
 */
import { constants as bufferConstants } from 'node:buffer';
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

import { MoatError } from '../errors.js';

/** The image's file name inside a checkpoint's image directory. */
export const IMAGE_FILE = 'moat-checkpoint.img';
/** The format version this code writes and reads. */
export const IMAGE_VERSION = 1;
/** Section types. */
export const SECTION = { MANIFEST: 1, VM_MIGRATION: 2, VM_DISK: 3, SENTRY_PAGES: 4, SENTRY_FS: 5, PAD: 6 } as const;
/** Largest payload per section type (bytes): MANIFEST 1 MiB, VM_MIGRATION 64 GiB, VM_DISK 1 TiB, SENTRY_PAGES 64 GiB, SENTRY_FS 1 TiB, PAD 64 KiB. */
export const SECTION_CAPS: Readonly<Record<number, number>> = Object.freeze({
  [SECTION.MANIFEST]: 2 ** 20,
  [SECTION.VM_MIGRATION]: 64 * 2 ** 30,
  [SECTION.VM_DISK]: 2 ** 40,
  [SECTION.SENTRY_PAGES]: 64 * 2 ** 30,
  [SECTION.SENTRY_FS]: 2 ** 40,
  [SECTION.PAD]: 2 ** 16,
});
/** Most sections one image holds. */
export const MAX_SECTIONS = 64;
/** Bytes of the file header. */
export const FILE_HEADER_SIZE = 32;
/** Bytes of a section header. */
export const SECTION_HEADER_SIZE = 48;
/** Bytes of the trailer. */
export const TRAILER_SIZE = 48;

const FILE_MAGIC = Buffer.from('MOATCKPT', 'latin1');
const TAIL_MAGIC = Buffer.from('MOATTAIL', 'latin1');
/** Largest single read or write (the kernel caps one at about 2 GiB anyway). */
const IO_CHUNK = 16 * 2 ** 20;
/** Default chunk of stream() and of verify()'s reads. */
const DEFAULT_CHUNK = 2 ** 20;
const NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(SECTION).map(([k, v]) => [v, k]));

/** A checkpoint image is malformed, corrupt, or cannot be read or written. */
export class ImageError extends MoatError {
  constructor(readonly path: string, detail: string, options?: ErrorOptions) {
    super(`checkpoint image ${path}: ${detail}`, options);
  }
}

/** One section of an image: its type, where its payload starts, its length and its SHA-256. */
export interface SectionInfo {
  type: number;
  /** Byte offset of the payload (its section header is the 48 bytes before it). */
  offset: number;
  length: number;
  sha256: Buffer;
}

const isKnownType = (type: number): boolean => Number.isInteger(type) && Object.hasOwn(SECTION_CAPS, type);
const typeName = (type: number): string => NAMES[type] ?? `type ${type}`;
const capOf = (type: number): number => SECTION_CAPS[type] ?? 0;

/** Whether `e` is an operating-system error (ENOENT, EIO, EBADF...) rather than a bug. */
function isSystemError(e: unknown): e is NodeJS.ErrnoException {
  const code = e instanceof Error ? (e as NodeJS.ErrnoException).code : undefined;
  return typeof code === 'string' && !code.startsWith('ERR_');
}

/** `e` as an ImageError if it is one or an operating-system error; anything else is rethrown as is. */
function ioError(path: string, what: string, e: unknown): unknown {
  if (e instanceof ImageError || !isSystemError(e)) return e;
  return new ImageError(path, `${what}: ${e.message}`, { cause: e });
}

/** `"MOATCKPT"` if the bytes are printable ASCII, else their hex. */
function show(b: Buffer): string {
  return b.every((c) => c >= 0x20 && c < 0x7f) ? JSON.stringify(b.toString('latin1')) : `0x${b.toString('hex')}`;
}

/** Writes all of `data` at `position`. */
async function writeAt(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, Math.min(data.length - done, IO_CHUNK), position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += bytesWritten;
  }
}

/** Reads up to `length` bytes at `position` into `buf`; fewer only at the end of the file. */
async function readAt(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, Math.min(length - done, IO_CHUNK), position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** The 32-byte file header. */
function fileHeader(): Buffer {
  const b = Buffer.alloc(FILE_HEADER_SIZE);
  FILE_MAGIC.copy(b, 0);
  b.writeUInt32LE(IMAGE_VERSION, 8);
  b.writeUInt32LE(FILE_HEADER_SIZE, 12);
  return b;
}

/** A 48-byte section header. */
function sectionHeader(type: number, length: number, sha256: Buffer): Buffer {
  const b = Buffer.alloc(SECTION_HEADER_SIZE);
  b.writeUInt32LE(type, 0);
  b.writeBigUInt64LE(BigInt(length), 8);
  sha256.copy(b, 16);
  return b;
}

/** Makes the directory entry of a new file durable; best effort (some filesystems refuse). */
async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // the image itself is synced; only the directory entry's durability is at stake
  }
}

type WriterState = 'open' | 'busy' | 'finished' | 'failed' | 'aborted';

/**
 * Writes a new image: `create`, then `addSection` once per section (one at a time), then
 * `finish`; or `abort` to discard it. A rejected `addSection` leaves the file as it was before
 * the call (its partial payload is truncated away), so the writer stays usable; an error the
 * writer cannot roll back leaves it failed, and only `abort` remains.
 */
export class ImageWriter {
  private state: WriterState = 'open';
  private failure: ImageError | undefined;
  private offset = FILE_HEADER_SIZE;
  private readonly table = createHash('sha256');
  private readonly written: SectionInfo[] = [];

  private constructor(
    readonly path: string,
    private fh: FileHandle | undefined,
    header: Buffer,
  ) {
    this.table.update(header);
  }

  /** Creates the image file (never an existing one: ImageError) with mode 0600 and writes its header. */
  static async create(path: string): Promise<ImageWriter> {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600);
    } catch (e) {
      if (isSystemError(e) && e.code === 'EEXIST') throw new ImageError(path, 'already exists (an image is never overwritten)', { cause: e });
      throw ioError(path, 'cannot create', e);
    }
    const header = fileHeader();
    try {
      await writeAt(fh, header, 0);
    } catch (e) {
      await fh.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      throw ioError(path, 'cannot write the file header', e);
    }
    return new ImageWriter(path, fh, header);
  }

  /**
   * Appends a section, streaming `data` into the file while computing its length and SHA-256.
   * Rejects an unknown type, a type already written, a payload over its type's cap, and more than
   * MAX_SECTIONS sections with an ImageError; an error of the `data` source is passed on as is.
   */
  async addSection(type: number, data: Buffer | AsyncIterable<Buffer | Uint8Array>): Promise<SectionInfo> {
    const fh = this.writable('add a section');
    if (!isKnownType(type)) throw new ImageError(this.path, `cannot add a section of unknown type ${type}`);
    const name = typeName(type);
    if (this.written.some((s) => s.type === type)) throw new ImageError(this.path, `cannot add a second ${name} section`);
    if (this.written.length >= MAX_SECTIONS) throw new ImageError(this.path, `cannot add more than ${MAX_SECTIONS} sections`);
    const cap = capOf(type);
    const overCap = (n: number, more: string): ImageError =>
      new ImageError(this.path, `a ${name} payload of ${n}${more} bytes exceeds the ${name} cap of ${cap}`);
    if (data instanceof Uint8Array && data.length > cap) throw overCap(data.length, '');

    const source = data instanceof Uint8Array ? undefined : data;
    if (source !== undefined && typeof source?.[Symbol.asyncIterator] !== 'function') {
      throw new ImageError(this.path, `the ${name} payload must be a Buffer or an async iterable of Buffers`);
    }

    // Start pulling from the source before the first await: a Node stream attaches its listeners
    // on the first next(), and one already flowing would drop what it emits in between.
    const it: Iterator<unknown> | AsyncIterator<unknown> = source ? source[Symbol.asyncIterator]() : [data][Symbol.iterator]();
    let first: Promise<IteratorResult<unknown>>;
    try {
      first = Promise.resolve(it.next());
    } catch (e) {
      first = Promise.reject(e);
    }
    first.catch(() => undefined); // awaited below, after the placeholder is written

    this.state = 'busy';
    const start = this.offset;
    const payloadAt = start + SECTION_HEADER_SIZE;
    const hash = createHash('sha256');
    let length = 0;
    let sourceDone = false;
    try {
      await this.write(fh, Buffer.alloc(SECTION_HEADER_SIZE), start, 'cannot write a section header');
      for (let r = await first; !r.done; r = await it.next()) {
        const chunk: unknown = r.value;
        if (!(chunk instanceof Uint8Array)) {
          throw new ImageError(this.path, `the ${name} payload source yielded a ${typeof chunk}, not a Buffer`);
        }
        if (length + chunk.length > cap) throw overCap(length + chunk.length, ' or more');
        hash.update(chunk);
        await this.write(fh, chunk, payloadAt + length, `cannot write the ${name} payload`);
        length += chunk.length;
      }
      sourceDone = true;
      const info: SectionInfo = { type, offset: payloadAt, length, sha256: hash.digest() };
      const header = sectionHeader(type, length, info.sha256);
      await this.write(fh, header, start, `cannot write the ${name} section header`);
      this.table.update(header);
      this.written.push(info);
      this.offset = payloadAt + length;
      if (this.state === 'busy') this.state = 'open';
      return { ...info, sha256: Buffer.from(info.sha256) };
    } catch (e) {
      // as for-await does: tell the source we stop early (a Node stream is destroyed)
      if (!sourceDone) await Promise.resolve().then(() => it.return?.()).catch(() => undefined);
      await this.rollBack(fh, start, e);
      throw e;
    }
  }

  /**
   * Writes a PAD section (zeros) so that the payload of the next section starts at a multiple
   * of `align` bytes in the file (e.g. 4096, so it can be mapped page by page).
   */
  async padTo(align: number): Promise<void> {
    const next = this.offset + 2 * SECTION_HEADER_SIZE;
    await this.addSection(SECTION.PAD, Buffer.alloc((align - (next % align)) % align));
  }

  /** Writes the trailer, fsyncs and closes the file: the image is complete. */
  async finish(): Promise<void> {
    const fh = this.writable('finish');
    this.state = 'busy';
    const trailer = Buffer.alloc(TRAILER_SIZE);
    TAIL_MAGIC.copy(trailer, 0);
    trailer.writeUInt32LE(this.written.length, 8);
    this.table.digest().copy(trailer, 16);
    try {
      await writeAt(fh, trailer, this.offset);
      await fh.sync();
      this.fh = undefined;
      await fh.close();
    } catch (e) {
      const err = ioError(this.path, 'cannot finish', e);
      if (this.state === 'busy') {
        this.state = 'failed';
        this.failure = err instanceof ImageError ? err : new ImageError(this.path, 'finishing failed', { cause: e });
      }
      throw err;
    }
    if (this.state === 'busy') this.state = 'finished';
    await syncDir(dirname(this.path));
  }

  /** Closes the file and removes it, whatever state the writer is in; never throws. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    this.state = 'aborted';
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => undefined);
    await unlink(this.path).catch(() => undefined);
  }

  /** The open file, or an ImageError saying why `what` cannot be done now. */
  private writable(what: string): FileHandle {
    const why: Record<Exclude<WriterState, 'open'>, string> = {
      busy: 'another section is being written (add sections one at a time)',
      finished: 'the image is finished',
      failed: `an earlier write failed (${this.failure?.message ?? 'unknown error'}); abort the image`,
      aborted: 'the image was aborted',
    };
    if (this.state !== 'open' || this.fh === undefined) {
      throw new ImageError(this.path, `cannot ${what}: ${this.state === 'open' ? 'the file is closed' : why[this.state]}`);
    }
    return this.fh;
  }

  private async write(fh: FileHandle, data: Uint8Array, position: number, what: string): Promise<void> {
    try {
      await writeAt(fh, data, position);
    } catch (e) {
      throw ioError(this.path, what, e);
    }
  }

  /** After a failed addSection: cuts the file back to where the section began, or marks the writer failed. */
  private async rollBack(fh: FileHandle, start: number, cause: unknown): Promise<void> {
    try {
      await fh.truncate(start);
      if (this.state === 'busy') this.state = 'open';
    } catch (e) {
      if (this.state === 'busy') {
        this.state = 'failed';
        const why = cause instanceof Error ? cause.message : String(cause);
        this.failure = new ImageError(this.path, `a failed section (${why}) could not be cut off: ${(e as Error).message}`, { cause: e });
      }
    }
  }
}

/** Walks and checks the file header, every section header and the trailer; see docs/checkpoint.md. */
async function walk(path: string, fh: FileHandle): Promise<SectionInfo[]> {
  const fail = (detail: string): never => {
    throw new ImageError(path, detail);
  };
  const st = await fh.stat({ bigint: true });
  if (!st.isFile()) fail('not a regular file');
  if (st.size > BigInt(Number.MAX_SAFE_INTEGER)) fail(`file of ${st.size} bytes is too large`);
  const size = Number(st.size);
  /** Exactly `n` bytes at `pos` (the walk only asks for bytes inside the size it saw). */
  const bytes = async (pos: number, n: number): Promise<Buffer> => {
    const b = Buffer.alloc(n);
    const got = await readAt(fh, b, n, pos);
    if (got < n) fail(`truncated while being read: ${n} bytes wanted at byte ${pos}, the file ends at byte ${pos + got}`);
    return b;
  };

  if (size === 0) fail('the file is empty');
  if (size < FILE_HEADER_SIZE) fail(`truncated: the file is ${size} bytes, shorter than the ${FILE_HEADER_SIZE}-byte file header`);
  const header = await bytes(0, FILE_HEADER_SIZE);
  const magic = header.subarray(0, 8);
  if (!magic.equals(FILE_MAGIC)) fail(`byte 0: magic ${show(magic)} is not "MOATCKPT" (not a Moat checkpoint image)`);
  const version = header.readUInt32LE(8);
  if (version !== IMAGE_VERSION) fail(`byte 8: version ${version} is not supported (this Moat reads version ${IMAGE_VERSION})`);
  const headerSize = header.readUInt32LE(12);
  if (headerSize !== FILE_HEADER_SIZE) fail(`byte 12: header size ${headerSize} (must be ${FILE_HEADER_SIZE})`);
  for (const at of [16, 24]) {
    const v = header.readBigUInt64LE(at);
    if (v !== 0n) fail(`byte ${at}: reserved field is ${v} (must be 0)`);
  }
  if (size < FILE_HEADER_SIZE + TRAILER_SIZE) {
    fail(`truncated: the file is ${size} bytes, too short for the file header and the ${TRAILER_SIZE}-byte trailer`);
  }

  const trailerAt = size - TRAILER_SIZE;
  const table = createHash('sha256').update(header);
  const sections: SectionInfo[] = [];
  let off = FILE_HEADER_SIZE;
  while (off < trailerAt) {
    const where = `section ${sections.length + 1} at byte ${off}`;
    if (sections.length === MAX_SECTIONS) fail(`${where}: more than ${MAX_SECTIONS} sections`);
    // off < trailerAt, so the 48 bytes at off are inside the file
    const h = await bytes(off, SECTION_HEADER_SIZE);
    if (h.subarray(0, 8).equals(TAIL_MAGIC)) {
      fail(`${where}: the trailer is here, but ${trailerAt - off} bytes follow it (trailing garbage)`);
    }
    const room = trailerAt - off;
    if (room < SECTION_HEADER_SIZE) {
      fail(`${where}: only ${room} bytes before the trailer at byte ${trailerAt}, too few for a section header (truncated, or trailing garbage)`);
    }
    const reserved = h.readUInt32LE(4);
    if (reserved !== 0) fail(`${where}: reserved field at byte ${off + 4} is ${reserved} (must be 0)`);
    const type = h.readUInt32LE(0);
    if (!isKnownType(type)) fail(`${where}: unknown section type ${type}`);
    const name = typeName(type);
    const first = sections.find((s) => s.type === type);
    if (first) fail(`${where}: a second ${name} section (the first is at byte ${first.offset - SECTION_HEADER_SIZE})`);
    const cap = capOf(type);
    const len = h.readBigUInt64LE(8);
    if (len > BigInt(cap)) fail(`${where}: length ${len} exceeds the ${name} cap of ${cap}`);
    const length = Number(len);
    const payloadAt = off + SECTION_HEADER_SIZE;
    const end = payloadAt + length;
    if (end > trailerAt) fail(`${where}: the ${name} payload of ${length} bytes ends at byte ${end}, past the trailer at byte ${trailerAt} (truncated?)`);
    table.update(h);
    sections.push(Object.freeze({ type, offset: payloadAt, length, sha256: Buffer.from(h.subarray(16, 48)) }));
    off = end;
  }

  const t = await bytes(trailerAt, TRAILER_SIZE);
  const where = `trailer at byte ${trailerAt}`;
  const tmagic = t.subarray(0, 8);
  if (!tmagic.equals(TAIL_MAGIC)) fail(`${where}: magic ${show(tmagic)} is not "MOATTAIL" (truncated?)`);
  const count = t.readUInt32LE(8);
  if (count !== sections.length) fail(`${where}: section count ${count}, but ${sections.length} sections precede it`);
  const treserved = t.readUInt32LE(12);
  if (treserved !== 0) fail(`${where}: reserved field at byte ${trailerAt + 12} is ${treserved} (must be 0)`);
  if (!t.subarray(16, 48).equals(table.digest())) {
    fail(`${where}: the SHA-256 of the file header and section headers does not match (a header is corrupt)`);
  }
  return sections;
}

/**
 * Reads an image. `open` checks the whole layout up front; payloads are read on demand and each
 * read is verified against its SHA-256, so a payload is trusted only once it has been read whole.
 */
export class ImageReader {
  private fh: FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: FileHandle,
    readonly sections: readonly SectionInfo[],
  ) {
    this.fh = fh;
  }

  /** Opens an image and validates its header, every section header and its trailer, without reading payloads. */
  static async open(path: string): Promise<ImageReader> {
    let fh: FileHandle;
    try {
      fh = await open(path, constants.O_RDONLY);
    } catch (e) {
      throw ioError(path, 'cannot open', e);
    }
    try {
      return new ImageReader(path, fh, Object.freeze(await walk(path, fh)));
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw ioError(path, 'cannot read', e);
    }
  }

  /** The section of this type, or undefined. */
  section(type: number): SectionInfo | undefined {
    return this.sections.find((s) => s.type === type);
  }

  /** The whole payload, after checking its SHA-256 (ImageError on a mismatch). */
  async readAll(s: SectionInfo): Promise<Buffer> {
    const { info, where, fh } = this.own(s);
    if (info.length > bufferConstants.MAX_LENGTH) {
      throw new ImageError(this.path, `${where}: a payload of ${info.length} bytes is too large for one buffer (use stream())`);
    }
    const buf = Buffer.allocUnsafe(info.length);
    await this.read(fh, where, buf, info.length, info.offset);
    this.check(where, info, createHash('sha256').update(buf).digest());
    return buf;
  }

  /**
   * The payload in chunks of `chunkSize` bytes (the last one shorter); after the last chunk, an
   * ImageError if the SHA-256 does not match, in which case the consumer must discard everything
   * it received.
   */
  async *stream(s: SectionInfo, chunkSize: number = DEFAULT_CHUNK): AsyncIterable<Buffer> {
    const { info, where } = this.own(s);
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new ImageError(this.path, `stream chunk size ${chunkSize} is not a positive integer`);
    const hash = createHash('sha256');
    let done = 0;
    while (done < info.length) {
      const n = Math.min(chunkSize, info.length - done, bufferConstants.MAX_LENGTH);
      const buf = Buffer.allocUnsafe(n);
      await this.read(this.handle(), where, buf, n, info.offset + done);
      hash.update(buf);
      done += n;
      yield buf;
    }
    this.check(where, info, hash.digest());
  }

  /** Reads the payload through and checks its SHA-256 (ImageError on a mismatch). */
  async verify(s: SectionInfo): Promise<void> {
    const { info, where } = this.own(s);
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(DEFAULT_CHUNK, info.length));
    let done = 0;
    while (done < info.length) {
      const n = Math.min(buf.length, info.length - done);
      await this.read(this.handle(), where, buf, n, info.offset + done);
      hash.update(buf.subarray(0, n));
      done += n;
    }
    this.check(where, info, hash.digest());
  }

  /** Closes the file; later reads throw ImageError. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close();
  }

  private handle(): FileHandle {
    if (!this.fh) throw new ImageError(this.path, 'the reader is closed');
    return this.fh;
  }

  /** This reader's own record of `s` (a caller's copy may be altered), its name in messages, and the file. */
  private own(s: SectionInfo): { info: SectionInfo; where: string; fh: FileHandle } {
    const fh = this.handle();
    const index = this.sections.findIndex((x) => x === s || (x.type === s.type && x.offset === s.offset));
    const info = this.sections[index];
    if (!info) throw new ImageError(this.path, `no ${typeName(s.type)} section with its payload at byte ${s.offset}`);
    return { info, where: `section ${index + 1} (${typeName(info.type)}) at byte ${info.offset - SECTION_HEADER_SIZE}`, fh };
  }

  private async read(fh: FileHandle, where: string, buf: Buffer, n: number, position: number): Promise<void> {
    let got: number;
    try {
      got = await readAt(fh, buf, n, position);
    } catch (e) {
      throw ioError(this.path, `${where}: cannot read the payload`, e);
    }
    if (got < n) throw new ImageError(this.path, `${where}: the payload is cut short at byte ${position + got} (the file shrank)`);
  }

  private check(where: string, info: SectionInfo, digest: Buffer): void {
    if (!digest.equals(info.sha256)) {
      throw new ImageError(
        this.path,
        `${where}: the payload's SHA-256 is ${digest.toString('hex')}, its header says ${info.sha256.toString('hex')} (the payload is corrupt)`,
      );
    }
  }
}
