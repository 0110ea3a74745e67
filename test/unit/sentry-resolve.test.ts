/**
 * The sentry's path resolution and file family against a fake container root (a temp
 * directory): symlinks and ".." never leave it, the usual operations work inside it, relative
 * paths use the task's cwd or dirfd, rootfs symlinks into /proc reach procfs, and bad path
 * arguments are answered with the kernel's errno.
 */
import assert from 'node:assert/strict';
import {
  closeSync, existsSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, rmSync,
  statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, it } from 'node:test';

import { lookup, normalize, readPathArg, splitLast, synthetic, syntheticDevs, walk } from '../../src/backends/sentry/resolve.js';
import { handlers, mayBlock } from '../../src/backends/sentry/sys_file.js';
import { fail } from '../../src/backends/sentry/types.js';
import type { Creds, Notif, Reply, Sandbox, Task } from '../../src/backends/sentry/types.js';
import { AT, E, O, RESOLVE, close, cpath, fcntl, openat } from '../../src/sys/kernel.js';

const F_DUPFD_CLOEXEC = 1030;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFIFO = 0o010000;
const UNMAPPED = 0xdead0000;

// ---------------------------------------------------------------------------------------------
// The fake container root

const base = mkdtempSync(join(tmpdir(), 'moat-resolve-'));
const root = join(base, 'root');
const hostFile = join(base, 'host.txt');
writeFileSync(hostFile, 'host secret\n', { mode: 0o644 });
for (const d of ['etc', 'sub', 'proc', 'dev', 'work']) mkdirSync(join(root, d), { recursive: true });
writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:container:/root:/bin/sh\n');
writeFileSync(join(root, 'file'), 'hello world');
writeFileSync(join(root, 'sub/rel.txt'), 'relative');
symlinkSync('../file', join(root, 'sub/link'));
symlinkSync('/etc/passwd', join(root, 'escape'));
symlinkSync('/etc/shadow', join(root, 'escape2'));
symlinkSync('../../..', join(root, 'up'));
symlinkSync('/proc/self/mounts', join(root, 'etc/mtab'));
symlinkSync('/proc/self/fd', join(root, 'dev/fd'));
symlinkSync(hostFile, join(root, 'hostlink'));
symlinkSync('/proc', join(root, 'p'));

const rootFd = openat(AT.FDCWD, cpath(root), O.PATH | O.DIRECTORY | O.CLOEXEC);
assert.ok(rootFd >= 0, `open root: errno ${-rootFd}`);

const sb: Sandbox = {
  id: 'test',
  rootFd,
  initPid: process.pid,
  level: 'strict',
  network: { mode: 'none' },
  limits: { cpus: 1 },
  hostname: 'box',
  scratchDir: join(base, 'scratch'),
  bootTime: Date.now(),
  pids: () => [process.pid],
  log: () => {},
};

after(() => {
  close(rootFd);
  rmSync(base, { recursive: true, force: true });
});

/** The umask the sentry applies for this (test) process, and the one the kernel applies on top. */
function ownUmask(): number {
  const m = /\nUmask:\s+([0-7]+)/.exec(readFileSync('/proc/self/status', 'latin1'));
  return m ? parseInt(m[1] as string, 8) : 0o022;
}

// ---------------------------------------------------------------------------------------------
// The fake task

type Arg = number | bigint;

/** A task whose memory is a few fake regions, whose fds map to fds of this process. */
class FakeTask implements Task {
  readonly tid = process.pid;
  readonly tgid = process.pid;
  notif: Notif = { id: 1n, tid: process.pid, nr: 0, arch: 0xc000003e, args: [0n, 0n, 0n, 0n, 0n, 0n] };
  cwdPath: string | null = '/';
  /** Workload fd number → an fd of this process (getFd dups it). */
  readonly fds = new Map<number, number>();
  /** Workload fd number → its container path (fdPath). */
  readonly fdPaths = new Map<number, string>();
  private readonly regions = new Map<number, Buffer>();
  private next = 0x100000;

  /** Places a NUL-terminated string in memory; its address. */
  str(s: string | Buffer): number {
    const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
    return this.region(Buffer.concat([b, Buffer.of(0)]));
  }

  /** Places bytes in memory; their address. */
  region(b: Buffer): number {
    const addr = this.next;
    this.regions.set(addr, Buffer.from(b));
    this.next += Math.ceil((b.length + 1) / 4096) * 4096 + 4096;
    return addr;
  }

  /** A zeroed output buffer; its address. */
  out(len: number): number {
    return this.region(Buffer.alloc(len));
  }

