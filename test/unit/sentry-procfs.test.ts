import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { RELEASE, isSynthetic, refreshTree, reopenFd, resolveSelf, synthOpen, synthReadlink, synthStat } from '../../src/backends/sentry/procfs.js';
import { handlers } from '../../src/backends/sentry/sys_info.js';
import type { Creds, Reply, Sandbox, Task } from '../../src/backends/sentry/types.js';
import { E, O, fcntl } from '../../src/sys/kernel.js';

const F_GET_SEALS = 1034;
const SEALS_ALL = 1 | 2 | 4 | 8;

/** The test process's pid in its own pid namespace (the last NSpid field). */
function ownNsPid(pid: number): number {
  const line = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? '';
  return Number(line.trim().split(/\s+/).pop());
}

let scratch = '';
let child: ChildProcess | undefined;
let childPid = 0;
const logs: string[] = [];

const sb: Sandbox = {
  id: 'test',
  rootFd: -1,
  initPid: process.pid,
  level: 'strict',
  network: { mode: 'none' },
  limits: { memoryBytes: 256 * 1024 * 1024, cpus: 2 },
  hostname: 'box',
  get scratchDir() {
    return scratch;
  },
  bootTime: Date.now() - 5000,
  pids: () => (childPid > 0 ? [process.pid, childPid] : [process.pid]),
  log: (msg) => logs.push(msg),
};

let written: Buffer | null = null;
let arg0 = 0x1000n;

const task: Task = {
  tid: process.pid,
  tgid: process.pid,
  notif: {
    id: 1n,
    tid: process.pid,
    nr: 0,
    arch: 0xc000003e,
    get args() {
      return [arg0, 0n, 0n, 0n, 0n, 0n] as const;
    },
  },
  int: (i) => (i === 0 ? Number(BigInt.asIntN(32, arg0)) : 0),
  num: (i) => (i === 0 ? Number(arg0) : 0),
  read: () => null,
  readString: () => -E.EFAULT,
  write: (_addr, data) => {
    written = Buffer.from(data);
    return true;
  },
  valid: () => true,
  signalPending: () => false,
  getFd: (fd) => {
    try {
      return openSync(`/proc/self/fd/${fd}`, 'r');
    } catch {
      return -E.EBADF;
    }
  },
  cwd: () => Buffer.from('/'),
  fdPath: () => null,
  umask: () => 0o022,
  onWorker: false,
  creds: (): Creds => {
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    return { uid, gid, euid: uid, egid: gid, fsuid: uid, fsgid: gid, groups: process.getgroups?.() ?? [] };
  },
};

/** The fd of an fd reply (fails the test otherwise). */
function fdOf(r: Reply): number {
  assert.equal(r.kind, 'fd', `expected an fd reply, got ${JSON.stringify(r)}`);
  return r.kind === 'fd' ? r.fd : -1;
}

/** Opens a synthetic file and returns its content. */
function readSynth(path: string): string {
  const fd = fdOf(synthOpen(task, sb, path, O.RDONLY | O.CLOEXEC));
  try {
    return readFileSync(fd, 'latin1');
  } finally {
    closeSync(fd);
  }
}

before(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'moat-procfs-'));
  child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child?.once('spawn', resolve);
    child?.once('error', reject);
  });
  childPid = child.pid ?? 0;
});

after(() => {
  child?.kill('SIGKILL');
  rmSync(scratch, { recursive: true, force: true });
});

test('isSynthetic covers /proc and /sys only', () => {
  for (const p of ['/proc', '/proc/self/fd/3', '/sys', '/sys/fs/cgroup']) assert.ok(isSynthetic(p), p);
  for (const p of ['/', '/procfs', '/system', '/etc/proc']) assert.ok(!isSynthetic(p), p);
});

test('meminfo reports the memory limit', () => {
  const text = readSynth('/proc/meminfo');
  assert.match(text, /^MemTotal: +262144 kB$/m);
  const free = Number(/^MemFree: +(\d+) kB$/m.exec(text)?.[1]);
  assert.ok(free > 0 && free < 262144, `MemFree ${free}`);
  assert.match(text, /^SwapTotal: +0 kB$/m);
});

test('cpuinfo has one entry per sandbox CPU', () => {
  const text = readSynth('/proc/cpuinfo');
  const procs = text.match(/^processor\s*:\s*(\d+)$/gm) ?? [];
  assert.equal(procs.length, 2);
  assert.match(text, /^processor\s*:\s*1$/m);
});

