/**
 * The guest image of the `microvm` backend: a kernel (the host's own by default) and an
 * uncompressed initramfs whose /init is Moat's static agent, with the kernel modules the guest
 * needs (virtio-mmio transport, console, block, net, vsock, 9p, ext4, overlayfs) listed in load
 * order in /modules.load. Built once per kernel release into `<cacheDir>/<release>/` and reused
 * while the agent and the kernel file are unchanged.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync,
  renameSync, rmSync, statSync, writeFileSync, type Stats,
} from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { HostError, MoatError, UsageError } from '../../errors.js';
import { CpioWriter } from './cpio.js';
import type { GuestImage } from './types.js';

/** Modules the guest asks for, before their dependencies are added. */
export const ROOT_MODULES: readonly string[] = [
  'virtio_ring', 'virtio', 'virtio_mmio', 'virtio_console', 'virtio_blk', 'ext4', 'overlay', '9p',
  '9pnet_virtio', 'virtio_net', 'vmw_vsock_virtio_transport',
];

/** Roots without which the guest cannot boot at all: no devices, no console, no root disk. */
const ESSENTIAL: readonly string[] = ['virtio_mmio', 'virtio_console', 'virtio_blk'];

/** Kernel config symbols of the roots, to tell built-in drivers from a config file. */
const CONFIG_SYMBOL: Readonly<Record<string, string>> = {
  virtio_ring: 'CONFIG_VIRTIO',
  virtio: 'CONFIG_VIRTIO',
  virtio_mmio: 'CONFIG_VIRTIO_MMIO',
  virtio_console: 'CONFIG_VIRTIO_CONSOLE',
  virtio_blk: 'CONFIG_VIRTIO_BLK',
  ext4: 'CONFIG_EXT4_FS',
  overlay: 'CONFIG_OVERLAY_FS',
  '9p': 'CONFIG_9P_FS',
  '9pnet_virtio': 'CONFIG_NET_9P_VIRTIO',
  virtio_net: 'CONFIG_VIRTIO_NET',
  vmw_vsock_virtio_transport: 'CONFIG_VIRTIO_VSOCKETS',
};

/** Directories the agent expects in the initramfs. */
const INITRAMFS_DIRS: readonly string[] = ['dev', 'proc', 'sys', 'newroot', 'lower', 'upper'];

/** Version of the layout below; a cache written by another layout is rebuilt. */
const FORMAT = 1;

/** A root module this kernel does not need in the initramfs, and why. */
export interface SkippedModule {
  module: string;
  reason: 'built-in' | 'missing';
}

/** What `<cacheDir>/<release>/manifest.json` records about a built guest. */
export interface GuestManifest {
  format: number;
  release: string;
  /** The kernel copied into the cache. */
  kernel: string;
  initramfs: string;
  /** Modules in load order, as paths under /lib/modules/<release> (modules.dep's form, uncompressed). */
  modules: string[];
  /** Roots left out because the kernel has them built in or lacks them. */
  skipped: SkippedModule[];
  /** Soft dependencies (modules.softdep "pre:") that were added, as "module: dependency". */
  softdeps: string[];
  agentSha256: string;
  /** The kernel file the cache was built from, to tell when it changed. */
  kernelSource: { path: string; size: number; mtimeMs: number };
  /** The modules directory used, or null for a kernel with everything built in. */
  modulesDir: string | null;
  initramfsBytes: number;
  builtAt: string;
}

/** Options of `buildGuest`. */
export interface GuestBuildOptions {
  /** Cache root; the guest goes to `<cacheDir>/<release>/`. */
  cacheDir: string;
  /** The kernel image (default: the newest /boot/vmlinuz-*). */
  kernel?: string;
  /** The kernel's modules directory (default: /lib/modules/<release> when it exists). */
  modulesDir?: string;
  /** The static agent binary that becomes /init. */
  agent: string;
  /** Rebuild even when the cache is current. */
  force?: boolean;
  progress?: (msg: string) => void;
}

/** The guest cache under a state root. */
export function guestCacheDir(stateRoot: string): string {
  return join(stateRoot, 'guest');
}

