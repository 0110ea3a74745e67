import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync,
  statSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { CpioWriter, NEWC_HEADER_LEN, NEWC_MAGIC, TRAILER } from '../../src/backends/microvm/cpio.js';
import { buildGuest, guestCacheDir, moduleName, readManifest } from '../../src/backends/microvm/guest.js';
import { HostError } from '../../src/errors.js';

/** One entry of a parsed newc archive. */
interface Entry {
  name: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdev: [number, number];
  data: Buffer;
}

/** Parses a newc archive strictly: magic, zero padding to 4 bytes, the trailer last, nothing after. */
function parseNewc(buf: Buffer): Entry[] {
  const out: Entry[] = [];
  let off = 0;
  for (;;) {
    assert.ok(off + NEWC_HEADER_LEN <= buf.length, `header at ${off} runs past the end`);
    assert.equal(off % 4, 0, `header at ${off} is not 4-byte aligned`);
    assert.equal(buf.toString('ascii', off, off + 6), NEWC_MAGIC, `bad magic at ${off}`);
    const f = (i: number): number => {
      const s = buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8);
      assert.match(s, /^[0-9a-f]{8}$/, `field ${i} at ${off}: "${s}"`);
      return parseInt(s, 16);
    };
    const [ino, mode, uid, gid, nlink, mtime, size, , , rmaj, rmin, namesize, check] = Array.from({ length: 13 }, (_, i) => f(i)) as [
      number, number, number, number, number, number, number, number, number, number, number, number, number];
    assert.equal(check, 0);
    const nameStart = off + NEWC_HEADER_LEN;
    assert.equal(buf[nameStart + namesize - 1], 0, 'name is not NUL-terminated');
    const name = buf.toString('utf8', nameStart, nameStart + namesize - 1);
    let p = nameStart + namesize;
    while (p % 4) assert.equal(buf[p++], 0, `non-zero name padding after "${name}"`);
    const data = buf.subarray(p, p + size);
    assert.equal(data.length, size, `data of "${name}" runs past the end`);
    p += size;
    while (p % 4) assert.equal(buf[p++], 0, `non-zero data padding after "${name}"`);
    off = p;
    if (name === TRAILER) {
      assert.equal(off, buf.length, 'bytes after the trailer');
      return out;
    }
    out.push({ name, ino, mode, uid, gid, nlink, mtime, rdev: [rmaj, rmin], data });
  }
}

const work = mkdtempSync(join(tmpdir(), 'moat-guest-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('CpioWriter writes newc that cpio -t lists and the strict parser reads back', () => {
  const archive = join(work, 'a.cpio');
  const hostFile = join(work, 'host.bin');
  writeFileSync(hostFile, Buffer.from('0123456789abc'));
  const w = new CpioWriter(archive);
  w.dir('d', 0o750);
  // names and data of every length modulo 4 exercise each padding case
  for (let i = 0; i < 8; i++) w.file(`d/${'n'.repeat(i + 1)}`, { data: Buffer.alloc(i, 0x41 + i) }, 0o640 + (i % 2));
  w.file('/x/y/from-path', { path: hostFile }, 0o755, { uid: 7, gid: 8 });
  w.symlink('d/link', '../x/y/from-path');
  w.device('dev/console', 'char', 5, 1, 0o600);
  assert.throws(() => w.file('d/n', { data: Buffer.alloc(0) }), /duplicate entry "d\/n"/);
  assert.throws(() => w.dir('a/../b'), /contains "\.\."/);
  const size = w.finish();
  const bytes = readFileSync(archive);
  assert.equal(bytes.length, size);

  const entries = parseNewc(bytes);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const names = entries.map((e) => e.name);
  assert.deepEqual(names.slice(0, 10), ['d', 'd/n', 'd/nn', 'd/nnn', 'd/nnnn', 'd/nnnnn', 'd/nnnnnn', 'd/nnnnnnn', 'd/nnnnnnnn', 'x']);
  assert.ok(names.indexOf('x') < names.indexOf('x/y') && names.indexOf('x/y') < names.indexOf('x/y/from-path'), 'parents precede children');
  assert.ok(names.indexOf('dev') < names.indexOf('dev/console'));
  assert.equal(new Set(entries.map((e) => e.ino)).size, entries.length, 'inode numbers are unique');
  assert.ok(entries.every((e) => e.mtime === 0), 'mtime is 0');
  assert.equal(byName.get('d')?.mode, 0o040750);
  assert.equal(byName.get('d')?.nlink, 2);
  assert.equal(byName.get('d/nnn')?.mode, 0o100640);
  assert.equal(byName.get('d/nnn')?.data.toString(), 'CC');
  assert.equal(byName.get('d/nnnn')?.mode, 0o100641);
  const fp = byName.get('x/y/from-path');
  assert.equal(fp?.mode, 0o100755);
  assert.equal(fp?.uid, 7);
  assert.equal(fp?.gid, 8);
  assert.equal(fp?.data.toString(), '0123456789abc');
  assert.equal(byName.get('x')?.mode, 0o040755);
  assert.equal(byName.get('d/link')?.mode, 0o120777);
  assert.equal(byName.get('d/link')?.data.toString(), '../x/y/from-path');
  assert.equal(byName.get('dev/console')?.mode, 0o020600);
  assert.deepEqual(byName.get('dev/console')?.rdev, [5, 1]);

  // the same entries give the same bytes
  const again = new CpioWriter(join(work, 'b.cpio'));
  again.file('f', { data: Buffer.from('x') });
  again.finish();
  const again2 = new CpioWriter(join(work, 'c.cpio'));
  again2.file('f', { data: Buffer.from('x') });
  again2.finish();
  assert.deepEqual(readFileSync(join(work, 'b.cpio')), readFileSync(join(work, 'c.cpio')));
});

