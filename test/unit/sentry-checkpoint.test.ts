/**
 * The sentry checkpointer's pure parts: the manifest's checks against hostile values, the
 * memory layout check, /proc/PID/maps parsing, the syscall-restart rule, and the image opener's
 * refusal of a pages section that does not match the manifest.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { IMAGE_FILE, ImageWriter, SECTION } from '../../src/checkpoint/image.js';
import { parseMaps, xfeaturesOf } from '../../src/checkpoint/sentry/dump.js';
import { checkLayout, checkTree, parseSentryManifest, SentryImageError } from '../../src/checkpoint/sentry/manifest.js';
import type { SentryManifest } from '../../src/checkpoint/sentry/manifest.js';
import { findSyscallInsn, Regs } from '../../src/checkpoint/sentry/ptrace.js';
import { restartCall } from '../../src/checkpoint/sentry/restore.js';
import { openSentryImage } from '../../src/backends/sentry/checkpoint.js';

/** A small valid manifest: one process, a file mapping, an anonymous region with 2 saved pages, the vDSO. */
function sample(): SentryManifest {
  return {
    kind: 'moat-checkpoint',
    version: 1,
    backend: 'sentry',
    id: 'c1',
    created: '2026-11-29T00:00:00.000Z',
    host: { kernel: '6.18.0', cpuFlags: ['fpu', 'sse2'], xfeatures: '0x7' },
    level: 'balanced',
    tree: [{ pid: 1, ppid: 0, pgid: 1, sid: 1 }],
    pipes: [],
    sockets: [],
    fs: false,
    embedded: false,
    processes: [{
      pid: 1,
      clearTid: '0x0',
      threads: [],
      comm: 'python3',
      regs: '0'.repeat(432),
      xstate: Buffer.alloc(576).toString('base64'),
      sigmask: '0x0',
      sigactions: [{ sig: 2, handler: '0x401000', flags: '0x4000000', restorer: '0x401100', mask: '0x0' }],
      rseq: null,
      robust: { head: '0x0', len: 24 },
      mm: { startCode: '0x400000', endCode: '0x401000', startData: '0x600000', endData: '0x601000', startBrk: '0x700000', brk: '0x700000', startStack: '0x7ff000001000', argStart: '0x7ff000001000', argEnd: '0x7ff000001010', envStart: '0x7ff000001010', envEnd: '0x7ff000001020', auxv: '' },
      regions: [
        { start: '0x400000', end: '0x402000', perms: 'r-xp', kind: 'file', name: '/bin/x', offset: '0x0', file: { size: 8192, mtimeNs: '1' }, runs: [] },
        { start: '0x600000', end: '0x604000', perms: 'rw-p', kind: 'anon', runs: [[0, 1], [2, 1]] },
        { start: '0x7ff000000000', end: '0x7ff000002000', perms: 'r-xp', kind: 'special', name: '[vdso]', runs: [] },
      ],
      fds: [{ fd: 0, kind: 'external', stdio: 0, flags: 0, cloexec: false, pos: 0 }, { fd: 3, kind: 'file', path: '/count', flags: 1, cloexec: true, pos: 12 }],
      cwd: '/',
      umask: 0o22,
      personality: 0,
      creds: { uid: 0, gid: 0 },
      rlimits: [{ resource: 7, soft: '0x400', hard: '0x400' }],
    }],
    spec: { ociVersion: '1.0.2' },
  };
}

const rejects = (edit: (m: SentryManifest) => void, field: RegExp): void => {
  const m = sample();
  edit(m);
  assert.throws(() => {
    const p = parseSentryManifest(JSON.parse(JSON.stringify(m)));
    checkTree(p);
    p.processes.forEach((x, i) => checkLayout(x, `manifest.processes[${i}]`));
  }, (e: unknown) => e instanceof SentryImageError && field.test(e.message), `expected a refusal naming ${field}`);
};