test('the synthetic file is a sealed read-only memfd', () => {
  const fd = fdOf(synthOpen(task, sb, '/proc/meminfo', O.RDONLY));
  try {
    assert.equal(fcntl(fd, F_GET_SEALS), SEALS_ALL);
    assert.match(readFileSync(fd, 'latin1'), /^MemTotal:/);
    assert.throws(() => writeSync(fd, 'x'), /EBADF/);
  } finally {
    closeSync(fd);
  }
});

test('writes and creations are refused, unknown paths are ENOENT', () => {
  assert.deepEqual(synthOpen(task, sb, '/proc/meminfo', O.WRONLY), { kind: 'err', errno: E.EACCES });
  assert.deepEqual(synthOpen(task, sb, '/proc/sys/kernel/hostname', O.RDWR), { kind: 'err', errno: E.EACCES });
  assert.deepEqual(synthOpen(task, sb, '/proc/meminfo', O.RDONLY | O.TRUNC), { kind: 'err', errno: E.EACCES });
  assert.deepEqual(synthOpen(task, sb, '/proc/newfile', O.WRONLY | O.CREAT), { kind: 'err', errno: E.EACCES });
  assert.deepEqual(synthOpen(task, sb, '/proc/nonexistent', O.RDONLY), { kind: 'err', errno: E.ENOENT });
  assert.deepEqual(synthOpen(task, sb, '/sys/block', O.RDONLY), { kind: 'err', errno: E.ENOENT });
  assert.equal(synthStat(task, sb, '/proc/nonexistent', true), -E.ENOENT);
  assert.equal(synthReadlink(task, sb, '/proc/nonexistent'), -E.ENOENT);
  assert.equal(synthReadlink(task, sb, '/proc/meminfo'), -E.EINVAL);
});

test('/proc/self names the caller by its namespace pid', () => {
  const ns = ownNsPid(process.pid);
  assert.equal(String(synthReadlink(task, sb, '/proc/self')), String(ns));
  assert.equal(String(synthReadlink(task, sb, '/proc/thread-self')), `${ns}/task/${ownNsPid(process.pid)}`);
  assert.equal(resolveSelf(task, '/proc/self/status'), `/proc/${ns}/status`);
  assert.equal(String(synthReadlink(task, sb, '/proc/self/root')), '/');
  assert.equal(String(synthReadlink(task, sb, '/proc/mounts')), 'self/mounts');
  const stat = readSynth('/proc/self/stat');
  assert.equal(stat.split(' ')[0], String(ns));
  assert.match(readSynth('/proc/self/status'), new RegExp(`^Pid:\\t${ns}$`, 'm'));
  assert.match(readSynth('/proc/self/status'), /^Cpus_allowed_list:\t0-1$/m);
  assert.match(readSynth('/proc/self/cgroup'), /^0::\/$/m);
});

test('the /proc listing holds only sandbox pids', () => {
  const dir = refreshTree(sb, '/proc', task);
  const pids = readdirSync(dir).filter((n) => /^\d+$/.test(n)).sort();
  assert.deepEqual(pids, [String(ownNsPid(process.pid)), String(ownNsPid(childPid))].sort());
  assert.ok(readdirSync(dir).includes('meminfo'));
  // A process that left the sandbox leaves the listing.
  const saved = childPid;
  childPid = 0;
  try {
    assert.deepEqual(readdirSync(refreshTree(sb, '/proc', task)).filter((n) => /^\d+$/.test(n)), [String(ownNsPid(process.pid))]);
    assert.deepEqual(synthOpen(task, sb, `/proc/${ownNsPid(saved)}/status`, O.RDONLY), { kind: 'err', errno: E.ENOENT });
  } finally {
    childPid = saved;
  }
});

test('a directory opens as its scratch mirror', () => {
  const fd = fdOf(synthOpen(task, sb, '/proc/self/fd', O.RDONLY | O.DIRECTORY));
  try {
    assert.ok(fstatSync(fd).isDirectory());
    const names = readdirSync(join(scratch, 'proc', String(ownNsPid(process.pid)), 'fd'));
    assert.ok(names.includes('0') && names.includes('1'), names.join(','));
  } finally {
    closeSync(fd);
  }
  assert.deepEqual(synthOpen(task, sb, '/proc', O.RDWR), { kind: 'err', errno: E.EISDIR });
  assert.deepEqual(synthOpen(task, sb, '/proc/meminfo', O.RDONLY | O.DIRECTORY), { kind: 'err', errno: E.ENOTDIR });
});

