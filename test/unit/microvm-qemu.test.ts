/**
 * The QEMU driver: its command line for each VmConfig feature, the choice of accelerator and of
 * driver, and (where QEMU and a host kernel exist) a real TCG boot of a tiny busybox initramfs
 * whose /init writes to the control channel and powers off, plus the KVM probe.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { HostError, UsageError } from '../../src/errors.js';
import { QemuConfigError, chooseAccel, findExecutable, kvmUnusable, probeKvm, qemuArgv, qemuDriver, tcgClockCmdline } from '../../src/backends/microvm/qemu.js';
import { chooseDriver } from '../../src/backends/microvm/vmm.js';
import type { GuestImage, VmConfig } from '../../src/backends/microvm/types.js';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'moat-qemu-test-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

/** A VmConfig under `root` with every optional feature off. */
function baseVm(over: Partial<VmConfig> = {}): VmConfig {
  return {
    id: 'ctr-1',
    dir: '/run/moat/ctr-1',
    guest: { kernel: '/var/lib/moat/guest/vmlinuz', initramfs: '/var/lib/moat/guest/initramfs.cpio', release: '6.1.0-test' },
    cmdline: 'moat.root=vda',
    memoryMiB: 256,
    vcpus: 2,
    accel: 'tcg',
    controlSocket: '/run/moat/ctr-1/ctl.sock',
    consoleLog: '/run/moat/ctr-1/console.log',
    ...over,
  };
}

/** The value after the `index`-th occurrence of `flag` in `argv`. */
function valueOf(argv: string[], flag: string, index = 0): string | undefined {
  let seen = 0;
  for (let i = 0; i < argv.length - 1; i++) {
    if (argv[i] === flag && seen++ === index) return argv[i + 1];
  }
  return undefined;
}

/** Every value of `flag` in `argv`. */
function valuesOf(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag && i + 1 < argv.length ? [argv[i + 1] ?? ''] : []));
}

