/**
 * The wire layer of Moat's containerd shim (src/shim/proto.ts, src/shim/ttrpc.ts): protobuf
 * messages (round trips, Any packing, Timestamps, refusal of malformed bytes), the ttrpc frame
 * decoder, and a TtrpcServer and TtrpcClient talking over a real unix socket.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  EventTopic,
  ProcessStatus,
  Service,
  ShimProtocolError,
  anyOf,
  dateOf,
  decode,
  encode,
  timestamp,
  unpackAny,
} from '../../src/shim/proto.js';
import type {
  CreateTaskRequest,
  CreateTaskResponse,
  ForwardRequest,
  KillRequest,
  StateResponse,
  TaskExit,
  TtrpcResponse,
  WaitRequest,
  WaitResponse,
} from '../../src/shim/proto.js';
import {
  Code,
  FrameDecoder,
  HEADER_LENGTH,
  MAX_MESSAGE_LENGTH,
  MessageType,
  TtrpcClient,
  TtrpcConnectionError,
  TtrpcServer,
  TtrpcStatusError,
  encodeFrame,
} from '../../src/shim/ttrpc.js';
import type { DecodedFrame, Handler } from '../../src/shim/ttrpc.js';
import { MoatError } from '../../src/errors.js';

const T = 'containerd.task.v2';

/** A raw frame header, for what encodeFrame refuses to build. */
function header(length: number, streamId: number, type: number): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(streamId, 4);
  h.writeUInt8(type, 8);
  return h;
}

