/**
 * The cgroup manager on this host's real cgroups (root only): limits land in the right files,
 * processes join, pids and memory limits bite, the freezer stops a process, statistics make
 * sense, destroy removes everything (also from a second manager), and the cgroup v2 BPF device
 * filter denies what its rules deny. Every cgroup is made under a unique absolute path and removed
 * at the end, also when a test fails.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { createCgroupManager, detectLayout, parseCgroupMounts, parseResources, V2Manager } from '../../src/cgroups/index.js';
import type { CgroupManager, CgroupManagerOptions, CgroupMount, Resources } from '../../src/cgroups/index.js';
import { removeCgroupTree } from '../../src/cgroups/fsutil.js';
import { queryPrograms, BPF_CGROUP_DEVICE } from '../../src/cgroups/sys.js';
import { hostHugepageSizes } from '../../src/cgroups/stats.js';
import { ConfigError } from '../../src/errors.js';
import { waitFor } from '../helpers/runtime.js';

function skipReason(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    detectLayout();
  } catch (err) {
    return `no cgroups: ${err instanceof Error ? err.message : String(err)}`;
  }
  return undefined;
}

const skip = skipReason();
if (skip) console.log(`# skipping cgroup integration tests: ${skip}`);

const mountinfo = skip ? '' : readFileSync('/proc/self/mountinfo', 'utf8');
const mounts = skip ? undefined : parseCgroupMounts(mountinfo);
const TAG = `moat-test-${process.pid}`;
/** The compiled cgroups module, for helper processes. */
const INDEX_URL = new URL('../../src/cgroups/index.js', import.meta.url).href;

/** Result of a process run inside a cgroup. */
interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

