import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, test } from 'node:test';

import { baseImage, imageSizeMiB, overlayDisk, qcow2BackingFile } from '../../src/backends/microvm/disk.js';
import { UsageError } from '../../src/errors.js';

const work = mkdtempSync(join(tmpdir(), 'moat-disk-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** Whether a tool runs (any exit status), found on PATH or in /usr/sbin and /sbin. */
function has(tool: string): boolean {
  const r = spawnSync(tool, ['-V'], { env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  return r.error === undefined;
}

const sbinEnv = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };
const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

const skip = process.getuid?.() !== 0 ? 'needs root (the tree has a file owned by uid 1234)'
  : !has('mkfs.ext4') ? 'mkfs.ext4 is not installed (apt-get install e2fsprogs)'
  : !has('debugfs') ? 'debugfs is not installed (apt-get install e2fsprogs)'
  : !has('qemu-img') ? 'qemu-img is not installed (apt-get install qemu-utils)'
  : undefined;

test('imageSizeMiB is 1.5 × the tree + 64 MiB, whole MiB, at least 128 MiB', () => {
  assert.equal(imageSizeMiB(0), 128);
  assert.equal(imageSizeMiB(40 << 20), 128);
  assert.equal(imageSizeMiB(100 << 20), 214);
  assert.equal(imageSizeMiB((100 << 20) + 1), 215);
});

test('baseImage refuses a missing rootfs', () => {
  assert.throws(() => baseImage(join(work, 'nope'), work), UsageError);
});

test('baseImage makes a cached read-only ext4 image; overlays share it and never write it', { skip }, (t) => {
  const tree = join(work, 'rootfs');
  mkdirSync(join(tree, 'etc'), { recursive: true });
  mkdirSync(join(tree, 'bin'));
  writeFileSync(join(tree, 'etc', 'hostname'), 'moat\n');
  writeFileSync(join(tree, 'bin', 'tool'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  chmodSync(join(tree, 'bin', 'tool'), 0o755);
  writeFileSync(join(tree, 'secret'), 'hush\n');
  chmodSync(join(tree, 'secret'), 0o600);
  chownSync(join(tree, 'secret'), 1234, 1234);
  symlinkSync('etc/hostname', join(tree, 'link'));
  const cache = join(work, 'cache');

  const log: string[] = [];
  const t0 = performance.now();
  const img = baseImage(tree, cache, (m) => log.push(m));
  t.diagnostic(`base image built in ${Math.round(performance.now() - t0)} ms: ${log.join('; ')}`);
  assert.match(basename(img), /^[0-9a-f]{64}\.ext4$/);
  assert.equal(img, join(cache, 'images', basename(img)));
  assert.equal(statSync(img).mode & 0o777, 0o444, 'the base is read-only');
  assert.equal(statSync(img).size, 128 << 20);

  const ls = execFileSync('debugfs', ['-R', 'ls -l /', img], { encoding: 'utf8', env: sbinEnv, stdio: ['ignore', 'pipe', 'ignore'] });
  // " 12  100600 (1)   1234   1234       5 1-Jan-2024 00:00 secret"
  const rows = new Map<string, { mode: string; uid: number; gid: number }>();
  for (const line of ls.split('\n')) {
    const m = /^\s*\d+\s+(\d+)\s+\(\d+\)\s+(\d+)\s+(\d+)\s+.*\s(\S+)\s*$/.exec(line);
    if (m?.[1] && m[2] && m[3] && m[4]) rows.set(m[4], { mode: m[1], uid: Number(m[2]), gid: Number(m[3]) });
  }
  for (const name of ['etc', 'bin', 'secret', 'link', 'lost+found']) assert.ok(rows.has(name), `${name} is in the image:\n${ls}`);
  assert.deepEqual(rows.get('secret'), { mode: '100600', uid: 1234, gid: 1234 });
  assert.equal(rows.get('link')?.mode, '120777');
  assert.equal(rows.get('etc')?.mode, '40755');
  assert.equal(rows.get('.')?.uid, 0);
  const tool = execFileSync('debugfs', ['-R', 'stat /bin/tool', img], { encoding: 'utf8', env: sbinEnv, stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(tool, /Mode:\s+0755/);
  const cat = execFileSync('debugfs', ['-R', 'cat /etc/hostname', img], { encoding: 'utf8', env: sbinEnv, stdio: ['ignore', 'pipe', 'ignore'] });
  assert.equal(cat, 'moat\n');
  const label = execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', env: sbinEnv, stdio: ['ignore', 'pipe', 'ignore'] });
  assert.match(label, /Filesystem volume name:\s+moat-root/);

  // the same tree: the cached image, not rebuilt
  const mtime = statSync(img).mtimeMs;
  const log2: string[] = [];
  assert.equal(baseImage(tree, cache, (m) => log2.push(m)), img);
  assert.equal(statSync(img).mtimeMs, mtime);
  assert.ok(log2.some((m) => m.startsWith('using cached image')), log2.join('\n'));

  // a changed tree: another image
  const later = new Date(Date.now() + 5000);
  utimesSync(join(tree, 'etc', 'hostname'), later, later);
  const img2 = baseImage(tree, cache);
  assert.notEqual(img2, img);

  // two overlays on one base
  const before = sha256(img);
  const o1 = join(work, 'vm1.qcow2');
  const o2 = join(work, 'vm2.qcow2');
  overlayDisk(img, o1);
  overlayDisk(img, o2);
  for (const o of [o1, o2]) {
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', o], { encoding: 'utf8' })) as Record<string, unknown>;
    assert.equal(info.format, 'qcow2');
    assert.equal(info['backing-filename'], img);
    assert.equal(info['backing-filename-format'], 'raw');
    assert.equal(info['virtual-size'], 128 << 20);
  }
  assert.ok(statSync(o1).size < 1 << 20, 'an overlay is small');

  if (spawnSync('qemu-io', ['--version']).error !== undefined) {
    t.diagnostic('qemu-io is not installed: the write-through-overlay check is skipped');
  } else {
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xcd 0 4k', o1], { stdio: ['ignore', 'pipe', 'pipe'] });
    const read1 = execFileSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xcd 0 4k', o1], { encoding: 'utf8' });
    assert.doesNotMatch(read1, /Pattern verification failed/);
    // qemu-io exits 1 when the pattern does not match
    const read2 = spawnSync('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -P 0xcd 0 4k', o2], { encoding: 'utf8' });
    assert.match(read2.stdout, /Pattern verification failed/, 'the other overlay does not see the write');
  }
  assert.equal(sha256(img), before, 'the base is unchanged');
  assert.throws(() => overlayDisk(join(work, 'missing.ext4'), join(work, 'x.qcow2')), /does not exist/);
});

test('qcow2BackingFile reads the backing name from the header itself, and refuses malformed headers', { skip: has('qemu-img') ? undefined : 'qemu-img is not installed (apt-get install qemu-utils)' }, () => {
  const base = join(work, 'backing-base.raw');
  writeFileSync(base, Buffer.alloc(1 << 20));
  const overlay = join(work, 'backing-overlay.qcow2');
  overlayDisk(base, overlay);
  assert.equal(qcow2BackingFile(overlay), base);
  const plain = join(work, 'plain.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '1M']);
  assert.equal(qcow2BackingFile(plain), undefined);
  const head = readFileSync(overlay);
  const variant = (name: string, edit: (b: Buffer) => void): string => {
    const b = Buffer.from(head);
    edit(b);
    const p = join(work, name);
    writeFileSync(p, b);
    return p;
  };
  assert.throws(() => qcow2BackingFile(variant('magic.qcow2', (b) => b.writeUInt32BE(0x12345678, 0))), UsageError);
  assert.throws(() => qcow2BackingFile(variant('version.qcow2', (b) => b.writeUInt32BE(9, 4))), UsageError);
  assert.throws(() => qcow2BackingFile(variant('far.qcow2', (b) => b.writeBigUInt64BE(1n << 40n, 8))), /implausible/);
  assert.throws(() => qcow2BackingFile(variant('long.qcow2', (b) => b.writeUInt32BE(1 << 20, 16))), /implausible/);
  assert.throws(() => qcow2BackingFile(variant('short.qcow2', (b) => b.fill(0, 0))), UsageError);
  writeFileSync(join(work, 'tiny.qcow2'), head.subarray(0, 10));
  assert.throws(() => qcow2BackingFile(join(work, 'tiny.qcow2')), UsageError);
});
