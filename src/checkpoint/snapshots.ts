/**
 * Snapshots: named checkpoints of warmed-up containers kept under the state root
 * (`<root>/snapshots/<name>/`: the checkpoint image and snapshot.json), from which new containers
 * start (`moat run --from-snapshot NAME`, `create --from-snapshot`), each independent; and their
 * forensics (`moat snapshot inspect`), which reads the image without running anything.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MoatError, UsageError } from '../errors.js';
import type { Spec } from '../spec/schema.js';
import { parseSpec } from '../spec/validate.js';
import { IMAGE_FILE, ImageReader, SECTION } from './image.js';
import { checkTree, PAGE, parseSentryManifest } from './sentry/manifest.js';

/** What a snapshot name may be. */
export const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A snapshot that does not exist, exists already, or cannot be read, with its name. */
export class SnapshotError extends MoatError {
  constructor(name: string, detail: string) {
    super(`snapshot "${name}": ${detail}`);
  }
}

/** snapshot.json: where a snapshot came from. */
export interface SnapshotRecord {
  name: string;
  /** The container it was taken from. */
  from: string;
  isolation: string;
  /** That container's bundle (hooks and relative paths of the spec refer to it). */
  bundle: string;
  created: string;
}

/** The directory holding the snapshots of state root `root`. */
export function snapshotsDir(root: string): string {
  return join(root, 'snapshots');
}

/** The directory of snapshot `name` (validated: one path component of a fixed alphabet). */
export function snapshotDir(root: string, name: string): string {
  if (!SNAPSHOT_NAME.test(name)) throw new UsageError(`snapshot name "${name}": expected 1 to 64 of [A-Za-z0-9_.-], starting with a letter or digit`);
  return join(snapshotsDir(root), name);
}

/**
 * Takes snapshot `name` of container `from` with `checkpoint` (which writes the image into the
 * directory it is given), atomically: the snapshot appears complete or not at all.
 */