  /** The bytes at `addr` (a region start). */
  mem(addr: number): Buffer {
    const r = this.regions.get(addr);
    assert.ok(r, `no region at ${addr}`);
    return r;
  }

  /** Calls handler `name` with these argument registers. */
  call(name: string, ...args: Arg[]): Reply {
    const a = [0, 1, 2, 3, 4, 5].map((i) => BigInt.asUintN(64, BigInt(args[i] ?? 0)));
    this.notif = { ...this.notif, args: [a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!] };
    const h = handlers[name];
    assert.ok(h, `no handler for ${name}`);
    return h(this, sb);
  }

  /** Sets the argument registers for a mayBlock query. */
  setArgs(...args: Arg[]): this {
    const a = [0, 1, 2, 3, 4, 5].map((i) => BigInt.asUintN(64, BigInt(args[i] ?? 0)));
    this.notif = { ...this.notif, args: [a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!] };
    return this;
  }

  private find(addr: number, len: number): { r: Buffer; off: number } | null {
    for (const [start, r] of this.regions) {
      if (addr >= start && addr + len <= start + r.length) return { r, off: addr - start };
    }
    return null;
  }

  int(i: number): number {
    return Number(BigInt.asIntN(32, this.notif.args[i]!));
  }

  num(i: number): number {
    const v = this.notif.args[i]!;
    return v >= 2n ** 53n ? -1 : Number(v);
  }

  read(addr: number, len: number): Buffer | null {
    const f = this.find(addr, len);
    return f ? Buffer.from(f.r.subarray(f.off, f.off + len)) : null;
  }

  readString(addr: number, max = 4095): Buffer | number {
    const f = this.find(addr, 1);
    if (!f) return -E.EFAULT;
    const nul = f.r.indexOf(0, f.off);
    if (nul < 0) return -E.EFAULT;
    if (nul - f.off > max) return -E.ENAMETOOLONG;
    return Buffer.from(f.r.subarray(f.off, nul));
  }

  write(addr: number, data: Buffer): boolean {
    const f = this.find(addr, data.length);
    if (!f) return false;
    data.copy(f.r, f.off);
    return true;
  }

  valid(): boolean {
    return true;
  }

  signalPending(): boolean {
    return false;
  }

  getFd(fd: number): number {
    const own = this.fds.get(fd);
    return own === undefined ? -E.EBADF : fcntl(own, F_DUPFD_CLOEXEC, 0);
  }

  cwd(): Buffer | null {
    return this.cwdPath === null ? null : Buffer.from(this.cwdPath, 'latin1');
  }

  fdPath(fd: number): Buffer | null {
    const p = this.fdPaths.get(fd);
    return p === undefined ? null : Buffer.from(p, 'latin1');
  }

  creds(): Creds {
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    return { uid, gid, euid: uid, egid: gid, fsuid: uid, fsgid: gid, groups: [] };
  }

  umask(): number {
    return ownUmask();
  }

  onWorker = false;
}

/** The fd of an 'fd' reply (failing the test otherwise). */
function fdOf(r: Reply): number {
  assert.equal(r.kind, 'fd', `expected an fd, got ${JSON.stringify(r)}`);
  return r.kind === 'fd' ? r.fd : -1;
}

/** Reads an fd of this process to its end from offset 0. */
function readAll(fd: number): string {
  const buf = Buffer.alloc(4096);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return buf.toString('latin1', 0, n);
}

/** Opens a container path for reading through the handler and returns its inode and content. */
function openRead(t: FakeTask, path: string): { ino: number; text: string } | Reply {
  const r = t.call('open', t.str(path), O.RDONLY);
  if (r.kind !== 'fd') return r;
  try {
    return { ino: fstatSync(r.fd).ino, text: readAll(r.fd) };
  } finally {
    close(r.fd);
  }
}

const rootPasswdIno = statSync(join(root, 'etc/passwd')).ino;

// ---------------------------------------------------------------------------------------------