test('the system cpio lists and extracts what CpioWriter wrote', (t) => {
  if (spawnSync('cpio', ['--version']).status !== 0) {
    t.skip('cpio is not installed (apt-get install cpio)');
    return;
  }
  const archive = join(work, 'sys.cpio');
  const w = new CpioWriter(archive);
  w.dir('top');
  w.file('top/a', { data: Buffer.from('hello') }, 0o600);
  w.file('top/bb', { data: Buffer.from('') });
  w.symlink('top/l', 'a');
  w.file('init', { data: Buffer.from('#!/bin/sh\n') }, 0o755);
  w.finish();
  const listed = execFileSync('cpio', ['-t', '--quiet', '-F', archive], { encoding: 'utf8' }).trim().split('\n');
  assert.deepEqual(listed, ['top', 'top/a', 'top/bb', 'top/l', 'init']);
  const out = join(work, 'extract');
  mkdirSync(out);
  execFileSync('cpio', ['-i', '-d', '--quiet', '--no-absolute-filenames', '-F', archive], { cwd: out });
  assert.equal(readFileSync(join(out, 'top/a'), 'utf8'), 'hello');
  assert.equal(statSync(join(out, 'top/a')).mode & 0o7777, 0o600);
  assert.equal(readlinkSync(join(out, 'top/l')), 'a');
  assert.equal(statSync(join(out, 'init')).mode & 0o7777, 0o755);
});

/** The repository root (the compiled test lives in <outDir>/test/unit). */
function repoRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** dist/moat-agent, or a static stand-in compiled into the temporary directory; undefined if neither can be had. */
function testAgent(): { path: string } | { skip: string } {
  const root = repoRoot() ?? '/work/main';
  const built = join(root, 'dist', 'moat-agent');
  if (existsSync(built)) return { path: built };
  const src = join(work, 'agent.c');
  writeFileSync(src, '#include <unistd.h>\nint main(void) { write(1, "agent\\n", 6); return 0; }\n');
  const bin = join(work, 'agent');
  const r = spawnSync('cc', ['-static', '-O2', '-o', bin, src], { encoding: 'utf8' });
  if (r.status !== 0) return { skip: `dist/moat-agent is missing and no static stand-in could be compiled: ${r.error?.message ?? r.stderr.trim()}` };
  return { path: bin };
}

/** Module name → names of its dependencies, per modules.dep. */
function readDeps(modulesDir: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const [file, rest] = line.split(':');
    if (!file || rest === undefined) continue;
    deps.set(moduleName(file), rest.trim() ? rest.trim().split(/\s+/).map(moduleName) : []);
  }
  return deps;
}

