/**
 * Security properties of `--isolation sentry` (Moat only: runc has no sentry): what the workload
 * must not see (host processes, host /proc data, paths outside its root, runtime fds), must not
 * change (the bundle rootfs, processes outside the sandbox) and must not reach (the host network
 * beyond its egress rules, refused system calls), including through a path-resolution race.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync, closeSync, constants, copyFileSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { connect, createServer } from 'node:net';
import type { Server } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { SENTRY_ALLOWLIST } from '../../src/backends/sentry/confine.js';
import { standbyFiles } from '../../src/backends/sentry/standby.js';
import type { TestContext } from 'node:test';
import { REPO, RUNTIME, Sandbox, processAlive, skipReason, waitFor } from '../helpers/runtime.js';
import type { Result } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'the sentry is Moat-only (runc has no --isolation sentry)' : skipReason();
if (skip) console.log(`# skipping sentry security tests: ${skip}`);

const MiB = 1024 * 1024;
const EPERM = 1;
const ENOSYS = 38;
const ESRCH = 3;

/** A unique, unguessable token (what a leak would print). */
const token = (what: string): string => `MOAT-${what}-${randomBytes(8).toString('hex')}`;

/** One line of docs/syscalls.json. */
interface DocRow {
  name: string;
  nr: number;
  class: 'fast' | 'served' | 'refused';
  errno?: number;
}

/**
 * Splits the output of a script whose sections start with `s NAME` (the shell function
 * `s() { printf '\n<<%s>>\n' "$1"; }`) into NAME -> text. The script text holds only the
 * format, never a literal `<<NAME>>`, so a section that echoes the script cannot fake one.
 */
function sections(out: string): Map<string, string> {
  const parts = out.split(/\n<<(\w+)>>\n/);
  const map = new Map<string, string>();
  for (let i = 1; i + 1 < parts.length; i += 2) map.set(parts[i]!, parts[i + 1]!);
  return map;
}
const SECTION_FN = `s() { printf '\\n<<%s>>\\n' "$1"; }`;

/** Everything about a tree that a write could change: type, mode, owner, size, mtime, content, link target. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const p = join(root, rel);
    const st = lstatSync(p);
    let what = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs}`;
    if (st.isSymbolicLink()) what += ` -> ${readlinkSync(p)}`;
    else if (st.isFile()) what += ` ${st.size} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    out.set(rel || '/', what);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(rel ? `${rel}/${e}` : e);
  };
  walk('');
  return out;
}

/** Differences between two snapshots, one line each. */
function diff(before: Map<string, string>, afterSnap: Map<string, string>): string[] {
  const lines: string[] = [];
  for (const [k, v] of before) {
    const w = afterSnap.get(k);
    if (w === undefined) lines.push(`removed ${k}`);
    else if (w !== v) lines.push(`changed ${k}: ${v} => ${w}`);
  }
  for (const k of afterSnap.keys()) if (!before.has(k)) lines.push(`added ${k}`);
  return lines;
}

/** The output of a run, for assertion messages. */
const show = (r: Result): string => `exit ${r.status ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

/** A TCP server on the host's 127.0.0.1 that answers every connection with `reply`. */
async function tokenServer(reply: string): Promise<{ server: Server; port: number; connections: () => number }> {
  let n = 0;
  const server = createServer((c) => {
    n++;
    c.on('error', () => {});
    c.end(`${reply}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('the token server has no port');
  return { server, port: addr.port, connections: () => n };
}