describe('sentry path resolution stays in the container root', () => {
  it('opens a symlink to /etc/passwd as the root\'s file, never the host\'s', () => {
    const t = new FakeTask();
    const got = openRead(t, '/escape');
    assert.ok('ino' in got, JSON.stringify(got));
    assert.equal(got.ino, rootPasswdIno);
    assert.notEqual(got.ino, statSync('/etc/passwd').ino);
    assert.match(got.text, /container/);
    // a target the root does not have is ENOENT, whatever the host has
    assert.deepEqual(openRead(t, '/escape2'), fail(E.ENOENT));
    assert.deepEqual(openRead(t, '/hostlink'), fail(E.ENOENT));
  });

  it('keeps ".." and "../../.." symlinks inside the root', () => {
    const t = new FakeTask();
    for (const p of ['/up/etc/passwd', '/../../../../etc/passwd', '/sub/../../etc/passwd', '/up/up/etc/passwd']) {
      const got = openRead(t, p);
      assert.ok('ino' in got, `${p}: ${JSON.stringify(got)}`);
      assert.equal(got.ino, rootPasswdIno, p);
    }
    t.cwdPath = '/sub';
    const rel = openRead(t, '../../../../etc/passwd');
    assert.ok('ino' in rel && rel.ino === rootPasswdIno);
    // creating through the escaping symlink creates inside the root
    assert.deepEqual(t.call('mkdir', t.str('/up/made'), 0o755), { kind: 'ok', val: 0 });
    assert.ok(statSync(join(root, 'made')).isDirectory());
    assert.ok(!existsSync(join(base, 'made')));
  });

  it('never changes a host file through an absolute symlink', () => {
    const t = new FakeTask();
    assert.deepEqual(t.call('chmod', t.str('/hostlink'), 0o600), fail(E.ENOENT));
    assert.deepEqual(t.call('truncate', t.str('/hostlink'), 0), fail(E.ENOENT));
    assert.equal(statSync(hostFile).mode & 0o777, 0o644);
    assert.equal(readFileSync(hostFile, 'latin1'), 'host secret\n');
    // unlink removes the link itself, not its target
    symlinkSync(hostFile, join(root, 'hostlink2'));
    assert.deepEqual(t.call('unlink', t.str('/hostlink2')), { kind: 'ok', val: 0 });
    assert.ok(existsSync(hostFile));
  });
});