test('another process: environ and maps for its user (or root), EACCES for another user; its pids are translated', () => {
  const ns = ownNsPid(childPid);
  const owner = process.getuid?.() ?? 0;
  const stranger = owner === 0 ? 1000 : owner + 1;
  const other: Task = { ...task, creds: (): Creds => ({ uid: stranger, gid: stranger, euid: stranger, egid: stranger, fsuid: stranger, fsgid: stranger, groups: [] }) };
  for (const name of ['environ', 'maps']) {
    assert.deepEqual(synthOpen(other, sb, `/proc/${ns}/${name}`, O.RDONLY), { kind: 'err', errno: E.EACCES }, `${name} of another user's process`);
  }
  assert.match(readSynth(`/proc/${ns}/maps`), /\[stack\]/);
  assert.ok(readSynth(`/proc/${ns}/environ`).includes('PATH='));
  const stat = readSynth(`/proc/${ns}/stat`).split(' ');
  assert.equal(stat[0], String(ns));
  assert.equal(stat[3], String(ownNsPid(process.pid)), 'ppid is the test process');
  assert.ok(readSynth('/proc/self/environ').length > 0);
});

test('synthStat: sizes, modes, devices', () => {
  const file = synthStat(task, sb, '/proc/meminfo', true);
  assert.ok(Buffer.isBuffer(file));
  if (!Buffer.isBuffer(file)) return;
  assert.equal(file.length, 144);
  assert.equal(file.readBigUInt64LE(0), 0x16n);
  assert.equal(file.readUInt32LE(24), 0o100444);
  assert.equal(file.readBigInt64LE(48), 0n);
  assert.equal(file.readBigInt64LE(88), BigInt(Math.floor(sb.bootTime / 1000)));
  const again = synthStat(task, sb, '/proc/meminfo', true);
  assert.ok(Buffer.isBuffer(again) && again.readBigUInt64LE(8) === file.readBigUInt64LE(8), 'stable inode');

  const dir = synthStat(task, sb, '/sys/devices/system/cpu', true);
  assert.ok(Buffer.isBuffer(dir) && dir.readUInt32LE(24) === 0o40555 && dir.readBigUInt64LE(0) === 0x17n);
  const lnk = synthStat(task, sb, '/proc/self', false);
  assert.ok(Buffer.isBuffer(lnk) && lnk.readUInt32LE(24) === 0o120777);
  const followed = synthStat(task, sb, '/proc/self', true);
  assert.ok(Buffer.isBuffer(followed) && followed.readUInt32LE(24) === 0o40555);
  assert.equal(synthStat(task, sb, '/sys/devices/system/cpu/cpu2', true), -E.ENOENT);
});

test('/sys and /proc/sys values', () => {
  assert.equal(readSynth('/sys/devices/system/cpu/online'), '0-1\n');
  assert.equal(readSynth('/proc/sys/kernel/hostname'), 'box\n');
  assert.equal(readSynth('/proc/sys/kernel/osrelease'), `${RELEASE}\n`);
  assert.match(readSynth('/proc/version'), new RegExp(`^Linux version ${RELEASE.replace(/\./g, '\\.')} \\(moat@sentry\\) #1 SMP`));
  const stat = readSynth('/proc/stat');
  assert.equal((stat.match(/^cpu\d+ /gm) ?? []).length, 2);
  assert.match(stat, new RegExp(`^btime ${Math.floor(sb.bootTime / 1000)}$`, 'm'));
  const up = Number(readSynth('/proc/uptime').split(' ')[0]);
  assert.ok(up >= 4 && up < 120, `uptime ${up}`);
  assert.match(readSynth('/proc/loadavg'), /^0\.00 0\.00 0\.00 \d+\/\d+ \d+\n$/);
  const mounts = readSynth('/proc/self/mounts');
  assert.match(mounts, /^overlay \/ overlay /m);
  assert.match(mounts, /^proc \/proc proc /m);
  // a fresh UUID per read; the sandbox's own boot id, the same on every read
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n$/;
  const u1 = readSynth('/proc/sys/kernel/random/uuid');
  assert.match(u1, UUID);
  assert.notEqual(readSynth('/proc/sys/kernel/random/uuid'), u1);
  const boot = readSynth('/proc/sys/kernel/random/boot_id');
  assert.match(boot, UUID);
  assert.equal(readSynth('/proc/sys/kernel/random/boot_id'), boot);
  assert.notEqual(boot, readFileSync('/proc/sys/kernel/random/boot_id', 'latin1'), 'the host\'s boot id');
  // limits the host kernel enforces on the workload too are the host's; its boot parameters are not shown
  for (const name of ['vm/max_map_count', 'fs/inotify/max_user_watches', 'fs/file-max', 'fs/pipe-max-size']) {
    assert.equal(readSynth(`/proc/sys/${name}`), readFileSync(`/proc/sys/${name}`, 'latin1'), name);
  }
  assert.equal(readSynth('/proc/sys/kernel/shmmni'), '4096\n');
  assert.equal(readSynth('/proc/cmdline'), `BOOT_IMAGE=/boot/vmlinuz-${RELEASE} ro quiet\n`);
});

