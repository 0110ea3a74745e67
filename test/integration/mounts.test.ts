/**
 * The container's filesystem: root, bind and tmpfs mounts, masked and read-only paths, devices,
 * safe resolution of mount destinations, special filesystems. Runtime-agnostic: runs against Moat
 * and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { assertBindOwners } from '../helpers/bind-owners.js';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping mount tests: ${skip}`);

/** One line of /proc/mounts. */
interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string[];
}

/** Parses /proc/mounts text (mount points with spaces are escaped as \040 and never occur here). */
function parseMounts(text: string): MountEntry[] {
  return text
    .trim()
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => f.length >= 4)
    .map(([source, target, type, options]) => ({ source: source!, target: target!, type: type!, options: options!.split(',') }));
}

/** The last (topmost) mount at `target`, if any. */
function mountAt(mounts: MountEntry[], target: string): MountEntry | undefined {
  return mounts.filter((m) => m.target === target).at(-1);
}

describe(`mounts (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  const sh = sb.sh.bind(sb);

  it('a read-only root refuses writes; a writable root accepts them', async () => {
    const script = 'touch /x 2>/dev/null && echo wrote || echo refused; grep " / " /proc/mounts';
    const ro = (await sh(script, (s) => void (s.root.readonly = true))).split('\n');
    assert.equal(ro[0], 'refused');
    assert.ok(parseMounts(ro.slice(1).join('\n'))[0]?.options.includes('ro'), `/ is not mounted ro: ${ro[1]}`);
    const rw = (await sh(script, (s) => void (s.root.readonly = false))).split('\n');
    assert.equal(rw[0], 'wrote');
    assert.ok(parseMounts(rw.slice(1).join('\n'))[0]?.options.includes('rw'), `/ is not mounted rw: ${rw[1]}`);
  });

  it('bind mounts a host directory read-write and read-only', async () => {
    const rwDir = join(sb.tmp, 'bind-rw');
    const roDir = join(sb.tmp, 'bind-ro');
    mkdirSync(rwDir);
    mkdirSync(roDir);
    const out = await sh('echo hi > /rw/from-container && echo rw-ok; echo hi > /ro/from-container && echo ro-wrote || echo ro-refused', (s) => {
      s.mounts.push({ destination: '/rw', type: 'bind', source: rwDir, options: ['rbind', 'rw'] });
      s.mounts.push({ destination: '/ro', type: 'bind', source: roDir, options: ['rbind', 'ro'] });
    });
    assert.deepEqual(out.trim().split('\n'), ['rw-ok', 'ro-refused']);
    assert.deepEqual(readdirSync(rwDir), ['from-container']);
    assert.deepEqual(readdirSync(roDir), [], 'a write went through the read-only bind mount');
  });

  it('a writable bind: the owners and modes the container sets are the host files\', and a user writes where it owns', async () => {
    await assertBindOwners(sb, []);
  });

  it('mounts a tmpfs with its size and mode options', async () => {
    const out = await sh('stat -c %a /scratch; grep " /scratch " /proc/mounts; df -k /scratch | tail -n 1', (s) => {
      s.mounts.push({ destination: '/scratch', type: 'tmpfs', source: 'tmpfs', options: ['size=1m', 'mode=700'] });
    });
    const [mode, mountLine, df] = out.trim().split('\n');
    assert.equal(mode, '700');
    const m = parseMounts(mountLine ?? '')[0];
    assert.equal(m?.type, 'tmpfs');
    assert.ok(m?.options.includes('size=1024k'), `no size=1024k in ${mountLine}`);
    assert.equal(df?.trim().split(/\s+/)[1], '1024', `df size: ${df}`);
  });

  it('masks maskedPaths: files read empty, directories list nothing', async () => {
    assert.ok(readdirSync('/sys/firmware').length > 0, 'precondition: the host /sys/firmware is not empty');
    assert.ok(existsSync('/proc/timer_list'), 'precondition: the host has /proc/timer_list');
    const out = await sh(
      'echo "kcore=$(cat /proc/kcore 2>/dev/null | wc -c)"; echo "timer_list=$(cat /proc/timer_list | wc -c)"; ' +
        'echo "keys=$(cat /proc/keys | wc -c)"; echo "firmware=$(ls -A /sys/firmware | wc -l)"',
    );
    // /proc/kcore may not exist on this kernel; either way nothing of it is readable
    assert.deepEqual(out.trim().split('\n'), ['kcore=0', 'timer_list=0', 'keys=0', 'firmware=0']);
  });

  it('mounts readonlyPaths read-only', async () => {
    const out = await sh('(echo x > /proc/sys/kernel/domainname) 2>&1 || true; cat /proc/mounts');
    // the uts namespace is the container's own: only the read-only mount stands in the way
    assert.match(out.split('\n')[0] ?? '', /Read-only file system/);
    const mounts = parseMounts(out.split('\n').slice(1).join('\n'));
    for (const path of ['/proc/sys', '/proc/bus', '/proc/fs', '/proc/irq']) {
      const m = mountAt(mounts, path);
      assert.ok(m, `${path} is not a mount point`);
      assert.ok(m.options.includes('ro'), `${path} is not read-only: ${m.options.join(',')}`);
    }
    assert.ok(mountAt(mounts, '/proc')?.options.includes('rw'), '/proc itself stays read-write');
  });

  it('creates the default devices and linux.devices entries', async () => {
    const out = await sh(
      'stat -c "%n %F %t:%T" /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; ' +
        'echo hi > /dev/null && echo null-writable; test -c /dev/ptmx && echo ptmx-ok; ' +
        'echo "fd=$(readlink /dev/fd)"; test -d /dev/fd/ && echo fd-dir; stat -c "%a %u %g %t %T %F" /dev/mydev',
      (s) => {
        s.linux.devices = [{ path: '/dev/mydev', type: 'c', major: 1, minor: 3, fileMode: 0o600, uid: 1000, gid: 1000 }];
      },
    );
    assert.deepEqual(out.trim().split('\n'), [
      '/dev/null character special file 1:3',
      '/dev/zero character special file 1:5',
      '/dev/full character special file 1:7',
      '/dev/random character special file 1:8',
      '/dev/urandom character special file 1:9',
      '/dev/tty character special file 5:0',
      'null-writable',
      'ptmx-ok',
      'fd=/proc/self/fd',
      'fd-dir',
      '600 1000 1000 1 3 character special file',
    ]);
  });

  it('resolves mount destinations inside the rootfs, through symlinks and ..', async () => {
    const tag = randomBytes(6).toString('hex');
    const escape1 = `moat-escape-${tag}`;
    const escape2 = `moat-escape2-${tag}`;
    const dotdot = `moat-dotdot-${tag}`;
    const b = await sb.bundle(['sh', '-c', 'cat /proc/mounts'], (s) => {
      s.mounts.push({ destination: `/evil/${escape1}`, type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      s.mounts.push({ destination: `/evil2/${escape2}`, type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      s.mounts.push({ destination: `/../../../${dotdot}`, type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
    });
    symlinkSync('/', join(b, 'rootfs/evil'));
    symlinkSync('../../../../../../tmp', join(b, 'rootfs/evil2'));
    try {
      const r = await sb.rt(['run', '-b', b, sb.id()]);
      assert.equal(r.status, 0, r.stderr);
      const mounts = parseMounts(r.stdout);
      for (const target of [`/${escape1}`, `/tmp/${escape2}`, `/${dotdot}`]) {
        assert.equal(mountAt(mounts, target)?.type, 'tmpfs', `no tmpfs at ${target} inside the container`);
      }
      assert.ok(existsSync(join(b, 'rootfs', escape1)), 'the symlink to / was not resolved inside the rootfs');
      assert.ok(existsSync(join(b, 'rootfs/tmp', escape2)), 'the ../ symlink was not resolved inside the rootfs');
      assert.ok(existsSync(join(b, 'rootfs', dotdot)), 'the .. destination was not resolved inside the rootfs');
    } finally {
      // whatever happened, the host must be untouched
      assert.equal(existsSync(`/${escape1}`), false, `the mount escaped to the host's /${escape1}`);
      assert.equal(existsSync(`/tmp/${escape2}`), false, `the mount escaped to the host's /tmp/${escape2}`);
      assert.equal(existsSync(`/${dotdot}`), false, `the mount escaped to the host's /${dotdot}`);
      assert.equal(existsSync(join(b, dotdot)), false, `the mount escaped to the bundle's ${dotdot}`);
    }
  });

  it('creates a destination reached through a dangling symlink inside the rootfs', async () => {
    const tag = randomBytes(6).toString('hex');
    const absTarget = `/tmp/moat-dangling-${tag}`;
    const relTarget = `moat-dangling-rel-${tag}`;
    const fileTarget = `/tmp/moat-dangling-file-${tag}`;
    const hostFile = join(sb.tmp, `dangling-src-${tag}`);
    writeFileSync(hostFile, 'from the host\n');
    const b = await sb.bundle(['sh', '-c', `cat /proc/mounts; echo --; cat ${fileTarget}`], (s) => {
      s.mounts.push({ destination: '/dangling-abs/sub', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      s.mounts.push({ destination: '/dangling-rel', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      s.mounts.push({ destination: '/dangling-file', type: 'bind', source: hostFile, options: ['bind', 'ro'] });
    });
    symlinkSync(absTarget, join(b, 'rootfs/dangling-abs'));
    symlinkSync(`../../../../tmp/${relTarget}`, join(b, 'rootfs/dangling-rel'));
    symlinkSync(fileTarget, join(b, 'rootfs/dangling-file'));
    try {
      const r = await sb.rt(['run', '-b', b, sb.id()]);
      assert.equal(r.status, 0, r.stderr);
      const [mountText, content] = r.stdout.split('--\n');
      const mounts = parseMounts(mountText ?? '');
      assert.equal(mountAt(mounts, `${absTarget}/sub`)?.type, 'tmpfs', `no tmpfs at ${absTarget}/sub`);
      assert.equal(mountAt(mounts, `/tmp/${relTarget}`)?.type, 'tmpfs', `no tmpfs at /tmp/${relTarget}`);
      assert.ok(mountAt(mounts, fileTarget), `nothing mounted at ${fileTarget}`);
      assert.equal(content, 'from the host\n');
      assert.ok(existsSync(join(b, 'rootfs', absTarget, 'sub')), 'the absolute symlink target was not created in the rootfs');
    } finally {
      for (const p of [absTarget, `/tmp/${relTarget}`, fileTarget]) assert.equal(existsSync(p), false, `the runtime created ${p} on the host`);
    }
  });

  it('resolves a symlink deeper in a new destination against the rootfs root, not its directory', async () => {
    const b = await sb.bundle(['sh', '-c', 'cat /proc/mounts'], (s) => {
      s.mounts.push({ destination: '/home/abs/newdir', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
      s.mounts.push({ destination: '/home/rel/newdir2', type: 'tmpfs', source: 'tmpfs', options: ['size=1m'] });
    });
    symlinkSync('/etc', join(b, 'rootfs/home/abs')); // means the container's /etc
    symlinkSync('../var', join(b, 'rootfs/home/rel')); // means the container's /var
    mkdirSync(join(b, 'rootfs/home/etc')); // a decoy: /etc resolved with /home as the root
    const r = await sb.rt(['run', '-b', b, sb.id()]);
    assert.equal(r.status, 0, r.stderr);
    const mounts = parseMounts(r.stdout);
    assert.equal(mountAt(mounts, '/etc/newdir')?.type, 'tmpfs', 'no tmpfs at /etc/newdir');
    assert.equal(mountAt(mounts, '/var/newdir2')?.type, 'tmpfs', 'no tmpfs at /var/newdir2');
    assert.equal(existsSync(join(b, 'rootfs/home/etc/newdir')), false, 'the symlink was resolved with /home as the root');
  });

  it('mounts proc, sysfs, devpts, mqueue and /dev/shm', async () => {
    const mounts = parseMounts(await sh('cat /proc/mounts'));
    const expected: [string, string][] = [
      ['/proc', 'proc'],
      ['/dev', 'tmpfs'],
      ['/dev/pts', 'devpts'],
      ['/dev/shm', 'tmpfs'],
      ['/dev/mqueue', 'mqueue'],
      ['/sys', 'sysfs'],
    ];
    for (const [target, type] of expected) assert.equal(mountAt(mounts, target)?.type, type, `${target} is not ${type}`);
    assert.ok(mountAt(mounts, '/sys')?.options.includes('ro'), '/sys is not read-only');
    assert.ok(mountAt(mounts, '/dev/pts')?.options.includes('gid=5'), 'devpts lacks gid=5');
  });

  it('mounts the cgroup hierarchy at /sys/fs/cgroup, rooted at the container cgroup', async () => {
    const out = await sh('cat /proc/mounts; echo --; ls /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs 2>/dev/null; echo --; cat /proc/self/cgroup', (s) => {
      s.linux.namespaces.push({ type: 'cgroup' });
      s.mounts.push({ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] });
    });
    const [mountText, procsFiles, cgroups] = out.split('--\n');
    const cgroupMounts = parseMounts(mountText ?? '').filter(
      (m) => (m.type === 'cgroup' || m.type === 'cgroup2') && (m.target === '/sys/fs/cgroup' || m.target.startsWith('/sys/fs/cgroup/')),
    );
    assert.ok(cgroupMounts.length > 0, 'no cgroup filesystem under /sys/fs/cgroup');
    for (const m of cgroupMounts) assert.ok(m.options.includes('ro'), `${m.target} is not read-only`);
    assert.ok((procsFiles ?? '').trim().split('\n').filter(Boolean).length > 0, 'no controller directory with cgroup.procs');
    // a cgroup namespace shows the container's own cgroup as the root of every hierarchy
    const lines = (cgroups ?? '').trim().split('\n');
    assert.ok(lines.length > 0);
    for (const line of lines) assert.match(line, /^\d+:[^:]*:\/$/, `not at the cgroup namespace root: ${line}`);
  });
});
