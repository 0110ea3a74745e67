/**
 * Checkpoint and restore under the sentry isolation, with Moat's own checkpointer
 * (src/checkpoint/sentry/): a counter goes on from its value with its open file where it was, a
 * python3 process keeps the modules it imported, a snapshot starts five independent containers,
 * a damaged or hostile image is refused before anything runs, and what cannot be checkpointed
 * says so. Moat only (runc's checkpoint needs CRIU, which does not work on this kernel).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { IMAGE_FILE, ImageReader, SECTION } from '../../src/checkpoint/image.js';
import { moduleLines, numbers, processMentions, PYTHON_MODULES, rewriteImage, runtimeTo } from '../helpers/checkpoint.js';
import { makePythonBundle, pythonSkipReason } from '../fixtures/python.js';
import { RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'the sentry is Moat-only' : skipReason() ?? pythonSkipReason();
if (skip) console.log(`# skipping sentry checkpoint tests: ${skip}`);

/**
 * The counter: prints 1, 2, 3 ... five times a second, and keeps the last value in /count
 * through one fd it holds open (rewritten in place), so the restored fd must be at its offset.
 */
const COUNTER = [
  'import time',
  'f = open("/count", "w")',
  'i = 0',
  'while True:',
  '    i += 1',
  '    print(i, flush=True)',
  '    f.write(f"{i}\\n"); f.flush()',
  '    time.sleep(0.2)',
].join('\n');