test('reopening one of the caller\'s fds through /proc/self/fd/N, or one of another process of its user', () => {
  const path = join(scratch, 'data.txt');
  writeFileSync(path, 'hello');
  const mine = openSync(path, 'r');
  try {
    const fd = fdOf(reopenFd(task, sb, `/proc/self/fd/${mine}`, O.RDONLY) ?? { kind: 'err', errno: 0 });
    assert.equal(readFileSync(fd, 'latin1'), 'hello');
    closeSync(fd);
    assert.equal(reopenFd(task, sb, '/proc/self/status', O.RDONLY), null);
    assert.deepEqual(reopenFd(task, sb, '/proc/self/fd/987654', O.RDONLY), { kind: 'err', errno: E.ENOENT });
    // the child's fd 0 is /dev/null (stdio 'ignore'): its user (or root) reopens it, another user may not
    const theirs = fdOf(reopenFd(task, sb, `/proc/${ownNsPid(childPid)}/fd/0`, O.RDONLY) ?? { kind: 'err', errno: 0 });
    try {
      assert.equal(fstatSync(theirs).rdev, statSync('/dev/null').rdev);
    } finally {
      closeSync(theirs);
    }
    const owner = process.getuid?.() ?? 0;
    const stranger = owner === 0 ? 1000 : owner + 1;
    const other: Task = { ...task, creds: (): Creds => ({ uid: stranger, gid: stranger, euid: stranger, egid: stranger, fsuid: stranger, fsgid: stranger, groups: [] }) };
    assert.deepEqual(reopenFd(other, sb, `/proc/${ownNsPid(childPid)}/fd/0`, O.RDONLY), { kind: 'err', errno: E.EACCES });
  } finally {
    closeSync(mine);
  }
});

test('uname and sysinfo', () => {
  written = null;
  assert.deepEqual(handlers.uname?.(task, sb), { kind: 'ok', val: 0 });
  const uts = written as Buffer | null;
  assert.ok(uts !== null && uts.length === 390);
  const fieldAt = (i: number): string => {
    const f = uts.subarray(i * 65, i * 65 + 65);
    return f.subarray(0, f.indexOf(0)).toString('latin1');
  };
  assert.equal(fieldAt(0), 'Linux');
  assert.equal(fieldAt(1), 'box');
  assert.equal(fieldAt(2), RELEASE);
  assert.equal(fieldAt(4), 'x86_64');

  written = null;
  assert.deepEqual(handlers.sysinfo?.(task, sb), { kind: 'ok', val: 0 });
  const si = written as Buffer | null;
  assert.ok(si !== null && si.length === 112);
  assert.equal(si.readBigUInt64LE(32), 256n * 1024n * 1024n);
  assert.ok(si.readBigUInt64LE(40) < 256n * 1024n * 1024n);
  assert.ok(si.readUInt16LE(80) >= 2);
  assert.equal(si.readUInt32LE(104), 1);
  const up = Number(si.readBigInt64LE(0));
  assert.ok(up >= 4 && up < 120);

  arg0 = -1n & 0xffffffffffffffffn;
  try {
    assert.deepEqual(handlers.uname?.({ ...task, num: () => -1 }, sb), { kind: 'err', errno: E.EFAULT });
  } finally {
    arg0 = 0x1000n;
  }
});