describe('cgroups on this host', { skip }, () => {
  const managers: CgroupManager[] = [];
  const children: ChildProcess[] = [];
  const extraDirs: string[] = [];
  const warnings: string[] = [];
  let unifiedSubtree = '';
  const tmp = mkdtempSync(join(tmpdir(), 'moat-cg-'));

  before(() => {
    if (mounts?.v2 !== undefined) unifiedSubtree = readFileSync(join(mounts.v2.mountpoint, 'cgroup.subtree_control'), 'utf8');
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const m of managers) {
      try {
        await m.thaw();
      } catch {
        // gone already
      }
      for (const pid of m.pids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }
    await sleep(50);
    for (const m of managers) {
      try {
        await m.destroy();
      } catch (err) {
        console.log(`# cleanup: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    for (const d of extraDirs) removeCgroupTree(d);
    // Put back the controllers the tests enabled on the cgroup2 root (hugetlb on a hybrid host).
    if (mounts?.v2 !== undefined) {
      const before = new Set(unifiedSubtree.trim().split(/\s+/).filter((c) => c !== ''));
      const now = readFileSync(join(mounts.v2.mountpoint, 'cgroup.subtree_control'), 'utf8').trim().split(/\s+/);
      for (const c of now) {
        if (c === '' || before.has(c)) continue;
        try {
          writeFileSync(join(mounts.v2.mountpoint, 'cgroup.subtree_control'), `-${c}`);
        } catch {
          // in use by someone else's cgroup: leave it
        }
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  /** A manager for a fresh absolute cgroup path; destroyed in `after`. */
  function manager(name: string, extra: Partial<CgroupManagerOptions> = {}): CgroupManager {
    const m = createCgroupManager({
      id: name,
      cgroupsPath: `/${TAG}-${name}`,
      systemd: false,
      rootless: false,
      warn: (w) => warnings.push(w),
      ...extra,
    });
    managers.push(m);
    return m;
  }

  /** Starts `sh -c script` held at a `read` until it is in the cgroups of `m`. */
  function startIn(m: CgroupManager, script: string): { child: ChildProcess; done: Promise<Run> } {
    const child = spawn('sh', ['-c', `read _ && {\n${script}\n}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<Run>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
    assert.ok(child.pid !== undefined);
    m.apply(child.pid);
    child.stdin?.end('\n');
    return { child, done };
  }

  /** The directory of a controller: its v1 directory, else the v2 one. */
  const dirOf = (m: CgroupManager, controller: string): string => {
    const d = m.paths[controller] ?? m.paths[''];
    assert.ok(d !== undefined, `no directory for ${controller}`);
    return d;
  };
  const read = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8').trim();
  const isV1 = (m: CgroupManager, controller: string) => m.paths[controller] !== undefined;

  it('set writes memory, pids, cpu, cpuset, blkio, hugetlb and device limits into the cgroup files', (t) => {
    const m = manager('limits');
    const cpusetParent = posix.dirname(dirOf(m, 'cpuset'));
    const parentCpus = read(cpusetParent, isV1(m, 'cpuset') ? 'cpuset.cpus' : 'cpuset.cpus.effective');
    const firstCpu = /^\d+/.exec(parentCpus)?.[0] ?? '0';
    const sizes = hostHugepageSizes();
    const res: Resources = parseResources(
      {
        memory: { limit: 32 << 20, reservation: 16 << 20, swappiness: 10 },
        pids: { limit: 50 },
        cpu: { shares: 512, quota: 50000, period: 100000, cpus: firstCpu, mems: '0' },
        blockIO: { weight: 300 },
        hugepageLimits: sizes.includes('2MB') ? [{ pageSize: '2MB', limit: 4 << 20 }] : [],
        devices: [
          { allow: false, access: 'rwm' },
          { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
          { allow: true, type: 'c', major: 1, minor: 5, access: 'rw' },
        ],
      },
      'linux.resources',
    );
    m.set(res);
    for (const dir of Object.values(m.paths)) assert.ok(existsSync(dir), `${dir} exists`);

    const mem = dirOf(m, 'memory');
    if (isV1(m, 'memory')) {
      assert.equal(read(mem, 'memory.limit_in_bytes'), String(32 << 20));
      assert.equal(read(mem, 'memory.soft_limit_in_bytes'), String(16 << 20));
      assert.equal(read(mem, 'memory.swappiness'), '10');
    } else {
      assert.equal(read(mem, 'memory.max'), String(32 << 20));
      assert.equal(read(mem, 'memory.low'), String(16 << 20));
    }
    assert.equal(read(dirOf(m, 'pids'), 'pids.max'), '50');
    const cpu = dirOf(m, 'cpu');
    if (isV1(m, 'cpu')) {
      assert.equal(read(cpu, 'cpu.shares'), '512');
      assert.equal(read(cpu, 'cpu.cfs_quota_us'), '50000');
      assert.equal(read(cpu, 'cpu.cfs_period_us'), '100000');
    } else {
      assert.equal(read(cpu, 'cpu.max'), '50000 100000');
    }
    assert.equal(read(dirOf(m, 'cpuset'), 'cpuset.cpus'), firstCpu);
    assert.equal(read(dirOf(m, 'cpuset'), 'cpuset.mems'), '0');

    const blkio = dirOf(m, 'blkio');
    const weightFile = ['blkio.weight', 'blkio.bfq.weight', 'io.bfq.weight', 'io.weight'].find((f) => existsSync(join(blkio, f)));
    if (weightFile === undefined) {
      t.diagnostic('skipped the blkio weight check: the kernel has no blkio.weight / blkio.bfq.weight / io.weight');
    } else {
      assert.match(read(blkio, weightFile), weightFile === 'io.weight' ? /\b\d+$/ : /\b300$/);
    }

    if (sizes.includes('2MB')) {
      // on this hybrid host hugetlb is a cgroup2 controller: the limit is in the v2 directory
      const hugetlb = dirOf(m, 'hugetlb');
      const file = isV1(m, 'hugetlb') ? 'hugetlb.2MB.limit_in_bytes' : 'hugetlb.2MB.max';
      assert.equal(read(hugetlb, file), String(4 << 20));
    } else {
      t.diagnostic('skipped the hugetlb check: the kernel has no 2MB hugepages');
    }

    if (isV1(m, 'devices')) {
      assert.equal(read(dirOf(m, 'devices'), 'devices.list'), 'c 1:3 rwm\nc 1:5 rw');
    }
  });

  it('apply puts a real process in every cgroup of the container', async () => {
    const m = manager('apply');
    const child = spawn('sleep', ['100'], { stdio: 'ignore' });
    children.push(child);
    assert.ok(child.pid !== undefined);
    m.apply(child.pid);
    const own = readFileSync(`/proc/${child.pid}/cgroup`, 'utf8').trim().split('\n');
    assert.ok(mounts !== undefined);
    for (const [controller, dir] of Object.entries(m.paths)) {
      const mount: CgroupMount | undefined = controller === '' ? mounts.v2 : mounts.v1.get(controller);
      assert.ok(mount !== undefined);
      const expected: string = `/${posix.relative(mount.mountpoint, dir)}`;
      const line = own.find((l) => {
        const [, ctrls] = l.split(':');
        return controller === '' ? ctrls === '' : (ctrls ?? '').split(',').includes(controller);
      });
      assert.equal(line?.slice(line.indexOf(':', line.indexOf(':') + 1) + 1), expected, `cgroup of ${controller || 'v2'}`);
    }
    assert.deepEqual(m.pids(), [child.pid]);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
  });

  it('a pids limit of 5 makes a shell fork loop fail', async () => {
    const m = manager('pids');
    m.set(parseResources({ pids: { limit: 5 } }, 'linux.resources'));
    const { done } = startIn(m, 'for i in $(seq 20); do sleep 10 >/dev/null 2>&1 & done; echo forked all');
    const r = await done;
    assert.match(r.stderr, /fork/i);
    assert.doesNotMatch(r.stdout, /forked all/);
    const left = m.pids();
    assert.ok(left.length > 0 && left.length <= 5, `processes left: ${left.length}`);
    assert.equal(m.stats().pids.limit, 5);
    for (const pid of left) process.kill(pid, 'SIGKILL');
  });

  it('a 16 MiB memory limit OOM-kills a shell that holds 64 MiB, and oomKillCount goes up', async () => {
    const m = manager('oom');
    m.set(parseResources({ memory: { limit: 16 << 20, swap: 16 << 20 } }, 'linux.resources'));
    assert.equal(m.oomKillCount(), 0);
    const { done } = startIn(m, 'x=$(head -c 67108864 /dev/zero | tr "\\0" x); echo "held ${#x}"');
    const r = await done;
    assert.ok(r.signal === 'SIGKILL' || r.code === 137, `killed (code ${r.code}, signal ${r.signal}, ${r.stdout})`);
    assert.doesNotMatch(r.stdout, /held/);
    assert.ok(m.oomKillCount() >= 1, `oom kills: ${m.oomKillCount()}`);
  });

  it('freeze stops a counting process and thaw resumes it', async () => {
    const m = manager('freeze');
    const counter = join(tmp, 'counter');
    const { child } = startIn(m, `i=0; while :; do i=$((i+1)); echo $i > ${counter}; sleep 0.01; done`);
    const value = () => Number(readFileSync(counter, 'utf8').trim() || '0');
    await sleep(150);
    assert.ok(value() > 0);
    assert.equal(m.isFrozen(), false);
    await m.freeze();
    assert.equal(m.isFrozen(), true);
    const frozenAt = value();
    await sleep(300);
    assert.equal(value(), frozenAt, 'the counter stays while frozen');
    await m.thaw();
    assert.equal(m.isFrozen(), false);
    // (polled: on a loaded machine the thawed shell may wait for a CPU; and a read can fall
    // between the shell's truncate and write of the file, which shows as 0)
    assert.ok(await waitFor(() => value() > frozenAt, 10_000), 'the counter moves again after thaw');
    child.kill('SIGKILL');
  });

  it('stats returns plausible numbers', async () => {
    const m = manager('stats');
    m.set(parseResources({ memory: { limit: 64 << 20 }, pids: { limit: 20 } }, 'linux.resources'));
    const { child } = startIn(m, 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 100');
    await sleep(400);
    const s = m.stats();
    assert.ok(s.cpu.usage.total > 0, 'cpu time used');
    assert.ok(s.cpu.usage.user + s.cpu.usage.kernel > 0, 'user+kernel time');
    assert.ok(s.memory.usage.usage > 0, 'memory used');
    assert.equal(s.memory.usage.limit, 64 << 20);
    assert.ok(Object.keys(s.memory.raw).length > 5, 'memory.stat read');
    assert.ok(s.pids.current >= 1 && s.pids.current <= 3, `pids.current ${s.pids.current}`);
    assert.equal(s.pids.limit, 20);
    assert.ok(s.cpuset.cpus.length > 0, 'cpuset cpus');
    for (const size of hostHugepageSizes()) assert.ok(s.hugetlb[size] !== undefined, `hugetlb ${size}`);
    assert.doesNotThrow(() => JSON.stringify(s));
    child.kill('SIGKILL');
  });

  it('destroy removes every directory, also from a second manager with the same options', async () => {
    const m1 = manager('destroy');
    m1.create();
    const dirs = Object.values(m1.paths);
    for (const d of dirs) assert.ok(existsSync(d));
    const m2 = manager('destroy');
    assert.deepEqual(m2.paths, m1.paths);
    await m2.destroy();
    for (const d of dirs) assert.ok(!existsSync(d), `${d} removed`);
    await m2.destroy(); // missing directories are fine
  });

  it('destroy waits for a process that is still dying', async () => {
    const m = manager('dying');
    const { child, done } = startIn(m, 'exec sleep 100');
    await sleep(50);
    assert.equal(m.pids().length, 1);
    child.kill('SIGKILL');
    await m.destroy();
    for (const d of Object.values(m.paths)) assert.ok(!existsSync(d), `${d} removed`);
    await done;
  });

  it('destroy removes child cgroups the container made', async () => {
    const m = manager('nested');
    m.create();
    for (const d of new Set(Object.values(m.paths))) spawnSync('mkdir', [join(d, 'inner')]);
    await m.destroy();
    for (const d of Object.values(m.paths)) assert.ok(!existsSync(d), `${d} removed`);
  });

  it('a fresh manager destroys the cgroups of a creator that was killed with -9', async () => {
    const path = `/${TAG}-killed`;
    const script = [
      `import { createCgroupManager } from ${JSON.stringify(INDEX_URL)};`,
      `const m = createCgroupManager({ id: 'killed', cgroupsPath: ${JSON.stringify(path)}, systemd: false, rootless: false, warn: () => {} });`,
      `m.set({ pids: { limit: 10 } });`,
      `m.apply(process.pid);`,
      `console.log('ready');`,
      `setInterval(() => {}, 1000);`,
    ].join('\n');
    const creator = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(creator);
    await new Promise<void>((resolve, reject) => {
      creator.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      creator.on('exit', () => reject(new Error('the creator exited early')));
    });
    const m = manager('killed', { cgroupsPath: path });
    assert.ok(creator.pid !== undefined);
    assert.deepEqual(m.pids(), [creator.pid]);
    creator.kill('SIGKILL');
    await m.destroy(); // races the dying process: destroy retries while the kernel says EBUSY
    for (const d of Object.values(m.paths)) assert.ok(!existsSync(d), `${d} removed`);
  });

  it('rootless without write access: one warning, and every operation is a no-op', () => {
    const path = `/${TAG}-rootless`;
    const script = [
      `import { createCgroupManager, parseResources } from ${JSON.stringify(INDEX_URL)};`,
      `const warns = [];`,
      `const opts = { id: 'rl', cgroupsPath: ${JSON.stringify(path)}, systemd: false, warn: (w) => warns.push(w) };`,
      `const m = createCgroupManager({ ...opts, rootless: true });`,
      `m.create();`,
      `m.set(parseResources({ memory: { limit: 16777216 }, pids: { limit: 5 }, devices: [{ allow: false }] }, 'linux.resources'));`,
      `m.apply(process.pid);`,
      `await m.freeze(); await m.thaw();`,
      `const out = { warns, pids: m.pids(), frozen: m.isFrozen(), ooms: m.oomKillCount(), current: m.stats().pids.current };`,
      `await m.destroy();`,
      `let rootful = 'no error';`,
      `try { createCgroupManager({ ...opts, rootless: false }).create(); } catch (err) { rootful = err.constructor.name + ': ' + err.message; }`,
      `console.log(JSON.stringify({ ...out, rootful }));`,
    ].join('\n');
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', cwd: '/' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { warns: string[]; pids: number[]; frozen: boolean; ooms: number; current: number; rootful: string };
    assert.equal(out.warns.length, 1, out.warns.join('; '));
    assert.match(out.warns[0] ?? '', /not writable.*rootless/);
    assert.deepEqual([out.pids, out.frozen, out.ooms, out.current], [[], false, 0, 0]);
    assert.match(out.rootful, /^CgroupError: cannot create cgroup .*EACCES/);
    const probe = manager('rootless', { cgroupsPath: path });
    for (const d of Object.values(probe.paths)) assert.ok(!existsSync(d), `${d} was not created`);
  });

  it('a second set of device rules replaces the first (v1 devices.list)', { skip: mounts?.v1.has('devices') ? false : 'no v1 devices hierarchy' }, () => {
    const m = manager('devupdate');
    const list = () => read(dirOf(m, 'devices'), 'devices.list');
    const set = (devices: unknown[]) => m.set(parseResources({ devices }, 'linux.resources'));
    set([{ allow: false }, { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 5, access: 'r' }]);
    assert.equal(list(), 'c 1:3 rwm\nc 1:5 r');
    set([{ allow: false }, { allow: true, type: 'c', major: 1, minor: 5, access: 'rw' }, { allow: true, type: 'b', major: 8, access: 'm' }]);
    assert.equal(list(), 'c 1:5 rw\nb 8:* m');
    set([{ allow: true }, { allow: false, type: 'c', major: 1, minor: 3, access: 'rwm' }]);
    assert.equal(list(), 'a *:* rwm');
  });

  it('parseResources rejects invalid values with the exact path', () => {
    const cases: [unknown, string][] = [
      [{ memory: { limit: -5 } }, 'linux.resources.memory.limit'],
      [{ memory: { limit: 1.5 } }, 'linux.resources.memory.limit'],
      [{ cpu: { cpus: '0-' } }, 'linux.resources.cpu.cpus'],
      [{ cpu: { mems: '3-1' } }, 'linux.resources.cpu.mems'],
      [{ devices: [{ allow: false }, { allow: true, type: 'x', access: 'r' }] }, 'linux.resources.devices[1].type'],
      [{ devices: [{ allow: true, access: 'rwx' }] }, 'linux.resources.devices[0].access'],
      [{ pids: { limit: 'many' } }, 'linux.resources.pids.limit'],
      [{ memory: { limit: 100, swap: 50 } }, 'linux.resources.memory.swap'],
      [{ unified: { 'memory/../x': '1' } }, 'linux.resources.unified["memory/../x"]'],
    ];
    for (const [input, path] of cases) {
      assert.throws(
        () => parseResources(input, 'linux.resources'),
        (err: unknown) => err instanceof ConfigError && err.path === path,
        `${JSON.stringify(input)} -> ${path}`,
      );
    }
  });

  it('set checks host-dependent values first and writes nothing when one is wrong', () => {
    const m = manager('invalid');
    m.create();
    const mem = dirOf(m, 'memory');
    const file = isV1(m, 'memory') ? 'memory.limit_in_bytes' : 'memory.max';
    const beforeLimit = read(mem, file);
    const bad = parseResources({ memory: { limit: 32 << 20 }, cpu: { cpus: '4000' } }, 'linux.resources');
    assert.throws(() => m.set(bad), (err: unknown) => err instanceof ConfigError && err.path === 'linux.resources.cpu.cpus');
    assert.equal(read(mem, file), beforeLimit, 'the memory limit was not written');
    const badSize = parseResources({ memory: { limit: 32 << 20 }, hugepageLimits: [{ pageSize: '3MB', limit: 1 }] }, 'linux.resources');
    assert.throws(() => m.set(badSize), (err: unknown) => err instanceof ConfigError && err.path === 'linux.resources.hugepageLimits[0].pageSize');
    const hole = parseResources(
      { memory: { limit: 32 << 20 }, devices: [{ allow: false }, { allow: true, type: 'c', major: 1, access: 'rwm' }, { allow: false, type: 'c', major: 1, minor: 3, access: 'r' }] },
      'linux.resources',
    );
    assert.throws(() => m.set(hole), (err: unknown) => err instanceof ConfigError && err.path === 'linux.resources.devices[2]');
    assert.equal(read(mem, file), beforeLimit, 'the memory limit was not written');
    if (m.layout === 'v1') {
      assert.throws(() => m.set(parseResources({ unified: { 'memory.max': '1' } }, 'r')), ConfigError);
    } else if (m.layout === 'hybrid' && !isV1(m, 'memory')) {
      assert.fail('memory is v1 on this hybrid host');
    } else if (m.layout === 'hybrid') {
      assert.throws(
        () => m.set(parseResources({ unified: { 'memory.max': '1' } }, 'r')),
        (err: unknown) => err instanceof ConfigError && err.path === 'linux.resources.unified["memory.max"]',
      );
    }
  });

  it('warns once about ignored kernel memory settings', () => {
    const m = manager('warn');
    const n = warnings.length;
    m.set(parseResources({ memory: { kernel: 1 << 20, kernelTCP: 1 << 20 } }, 'linux.resources'));
    m.set(parseResources({ memory: { kernel: 1 << 20 } }, 'linux.resources'));
    const mine = warnings.slice(n).filter((w) => /kernel/.test(w));
    assert.equal(mine.length, 1, mine.join('; '));
  });

  it('maps the systemd slice:prefix:name form onto cgroupfs', async () => {
    const slice = `moattest${process.pid}.slice`;
    const m = manager('unit', { systemd: true, cgroupsPath: `${slice}:moat:c1` });
    m.create();
    for (const [controller, dir] of Object.entries(m.paths)) {
      assert.ok(dir.endsWith(`/${slice}/moat-c1.scope`), dir);
      assert.ok(existsSync(dir), `${controller}: ${dir}`);
      extraDirs.push(posix.dirname(dir));
    }
    await m.destroy();
    for (const dir of Object.values(m.paths)) assert.ok(!existsSync(dir));
  });

  it('a BPF device program on a cgroup2 directory denies /dev/null and allows /dev/zero', { skip: mounts?.v2 === undefined ? 'no cgroup2 mount' : false }, async () => {
    assert.ok(mounts?.v2 !== undefined);
    const dir = join(mounts.v2.mountpoint, `${TAG}-bpf`);
    const m = new V2Manager({ '': dir }, { layout: 'v2', v1: new Map(), v2: mounts.v2 }, { rootless: false, warn: (w) => warnings.push(w) });
    managers.push(m);
    const script = 'if echo > /dev/null; then echo null-ok; else echo null-denied; fi; head -c 3 /dev/zero | wc -c';
    m.set(
      parseResources(
        {
          devices: [
            { allow: false, access: 'rwm' },
            { allow: true, type: 'c', major: 1, minor: 5, access: 'rwm' },
          ],
        },
        'linux.resources',
      ),
    );
    const denied = await startIn(m, script).done;
    assert.match(denied.stdout, /null-denied/);
    assert.match(denied.stderr, /Operation not permitted/);
    assert.equal(denied.stdout.trim().split('\n').pop()?.trim(), '3', 'reading /dev/zero works');

    // a second set replaces the program instead of stacking another one
    m.set(parseResources({ devices: [{ allow: false }, { allow: true, type: 'c', major: 1, access: 'rw' }] }, 'linux.resources'));
    const fd = (await import('node:fs')).openSync(dir, 'r');
    try {
      assert.equal(queryPrograms(fd, BPF_CGROUP_DEVICE).length, 1);
    } finally {
      (await import('node:fs')).closeSync(fd);
    }
    const allowed = await startIn(m, script).done;
    assert.match(allowed.stdout, /null-ok/);

    // v2 freezer on the same directory
    const { child } = startIn(m, 'exec sleep 100');
    await m.freeze();
    assert.equal(m.isFrozen(), true);
    assert.equal(read(dir, 'cgroup.events').includes('frozen 1'), true);
    await m.thaw();
    assert.equal(m.isFrozen(), false);
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    await m.destroy();
    assert.ok(!existsSync(dir));
  });
});