describe('qemuArgv', () => {
  test('a TCG VM: microvm with the PIT (TSC calibration), a bounded translation cache, -cpu max, console to a file', () => {
    const argv = qemuArgv(baseVm());
    assert.equal(argv[0], 'qemu-system-x86_64');
    assert.equal(valueOf(argv, '-M'), 'microvm,pit=on,pic=off,isa-serial=on,rtc=on');
    assert.equal(valueOf(argv, '-accel'), 'tcg,tb-size=64');
    assert.ok(!(valueOf(argv, '-M') ?? '').includes('accel='), '-M accel= and -accel cannot be combined');
    assert.equal(valueOf(argv, '-cpu'), 'max');
    assert.equal(valueOf(argv, '-m'), '256');
    assert.equal(valueOf(argv, '-smp'), '2');
    for (const f of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot']) assert.ok(argv.includes(f), f);
    assert.equal(valueOf(argv, '-display'), 'none');
    assert.equal(valueOf(argv, '-sandbox'), 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny');
    assert.equal(valueOf(argv, '-serial'), 'file:/run/moat/ctr-1/console.log');
    assert.equal(valueOf(argv, '-kernel'), '/var/lib/moat/guest/vmlinuz');
    assert.equal(valueOf(argv, '-initrd'), '/var/lib/moat/guest/initramfs.cpio');
    assert.equal(valueOf(argv, '-append'), `console=ttyS0 quiet panic=-1 reboot=t ${tcgClockCmdline()} moat.root=vda`);
    assert.match(tcgClockCmdline(), /^tsc_early_khz=\d+ no_timer_check$/, 'TCG guests are told the TSC frequency');
    assert.equal(valueOf(argv, '-chardev'), 'socket,id=ctl,path=/run/moat/ctr-1/ctl.sock');
    assert.deepEqual(valuesOf(argv, '-device'), ['virtio-serial-device', 'virtserialport,chardev=ctl,name=moat.ctl']);
    for (const f of ['-drive', '-fsdev', '-netdev']) assert.ok(!argv.includes(f), `no ${f} without its feature`);
  });

  test('a KVM VM: -accel kvm, -cpu host, no PIT', () => {
    const argv = qemuArgv(baseVm({ accel: 'kvm' }));
    assert.equal(valueOf(argv, '-accel'), 'kvm');
    assert.equal(valueOf(argv, '-cpu'), 'host');
    assert.equal(valueOf(argv, '-M'), 'microvm,pit=off,pic=off,isa-serial=on,rtc=on');
  });

  test('disk (writeback, readonly), 9p share and the user network (its host sockets are the sentry\'s)', () => {
    const argv = qemuArgv(
      baseVm({
        disk: { path: '/run/moat/ctr-1/disk.qcow2', format: 'qcow2', readonly: true },
        share: { hostPath: '/srv/root', tag: 'hostroot' },
        net: { mode: 'user' },
      }),
    );
    assert.equal(valueOf(argv, '-drive'), 'id=root,file=/run/moat/ctr-1/disk.qcow2,format=qcow2,if=none,cache=writeback,readonly=on');
    assert.equal(valueOf(argv, '-fsdev'), 'local,id=fs0,path=/srv/root,security_model=none,readonly=on');
    assert.equal(valueOf(argv, '-netdev'), 'user,id=n0');
    assert.deepEqual(valuesOf(argv, '-device'), [
      'virtio-serial-device',
      'virtserialport,chardev=ctl,name=moat.ctl',
      'virtio-blk-device,drive=root',
      'virtio-9p-device,fsdev=fs0,mount_tag=hostroot',
      'virtio-net-device,netdev=n0',
    ]);
    // the spec's bind mounts: a share each, read-only where the mount is
    const binds = qemuArgv(baseVm({ binds: [{ hostPath: '/.moat-binds/0', tag: 'moat.b0', readonly: true }, { hostPath: '/.moat-binds/1', tag: 'moat.b1', readonly: false }] }));
    assert.deepEqual(valuesOf(binds, '-fsdev'), ['local,id=fsb0,path=/.moat-binds/0,security_model=none,readonly=on', 'local,id=fsb1,path=/.moat-binds/1,security_model=none']);
    assert.deepEqual(valuesOf(binds, '-device').slice(-2), ['virtio-9p-device,fsdev=fsb0,mount_tag=moat.b0', 'virtio-9p-device,fsdev=fsb1,mount_tag=moat.b1']);
    // passthrough: the guest's owners and modes are the host files'
    const pass = qemuArgv(baseVm({ binds: [{ hostPath: '/.moat-binds/0', tag: 'moat.b0', readonly: false, passthrough: true }] }));
    assert.deepEqual(valuesOf(pass, '-fsdev'), ['local,id=fsb0,path=/.moat-binds/0,security_model=passthrough']);
    assert.throws(() => qemuArgv(baseVm({ share: { hostPath: '/srv/root', tag: 'same' }, binds: [{ hostPath: '/b', tag: 'same', readonly: true }] })), /binds\[0\]\.tag.*used twice/);
    const rw = qemuArgv(baseVm({ disk: { path: '/d.raw', format: 'raw' } }));
    assert.equal(valueOf(rw, '-drive'), 'id=root,file=/d.raw,format=raw,if=none,cache=writeback');
    assert.equal(valueOf(rw, '-netdev'), undefined, 'no network unless asked');
    // a pod's network: the tap made in its namespace, inherited as an fd, with the pod interface's MAC
    const tap = qemuArgv(baseVm({ net: { mode: 'tap', fd: 3, mac: '02:42:0a:e7:09:02' } }));
    assert.equal(valueOf(tap, '-netdev'), 'tap,id=n0,fd=3');
    assert.equal(valuesOf(tap, '-device').at(-1), 'virtio-net-device,netdev=n0,mac=02:42:0a:e7:09:02');
  });

  test('QMP socket and a restore (-S -incoming defer) only when asked', () => {
    const plain = qemuArgv(baseVm());
    assert.equal(valueOf(plain, '-qmp'), undefined);
    assert.equal(plain.includes('-incoming'), false);
    const r = qemuArgv(baseVm({ qmpSocket: '/run/moat/c,1/qmp.sock', incoming: true }));
    assert.equal(valueOf(r, '-qmp'), 'unix:/run/moat/c,,1/qmp.sock,server=on,wait=off');
    assert.equal(valueOf(r, '-incoming'), 'defer');
    assert.ok(r.includes('-S'), 'a restored machine stays paused until cont');
    assert.throws(() => qemuArgv(baseVm({ qmpSocket: 'relative.sock' })), (e: unknown) => e instanceof QemuConfigError && e.field === 'qmpSocket');
  });

  test("commas in paths are escaped for QEMU's option syntax; -serial file: takes its path literally", () => {
    const argv = qemuArgv(baseVm({ disk: { path: '/a,b/disk.raw', format: 'raw' }, controlSocket: '/x,y/ctl.sock', consoleLog: '/c,d/console.log' }));
    assert.equal(valueOf(argv, '-drive'), 'id=root,file=/a,,b/disk.raw,format=raw,if=none,cache=writeback');
    assert.equal(valueOf(argv, '-chardev'), 'socket,id=ctl,path=/x,,y/ctl.sock');
    assert.equal(valueOf(argv, '-serial'), 'file:/c,d/console.log');
  });

  test('refuses what would inject options or that QEMU rejects, naming the field', () => {
    const refuses = (over: Partial<VmConfig>, field: string): void => {
      assert.throws(
        () => qemuArgv(baseVm(over)),
        (e: unknown) => e instanceof QemuConfigError && e.field === field,
      );
    };
    refuses({ net: { mode: 'bridge' } as unknown as VmConfig['net'] }, 'net.mode');
    refuses({ net: { mode: 'tap' } as unknown as VmConfig['net'] }, 'net.fd');
    refuses({ net: { mode: 'tap', fd: 2, mac: '02:00:00:00:00:01' } }, 'net.fd');
    refuses({ net: { mode: 'tap', fd: 3, mac: '02:00:00:00:00:01,id=x' } }, 'net.mac');
    refuses({ share: { hostPath: '/srv', tag: 'a,b' } }, 'share.tag');
    refuses({ disk: { path: 'relative.raw', format: 'raw' } }, 'disk.path');
    refuses({ controlSocket: `/${'s'.repeat(120)}` }, 'controlSocket');
    refuses({ memoryMiB: 1.5 }, 'memoryMiB');
    refuses({ vcpus: 0 }, 'vcpus');
  });
});

const qemuPresent = findExecutable('qemu-system-x86_64') !== undefined;
const qemuImgPresent = findExecutable('qemu-img') !== undefined;

describe('qemuDriver.launch', () => {
  test('paths: the VM dir, kernel, initramfs, the disk and its whole backing chain, share, socket and log dirs, QEMU data', { skip: qemuImgPresent ? false : 'qemu-img is not installed' }, () => {
    const dir = join(root, 'launch');
    mkdirSync(join(dir, 'run'), { recursive: true });
    const base = join(dir, 'base.raw');
    const mid = join(dir, 'mid.qcow2');
    const top = join(dir, 'run', 'top.qcow2');
    for (const args of [['create', '-q', '-f', 'raw', base, '1M'], ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', 'base.raw', mid], ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', '../mid.qcow2', top]]) {
      const r = spawnSync('qemu-img', args);
      assert.equal(r.status, 0, r.stderr.toString());
    }
    const cfg = baseVm({
      dir: join(dir, 'run'),
      accel: 'tcg',
      disk: { path: top, format: 'qcow2' },
      share: { hostPath: '/srv/share', tag: 'share' },
      controlSocket: join(dir, 'sock', 'ctl.sock'),
      consoleLog: join(dir, 'log', 'console.log'),
    });
    const l = qemuDriver.launch(cfg);
    assert.deepEqual(l.devices, []);
    assert.deepEqual(l.paths.slice(0, 9), [cfg.dir, cfg.guest.kernel, cfg.guest.initramfs, top, mid, base, '/srv/share', join(dir, 'sock'), join(dir, 'log')]);
    if (qemuPresent) assert.ok(l.paths.some((p) => p.endsWith('/share/qemu')), `QEMU's data dir in ${l.paths.join(' ')}`);
    assert.equal(new Set(l.paths).size, l.paths.length);
    assert.deepEqual(qemuDriver.launch({ ...cfg, accel: 'kvm', disk: { path: base, format: 'raw' } }).devices, ['/dev/kvm']);
  });

  test('unavailable(): names the package when the binary is missing, and an unusable /dev/kvm for kvm', () => {
    const saved = process.env['PATH'];
    process.env['PATH'] = join(root, 'empty-path');
    try {
      assert.match(qemuDriver.unavailable('tcg') ?? '', /install qemu-system-x86/);
    } finally {
      process.env['PATH'] = saved;
    }
    if (qemuPresent) {
      assert.equal(qemuDriver.unavailable('tcg'), undefined);
      const kvm = kvmUnusable();
      if (kvm === undefined) assert.equal(qemuDriver.unavailable('kvm'), undefined);
      else assert.match(qemuDriver.unavailable('kvm') ?? '', /KVM was requested but/);
    }
  });
});

describe('chooseAccel', () => {
  const failProbe = (): Promise<boolean> => Promise.reject(new Error('the probe must not run'));

  test('a forced accelerator wins without probing', async () => {
    assert.equal(await chooseAccel('tcg', failProbe), 'tcg');
    assert.equal(await chooseAccel('kvm', failProbe), 'kvm');
  });

  test('kvm only when /dev/kvm opens and the probe passes; the verdict is cached per machine', async () => {
    const cache = join(root, 'accel', 'accel.json');
    let probes = 0;
    const probe = (ok: boolean) => (): Promise<boolean> => {
      probes++;
      return Promise.resolve(ok);
    };
    if (kvmUnusable() !== undefined) {
      assert.equal(await chooseAccel(undefined, probe(true), cache), 'tcg');
      assert.equal(probes, 0, 'no probe without a usable /dev/kvm');
      return;
    }
    assert.equal(await chooseAccel(undefined, probe(false), cache), 'tcg');
    assert.equal(probes, 1);
    const saved = JSON.parse(readFileSync(cache, 'utf8')) as { key: string; kvm: boolean };
    assert.equal(saved.kvm, false);
    assert.match(saved.key, /rdev=\d+ ctime=/);
    assert.equal(await chooseAccel(undefined, probe(true), cache), 'tcg', 'the cached verdict is used');
    assert.equal(probes, 1);

    writeFileSync(cache, JSON.stringify({ version: 1, key: 'another machine', kvm: false }));
    assert.equal(await chooseAccel(undefined, probe(true), cache), 'kvm', 'a stale key is probed again');
    assert.equal(probes, 2);
    assert.equal(await chooseAccel(undefined, failProbe, cache), 'kvm');
    writeFileSync(cache, 'not json');
    assert.equal(await chooseAccel(undefined, probe(false), cache), 'tcg');
    assert.equal(probes, 3);

    assert.equal(await chooseAccel(undefined, undefined, join(root, 'accel', 'none.json')), 'tcg', 'no probe, no verdict: KVM is not trusted');
    assert.equal(await chooseAccel(undefined, failProbe, join(root, 'accel', 'throws.json')), 'tcg');
    assert.ok(!existsSync(join(root, 'accel', 'throws.json')), 'a probe that failed to run is not cached');
  });
});

describe('probeKvm', () => {
  test('a VMM that hangs (as QEMU does under KVM on some hosts) is killed at the timeout: false', { timeout: 30_000 }, async () => {
    const bin = join(root, 'hanging-qemu');
    mkdirSync(bin, { recursive: true });
    const pidFile = join(bin, 'pid');
    writeFileSync(join(bin, 'qemu-system-x86_64'), `#!/bin/sh\necho $$ > ${pidFile}\nexec sleep 600\n`, { mode: 0o755 });
    const saved = process.env['PATH'];
    process.env['PATH'] = `${bin}:/usr/bin:/bin`;
    try {
      const t0 = Date.now();
      const ok = await probeKvm({ kernel: '/nonexistent/vmlinuz', initramfs: '/nonexistent/initramfs', release: 'x' }, 1500);
      assert.equal(ok, false);
      assert.ok(Date.now() - t0 < 10_000);
      if (kvmUnusable() === undefined) {
        const pid = Number(readFileSync(pidFile, 'utf8'));
        assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the hanging VMM was killed');
      }
    } finally {
      process.env['PATH'] = saved;
    }
  });
});

describe('chooseDriver', () => {
  test('--vmm: an unknown name or an unavailable driver is a UsageError naming --vmm and the reason', () => {
    assert.throws(() => chooseDriver('cloud-hypervisor', 'tcg'), (e: unknown) => e instanceof UsageError && /--vmm/.test(e.message) && /unknown VMM "cloud-hypervisor"/.test(e.message));
    assert.throws(() => chooseDriver('firecracker', 'tcg'), (e: unknown) => e instanceof UsageError && /--vmm firecracker/.test(e.message) && /needs KVM/.test(e.message));
    assert.throws(
      () => chooseDriver('firecracker', 'kvm', { share: { hostPath: '/', tag: 'hostroot' } }),
      (e: unknown) => e instanceof UsageError && /9p/.test(e.message),
    );
  });

  test('auto: QEMU where Firecracker cannot run (no binary, tcg, or a feature it lacks)', { skip: qemuPresent ? false : 'qemu-system-x86_64 is not installed' }, () => {
    assert.equal(chooseDriver(undefined, 'tcg').name, 'qemu');
    assert.equal(chooseDriver('qemu', 'tcg').name, 'qemu');
    assert.equal(chooseDriver(undefined, 'kvm', { disk: { path: '/d.qcow2', format: 'qcow2' } }).name, 'qemu');
  });

  test('auto with no VMM at all is a HostError with both reasons', () => {
    const saved = process.env['PATH'];
    process.env['PATH'] = join(root, 'empty-path');
    try {
      assert.throws(() => chooseDriver(undefined, 'tcg'), (e: unknown) => e instanceof HostError && /qemu: .*install qemu-system-x86/.test(e.message) && /firecracker: /.test(e.message));
    } finally {
      process.env['PATH'] = saved;
    }
  });
});

// ---- A real boot: a busybox initramfs whose /init says hello on the control channel. ----

/** One entry of a newc cpio archive. */
interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
}