describe('sentry checkpoint manifest', () => {
  it('accepts a well-formed manifest and counts its saved pages', () => {
    const m = parseSentryManifest(JSON.parse(JSON.stringify(sample())));
    assert.equal(checkLayout(m.processes[0]!, 'p'), 2);
  });

  it('refuses hostile values, naming the field', () => {
    rejects((m) => ((m as { backend: string }).backend = 'microvm'), /manifest\.backend/);
    rejects((m) => (m.processes[0]!.regs = 'zz'), /processes\.0\.regs/);
    rejects((m) => (m.processes[0]!.fds[1]!.path = 'relative'), /fds\.1\.path/);
    rejects((m) => (m.processes[0]!.fds[1]!.path = '/a\0b'), /fds\.1\.path/);
    rejects((m) => (m.processes[0]!.fds[1]!.fd = 2 ** 31), /fds\.1\.fd/);
    rejects((m) => (m.processes[0]!.regions[1]!.start = '0x10000000000000000'), /regions\.1\.start/);
    rejects((m) => (m.processes[0]!.sigactions[0]!.sig = 65), /sigactions\.0\.sig/);
    rejects((m) => (m.processes[0]!.regions[1]!.perms = 'rw-x'), /regions\.1\.perms/);
    rejects((m) => (m.processes[0]!.regions[1]!.perms = 'rw-s'), /regions\[1\].*shared mapping is of a file, with no saved pages/);
    rejects((m) => ((m.processes[0] as unknown as Record<string, unknown>)['extra'] = 1), /processes\.0/);
    rejects((m) => m.processes.push(m.processes[0]!), /manifest\.processes/);
    rejects((m) => (m.processes[0]!.rlimits[0]!.resource = 99), /rlimits\.0\.resource/);
  });

  it('refuses a tree that cannot be made and fds that do not fit it', () => {
    rejects((m) => (m.tree[0]!.pid = 2), /tree\[0\].*start with the live pid 1/);
    rejects((m) => m.tree.push({ pid: 1, ppid: 1, pgid: 1, sid: 1 }), /tree\[1\].*only there/);
    rejects((m) => m.tree.push({ pid: 5, ppid: 7, pgid: 1, sid: 1, zombie: 0 }), /tree\[1\].*parent 7/);
    rejects((m) => m.tree.push({ pid: 5, ppid: 1, pgid: 1, sid: 1, zombie: 0 }, { pid: 6, ppid: 5, pgid: 1, sid: 1, zombie: 0 }), /tree\[2\].*not a live process/);
    rejects((m) => m.tree.push({ pid: 5, ppid: 1, pgid: 1, sid: 1 }, { pid: 5, ppid: 1, pgid: 1, sid: 1 }), /tree\[2\].*twice/);
    rejects((m) => m.tree.push({ pid: 5, ppid: 1, pgid: 1, sid: 1 }), /images for pids 1, the tree's live processes are 1, 5/);
    rejects((m) => m.processes[0]!.fds.push({ fd: 4, kind: 'pipe', pipe: 0, end: 'r', flags: 0, cloexec: false, pos: 0 }), /fds\[2\].*pipe fd without its pipe and end/);
    rejects((m) => m.processes[0]!.fds.push({ fd: 4, kind: 'external', flags: 0, cloexec: false, pos: 0 }), /fds\[2\].*stdio number/);
    rejects((m) => m.pipes.push({ capacity: 4096, data: Buffer.alloc(4097).toString('base64') }), /pipes\[0\].*more than its capacity/);
    rejects((m) => m.processes[0]!.fds.push({ fd: 4, kind: 'socket', socket: 0, end: 'a', flags: 2, cloexec: false, pos: 0 }), /fds\[2\].*socket fd without its socket and end/);
    rejects((m) => {
      m.sockets.push({ type: 'stream', listen: { path: '/run/s.sock', backlog: 128, uid: 0, gid: 0, mode: 0o755 } });
      m.processes[0]!.fds.push({ fd: 4, kind: 'socket', socket: 0, end: 'a', flags: 2, cloexec: false, pos: 0 });
    }, /fds\[2\].*socket fd without its socket and end/);
    rejects((m) => m.sockets.push({ type: 'stream', listen: { path: `/${'x'.repeat(120)}`, backlog: 1, uid: 0, gid: 0, mode: 0 } }), /sockets\.0\.listen\.path/);
    rejects((m) => m.processes[0]!.threads.push({ tid: 1, comm: 't', regs: '0'.repeat(432), xstate: '', sigmask: '0x0', rseq: null, robust: { head: '0x0', len: 24 }, clearTid: '0x0' }), /threads\.0\.tid/);
    rejects((m) => {
      m.tree.push({ pid: 5, ppid: 1, pgid: 1, sid: 1, zombie: 0 });
      m.processes[0]!.threads.push({ tid: 5, comm: 't', regs: '0'.repeat(432), xstate: '', sigmask: '0x0', rseq: null, robust: { head: '0x0', len: 24 }, clearTid: '0x0' });
    }, /tid 5 is used twice/);
    const ok = sample();
    ok.tree.push({ pid: 9, ppid: 1, pgid: 1, sid: 1, zombie: 256 });
    ok.pipes.push({ capacity: 65536, data: Buffer.from('hi').toString('base64') });
    ok.processes[0]!.fds.push({ fd: 5, kind: 'pipe', pipe: 0, end: 'w', flags: 1, cloexec: false, pos: 0 });
    ok.sockets.push({ type: 'dgram', queued: [[Buffer.from('m1').toString('base64')], []] });
    ok.processes[0]!.fds.push({ fd: 6, kind: 'socket', socket: 0, end: 'b', flags: 2, cloexec: true, pos: 0 });
    checkTree(parseSentryManifest(JSON.parse(JSON.stringify(ok))));
  });

  it('refuses a layout that is unaligned, overlapping, outside user space or with runs outside their region', () => {
    rejects((m) => (m.processes[0]!.regions[1]!.start = '0x600001'), /regions\[1\].*page-aligned/);
    rejects((m) => (m.processes[0]!.regions[1]!.start = '0x401000'), /regions\[1\].*overlaps/);
    rejects((m) => (m.processes[0]!.regions[2]!.end = '0xffffffffff601000'), /regions\[2\].*user address range/);
    rejects((m) => (m.processes[0]!.regions[1]!.runs = [[3, 2]]), /regions\[1\].*outside the region/);
    rejects((m) => (m.processes[0]!.regions[1]!.runs = [[2, 1], [0, 1]]), /regions\[1\].*out of order/);
    rejects((m) => (m.processes[0]!.regions[1]!.runs = [[0, 2], [1, 1]]), /regions\[1\]/);
    rejects((m) => (m.processes[0]!.regions[2]!.name = '[vsyscall]'), /unknown special mapping/);
    rejects((m) => (m.processes[0]!.regions[2]!.runs = [[0, 1]]), /special mapping has no saved pages/);
    rejects((m) => delete m.processes[0]!.regions[0]!.file, /file mapping needs/);
  });
});

describe('sentry checkpoint images', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moat-sentry-ckpt-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const write = async (name: string, pages: number, manifest: unknown): Promise<string> => {
    const d = join(dir, name);
    mkdirSync(d);
    const w = await ImageWriter.create(join(d, IMAGE_FILE));
    await w.addSection(SECTION.SENTRY_PAGES, Buffer.alloc(pages * 4096));
    await w.addSection(SECTION.MANIFEST, Buffer.from(JSON.stringify(manifest)));
    await w.finish();
    return d;
  };

  it('opens an image whose pages match its manifest', async () => {
    const img = await openSentryImage(await write('good', 2, sample()));
    assert.equal(img.manifest.processes[0]!.comm, 'python3');
    await img.reader.close();
  });

  it('refuses a pages section of another length, a missing FS section the manifest names, and a manifest that is not JSON', async () => {
    await assert.rejects(openSentryImage(await write('short', 1, sample())), /SENTRY_PAGES: 4096 bytes, but the manifest lists 2 pages/);
    const fs = sample();
    fs.fs = true;
    await assert.rejects(openSentryImage(await write('nofs', 2, fs)), /manifest\.fs/);
    const d = join(dir, 'notjson');
    mkdirSync(d);
    const w = await ImageWriter.create(join(d, IMAGE_FILE));
    await w.addSection(SECTION.MANIFEST, Buffer.from('{nope'));
    await w.finish();
    await assert.rejects(openSentryImage(d), /manifest: not JSON/);
  });
});