const kernels = existsSync('/boot') ? readdirSync('/boot').filter((n) => n.startsWith('vmlinuz-')) : [];
const noKernel = kernels.length === 0 ? 'no /boot/vmlinuz-* on this host' : undefined;

test('buildGuest builds a cached guest from the host kernel and its modules', { skip: noKernel }, (t) => {
  const ag = testAgent();
  if ('skip' in ag) {
    t.skip(ag.skip);
    return;
  }
  const agent = join(work, 'agent-copy');
  copyFileSync(ag.path, agent);
  const cacheDir = guestCacheDir(join(work, 'root'));
  assert.equal(cacheDir, join(work, 'root', 'guest'));

  const log: string[] = [];
  const t0 = performance.now();
  const g = buildGuest({ cacheDir, agent, progress: (m) => log.push(m) });
  const ms = Math.round(performance.now() - t0);
  const dir = join(cacheDir, g.release);
  assert.equal(g.kernel, join(dir, 'vmlinuz'));
  assert.equal(g.initramfs, join(dir, 'initramfs.cpio'));
  assert.ok(log.includes('resolving modules'), log.join('\n'));
  assert.ok(log.some((m) => /^writing initramfs \(\d+ modules, [\d.]+ MiB\)$/.test(m)), log.join('\n'));
  assert.ok(log.some((m) => /^done in \d+ ms$/.test(m)), log.join('\n'));

  const manifest = readManifest(dir);
  assert.ok(manifest, 'manifest.json is readable');
  assert.equal(manifest.release, g.release);
  assert.equal(manifest.agentSha256, createHash('sha256').update(readFileSync(agent)).digest('hex'));
  assert.deepEqual(readFileSync(g.kernel), readFileSync(manifest.kernelSource.path));

  const modulesDir = manifest.modulesDir;
  if (modulesDir === null) {
    t.diagnostic('the kernel has no modules directory; module checks skipped');
  } else {
    const deps = readDeps(modulesDir);
    const names = manifest.modules.map(moduleName);
    assert.equal(new Set(names).size, names.length, 'each module once');
    names.forEach((n, i) => {
      for (const d of deps.get(n) ?? []) assert.ok(names.slice(0, i).includes(d), `${n} is loaded before its dependency ${d}`);
    });
    const present = new Set([...names, ...manifest.skipped.filter((s) => s.reason === 'built-in').map((s) => s.module)]);
    for (const m of ['virtio_mmio', 'virtio_console', 'virtio_blk', 'ext4', 'overlay', '9pnet_virtio']) {
      assert.ok(present.has(m), `${m} is loaded or built in`);
    }
    t.diagnostic(`release ${g.release}: ${names.length} modules, initramfs ${(manifest.initramfsBytes / (1 << 20)).toFixed(2)} MiB, built in ${ms} ms`);
    t.diagnostic(`load order: ${names.join(' ')}`);
  }

  const entries = parseNewc(readFileSync(g.initramfs));
  const byName = new Map(entries.map((e) => [e.name, e]));
  const init = byName.get('init');
  assert.equal(init?.mode, 0o100755, '/init is a 0755 regular file');
  assert.deepEqual(init?.data, readFileSync(agent));
  for (const d of ['proc', 'sys', 'dev', 'newroot', 'lower', 'upper']) assert.equal(byName.get(d)?.mode, 0o040755, `/${d}`);
  const load = byName.get('modules.load')?.data.toString().split('\n').filter(Boolean);
  assert.ok(load, '/modules.load exists');
  assert.deepEqual(load, manifest.modules.map((m) => `/lib/modules/${g.release}/${m}`));
  for (const [i, p] of load.entries()) {
    const e = byName.get(p.slice(1));
    assert.ok(e, `${p} is in the initramfs`);
    if (modulesDir !== null && existsSync(join(modulesDir, manifest.modules[i] ?? ''))) {
      assert.deepEqual(e.data, readFileSync(join(modulesDir, manifest.modules[i] ?? '')), `${p} is the host's module`);
    }
  }

  // a second build reuses the cache
  const mtime = statSync(g.initramfs).mtimeMs;
  const log2: string[] = [];
  const g2 = buildGuest({ cacheDir, agent, progress: (m) => log2.push(m) });
  assert.deepEqual(g2, g);
  assert.equal(statSync(g.initramfs).mtimeMs, mtime);
  assert.ok(log2.some((m) => m.startsWith('using cached guest')), log2.join('\n'));
  assert.ok(!log2.includes('resolving modules'));

  // --force rebuilds
  const g3 = buildGuest({ cacheDir, agent, force: true });
  assert.deepEqual(g3, g);
  assert.notEqual(statSync(g.initramfs).mtimeMs, mtime);
  assert.notEqual(readManifest(dir)?.builtAt, manifest.builtAt);

  // a changed agent rebuilds, with the new agent as /init
  appendFileSync(agent, Buffer.from('\0changed'));
  const mtime3 = statSync(g.initramfs).mtimeMs;
  buildGuest({ cacheDir, agent });
  assert.notEqual(statSync(g.initramfs).mtimeMs, mtime3);
  assert.equal(readManifest(dir)?.agentSha256, createHash('sha256').update(readFileSync(agent)).digest('hex'));
  assert.deepEqual(parseNewc(readFileSync(g.initramfs)).find((e) => e.name === 'init')?.data, readFileSync(agent));
  assert.deepEqual(readdirSync(cacheDir).filter((n) => n.startsWith('.')), [], 'no temporary directories are left');
});

