/**
 * The guest agent (dist/moat-agent) without a VM: its hidden test mode, `--test-fd N`, skips the
 * boot steps and serves the control protocol on fd N, here one end of the socketpair Node makes
 * for a 'pipe' stdio entry. Needs no privileges.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  FrameDecoder,
  MAX_OUTPUT,
  MAX_STDIN_QUEUE,
  MSG,
  STREAM_ALL,
  SIGKILL,
  decodeExit,
  decodeNameQuery,
  decodePids,
  encodeFrame,
  encodeNameAnswer,
  encodeRun,
  encodeWinsize,
  u32Payload,
} from '../../src/backends/microvm/protocol.js';
import type { Frame, ProcessSpec } from '../../src/backends/microvm/protocol.js';
import { dnsQuery } from '../helpers/dns.js';
import { REPO } from '../helpers/runtime.js';

const AGENT = join(REPO, 'dist/moat-agent');
const SKIP = existsSync(AGENT) ? undefined : `${AGENT} is missing (build it with: node scripts/build.mjs)`;
if (SKIP) console.log(`# skipped: ${SKIP}`);

/** A process spec running as the test's own user. */
function spec(args: string[], extra: Partial<ProcessSpec> = {}): ProcessSpec {
  return {
    args,
    env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'LC_ALL=C'],
    cwd: '/',
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    groups: [],
    rlimits: [],
    ...extra,
  };
}