describe('sentry file handlers', () => {
  it('stats a file, a symlink and its target', () => {
    const t = new FakeTask();
    const buf = t.out(144);
    assert.deepEqual(t.call('stat', t.str('/file'), buf), { kind: 'ok', val: 0 });
    const st = t.mem(buf);
    assert.equal(st.readBigInt64LE(48), 11n);
    assert.equal(st.readUInt32LE(24) & S_IFMT, S_IFREG);
    assert.equal(st.readBigUInt64LE(8), BigInt(statSync(join(root, 'file')).ino));

    assert.deepEqual(t.call('lstat', t.str('/sub/link'), buf), { kind: 'ok', val: 0 });
    assert.equal(t.mem(buf).readUInt32LE(24) & S_IFMT, S_IFLNK);
    assert.deepEqual(t.call('newfstatat', AT.FDCWD, t.str('/sub/link'), buf, 0), { kind: 'ok', val: 0 });
    assert.equal(t.mem(buf).readBigInt64LE(48), 11n);

    const sx = t.out(256);
    assert.deepEqual(t.call('statx', AT.FDCWD, t.str('/sub/link'), 0, 0x7ff, sx), { kind: 'ok', val: 0 });
    assert.equal(t.mem(sx).readBigUInt64LE(40), 11n);

    // glibc's fstat: newfstatat(fd, "", buf, AT_EMPTY_PATH), answered with the stat of the
    // caller's open file (never CONTINUE: the kernel would read the path again); with AT_FDCWD,
    // the cwd. The fake caller is this process, so its fd numbers are this process's.
    const own = openSync(join(root, 'file'), 'r');
    try {
      t.fds.set(own, own);
      const ino = BigInt(statSync(join(root, 'file')).ino);
      assert.deepEqual(t.call('newfstatat', own, t.str(''), buf, AT.EMPTY_PATH), { kind: 'ok', val: 0 });
      assert.equal(t.mem(buf).readBigUInt64LE(8), ino);
      assert.deepEqual(t.call('statx', own, t.str(''), AT.EMPTY_PATH, 0x7ff, sx), { kind: 'ok', val: 0 });
      assert.equal(t.mem(sx).readBigUInt64LE(32), ino);
      assert.deepEqual(t.call('newfstatat', 987654, t.str(''), buf, AT.EMPTY_PATH), fail(E.EBADF));
      assert.deepEqual(t.call('newfstatat', AT.FDCWD, t.str(''), buf, AT.EMPTY_PATH), { kind: 'ok', val: 0 });
      assert.equal(t.mem(buf).readBigUInt64LE(8), BigInt(statSync(root).ino));
    } finally {
      t.fds.delete(own);
      closeSync(own);
    }
    assert.deepEqual(t.call('newfstatat', AT.FDCWD, t.str('/file'), buf, 0x8000), fail(E.EINVAL));
    assert.deepEqual(t.call('stat', t.str('/missing'), buf), fail(E.ENOENT));
    assert.deepEqual(t.call('stat', t.str(''), buf), fail(E.ENOENT));
  });

  it('creates, renames and removes inside the root', () => {
    const t = new FakeTask();
    assert.deepEqual(t.call('mkdir', t.str('/d1'), 0o755), { kind: 'ok', val: 0 });
    assert.ok(statSync(join(root, 'd1')).isDirectory());
    assert.deepEqual(t.call('mkdir', t.str('/d1'), 0o755), fail(E.EEXIST));
    writeFileSync(join(root, 'd1/a'), 'a');
    assert.deepEqual(t.call('rename', t.str('/d1/a'), t.str('/d1/b')), { kind: 'ok', val: 0 });
    assert.ok(!existsSync(join(root, 'd1/a')) && existsSync(join(root, 'd1/b')));
    assert.deepEqual(t.call('renameat2', AT.FDCWD, t.str('/d1/b'), AT.FDCWD, t.str('/file'), 1), fail(E.EEXIST));
    assert.deepEqual(t.call('rmdir', t.str('/d1')), fail(E.ENOTEMPTY));
    assert.deepEqual(t.call('unlink', t.str('/d1/b/')), fail(E.ENOTDIR));
    assert.deepEqual(t.call('unlink', t.str('/d1/b')), { kind: 'ok', val: 0 });
    assert.deepEqual(t.call('unlink', t.str('/d1')), fail(E.EISDIR));
    assert.deepEqual(t.call('rmdir', t.str('/d1/.')), fail(E.EINVAL));
    assert.deepEqual(t.call('unlinkat', AT.FDCWD, t.str('/d1/'), AT.REMOVEDIR), { kind: 'ok', val: 0 });
    assert.ok(!existsSync(join(root, 'd1')));

    // symlink stores its target verbatim; link makes a second name
    assert.deepEqual(t.call('symlink', t.str('/etc/passwd'), t.str('/newlink')), { kind: 'ok', val: 0 });
    assert.equal(readlinkSync(join(root, 'newlink')), '/etc/passwd');
    assert.deepEqual(t.call('link', t.str('/file'), t.str('/file.hard')), { kind: 'ok', val: 0 });
    assert.equal(statSync(join(root, 'file.hard')).ino, statSync(join(root, 'file')).ino);
    // linkat with AT_SYMLINK_FOLLOW links what the (in-root) symlink points to
    assert.deepEqual(t.call('linkat', AT.FDCWD, t.str('/escape'), AT.FDCWD, t.str('/passwd.hard'), AT.SYMLINK_FOLLOW), { kind: 'ok', val: 0 });
    assert.equal(statSync(join(root, 'passwd.hard')).ino, rootPasswdIno);
    assert.deepEqual(t.call('linkat', AT.FDCWD, t.str('/hostlink'), AT.FDCWD, t.str('/host.hard'), AT.SYMLINK_FOLLOW), fail(E.ENOENT));
    for (const n of ['newlink', 'file.hard', 'passwd.hard']) rmSync(join(root, n));
  });

  it('creates files with the workload umask and honours O_EXCL, O_NOFOLLOW and O_DIRECTORY', () => {
    const t = new FakeTask();
    const um = ownUmask();
    const fd = fdOf(t.call('openat', AT.FDCWD, t.str('/new.txt'), O.CREAT | O.WRONLY | O.CLOEXEC, 0o666));
    const r = t.call('open', t.str('/new.txt'), O.CREAT | O.EXCL | O.WRONLY, 0o666);
    close(fd);
    assert.deepEqual(r, fail(E.EEXIST));
    assert.equal(statSync(join(root, 'new.txt')).mode & 0o777, 0o666 & ~um);
    assert.deepEqual(t.call('open', t.str('/sub/link'), O.RDONLY | O.NOFOLLOW), fail(E.ELOOP));
    assert.deepEqual(t.call('open', t.str('/file'), O.RDONLY | O.DIRECTORY), fail(E.ENOTDIR));
    // ADDFD cannot install O_PATH files: an existing path is checked, then the kernel opens it
    assert.deepEqual(t.call('open', t.str('/sub/link'), O.PATH | O.NOFOLLOW), { kind: 'continue' });
    assert.deepEqual(t.call('open', t.str('/sub/missing'), O.PATH), fail(E.ENOENT));
    // truncate through the resolved path
    assert.deepEqual(t.call('truncate', t.str('/new.txt'), 0), { kind: 'ok', val: 0 });
    writeFileSync(join(root, 'new.txt'), '0123456789');
    assert.deepEqual(t.call('truncate', t.str('/new.txt'), 4), { kind: 'ok', val: 0 });
    assert.equal(readFileSync(join(root, 'new.txt'), 'latin1'), '0123');
    assert.deepEqual(t.call('truncate', t.str('/sub'), 4), fail(E.EISDIR));
    rmSync(join(root, 'new.txt'));
  });

  it('resolves relative paths from the cwd and from a dirfd', () => {
    const t = new FakeTask();
    t.cwdPath = '/sub';
    const a = openRead(t, 'rel.txt');
    assert.ok('text' in a && a.text === 'relative', JSON.stringify(a));
    const b = openRead(t, 'link');
    assert.ok('text' in b && b.text === 'hello world', JSON.stringify(b));

    const sub = openat(AT.FDCWD, cpath(join(root, 'sub')), O.PATH | O.DIRECTORY | O.CLOEXEC);
    try {
      t.cwdPath = '/';
      t.fds.set(5, sub);
      t.fdPaths.set(5, '/sub');
      t.fds.set(6, sub); // no container path: resolved beneath a duplicate of the fd
      const viaPath = fdOf(t.call('openat', 5, t.str('rel.txt'), O.RDONLY));
      assert.equal(readAll(viaPath), 'relative');
      close(viaPath);
      const viaFd = fdOf(t.call('openat', 6, t.str('rel.txt'), O.RDONLY));
      assert.equal(readAll(viaFd), 'relative');
      close(viaFd);
      assert.deepEqual(t.call('openat', 6, t.str('../file'), O.RDONLY), fail(E.EXDEV));
      assert.deepEqual(t.call('openat', 99, t.str('rel.txt'), O.RDONLY), fail(E.EBADF));
      // an absolute path ignores the dirfd
      const abs = fdOf(t.call('openat', 99, t.str('/file'), O.RDONLY));
      close(abs);

      // openat2: the workload's RESOLVE_BENEATH / RESOLVE_IN_ROOT apply to its dirfd
      const how = (resolve: number): number => {
        const h = Buffer.alloc(24);
        h.writeBigUInt64LE(BigInt(O.RDONLY), 0);
        h.writeBigUInt64LE(BigInt(resolve), 16);
        return t.region(h);
      };
      assert.deepEqual(t.call('openat2', 5, t.str('../file'), how(RESOLVE.BENEATH), 24), fail(E.EXDEV));
      const inRoot = fdOf(t.call('openat2', 5, t.str('/rel.txt'), how(RESOLVE.IN_ROOT), 24));
      assert.equal(readAll(inRoot), 'relative');
      close(inRoot);
      assert.deepEqual(t.call('openat2', 5, t.str('link'), how(RESOLVE.NO_SYMLINKS), 24), fail(E.ELOOP));
      assert.deepEqual(t.call('openat2', 5, t.str('rel.txt'), how(0x40), 24), fail(E.EINVAL));
      assert.deepEqual(t.call('openat2', 5, t.str('rel.txt'), how(0), 16), fail(E.EINVAL));
    } finally {
      close(sub);
    }
  });

  it('reads links, truncated to bufsiz', () => {
    const t = new FakeTask();
    const buf = t.out(64);
    assert.deepEqual(t.call('readlink', t.str('/sub/link'), buf, 64), { kind: 'ok', val: 7 });
    assert.equal(t.mem(buf).toString('latin1', 0, 7), '../file');
    assert.deepEqual(t.call('readlinkat', AT.FDCWD, t.str('/sub/link'), buf, 3), { kind: 'ok', val: 3 });
    assert.deepEqual(t.call('readlink', t.str('/file'), buf, 64), fail(E.EINVAL));
    assert.deepEqual(t.call('readlink', t.str('/sub/link'), buf, 0), fail(E.EINVAL));
    assert.deepEqual(t.call('readlink', t.str('/sub/link'), UNMAPPED, 64), fail(E.EFAULT));
  });

  it('checks access with the kernel and resolves chdir/execve before letting them continue', () => {
    const t = new FakeTask();
    assert.deepEqual(t.call('access', t.str('/file'), 4), { kind: 'ok', val: 0 });
    assert.deepEqual(t.call('faccessat2', AT.FDCWD, t.str('/missing'), 0, 0), fail(E.ENOENT));
    assert.deepEqual(t.call('access', t.str('/file'), 8), fail(E.EINVAL));
    assert.deepEqual(t.call('chdir', t.str('/up/sub')), { kind: 'continue' });
    assert.deepEqual(t.call('chdir', t.str('/file')), fail(E.ENOTDIR));
    assert.deepEqual(t.call('execve', t.str('/sub'), 0, 0), fail(E.EACCES));
    assert.deepEqual(t.call('execve', t.str('/file'), 0, 0), { kind: 'continue' });
    assert.deepEqual(t.call('execve', t.str('/escape2'), 0, 0), fail(E.ENOENT));
    assert.deepEqual(t.call('execveat', AT.FDCWD, t.str('/sub/link'), 0, 0, AT.SYMLINK_NOFOLLOW), fail(E.ELOOP));
    assert.deepEqual(t.call('execveat', 3, t.str(''), 0, 0, AT.EMPTY_PATH), { kind: 'continue' });
    assert.deepEqual(t.call('chroot', t.str('/sub')), fail(E.EPERM));
  });

  it('hands a FIFO open that would block to a worker, and gives other opens their own flags', () => {
    const t = new FakeTask();
    assert.deepEqual(t.call('mknod', t.str('/fifo'), S_IFIFO | 0o644, 0), { kind: 'ok', val: 0 });
    assert.ok(lstatSync(join(root, 'fifo')).isFIFO());
    assert.deepEqual(t.call('mknod', t.str('/dev/null2'), 0o020000 | 0o666, 0x103), fail(E.EPERM));
    // on the serving thread: the open is probed with O_NONBLOCK; a reader goes to a worker
    // (the probe's read end held open until then), a writer with no reader too
    assert.deepEqual(t.call('openat', AT.FDCWD, t.str('/fifo'), O.WRONLY), { kind: 'offload', hold: -1 });
    const r = t.call('open', t.str('/fifo'), O.RDONLY);
    assert.equal(r.kind, 'offload');
    const hold = (r as { hold: number }).hold;
    assert.ok(hold >= 0);
    // with that reader present, a writer's open is served at once
    const w = fdOf(t.call('openat', AT.FDCWD, t.str('/fifo'), O.WRONLY));
    assert.equal(fcntl(w, 3 /* F_GETFL */) & O.NONBLOCK, 0);
    close(w);
    close(hold);
    // the workload's own O_NONBLOCK: served at once
    const nb = fdOf(t.call('open', t.str('/fifo'), O.RDONLY | O.NONBLOCK));
    close(nb);
    // a regular file opened without O_NONBLOCK does not keep the probe's flag
    const f = fdOf(t.call('open', t.str('/file'), O.RDONLY));
    assert.equal(fcntl(f, 3 /* F_GETFL */) & O.NONBLOCK, 0);
    close(f);
    assert.equal(mayBlock('open', t.setArgs(t.str('/fifo'), O.RDONLY), sb), false);
    rmSync(join(root, 'fifo'));
  });
});