test('buildGuest takes a user kernel: release from its header, modules from --modules', { skip: noKernel }, (t) => {
  const ag = testAgent();
  if ('skip' in ag) {
    t.skip(ag.skip);
    return;
  }
  const host = join('/boot', kernels.sort().at(-1) ?? '');
  const release = host.slice('/boot/vmlinuz-'.length);
  if (!existsSync(join('/lib/modules', release, 'modules.dep'))) {
    t.skip(`/lib/modules/${release}/modules.dep is missing`);
    return;
  }
  const kdir = join(work, 'userkernel');
  mkdirSync(kdir);
  copyFileSync(host, join(kdir, 'bzImage'));
  const g = buildGuest({ cacheDir: join(work, 'cache2'), kernel: join(kdir, 'bzImage'), modulesDir: join('/lib/modules', release), agent: ag.path });
  assert.equal(g.release, release);
  assert.equal(readManifest(join(work, 'cache2', release))?.kernelSource.path, join(kdir, 'bzImage'));
});

test('buildGuest refuses a kernel with no modules directory and no built-in virtio drivers', (t) => {
  const ag = testAgent();
  if ('skip' in ag) {
    t.skip(ag.skip);
    return;
  }
  // a fake bzImage: just a setup header whose version string names a release with no modules
  const img = Buffer.alloc(4096);
  img.write('HdrS', 0x202, 'latin1');
  img.writeUInt16LE(0x300, 0x20e);
  img.write('9.9.9-moat-test (nobody@nowhere) #1\0', 0x500, 'latin1');
  const kernel = join(work, 'fake-kernel');
  writeFileSync(kernel, img);
  assert.throws(() => buildGuest({ cacheDir: join(work, 'cache3'), kernel, agent: ag.path }), (e: unknown) => {
    assert.ok(e instanceof HostError, String(e));
    assert.match(e.message, /9\.9\.9-moat-test|fake-kernel/);
    assert.match(e.message, /no modules directory/);
    assert.match(e.message, /--modules/);
    return true;
  });
  // with a config that shows the drivers built in, the guest needs no modules
  writeFileSync(join(work, 'config-9.9.9-moat-test'), 'CONFIG_VIRTIO=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\n');
  const g = buildGuest({ cacheDir: join(work, 'cache3'), kernel, agent: ag.path });
  assert.equal(g.release, '9.9.9-moat-test');
  const m = readManifest(join(work, 'cache3', g.release));
  assert.deepEqual(m?.modules, []);
  assert.equal(m?.skipped.find((s) => s.module === 'overlay')?.reason, 'missing');
  assert.equal(m?.skipped.find((s) => s.module === 'virtio_blk')?.reason, 'built-in');
  assert.equal(parseNewc(readFileSync(g.initramfs)).find((e) => e.name === 'modules.load')?.data.length, 0);
});

test('buildGuest refuses a dynamically linked agent', { skip: noKernel }, () => {
  assert.throws(() => buildGuest({ cacheDir: join(work, 'cache4'), agent: process.execPath }), /dynamically linked/);
});
