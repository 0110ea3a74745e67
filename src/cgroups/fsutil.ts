/**
 * Reading and writing cgroupfs files. Each value is written with its own write(2) on a file
 * opened write-only without O_CREAT (cgroupfs parses one value per write, refuses to create
 * files, and refuses read-write opens of write-only files such as devices.allow).
 */
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmdirSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { CgroupError, errnoCode } from './errors.js';

/** The value a cgroup file shows for "no limit" ("max", or the kernel's large sentinel), as runc reports it. */
export const MAX_U64 = 2 ** 64 - 1;

/** Writes `value` to `dir/file` in one write; throws CgroupError naming the file and errno. */
export function writeCgroupFile(dir: string, file: string, value: string): void {
  const path = join(dir, file);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY);
  } catch (err) {
    throw failure('open', path, value, err);
  }
  try {
    writeSync(fd, value);
  } catch (err) {
    throw failure('write', path, value, err);
  } finally {
    closeSync(fd);
  }
}

function failure(op: string, path: string, value: string, err: unknown): CgroupError {
  const code = errnoCode(err);
  const words = err instanceof Error ? (/^[A-Z]+: ([^,]+)/.exec(err.message)?.[1] ?? err.message) : String(err);
  const what = op === 'open' ? `cannot open ${path}` : `cannot write ${JSON.stringify(value)} to ${path}`;
  return new CgroupError(`${what}: ${words}${code ? ` (${code})` : ''}`, path, code);
}

/** Reads `dir/file`; throws CgroupError if it cannot. */
export function readCgroupFile(dir: string, file: string): string {
  const path = join(dir, file);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    throw new CgroupError(`cannot read ${path}: ${code ?? String(err)}`, path, code);
  }
}

/** Reads `dir/file`, or undefined if it does not exist (or the cgroup is gone). */
export function tryReadCgroupFile(dir: string, file: string): string | undefined {
  try {
    return readFileSync(join(dir, file), 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR' || code === 'EOPNOTSUPP') return undefined;
    throw new CgroupError(`cannot read ${join(dir, file)}: ${code ?? String(err)}`, join(dir, file), code);
  }
}

/** True if `dir/file` exists. */
export function hasFile(dir: string, file: string): boolean {
  return existsSync(join(dir, file));
}

/** Parses one unsigned cgroup value; "max" (and anything at or above 2^64-1) reads as MAX_U64. */
export function parseUint(text: string): number {
  const t = text.trim();
  if (t === 'max') return MAX_U64;
  const n = Number(t);
  return Number.isFinite(n) ? n : 0;
}

/** Reads one unsigned value from `dir/file`; 0 if the file is missing. */
export function readUint(dir: string, file: string): number {
  const text = tryReadCgroupFile(dir, file);
  return text === undefined ? 0 : parseUint(text);
}

/** Parses "key value" lines (memory.stat, cpu.stat, memory.events, ...) into a map. */
export function parseKeyValues(text: string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? '').split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key !== undefined && key !== '' && value !== undefined) out.set(key, parseUint(value));
  }
  return out;
}

/** Creates `dir` and any missing parents; throws CgroupError on failure. */
export function mkdirCgroup(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    const code = errnoCode(err);
    throw new CgroupError(`cannot create cgroup ${dir}: ${code ?? String(err)}`, dir, code);
  }
}

/** The child cgroups (subdirectories) of a cgroup directory; none if it is gone. */
export function childCgroups(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

/** The pids in `dir/cgroup.procs` and, with `recursive`, in every cgroup below it. */
export function readProcs(dir: string, recursive: boolean, into: Set<number> = new Set()): Set<number> {
  const text = tryReadCgroupFile(dir, 'cgroup.procs');
  if (text === undefined) return into;
  for (const line of text.split('\n')) {
    const pid = Number(line);
    if (line !== '' && Number.isInteger(pid) && pid > 0) into.add(pid);
  }
  if (recursive) for (const child of childCgroups(dir)) readProcs(child, true, into);
  return into;
}

/**
 * Removes a cgroup directory and the cgroups below it (deepest first). Returns true when it is
 * gone (or never existed), false when the kernel still holds it (EBUSY: a process, maybe a dying
 * one, is in it); throws CgroupError for anything else.
 */
export function removeCgroupTree(dir: string): boolean {
  for (const child of childCgroups(dir)) removeCgroupTree(child);
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') return true;
    if (code === 'EBUSY' || code === 'ENOTEMPTY' || code === 'EAGAIN') return false;
    throw new CgroupError(`cannot remove cgroup ${dir}: ${code ?? String(err)}`, dir, code);
  }
}