/** A newc ("070701") cpio archive, as the kernel unpacks into its initramfs. */
function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (len: number): Buffer => Buffer.alloc((4 - (len % 4)) % 4);
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  let ino = 1;
  for (const e of [...entries, { name: 'TRAILER!!!', mode: 0 }]) {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const isDir = (e.mode & 0o170000) === 0o040000;
    const fields = [ino++, e.mode, 0, 0, isDir ? 2 : 1, 0, data.length, 0, 0, 0, 0, name.length, 0];
    const header = Buffer.from(`070701${fields.map(hex).join('')}`, 'latin1');
    parts.push(header, name, pad4(header.length + name.length), data, pad4(data.length));
  }
  return Buffer.concat(parts);
}

/** True when `file` is an ELF without a PT_INTERP program header (statically linked). */
function isStaticElf(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const h = Buffer.alloc(64);
    if (readSync(fd, h, 0, 64, 0) < 64 || h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2) return false;
    const phoff = Number(h.readBigUInt64LE(0x20));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Modules the control channel needs, in dependency order, with their place under kernel/drivers. */
const MODULES = [
  ['virtio_ring', 'virtio', 'VIRTIO'],
  ['virtio', 'virtio', 'VIRTIO'],
  ['virtio_mmio', 'virtio', 'VIRTIO_MMIO'],
  ['virtio_console', 'char', 'VIRTIO_CONSOLE'],
] as const;

/** What the boot test needs from the host, or why it must be skipped. */
function bootPrereqs(): { kernel: string; release: string; modules: string[] } | string {
  if (!qemuPresent) return 'qemu-system-x86_64 is not installed';
  if (!existsSync('/boot')) return 'no /boot';
  const kernels = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort();
  const kernel = kernels.at(-1);
  if (kernel === undefined) return 'no /boot/vmlinuz-* to boot';
  const release = kernel.slice('vmlinuz-'.length);
  if (!existsSync('/bin/busybox') || !isStaticElf('/bin/busybox')) return 'no static /bin/busybox (apt-get install busybox-static)';
  let config = '';
  try {
    config = readFileSync(`/boot/config-${release}`, 'utf8');
  } catch {
    // no config: every module must then exist as a file
  }
  const modules: string[] = [];
  for (const [name, dir, sym] of MODULES) {
    const ko = `/lib/modules/${release}/kernel/drivers/${dir}/${name}.ko`;
    if (existsSync(ko)) modules.push(ko);
    else if (!config.includes(`CONFIG_${sym}=y`)) return `${name} is neither built into ${release} nor an uncompressed ${ko}`;
  }
  return { kernel: `/boot/${kernel}`, release, modules };
}

const INIT = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
echo "moat-test-init: loading modules"
for m in virtio_ring virtio virtio_mmio virtio_console; do [ -f /mods/$m.ko ] && $B insmod /mods/$m.ko; done
# The port is found by name: /dev/vport<N>p1 numbers it by virtio device index. The device node
# can appear before the port is registered (ENXIO on open), so the write is retried.
i=0
while [ $i -lt 300 ]; do
  for n in /sys/class/virtio-ports/*/name; do
    if [ -r "$n" ] && [ "$($B cat "$n")" = moat.ctl ]; then
      p=/dev/$($B basename "$($B dirname "$n")")
      if [ -c "$p" ] && echo hello 2>/dev/null >"$p"; then
        echo "moat-test-init: wrote hello to $p"
        $B poweroff -f
      fi
    fi
  done
  $B sleep 0.1
  i=$((i + 1))
done
echo "moat-test-init: no control port"
$B poweroff -f
`;

const prereqs = bootPrereqs();
const bootSkip = typeof prereqs === 'string' ? prereqs : false;

describe('a real microvm boot', { skip: bootSkip }, () => {
  let guest: GuestImage;

  before(() => {
    if (typeof prereqs === 'string') return;
    const dir = 0o040755;
    const entries: CpioEntry[] = ['bin', 'dev', 'proc', 'sys', 'mods'].map((d) => ({ name: d, mode: dir }));
    entries.push({ name: 'bin/busybox', mode: 0o100755, data: readFileSync('/bin/busybox') });
    for (const ko of prereqs.modules) entries.push({ name: `mods/${ko.slice(ko.lastIndexOf('/') + 1)}`, mode: 0o100644, data: readFileSync(ko) });
    entries.push({ name: 'init', mode: 0o100755, data: Buffer.from(INIT) });
    const initramfs = join(root, 'test-initramfs.cpio');
    writeFileSync(initramfs, cpioNewc(entries));
    guest = { kernel: prereqs.kernel, initramfs, release: prereqs.release };
  });

  test('TCG: the guest writes to the control socket and QEMU exits after poweroff, within 60 s', { timeout: 90_000 }, async (t) => {
    const dir = mkdtempSync(join(root, 'vm-'));
    const cfg = baseVm({ dir, guest, cmdline: '', memoryMiB: 256, vcpus: 1, accel: 'tcg', controlSocket: join(dir, 'ctl.sock'), consoleLog: join(dir, 'console.log') });
    const launch = qemuDriver.launch(cfg);
    assert.ok(launch.paths.includes(guest.initramfs) && launch.paths.includes(guest.kernel));

    let received = '';
    let gotHello: () => void = () => undefined;
    const hello = new Promise<void>((res) => {
      gotHello = res;
    });
    const sockets: Socket[] = [];
    const server = createServer((s) => {
      sockets.push(s);
      s.on('data', (d: Buffer) => {
        received += d.toString('utf8');
        if (received.includes('hello')) gotHello();
      });
      s.on('error', () => undefined);
    });
    await new Promise<void>((res) => server.listen(cfg.controlSocket, () => res()));

    const t0 = Date.now();
    const [file, ...args] = launch.argv;
    assert.ok(file !== undefined);
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const exit = new Promise<number | string>((res) => child.on('exit', (code, sig) => res(code ?? sig ?? 'unknown')));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((res) => {
      timer = setTimeout(() => res('timeout'), 60_000);
    });
    try {
      const first = await Promise.race([hello.then(() => 'hello' as const), exit.then(() => 'exit' as const), deadline]);
      assert.equal(first, 'hello', `no hello on the control socket (${first}); stderr: ${stderr}; console: ${tail(cfg.consoleLog)}`);
      const status = await Promise.race([exit, deadline]);
      assert.equal(status, 0, `QEMU did not exit cleanly after poweroff: ${String(status)}; stderr: ${stderr}`);
      t.diagnostic(`booted, said hello and powered off in ${Date.now() - t0} ms`);
      assert.equal(received, 'hello\n');
      assert.match(readFileSync(cfg.consoleLog, 'utf8'), /moat-test-init: wrote hello to \/dev\/vport0p1/);
    } finally {
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    }
  });

  test('probeKvm returns a boolean within its timeout (false where /dev/kvm cannot run guests)', { timeout: 60_000 }, async (t) => {
    const t0 = Date.now();
    const ok = await probeKvm(guest, 15_000);
    const ms = Date.now() - t0;
    assert.equal(typeof ok, 'boolean');
    assert.ok(ms < 25_000, `probeKvm took ${ms} ms`);
    t.diagnostic(`probeKvm: ${ok} in ${ms} ms (${kvmUnusable() ?? '/dev/kvm opens read-write'})`);
  });
});

/** The last lines of a console log, for failure messages. */
function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no console log)';
  }
}