describe('sentry isolation: security properties', { skip }, () => {
  const sb = new Sandbox();
  const hostChildren: ChildProcess[] = [];
  const servers: Server[] = [];
  after(async () => {
    for (const c of hostChildren) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const s of servers) s.close();
    await sb.cleanup();
  });

  /** Runs a bundle under the sentry and waits for it. */
  const runBundle = (bundle: string, extra: string[] = [], timeoutMs?: number): Promise<Result> =>
    sb.rt(['run', '--isolation', 'sentry', ...extra, '-b', bundle, sb.id('sentry')], timeoutMs ? { timeoutMs } : {});

  /** Runs a host command in the embedded default under the sentry. */
  const runEmbedded = (flags: string[], argv: string[]): Promise<Result> =>
    sb.rt(['run', '--isolation', 'sentry', ...flags, '--', ...argv]);

  /** Compiles test/sentry/<name>.c statically (once); returns the binary, or why it cannot. */
  const built = new Map<string, { bin?: string; why?: string }>();
  function compile(name: string, flags: string[] = []): { bin?: string; why?: string } {
    const done = built.get(name);
    if (done) return done;
    let res: { bin?: string; why?: string };
    const probe = spawnSync('cc', ['--version'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) {
      res = { why: `no C compiler (cc): ${probe.error?.message ?? probe.stderr}` };
    } else {
      const bin = join(sb.tmp, name);
      const cc = spawnSync('cc', ['-O2', '-static', '-Wall', ...flags, '-o', bin, join(REPO, 'test/sentry', `${name}.c`)], { encoding: 'utf8' });
      // a compiler is there but cannot build it: that is a failure, not a skip
      assert.equal(cc.status, 0, `cc test/sentry/${name}.c failed:\n${cc.stderr}`);
      res = { bin };
    }
    built.set(name, res);
    return res;
  }

  /** Skips `t` with a printed reason (the test then asserts nothing). */
  function skipWith(t: TestContext, why: string): void {
    console.log(`# skipping "${t.name}": ${why}`);
    t.skip(why);
  }

  it('hides host processes and host /proc data', async () => {
    const hostPid = process.pid;
    const script = [
      SECTION_FN,
      's ls; ls /proc',
      's cmdline; cat /proc/1/cmdline',
      `s hostpid; cat /proc/${hostPid}/cmdline 2>/dev/null && echo readable || echo unreadable`,
      's cpuinfo; cat /proc/cpuinfo',
      's meminfo; cat /proc/meminfo',
      's hostname; cat /proc/sys/kernel/hostname; uname -n',
      's mountinfo; cat /proc/self/mountinfo',
      's end',
    ].join('\n');
    const args = ['sh', '-c', script];
    const b = await sb.bundle(args, (spec) => {
      spec['linux'].resources = { memory: { limit: 256 * MiB } };
    });
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    const s = sections(r.stdout);
    assert.ok(s.has('end'), `the script did not finish:\n${show(r)}`);

    const pids = s.get('ls')!.split(/\s+/).filter((e) => /^\d+$/.test(e)).map(Number);
    assert.ok(pids.includes(1), `pid 1 missing from /proc: ${s.get('ls')}`);
    assert.ok(pids.every((p) => p <= 5), `/proc lists pids beyond the sandbox's few: ${pids.join(' ')}`);
    assert.ok(!pids.includes(hostPid), `the test's host pid ${hostPid} is listed in /proc`);
    if (hostPid > 5) assert.equal(s.get('hostpid'), 'unreadable\n', `/proc/${hostPid}/cmdline (a host process) is readable`);

    assert.equal(s.get('cmdline'), `${args.join('\0')}\0`, '/proc/1/cmdline is not the sandbox\'s own command');

    assert.match(s.get('cpuinfo')!, /^processor\s*:/m, '/proc/cpuinfo is missing or empty');
    assert.match(s.get('meminfo')!, /^MemTotal:\s+262144 kB$/m, `MemTotal is not the 256 MiB limit:\n${s.get('meminfo')}`);

    const names = s.get('hostname')!.trim().split('\n');
    assert.deepEqual(names, ['fixture', 'fixture'], 'hostname and uname -n are not the spec\'s hostname');
    assert.ok(!s.get('hostname')!.includes(hostname()), `the host's hostname ${hostname()} is visible`);

    const mountinfo = s.get('mountinfo')!;
    assert.notEqual(mountinfo.trim(), '', '/proc/self/mountinfo is empty');
    for (const hostPath of [b, sb.tmp, sb.root, '/run/moat', REPO, 'upperdir', 'lowerdir', 'workdir']) {
      assert.ok(!mountinfo.includes(hostPath), `/proc/self/mountinfo shows the host path ${hostPath}:\n${mountinfo}`);
    }
  });

  it('keeps paths outside the root unreachable through "..", symlinks and magic links', async () => {
    const secret = token('SECRET');
    const near = token('NEAR');
    const marker = join(sb.tmp, `marker-${randomBytes(4).toString('hex')}`);
    writeFileSync(marker, `${secret}\n`);
    const rel = marker.slice(1); // the marker's path relative to the host root
    const up = '../../../../../../../../../..';
    const attempts = [
      '/abs', '/rel', `/up/${rel}`, `/updir/${rel}`, '/near', '/../near-marker', `/../../../../${rel}`, `/${up}${marker}`,
      `/proc/self/root/../../${rel}`, `/proc/1/root/${up}${marker}`, `/proc/self/cwd/${up}${marker}`, `/proc/1/cwd/${up}${marker}`,
      `/proc/self/fd/3/${up}${marker}`, '/proc/self/fd/3/../near-marker', `/proc/self/fd/4/${up}${marker}`,
      `/proc/self/root${marker}`, `/proc/1/root${marker}`, `/proc/self/fd/4/../../near-marker`, `/dyn/${rel}`, `/dyn2${marker}`,
    ];
    const script = [
      SECTION_FN,
      'exec 3</ 4</bin',
      `ln -s ${up} /dyn; ln -s /proc/self/root/${up} /dyn2`,
      ...attempts.map((p) => `cat '${p}'`),
      `cd / && cd ${up} && cat ${rel}; cat near-marker`,
      `cd /proc/self/root && cd ${up} && cat ${rel}`,
      `cd /proc/self/fd/3 && cd ${up} && cat ${rel}`,
      `cd /bin && cd /proc/self/cwd/${up} && cat ${rel}`,
      `find / -name '${marker.split('/').pop()}' 2>/dev/null`,
      `find / -name near-marker 2>/dev/null`,
      's lsa; ls -a /',
      's lsla; ls -la /',
      's end',
    ].join('\n');
    const b = await sb.bundle(['sh', '-c', script]);
    const rootfs = join(b, 'rootfs');
    writeFileSync(join(b, 'near-marker'), `${near}\n`); // next to the rootfs, in the bundle
    symlinkSync(marker, join(rootfs, 'abs'));
    symlinkSync(`../../../../../../${rel}`, join(rootfs, 'rel'));
    symlinkSync('/../../../..', join(rootfs, 'up'));
    symlinkSync(up, join(rootfs, 'updir'));
    symlinkSync('../near-marker', join(rootfs, 'near'));
    const hostView = ['.', '..', 'dyn', 'dyn2', ...readdirSync(rootfs)].sort(); // dyn, dyn2: made by the script

    const r = await runBundle(b, [], 60_000);
    const all = r.stdout + r.stderr;
    assert.ok(!all.includes(secret), `the marker outside the root was read:\n${show(r)}`);
    assert.ok(!all.includes(near), `the marker next to the rootfs (in the bundle) was read:\n${show(r)}`);
    const s = sections(r.stdout);
    assert.ok(s.has('end'), `the script did not finish:\n${show(r)}`);
    assert.deepEqual(s.get('lsa')!.trim().split('\n').sort(), hostView, `"/" inside is not the bundle rootfs:\n${s.get('lsla')}`);
    assert.match(s.get('lsla')!, /\sbin\n/, `ls -la / shows no /bin:\n${s.get('lsla')}`);
  });

  it('never writes to the bundle rootfs (nor through its symlinks)', async () => {
    const victim = join(sb.tmp, `victim-${randomBytes(4).toString('hex')}`);
    writeFileSync(victim, 'original\n');
    const script = [
      'echo x > /etc/newfile',
      'rm /bin/true',
      'echo pwned >> /etc/passwd',
      'mkdir /newdir && echo y > /newdir/f',
      'chmod 700 /bin/busybox',
      'ln -s /x /etc/newlink',
      'mv /etc/group /etc/group2',
      'touch /bin/sh',
      'rm -r /home/moat',
      'echo pwned > /victim-link; echo pwned > /victim-dir-link/victim 2>/dev/null',
      // the writes did happen, in the container's view
      'test -f /etc/newfile && ! test -e /bin/true && grep -q pwned /etc/passwd && test -f /newdir/f && test -e /etc/group2 && ! test -e /etc/group && echo writes-visible',
    ].join('\n');
    const b = await sb.bundle(['sh', '-c', script]);
    const rootfs = join(b, 'rootfs');
    symlinkSync(victim, join(rootfs, 'victim-link'));
    symlinkSync(sb.tmp, join(rootfs, 'victim-dir-link'));
    const before = snapshot(rootfs);
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, /writes-visible/, `the writes did not take effect inside:\n${show(r)}`);
    const changes = diff(before, snapshot(rootfs));
    assert.deepEqual(changes, [], `the bundle rootfs changed:\n${changes.join('\n')}`);
    assert.equal(readFileSync(victim, 'utf8'), 'original\n', 'a write through a symlink reached a host file');
  });

  // The listings of the synthesized /proc live in mirrors whose links hold container paths (a
  // process's cwd and root); the sentry must never make, list or prune anything through one, as
  // it would resolve that path against the host's root. A chdir into /proc/self/cwd once did
  // (the mirror of a link's path, pruned as empty): it emptied the host directory of the same
  // name. Here the container's cwd has the path of a host directory the test owns.
  it('never touches the host through a link of the synthesized /proc (chdir into cwd and fd links)', async () => {
    const victim = join(sb.tmp, `victim-dir-${randomBytes(4).toString('hex')}`);
    mkdirSync(victim);
    writeFileSync(join(victim, 'sentinel'), 'original\n');
    // (every link here names the victim: were one followed on the host, only the test's own
    // directory could be hurt; a root link would name the host's "/")
    const script = [
      `cd ${victim} && cd /proc/self/cwd && ls`,
      `cd ${victim} && cd /proc/1/cwd && ls`,
      `cd / && exec 3<${victim} && cd /proc/self/fd/3 && ls`,
      'echo finished',
    ].join('\n');
    const b = await sb.bundle(['sh', '-c', script]);
    mkdirSync(join(b, 'rootfs', victim), { recursive: true });
    writeFileSync(join(b, 'rootfs', victim, 'inside'), 'x\n');
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    assert.equal(r.stdout, 'inside\ninside\ninside\nfinished\n', show(r));
    assert.deepEqual(readdirSync(victim), ['sentinel'], 'the host directory named by a mirror link was changed');
    assert.equal(readFileSync(join(victim, 'sentinel'), 'utf8'), 'original\n');
  });

  it('keeps the network to its own loopback, none, or the --allow-egress destinations', async (t) => {
    const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : undefined;
    const busybox = ['/usr/bin/busybox', '/bin/busybox'].find((p) => existsSync(p));
    const hasNc = busybox !== undefined && spawnSync(busybox, ['nc', '--help'], { encoding: 'utf8' }).stderr.includes('Usage: nc');
    if (!python && !hasNc) return skipWith(t, 'neither /usr/bin/python3 nor busybox nc is on the host');

    const secret = token('NET');
    const other = token('OTHER');
    const main = await tokenServer(secret);
    const second = await tokenServer(other);
    servers.push(main.server, second.server);

    /**
     * Connects to the host-side 127.0.0.1:port from inside; `out` holds what came back and
     * `socketErrno` the errno of a failed socket(2), if it failed.
     */
    const connect = async (flags: string[], port: number): Promise<{ r: Result; got: string; socketErrno?: number }> => {
      if (python) {
        const code = [
          'import socket, sys',
          'try:',
          '    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)',
          'except OSError as e:',
          '    print("socket-errno", e.errno); sys.exit(0)',
          's.settimeout(5)',
          'try:',
          '    s.connect(("127.0.0.1", int(sys.argv[1])))',
          '    data = b""',
          '    while True:',
          '        chunk = s.recv(4096)',
          '        if not chunk: break',
          '        data += chunk',
          '    print("recv", data.decode().strip())',
          'except OSError as e:',
          '    print("connect-errno", e.errno)',
        ].join('\n');
        const r = await runEmbedded(flags, [python, '-c', code, String(port)]);
        const m = /^socket-errno (\d+)$/m.exec(r.stdout);
        return { r, got: r.stdout, ...(m ? { socketErrno: Number(m[1]) } : {}) };
      }
      const r = await runEmbedded(flags, [busybox!, 'nc', '-w', '5', '127.0.0.1', String(port)]);
      return { r, got: r.stdout, ...(/socket: Permission denied/.test(r.stderr) ? { socketErrno: 13 } : {}) };
    };

    // default policy (loopback): 127.0.0.1 is the sandbox's own loopback, not the host's
    const lo = await connect([], main.port);
    assert.ok(!lo.got.includes(secret), `the default policy reached the host's 127.0.0.1:\n${show(lo.r)}`);
    if (python) {
      assert.match(lo.got, /^connect-errno \d+$/m, `connecting to an unused port of the own loopback did not fail:\n${show(lo.r)}`);
      // the sandbox can bind the very port the host listens on: its loopback is its own
      const own = [
        'import socket',
        'l = socket.socket(); l.bind(("127.0.0.1", int(__import__("sys").argv[1]))); l.listen(1)',
        'c = socket.create_connection(("127.0.0.1", l.getsockname()[1]), timeout=5)',
        'a, _ = l.accept(); a.sendall(b"own-loopback"); print(c.recv(100).decode())',
      ].join('\n');
      const r = await runEmbedded([], [python, '-c', own, String(main.port)]);
      assert.equal(r.stdout, 'own-loopback\n', `the sandbox's loopback does not work as its own:\n${show(r)}`);
    }

    // --network none: no IP socket at all
    const none = await connect(['--network', 'none'], main.port);
    assert.ok(!none.got.includes(secret), `--network none reached the host:\n${show(none.r)}`);
    assert.equal(none.socketErrno, 13, `socket(AF_INET) did not fail with EACCES under --network none:\n${show(none.r)}`);
    assert.equal(main.connections(), 0, 'the host server saw a connection from a sandbox without egress');

    // --allow-egress to the server: the token comes through the host network
    const allowed = await connect(['--allow-egress', `127.0.0.1:${main.port}`], main.port);
    assert.ok(allowed.got.includes(secret), `--allow-egress 127.0.0.1:${main.port} did not reach the host server:\n${show(allowed.r)}`);

    // --allow-egress to another port: this one is refused (while the allowed one works)
    const seen = main.connections();
    const refused = await connect(['--allow-egress', `127.0.0.1:${second.port}`], main.port);
    assert.ok(!refused.got.includes(secret), `--allow-egress 127.0.0.1:${second.port} let a connection to ${main.port} out:\n${show(refused.r)}`);
    if (python) assert.match(refused.got, /^connect-errno \d+$/m, `the refused connect did not fail:\n${show(refused.r)}`);
    assert.equal(main.connections(), seen, 'the host server saw a connection that no rule allows');
    const otherOk = await connect(['--allow-egress', `127.0.0.1:${second.port}`], second.port);
    assert.ok(otherOk.got.includes(other), `the allowed port ${second.port} is not reachable:\n${show(otherOk.r)}`);
  });

  it('refuses dangerous system calls with the errno of its table', async (t) => {
    const { bin, why } = compile('refused');
    if (!bin) return skipWith(t, why!);
    const docs = JSON.parse(readFileSync(join(REPO, 'docs/syscalls.json'), 'utf8')) as DocRow[];
    const b = await sb.bundle(['/bin/refused']);
    copyFileSync(bin, join(b, 'rootfs/bin/refused'));
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    const direct = new Map<string, string[]>();
    const probe = new Map<string, string[]>();
    for (const line of r.stdout.trim().split('\n')) {
      const f = line.split(' ');
      if (f[0] === 'probe') probe.set(f[1]!, f.slice(2));
      else direct.set(f[0]!, f.slice(1));
    }
    const names = ['mount', 'umount2', 'pivot_root', 'swapon', 'reboot', 'sethostname', 'init_module', 'kexec_load', 'bpf',
      'perf_event_open', 'userfaultfd', 'keyctl', 'add_key', 'io_uring_setup', 'unshare', 'setns', 'ptrace', 'process_vm_readv',
      'open_by_handle_at', 'fanotify_init', 'fsopen', 'settimeofday', 'acct', 'clone3'];
    const wrong: string[] = [];
    for (const name of names) {
      const row = docs.find((d) => d.name === name);
      let expected: number;
      if (name === 'clone3') {
        expected = ENOSYS; // served by the process family, which answers ENOSYS (libc falls back to clone)
      } else {
        assert.equal(row?.class, 'refused', `docs/syscalls.json does not list ${name} as refused`);
        expected = row.errno ?? ENOSYS;
      }
      const got = direct.get(name);
      if (!got) wrong.push(`${name}: no result line`);
      else if (got[0] !== '-1' || Number(got[1]) !== expected) wrong.push(`${name}: returned ${got.join(' errno ')}, expected -1 errno ${expected}`);
      // a probe proves that the sandbox, not the host kernel for want of a capability, said EPERM
      if (expected === EPERM) {
        const p = probe.get(name);
        if (!p) wrong.push(`probe ${name}: no result line`);
        else if (p[0] !== '-1' || Number(p[1]) !== EPERM) wrong.push(`probe ${name}: ${p.join(' ')} (the call was not refused by the sandbox itself)`);
      }
    }
    assert.deepEqual(wrong, [], `refused calls answered wrongly:\n${wrong.join('\n')}\n${show(r)}`);
  });

  it('resolves paths race-free: flipping a path buffer or a symlink never opens a host file', async (t) => {
    const { bin, why } = compile('race', ['-pthread']);
    if (!bin) return skipWith(t, why!);
    const secret = token('RACE');
    const safe = token('SAFE');
    const marker = join(sb.tmp, `race-marker-${randomBytes(4).toString('hex')}`);
    writeFileSync(marker, `${secret}\n`);
    const b = await sb.bundle(['sh', '-c', `/bin/race buf ${marker} ${safe} ${secret} 20000 && /bin/race link ${marker} ${safe} ${secret} 20000`]);
    copyFileSync(bin, join(b, 'rootfs/bin/race'));
    writeFileSync(join(b, 'rootfs/safe'), `${safe}\n`);
    const r = await runBundle(b, [], 300_000);
    assert.equal(r.status, 0, show(r));
    for (const mode of ['buf', 'link']) {
      const m = new RegExp(`^${mode} opens=(\\d+) safe=(\\d+) secret=(\\d+) other=(\\d+) failed=(\\d+) flips=(\\d+)$`, 'm').exec(r.stdout);
      assert.ok(m, `no result for mode ${mode}:\n${show(r)}`);
      const [, opens, safeN, secretN, , , flips] = m.map(Number);
      t.diagnostic(m[0]);
      assert.equal(opens, 20000);
      assert.equal(secretN, 0, `mode ${mode}: the host marker was opened ${secretN} times: ${m[0]}`);
      assert.ok(safeN! > 0, `mode ${mode}: no open of /safe succeeded, so the race did not run: ${m[0]}`);
      assert.ok(flips! > 0, `mode ${mode}: the flipping thread never flipped: ${m[0]}`);
    }
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret), show(r));
  });

  // glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH): the sentry used to read the empty path
  // and let the kernel run the call, which reads the path again; a second thread that wrote a
  // name there meanwhile had the kernel resolve it unchecked (here: the scratch entry behind the
  // synthetic /proc/cpuinfo, in about 1 call in 8).
  it('never lets the kernel read an empty path again: a flipped AT_EMPTY_PATH stat stays checked', async (t) => {
    const { bin, why } = compile('emptyrace', ['-pthread']);
    if (!bin) return skipWith(t, why!);
    const b = await sb.bundle(['/bin/emptyrace', '20000']);
    copyFileSync(bin, join(b, 'rootfs/bin/emptyrace'));
    const r = await runBundle(b, [], 300_000);
    assert.equal(r.status, 0, show(r));
    const m = /^empty stats=(\d+) dir=(\d+) synth=(\d+) kernel=(\d+) failed=(\d+) flips=(\d+)$/m.exec(r.stdout);
    assert.ok(m, `no result line:\n${show(r)}`);
    t.diagnostic(m[0]);
    const [, stats, dir, synth, kernel, failed] = m.map(Number);
    assert.equal(stats, 20000);
    assert.equal(kernel, 0, `the kernel resolved a path the sentry never checked ${kernel} times: ${m[0]}`);
    assert.equal(failed, 0, m[0]);
    assert.ok(dir! > 0 && synth! > 0, `the flips never reached the sentry both ways, so the race did not run: ${m[0]}`);
  });

  /** fd -> link target from `ls -l /proc/self/fd` (busybox format). */
  const parseFds = (out: string): Map<number, string> => {
    const m = new Map<number, string>();
    for (const line of out.split('\n')) {
      const x = / (\d+) -> (.*)$/.exec(line);
      if (x) m.set(Number(x[1]), x[2]!);
    }
    return m;
  };
  /** True if an fd target belongs to the runtime or the sentry (state dir, sockets, notify fds). */
  const runtimeFd = (target: string): boolean =>
    target.includes(sb.root) || target.includes('sentry') || target.includes('/run/moat') || target.includes(REPO) ||
    target.startsWith('socket:') || target.startsWith('anon_inode:') || target.startsWith('pipe:');
  /** Checks an inside listing of /proc/self/fd: stdio, at most ls's own directory fd, nothing of the runtime. */
  const checkInside = (where: string, out: string): void => {
    const fds = parseFds(out);
    assert.ok(fds.has(0) && fds.has(1) && fds.has(2), `${where}: stdio missing from the listing:\n${out}`);
    const extra = [...fds.keys()].filter((fd) => fd > 2);
    // ls itself holds the directory it lists open
    assert.ok(extra.length <= 1, `${where}: fds beyond stdio and ls's own: ${extra.join(' ')}\n${out}`);
    for (const fd of extra) assert.match(fds.get(fd)!, /^\/proc\//, `${where}: fd ${fd} is not ls's listing of /proc:\n${out}`);
    for (const [fd, target] of fds) assert.ok(!runtimeFd(target), `${where}: fd ${fd} -> ${target} belongs to the runtime or the sentry:\n${out}`);
  };
  /** Checks the host's view of the real fd table of host process `pid`: exactly stdio, nothing of the runtime. */
  const checkHost = (where: string, pid: number): void => {
    const fds = new Map<number, string>();
    for (const fd of readdirSync(`/proc/${pid}/fd`)) fds.set(Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`));
    const raw = [...fds].map(([fd, tgt]) => `${fd} -> ${tgt}`).join('\n');
    assert.deepEqual([...fds.keys()].sort(), [0, 1, 2], `${where}: host view of the real fds:\n${raw}`);
    for (const [fd, target] of fds) assert.ok(!runtimeFd(target), `${where}: fd ${fd} -> ${target} belongs to the runtime or the sentry`);
  };

  /** The sentry's pid from the container record. */
  function sentryPid(id: string): number {
    const rec = JSON.parse(readFileSync(join(sb.root, id, 'state.json'), 'utf8')) as { backendState?: { pid?: number } };
    return Number(rec.backendState?.pid ?? 0);
  }

  /** The start time of a process (clock ticks since boot, field 22 of /proc/PID/stat). */
  function startTicks(pid: number): number {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  }

  it('hands a sandbox to the warm standby sentry, booted before the create, and keeps one waiting for the next', async () => {
    const dir = '/run/moat-sentry-standby';
    const uptimeTicks = (): number => Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 100; // USER_HZ 100
    // every create starts a standby for the next create like it (same capabilities and
    // namespaces): after a pause to let it boot, a create claims one (the first may start cold)
    const claimed: Array<{ id: string; pid: number }> = [];
    try {
      for (let attempt = 0; attempt < 5 && claimed.length < 2; attempt++) {
        await new Promise((r) => setTimeout(r, 2000));
        const before = uptimeTicks();
        const { id } = await sleeper();
        const pid = sentryPid(id);
        assert.ok(pid > 0);
        if (startTicks(pid) < before) claimed.push({ id, pid });
        else await sb.rt(['delete', '--force', id]);
      }
      assert.equal(claimed.length, 2, 'two creates in a row each claimed a standby started before them');
      assert.notEqual(claimed[0]!.pid, claimed[1]!.pid);
      const st = lstatSync(dir);
      assert.equal(st.mode & 0o777, 0o700, 'only its user can reach the standby');
      assert.equal(st.uid, process.getuid?.());
      for (const { id, pid } of claimed) {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1');
        assert.ok(cmd.startsWith(`moat --sentry ${id}`), `ps shows the container id: ${JSON.stringify(cmd.slice(0, 60))}`);
        const ex = await sb.rt(['exec', id, 'sh', '-c', 'ls / >/dev/null && echo served']);
        assert.equal(ex.status, 0, show(ex));
        assert.equal(ex.stdout, 'served\n');
        assert.match(readFileSync(join(sb.root, id, 'sentry.log'), 'utf8'), /serving sandbox .* \(a standby since/);
      }
    } finally {
      for (const { id } of claimed) await sb.rt(['delete', '--force', id]);
    }
  });

  it('refuses a standby request that names another process, and stays for the next create', async () => {
    const dir = '/run/moat-sentry-standby';
    const first = await sleeper(); // leaves a standby behind
    await sb.rt(['delete', '--force', first.id]);
    let socks: string[] = [];
    for (let i = 0; i < 100 && socks.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      socks = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.sock')) : [];
    }
    assert.ok(socks.length > 0, 'a standby waits');
    // pid 1's fd 0 is no listening socket of ours: a request naming it must be refused (to the
    // first standby that answers: a socket file can outlive a standby that was SIGKILLed)
    const ask = (sock: string, line: string): Promise<string> =>
      new Promise<string>((resolve, reject) => {
        const c = connect(join(dir, sock));
        let got = '';
        c.on('connect', () => c.write(line));
        c.on('data', (d) => (got += d.toString()));
        c.on('close', () => resolve(got));
        c.on('error', reject);
      });
    let live: string | undefined;
    for (const sock of socks) {
      try {
        await ask(sock, '\n'); // an empty request: refused as malformed, the standby stays
        live = sock;
        break;
      } catch {
        // a stale socket file: try the next
      }
    }
    assert.ok(live !== undefined, `no standby answers in ${dir}`);
    for (const [req, why] of [
      [{ pid: 1, fd: 0, config: { id: 'x', log: '/dev/null', socket: '/x', level: 'balanced' } }, /not this user's pid|request from pid/],
      [{ pid: 'x' }, /malformed/],
    ] as const) {
      const answer = await ask(live, `${JSON.stringify(req)}\n`);
      assert.match(answer, /^error /);
      assert.match(answer, why);
    }
    const { id } = await sleeper();
    try {
      assert.ok(sentryPid(id) > 0, 'the next create still got a sentry');
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  const standbyDir = '/run/moat-sentry-standby';

  /** Leaves a warm standby behind (a create starts one) and returns its pid and key. */
  async function waitingStandby(): Promise<{ pid: number; key: string }> {
    const dir = standbyDir;
    const first = await sleeper();
    await sb.rt(['delete', '--force', first.id]);
    let waiting: { pid: number; key: string } | undefined;
    for (let i = 0; i < 100 && waiting === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      for (const sock of existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.sock')) : []) {
        const key = sock.slice(0, -'.sock'.length);
        const pid = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).find((p) => {
          try {
            const cmd = readFileSync(`/proc/${p}/cmdline`, 'latin1');
            return cmd.includes('\0--sentry-standby\0') && cmd.includes(`"key":"${key}"`);
          } catch {
            return false; // ended meanwhile
          }
        });
        if (pid !== undefined) waiting = { pid, key };
      }
    }
    assert.ok(waiting !== undefined, `no standby waits in ${dir}`);
    return waiting;
  }

  it('a standby that goes unclaimed (SIGTERM, the idle timeout) removes its socket and lock files', async () => {
    const dir = standbyDir;
    const waiting = await waitingStandby();
    process.kill(waiting.pid, 'SIGTERM');
    assert.ok(await waitFor(() => !processAlive(waiting!.pid), 5000), 'the standby exits on SIGTERM');
    for (const f of [`${waiting.key}.sock`, `${waiting.key}.lock`]) assert.equal(existsSync(join(dir, f)), false, `${f} is left in ${dir}`);
    const next = await sleeper();
    assert.ok(sentryPid(next.id) > 0, 'the next create still gets a sentry');
    await sb.rt(['delete', '--force', next.id]);
  });

  // A standby killed with SIGKILL leaves its socket and lock; its key is often never used again
  // (a rebuild changes it), so the next standby to start clears them, unless their lock is held.
  it('a standby that starts removes the files dead standbys of other keys left, and keeps a live one\'s', async () => {
    const waiting = await waitingStandby();
    const dead = standbyFiles({ dir: standbyDir, key: 'f'.repeat(24) });
    const live = standbyFiles({ dir: standbyDir, key: 'e'.repeat(24) });
    writeFileSync(dead.lock, '');
    for (const s of [dead.socket, live.socket]) {
      const r = spawnSync('python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', s], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    }
    const holder = spawn('flock', ['-n', live.lock, 'sleep', '60'], { stdio: 'ignore' });
    let id: string | undefined;
    try {
      assert.ok(await waitFor(() => spawnSync('flock', ['-n', live.lock, 'true']).status === 1, 5000), 'the live lock is held');
      process.kill(waiting.pid, 'SIGTERM');
      assert.ok(await waitFor(() => !processAlive(waiting.pid), 5000), 'the standby exits on SIGTERM');
      id = (await sleeper()).id; // its create starts the next standby
      assert.ok(await waitFor(() => !existsSync(dead.lock) && !existsSync(dead.socket), 15_000), `the dead standby's files are left in ${standbyDir}`);
      for (const f of [live.lock, live.socket]) assert.ok(existsSync(f), `${f}, whose lock is held, was removed`);
    } finally {
      holder.kill('SIGKILL');
      for (const f of [dead.lock, dead.socket, live.lock, live.socket]) rmSync(f, { force: true });
      if (id !== undefined) await sb.rt(['delete', '--force', id]);
    }
  });

  // A create under a program that adopts standbys (conmon) claims a waiting standby but starts
  // none after it: the claimed one's lock file stayed behind, one more per such create.
  it('a claimed standby leaves no lock file behind when its create starts no successor', async () => {
    const waiting = await waitingStandby();
    const adopters = join(standbyDir, 'adopters');
    const listed = existsSync(adopters) ? readFileSync(adopters) : undefined;
    // this test process counted as an adopter: its creates claim standbys and start none
    appendFileSync(adopters, `${readlinkSync('/proc/self/exe')}\n`);
    let id: string | undefined;
    try {
      id = (await sleeper()).id;
      assert.equal(sentryPid(id), waiting.pid, 'the create claimed the waiting standby');
      for (const f of [`${waiting.key}.sock`, `${waiting.key}.lock`]) assert.equal(existsSync(join(standbyDir, f)), false, `${f} is left in ${standbyDir}`);
    } finally {
      if (listed === undefined) rmSync(adopters, { force: true });
      else writeFileSync(adopters, listed);
      if (id !== undefined) await sb.rt(['delete', '--force', id]);
    }
  });

  /** Runs `sleep 1000` detached under the sentry; returns its id and host pid. */
  async function sleeper(): Promise<{ id: string; pid: number }> {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('sentry-bg');
    await sb.ok(['run', '--isolation', 'sentry', '-d', '-b', b, id]);
    return { id, pid: (await sb.state(id)).pid };
  }

  // Without its sentry, every served call of the workload fails with ENOSYS while its fast-path
  // code runs on: a foreground run (or the containerd shim) kills the container instead.
  it('fails closed: a container whose sentry is killed is killed too (foreground run)', async () => {
    const id = sb.id('sentry-gone');
    const done = runEmbedded(['--name', id], ['sh', '-c', 'sleep 3; echo survived']);
    // once the init runs the shell (its exe is no longer the runtime's stage), the sandbox serves
    const pid = await sb.sentryPidWhen(id, (init) => /\/(dash|sh|bash)$/.test(readlinkSync(`/proc/${init}/exe`)));
    assert.ok(pid > 0, 'the container runs its shell and its record names its sentry');
    await new Promise((r) => setTimeout(r, 200));
    process.kill(pid, 'SIGKILL');
    const r = await done;
    assert.equal(r.status, 137, `${r.stdout}${r.stderr}`);
    assert.doesNotMatch(r.stdout, /survived/);
    assert.match(r.stderr, new RegExp(`the sentry of container "${id}" \\(pid ${pid}\\) is gone while the container runs: killing the container`));
  });

  /** Host pids of the processes whose argv starts with `argv`. */
  function processesWith(argv: string[]): number[] {
    const want = `${argv.join('\0')}\0`;
    const found: number[] = [];
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (readFileSync(`/proc/${name}/cmdline`, 'latin1').startsWith(want)) found.push(Number(name));
      } catch {
        // ended meanwhile
      }
    }
    return found;
  }

  it('fails closed detached too: a run -d container whose sentry is killed is killed by its watcher', async () => {
    const { id, pid: init } = await sleeper();
    try {
      const sentry = sentryPid(id);
      const watchers = processesWith(['moat-watch', id, String(sentry)]);
      assert.equal(watchers.length, 1, `one watcher for ${id}: ${watchers.join(' ')}`);
      const w = watchers[0]!;
      // only what it needs: its stdio on /dev/null, the two pidfds and the sentry's log
      const fds = readdirSync(`/proc/${w}/fd`).map((fd) => readlinkSync(`/proc/${w}/fd/${fd}`));
      assert.deepEqual(fds.filter((t) => t !== '/dev/null' && t !== 'anon_inode:[pidfd]' && !t.endsWith(`/${id}/sentry.log`)), [], fds.join('\n'));
      const status = readFileSync(`/proc/${w}/status`, 'utf8');
      assert.match(status, /^CapEff:\s+0+20$/m, 'the watcher keeps CAP_KILL only');
      assert.match(status, /^Seccomp:\s+2$/m, 'the watcher runs under a seccomp filter');
      process.kill(sentry, 'SIGKILL');
      assert.ok(await waitFor(async () => (await sb.state(id)).status === 'stopped', 10_000), `${id} still runs without its sentry`);
      assert.ok(!processAlive(init), `the init ${init} is gone`);
      assert.ok(await waitFor(() => !processAlive(w), 5000), 'the watcher exits once it killed the container');
      assert.match(readFileSync(join(sb.root, id, 'sentry.log'), 'utf8'), new RegExp(`moat-watch: the sentry \\(pid ${sentry}\\) is gone while the container runs: killed the container \\(init pid ${init}\\)`));
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    // the normal end: the container stops, its watcher goes with it and kills nothing else
    const other = await sleeper();
    const w = processesWith(['moat-watch', other.id]);
    assert.equal(w.length, 1);
    await sb.ok(['kill', other.id, 'KILL']);
    assert.ok(await waitFor(() => !processAlive(w[0]!), 5000), 'the watcher of a container that ended exits');
    assert.doesNotMatch(readFileSync(join(sb.root, other.id, 'sentry.log'), 'utf8'), /moat-watch/);
    assert.ok(await waitFor(async () => (await sb.state(other.id)).status === 'stopped', 10_000));
    await sb.ok(['delete', other.id]);
  });

  // A watcher still starting when its sandbox ended found the sentry gone already, took that for
  // a dead sentry and killed the init, which was dying anyway (a dying process still takes a
  // signal), and logged it: about 1 `run -d` in 10 killed at once through the front end. It now
  // gives the init GRACE_MS (100 ms) to end. Driven here directly, with a sentry that is gone: an
  // init that ends by itself 50 ms later is left alone; one that runs on is killed and logged.
  it('a watcher finding its sentry gone kills and logs only an init that does not end', async () => {
    const watch = join(REPO, 'dist', 'moat-watch');
    const startOf = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]!;
    const gone = spawnSync('true').pid!; // ran and was reaped: its pidfd cannot be opened
    const log = join(sb.tmp, 'watch.log');
    writeFileSync(log, '');
    const watched = async (seconds: string): Promise<NodeJS.Signals | null> => {
      const init = spawn('sleep', [seconds], { stdio: 'ignore' });
      hostChildren.push(init);
      const ended = new Promise<NodeJS.Signals | null>((resolve) => init.once('exit', (_c, sig) => resolve(sig)));
      const w = spawnSync(watch, ['watched', String(gone), '0', String(init.pid), startOf(init.pid!), log], { timeout: 10_000 });
      assert.equal(w.status, 0, String(w.stderr));
      return ended;
    };
    assert.equal(await watched('0.05'), null, 'an init that ended by itself was killed');
    assert.equal(readFileSync(log, 'utf8'), '');
    const live = await watched('30');
    assert.equal(live, 'SIGKILL');
    assert.match(readFileSync(log, 'utf8'), new RegExp(`moat-watch: the sentry \\(pid ${gone}\\) is gone while the container runs: killed the container`));
  });

  it('leaks no fd of the runtime or the sentry into the workload', async () => {
    const b = await sb.bundle(['sh', '-c', 'ls -l /proc/self/fd']);
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    checkInside('init (inside view)', r.stdout);

    // the host's view of the real fd tables (the sentry synthesizes /proc, so it could hide one)
    const { id, pid } = await sleeper();
    try {
      checkHost('init', pid);
      const pidFile = join(sb.tmp, `${id}-exec.pid`);
      await sb.ok(['exec', '--detach', '--pid-file', pidFile, id, 'sleep', '1000']);
      checkHost('exec\'d process', Number(readFileSync(pidFile, 'utf8')));
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  // Node's spawn keeps every fd a process inherited open in its children: a caller's pipe at fd
  // 50 stayed open in the sentry, the next standby and (until it closed it) the watcher, and a
  // reader of that pipe waited for the standby's ten idle minutes.
  it('keeps no fd of its caller open in the sentry, the standby or the watcher it leaves behind', async () => {
    const fifo = join(sb.tmp, 'held.fifo');
    const mk = spawnSync('mkfifo', [fifo]);
    assert.equal(mk.status, 0, String(mk.stderr));
    const rd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const wr = openSync(fifo, constants.O_WRONLY);
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('sentry-fds');
    try {
      // fd 50 of the runtime (the CLI in Node, not a warm CLI standby, which takes fds 0-2 only)
      const running = sb.rt(['run', '--isolation', 'sentry', '-d', '-b', b, id], { extraFds: [...Array(47).fill('ignore'), wr], env: { MOAT_CLI_STANDBY: '0' } });
      closeSync(wr);
      const r = await running;
      assert.equal(r.status, 0, show(r));
      const eof = (): boolean => {
        try {
          return readSync(rd, Buffer.alloc(16)) === 0; // no writer is left
        } catch {
          return false; // EAGAIN: a writer still holds it
        }
      };
      assert.ok(await waitFor(eof, 10_000), 'a process the run left behind still holds the fifo it got as fd 50');
      assert.ok(sentryPid(id) > 0);
    } finally {
      closeSync(rd);
      await sb.rt(['delete', '--force', id]);
    }
  });

  it('confines the sentry itself: a seccomp filter on every thread, no_new_privs, only the workload\'s capabilities', async () => {
    const { id } = await sleeper();
    try {
      // the sentry the container record names (started for it, or a warm standby it claimed)
      const pid = String(sentryPid(id));
      assert.ok(processAlive(Number(pid)), `the sentry ${pid} of ${id} runs`);
      const threads = readdirSync(`/proc/${pid}/task`);
      assert.ok(threads.length > 1, 'the sentry has a serving thread besides its main thread');
      for (const tid of threads) {
        const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
        const field = (k: string) => new RegExp(`^${k}:\\s+(\\S+)`, 'm').exec(status)?.[1];
        assert.equal(field('Seccomp'), '2', `thread ${tid} of the sentry runs without its seccomp filter`);
        assert.equal(field('NoNewPrivs'), '1', `thread ${tid} of the sentry may gain privileges`);
        // the busybox bundle keeps runc's default capabilities; the sentry holds no others
        const bnd = BigInt(`0x${field('CapBnd')}`);
        const eff = BigInt(`0x${field('CapEff')}`);
        assert.equal(eff & ~bnd, 0n);
        // CAP_SYS_PTRACE it keeps, for pidfd_getfd and process_vm_* on workloads of another uid;
        // ptrace(2) itself is not on its seccomp allowlist (checked below)
        const SYS_ADMIN = 1n << 21n;
        const SYS_MODULE = 1n << 16n;
        const DAC_OVERRIDE = 1n << 1n;
        for (const [name, bit] of [['CAP_SYS_ADMIN', SYS_ADMIN], ['CAP_SYS_MODULE', SYS_MODULE], ['CAP_DAC_OVERRIDE', DAC_OVERRIDE]] as const) {
          assert.equal(bnd & bit, 0n, `thread ${tid} of the sentry can hold ${name}`);
        }
      }
      assert.ok(!SENTRY_ALLOWLIST.includes('ptrace'), 'ptrace(2) is on the sentry\'s allowlist');
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  // an exec'd process joins the pid namespace from outside (its host parent is `moat exec`):
  // the sentry must still count it as the sandbox's
  it('shows an exec\'d process its own /proc/self/fd, with no fd of the runtime', async () => {
    const { id } = await sleeper();
    try {
      const ex = await sb.rt(['exec', id, 'ls', '-l', '/proc/self/fd']);
      assert.equal(ex.status, 0, show(ex));
      checkInside('exec (inside view)', ex.stdout);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
  });

  // procfs's checks on another process: ptrace access (CAP_SYS_PTRACE, or the same ids) for its
  // fd links, environ, cwd, exe and fdinfo, and the DAC of its 0500 fd directory and 0400
  // environ. The sentry let root through both (fsuid 0): a root process without CAP_SYS_PTRACE
  // (runc's and Docker's default set) read a uid-1000 process's fds and environment. The same
  // execs under the container backend (the kernel's procfs) are the reference.
  it('shows another user\'s process in /proc only as procfs does: ptrace access and DAC, for root too', async () => {
    const probe = [
      'for f in fd/0 cwd exe; do readlink /proc/1/$f >/dev/null 2>&1 && echo $f-ok || echo $f-denied; done',
      'cat /proc/1/environ >/dev/null 2>&1 && echo environ-ok || echo environ-denied',
      'echo fd-listed $(ls /proc/1/fd 2>/dev/null | wc -l) fdinfo-listed $(ls /proc/1/fdinfo 2>/dev/null | wc -l)',
      'cat /proc/1/fdinfo/0 >/dev/null 2>&1 && echo fdinfo-ok || echo fdinfo-denied',
    ].join('; ');
    const callers: string[][] = [
      ['-u', '0:0'],
      ['-u', '0:0', '--cap', 'CAP_SYS_PTRACE'],
      ['-u', '0:0', '--cap', 'CAP_DAC_READ_SEARCH'],
      ['-u', '0:0', '--cap', 'CAP_SYS_PTRACE', '--cap', 'CAP_DAC_OVERRIDE'],
      ['-u', '1000:1000'],
    ];
    const seen: Record<string, string[]> = {};
    const b = await sb.bundle(['sleep', '1000'], (spec) => {
      spec['process'].user = { uid: 1000, gid: 1000 };
    });
    for (const isolation of ['container', 'sentry']) {
      const id = sb.id(`ptrace-${isolation}`);
      await sb.ok(['create', '--isolation', isolation, '-b', b, id]);
      try {
        await sb.ok(['start', id]);
        seen[isolation] = [];
        for (const who of callers) {
          const r = await sb.rt(['exec', ...who, id, 'sh', '-c', probe]);
          assert.equal(r.status, 0, `${isolation} ${who.join(' ')}: ${show(r)}`);
          seen[isolation]!.push(`${who.join(' ')}: ${r.stdout.trim().split('\n').join(' ')}`);
        }
      } finally {
        await sb.rt(['delete', '--force', id]);
      }
    }
    assert.deepEqual(seen['sentry'], seen['container']);
    // and the reference is what it should be: nothing for root without capabilities, all for its user
    assert.equal(seen['sentry']![0], '-u 0:0: fd/0-denied cwd-denied exe-denied environ-denied fd-listed 0 fdinfo-listed 0 fdinfo-denied');
    assert.equal(seen['sentry']![4], '-u 1000:1000: fd/0-ok cwd-ok exe-ok environ-ok fd-listed 3 fdinfo-listed 3 fdinfo-ok');
  });

  it('cannot signal or trace a process outside the sandbox', async () => {
    const sleeper = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true });
    hostChildren.push(sleeper);
    const pid = sleeper.pid!;
    assert.ok(processAlive(pid));
    const { bin } = compile('refused');
    const script = [
      `kill -9 ${pid}; echo "kill=$?"`,
      `kill -0 ${pid}; echo "kill0=$?"`,
      ...(bin ? [`/bin/refused ${pid}`] : []),
    ].join('\n');
    const b = await sb.bundle(['sh', '-c', script]);
    if (bin) copyFileSync(bin, join(b, 'rootfs/bin/refused'));
    else console.log('# no C compiler: only kill(1) is tried against the host process');
    const r = await runBundle(b);
    assert.equal(r.status, 0, show(r));
    await new Promise((res) => setTimeout(res, 200)); // a delivered SIGKILL takes effect at once; allow a moment
    assert.ok(processAlive(pid), `the host process ${pid} was killed from inside:\n${show(r)}`);
    assert.match(r.stdout, /^kill=1$/m, `kill -9 of a host pid did not fail:\n${show(r)}`);
    assert.match(r.stdout, /^kill0=1$/m, `kill -0 of a host pid succeeded (the process is visible):\n${show(r)}`);
    assert.match(r.stderr, /No such process/, `kill did not report "no such process":\n${show(r)}`);
    if (bin) {
      for (const call of ['kill', 'ptrace', 'process_vm_readv', 'pidfd_open']) {
        const m = new RegExp(`^${call} (-?\\d+) (\\d+)$`, 'm').exec(r.stdout);
        assert.ok(m, `no result for ${call}:\n${show(r)}`);
        assert.equal(m[1], '-1', `${call} on a host pid succeeded:\n${show(r)}`);
        if (call === 'kill' || call === 'pidfd_open') assert.equal(Number(m[2]), ESRCH, `${call} on a host pid: errno ${m[2]}, expected ESRCH`);
      }
    }
  });
});
