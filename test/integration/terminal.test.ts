/**
 * process.terminal and --console-socket, runtime-agnostic: runs against Moat and
 * (MOAT_TEST_RUNTIME=runc) runc. The test plays the console-socket server (what containerd's shim
 * does): it accepts the runtime's connection, receives the pty master with SCM_RIGHTS, and reads
 * the container's output from it.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, read } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fdServer } from '../helpers/fdsocket.js';
import { RUNTIME, Sandbox, skipReason, withTimeout } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping terminal tests: ${skip}`);

const EIO = 5;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));



/** Reads `fd` (a pty master) until `until` appears in the output, EIO (the container side closed) or the timeout. */
async function readPty(fd: number, until: string, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  const buf = Buffer.alloc(4096);
  let out = '';
  while (!out.includes(until) && Date.now() < deadline) {
    const n = await new Promise<number>((resolve, reject) =>
      read(fd, buf, 0, buf.length, null, (err, bytes) => {
        if (!err) resolve(bytes);
        else if (err.errno === -EIO || err.code === 'EIO') resolve(0); // the slave side is closed
        else if (err.code === 'EAGAIN') resolve(-1);
        else reject(err);
      }),
    );
    if (n === 0) break;
    if (n > 0) out += buf.subarray(0, n).toString('utf8');
    else await sleep(10);
  }
  return out;
}

describe(`terminal (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  /** A console-socket server at a fresh path; `master` resolves to the first pty master it receives. */
  async function consoleServer(): Promise<{ path: string; server: Server; master: Promise<{ fd: number; data: string }> }> {
    const path = join(sb.tmp, `console-${sb.id('s')}.sock`);
    const { server, received: master } = await fdServer(path);
    return { path, server, master };
  }

  it('passes the pty master through --console-socket, with the configured size', async () => {
    const b = await sb.bundle(
      ['sh', '-c', 'tty; stty size; echo done-$((6*7))'],
      (s) => {
        s.process.consoleSize = { height: 30, width: 100 };
      },
      true,
    );
    const id = sb.id();
    const { path, server, master } = await consoleServer();
    let fd = -1;
    try {
      const created = await sb.rt(['create', '--console-socket', path, '-b', b, id]);
      assert.equal(created.status, 0, `create failed: ${created.stderr}`);
      const got = await withTimeout(master, 10_000);
      assert.ok(got, 'no pty master arrived on the console socket');
      fd = got.fd;
      assert.ok(fd >= 0);

      await sb.ok(['start', id]);
      const out = await readPty(fd, 'done-42');
      assert.match(out, /\/dev\/pts\/0\r?\n/, `the container's tty must be its own devpts's pts/0: ${JSON.stringify(out)}`);
      assert.match(out, /^30 100\r?$/m, `stty size must show process.consoleSize: ${JSON.stringify(out)}`);
      assert.match(out, /done-42/, `output: ${JSON.stringify(out)}`);
    } finally {
      if (fd >= 0) closeSync(fd);
      server.close();
      await sb.rt(['delete', '--force', id]);
    }
  });

  it('terminal without --console-socket: create fails and leaves nothing behind', async () => {
    const b = await sb.bundle(['sh', '-c', 'tty'], undefined, true);
    const id = sb.id();
    const r = await sb.rt(['create', '-b', b, id]);
    assert.notEqual(r.status, 0, 'create of a terminal container without a console socket must fail');
    assert.match(r.stderr, /console.socket/i, `the error must name the console socket: ${r.stderr}`);
    assert.notEqual((await sb.rt(['state', id])).status, 0, 'state of a container whose create failed must fail');
    assert.equal(existsSync(join(sb.root, id)), false, 'a failed create left its state directory');
    const list = await sb.ok(['list', '--format', 'json']);
    const ids = ((JSON.parse(list.stdout || 'null') ?? []) as { id: string }[]).map((c) => c.id);
    assert.ok(!ids.includes(id), 'a failed create is still listed');
  });

  it('a console socket nobody listens on: create fails and leaves nothing behind', async () => {
    const b = await sb.bundle(['sh', '-c', 'tty'], undefined, true);
    const id = sb.id();
    const missing = join(sb.tmp, 'nobody-listens.sock');
    const r = await sb.rt(['create', '--console-socket', missing, '-b', b, id]);
    assert.notEqual(r.status, 0, 'create must fail when the console socket cannot be reached');
    assert.ok(r.stderr.includes(missing), `the error must name the socket: ${r.stderr}`);
    assert.notEqual((await sb.rt(['state', id])).status, 0);
    assert.equal(existsSync(join(sb.root, id)), false, 'a failed create left its state directory');
  });
});
