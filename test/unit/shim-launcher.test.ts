/**
 * The shim's standby claim protocol (src/shim/claim.ts) and the C launcher that speaks it
 * (native/containerd-shim-moat-v1.c, built to dist/). The launcher runs for real: from a copy of
 * the installation layout in a temporary directory (dist/ + bin/) whose TypeScript entry point is
 * a shell script that records how it was run, so its standby socket is the test's own; a fake
 * standby answers on that socket.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClaimError, decodeClaim, decodeRecords, encodeClaim, encodeRecords, formatReply, parseReply, standbyPath } from '../../src/shim/claim.js';
import type { ClaimReply, ClaimRequest } from '../../src/shim/claim.js';
import { decode } from '../../src/shim/proto.js';
import { REPO } from '../helpers/runtime.js';

describe('standby claim protocol', () => {
  const req: ClaimRequest = {
    argv: ['-namespace', 'ns', '-id', 'c1', 'start'],
    env: { PATH: '/usr/bin', TTRPC_ADDRESS: '/run/x=y.ttrpc' },
    cwd: '/run/bundle',
    stdin: Buffer.from([0, 1, 2, 0xff]),
  };

  it('round-trips a request, and reports an incomplete one as undefined', () => {
    const bytes = encodeClaim(req);
    assert.deepEqual(decodeClaim(bytes), req);
    for (const cut of [3, 10, 15, bytes.length - 1]) assert.equal(decodeClaim(bytes.subarray(0, cut)), undefined, `cut at ${cut}`);
  });

  it('encodes bare records as decodeRecords reads them (the CLI standby rehearses a claim with them)', () => {
    const magic = Buffer.from('MOATCLI\x01', 'latin1');
    const records = [{ tag: 1, data: Buffer.from('state') }, { tag: 2, data: Buffer.from('A=b=c') }, { tag: 1, data: Buffer.alloc(0) }];
    const bytes = encodeRecords(magic, records);
    assert.deepEqual(decodeRecords(bytes, magic, 1 << 20, new Set([1, 2])), records);
    assert.equal(decodeRecords(bytes.subarray(0, bytes.length - 1), magic, 1 << 20, new Set([1, 2])), undefined);
    assert.throws(() => decodeRecords(bytes, magic, 1 << 20, new Set([1])), /unknown record tag 2/);
  });

  it('rejects bad magic, unknown tags, trailing bytes, a relative cwd and oversized records', () => {
    const bytes = encodeClaim(req);
    const wrong = Buffer.from(bytes);
    wrong[0] = 0x4e;
    assert.throws(() => decodeClaim(wrong), ClaimError);
    const version = Buffer.from(bytes);
    version[9] = 2;
    assert.throws(() => decodeClaim(version), /bad magic or version/);
    const tag = Buffer.concat([bytes.subarray(0, 10), Buffer.from([9, 0, 0, 0, 0])]);
    assert.throws(() => decodeClaim(tag), /unknown record tag 9/);
    assert.throws(() => decodeClaim(Buffer.concat([bytes, Buffer.from([1])])), /bytes after the end record/);
    assert.throws(() => decodeClaim(encodeClaim({ ...req, cwd: 'relative' })), /absolute path/);
    const huge = Buffer.concat([bytes.subarray(0, 10), Buffer.from([4, 0xff, 0xff, 0xff, 0x7f])]);
    assert.throws(() => decodeClaim(huge), /limit/);
  });

  it('formats and parses replies; messages stay on one line; garbage is a pass', () => {
    const ok: ClaimReply = { kind: 'ok', pid: 42, address: 'unix:///run/containerd/s/abc' };
    assert.deepEqual(parseReply(formatReply(ok).trimEnd()), ok);
    assert.equal(formatReply({ kind: 'error', message: 'a\nb' }), 'error a b\n');
    assert.deepEqual(parseReply('error boom'), { kind: 'error', message: 'boom' });
    assert.equal(parseReply('what').kind, 'pass');
    assert.equal(parseReply('ok x unix:///a').kind, 'pass');
  });
});

/** Runs the launcher copy; resolves with its exit code and output. */
function runLauncher(exe: string, args: string[], opts: { cwd: string; stdin?: Buffer; env?: Record<string, string> }): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(exe, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
    p.stdin.on('error', () => {}); // a delete never reads its stdin
    p.stdin.end(opts.stdin ?? Buffer.alloc(0));
  });
}

const launcherSkip = process.getuid?.() !== 0 ? 'needs root (the standby socket lives in /run/containerd/s)' : !existsSync(join(REPO, 'dist', 'containerd-shim-moat-v1')) ? 'dist/containerd-shim-moat-v1 is not built (npm run build)' : undefined;
if (launcherSkip) console.log(`# skipping the launcher tests: ${launcherSkip}`);