/** dist/moat-agent of the package this code runs from. */
export function agentPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new HostError('cannot find the moat package directory (and so dist/moat-agent)');
    dir = up;
  }
  const agent = join(dir, 'dist', 'moat-agent');
  if (!existsSync(agent)) throw new HostError(`${agent} is missing: run "npm run build" (it compiles native/moat-agent.c)`);
  return agent;
}

/** Module name of a file name or module name: no directory or .ko suffix, "-" read as "_". */
export function moduleName(file: string): string {
  return basename(file).replace(/\.ko(\.(gz|xz|zst))?$/, '').replace(/-/g, '_');
}

/** Compares two kernel releases the way people read them (6.1.0-10 after 6.1.0-9). */
function compareReleases(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** The newest /boot/vmlinuz-*, by release. */
export function defaultKernel(bootDir = '/boot'): string {
  let names: string[];
  try {
    names = readdirSync(bootDir).filter((n) => n.startsWith('vmlinuz-'));
  } catch {
    names = [];
  }
  const newest = names.sort((a, b) => compareReleases(a.slice(8), b.slice(8))).pop();
  if (!newest) throw new HostError(`no kernel found (${bootDir}/vmlinuz-* does not exist): install linux-image-amd64 or pass --kernel PATH`);
  return join(bootDir, newest);
}

/** Reads `len` bytes at `pos` of an open file (fewer at its end). */
function readAt(fd: number, pos: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  const got = readSync(fd, buf, 0, len, pos);
  return buf.subarray(0, got);
}

/**
 * The release a kernel image announces: the version string of a bzImage's setup header, or the
 * "Linux version" banner of an uncompressed ELF vmlinux. Undefined when it has neither.
 */
export function kernelImageRelease(kernel: string): string | undefined {
  const fd = openSync(kernel, 'r');
  try {
    const head = readAt(fd, 0, 0x210);
    if (head.length >= 0x210 && head.toString('latin1', 0x202, 0x206) === 'HdrS') {
      const ptr = head.readUInt16LE(0x20e);
      if (ptr !== 0) {
        const s = readAt(fd, ptr + 0x200, 256).toString('latin1');
        const m = /^([\w.+~-]+)/.exec(s);
        if (m?.[1]) return m[1];
      }
      return undefined;
    }
    if (head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46) {
      const size = statSync(kernel).size;
      const banner = Buffer.from('Linux version ', 'latin1');
      const chunk = 8 << 20;
      for (let pos = 0; pos < size; pos += chunk - 256) {
        const buf = readAt(fd, pos, chunk);
        const at = buf.indexOf(banner);
        if (at >= 0) {
          const m = /^([\w.+~-]+)/.exec(buf.toString('latin1', at + banner.length, at + banner.length + 128));
          if (m?.[1]) return m[1];
        }
      }
    }
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Fails unless `agent` is a statically linked ELF executable (it runs before any library exists). */
function checkAgent(agent: string, data: Buffer): void {
  if (data.length < 64 || data.readUInt32BE(0) !== 0x7f454c46) throw new UsageError(`agent ${agent} is not an ELF executable`);
  if (data[4] !== 2 || data[5] !== 1) throw new UsageError(`agent ${agent} is not a 64-bit little-endian ELF executable`);
  const phoff = Number(data.readBigUInt64LE(0x20));
  const phentsize = data.readUInt16LE(0x36);
  const phnum = data.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > data.length) break;
    if (data.readUInt32LE(off) === 3) {
      throw new UsageError(`agent ${agent} is dynamically linked (it has an ELF interpreter); the guest's /init must be a static binary`);
    }
  }
}

/** A parsed modules directory: modules.dep, modules.builtin, modules.softdep, modules.alias. */
interface ModuleIndex {
  dir: string;
  /** Module name → its file (as modules.dep writes it) and the names of its dependencies. */
  deps: Map<string, { file: string; deps: string[] }>;
  builtin: Set<string>;
  /** Module name → names or aliases it wants loaded before itself. */
  softPre: Map<string, string[]>;
  /** Alias → module names. */
  aliases: Map<string, string[]>;
}

/** Reads a file of the modules directory, or '' when it is absent. */
function readOptional(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new HostError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** Parses the index files of a modules directory. */
function readModuleIndex(dir: string): ModuleIndex {
  const depFile = join(dir, 'modules.dep');
  if (!existsSync(depFile)) throw new HostError(`${depFile} is missing: run "depmod ${basename(dir)}" (kmod) or pass another --modules DIR`);
  const deps = new Map<string, { file: string; deps: string[] }>();
  for (const line of readOptional(depFile).split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const file = line.slice(0, colon).trim();
    const rest = line.slice(colon + 1).trim();
    deps.set(moduleName(file), { file, deps: rest ? rest.split(/\s+/).map(moduleName) : [] });
  }
  const builtin = new Set(readOptional(join(dir, 'modules.builtin')).split('\n').filter((l) => l.trim()).map(moduleName));
  const softPre = new Map<string, string[]>();
  for (const line of readOptional(join(dir, 'modules.softdep')).split('\n')) {
    const m = /^softdep\s+(\S+)\s+(.*)$/.exec(line.trim());
    if (!m?.[1] || m[2] === undefined) continue;
    const pre = /(?:^|\s)pre:\s*(.*?)(?:\s+post:.*)?$/.exec(m[2]);
    if (!pre?.[1]) continue;
    const names = pre[1].split(/\s+/).filter(Boolean);
    softPre.set(moduleName(m[1]), [...(softPre.get(moduleName(m[1])) ?? []), ...names]);
  }
  const aliases = new Map<string, string[]>();
  for (const line of readOptional(join(dir, 'modules.alias')).split('\n')) {
    const m = /^alias\s+(\S+)\s+(\S+)/.exec(line);
    if (!m?.[1] || !m[2] || /[*?[]/.test(m[1])) continue;
    aliases.set(m[1], [...(aliases.get(m[1]) ?? []), moduleName(m[2])]);
  }
  return { dir, deps, builtin, softPre, aliases };
}

/** The result of resolving the roots against a modules directory. */
interface Resolution {
  /** Module names in load order (each after its dependencies, each once). */
  order: string[];
  skipped: SkippedModule[];
  softdeps: string[];
}

/**
 * The modules to load for `roots`, dependencies first, each once; a soft dependency ("pre:")
 * that names an alias resolves to one module (a `_generic` one when there is a choice, as it
 * loads on any CPU).
 */
function resolveModules(index: ModuleIndex, roots: readonly string[]): Resolution {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const softdeps: string[] = [];
  const softTarget = (name: string): string | undefined => {
    const n = moduleName(name);
    if (index.deps.has(n) || index.builtin.has(n)) return n;
    const targets = (index.aliases.get(name) ?? []).filter((t) => index.deps.has(t) || index.builtin.has(t));
    if (targets.some((t) => index.builtin.has(t))) return undefined;
    return targets.find((t) => t.endsWith('_generic')) ?? targets[0];
  };
  const visit = (name: string, chain: string[]): void => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new HostError(`${join(index.dir, 'modules.dep')}: dependency cycle ${[...chain, name].join(' -> ')}`);
    if (index.builtin.has(name)) {
      state.set(name, 'done');
      return;
    }
    const entry = index.deps.get(name);
    if (!entry) throw new HostError(`${join(index.dir, 'modules.dep')}: module ${name} (needed by ${chain.at(-1) ?? 'the guest'}) is not listed`);
    state.set(name, 'visiting');
    for (const soft of index.softPre.get(name) ?? []) {
      const t = softTarget(soft);
      if (t === undefined || t === name || index.builtin.has(t)) continue;
      if (state.get(t) !== 'done') softdeps.push(`${name}: ${t}`);
      visit(t, [...chain, name]);
    }
    for (const d of entry.deps) visit(d, [...chain, name]);
    state.set(name, 'done');
    order.push(name);
  };
  const skipped: SkippedModule[] = [];
  for (const root of roots) {
    const n = moduleName(root);
    if (index.builtin.has(n)) skipped.push({ module: n, reason: 'built-in' });
    else if (!index.deps.has(n)) skipped.push({ module: n, reason: 'missing' });
    else visit(n, []);
  }
  return { order, skipped, softdeps };
}

/** `CONFIG_X=y` symbols of the kernel's config file, if one is found next to it or in /boot. */
function builtinsFromConfig(kernel: string, release: string): { file: string; set: Set<string> } | undefined {
  for (const file of [join(dirname(kernel), `config-${release}`), join(dirname(kernel), '.config'), `/boot/config-${release}`]) {
    if (!existsSync(file)) continue;
    const set = new Set<string>();
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^(CONFIG_\w+)=y$/.exec(line.trim());
      if (m?.[1]) set.add(m[1]);
    }
    return { file, set };
  }
  return undefined;
}

/** The bytes of a module file, decompressed (.gz with zlib; .xz and .zst with xz-utils and zstd). */
function moduleBytes(file: string): Buffer {
  if (file.endsWith('.ko')) return readFileSync(file);
  if (file.endsWith('.ko.gz')) return gunzipSync(readFileSync(file));
  const [tool, pkg] = file.endsWith('.ko.xz') ? ['xz', 'xz-utils'] : file.endsWith('.ko.zst') ? ['zstd', 'zstd'] : [undefined, undefined];
  if (!tool || !pkg) throw new HostError(`module ${file}: unknown file type`);
  try {
    return execFileSync(tool, ['-dc', file], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new HostError(`module ${file} is compressed and ${tool} is not installed (apt-get install ${pkg})`);
    throw new HostError(`${tool} -dc ${file} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

/** Reads and checks the manifest of a cached guest directory; undefined if absent or unreadable. */
export function readManifest(dir: string): GuestManifest | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const m = raw as Partial<GuestManifest>;
  const ks = m.kernelSource;
  const ok = m.format === FORMAT && typeof m.release === 'string' && typeof m.kernel === 'string' && typeof m.initramfs === 'string'
    && Array.isArray(m.modules) && m.modules.every((x) => typeof x === 'string') && typeof m.agentSha256 === 'string'
    && typeof ks === 'object' && ks !== null && typeof ks.path === 'string' && typeof ks.size === 'number' && typeof ks.mtimeMs === 'number'
    && (m.modulesDir === null || typeof m.modulesDir === 'string') && typeof m.initramfsBytes === 'number';
  return ok ? (m as GuestManifest) : undefined;
}

/** Releases with a guest in the cache, newest first. */
export function cachedReleases(cacheDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(cacheDir).filter((n) => !n.startsWith('.') && n !== 'images');
  } catch {
    return [];
  }
  return names.filter((n) => readManifest(join(cacheDir, n)) !== undefined).sort(compareReleases).reverse();
}

/** What a cached guest must match to be reused. */
interface CacheKey {
  agentSha256: string;
  kernel: string;
  size: number;
  mtimeMs: number;
  modulesDir: string | null;
}

/** The cached guest of `dir` if it was built from exactly these inputs and is intact. */
function reusable(dir: string, key: CacheKey): GuestManifest | undefined {
  const m = readManifest(dir);
  if (!m) return undefined;
  if (m.agentSha256 !== key.agentSha256 || m.kernelSource.path !== key.kernel || m.kernelSource.size !== key.size
    || m.kernelSource.mtimeMs !== key.mtimeMs || m.modulesDir !== key.modulesDir) return undefined;
  try {
    if (statSync(m.kernel).size !== key.size || statSync(m.initramfs).size !== m.initramfsBytes) return undefined;
  } catch {
    return undefined;
  }
  return m;
}

/** Removes build directories left by killed builds (their pid is gone). */
function removeStale(cacheDir: string): void {
  for (const n of readdirSync(cacheDir)) {
    const m = /^\.(?:build|old)-.*-(\d+)-[0-9a-f]+$/.exec(n);
    if (!m?.[1]) continue;
    try {
      process.kill(Number(m[1]), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') rmSync(join(cacheDir, n), { recursive: true, force: true });
    }
  }
}

/** Path of a module in the guest: /lib/modules/<release>/<its modules.dep path>. */
function guestModulePath(index: ModuleIndex, release: string, file: string): string {
  const rel = isAbsolute(file) ? relative(index.dir, file) : file;
  const safe = rel.startsWith('..') || isAbsolute(rel) ? join('extra', basename(file)) : rel;
  return join('lib/modules', release, safe.replace(/\.(gz|xz|zst)$/, ''));
}

/**
 * Builds (or reuses from the cache) the guest for a kernel: its initramfs with the agent as /init
 * and the modules the guest needs, the kernel copied beside it, and manifest.json.
 */
export function buildGuest(opts: GuestBuildOptions): GuestImage {
  const t0 = performance.now();
  const progress = opts.progress ?? ((): void => {});

  // inputs: the agent, the kernel and its release, the modules directory
  const agent = resolve(opts.agent);
  let agentData: Buffer;
  try {
    agentData = readFileSync(agent);
  } catch (e) {
    throw new UsageError(`cannot read the agent ${agent}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  checkAgent(agent, agentData);
  const agentSha256 = createHash('sha256').update(agentData).digest('hex');

  const kernel = resolve(opts.kernel ?? defaultKernel());
  let kst: Stats;
  try {
    kst = statSync(kernel);
    closeSync(openSync(kernel, 'r'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`kernel ${kernel} does not exist`);
    if (code === 'EACCES') throw new HostError(`cannot read kernel ${kernel} (some distributions keep /boot/vmlinuz-* readable by root only): run as root or pass --kernel PATH`);
    throw new HostError(`cannot read kernel ${kernel}: ${(e as Error).message}`);
  }
  if (!kst.isFile()) throw new UsageError(`kernel ${kernel} is not a regular file`);

  const modulesOpt = opts.modulesDir ? resolve(opts.modulesDir) : undefined;
  if (modulesOpt && !existsSync(modulesOpt)) throw new UsageError(`--modules ${modulesOpt} does not exist`);
  const release = kernelImageRelease(kernel)
    ?? /^vmlinu[xz]-(.+)$/.exec(basename(kernel))?.[1]
    ?? (modulesOpt ? basename(modulesOpt) : undefined);
  if (!release) throw new UsageError(`cannot tell the release of kernel ${kernel} (no version in its header or file name): pass --modules /lib/modules/RELEASE`);
  if (!/^[\w.+~-]+$/.test(release) || release === '.' || release === '..') throw new UsageError(`kernel ${kernel} has an unusable release "${release}"`);
  const modulesDir = modulesOpt ?? (existsSync(join('/lib/modules', release)) ? join('/lib/modules', release) : null);
  progress(`kernel ${kernel} (release ${release})${modulesDir ? `, modules from ${modulesDir}` : ', no modules directory'}`);

  mkdirSync(opts.cacheDir, { recursive: true, mode: 0o755 });
  const cacheDir = resolve(opts.cacheDir);
  const finalDir = join(cacheDir, release);
  const key: CacheKey = { agentSha256, kernel, size: kst.size, mtimeMs: kst.mtimeMs, modulesDir };
  if (!opts.force) {
    const hit = reusable(finalDir, key);
    if (hit) {
      progress(`using cached guest ${finalDir}`);
      progress(`done in ${Math.round(performance.now() - t0)} ms`);
      return { kernel: hit.kernel, initramfs: hit.initramfs, release: hit.release };
    }
  }
  removeStale(cacheDir);

  // the modules: resolved from modules.dep, or none for a kernel with the drivers built in
  progress('resolving modules');
  let index: ModuleIndex | undefined;
  let res: Resolution;
  if (modulesDir) {
    index = readModuleIndex(modulesDir);
    res = resolveModules(index, ROOT_MODULES);
  } else {
    const cfg = builtinsFromConfig(kernel, release);
    const where = `looked for /lib/modules/${release}; pass --modules DIR`;
    if (!cfg) {
      throw new HostError(`kernel ${kernel} has no modules directory (${where}) and no config file (config-${release} or .config beside it, /boot/config-${release}) shows its virtio drivers built in`);
    }
    const missing = ESSENTIAL.filter((m) => !cfg.set.has(CONFIG_SYMBOL[m] ?? ''));
    if (missing.length) {
      throw new HostError(`kernel ${kernel} has no modules directory (${where}) and ${cfg.file} does not show ${missing.join(', ')} built in (=y): the guest could not reach its devices`);
    }
    res = {
      order: [],
      skipped: ROOT_MODULES.map((m) => ({ module: m, reason: cfg.set.has(CONFIG_SYMBOL[m] ?? '') ? 'built-in' as const : 'missing' as const })),
      softdeps: [],
    };
  }
  const lacking = res.skipped.filter((s) => s.reason === 'missing').map((s) => s.module);
  const fatal = lacking.filter((m) => ESSENTIAL.includes(m));
  if (fatal.length) throw new HostError(`kernel ${release} has neither a module nor a built-in driver for ${fatal.join(', ')}: the guest could not reach its devices`);
  if (lacking.length) progress(`note: kernel ${release} lacks ${lacking.join(', ')} (the guest goes without)`);

  const idx = index;
  const modules = idx === undefined ? [] : res.order.map((name) => {
    const file = idx.deps.get(name)?.file ?? name;
    const host = isAbsolute(file) ? file : join(idx.dir, file);
    return { name, host, guest: guestModulePath(idx, release, file), data: moduleBytes(host) };
  });
  const payload = agentData.length + modules.reduce((n, m) => n + m.data.length, 0);

  // build into a temporary directory of the cache, then move it into place
  const tmp = join(cacheDir, `.build-${release}-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp, { mode: 0o755 });
  try {
    progress(`writing initramfs (${modules.length} modules, ${(payload / (1 << 20)).toFixed(1)} MiB)`);
    const cpio = new CpioWriter(join(tmp, 'initramfs.cpio'));
    let initramfsBytes: number;
    try {
      for (const d of INITRAMFS_DIRS) cpio.dir(d, 0o755);
      cpio.device('dev/console', 'char', 5, 1, 0o600);
      cpio.file('init', { data: agentData }, 0o755);
      cpio.file('modules.load', { data: Buffer.from(modules.map((m) => `/${m.guest}\n`).join('')) }, 0o644);
      for (const m of modules) cpio.file(m.guest, { data: m.data }, 0o644);
      initramfsBytes = cpio.finish();
    } catch (e) {
      cpio.abort();
      throw e;
    }

    progress('copying kernel');
    copyFileSync(kernel, join(tmp, 'vmlinuz'));
    const manifest: GuestManifest = {
      format: FORMAT,
      release,
      kernel: join(finalDir, 'vmlinuz'),
      initramfs: join(finalDir, 'initramfs.cpio'),
      modules: modules.map((m) => relative(join('lib/modules', release), m.guest)),
      skipped: res.skipped,
      softdeps: res.softdeps,
      agentSha256,
      kernelSource: { path: kernel, size: kst.size, mtimeMs: kst.mtimeMs },
      modulesDir,
      initramfsBytes,
      builtAt: new Date().toISOString(),
    };
    writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');

    // another build of the same inputs may have finished meanwhile: keep its result
    const raced = opts.force ? undefined : reusable(finalDir, key);
    if (raced) {
      rmSync(tmp, { recursive: true, force: true });
      progress(`done in ${Math.round(performance.now() - t0)} ms (another build finished first)`);
      return { kernel: raced.kernel, initramfs: raced.initramfs, release };
    }
    const old = join(cacheDir, `.old-${release}-${process.pid}-${randomBytes(4).toString('hex')}`);
    let moved = false;
    try {
      renameSync(finalDir, old);
      moved = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new HostError(`cannot replace ${finalDir}: ${(e as Error).message}`);
    }
    renameSync(tmp, finalDir);
    if (moved) rmSync(old, { recursive: true, force: true });
    progress(`done in ${Math.round(performance.now() - t0)} ms`);
    return { kernel: manifest.kernel, initramfs: manifest.initramfs, release };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof MoatError) throw e;
    throw new HostError(`building the guest for ${release} in ${cacheDir} failed: ${(e as Error).message}`, { cause: e });
  }
}