/** One agent in test mode, with the frames it sent so far. */
class Agent {
  readonly child: ChildProcess;
  private readonly sock: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly frames: Frame[] = [];
  private wake: () => void = () => {};
  private error: unknown;
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(extra: string[] = []) {
    this.child = spawn(AGENT, ['--test-fd', '3', ...extra], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.sock = this.child.stdio[3] as Socket;
    this.sock.on('data', (chunk: Buffer) => {
      try {
        this.frames.push(...this.decoder.push(chunk));
      } catch (e) {
        this.error = e;
      }
      this.wake();
    });
    this.sock.on('error', () => {}); // the agent exiting resets the socket; `exited` reports it
    this.exited = new Promise((res) => this.child.on('exit', (code, signal) => res({ code, signal })));
    void this.exited.then(() => this.wake());
  }

  send(type: string, stream: number, payload: Buffer = Buffer.alloc(0)): void {
    this.sock.write(encodeFrame({ type, stream, payload }));
  }

  sendRaw(b: Buffer): void {
    this.sock.write(b);
  }

  run(stream: number, s: ProcessSpec): void {
    this.send(MSG.RUN, stream, encodeRun(s));
  }

  /** Resolves once `ready()` holds, checking after every chunk from the agent; at most `ms`. */
  private async waitFor(ready: () => boolean, what: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.error) throw this.error;
      if (ready()) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; pending frames: ${this.describe()}; agent stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, Math.min(left, 200));
        this.wake = () => {
          clearTimeout(t);
          res();
        };
      });
    }
  }

  /** Removes and returns the first frame `pred` accepts, waiting up to `ms` for it. */
  async next(pred: (f: Frame) => boolean, what: string, ms = 10_000): Promise<Frame> {
    await this.waitFor(() => this.frames.some(pred), what, ms);
    return this.frames.splice(this.frames.findIndex(pred), 1)[0]!;
  }

  /** Waits for `stream`'s EXIT; removes and returns every frame of that stream up to it, in order. */
  async untilExit(stream: number, ms = 10_000): Promise<Frame[]> {
    await this.waitFor(() => this.frames.some((f) => f.stream === stream && f.type === MSG.EXIT), `EXIT of stream ${stream}`, ms);
    const mine: Frame[] = [];
    for (let i = 0; i < this.frames.length; ) {
      const f = this.frames[i]!;
      if (f.stream !== stream) {
        i++;
        continue;
      }
      mine.push(...this.frames.splice(i, 1));
      if (f.type === MSG.EXIT) break;
    }
    return mine;
  }

  private describe(): string {
    return JSON.stringify(this.frames.map((f) => `${f.type}/${f.stream}/${f.payload.length}`));
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

const text = (frames: Frame[], type: string): string =>
  Buffer.concat(frames.filter((f) => f.type === type).map((f) => f.payload)).toString();

describe('moat-agent --test-fd', { skip: SKIP }, () => {
  let agent: Agent;
  before(async () => {
    agent = new Agent();
    const hello = await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
    assert.equal(hello.payload.toString(), release(), 'HELLO carries uname -r');
  });
  after(() => agent?.kill());

  it('runs a process with stdin, stdout, stderr and its exit status (stream 0 ending keeps the test agent up)', async () => {
    agent.run(0, spec(['sh', '-c', 'read x; echo out:$x; echo err >&2; exit 3']));
    agent.send(MSG.STDIN, 0, Buffer.from('hi\n'));
    agent.send(MSG.STDIN, 0, Buffer.alloc(0));
    const frames = await agent.untilExit(0);
    assert.equal(frames[0]!.type, MSG.STARTED);
    assert.ok(frames[0]!.payload.readUInt32LE(0) > 1);
    assert.equal(text(frames, MSG.STDOUT), 'out:hi\n');
    assert.equal(text(frames, MSG.STDERR), 'err\n');
    assert.equal(decodeExit(frames.at(-1)!.payload), 3);
    assert.ok(!frames.some((f) => f.type === MSG.FAILURE));
  });

  it('TERMINAL: the process runs on a pty of that size as its controlling terminal; RESIZE changes the size', async () => {
    agent.run(20, spec(['sh', '-c', 'tty; stty size; read x; stty size; echo "got:$x"; exit 4'], { terminal: { rows: 30, cols: 100 } }));
    const started = await agent.next((f) => f.type === MSG.STARTED && f.stream === 20, 'STARTED');
    // resized once the first size is out (the process then waits in read)
    const first: Frame[] = [];
    while (!text(first, MSG.STDOUT).includes('30 100')) first.push(await agent.next((f) => f.type === MSG.STDOUT && f.stream === 20, 'the first size'));
    agent.send(MSG.RESIZE, 20, encodeWinsize(40, 120));
    agent.send(MSG.STDIN, 20, Buffer.from('hi\n'));
    const frames = [started, ...first, ...(await agent.untilExit(20))];
    const out = text(frames, MSG.STDOUT);
    // the terminal's line discipline: \n becomes \r\n, and "hi" is echoed
    assert.match(out, /^\/dev\/pts\/\d+\r\n30 100\r\nhi\r\n40 120\r\ngot:hi\r\n$/);
    assert.equal(text(frames, MSG.STDERR), '', 'a terminal has no separate stderr');
    assert.equal(decodeExit(frames.at(-1)!.payload), 4);
    agent.send(MSG.RESIZE, 20, encodeWinsize(1, 1));
    const f = await agent.next((x) => x.type === MSG.FAILURE && x.stream === 20, 'FAILURE');
    assert.match(f.payload.toString(), /stream 20 has no terminal/);
  });

  it('lists pids, refuses a second RUN of a running stream, and kills a stream (EXIT 128 + 9)', async () => {
    agent.run(1, spec(['sleep', '30']));
    const started = await agent.next((f) => f.stream === 1 && f.type === MSG.STARTED, 'STARTED of sleep');
    const pid = started.payload.readUInt32LE(0);

    agent.send(MSG.PS, 5);
    const list = await agent.next((f) => f.type === MSG.LIST, 'LIST');
    assert.equal(list.stream, 5);
    const pids = decodePids(list.payload);
    assert.ok(pids.includes(pid), `LIST has the sleep's pid ${pid}`);
    assert.ok(pids.includes(agent.child.pid!), 'LIST has the agent');

    agent.run(1, spec(['true']));
    const dup = await agent.next((f) => f.stream === 1 && f.type === MSG.FAILURE, 'FAILURE of a second RUN');
    assert.match(dup.payload.toString(), /already running/);

    agent.send(MSG.KILL, 1, u32Payload(SIGKILL));
    const frames = await agent.untilExit(1);
    assert.equal(decodeExit(frames.at(-1)!.payload), 137);
  });

  it('reports an exec failure as FAILURE and EXIT 127 (ENOENT) or 126 (EACCES), without STARTED', async () => {
    agent.run(2, spec(['/nonexistent']));
    let frames = await agent.untilExit(2);
    assert.deepEqual(frames.map((f) => f.type), [MSG.FAILURE, MSG.EXIT]);
    assert.equal(frames[0]!.payload.toString(), 'exec /nonexistent: No such file or directory');
    assert.equal(decodeExit(frames[1]!.payload), 127);

    const dir = mkdtempSync(join(tmpdir(), 'moat-agent-'));
    try {
      const plain = join(dir, 'not-executable');
      writeFileSync(plain, 'echo no\n', { mode: 0o644 });
      agent.run(2, spec([plain]));
      frames = await agent.untilExit(2);
      assert.deepEqual(frames.map((f) => f.type), [MSG.FAILURE, MSG.EXIT]);
      assert.equal(frames[0]!.payload.toString(), `exec ${plain}: Permission denied`);
      assert.equal(decodeExit(frames[1]!.payload), 126);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    // a missing cwd is created (as runc does); one under a regular file cannot be
    agent.run(2, spec(['true'], { cwd: '/etc/hostname/sub' }));
    frames = await agent.untilExit(2);
    assert.equal(frames[0]!.payload.toString(), 'chdir /etc/hostname/sub: Not a directory');
    assert.equal(decodeExit(frames[1]!.payload), 126);
  });

  it('splits large output into frames of at most 64 KiB and sends all of it before EXIT', async () => {
    agent.run(3, spec(['head', '-c', '300000', '/dev/zero']));
    const frames = await agent.untilExit(3);
    const out = frames.filter((f) => f.type === MSG.STDOUT);
    assert.ok(out.every((f) => f.payload.length <= MAX_OUTPUT));
    assert.equal(out.reduce((n, f) => n + f.payload.length, 0), 300000);
    assert.equal(decodeExit(frames.at(-1)!.payload), 0);
  });

  it('does not hold EXIT back for a background process that keeps stdout open', async () => {
    const t0 = Date.now();
    agent.run(4, spec(['sh', '-c', 'sleep 3 & echo bg; exit 0']));
    const frames = await agent.untilExit(4);
    assert.ok(Date.now() - t0 < 2500, 'EXIT came before the background sleep ended');
    assert.equal(text(frames, MSG.STDOUT), 'bg\n');
    assert.equal(decodeExit(frames.at(-1)!.payload), 0);
  });

  it('passes env, cwd and umask, and reports a signal as 128 + signal', async () => {
    agent.run(6, spec(['sh', '-c', 'echo "$FOO $(pwd) $(umask)"; kill -TERM $$'], { env: ['PATH=/usr/bin:/bin', 'FOO=bar'], cwd: '/tmp', umask: 0o027 }));
    const frames = await agent.untilExit(6);
    assert.equal(text(frames, MSG.STDOUT), 'bar /tmp 0027\n');
    assert.equal(decodeExit(frames.at(-1)!.payload), 128 + 15);
  });

  it('closes a stdin that queues more than 1 MiB, with FAILURE; the process sees EOF', async () => {
    // the process reads nothing until the queue overflows, then counts what reached it
    agent.run(7, spec(['sh', '-c', 'sleep 1; wc -c']));
    await agent.next((f) => f.stream === 7 && f.type === MSG.STARTED, 'STARTED');
    agent.send(MSG.STDIN, 7, Buffer.alloc(MAX_STDIN_QUEUE, 0x61));
    agent.send(MSG.STDIN, 7, Buffer.alloc(MAX_STDIN_QUEUE, 0x62));
    const frames = await agent.untilExit(7);
    const failure = frames.find((f) => f.type === MSG.FAILURE);
    assert.equal(failure?.payload.toString(), 'stdin: more than 1048576 bytes queued; stdin closed');
    assert.ok(Number(text(frames, MSG.STDOUT).trim()) < 2 * MAX_STDIN_QUEUE);
    assert.equal(decodeExit(frames.at(-1)!.payload), 0);
  });

  it('exits 0 on SHUTDOWN', async () => {
    agent.send(MSG.SHUTDOWN, 0);
    const { code } = await agent.exited;
    assert.equal(code, 0);
  });
});

describe('moat-agent --test-fd, malformed input', { skip: SKIP }, () => {
  it('answers an unknown frame type with FAILURE(0xffffffff, "protocol: ...") and exits', async () => {
    const agent = new Agent();
    try {
      await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
      const bad = Buffer.alloc(9);
      bad.writeUInt32LE(5, 0);
      bad.write('Z', 4);
      agent.sendRaw(bad);
      const f = await agent.next((x) => x.type === MSG.FAILURE, 'FAILURE');
      assert.equal(f.stream, STREAM_ALL);
      assert.match(f.payload.toString(), /^protocol: unknown frame type 0x5a \('Z'\)$/);
      const { code } = await agent.exited;
      assert.equal(code, 1);
    } finally {
      agent.kill();
    }
  });

  it('refuses a RUN whose spec has an unknown record, and a KILL of the wrong size', async () => {
    for (const [frame, re] of [
      [encodeFrame({ type: MSG.RUN, stream: 0, payload: Buffer.from([42, 0, 0, 0, 0]) }), /^protocol: RUN: unknown record tag 42$/],
      [encodeFrame({ type: MSG.KILL, stream: 0, payload: Buffer.alloc(2) }), /^protocol: KILL payload of 2 bytes \(want 4\)$/],
    ] as const) {
      const agent = new Agent();
      try {
        await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
        agent.sendRaw(frame);
        const f = await agent.next((x) => x.type === MSG.FAILURE, 'FAILURE');
        assert.match(f.payload.toString(), re);
        assert.equal((await agent.exited).code, 1);
      } finally {
        agent.kill();
      }
    }
  });

  it('refuses mounts outside a VM (test mode) with FAILURE and EXIT 126, and a malformed BIND as a protocol error', async () => {
    const agent = new Agent();
    try {
      await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
      const bind = { kind: 'bind' as const, tag: 'moat.b0', destination: '/data', file: false, readonly: true, nosuid: false, nodev: false, noexec: false };
      agent.send(MSG.RUN, 0, encodeRun(spec(['true'], { mounts: [bind] })));
      const f = await agent.next((x) => x.type === MSG.FAILURE, 'FAILURE');
      assert.match(f.payload.toString(), /mounts are for stream 0 of a VM only/);
      assert.equal(decodeExit((await agent.next((x) => x.type === MSG.EXIT, 'EXIT')).payload), 126);
    } finally {
      agent.kill();
    }
    // a tag byte QEMU would not take: the whole RUN is a protocol error
    const bad = Buffer.concat([Buffer.from([11, 10, 0, 0, 0, 0, 3]), Buffer.from('a/b/data'), Buffer.from([1, 4, 0, 0, 0]), Buffer.from('true')]);
    const agent2 = new Agent();
    try {
      await agent2.next((x) => x.type === MSG.HELLO, 'HELLO');
      agent2.sendRaw(encodeFrame({ type: MSG.RUN, stream: 0, payload: bad }));
      const f = await agent2.next((x) => x.type === MSG.FAILURE, 'FAILURE');
      assert.match(f.payload.toString(), /^protocol: RUN: BIND tag byte 0x2f$/);
      assert.equal((await agent2.exited).code, 1);
    } finally {
      agent2.kill();
    }
  });

  it('exits when the host closes the channel', async () => {
    const agent = new Agent();
    try {
      await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
      (agent.child.stdio[3] as Socket).end();
      assert.equal((await agent.exited).code, 0);
    } finally {
      agent.kill();
    }
  });
});

describe('moat-agent --test-fd --dns: the name relay', { skip: SKIP }, () => {
  let agent: Agent;
  let port = 0;
  before(async () => {
    port = await freeUdpPort();
    agent = new Agent(['--dns', '127.0.0.1', '--dns-port', String(port)]);
    await agent.next((f) => f.type === MSG.HELLO, 'HELLO');
  });
  after(() => agent?.kill());

  it('sends a UDP query on as NAME_QUERY and NAME_ANSWER back to the client; an empty answer drops it', async () => {
    const client = createSocket('udp4');
    try {
      const got: Buffer[] = [];
      client.on('message', (m) => got.push(m));
      const q = dnsQuery(0x1234, 'peer.moat.test');
      client.send(q, port, '127.0.0.1');
      const f = await agent.next((x) => x.type === MSG.NAME_QUERY, 'NAME_QUERY');
      assert.equal(f.stream, STREAM_ALL);
      const nq = decodeNameQuery(f.payload);
      assert.deepEqual({ server: nq.server, transport: nq.transport, message: nq.message }, { server: 0, transport: 'udp', message: q });
      // an empty answer: nothing reaches the client (the next answer does, and only it)
      client.send(dnsQuery(0x5678, 'other.moat.test'), port, '127.0.0.1');
      const f2 = await agent.next((x) => x.type === MSG.NAME_QUERY, 'the second NAME_QUERY');
      agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(decodeNameQuery(f2.payload).id, Buffer.alloc(0)));
      const reply = Buffer.concat([q.subarray(0, 12), Buffer.from('answer')]);
      agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(nq.id, reply));
      // an answer to a query nobody asked is ignored
      agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(nq.id + 1000, reply));
      assert.ok(await waitUntil(() => got.length >= 1), 'no reply reached the UDP client');
      assert.deepEqual(got, [reply]);
    } finally {
      client.close();
    }
  });

  it('TCP: two queries in one write are sent on one at a time and answered in order with their lengths; an empty answer closes', async () => {
    const conn = connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    let closed = false;
    conn.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
    conn.on('close', () => (closed = true));
    conn.on('error', () => {});
    await new Promise<void>((r) => conn.on('connect', () => r()));
    const framed = (m: Buffer): Buffer => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);
    const q1 = dnsQuery(1, 'a.moat.test');
    const q2 = dnsQuery(2, 'b.moat.test', 28);
    conn.write(Buffer.concat([framed(q1), framed(q2)]));
    const f1 = decodeNameQuery((await agent.next((x) => x.type === MSG.NAME_QUERY, 'the first TCP query')).payload);
    assert.deepEqual({ transport: f1.transport, message: f1.message }, { transport: 'tcp', message: q1 });
    // one at a time: the second is not sent on before the first is answered
    await new Promise((r) => setTimeout(r, 200));
    await assert.rejects(agent.next((x) => x.type === MSG.NAME_QUERY, 'no second query yet', 100), /timed out/);
    const a1 = Buffer.alloc(3000, 0x61);
    agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(f1.id, a1));
    const f2 = decodeNameQuery((await agent.next((x) => x.type === MSG.NAME_QUERY, 'the second TCP query')).payload);
    assert.deepEqual(f2.message, q2);
    const a2 = Buffer.from('second answer');
    agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(f2.id, a2));
    assert.ok(await waitUntil(() => got.length >= 2 + a1.length + 2 + a2.length), `the client got ${got.length} bytes`);
    assert.deepEqual(got, Buffer.concat([framed(a1), framed(a2)]));
    conn.write(framed(dnsQuery(3, 'c.moat.test')));
    const f3 = decodeNameQuery((await agent.next((x) => x.type === MSG.NAME_QUERY, 'the third TCP query')).payload);
    agent.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(f3.id, Buffer.alloc(0)));
    assert.ok(await waitUntil(() => closed), 'an empty answer did not close the connection');
  });

  it('a NAME_ANSWER shorter than its id is a protocol error', async () => {
    const a = new Agent(['--dns', '127.0.0.1', '--dns-port', String(await freeUdpPort())]);
    try {
      await a.next((x) => x.type === MSG.HELLO, 'HELLO');
      a.send(MSG.NAME_ANSWER, STREAM_ALL, Buffer.alloc(3));
      const f = await a.next((x) => x.type === MSG.FAILURE, 'FAILURE');
      assert.match(f.payload.toString(), /^protocol: NAME_ANSWER payload of 3 bytes \(want 4 to 65539\)$/);
      assert.equal((await a.exited).code, 1);
    } finally {
      a.kill();
    }
  });

  it('closes a TCP client that makes no progress for --dns-idle-ms, and keeps one whose query is at the host', async () => {
    const a = new Agent(['--dns', '127.0.0.1', '--dns-port', String(await freeUdpPort()), '--dns-idle-ms', '300']);
    try {
      await a.next((x) => x.type === MSG.HELLO, 'HELLO');
      const port = Number(a.child.spawnargs[a.child.spawnargs.indexOf('--dns-port') + 1]);
      const open = async (): Promise<{ conn: Socket; closed: () => boolean }> => {
        const conn = connect({ host: '127.0.0.1', port });
        let closed = false;
        conn.on('close', () => (closed = true));
        conn.on('error', () => {});
        await new Promise<void>((r) => conn.on('connect', () => r()));
        return { conn, closed: () => closed };
      };
      const idle = await open();
      const busy = await open();
      const q = dnsQuery(9, 'slow.moat.test');
      busy.conn.write(Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]));
      const f = decodeNameQuery((await a.next((x) => x.type === MSG.NAME_QUERY, 'the query')).payload);
      assert.ok(await waitUntil(() => idle.closed()), 'the idle client was not closed');
      await new Promise((r) => setTimeout(r, 600)); // twice the idle time: the waiting client stays
      assert.equal(busy.closed(), false, 'a client whose query is at the host was closed');
      a.send(MSG.NAME_ANSWER, STREAM_ALL, encodeNameAnswer(f.id, Buffer.from('late answer')));
      let got = Buffer.alloc(0);
      busy.conn.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
      assert.ok(await waitUntil(() => got.length >= 13), 'the answer did not arrive');
      assert.equal(got.subarray(2).toString(), 'late answer');
      // and then, idle again, it goes too
      assert.ok(await waitUntil(() => busy.closed()), 'the client was not closed once idle');
    } finally {
      a.kill();
    }
  });

  it('refuses a bad --dns option', async () => {
    const a = new Agent(['--dns-port', '0']);
    assert.equal((await a.exited).code, 2);
    assert.match(a.stderr, /--dns-port 0: expected --dns ADDR \(at most 3\), --dns-port PORT or --dns-idle-ms MS/);
  });
});

/** A UDP and TCP port free on 127.0.0.1 a moment ago. */
async function freeUdpPort(): Promise<number> {
  for (;;) {
    const u = createSocket('udp4');
    await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
    const port = u.address().port;
    const t = createServer();
    const ok = await new Promise<boolean>((r) => {
      t.once('error', () => r(false));
      t.listen(port, '127.0.0.1', () => r(true));
    });
    u.close();
    if (ok) {
      await new Promise<void>((r) => t.close(() => r()));
      return port;
    }
  }
}

/** Polls `fn` every 20 ms for up to 10 s. */
async function waitUntil(fn: () => boolean): Promise<boolean> {
  for (let i = 0; i < 500; i++) {
    if (fn()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return fn();
}