describe('containerd-shim-moat-v1 launcher', { skip: launcherSkip }, () => {
  let root: string;
  let exe: string;
  let entry: string;
  let bundle: string;
  let standby: Server | undefined;
  const common = ['-namespace', 'moat-launcher-test', '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd'];

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'moat-launcher-'));
    mkdirSync(join(root, 'dist'));
    mkdirSync(join(root, 'bin'));
    exe = join(root, 'dist', 'containerd-shim-moat-v1');
    copyFileSync(join(REPO, 'dist', 'containerd-shim-moat-v1'), exe);
    chmodSync(exe, 0o755);
    entry = join(root, 'bin', 'containerd-shim-moat-v1.cjs');
    // the stand-in for the TypeScript shim: records its arguments and stdin, answers "typescript"
    writeFileSync(entry, `#!/bin/sh\nprintf '%s\\n' "$@" > "${root}/ts-args"\ncat > "${root}/ts-stdin"\nprintf typescript\n`);
    chmodSync(entry, 0o755);
    bundle = join(root, 'bundle');
    mkdirSync(join(bundle, 'rootfs'), { recursive: true });
    mkdirSync('/run/containerd/s', { recursive: true, mode: 0o711 });
  });

  after(() => {
    standby?.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** A fake standby on the installation's socket: records each request and sends `reply`. */
  function fakeStandby(reply: string): Promise<ClaimRequest[]> {
    const got: ClaimRequest[] = [];
    return new Promise((resolve) => {
      standby?.close();
      standby = createServer((sock) => {
        let buf = Buffer.alloc(0);
        sock.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          const r = decodeClaim(buf);
          if (r) {
            got.push(r);
            sock.end(reply);
          }
        });
      });
      standby.listen(standbyPath(entry), () => resolve(got));
    });
  }

  it('delete with nothing left: answers a DeleteResponse (137, now) itself', async () => {
    const before = Date.now();
    const r = await runLauncher(exe, [...common, '-id', 'c1', '-bundle', bundle, 'delete'], { cwd: bundle });
    assert.equal(r.code, 0, r.stderr);
    const res = decode('containerd.task.v2.DeleteResponse', r.stdout) as { pid?: number; exitStatus?: number; exitedAt?: { seconds?: number | { toNumber(): number } } };
    assert.equal(res.exitStatus, 137);
    assert.equal(res.pid ?? 0, 0);
    const secs = Number(res.exitedAt?.seconds ?? 0);
    assert.ok(Math.abs(secs * 1000 - before) < 60_000, `exited_at ${secs}`);
    assert.ok(!existsSync(join(root, 'ts-args')), 'the TypeScript shim ran');
  });

  it('delete with a recorded root, a mounted rootfs or a bad id: the TypeScript shim, arguments unchanged', async () => {
    writeFileSync(join(bundle, 'moat-shim.json'), '{}');
    const args = [...common, '-id', 'c1', '-bundle', bundle, 'delete'];
    let r = await runLauncher(exe, args, { cwd: bundle });
    assert.equal(r.stdout.toString(), 'typescript');
    assert.deepEqual(readFileSync(join(root, 'ts-args'), 'utf8').trimEnd().split('\n'), args);
    rmSync(join(bundle, 'moat-shim.json'));
    rmSync(join(root, 'ts-args'));
    r = await runLauncher(exe, [...common, '-id', '..', '-bundle', bundle, 'delete'], { cwd: bundle });
    assert.equal(r.stdout.toString(), 'typescript');
    rmSync(join(root, 'ts-args'));
    const mnt = spawn('mount', ['-t', 'tmpfs', 'none', join(bundle, 'rootfs')]);
    await new Promise((res) => mnt.once('close', res));
    try {
      r = await runLauncher(exe, [...common, '-id', 'c1', '-bundle', bundle, 'delete'], { cwd: bundle });
      assert.equal(r.stdout.toString(), 'typescript');
    } finally {
      await new Promise((res) => spawn('umount', [join(bundle, 'rootfs')]).once('close', res));
    }
  });

  it('start with no standby: the TypeScript start, stdin untouched', async () => {
    rmSync(join(root, 'ts-args'), { force: true });
    const r = await runLauncher(exe, [...common, '-id', 'c2', 'start'], { cwd: bundle, stdin: Buffer.from('options\0bytes') });
    assert.equal(r.stdout.toString(), 'typescript');
    assert.equal(readFileSync(join(root, 'ts-stdin'), 'utf8'), 'options\0bytes');
  });

  it('start through the standby: sends argv, env, cwd and the runtime options; prints the address', async () => {
    const got = fakeStandby('ok 0 unix:///run/containerd/s/0123\n');
    const requests = await got;
    const args = [...common, '-id', 'c3', 'start'];
    const r = await runLauncher(exe, args, { cwd: bundle, stdin: Buffer.from([1, 2, 0, 3]), env: { TTRPC_ADDRESS: '/run/t.sock.ttrpc' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'unix:///run/containerd/s/0123');
    assert.equal(requests.length, 1);
    assert.deepEqual(requests[0]?.argv, args);
    assert.equal(requests[0]?.cwd, bundle);
    assert.equal(requests[0]?.env['TTRPC_ADDRESS'], '/run/t.sock.ttrpc');
    assert.deepEqual([...(requests[0]?.stdin ?? [])], [1, 2, 0, 3]);
  });

  it('start the standby passes: the TypeScript start gets the runtime options on stdin', async () => {
    await fakeStandby('pass the standby is taken\n');
    rmSync(join(root, 'ts-stdin'), { force: true });
    const r = await runLauncher(exe, [...common, '-id', 'c4', 'start'], { cwd: bundle, stdin: Buffer.from('opts\0') });
    assert.equal(r.stdout.toString(), 'typescript');
    assert.equal(readFileSync(join(root, 'ts-stdin'), 'utf8'), 'opts\0');
  });

  it('start the standby refuses: exit 1 with its message; MOAT_SHIM_STANDBY=0 skips the standby', async () => {
    await fakeStandby('error start: cannot read config.json of the bundle\n');
    let r = await runLauncher(exe, [...common, '-id', 'c5', 'start'], { cwd: bundle });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /containerd-shim-moat-v1: start: cannot read config\.json of the bundle/);
    r = await runLauncher(exe, [...common, '-id', 'c5', 'start'], { cwd: bundle, env: { MOAT_SHIM_STANDBY: '0' } });
    assert.equal(r.stdout.toString(), 'typescript');
  });
});
