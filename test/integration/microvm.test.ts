/**
 * The `microvm` isolation: busybox bundles (and the embedded default) under their own guest
 * kernel in QEMU (KVM where it works, TCG otherwise, as on this machine). Moat only.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { assertBindOwners } from '../helpers/bind-owners.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { REPO, runtimeArgv, Sandbox, waitFor } from '../helpers/runtime.js';
import { ptySkipReason, runInPty } from '../helpers/harness.js';

const skip = microvmSkipReason();
if (skip) console.log(`# skipping microvm tests: ${skip}`);

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const VM_TIMEOUT = 180_000;

describe('microvm: containers under their own guest kernel', { skip, timeout: 15 * 60_000 }, () => {
  const sb = new Sandbox();
  let guestRelease = '';
  before(async () => {
    // the guest is built once into the state root's cache (moat guest build)
    const r = await sb.rt(['guest', 'build'], { timeoutMs: VM_TIMEOUT });
    assert.equal(r.status, 0, r.stderr);
    guestRelease = /^release: (.+)$/m.exec(r.stdout)?.[1] ?? '';
    assert.ok(guestRelease, r.stdout);
  });
  after(() => sb.cleanup());
  const run = async (args: string[], opts: { input?: string; mutate?: (s: Record<string, any>) => void } = {}) => {
    // `any`: tests set arbitrary config fields
    const b = await sb.bundle(args, opts.mutate);
    const id = sb.id('vm');
    const r = await sb.rt(['run', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT, ...(opts.input !== undefined ? { input: opts.input } : {}) });
    return { ...r, id, bundle: b };
  };

  it('runs a busybox bundle: its output and exit code come back', async () => {
    const r = await run(['sh', '-c', 'echo hello from the guest; echo to-stderr >&2; exit 7']);
    assert.equal(r.stdout, 'hello from the guest\n', r.stderr);
    assert.match(r.stderr, /to-stderr/);
    assert.equal(r.status, 7);
  });

  it('pipes stdin in', async () => {
    const r = await run(['sh', '-c', 'read a; read b; echo "got $a and $b"'], { input: 'one\ntwo\n' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'got one and two\n');
  });

  it('shows the guest kernel in uname -r, not the host\'s', async () => {
    const r = await run(['uname', '-r']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), guestRelease);
    assert.notEqual(r.stdout.trim(), execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());
  });

  // the container process is pid 1 of its pid namespace, as under runc: it takes the signals it
  // handles (a TERM without a handler would be ignored, as for runc's pid 1)
  it('kill TERM reaches a container process that handles it: the container ends with its status', async () => {
    const b = await sb.bundle(['sh', '-c', 'trap "echo got TERM; exit 7" TERM; echo pid $$; while :; do sleep 0.2; done']);
    const id = sb.id('vm-kill');
    const running = sb.rt(['run', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    // poll gently: every state call is a Node process competing with the emulated guest for CPU
    let up = false;
    for (const deadline = Date.now() + VM_TIMEOUT; !up && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 500));
      up = (await sb.rt(['state', id])).stdout.includes('"running"');
    }
    assert.ok(up, 'the VM never ran');
    const k = await sb.rt(['kill', id, 'TERM']);
    assert.equal(k.status, 0, k.stderr);
    const ended = await Promise.race([running, new Promise<undefined>((res) => setTimeout(() => res(undefined), 60_000))]);
    if (ended === undefined) {
      const read = (f: string) => (existsSync(join(sb.root, id, f)) ? readFileSync(join(sb.root, id, f), 'utf8') : `(no ${f})`);
      assert.fail(`the VM did not end within 60 s of the kill\nmonitor.log:\n${read('monitor.log')}\nconsole.log:\n${read('console.log').slice(-2000)}\nstate: ${(await sb.rt(['state', id])).stdout}`);
    }
    const r = ended;
    assert.equal(r.status, 7, r.stderr);
    assert.equal(r.stdout, 'pid 1\ngot TERM\n');
  });

  it('keeps writes to / until delete and never touches the base image', async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('vm-disk');
    await sb.ok(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    await sb.ok(['start', id]);
    const images = join(sb.root, 'images');
    const base = readdirSync(images).filter((f) => f.endsWith('.ext4')).map((f) => join(images, f));
    assert.equal(base.length > 0, true, 'no base image in the state root');
    const before = base.map(sha256);
    try {
      const w = await sb.rt(['exec', id, 'sh', '-c', 'echo persisted > /written-in-vm && sync && echo ok'], { timeoutMs: 60_000 });
      assert.equal(w.stdout, 'ok\n', w.stderr);
      const r = await sb.rt(['exec', id, 'cat', '/written-in-vm'], { timeoutMs: 60_000 });
      assert.equal(r.stdout, 'persisted\n', r.stderr);
      // host pids, as a shim and `docker top` look them up: the container's (its monitor) and
      // the VMM's, never a guest pid (host pid 1 is the host's init)
      // the guest's own view: the container process is pid 1 of a pid namespace the exec joined,
      // which holds the container's processes only (no agent, no kernel threads)
      const inside = await sb.rt(['exec', id, 'sh', '-c', 'ps -o pid,args'], { timeoutMs: 60_000 });
      assert.equal(inside.status, 0, inside.stderr);
      const rows = inside.stdout.trim().split('\n').slice(1).map((l) => l.trim());
      assert.equal(rows[0], '1 sleep 1000', inside.stdout);
      assert.ok(rows.every((l) => /^\d+ (sleep 1000|sh -c ps -o pid,args|\{ps\} sh -c ps -o pid,args|ps -o pid,args)$/.test(l)), `the exec sees processes beyond the container's: ${inside.stdout}`);
      const ps = JSON.parse((await sb.ok(['ps', '--format', 'json', id])).stdout) as number[];
      const statePid = (JSON.parse((await sb.ok(['state', id])).stdout) as { pid: number }).pid;
      assert.ok(ps.includes(statePid), `ps ${JSON.stringify(ps)} lacks the container's pid ${statePid}`);
      assert.ok(!ps.includes(1), `ps lists a guest pid: ${JSON.stringify(ps)}`);
      assert.ok(ps.some((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0]?.endsWith('qemu-system-x86_64')), `ps lacks the VMM: ${JSON.stringify(ps)}`);
      const table = await sb.ok(['ps', id]);
      assert.match(table.stdout, /qemu-system-x86_64/);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    assert.deepEqual(base.map(sha256), before, 'the shared base image changed');
    assert.equal(existsSync(join(b, 'rootfs/written-in-vm')), false, 'the bundle rootfs was written');
    assert.equal(existsSync(join(sb.root, id)), false, 'delete left the state directory');
  });

  it('as a runc shim or conmon sees it: the pid-file pids end with the statuses of the container and of its execs, and take their signals', async () => {
    // a subreaper, as those are, waits on the pids create and exec -d write (not its children)
    const b = await sb.bundle(['sh', '-c', 'sleep 10; exit 5']);
    const id = sb.id('vm-pidfile');
    const [cmd, pre] = runtimeArgv();
    const py = `
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
rt = sys.argv[1:-2]; bundle, cid = sys.argv[-2:]
def moat(*a):
    subprocess.run([*rt, *a], check=True, stdout=subprocess.DEVNULL)
def pidfile(name):
    return int(open(os.path.join(bundle, name)).read())
moat('create', '--isolation', 'microvm', '--pid-file', os.path.join(bundle, 'init.pid'), '-b', bundle, cid)
moat('start', cid)
execs = {'exit4': 'exit 4', 'term': 'trap "exit 9" TERM; sleep 60 & wait', 'kill': 'exec sleep 61'}
pids = {}
for name, script in execs.items():
    moat('exec', '-d', '--pid-file', os.path.join(bundle, name + '.pid'), cid, 'sh', '-c', script)
    pids[name] = pidfile(name + '.pid')
time.sleep(1)
os.kill(pids['term'], 15)
os.kill(pids['kill'], 9)
time.sleep(1)
ps = subprocess.run([*rt, 'exec', cid, 'ps', '-o', 'args'], capture_output=True, text=True, check=True).stdout
print('guest-sleeps', ps.count('sleep 61'), flush=True)
pids['init'] = pidfile('init.pid')
left = {pid: name for name, pid in pids.items()}
while left:
    pid, st = os.waitpid(-1, 0)
    if pid in left:
        print(left.pop(pid), os.waitstatus_to_exitcode(st), flush=True)
`;
    try {
      const r = await new Promise<{ status: number | null; out: string; err: string }>((res) => {
        const child = spawn('python3', ['-c', py, cmd, ...pre, '--root', sb.root, b, id], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), VM_TIMEOUT);
        child.on('close', (status) => {
          clearTimeout(timer);
          res({ status, out, err });
        });
      });
      assert.equal(r.status, 0, `${r.out}\n${r.err}`);
      const got = Object.fromEntries(r.out.trim().split('\n').map((l) => l.split(' ')));
      // exit codes as a shim reports them: the exec's own, 9 from its TERM trap, -9 (SIGKILL) for
      // the relay killed, the container process's 5; no guest process outlives its relay
      assert.deepEqual(got, { exit4: '4', term: '9', kill: '-9', 'guest-sleeps': '0', init: '5' }, r.err);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  it("shares the spec's bind mounts: a read-only and a writable directory, a file; a missing source fails create", async () => {
    const host = mkdtempSync(join(tmpdir(), 'moat-vm-binds-'));
    try {
      const ro = join(host, 'ro');
      const rw = join(host, 'rw');
      mkdirSync(ro);
      mkdirSync(rw);
      writeFileSync(join(ro, 'hello'), 'from the host\n');
      writeFileSync(join(host, 'one-file'), 'one file\n');
      const script = [
        'cat /data/ro/hello',
        'touch /data/ro/new 2>/dev/null && echo ro-written || echo ro-refused',
        'echo from the guest > /data/rw/out',
        'cat /etc/one-file',
        'echo more >> /etc/one-file 2>/dev/null && echo file-written || echo file-refused',
      ].join('; ');
      const mounts = [
        { destination: '/data/ro', type: 'bind', source: ro, options: ['rbind', 'ro'] },
        { destination: '/data/rw', type: 'bind', source: rw, options: ['rbind', 'rw'] },
        { destination: '/etc/one-file', type: 'bind', source: join(host, 'one-file'), options: ['bind', 'ro'] },
      ];
      const r = await run(['sh', '-c', script], { mutate: (spec) => spec['mounts'].push(...mounts) });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'from the host\nro-refused\none file\nfile-refused\n');
      assert.equal(readFileSync(join(rw, 'out'), 'utf8'), 'from the guest\n', 'the guest\'s write did not reach the host directory');
      assert.deepEqual(readdirSync(ro), ['hello']);
      assert.equal(readFileSync(join(host, 'one-file'), 'utf8'), 'one file\n');
      // a source that does not exist: create fails naming the mount, and leaves nothing
      const b = await sb.bundle(['true'], (spec) => spec['mounts'].push({ destination: '/x', type: 'bind', source: join(host, 'missing'), options: ['rbind'] }));
      const id = sb.id('vm-nosrc');
      const bad = await sb.rt(['run', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /mounts\[\d+\]\.source.*missing.*ENOENT/);
      assert.equal(existsSync(join(sb.root, id)), false, 'a failed create left its state directory');
    } finally {
      rmSync(host, { recursive: true, force: true });
    }
  });

  it('a writable bind of a VM of an image: the owners and modes the guest sets are the host files\' (9p passthrough), and a user writes where it owns', async () => {
    await assertBindOwners(sb, ['--isolation', 'microvm'], VM_TIMEOUT);
  });

  it("makes the spec's tmpfs and mqueue mounts in the guest, and honours root.readonly", async () => {
    const script = [
      'touch /x 2>/dev/null && echo root-written || echo root-refused',
      // no tmpfs of the guest's own at /tmp: the spec has none, so /tmp is the read-only root's
      'touch /tmp/z 2>/dev/null && echo tmp-written || echo tmp-refused',
      'touch /run/y && echo run-written',
      'grep " /run " /proc/mounts | cut -d" " -f3,4',
      'grep " /dev/mqueue " /proc/mounts | cut -d" " -f3',
    ].join('; ');
    const r = await run(['sh', '-c', script], {
      mutate: (spec) => {
        spec['root'].readonly = true;
        // (the bundle's spec, runc's default, has the mqueue at /dev/mqueue already)
        spec['mounts'].push({ destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=755', 'size=1m'] });
      },
    });
    assert.equal(r.status, 0, r.stderr);
    const [root, tmp, run1, runMount, mq] = r.stdout.trim().split('\n');
    assert.equal(root, 'root-refused', 'root.readonly: the guest wrote its root');
    assert.equal(tmp, 'tmp-refused', 'a read-only root with a writable /tmp the spec did not ask for');
    assert.equal(run1, 'run-written');
    assert.match(runMount ?? '', /^tmpfs rw,nosuid,nodev,.*size=1024k,mode=755(,|$)/);
    assert.equal(mq, 'mqueue');
  });

  it('runs two microVMs in parallel, each with its own output', async () => {
    const [a, c] = await Promise.all([run(['sh', '-c', 'echo vm-a; sleep 1; echo done-a']), run(['sh', '-c', 'echo vm-b; sleep 1; echo done-b'])]);
    assert.equal(a.stdout, 'vm-a\ndone-a\n', a.stderr);
    assert.equal(c.stdout, 'vm-b\ndone-b\n', c.stderr);
    assert.equal(a.status, 0);
    assert.equal(c.status, 0);
  });

  it('runs the embedded default with the host root shared read-only', async () => {
    // a working directory the guest lacks is made, as runc makes a missing process.cwd
    const r = await sb.rt(['run', '--isolation', 'microvm', '--cwd', '/tmp/moat-vm-cwd/sub', '--', 'sh', '-c', 'uname -r; pwd; test -x /usr/bin/busybox && echo host-root; echo x > /etc/moat-vm-write && cat /etc/moat-vm-write'], { timeoutMs: VM_TIMEOUT });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${guestRelease}\n/tmp/moat-vm-cwd/sub\nhost-root\nx\n`);
    assert.equal(existsSync('/etc/moat-vm-write'), false, 'a write in the guest reached the host');
  });

  it('with --allow-egress the VM gets one network device: an allowed host endpoint answers, others are unreachable', async () => {
    // two host listeners on loopback; the guest reaches the host's 127.0.0.1 as 10.0.2.2 (slirp)
    const seen: Record<string, string[]> = { allowed: [], denied: [] };
    const listen = (name: string) =>
      new Promise<Server>((res) => {
        const srv = createServer((c) => {
          let got = '';
          c.on('data', (d: Buffer) => {
            got += d.toString();
            if (got.includes('\n')) c.end('pong\n');
          });
          c.on('close', () => seen[name]!.push(got));
        });
        srv.listen(0, '127.0.0.1', () => res(srv));
      });
    const [allowed, denied] = await Promise.all([listen('allowed'), listen('denied')]);
    const port = (s: Server) => (s.address() as AddressInfo).port;
    try {
      const b = await sb.bundle(['sh', '-c', `cat /sys/class/net/eth0/address >/dev/null && echo has-eth0; echo ping | nc 10.0.2.2 ${port(allowed)}; nc -w 5 10.0.2.2 ${port(denied)} </dev/null; echo denied-rc=$?`]);
      const id = sb.id('vm');
      const r = await sb.rt(['run', '--isolation', 'microvm', '--allow-egress', `127.0.0.1:${port(allowed)}`, '-b', b, id], { timeoutMs: VM_TIMEOUT });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^has-eth0\npong\ndenied-rc=1\n$/, r.stdout);
      assert.deepEqual(seen.allowed, ['ping\n']);
      assert.deepEqual(seen.denied, [], 'a connection reached the endpoint no rule allows');
    } finally {
      allowed.close();
      denied.close();
    }
  });

  it('process.terminal: the process runs on a terminal in the guest; keys and the exit code pass through', { skip: ptySkipReason() }, async () => {
    const b = await sb.bundle(['sh', '-c', 'tty; stty size; read x; echo "got:$x"; exit 3'], (s) => {
      s.process.terminal = true;
    });
    const [cmd, pre] = runtimeArgv();
    // `script` gives the runtime a terminal of 30x100; `moat run` relays it through the console socket
    const r = await runInPty(sb.tmp, ['sh', '-c', `stty rows 30 cols 100; exec "$@"`, 'sh', cmd, ...pre, '--root', sb.root, 'run', '--isolation', 'microvm', '-b', b, sb.id('vm')], {
      input: 'hello\n',
      timeoutMs: VM_TIMEOUT,
    });
    assert.equal(r.status, 3, r.stdout + r.stderr);
    // (the outer terminal of `script` turns each \n it is sent into \r\n once more)
    assert.match(r.stdout, /\/dev\/pts\/\d+\r+\n30 100\r+\n/, 'the guest terminal and the host size');
    assert.match(r.stdout, /got:hello\r+\n/);
    // "hello" three times: echoed by script's terminal before moat's relay went raw, echoed by
    // the guest's terminal, and read by the process; a fourth would be an echo by the host end
    assert.equal(r.stdout.match(/hello/g)?.length, 3, JSON.stringify(r.stdout));
  });

  it('exec -t: a shell on a new terminal in the running guest; its exit code passes through', { skip: ptySkipReason() }, async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('vm');
    const c = await sb.rt(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    assert.equal(c.status, 0, c.stderr);
    try {
      assert.equal((await sb.rt(['start', id])).status, 0);
      const [cmd, pre] = runtimeArgv();
      const r = await runInPty(sb.tmp, [cmd, ...pre, '--root', sb.root, 'exec', '-t', id, 'sh'], { input: 'tty; echo $((6*7)); exit 7\n', timeoutMs: 60_000 });
      assert.equal(r.status, 7, r.stdout + r.stderr);
      assert.match(r.stdout, /\/dev\/pts\/\d+\r+\n/);
      assert.match(r.stdout, /^42\r*$/m);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  it('boots under a small memory limit (the guest kernel gets its own headroom)', async () => {
    const r = await run(['sh', '-c', 'echo small'], { mutate: (s) => ((s.linux.resources ??= {}).memory = { limit: 48 * 1024 * 1024 }) });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'small\n');
  });

  it('without egress rules the VM has no network device, and its loopback is up', async () => {
    const r = await run(['sh', '-c', 'ls /sys/class/net; cat /sys/class/net/lo/flags']);
    assert.equal(r.status, 0, r.stderr);
    const [names, flags] = r.stdout.trim().split('\n');
    assert.equal(names, 'lo');
    assert.equal(Number(flags) & 1, 1, `lo flags ${flags}: not IFF_UP`);
  });

  it('a bad --allow-egress rule fails create with the rule named, and leaves nothing', async () => {
    const b = await sb.bundle(['true']);
    const id = sb.id('vm');
    const r = await sb.rt(['create', '--isolation', 'microvm', '--allow-egress', '300.1.2.3:80', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--allow-egress "300\.1\.2\.3:80"/);
    assert.equal(existsSync(join(sb.root, id)), false, 'create left a state directory');
  });

  // runc passes --preserve-fds fds to the process; a host fd cannot cross into a guest, so a VM
  // refuses them rather than starting without them
  it('refuses --preserve-fds and socket activation for create and exec, saying which, and leaves nothing', async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('vm-fds');
    const r = await sb.rt(['create', '--isolation', 'microvm', '--preserve-fds', '1', '-b', b, id], { timeoutMs: VM_TIMEOUT, extraFds: ['ignore'] });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /"vm-fds[^"]*": --preserve-fds 1: the microvm isolation cannot pass host fds/);
    assert.equal(existsSync(join(sb.root, id)), false, 'create left a state directory');
    // systemd's sockets are named as such, not as --preserve-fds the user never gave
    const s = await sb.rt(['create', '--isolation', 'microvm', '--preserve-fds', '1', '-b', b, id],
      { timeoutMs: VM_TIMEOUT, extraFds: ['ignore', 'ignore', 'ignore'], env: { LISTEN_FDS: '2' }, listenPid: true });
    assert.notEqual(s.status, 0);
    assert.match(s.stderr, /: LISTEN_FDS 2 \(systemd socket activation\) and --preserve-fds 1: the microvm isolation cannot pass host fds/);
    assert.equal(existsSync(join(sb.root, id)), false, 'create left a state directory');
    await sb.ok(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    try {
      await sb.ok(['start', id]);
      const e = await sb.rt(['exec', '--preserve-fds', '1', id, 'true'], { extraFds: ['ignore'] });
      assert.notEqual(e.status, 0);
      assert.match(e.stderr, /--preserve-fds 1: the microvm isolation cannot pass host fds/);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  it('fails start at once, with the reason, when the program cannot run', async () => {
    const t0 = Date.now();
    const r = await run(['/no/such/program']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /exec \/no\/such\/program: No such file or directory/);
    assert.ok(Date.now() - t0 < 60_000, 'start waited for its timeout instead of the agent\'s answer');
  });

  it('rejects malformed and oversized agent messages without crashing the host side', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'moat-vm-monitor-'));
    try {
      for (const [label, bytes] of [
        ['oversized length', Buffer.from([0xff, 0xff, 0xff, 0x7f, 0x4f, 0, 0, 0, 0])],
        ['unknown type', Buffer.from([5, 0, 0, 0, 0x5a, 0, 0, 0, 0])],
        ['host-only type from the guest', Buffer.from([5, 0, 0, 0, 0x52, 0, 0, 0, 0])],
        ['short EXIT payload', Buffer.from([6, 0, 0, 0, 0x57, 0, 0, 0, 0, 1])],
      ] as const) {
        const ctl = join(dir, `${label.replaceAll(' ', '-')}.ctl`);
        const mon = join(dir, `${label.replaceAll(' ', '-')}.mon`);
        const cfg = { id: 'fake', controlSocket: ctl, monitorSocket: mon, log: join(dir, 'monitor.log'), process: { args: ['true'], env: [], cwd: '/', uid: 0, gid: 0, groups: [], rlimits: [] } };
        const child = spawn(process.execPath, [join(REPO, 'bin/moat.cjs'), '--vm-monitor', JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        assert.ok(await waitFor(() => existsSync(ctl), 10_000), 'the monitor never listened');
        // the test double plays a guest that sends a bad frame
        await new Promise<void>((res, rej) => {
          const sock = connect(ctl);
          sock.on('connect', () => sock.write(bytes));
          sock.on('close', () => res());
          sock.on('error', rej);
        });
        const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
        assert.equal(code, 1, `${label}: the monitor should end the VM with status 1`);
        assert.doesNotMatch(err, /TypeError|RangeError|at .*\.js:\d+/, `${label}: the monitor crashed:\n${err}`);
        assert.match(readFileSync(join(dir, 'monitor.log'), 'utf8'), /rejected a guest message/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