describe('sentry synthetic routing', () => {
  it('walks rootfs symlinks into /proc', () => {
    assert.equal(walk(sb, '/etc/mtab', true), '/proc/self/mounts');
    assert.equal(walk(sb, '/dev/fd/3', true), '/proc/self/fd/3');
    assert.equal(walk(sb, '/sub/link', true), null);
    assert.equal(walk(sb, '/up/etc/mtab', true), '/proc/self/mounts');
    assert.equal(normalize('/a//b/./c/../../d/'), '/a/d');
    assert.equal(normalize('/../..'), '/');
    const sp = splitLast(Buffer.from('/a/b//'));
    assert.equal(sp.name.toString(), 'b');
    assert.equal(sp.parent.toString(), '/a');
    assert.equal(sp.slash, true);
  });

  it('routes /etc/mtab (-> /proc/self/mounts) to procfs', () => {
    const t = new FakeTask();
    const calls: string[] = [];
    const saved = { ...synthetic };
    synthetic.synthStat = (_t, _sb, path, follow) => {
      calls.push(`stat ${path} ${follow}`);
      const b = Buffer.alloc(144);
      b.writeUInt32LE(S_IFREG | 0o444, 24);
      return b;
    };
    synthetic.synthOpen = (_t, _sb, path) => {
      calls.push(`open ${path}`);
      return fail(E.EOPNOTSUPP);
    };
    try {
      const self = synthetic.resolveSelf(t, '/proc/self');
      assert.match(self, /^\/proc\/\d+$/);
      const buf = t.out(144);
      assert.deepEqual(t.call('stat', t.str('/etc/mtab'), buf), { kind: 'ok', val: 0 });
      assert.equal(t.mem(buf).readUInt32LE(24), S_IFREG | 0o444);
      assert.deepEqual(t.call('open', t.str('/etc/mtab'), O.RDONLY), fail(E.EOPNOTSUPP));
      assert.deepEqual(t.call('open', t.str('/proc/self/status'), O.RDONLY), fail(E.EOPNOTSUPP));
      // the link itself is a real rootfs symlink: lstat does not go to procfs
      assert.deepEqual(t.call('lstat', t.str('/etc/mtab'), buf), { kind: 'ok', val: 0 });
      assert.equal(t.mem(buf).readUInt32LE(24) & S_IFMT, S_IFLNK);
      assert.deepEqual(calls, [`stat ${self}/mounts true`, `open ${self}/mounts`, `open ${self}/status`]);
      // writes under the synthetic trees are refused
      assert.deepEqual(t.call('mkdir', t.str('/proc/x'), 0o755), fail(E.EACCES));
      assert.deepEqual(t.call('unlink', t.str('/etc/mtab/x')), fail(E.EACCES));
      assert.deepEqual(t.call('chmod', t.str('/etc/mtab'), 0o600), fail(E.EACCES));
      assert.deepEqual(t.call('rename', t.str('/file'), t.str('/sys/file')), fail(E.EACCES));
      assert.ok(existsSync(join(root, 'file')));
      // a rootfs symlink to /proc itself: the lookup ends on the root's /proc directory
      calls.length = 0;
      assert.deepEqual(t.call('stat', t.str('/p'), buf), { kind: 'ok', val: 0 });
      assert.deepEqual(t.call('mkdir', t.str('/p/x'), 0o755), fail(E.EACCES));
      assert.deepEqual(t.call('open', t.str('/p/self/status'), O.RDONLY), fail(E.EOPNOTSUPP));
      assert.deepEqual(calls, ['stat /proc true', `open ${self}/status`]);
      assert.deepEqual(readdirSync(join(root, 'proc')), []);
    } finally {
      Object.assign(synthetic, saved);
    }
  });

  it('sends a lookup that ends on a /proc or /sys mount of the root (listing mirrors) to procfs', (ctx) => {
    // the host's own root has /proc and /sys mounts of their own, as a sentry root has tmpfs
    // mirrors there; only read-only O_PATH lookups are made in it
    const hostRoot = openat(AT.FDCWD, cpath('/'), O.PATH | O.DIRECTORY | O.CLOEXEC);
    const hostSb: Sandbox = { ...sb, rootFd: hostRoot };
    const saved = synthetic.magicPath;
    synthetic.magicPath = () => null;
    try {
      assert.equal(syntheticDevs(sb).length, 0); // the test root's /proc is a plain directory
      assert.ok(syntheticDevs(hostSb).length >= 1);
      const t = new FakeTask();
      const plain = lookup(t, hostSb, { path: Buffer.from('/etc') }, O.PATH);
      assert.ok(typeof plain === 'object' && 'fd' in plain);
      if (typeof plain === 'object' && 'fd' in plain) close(plain.fd);
      let mtab: string;
      try {
        mtab = readlinkSync('/etc/mtab');
      } catch {
        ctx.skip('the host has no /etc/mtab symlink');
        return;
      }
      // Debian's is relative: ../proc/self/mounts
      const target = resolve('/etc', mtab);
      if (!target.startsWith('/proc/')) {
        ctx.skip(`the host /etc/mtab points to ${mtab}, not into /proc`);
        return;
      }
      const found = lookup(t, hostSb, { path: Buffer.from('/etc/mtab') }, O.PATH);
      assert.deepEqual(found, { synth: synthetic.resolveSelf(t, target) });
    } finally {
      synthetic.magicPath = saved;
      close(hostRoot);
    }
  });

  it('serves /proc through the real procfs', () => {
    const t = new FakeTask();
    const buf = t.out(144);
    assert.deepEqual(t.call('stat', t.str('/proc'), buf), { kind: 'ok', val: 0 });
    assert.equal(t.mem(buf).readUInt32LE(24) & S_IFMT, S_IFDIR);
    assert.deepEqual(t.call('stat', t.str('/proc/no-such-file'), buf), fail(E.ENOENT));
  });
});