describe('sentry: checkpoint and restore', { skip, timeout: 10 * 60_000 }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());
  let bundle: string | undefined;
  const counterBundle = async (): Promise<string> => (bundle ??= await makePythonBundle({ dir: join(sb.tmp, 'counter'), args: ['python3', '-c', COUNTER] }));

  const start = async (b: string, id: string, out: string): Promise<void> => {
    const c = await runtimeTo(sb, ['create', '--isolation', 'sentry', '-b', b, id], out);
    assert.equal(c.status, 0, c.stderr);
    await sb.ok(['start', id]);
  };

  /**
   * Checkpoints `id` (which then ends: `after` runs once it has), deletes it and restores the
   * image as a new container: its id and the file its output goes to.
   */
  const moveOn = async (b: string, id: string, after?: () => void): Promise<{ id2: string; out2: string }> => {
    const image = join(sb.tmp, `${id}-image`);
    const c = await sb.rt(['checkpoint', '--image-path', image, id]);
    assert.equal(c.status, 0, c.stderr);
    after?.();
    await sb.ok(['delete', id]);
    const id2 = sb.id(`${id}-r`);
    const out2 = join(sb.tmp, `${id2}.out2`);
    const r = await runtimeTo(sb, ['restore', '-d', '--image-path', image, '-b', b, id2], out2);
    assert.equal(r.status, 0, r.stderr);
    return { id2, out2 };
  };

  it('a counter checkpointed and restored goes on from its value, its open file at its offset', async () => {
    const b = await counterBundle();
    const id = sb.id('ck');
    const out1 = join(sb.tmp, `${id}.out1`);
    await start(b, id, out1);
    assert.ok(await waitFor(() => numbers(out1).length >= 5, 30_000), 'the counter never counted');
    const image = join(sb.tmp, `${id}-image`);
    const c = await sb.rt(['checkpoint', '--image-path', image, id]);
    assert.equal(c.status, 0, c.stderr);
    // without --leave-running the container ends, as with runc
    assert.match((await sb.ok(['state', id])).stdout, /"status": "stopped"/);
    const last = Math.max(...numbers(out1));
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(Math.max(...numbers(out1)), last, 'the counter went on after the checkpoint');
    await sb.ok(['delete', id]);

    const id2 = sb.id('rs');
    const out2 = join(sb.tmp, `${id2}.out2`);
    const r = await runtimeTo(sb, ['restore', '-d', '--image-path', image, '-b', b, id2], out2);
    assert.equal(r.status, 0, r.stderr);
    try {
      assert.match((await sb.ok(['state', id2])).stdout, /"status": "running"/);
      assert.ok(await waitFor(() => numbers(out2).length >= 3, 30_000), 'the restored counter printed nothing');
      const got = numbers(out2);
      assert.equal(got[0], last + 1, `the restored counter started at ${got[0]}, the checkpoint was at ${last}`);
      // the file it holds open came back with the container's files, its fd at the same offset:
      // every value it ever wrote is there once, in order
      const count = await sb.rt(['exec', id2, 'cat', '/count']);
      assert.equal(count.status, 0, count.stderr);
      const lines = count.stdout.split('\n').filter(Boolean).map(Number);
      assert.deepEqual(lines, lines.map((_, i) => i + 1), `/count holds ${lines.slice(0, 5).join(',')}...`);
      assert.ok(lines.length > last, `/count ends at ${lines.length}, the checkpoint was at ${last}`);
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('a python3 process that imported modules restores with them loaded', async () => {
    const b = await makePythonBundle({ dir: join(sb.tmp, 'py-bundle'), args: ['python3', '-c', PYTHON_MODULES] });
    const id = sb.id('py');
    const out1 = join(sb.tmp, `${id}.out1`);
    await start(b, id, out1);
    assert.ok(await waitFor(() => moduleLines(out1).length >= 2, 60_000), `python never reported: ${existsSync(out1) ? readFileSync(out1, 'utf8') : ''}`);
    let before = '';
    const { id2, out2 } = await moveOn(b, id, () => {
      before = moduleLines(out1).at(-1)!;
      assert.match(before, /^modules \d+ True \d+$/);
    });
    try {
      assert.ok(await waitFor(() => moduleLines(out2).length >= 1, 30_000), 'the restored interpreter printed nothing');
      // the same module count and the very same json module object: nothing was imported again
      assert.equal(moduleLines(out2)[0], before);
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('--leave-running: the container goes on; a damaged or lying image is refused before anything runs', async () => {
    const b = await counterBundle();
    const id = sb.id('lr');
    const out = join(sb.tmp, `${id}.out`);
    await start(b, id, out);
    const image = join(sb.tmp, `${id}-image`);
    try {
      assert.ok(await waitFor(() => numbers(out).length >= 2, 30_000));
      const c = await sb.rt(['checkpoint', '--leave-running', '--image-path', image, id]);
      assert.equal(c.status, 0, c.stderr);
      const n = numbers(out).length;
      assert.ok(await waitFor(() => numbers(out).length > n + 2, 30_000), 'the container did not go on after --leave-running');
      // twice: a checkpoint leaves the process as checkpointable as before
      const again = await sb.rt(['checkpoint', '--leave-running', '--image-path', join(sb.tmp, `${id}-again`), id]);
      assert.equal(again.status, 0, again.stderr);
    } finally {
      await sb.rt(['delete', '--force', id]);
    }
    const refused = async (img: string, why: RegExp): Promise<void> => {
      const id2 = sb.id('bad');
      const r = await runtimeTo(sb, ['restore', '-d', '--image-path', img, '-b', b, id2], join(sb.tmp, `${id2}.out`));
      assert.notEqual(r.status, 0, `restored ${img}`);
      assert.match(r.stderr, why);
      assert.equal(existsSync(join(sb.root, id2)), false, 'a refused restore left its state directory');
      assert.ok(!processMentions(join(sb.root, id2)), 'a refused restore left a process behind');
    };
    const manifestEdit = (f: (m: { processes: { regions: { start: string; end: string; runs: number[][] }[]; fds: { fd: number; kind: string; path?: string }[] }[] }) => void) =>
      (type: number, p: Buffer): Buffer => {
        if (type !== SECTION.MANIFEST) return p;
        const m = JSON.parse(p.toString()) as Parameters<typeof f>[0];
        f(m);
        return Buffer.from(JSON.stringify(m));
      };
    // a region outside user space, and one more saved page than the pages section holds
    await refused(await rewriteImage(image, join(sb.tmp, 'kernel-address'), manifestEdit((m) => (m.processes[0]!.regions[0]!.end = '0xffffffffff601000'))), /not a user address range|overlaps/);
    await refused(await rewriteImage(image, join(sb.tmp, 'page-count'), manifestEdit((m) => m.processes[0]!.regions.find((r) => r.runs.length > 0)!.runs[0]![1]! += 1)), /SENTRY_PAGES|outside the region/);
    // an fd naming a host file: it is opened inside the container's root, where there is none
    const secret = join(sb.tmp, 'host-secret');
    writeFileSync(secret, 'host only\n');
    await refused(await rewriteImage(image, join(sb.tmp, 'host-file'), manifestEdit((m) => m.processes[0]!.fds.push({ fd: 7, kind: 'file', path: `/../../../..${secret}`, flags: 0, cloexec: false, pos: 0 } as never))), /open fd 7 .*No such file/);
    // an image cannot grant more than the spec: limits above the spec's are capped, and a
    // device node among the container's files is refused
    const greedy = await rewriteImage(image, join(sb.tmp, 'greedy'), manifestEdit((m) => {
      for (const p of m.processes as unknown as { rlimits: { resource: number; soft: string; hard: string }[] }[]) {
        for (const l of p.rlimits) if (l.resource === 7) Object.assign(l, { soft: '0x100000', hard: '0x100000' });
      }
    }));
    const idg = sb.id('greedy');
    const rg = await runtimeTo(sb, ['restore', '-d', '--image-path', greedy, '-b', b, idg], join(sb.tmp, `${idg}.out`));
    assert.equal(rg.status, 0, rg.stderr);
    try {
      const pid = (JSON.parse(readFileSync(join(sb.root, idg, 'state.json'), 'utf8')) as { pid: number }).pid;
      assert.match(readFileSync(`/proc/${pid}/limits`, 'utf8'), /Max open files\s+1024\s+1024/);
    } finally {
      await sb.rt(['delete', '--force', idg]);
    }
    const devDir = join(sb.tmp, 'dev-upper');
    mkdirSync(devDir);
    execFileSync('mknod', [join(devDir, 'mem'), 'c', '1', '1']);
    const devTar = execFileSync('tar', ['-C', devDir, '-cf', '-', '.']);
    await refused(await rewriteImage(image, join(sb.tmp, 'device'), (type, p) => (type === SECTION.SENTRY_FS ? devTar : p)), /device node \(\/mem\)/);
    // one flipped byte in the middle of the memory: the hash check stops the restore
    const file = join(image, IMAGE_FILE);
    const reader = await ImageReader.open(file);
    const mem = reader.section(SECTION.SENTRY_PAGES)!;
    await reader.close();
    const fd = openSync(file, 'r+');
    const at = mem.offset + Math.floor(mem.length / 2);
    writeSync(fd, Buffer.from([readFileSync(file)[at]! ^ 0xff]), 0, 1, at);
    closeSync(fd);
    await refused(image, /SHA-256|sha256|checksum/i);
  });

  it('a snapshot starts five independent containers; inspect lists its processes, files and memory without running it', async () => {
    const b = await counterBundle();
    const id = sb.id('tpl');
    const outT = join(sb.tmp, `${id}.out`);
    await start(b, id, outT);
    const name = `warm-${process.pid}`;
    const ids: string[] = [];
    try {
      assert.ok(await waitFor(() => numbers(outT).length >= 3, 30_000));
      const s = await sb.rt(['snapshot', 'create', '--from', id, name]);
      assert.equal(s.status, 0, s.stderr);
      assert.match((await sb.ok(['state', id])).stdout, /"status": "running"/, 'a snapshot leaves its container running');
      await sb.rt(['delete', '--force', id]);

      const insp = JSON.parse((await sb.ok(['snapshot', 'inspect', '--format', 'json', name])).stdout) as {
        processes: { pid: number; args: string[] }[]; openFiles: { path: string; role: string }[]; memoryRegions: { name: string; bytes: number; saved: number }[]; sections: { type: string }[];
      };
      assert.deepEqual(insp.processes.map((p) => p.pid), [1]);
      assert.equal(insp.processes[0]!.args.at(-1), COUNTER);
      assert.ok(insp.openFiles.some((f) => f.path === '/count' && /^pid 1 fd 3, offset [1-9]/.test(f.role)), `the counter's file among ${JSON.stringify(insp.openFiles)}`);
      assert.ok(insp.openFiles.some((f) => /libc\.so/.test(f.path)), 'mapped libraries are listed');
      assert.ok(insp.memoryRegions.some((m) => m.name.endsWith('[stack]') && m.saved > 0), 'the stack is listed with its saved pages');
      assert.deepEqual(insp.sections.map((x) => x.type).sort(), ['MANIFEST', 'PAD', 'SENTRY_FS', 'SENTRY_PAGES']);

      for (let i = 0; i < 5; i++) {
        const c = sb.id(`from${i}`);
        ids.push(c);
        const r = await runtimeTo(sb, ['run', '-d', '--from-snapshot', name, c], join(sb.tmp, `${c}.out`));
        assert.equal(r.status, 0, r.stderr);
      }
      // each starts from the template's value and counts on its own, with its own files
      const starts = new Set<number>();
      for (const [i, c] of ids.entries()) {
        assert.ok(await waitFor(() => numbers(join(sb.tmp, `${c}.out`)).length >= 2, 30_000), `${c} printed nothing`);
        starts.add(numbers(join(sb.tmp, `${c}.out`))[0]!);
        const w = await sb.rt(['exec', c, 'sh', '-c', `echo mine-${i} > /mine`]);
        assert.equal(w.status, 0, w.stderr);
      }
      assert.equal(starts.size, 1, `the clones started from different values: ${[...starts].join(', ')}`);
      await sb.ok(['kill', ids[0]!, 'KILL']);
      for (const [i, c] of ids.entries()) {
        if (i === 0) continue;
        const r = await sb.rt(['exec', c, 'cat', '/mine']);
        assert.equal(r.stdout, `mine-${i}\n`, `${c} sees another clone's write`);
        const n = numbers(join(sb.tmp, `${c}.out`)).length;
        assert.ok(await waitFor(() => numbers(join(sb.tmp, `${c}.out`)).length > n, 10_000), `${c} stopped when another clone was killed`);
      }
      // their memory is the snapshot's, mapped copy-on-write: the pages they did not write are
      // one copy in the page cache, shared by all clones
      const shared = (c: string): number => {
        const pid = (JSON.parse(readFileSync(join(sb.root, c, 'state.json'), 'utf8')) as { pid: number }).pid;
        let kb = 0;
        let image = false;
        for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
          if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) image = line.endsWith(IMAGE_FILE);
          else if (image && line.startsWith('Shared_Clean:')) kb += Number(line.split(/\s+/)[1]);
        }
        return kb;
      };
      for (const c of ids.slice(1)) assert.ok(shared(c) > 1024, `${c} shares only ${shared(c)} KiB of the snapshot's pages`);
      // a clone can be checkpointed again (its mapped pages are saved like anonymous memory)
      const again = await moveOn(b, ids[1]!);
      ids.push(again.id2);
      assert.ok(await waitFor(() => numbers(again.out2).length >= 2, 15_000), 'the re-checkpointed clone printed nothing');
    } finally {
      for (const c of ids) await sb.rt(['delete', '--force', c]);
      await sb.rt(['delete', '--force', id]);
      await sb.rt(['snapshot', 'delete', name]);
    }
  });

  it('a process tree restores with its pids, parents and the bytes waiting in a pipe between its processes', async () => {
    // the reader sleeps while the writer's two lines wait in the pipe; the writer has exited
    const b = await sb.bundle(['sh', '-c', 'echo start; (echo hello; echo world) | (sleep 3; cat; echo done)']);
    const id = sb.id('tree');
    const out1 = join(sb.tmp, `${id}.out1`);
    await start(b, id, out1);
    assert.ok(await waitFor(() => readFileSync(out1, 'utf8').includes('start'), 10_000));
    // the tree as the container sees it (the sentry's /proc): pid, parent and command of each
    const shape = async (c: string): Promise<string> => {
      const r = await sb.ok(['exec', c, 'ps', '-o', 'pid,ppid,comm']);
      return r.stdout.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f[2] !== 'ps').map((f) => f.join(' ')).sort().join('; ');
    };
    const before = await shape(id);
    assert.match(before, /^1 0 sh; \d+ 1 sh; \d+ \d+ sleep$/);
    // forensics: a snapshot of it lists the tree and the bytes waiting in the pipe
    const snap = `tree-${process.pid}`;
    await sb.ok(['snapshot', 'create', '--from', id, snap]);
    try {
      const insp = JSON.parse((await sb.ok(['snapshot', 'inspect', '--format', 'json', snap])).stdout) as { processes: { pid: number; where: string }[]; openFiles: { path: string; role: string; bytes?: number }[] };
      assert.equal(insp.processes.length, 3);
      assert.ok(insp.processes.slice(1).every((p) => /parent \d+, 1 thread/.test(p.where)), JSON.stringify(insp.processes));
      assert.ok(insp.openFiles.some((f) => f.path === 'pipe 0' && /read end; 12 bytes waiting/.test(f.role)), JSON.stringify(insp.openFiles));
    } finally {
      await sb.rt(['snapshot', 'delete', snap]);
    }
    const { id2, out2 } = await moveOn(b, id);
    try {
      const after = await shape(id2);
      assert.equal(after, before, 'the restored tree has other pids or parents');
      assert.ok(await waitFor(() => readFileSync(out2, 'utf8').includes('done'), 15_000), `the restored reader printed: ${readFileSync(out2, 'utf8')}`);
      assert.equal(readFileSync(out2, 'utf8'), 'hello\nworld\ndone\n');
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('a zombie child stays a zombie and its parent reaps its exit status after the restore', async () => {
    const script = [
      'import os, time',
      'pid = os.fork()',
      'if pid == 0:',
      '    os._exit(7)',
      'print("forked", pid, flush=True)',
      'time.sleep(3)',
      '_, st = os.waitpid(pid, 0)',
      'print("reaped", pid, os.WEXITSTATUS(st), flush=True)',
    ].join('\n');
    const b = await makePythonBundle({ dir: join(sb.tmp, 'zombie'), args: ['python3', '-c', script] });
    const id = sb.id('zb');
    const out1 = join(sb.tmp, `${id}.out1`);
    await start(b, id, out1);
    assert.ok(await waitFor(() => /forked \d+/.test(readFileSync(out1, 'utf8')), 30_000));
    const child = /forked (\d+)/.exec(readFileSync(out1, 'utf8'))![1];
    const { id2, out2 } = await moveOn(b, id);
    try {
      assert.ok(await waitFor(() => readFileSync(out2, 'utf8').includes('reaped'), 15_000), `the restored parent printed: ${readFileSync(out2, 'utf8')}`);
      assert.equal(readFileSync(out2, 'utf8'), `reaped ${child} 7\n`);
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('unix sockets: a pair between two processes keeps the bytes in flight, a listener listens again at its path', async () => {
    const script = [
      'import os, socket, time',
      'a, b = socket.socketpair()',
      'srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)',
      'srv.bind("/tmp/srv.sock"); srv.listen()',
      'pid = os.fork()',
      'if pid == 0:',
      '    a.close(); srv.close()',
      '    time.sleep(3)',
      '    while True:',
      '        d = b.recv(100)',
      '        if not d: break',
      '        b.sendall(b"echo:" + d)',
      '    os._exit(0)',
      'b.close()',
      'a.sendall(b"hello")',
      'print("ready", flush=True)',
      'print(a.recv(100).decode(), flush=True)',
      'conn, _ = srv.accept()',
      'conn.sendall(b"hi from the server")',
      'time.sleep(1000)',
    ].join('\n');
    const b = await makePythonBundle({ dir: join(sb.tmp, 'sockets'), args: ['python3', '-c', script] });
    const id = sb.id('sk');
    const out1 = join(sb.tmp, `${id}.out1`);
    await start(b, id, out1);
    assert.ok(await waitFor(() => readFileSync(out1, 'utf8').includes('ready'), 30_000));
    // the child sleeps 3 s: "hello" is still in the pair when the checkpoint is taken
    const { id2, out2 } = await moveOn(b, id, () => {
      assert.equal(readFileSync(out1, 'utf8'), 'ready\n', 'the child answered before the checkpoint');
    });
    try {
      assert.ok(await waitFor(() => readFileSync(out2, 'utf8').includes('echo:hello'), 15_000), `the restored pair printed: ${readFileSync(out2, 'utf8')}`);
      const client = await sb.rt(['exec', id2, 'python3', '-c', 'import socket; s = socket.socket(socket.AF_UNIX); s.connect("/tmp/srv.sock"); print(s.recv(100).decode())']);
      assert.equal(client.status, 0, client.stderr);
      assert.equal(client.stdout, 'hi from the server\n');
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('threads come back with their tids, registers and the lock they share', async () => {
    const script = [
      'import threading, time',
      'counts = [0, 0]',
      'lock = threading.Lock()',
      'def work(i):',
      '    while True:',
      '        with lock:',
      '            counts[i] += 1',
      '        time.sleep(0.05)',
      'ts = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]',
      'for t in ts: t.start()',
      'print("tids", *sorted(t.native_id for t in ts), flush=True)',
      'while True:',
      '    time.sleep(0.3)',
      '    with lock:',
      '        print("counts", *counts, flush=True)',
    ].join('\n');
    const b = await makePythonBundle({ dir: join(sb.tmp, 'threads'), args: ['python3', '-c', script] });
    const id = sb.id('th');
    const out1 = join(sb.tmp, `${id}.out1`);
    const counts = (f: string): number[][] => readFileSync(f, 'utf8').split('\n').filter((l) => l.startsWith('counts ')).map((l) => l.split(' ').slice(1).map(Number));
    await start(b, id, out1);
    assert.ok(await waitFor(() => counts(out1).length >= 2, 30_000));
    const tids = /tids (\d+) (\d+)/.exec(readFileSync(out1, 'utf8'))!.slice(1).join(' ');
    let last: number[] = [];
    const { id2, out2 } = await moveOn(b, id, () => {
      last = counts(out1).at(-1)!;
    });
    try {
      assert.ok(await waitFor(() => counts(out2).length >= 3, 15_000), `the restored process printed: ${readFileSync(out2, 'utf8')}`);
      const got = counts(out2);
      // both threads go on from where they were (neither restarted from 0, both still count)
      for (const i of [0, 1]) {
        assert.ok(got[0]![i]! >= last[i]!, `thread ${i} went back from ${last[i]} to ${got[0]![i]}`);
        assert.ok(got.at(-1)![i]! > got[0]![i]!, `thread ${i} stopped counting: ${JSON.stringify(got)}`);
      }
      const task = await sb.rt(['exec', id2, 'ls', '/proc/1/task']);
      assert.equal(task.stdout.trim().split('\n').filter((x) => x !== '1').join(' '), tids, 'the threads have other tids');
    } finally {
      await sb.rt(['delete', '--force', id2]);
    }
  });

  it('the embedded default: restored as one (no bundle), from a checkpoint and from a snapshot', async () => {
    // the host's python3 maps its locale and gconv caches shared: those come back mapped shared
    const id = sb.id('emb');
    const out1 = join(sb.tmp, `${id}.out1`);
    // (it holds no file open: the embedded default's written files are not in the image)
    const counter = 'import time\ni = 0\nwhile True:\n    i += 1\n    print(i, flush=True)\n    time.sleep(0.2)';
    const r = await runtimeTo(sb, ['run', '-d', '--isolation', 'sentry', '--name', id, '--', 'python3', '-c', counter], out1);
    assert.equal(r.status, 0, r.stderr);
    const snap = `emb-${process.pid}`;
    try {
      assert.ok(await waitFor(() => numbers(out1).length >= 3, 30_000), 'the counter never counted');
      const s = await sb.rt(['snapshot', 'create', '--from', id, snap]);
      assert.equal(s.status, 0, s.stderr);
      const image = join(sb.tmp, `${id}-image`);
      const c = await sb.rt(['checkpoint', '--image-path', image, id]);
      assert.equal(c.status, 0, c.stderr);
      const last = Math.max(...numbers(out1));
      for (const [i, args] of [['restore', '-d', '--image-path', image], ['run', '-d', '--from-snapshot', snap]].entries()) {
        const c2 = sb.id(`emb${i}`);
        const out2 = join(sb.tmp, `${c2}.out`);
        const rr = await runtimeTo(sb, [...args, c2], out2);
        assert.equal(rr.status, 0, rr.stderr);
        try {
          assert.ok(await waitFor(() => numbers(out2).length >= 2, 15_000), `${args[0]} printed nothing`);
          assert.ok(numbers(out2)[0]! <= last + 1, `${args[0]} started at ${numbers(out2)[0]}, the checkpoint was at ${last}`);
          assert.equal((await sb.ok(['state', c2])).stdout.includes('"bundle": ""'), true, 'not an embedded-default container');
        } finally {
          await sb.rt(['delete', '--force', c2]);
        }
      }
    } finally {
      await sb.rt(['delete', '--force', id]);
      await sb.rt(['snapshot', 'delete', snap]);
    }
  });

  it('refuses what it cannot checkpoint, saying why, and leaves the container running', async () => {
    const cases: [string, RegExp][] = [
      ['import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nprint("ready", flush=True)\ntime.sleep(1000)', /fd \d+ of process 1 \(socket:\[\d+\]\) .*other sockets and kernel objects are not checkpointed yet/],
      ['import os, time\ne = os.eventfd(0)\nprint("ready", flush=True)\ntime.sleep(1000)', /fd \d+ of process 1 \(anon_inode:\[eventfd\]\) .*not checkpointed yet/],
    ];
    for (const [i, [script, why]] of cases.entries()) {
      const b = await makePythonBundle({ dir: join(sb.tmp, `refuse-${i}`), args: ['python3', '-c', script] });
      const id = sb.id('no');
      const out = join(sb.tmp, `${id}.out`);
      await start(b, id, out);
      try {
        assert.ok(await waitFor(() => readFileSync(out, 'utf8').includes('ready'), 30_000));
        const image = join(sb.tmp, `none-${i}`);
        const r = await sb.rt(['checkpoint', '--image-path', image, id]);
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, why);
        assert.equal(existsSync(join(image, IMAGE_FILE)), false, 'a refused checkpoint left an image');
        assert.match((await sb.ok(['state', id])).stdout, /"status": "running"/);
        // and it still runs normally: a refused checkpoint let it go again
        const e = await sb.rt(['exec', id, 'true']);
        assert.equal(e.status, 0, e.stderr);
      } finally {
        await sb.rt(['delete', '--force', id]);
      }
    }
  });
});