export async function createSnapshot(
  root: string,
  name: string,
  from: { id: string; isolation: string; bundle: string },
  checkpoint: (imagePath: string) => Promise<void>,
): Promise<SnapshotRecord> {
  const dir = snapshotDir(root, name);
  if (existsSync(dir)) throw new SnapshotError(name, `exists already (${dir}); delete it first`);
  mkdirSync(snapshotsDir(root), { recursive: true, mode: 0o700 });
  const tmp = join(snapshotsDir(root), `.${name}.${process.pid}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    await checkpoint(tmp);
    const rec: SnapshotRecord = { name, from: from.id, isolation: from.isolation, bundle: from.bundle, created: new Date().toISOString() };
    writeFileSync(join(tmp, 'snapshot.json'), `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, dir);
    return rec;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Reads snapshot `name`: its record, image path and the spec of the container it was taken from. */
export async function openSnapshot(root: string, name: string): Promise<{ record: SnapshotRecord; imagePath: string; spec: Spec; embedded: boolean }> {
  const dir = snapshotDir(root, name);
  if (!existsSync(dir)) throw new SnapshotError(name, 'does not exist (moat snapshot list shows them)');
  let record: SnapshotRecord;
  try {
    record = JSON.parse(readFileSync(join(dir, 'snapshot.json'), 'utf8')) as SnapshotRecord;
  } catch (e) {
    throw new SnapshotError(name, `snapshot.json is unreadable: ${(e as Error).message}`);
  }
  if (typeof record.isolation !== 'string' || typeof record.bundle !== 'string' || typeof record.from !== 'string') {
    throw new SnapshotError(name, 'snapshot.json lacks isolation, bundle or from');
  }
  const manifest = await readManifest(dir);
  if (typeof manifest['spec'] !== 'object' || manifest['spec'] === null) throw new SnapshotError(name, 'its manifest carries no OCI spec');
  return { record, imagePath: dir, spec: parseSpec(manifest['spec']), embedded: manifest['embedded'] === true };
}

/** The MANIFEST of the image in `imagePath`, parsed (an object). */
export async function readManifest(imagePath: string): Promise<Record<string, unknown>> {
  const reader = await ImageReader.open(join(imagePath, IMAGE_FILE));
  try {
    const m = reader.section(SECTION.MANIFEST);
    if (!m) throw new MoatError(`${reader.path}: no MANIFEST section`);
    let v: unknown;
    try {
      v = JSON.parse((await reader.readAll(m)).toString('utf8'));
    } catch (e) {
      throw e instanceof MoatError ? e : new MoatError(`${reader.path}: the manifest is not JSON`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MoatError(`${reader.path}: the manifest is not a JSON object`);
    return v as Record<string, unknown>;
  } finally {
    await reader.close();
  }
}

/** Every snapshot under `root`, by name. */
export function listSnapshots(root: string): SnapshotRecord[] {
  const dir = snapshotsDir(root);
  if (!existsSync(dir)) return [];
  const out: SnapshotRecord[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (!SNAPSHOT_NAME.test(name)) continue; // temporary directories of snapshots being taken
    try {
      out.push(JSON.parse(readFileSync(join(dir, name, 'snapshot.json'), 'utf8')) as SnapshotRecord);
    } catch {
      // half-removed: not listed
    }
  }
  return out;
}

/** Removes snapshot `name`. */
export function removeSnapshot(root: string, name: string): void {
  const dir = snapshotDir(root, name);
  if (!existsSync(dir)) throw new SnapshotError(name, 'does not exist');
  rmSync(dir, { recursive: true, force: true });
}

const SECTION_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(SECTION).map(([k, v]) => [v, k]));

/** What `snapshot inspect` shows. */
export interface SnapshotReport {
  record: SnapshotRecord;
  sections: { type: string; bytes: number; sha256: string }[];
  processes: { pid: number; args: string[]; uid: number; where: string }[];
  openFiles: { path: string; role: string; bytes?: number }[];
  /** `saved`: bytes of the region the image holds (the rest is untouched or comes from its file). */
  memoryRegions: { name: string; bytes: number; saved?: number }[];
  machine: Record<string, unknown>;
}

/**
 * The RAM blocks a QEMU migration stream declares at its start (the "ram" section's setup:
 * the total with RAM_SAVE_FLAG_MEM_SIZE, then per block a length-prefixed id and its size, all
 * big-endian), read from `head`, the stream's first bytes. Untrusted input: every read is
 * bounds-checked and anything unexpected yields what was parsed so far.
 */
export function qemuRamBlocks(head: Buffer): { name: string; bytes: number }[] {
  if (head.length < 8 || head.readUInt32BE(0) !== 0x5145564d) return [];
  const needle = Buffer.from([3, 0x72, 0x61, 0x6d]); // idstr "ram" after its length byte
  for (let at = head.indexOf(needle, 8); at >= 5; at = head.indexOf(needle, at + 1)) {
    if (head[at - 5] !== 0x01) continue; // QEMU_VM_SECTION_START, u32 section id, then the idstr
    let off = at + 4 + 8; // the idstr, u32 instance id, u32 version
    if (off + 8 > head.length) return [];
    const total = head.readBigUInt64BE(off);
    if ((total & 0x04n) === 0n) continue; // RAM_SAVE_FLAG_MEM_SIZE
    let left = total & ~0xfffn;
    off += 8;
    const blocks: { name: string; bytes: number }[] = [];
    while (left > 0n && off < head.length && blocks.length < 64) {
      const n = head[off]!;
      if (off + 1 + n + 8 > head.length) break;
      const name = head.subarray(off + 1, off + 1 + n).toString('latin1');
      const size = head.readBigUInt64BE(off + 1 + n);
      if (size > left) break;
      blocks.push({ name, bytes: Number(size) });
      left -= size;
      off += 1 + n + 8;
    }
    return blocks;
  }
  return [];
}

/** The first `n` bytes of a section's payload (not verified: for forensics of the layout only). */
function payloadHead(file: string, offset: number, length: number, n: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(Math.min(n, length));
    const got = readSync(fd, buf, 0, buf.length, offset);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** Lists a snapshot's processes, open files, memory regions and sizes; runs nothing. */
export async function inspectSnapshot(root: string, name: string): Promise<SnapshotReport> {
  const { record, imagePath } = await openSnapshot(root, name);
  const file = join(imagePath, IMAGE_FILE);
  const reader = await ImageReader.open(file);
  try {
    const sections = reader.sections.map((s) => ({ type: SECTION_NAMES[s.type] ?? String(s.type), bytes: s.length, sha256: s.sha256.toString('hex') }));
    const manifest = await readManifest(imagePath);
    if (manifest['backend'] === 'sentry') return { record, sections, ...sentryReport(manifest) };
    const spec = manifest['spec'] as Spec | undefined;
    const vm = (manifest['vm'] ?? {}) as Record<string, unknown>;
    const monitor = (manifest['monitor'] ?? {}) as Record<string, unknown>;
    const processes = [{
      pid: Number(monitor['pid'] ?? 0),
      args: spec?.process?.args ?? [],
      uid: spec?.process?.user.uid ?? 0,
      where: record.isolation === 'microvm' ? 'guest pid, in the VM' : 'sandbox pid',
    }];
    const disk = reader.section(SECTION.VM_DISK);
    const openFiles = [
      ...(typeof vm['baseImage'] === 'string' ? [{ path: vm['baseImage'], role: 'the read-only base image of the root disk (virtio-blk, shared)' }] : []),
      ...(disk ? [{ path: `${IMAGE_FILE}#VM_DISK`, role: 'the root disk\'s qcow2 overlay (the container\'s writes)', bytes: disk.length }] : []),
    ];
    const mem = reader.section(SECTION.VM_MIGRATION);
    const memoryRegions = mem ? qemuRamBlocks(payloadHead(file, mem.offset, mem.length, 1 << 16)) : [];
    const { spec: _s, monitor: _m, ...machine } = manifest;
    return { record, sections, processes, openFiles, memoryRegions, machine };
  } finally {
    await reader.close();
  }
}

/** The processes, files and memory of a sentry checkpoint's manifest (checked first: it is untrusted). */
function sentryReport(raw: Record<string, unknown>): Omit<SnapshotReport, 'record' | 'sections'> {
  const m = parseSentryManifest(raw);
  checkTree(m);
  const spec = m.spec as unknown as Spec;
  const byPid = new Map(m.processes.map((p) => [p.pid, p]));
  const processes = m.tree.map((n) => {
    const p = byPid.get(n.pid);
    const where = p
      ? `sandbox pid, parent ${n.ppid}, ${p.threads.length + 1} thread${p.threads.length > 0 ? 's' : ''} (${[p.pid, ...p.threads.map((t) => t.tid)].join(', ')})`
      : `sandbox pid, parent ${n.ppid}, a zombie (wait status ${n.zombie})`;
    return { pid: n.pid, args: n.pid === 1 ? spec.process?.args ?? [] : [p?.comm ?? '(zombie)'], uid: p?.creds.uid ?? 0, where };
  });
  const openFiles: SnapshotReport['openFiles'] = [];
  for (const p of m.processes) {
    const who = `pid ${p.pid} fd`;
    for (const f of p.fds) {
      const flags = `flags 0${f.flags.toString(8)}${f.cloexec ? ', close-on-exec' : ''}`;
      if (f.kind === 'external') openFiles.push({ path: `stdio ${f.stdio}`, role: `${who} ${f.fd}: from outside the container (the restoring runtime's own)` });
      else if (f.kind === 'file') openFiles.push({ path: f.path!, role: `${who} ${f.fd}, offset ${f.pos}, ${flags}` });
      else if (f.kind === 'pipe') {
        const waiting = Buffer.from(m.pipes[f.pipe!]!.data, 'base64').length;
        openFiles.push({ path: `pipe ${f.pipe}`, role: `${who} ${f.fd}, the ${f.end === 'r' ? 'read' : 'write'} end; ${waiting} bytes waiting`, bytes: waiting });
      } else {
        const k = m.sockets[f.socket!]!;
        const waiting = (k.queued?.[f.end === 'a' ? 0 : 1] ?? []).reduce((n, q) => n + Buffer.from(q, 'base64').length, 0);
        openFiles.push(k.listen
          ? { path: k.listen.path, role: `${who} ${f.fd}: a unix ${k.type} socket listening here` }
          : { path: `unix socket pair ${f.socket}`, role: `${who} ${f.fd}, end ${f.end} (${k.type}); ${waiting} bytes waiting`, bytes: waiting });
      }
    }
    for (const path of new Set(p.regions.filter((r) => r.kind === 'file').map((r) => r.name!))) openFiles.push({ path, role: `pid ${p.pid}: mapped (pages not written come from this file)` });
  }
  const memoryRegions = m.processes.flatMap((p) => p.regions.map((r) => ({
    name: `pid ${p.pid}: ${r.start}-${r.end} ${r.perms} ${r.name ?? `[${r.kind}]`}`,
    bytes: Number(BigInt(r.end) - BigInt(r.start)),
    saved: r.runs.reduce((n, [, c]) => n + c * PAGE, 0),
  })));
  const machine = {
    backend: m.backend, level: m.level, kernel: m.host.kernel, xfeatures: m.host.xfeatures, cpuFlags: m.host.cpuFlags.length,
    pipes: m.pipes.length, unixSockets: m.sockets.length, files: m.fs ? 'the root\'s upper layer (SENTRY_FS)' : 'none',
  };
  return { processes, openFiles, memoryRegions, machine };
}