describe('sentry file handlers and fds', () => {
  it('links an O_TMPFILE file through /proc/self/fd/N', () => {
    const t = new FakeTask();
    const tmp = fdOf(t.call('open', t.str('/sub'), O.TMPFILE | O.RDWR, 0o600));
    try {
      t.fds.set(7, tmp);
      const r = t.call('linkat', AT.FDCWD, t.str('/proc/self/fd/7'), AT.FDCWD, t.str('/sub/linked'), AT.SYMLINK_FOLLOW);
      assert.deepEqual(r, { kind: 'ok', val: 0 });
      assert.equal(statSync(join(root, 'sub/linked')).ino, fstatSync(tmp).ino);
      // without AT_SYMLINK_FOLLOW the magic link itself would be linked: another filesystem
      assert.deepEqual(t.call('linkat', AT.FDCWD, t.str('/proc/self/fd/7'), AT.FDCWD, t.str('/sub/l2'), 0), fail(E.EXDEV));
    } finally {
      close(tmp);
      rmSync(join(root, 'sub/linked'), { force: true });
    }
  });

  it('closes every fd it opens, on success and on failure', () => {
    const t = new FakeTask();
    const sub = openat(AT.FDCWD, cpath(join(root, 'sub')), O.PATH | O.DIRECTORY | O.CLOEXEC);
    t.fds.set(6, sub);
    const buf = t.out(256);
    const count = (): number => readdirSync('/proc/self/fd').length;
    const before = count();
    for (let i = 0; i < 3; i++) {
      t.call('stat', t.str('/escape'), buf);
      t.call('stat', t.str('/etc/mtab'), buf);
      t.call('stat', t.str('/no/such/dir/x'), buf);
      t.call('lstat', t.str('/up/up/sub/link'), buf);
      t.call('statx', AT.FDCWD, t.str('/dev/fd/0'), 0, 0x7ff, buf);
      t.call('openat', 6, t.str('../file'), O.RDONLY);
      t.call('openat', 6, t.str('missing'), O.RDONLY);
      t.call('readlinkat', 6, t.str('link'), buf, 64);
      t.call('mkdir', t.str('/leak'), 0o700);
      t.call('mkdir', t.str('/leak'), 0o700);
      t.call('mkdirat', 6, t.str('leakdir'), 0o700);
      t.call('rename', t.str('/leak'), t.str('/sub/leak2'));
      t.call('rename', t.str('/nothing'), t.str('/sub/leak3'));
      t.call('rmdir', t.str('/sub/leak2'));
      t.call('unlinkat', 6, t.str('leakdir'), AT.REMOVEDIR);
      t.call('symlink', t.str('x'), t.str('/etc/mtab/y'));
      t.call('link', t.str('/sub/link'), t.str('/missing/dir'));
      t.call('linkat', AT.FDCWD, t.str('/up/sub/link'), 6, t.str('hard'), AT.SYMLINK_FOLLOW);
      t.call('unlinkat', 6, t.str('hard'), 0);
      t.call('chmod', t.str('/escape'), 0o644);
      t.call('chown', t.str('/missing'), -1, -1);
      t.call('utimensat', AT.FDCWD, t.str('/file'), 0, 0);
      t.call('truncate', t.str('/sub'), 0);
      t.call('statfs', t.str('/file'), buf);
      t.call('access', t.str('/proc/self/status'), 4);
      t.call('execve', t.str('/sub/link'), 0, 0);
      t.call('chdir', t.str('/sub'));
      t.call('getxattr', t.str('/file'), 0, 0, 0);
      t.call('inotify_add_watch', 3, t.str('/file'), 2);
      mayBlock('open', t.setArgs(t.str('/file'), O.RDONLY), sb);
    }
    const after = count();
    close(sub);
    assert.equal(after, before);
  });
});