describe('sentry checkpointer helpers', () => {
  it('parses /proc/PID/maps lines, paths with spaces included', () => {
    const maps = parseMaps([
      '00400000-00401000 r-xp 00000000 08:01 1234                       /usr/bin/my prog',
      '7ffd0000-7ffd1000 rw-p 00000000 00:00 0                          [stack]',
      '7ffe0000-7ffe2000 rw-p 00000000 00:00 0 ',
    ].join('\n'));
    assert.deepEqual(maps.map((m) => [m.start, m.end, m.perms, m.inode, m.name]), [
      [0x400000n, 0x401000n, 'r-xp', 1234, '/usr/bin/my prog'],
      [0x7ffd0000n, 0x7ffd1000n, 'rw-p', 0, '[stack]'],
      [0x7ffe0000n, 0x7ffe2000n, 'rw-p', 0, ''],
    ]);
  });

  it('restarts a call the process was stopped in as the kernel would', () => {
    const regs = (orig: bigint, rax: bigint): Regs => {
      const r = new Regs();
      r.set('orig_rax', orig);
      r.set('rax', rax);
      r.set('rip', 0x1002n);
      return r;
    };
    for (const e of [-512n, -513n, -514n]) {
      const r = regs(7n, e);
      restartCall(r);
      assert.deepEqual([r.signed('rax'), r.get('rip'), r.signed('orig_rax')], [7n, 0x1000n, -1n], `errno ${e}`);
    }
    const sleep = regs(230n, -516n);
    restartCall(sleep);
    assert.deepEqual([sleep.signed('rax'), sleep.get('rip')], [-4n, 0x1002n]);
    const done = regs(1n, 5n);
    restartCall(done);
    assert.deepEqual([done.signed('rax'), done.get('rip'), done.signed('orig_rax')], [5n, 0x1002n, -1n]);
    const user = regs(-1n, -512n);
    restartCall(user);
    assert.deepEqual([user.signed('rax'), user.get('rip')], [-512n, 0x1002n], 'not in a call: nothing to restart');
  });

  it('finds a syscall instruction and reads XCR0 where the kernel puts it', () => {
    assert.equal(findSyscallInsn(Buffer.from([0x90, 0x0f, 0x05, 0xc3]), 0x1000n), 0x1001n);
    assert.equal(findSyscallInsn(Buffer.from([0x90, 0x0f]), 0x1000n), 0n);
    const x = Buffer.alloc(576);
    x.writeBigUInt64LE(0xe7n, 464);
    assert.equal(xfeaturesOf(x), 0xe7n);
  });
});
