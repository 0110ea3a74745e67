/**
 * Checkpoint and restore under the microvm isolation (src/backends/microvm/checkpoint.ts): real
 * VMs under TCG; a counter goes on from its value in a restored VM, the disk comes back with the
 * memory, a damaged image is refused before anything runs, and what cannot be checkpointed says
 * so.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IMAGE_FILE, ImageReader, SECTION } from '../../src/checkpoint/image.js';
import { microvmSkipReason } from '../helpers/microvm.js';
import { moduleLines, numbers, processMentions, PYTHON_MODULES, rewriteImage, runtimeTo } from '../helpers/checkpoint.js';
import { makePythonBundle, pythonSkipReason } from '../fixtures/python.js';
import { Sandbox, waitFor } from '../helpers/runtime.js';

const skip = microvmSkipReason();
if (skip) console.log(`# skipping microvm checkpoint tests: ${skip}`);
const VM_TIMEOUT = 180_000;

/** The counter: prints 1, 2, 3 ... five times a second, and keeps the last value in /count. */
const COUNTER = ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i; echo $i > /count; sleep 0.2; done'];

describe('microvm: checkpoint and restore', { skip, timeout: 15 * 60_000 }, () => {
  const sb = new Sandbox();
  before(async () => {
    const r = await sb.rt(['guest', 'build'], { timeoutMs: VM_TIMEOUT });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => sb.cleanup());


  it('a counter checkpointed and restored goes on from its value, with its disk', async () => {
    const b = await sb.bundle(COUNTER);
    const id = sb.id('ck');
    const out1 = join(sb.tmp, `${id}.out1`);
    assert.equal((await runtimeTo(sb, ['create', '--isolation', 'microvm', '-b', b, id], out1)).status, 0);
    await sb.ok(['start', id]);
    assert.ok(await waitFor(() => existsSync(out1) && numbers(out1).length >= 5, 60_000), 'the counter never counted');
    const image = join(sb.tmp, `${id}-image`);
    const c = await sb.rt(['checkpoint', '--image-path', image, id], { timeoutMs: 120_000 });
    assert.equal(c.status, 0, c.stderr);
    // without --leave-running the container ends, as with runc
    assert.match((await sb.ok(['state', id])).stdout, /"status": "stopped"/);
    const last = Math.max(...numbers(out1));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(Math.max(...numbers(out1)), last, 'the counter went on after the checkpoint');
    await sb.ok(['delete', id]);

    const id2 = sb.id('rs');
    const out2 = join(sb.tmp, `${id2}.out2`);
    const r = await runtimeTo(sb, ['restore', '-d', '--image-path', image, '-b', b, id2], out2);
    assert.equal(r.status, 0, r.stderr);
    try {
      assert.match((await sb.ok(['state', id2])).stdout, /"status": "running"/);
      assert.ok(await waitFor(() => existsSync(out2) && numbers(out2).length >= 3, 60_000), 'the restored counter printed nothing');
      const got = numbers(out2);
      assert.ok(got[0]! > last && got[0]! <= last + 2, `the restored counter started at ${got[0]}, the checkpoint was at ${last}`);
      // the disk came back consistent with the memory: /count holds what the counter wrote last
      const count = await sb.rt(['exec', id2, 'cat', '/count'], { timeoutMs: 60_000 });
      assert.ok(Number(count.stdout) >= got[0]!, `/count is ${count.stdout.trim()} (${count.stderr})`);
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('a python3 process that imported modules restores with them loaded', { skip: pythonSkipReason() }, async () => {
    // it imports, then reports how many modules it holds and whether each name is importable
    // without loading anything new, every 200 ms: the restored process must report the same
    const b = await makePythonBundle({ dir: join(sb.tmp, 'py-bundle'), args: ['python3', '-c', PYTHON_MODULES] });
    const id = sb.id('py');
    const out1 = join(sb.tmp, `${id}.out1`);
    assert.equal((await runtimeTo(sb, ['create', '--isolation', 'microvm', '-b', b, id], out1)).status, 0);
    await sb.ok(['start', id]);
    assert.ok(await waitFor(() => moduleLines(out1).length >= 2, 120_000), `python never reported: ${existsSync(out1) ? readFileSync(out1, 'utf8') : ''}`);
    const before = moduleLines(out1).at(-1)!;
    assert.match(before, /^modules \d+ True \d+$/);
    const image = join(sb.tmp, `${id}-image`);
    const c = await sb.rt(['checkpoint', '--image-path', image, id], { timeoutMs: 120_000 });
    assert.equal(c.status, 0, c.stderr);
    await sb.ok(['delete', id]);
    const id2 = sb.id('pyr');
    const out2 = join(sb.tmp, `${id2}.out2`);
    const r = await runtimeTo(sb, ['restore', '-d', '--image-path', image, '-b', b, id2], out2);
    assert.equal(r.status, 0, r.stderr);
    try {
      assert.ok(await waitFor(() => moduleLines(out2).length >= 1, 60_000), 'the restored interpreter printed nothing');
      // the same module count and the very same json module object: nothing was imported again
      assert.equal(moduleLines(out2)[0], before);
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('--leave-running: the container goes on; a damaged image is refused before anything runs', async () => {
    const b = await sb.bundle(COUNTER);
    const id = sb.id('lr');
    const out = join(sb.tmp, `${id}.out`);
    assert.equal((await runtimeTo(sb, ['create', '--isolation', 'microvm', '-b', b, id], out)).status, 0);
    await sb.ok(['start', id]);
    const image = join(sb.tmp, `${id}-image`);
    try {
      assert.ok(await waitFor(() => existsSync(out) && numbers(out).length >= 2, 60_000));
      const c = await sb.rt(['checkpoint', '--leave-running', '--image-path', image, id], { timeoutMs: 120_000 });
      assert.equal(c.status, 0, c.stderr);
      const n = numbers(out).length;
      assert.ok(await waitFor(() => numbers(out).length > n + 2, 30_000), 'the container did not go on after --leave-running');
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    // one flipped byte in the middle of the memory: the hash check stops the restore
    const file = join(image, IMAGE_FILE);
    const reader = await ImageReader.open(file);
    const mem = reader.section(SECTION.VM_MIGRATION)!;
    await reader.close();
    const fd = openSync(file, 'r+');
    const at = mem.offset + Math.floor(mem.length / 2);
    const byte = Buffer.alloc(1);
    readFileSync(file).copy(byte, 0, at, at + 1);
    writeSync(fd, Buffer.from([byte[0]! ^ 0xff]), 0, 1, at);
    closeSync(fd);
    const id2 = sb.id('bad');
    const r = await runtimeTo(sb, ['restore', '-d', '--image-path', image, '-b', b, id2], join(sb.tmp, `${id2}.out`));
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /SHA-256|sha256|checksum/i);
    assert.equal(existsSync(join(sb.root, id2)), false, 'a refused restore left its state directory');
    assert.ok(!processMentions(join(sb.root, id2)), 'a refused restore left a process behind');
  });

  it('a snapshot starts five independent containers; inspect lists its processes, files and memory without running it', async () => {
    const b = await sb.bundle(COUNTER);
    const id = sb.id('tpl');
    assert.equal((await runtimeTo(sb, ['create', '--isolation', 'microvm', '-b', b, id], join(sb.tmp, `${id}.out`))).status, 0);
    await sb.ok(['start', id]);
    const name = `warm-${process.pid}`;
    const ids: string[] = [];
    try {
      assert.ok(await waitFor(() => numbers(join(sb.tmp, `${id}.out`)).length >= 3, 60_000));
      const s = await sb.rt(['snapshot', 'create', '--from', id, name], { timeoutMs: 120_000 });
      assert.equal(s.status, 0, s.stderr);
      assert.match((await sb.ok(['state', id])).stdout, /"status": "running"/, 'a snapshot leaves its container running');
      await sb.rt(['delete', '--force', id]);
      const list = JSON.parse((await sb.ok(['snapshot', 'list', '--format', 'json'])).stdout) as { name: string; from: string }[];
      assert.deepEqual(list.map((x) => [x.name, x.from]), [[name, id]]);

      const insp = JSON.parse((await sb.ok(['snapshot', 'inspect', '--format', 'json', name])).stdout) as {
        processes: { pid: number; args: string[] }[]; openFiles: { path: string }[]; memoryRegions: { name: string; bytes: number }[]; sections: { type: string; bytes: number }[];
      };
      assert.deepEqual(insp.processes[0]?.args, COUNTER);
      assert.ok(insp.processes[0]!.pid > 1, 'the guest pid of the container process');
      assert.ok(insp.openFiles.some((f) => f.path.endsWith('.ext4')), 'the base image is listed');
      assert.ok(insp.memoryRegions.some((m) => m.bytes >= 64 * 1024 * 1024), `guest RAM among ${JSON.stringify(insp.memoryRegions)}`);
      assert.deepEqual(insp.sections.map((x) => x.type).sort(), ['MANIFEST', 'VM_DISK', 'VM_MIGRATION']);

      for (let i = 0; i < 5; i++) {
        const c = sb.id(`from${i}`);
        ids.push(c);
        const r = await runtimeTo(sb, ['run', '-d', '--from-snapshot', name, c], join(sb.tmp, `${c}.out`));
        assert.equal(r.status, 0, r.stderr);
      }
      // each starts from the template's value, and each has its own disk
      const starts = new Set<number>();
      for (const [i, c] of ids.entries()) {
        assert.ok(await waitFor(() => numbers(join(sb.tmp, `${c}.out`)).length >= 1, 60_000), `${c} printed nothing`);
        starts.add(numbers(join(sb.tmp, `${c}.out`))[0]!);
        const w = await sb.rt(['exec', c, 'sh', '-c', `echo mine-${i} > /mine`], { timeoutMs: 60_000 });
        assert.equal(w.status, 0, w.stderr);
      }
      assert.equal(starts.size, 1, `the clones started from different values: ${[...starts].join(', ')}`);
      for (const [i, c] of ids.entries()) {
        const r = await sb.rt(['exec', c, 'cat', '/mine'], { timeoutMs: 60_000 });
        assert.equal(r.stdout, `mine-${i}\n`, `${c} sees another clone's write`);
      }
    } finally {
      for (const c of ids) await sb.rt(['delete', '--force', c]);
      await sb.rt(['delete', '--force', id]);
      await sb.rt(['snapshot', 'delete', name]);
    }
    assert.equal((await sb.ok(['snapshot', 'list', '--format', 'json'])).stdout.trim(), '[]');
  });

  it('a hostile image naming a host file as the disk\'s backing file is refused, nothing left', async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('src');
    await sb.ok(['create', '--isolation', 'microvm', '-b', b, id], { timeoutMs: VM_TIMEOUT });
    await sb.ok(['start', id]);
    const good = join(sb.tmp, `${id}-image`);
    try {
      const c = await sb.rt(['checkpoint', '--image-path', good, id], { timeoutMs: 120_000 });
      assert.equal(c.status, 0, c.stderr);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    const shadowDisk = await rewriteImage(good, join(sb.tmp, 'hostile-disk'), (type, p) => {
      if (type !== SECTION.VM_DISK) return p;
      const q = Buffer.from(p);
      const off = Number(q.readBigUInt64BE(8));
      const name = Buffer.from('/etc/shadow');
      name.copy(q, off);
      q.writeUInt32BE(name.length, 16);
      return q;
    });
    const shadowBase = await rewriteImage(good, join(sb.tmp, 'hostile-base'), (type, p) => {
      if (type !== SECTION.MANIFEST) return p;
      const m = JSON.parse(p.toString()) as { vm: { baseImage: string } };
      m.vm.baseImage = '/etc/shadow';
      return Buffer.from(JSON.stringify(m));
    });
    for (const [image, why] of [[shadowDisk, /backed by "\/etc\/shadow"/], [shadowBase, /\/etc\/shadow as its base image|is gone/]] as const) {
      const id2 = sb.id('hostile');
      const r = await sb.rt(['restore', '-d', '--image-path', image, '-b', b, id2], { timeoutMs: 120_000 });
      assert.notEqual(r.status, 0, `restored ${image}`);
      assert.match(r.stderr, why);
      assert.equal(existsSync(join(sb.root, id2)), false, 'a refused restore left its state directory');
    }
  });

  it('a VM with egress rules comes back with its network device and its rules', async () => {
    const seen: string[] = [];
    const srv = await new Promise<Server>((res) => {
      const s = createServer((c) => {
        let got = '';
        c.on('data', (d: Buffer) => {
          got += d.toString();
          if (got.includes('\n')) c.end('pong\n');
        });
        c.on('close', () => seen.push(got));
      });
      s.listen(0, '127.0.0.1', () => res(s));
    });
    const port = (srv.address() as AddressInfo).port;
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('net');
    const id2 = sb.id('net2');
    const ping = async (c: string, p: number): Promise<string> => (await sb.rt(['exec', c, 'sh', '-c', `echo ping | nc -w 5 10.0.2.2 ${p}; echo rc=$?`], { timeoutMs: 60_000 })).stdout;
    try {
      await sb.ok(['create', '--isolation', 'microvm', '--allow-egress', `127.0.0.1:${port}`, '-b', b, id], { timeoutMs: VM_TIMEOUT });
      await sb.ok(['start', id]);
      assert.match(await ping(id, port), /pong\nrc=0/);
      const image = join(sb.tmp, `${id}-image`);
      const c = await sb.rt(['checkpoint', '--image-path', image, id], { timeoutMs: 120_000 });
      assert.equal(c.status, 0, c.stderr);
      await sb.ok(['delete', id]);
      // other rules for the restore (here from the bundle's annotation) are refused: the machine keeps its own
      const otherBundle = await sb.bundle(['sleep', '1000'], (spec) => {
        spec.annotations = { 'io.moat.sentry.allow-egress': '10.9.9.9' };
      });
      const other = await sb.rt(['restore', '-d', '--image-path', image, '-b', otherBundle, sb.id('other')], { timeoutMs: 120_000 });
      assert.notEqual(other.status, 0);
      assert.match(other.stderr, /restored with those/);
      const r = await sb.rt(['restore', '-d', '--image-path', image, '-b', b, id2], { timeoutMs: VM_TIMEOUT });
      assert.equal(r.status, 0, r.stderr);
      assert.match(await ping(id2, port), /pong\nrc=0/, 'the restored VM cannot reach its allowed endpoint');
      assert.match(await ping(id2, port + 1 === 65536 ? port - 1 : port + 1), /rc=1/, 'the restored VM reaches an endpoint no rule allows');
      assert.deepEqual(seen, ['ping\n', 'ping\n']);
    } finally {
      srv.close();
      await sb.rt(['delete', '--force', id]);
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('refuses what it cannot checkpoint, saying why', async () => {
    const b = await sb.bundle(['sleep', '1000']);
    const id = sb.id('ctr');
    await sb.ok(['create', '-b', b, id]);
    try {
      const r = await sb.rt(['checkpoint', '--image-path', join(sb.tmp, 'none'), id]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /created/, 'a created container is not running');
      await sb.ok(['start', id]);
      const r2 = await sb.rt(['checkpoint', '--image-path', join(sb.tmp, 'none'), id]);
      assert.notEqual(r2.status, 0);
      assert.match(r2.stderr, /not supported under the container isolation/);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    const vm = sb.id('emb');
    const e = await sb.rt(['run', '-d', '--isolation', 'microvm', '--name', vm, '--', 'sleep', '1000'], { timeoutMs: VM_TIMEOUT });
    assert.equal(e.status, 0, e.stderr);
    try {
      const r = await sb.rt(['checkpoint', '--image-path', join(sb.tmp, 'none'), vm]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /embedded default cannot be checkpointed/);
      assert.equal(existsSync(join(sb.tmp, 'none', IMAGE_FILE)), false, 'a refused checkpoint left an image');
    } finally {
      await sb.rt(['delete', '--force', vm]);
    }
    // a bundle VM with a bind mount: its 9p share cannot migrate either
    const shared = await sb.bundle(['sleep', '1000'], (spec) => spec['mounts'].push({ destination: '/shared', type: 'bind', source: sb.tmp, options: ['rbind', 'ro'] }));
    const vb = sb.id('bind');
    await sb.ok(['create', '--isolation', 'microvm', '-b', shared, vb], { timeoutMs: VM_TIMEOUT });
    try {
      await sb.ok(['start', vb]);
      const r = await sb.rt(['checkpoint', '--image-path', join(sb.tmp, 'none'), vb]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /bind mounts cannot be checkpointed/);
      assert.equal(existsSync(join(sb.tmp, 'none', IMAGE_FILE)), false, 'a refused checkpoint left an image');
    } finally {
      await sb.rt(['delete', '--force', vb]);
    }
  });
});