describe('sentry path arguments', () => {
  it('answers ENAMETOOLONG for a path of PATH_MAX bytes or more', () => {
    const t = new FakeTask();
    const buf = t.out(144);
    const long = `/${'a/'.repeat(2100)}`;
    assert.deepEqual(t.call('stat', t.str(long), buf), fail(E.ENAMETOOLONG));
    assert.deepEqual(t.call('open', t.str(`/${'x'.repeat(4095)}`), O.RDONLY), fail(E.ENAMETOOLONG));
    assert.ok(Buffer.isBuffer(readPathArg(t.setArgs(t.str(`/${'x'.repeat(4094)}`)), 0)));
    // 4095 bytes is a valid length: the lookup itself answers
    const r = t.call('stat', t.str(`/${'d/'.repeat(2047)}`), buf);
    assert.equal(r.kind, 'err');
    assert.notEqual(r.kind === 'err' ? r.errno : 0, E.ENAMETOOLONG);
  });

  it('answers EFAULT for an unreadable pointer', () => {
    const t = new FakeTask();
    const buf = t.out(144);
    assert.deepEqual(t.call('stat', UNMAPPED, buf), fail(E.EFAULT));
    assert.deepEqual(t.call('stat', 0, buf), fail(E.EFAULT));
    assert.deepEqual(t.call('open', 2n ** 60n, O.RDONLY), fail(E.EFAULT));
    assert.deepEqual(t.call('stat', t.str('/file'), UNMAPPED), fail(E.EFAULT));
    assert.deepEqual(t.call('rename', t.str('/file'), UNMAPPED), fail(E.EFAULT));
    assert.ok(existsSync(join(root, 'file')));
  });
});