/** Asserts that `p` rejects with a TtrpcStatusError of `code` whose message matches `re`. */
async function rejectsWith(p: Promise<unknown>, code: number, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TtrpcStatusError, `expected TtrpcStatusError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.match(e.message, re);
    return true;
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('proto: messages', () => {
  it('round-trips a CreateTaskRequest with camelCase fields and defaults filled in', () => {
    const req = {
      id: 'c1',
      bundle: '/run/containerd/io.containerd.runtime.v2.task/default/c1',
      rootfs: [{ type: 'overlay', source: 'overlay', options: ['lowerdir=/a', 'upperdir=/b'] }],
      stdin: '/run/fifo/stdin',
      options: anyOf('containerd.runc.v1.Options', { binaryName: 'moat', systemdCgroup: true }),
    };
    const back = decode<CreateTaskRequest>(`${T}.CreateTaskRequest`, encode(`${T}.CreateTaskRequest`, req));
    assert.equal(back.id, 'c1');
    assert.equal(back.bundle, req.bundle);
    assert.deepEqual(back.rootfs, [{ type: 'overlay', source: 'overlay', target: '', options: ['lowerdir=/a', 'upperdir=/b'] }]);
    assert.equal(back.terminal, false);
    assert.equal(back.stdout, '');
    assert.equal(back.parentCheckpoint, '');
    assert.ok(back.options !== null);
    assert.equal(back.options.typeUrl, 'containerd.runc.v1.Options');
    assert.ok(Buffer.isBuffer(back.options.value));
    const opts = unpackAny<{ binaryName: string; systemdCgroup: boolean; root: string }>(back.options);
    assert.equal(opts.binaryName, 'moat');
    assert.equal(opts.systemdCgroup, true);
    assert.equal(opts.root, '');
  });

  it('writes the field numbers of containerd\'s shim.proto', () => {
    // KillRequest {id=1 "c", exec_id=2 "e", signal=3 9, all=4 true}
    assert.equal(encode(`${T}.KillRequest`, { id: 'c', execId: 'e', signal: 9, all: true }).toString('hex'), '0a0163120165180920' + '01');
    // proto3: default values are not written
    assert.equal(encode(`${T}.CreateTaskResponse`, { pid: 0 }).length, 0);
    const k = decode<KillRequest>(`${T}.KillRequest`, Buffer.from('0a016318' + '0f', 'hex'));
    assert.deepEqual(k, { id: 'c', execId: '', signal: 15, all: false });
  });

  it('decodes StateResponse status as a number and an absent exitedAt as null', () => {
    const s = decode<StateResponse>(`${T}.StateResponse`, encode(`${T}.StateResponse`, { id: 'c1', pid: 42, status: ProcessStatus.RUNNING }));
    assert.equal(s.status, 2);
    assert.equal(s.pid, 42);
    assert.equal(s.exitedAt, null);
    assert.equal(s.execId, '');
  });

  it('packs TaskExit in an Any in a ForwardRequest and back', () => {
    const exitedAt = timestamp(new Date('2024-05-06T07:08:09.123Z'));
    const exit = { containerId: 'c1', id: 'c1', pid: 4242, exitStatus: 137, exitedAt };
    const event = anyOf('containerd.events.TaskExit', exit);
    assert.equal(event.typeUrl, 'containerd.events.TaskExit');
    const wire = encode('containerd.services.events.ttrpc.v1.ForwardRequest', {
      envelope: { timestamp: timestamp(new Date(0)), namespace: 'k8s.io', topic: EventTopic['containerd.events.TaskExit'], event },
    });
    const fwd = decode<ForwardRequest>('containerd.services.events.ttrpc.v1.ForwardRequest', wire);
    assert.ok(fwd.envelope !== null && fwd.envelope.event !== null);
    assert.equal(fwd.envelope.namespace, 'k8s.io');
    assert.equal(fwd.envelope.topic, '/tasks/exit');
    assert.deepEqual(fwd.envelope.timestamp, { seconds: 0, nanos: 0 });
    assert.equal(fwd.envelope.event.typeUrl, 'containerd.events.TaskExit');
    const back = unpackAny<TaskExit>(fwd.envelope.event);
    assert.deepEqual(back, exit);
    assert.deepEqual(decode<TaskExit>('containerd.events.TaskExit', fwd.envelope.event.value), exit);
  });

  it('converts Timestamps to and from Dates, also before 1970 and at Go\'s zero time', () => {
    const d = new Date('2023-11-14T22:13:20.123Z');
    assert.deepEqual(timestamp(d), { seconds: 1700000000, nanos: 123_000_000 });
    assert.equal(dateOf(timestamp(d)).getTime(), d.getTime());
    const before = new Date(-1500); // 1969-12-31T23:59:58.500Z
    assert.deepEqual(timestamp(before), { seconds: -2, nanos: 500_000_000 });
    assert.equal(dateOf(timestamp(before)).getTime(), -1500);
    assert.equal(dateOf({ seconds: 1, nanos: 999_999_999 }).getTime(), 1999);
    const goZero = { seconds: -62135596800, nanos: 0 }; // 0001-01-01T00:00:00Z
    const w = decode<WaitResponse>(`${T}.WaitResponse`, encode(`${T}.WaitResponse`, { exitStatus: 1, exitedAt: goZero }));
    assert.deepEqual(w.exitedAt, goZero);
    assert.equal(dateOf(goZero).toISOString(), '0001-01-01T00:00:00.000Z');
    assert.throws(() => timestamp(new Date(NaN)), ShimProtocolError);
  });

  it('gives 64-bit fields as numbers', () => {
    const m = decode<{ memory: { usage: number } | null; pids: { limit: number } | null }>(
      'io.containerd.cgroups.v2.Metrics',
      encode('io.containerd.cgroups.v2.Metrics', { memory: { usage: 2 ** 40 + 3 }, pids: { limit: 4096 } }),
    );
    assert.equal(m.memory?.usage, 2 ** 40 + 3);
    assert.equal(m.pids?.limit, 4096);
  });

  it('refuses malformed bytes, wrong field types and unknown types with ShimProtocolError', () => {
    const bad = [
      Buffer.from([0x0a, 0x05, 0x61]), // string of 5 bytes, 1 present
      Buffer.from([0xff]), // truncated varint tag
      Buffer.from([0x0f]), // wire type 7
      Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // varint too long
    ];
    for (const b of bad) {
      assert.throws(
        () => decode(`${T}.CreateTaskRequest`, b),
        (e: unknown) => e instanceof ShimProtocolError && e instanceof MoatError && /cannot decode containerd\.task\.v2\.CreateTaskRequest/.test(e.message),
        b.toString('hex'),
      );
    }
    assert.throws(() => encode(`${T}.CreateTaskRequest`, { id: 5 }), /id: string expected/);
    assert.throws(() => encode('no.such.Type', {}), ShimProtocolError);
    assert.throws(() => unpackAny({ typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from('{}') }), ShimProtocolError);
  });
});

describe('ttrpc: FrameDecoder', () => {
  const frames = [
    encodeFrame(1, MessageType.REQUEST, Buffer.from('hello')),
    encodeFrame(3, MessageType.REQUEST, Buffer.alloc(0)),
    encodeFrame(0xfffffffd, MessageType.RESPONSE, Buffer.alloc(70_000, 7)),
  ];
  const all = Buffer.concat(frames);

  const check = (got: DecodedFrame[]): void => {
    assert.equal(got.length, 3);
    assert.deepEqual(got[0], { kind: 'frame', streamId: 1, type: 1, flags: 0, payload: Buffer.from('hello') });
    assert.deepEqual(got[1], { kind: 'frame', streamId: 3, type: 1, flags: 0, payload: Buffer.alloc(0) });
    assert.equal(got[2]?.kind, 'frame');
    assert.equal(got[2]?.streamId, 0xfffffffd);
    assert.ok(got[2]?.kind === 'frame' && got[2].payload.equals(Buffer.alloc(70_000, 7)));
  };

  it('lays a frame out as big-endian u32 length, u32 stream id, u8 type, u8 flags', () => {
    assert.deepEqual([...encodeFrame(5, 2, Buffer.from([0xaa]), 0)], [0, 0, 0, 1, 0, 0, 0, 5, 2, 0, 0xaa]);
  });

  it('decodes several frames from one chunk', () => {
    const d = new FrameDecoder();
    check(d.push(all));
    assert.equal(d.pending, 0);
  });

  it('decodes frames split across chunks at every boundary and byte by byte', () => {
    const small = Buffer.concat(frames.slice(0, 2));
    for (let cut = 0; cut <= small.length; cut++) {
      const d = new FrameDecoder();
      const got = [...d.push(small.subarray(0, cut)), ...d.push(small.subarray(cut))];
      assert.equal(got.length, 2, `cut at ${cut}`);
    }
    const d = new FrameDecoder();
    const got: DecodedFrame[] = [];
    for (let i = 0; i < all.length; i += 997) got.push(...d.push(all.subarray(i, i + 997)));
    check(got);
    const d1 = new FrameDecoder();
    const one: DecodedFrame[] = [];
    for (let i = 0; i < small.length; i++) one.push(...d1.push(small.subarray(i, i + 1)));
    assert.equal(one.length, 2);
  });

  it('reports an oversized frame by its header, skips its payload and goes on', () => {
    const d = new FrameDecoder(16);
    const big = Buffer.concat([header(40, 7, 1), Buffer.alloc(40, 0x55)]);
    const next = encodeFrame(9, 1, Buffer.from('ok'));
    const got = [...d.push(big.subarray(0, 20)), ...d.push(Buffer.concat([big.subarray(20), next]))];
    assert.deepEqual(got, [
      { kind: 'oversized', streamId: 7, type: 1, flags: 0, length: 40 },
      { kind: 'frame', streamId: 9, type: 1, flags: 0, payload: Buffer.from('ok') },
    ]);
    // the default limit is ttrpc's 4 MiB; a header claiming 4 GiB holds no memory
    const d2 = new FrameDecoder();
    assert.deepEqual(d2.push(header(0xffffffff, 1, 1)), [{ kind: 'oversized', streamId: 1, type: 1, flags: 0, length: 0xffffffff }]);
    assert.deepEqual(d2.push(Buffer.alloc(1 << 16)), []);
    assert.equal(d2.pending, 0);
    assert.equal(new FrameDecoder().push(header(MAX_MESSAGE_LENGTH, 1, 1)).length, 0, 'exactly 4 MiB is allowed');
    assert.throws(() => encodeFrame(1, 1, Buffer.alloc(MAX_MESSAGE_LENGTH + 1)), ShimProtocolError);
  });
});

describe('ttrpc: server and client over a unix socket', () => {
  let dir: string;
  let sock: string;
  let server: TtrpcServer;
  let client: TtrpcClient;
  const release = { slow: (): void => undefined };

  const handlers = new Map<string, Handler>([
    [
      `${Service.TASK}/Create`,
      async (payload) => {
        const req = decode<CreateTaskRequest>(`${T}.CreateTaskRequest`, payload);
        return encode(`${T}.CreateTaskResponse`, { pid: req.rootfs.length * 1000 + req.id.length });
      },
    ],
    [
      `${Service.TASK}/Wait`,
      async (payload) => {
        const req = decode<WaitRequest>(`${T}.WaitRequest`, payload);
        await new Promise<void>((resolve) => {
          release.slow = resolve;
        });
        return encode(`${T}.WaitResponse`, { exitStatus: req.id === 'slow' ? 7 : 0, exitedAt: timestamp(new Date(5000)) });
      },
    ],
    [
      `${Service.TASK}/Kill`,
      async (payload) => {
        const req = decode<KillRequest>(`${T}.KillRequest`, payload);
        if (req.id === 'ghost') throw new TtrpcStatusError(Code.NOT_FOUND, 'container ghost: not found');
        if (req.id === 'boom') throw new Error('kaboom');
        return encode('google.protobuf.Empty', {});
      },
    ],
    // a buggy handler that resolves to nothing
    [`${Service.TASK}/Pids`, async () => undefined as unknown as Buffer],
    [
      `${Service.TASK}/State`,
      async (_payload, ctx) => {
        return encode(`${T}.StateResponse`, { id: (ctx.metadata['containerd-namespace-ttrpc'] ?? []).join(',') });
      },
    ],
  ]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'moat-ttrpc-'));
    sock = join(dir, 's.sock');
    server = new TtrpcServer(handlers);
    await server.listen(sock);
    client = await TtrpcClient.connect(sock, 2000);
  });

  after(async () => {
    await client.close();
    await server.close(1000);
    rmSync(dir, { recursive: true, force: true });
  });

  it('round-trips a Create request and response', async () => {
    const payload = encode(`${T}.CreateTaskRequest`, { id: 'abc', bundle: '/b', rootfs: [{ type: 'bind', source: '/x' }, { type: 'tmpfs' }] });
    const resp = await client.call(Service.TASK, 'Create', payload, 2000);
    assert.deepEqual(decode<CreateTaskResponse>(`${T}.CreateTaskResponse`, resp), { pid: 2003 });
    assert.equal(server.connections, 1);
  });

  it('serves calls on one connection concurrently: a fast Kill answers while a Wait is pending', async () => {
    const wait = client.call(Service.TASK, 'Wait', encode(`${T}.WaitRequest`, { id: 'slow' }));
    let waitDone = false;
    void wait.then(() => (waitDone = true));
    await sleep(20);
    const kill = await client.call(Service.TASK, 'Kill', encode(`${T}.KillRequest`, { id: 'c1', signal: 9 }), 2000);
    assert.equal(kill.length, 0);
    assert.equal(waitDone, false);
    release.slow();
    const w = decode<WaitResponse>(`${T}.WaitResponse`, await wait);
    assert.equal(w.exitStatus, 7);
    assert.ok(w.exitedAt !== null);
    assert.equal(dateOf(w.exitedAt).getTime(), 5000);
  });

  it('answers an unknown method or service with UNIMPLEMENTED', async () => {
    await rejectsWith(client.call(Service.TASK, 'Frobnicate', Buffer.alloc(0), 2000), Code.UNIMPLEMENTED, /^method Frobnicate$/);
    await rejectsWith(client.call('no.such.Service', 'Create', Buffer.alloc(0), 2000), Code.UNIMPLEMENTED, /^service no\.such\.Service$/);
  });

  it('passes a handler\'s TtrpcStatusError through, any other error as UNKNOWN, no payload as INTERNAL', async () => {
    await rejectsWith(client.call(Service.TASK, 'Kill', encode(`${T}.KillRequest`, { id: 'ghost' }), 2000), Code.NOT_FOUND, /^container ghost: not found$/);
    await rejectsWith(client.call(Service.TASK, 'Kill', encode(`${T}.KillRequest`, { id: 'boom' }), 2000), Code.UNKNOWN, /^kaboom$/);
    await rejectsWith(client.call(Service.TASK, 'Pids', Buffer.alloc(0), 2000), Code.INTERNAL, /Pids returned no payload/);
  });

  it('answers a malformed payload for a known method with INTERNAL, and keeps serving', async () => {
    await rejectsWith(
      client.call(Service.TASK, 'Create', Buffer.from([0x0a, 0x7f, 0x01]), 2000),
      Code.INTERNAL,
      /cannot decode containerd\.task\.v2\.CreateTaskRequest/,
    );
    const resp = await client.call(Service.TASK, 'Create', encode(`${T}.CreateTaskRequest`, { id: 'x' }), 2000);
    assert.equal(decode<CreateTaskResponse>(`${T}.CreateTaskResponse`, resp).pid, 1);
  });

  it('hands request metadata to the handler', async () => {
    const resp = await client.call(Service.TASK, 'State', encode(`${T}.StateRequest`, { id: 'c1' }), 2000, {
      'containerd-namespace-ttrpc': 'k8s.io',
    });
    assert.equal(decode<StateResponse>(`${T}.StateResponse`, resp).id, 'k8s.io');
  });

  it('rejects a call that outlives its timeout with DEADLINE_EXCEEDED', async () => {
    await rejectsWith(client.call(Service.TASK, 'Wait', encode(`${T}.WaitRequest`, { id: 'late' }), 30), Code.DEADLINE_EXCEEDED, /deadline/);
    release.slow(); // the late response is dropped by the client
    const resp = await client.call(Service.TASK, 'Create', encode(`${T}.CreateTaskRequest`, { id: 'yy' }), 2000);
    assert.equal(decode<CreateTaskResponse>(`${T}.CreateTaskResponse`, resp).pid, 2);
  });

  it('answers raw protocol errors on their stream id and keeps the connection: oversized frame, bad request, even stream id', async () => {
    const raw = net.createConnection(sock);
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    const decoder = new FrameDecoder();
    const got: DecodedFrame[] = [];
    raw.on('data', (c: Buffer) => got.push(...decoder.push(c)));
    const waitFor = async (n: number): Promise<void> => {
      for (let i = 0; i < 200 && got.length < n; i++) await sleep(5);
      assert.equal(got.length, n);
    };
    const statusOf = (f: DecodedFrame | undefined): { streamId: number; code: number; message: string } => {
      assert.ok(f?.kind === 'frame');
      assert.equal(f.type, MessageType.RESPONSE);
      const r = decode<TtrpcResponse>('ttrpc.Response', f.payload);
      return { streamId: f.streamId, code: r.status?.code ?? 0, message: r.status?.message ?? '' };
    };

    // a header claiming 5 MiB, followed by that many bytes of junk
    raw.write(header(5 << 20, 11, MessageType.REQUEST));
    raw.write(Buffer.alloc(5 << 20, 0xee));
    await waitFor(1);
    assert.deepEqual(statusOf(got[0]), {
      streamId: 11,
      code: Code.RESOURCE_EXHAUSTED,
      message: `message length ${5 << 20} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`,
    });

    raw.write(encodeFrame(13, MessageType.REQUEST, Buffer.from([0x0a, 0x09])));
    await waitFor(2);
    const bad = statusOf(got[1]);
    assert.equal(bad.streamId, 13);
    assert.equal(bad.code, Code.INVALID_ARGUMENT);
    assert.match(bad.message, /^unmarshal request error: /);

    const req = encode('ttrpc.Request', { service: Service.TASK, method: 'Create', payload: encode(`${T}.CreateTaskRequest`, { id: 'q' }) });
    raw.write(encodeFrame(2, MessageType.REQUEST, req));
    await waitFor(3);
    assert.deepEqual(statusOf(got[2]), { streamId: 2, code: Code.INVALID_ARGUMENT, message: 'StreamID must be odd for client initiated streams' });

    // frames of other types are ignored; the connection still serves requests
    raw.write(encodeFrame(15, MessageType.DATA, Buffer.from('zz')));
    raw.write(encodeFrame(17, MessageType.REQUEST, req));
    await waitFor(4);
    const ok = got[3];
    assert.ok(ok?.kind === 'frame' && ok.streamId === 17);
    const r = decode<TtrpcResponse>('ttrpc.Response', ok.payload);
    assert.equal(r.status?.code ?? 0, Code.OK);
    assert.equal(decode<CreateTaskResponse>(`${T}.CreateTaskResponse`, r.payload).pid, 1);
    raw.destroy();
  });

  it('uses odd, increasing stream ids', async () => {
    // a server of our own that records the ids it sees
    const ids: number[] = [];
    const path = join(dir, 'ids.sock');
    const srv = net.createServer((s) => {
      const d = new FrameDecoder();
      s.on('data', (c: Buffer) => {
        for (const f of d.push(c)) {
          ids.push(f.streamId);
          s.write(encodeFrame(f.streamId, MessageType.RESPONSE, encode('ttrpc.Response', { payload: Buffer.from('r') })));
        }
      });
    });
    await new Promise<void>((resolve) => srv.listen(path, resolve));
    const c = await TtrpcClient.connect(path);
    for (let i = 0; i < 3; i++) assert.equal((await c.call('s', 'm', Buffer.alloc(0))).toString(), 'r');
    assert.deepEqual(ids, [1, 3, 5]);
    await c.close();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  });

  it('rejects pending and later calls with TtrpcConnectionError once the connection closes', async () => {
    const c = await TtrpcClient.connect(sock, 2000);
    const pending = c.call(Service.TASK, 'Wait', encode(`${T}.WaitRequest`, { id: 'w' }));
    await sleep(20);
    await c.close();
    await assert.rejects(pending, TtrpcConnectionError);
    await assert.rejects(c.call(Service.TASK, 'Create', Buffer.alloc(0)), TtrpcConnectionError);
    release.slow();
    await assert.rejects(TtrpcClient.connect(join(dir, 'nothing.sock'), 500), TtrpcConnectionError);
  });

  it('close() lets an in-flight call finish, refuses new ones, then ends the connection', async () => {
    const path = join(dir, 'close.sock');
    const s = new TtrpcServer(handlers);
    await s.listen(path);
    const c = await TtrpcClient.connect(path, 2000);
    const wait = c.call(Service.TASK, 'Wait', encode(`${T}.WaitRequest`, { id: 'slow' }));
    await sleep(20);
    let closed = false;
    const closing = s.close().then(() => (closed = true));
    await rejectsWith(c.call(Service.TASK, 'Create', encode(`${T}.CreateTaskRequest`, { id: 'n' }), 2000), Code.UNAVAILABLE, /server closed/);
    assert.equal(closed, false);
    release.slow();
    assert.equal(decode<WaitResponse>(`${T}.WaitResponse`, await wait).exitStatus, 7);
    await closing;
    assert.equal(s.connections, 0);
    await assert.rejects(TtrpcClient.connect(path, 500), TtrpcConnectionError);
    await assert.rejects(c.call(Service.TASK, 'Create', Buffer.alloc(0), 500), TtrpcConnectionError);
  });
});
