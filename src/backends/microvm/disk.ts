/**
 * Root disks of the `microvm` backend. A container's rootfs becomes a raw ext4 base image (made by
 * mkfs.ext4 -d, without mounting anything), cached by a hash of the tree's listing and never
 * written; every VM boots from its own small qcow2 overlay on top of it.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, type Hash } from 'node:crypto';
import {
  accessSync, chmodSync, closeSync, constants, existsSync, ftruncateSync, linkSync, lstatSync, mkdirSync, openSync,
  readdirSync, readSync, realpathSync, rmSync, statSync,
} from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { HostError, UsageError } from '../../errors.js';

const MiB = 1 << 20;
const BLOCK = 4096;

/** Finds an executable on PATH or in the sbin directories (mkfs.ext4 lives in /usr/sbin). */
function tool(name: string, pkg: string): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  throw new HostError(`${name} is not installed (apt-get install ${pkg})`);
}

/** Runs a tool; a failure becomes a HostError with the command line and its stderr. */
function run(name: string, pkg: string, args: string[]): string {
  const bin = tool(name, pkg);
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string; status?: number | null };
    if (err.code === 'ENOENT') throw new HostError(`${name} is not installed (apt-get install ${pkg})`);
    const detail = (err.stderr ?? '').trim() || err.message;
    throw new HostError(`${name} ${args.join(' ')} failed${err.status != null ? ` (exit status ${err.status})` : ''}: ${detail}`);
  }
}

/** What the walk of a tree found: its entry count and the space its files take in 4 KiB blocks. */
interface TreeSummary {
  entries: number;
  bytes: number;
}

/** Feeds `hash` one line per entry under `dir` (sorted, recursive) and sums the tree up. */
function walk(root: string, rel: string, hash: Hash, sum: TreeSummary): void {
  const dir = rel ? join(root, rel) : root;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new HostError(`cannot read ${dir}: ${(e as Error).message}`);
  }
  for (const name of names.sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, r), { bigint: true });
    hash.update(`${r}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.size}\0${st.mtimeNs}\n`);
    sum.entries++;
    const size = Number(st.size);
    if (st.isDirectory()) {
      sum.bytes += BLOCK;
      walk(root, r, hash, sum);
    } else if (st.isFile() || st.isSymbolicLink()) {
      sum.bytes += Math.ceil(size / BLOCK) * BLOCK;
    }
  }
}

/** Removes temporary images left by killed processes (their pid is gone). */
function removeStale(dir: string): void {
  for (const n of readdirSync(dir)) {
    const m = /^\.[0-9a-f]{64}\.(\d+)\.[0-9a-f]+\.tmp$/.exec(n);
    if (!m?.[1]) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(dir, n), { force: true });
    }
  }
}

/** Image size for a tree: 1.5 × its size + 64 MiB, in whole MiB, at least 128 MiB. */
export function imageSizeMiB(treeBytes: number): number {
  return Math.max(128, Math.ceil((treeBytes * 1.5 + 64 * MiB) / MiB));
}

/**
 * The base image of a rootfs: a raw ext4 file system with the tree's contents, ownership and
 * modes, cached read-only (0444) at `<cacheDir>/images/<sha256 of the tree's listing>.ext4`.
 */
export function baseImage(rootfs: string, cacheDir: string, progress?: (msg: string) => void): string {
  const say = progress ?? ((): void => {});
  let real: string;
  try {
    real = realpathSync(rootfs);
  } catch (e) {
    throw new UsageError(`rootfs ${rootfs} does not exist: ${(e as Error).message}`);
  }
  if (!statSync(real).isDirectory()) throw new UsageError(`rootfs ${rootfs} is not a directory`);

  const t0 = performance.now();
  const hash = createHash('sha256').update(`${real}\n`);
  const root = lstatSync(real, { bigint: true });
  hash.update(`.\0${root.mode}\0${root.uid}\0${root.gid}\0${root.mtimeNs}\n`);
  const sum: TreeSummary = { entries: 1, bytes: BLOCK };
  walk(real, '', hash, sum);
  const digest = hash.digest('hex');
  const dir = join(resolve(cacheDir), 'images');
  const image = join(dir, `${digest}.ext4`);
  if (existsSync(image)) {
    say(`using cached image ${image}`);
    return image;
  }

  mkdirSync(dir, { recursive: true, mode: 0o755 });
  removeStale(dir);
  const sizeMiB = imageSizeMiB(sum.bytes);
  // mkfs's default of one inode per 16 KiB runs short for trees of many small files
  const inodes = Math.ceil(sum.entries * 1.25) + 1024;
  const extra = inodes > (sizeMiB * MiB) / 16384 ? ['-N', String(inodes)] : [];
  say(`making ${sizeMiB} MiB ext4 image of ${real} (${sum.entries} entries, ${(sum.bytes / MiB).toFixed(1)} MiB)`);
  const tmp = join(dir, `.${digest}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fd = openSync(tmp, 'wx', 0o644);
    try {
      ftruncateSync(fd, sizeMiB * MiB);
    } finally {
      closeSync(fd);
    }
    run('mkfs.ext4', 'e2fsprogs', ['-q', '-F', ...extra, '-d', real, '-L', 'moat-root', '-E', 'root_owner=0:0', tmp, `${sizeMiB}M`]);
    chmodSync(tmp, 0o444);
    // link, not rename: an image another process made first stays (its overlays point at it)
    try {
      linkSync(tmp, image);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new HostError(`cannot store ${image}: ${(e as Error).message}`);
      say(`another process made ${image} first; using it`);
    }
  } finally {
    rmSync(tmp, { force: true });
  }
  say(`image ready in ${Math.round(performance.now() - t0)} ms`);
  return image;
}

/**
 * The backing file a qcow2 image names in its header (magic "QFI\xfb", version, u64 offset and
 * u32 size of the name, big-endian), or undefined for none; read directly, because the image may
 * be untrusted (a restored checkpoint's) and must not reach qemu-img or QEMU unchecked. Throws
 * UsageError for anything that is not a well-formed qcow2 header.
 */
export function qcow2BackingFile(path: string): string | undefined {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(20);
    if (readSync(fd, head, 0, 20, 0) !== 20 || head.readUInt32BE(0) !== 0x514649fb) throw new UsageError(`${path} is not a qcow2 image`);
    const version = head.readUInt32BE(4);
    if (version !== 2 && version !== 3) throw new UsageError(`${path}: qcow2 version ${version} is not 2 or 3`);
    const offset = head.readBigUInt64BE(8);
    const size = head.readUInt32BE(16);
    if (offset === 0n) return undefined;
    if (size === 0 || size > 1023 || offset > 65536n) throw new UsageError(`${path}: implausible backing file name (${size} bytes at ${offset})`);
    const name = Buffer.alloc(size);
    if (readSync(fd, name, 0, size, Number(offset)) !== size) throw new UsageError(`${path}: truncated backing file name`);
    return name.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Creates a qcow2 overlay at `path` backed by the raw image `base` (which it never writes). */
export function overlayDisk(base: string, path: string): void {
  const b = resolve(base);
  if (!existsSync(b)) throw new UsageError(`base image ${b} does not exist`);
  run('qemu-img', 'qemu-utils', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', b, resolve(path)]);
}
