/**
 * The containerd behaviour cases, parameterized by how containerd reaches the runtime under test:
 * containerd's runc shim told to run it (`ctr run --runc-binary RUNTIME`, oci-containerd.test.ts),
 * or a shim of the runtime's own (`ctr run --runtime io.containerd.moat.v1`). One private
 * containerd per call; every case goes through `ctr` only, as a user of containerd would.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeOciImageArchive } from '../fixtures/ociimage.js';
import { Containerd, containerdSkipReason, type ContainerdOptions } from './containerd.js';
import { freezerState, leftoverProcesses, ptySkipReason } from './harness.js';
import { processAlive, skipReason, waitFor } from './runtime.js';

/** The image every case runs (imported from the fixture archive). */
export const IMAGE = 'moat.test/busybox:latest';

/** How containerd runs the runtime under test. */
export interface ContainerdMode {
  /** Names the suite: `containerd (LABEL)`; also part of the container ids (letters, digits, -). */
  label: string;
  /** `ctr run` flags selecting the runtime, e.g. ['--runc-binary', X] or ['--runtime', 'io.containerd.moat.v1']. */
  runArgs: string[];
  /**
   * The directory the runtime keeps a container's state in, given its id: checked to exist while
   * the task runs and to be gone after `task delete`. Omit when the mode has no such directory.
   */
  runtimeState?: (id: string) => string;
  /** Options of the private containerd (e.g. an env whose PATH finds the runtime's shim). */
  containerd?: ContainerdOptions;
  /** A reason to skip this mode (e.g. its shim binary is missing); printed. */
  skip?: string;
}

/** Registers the containerd suite for `mode`. */
export function containerdCases(mode: ContainerdMode): void {
  const skip = skipReason() ?? containerdSkipReason() ?? mode.skip;
  if (skip) console.log(`# skipping containerd tests (${mode.label}): ${skip}`);

  describe(`containerd (${mode.label})`, { skip }, () => {
    let ctd: Containerd | undefined;
    const ids: string[] = [];
    /** A fresh container id, unique across modes and concurrent test processes (the runc shim root and cgroups are host-wide). */
    const newId = (tag: string): string => {
      const id = `${mode.label.replace(/[^A-Za-z0-9-]/g, '-')}-${process.pid}-${tag}`;
      ids.push(id);
      return id;
    };
    const c = (): Containerd => {
      assert.ok(ctd, 'containerd did not start');
      return ctd;
    };
    const lines = (s: string): string[] => s.split('\n').map((l) => l.trim()).filter((l) => l !== '');

    before(async () => {
      ctd = await Containerd.start(undefined, mode.containerd);
      const image = await makeOciImageArchive(join(ctd.dir, 'busybox-oci.tar'), { ref: IMAGE });
      await ctd.importImage(image.path);
    });
    after(async () => {
      await ctd?.stop();
    });

    it('run --rm: output and exit code pass through, the process is pid 1, the container is removed', async () => {
      const id = newId('run');
      const r = await c().ctr(['run', '--rm', ...mode.runArgs, IMAGE, id, 'sh', '-c', 'echo hello $$; echo oops >&2; exit 3']);
      assert.equal(r.status, 3, `ctr run: ${r.stderr}\ncontainerd log:\n${c().logTail()}`);
      assert.equal(r.stdout, 'hello 1\n');
      assert.match(r.stderr, /oops/);
      assert.ok(!lines((await c().ok(['container', 'ls', '-q'])).stdout).includes(id), 'run --rm left the container');
    });

    it('run with stdin: the process reads it to its end (EOF reaches it) and exits', async () => {
      const id = newId('in');
      const r = await c().ctrDelayedInput(['run', '--rm', ...mode.runArgs, IMAGE, id, 'sh', '-c', 'cat; echo done'], 'line one\nline two\n');
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'line one\nline two\ndone\n');
    });

    it('run -t: an interactive shell on a terminal; its exit code passes through', { skip: ptySkipReason() }, async () => {
      const id = newId('tty');
      const r = await c().ctrTty(['run', '--rm', '-t', ...mode.runArgs, IMAGE, id, 'sh'], {
        input: 'tty; echo $((6*7)); exit 5\n',
      });
      assert.equal(r.status, 5, `terminal showed:\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r*$/m, 'tty did not name a pseudo-terminal');
      assert.match(r.stdout, /^42\r*$/m, 'the shell did not evaluate the typed line');
    });

    describe('a detached task (run -d ... sleep 1000)', () => {
      let id = '';
      let pid = 0;
      before(async () => {
        id = newId('det');
        await c().ok(['run', '-d', ...mode.runArgs, IMAGE, id, 'sleep', '1000']);
        const task = (await c().tasks()).get(id);
        assert.ok(task?.status === 'RUNNING', `task ls after run -d: ${JSON.stringify(task)}`);
        pid = task.pid;
        assert.ok(pid > 0 && processAlive(pid), `task pid ${pid} is not a live process`);
      });

      it('the task is sleep 1000, in the cgroup containerd chose for it', () => {
        assert.equal(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), 'sleep\u00001000\u0000');
        const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
        // ctr's default cgroups path is /NAMESPACE/ID
        assert.match(cgroups, new RegExp(`:/moat-test/${id}$`, 'm'));
      });

      it('task exec: a process in the container (its pid namespace); output and exit code pass through', async () => {
        const r = await c().ctr(['task', 'exec', '--exec-id', 'e1', id, 'sh', '-c', 'echo in-exec; tr "\\0" " " </proc/1/cmdline; echo; exit 4']);
        assert.equal(r.status, 4, r.stderr);
        assert.equal(r.stdout, 'in-exec\nsleep 1000 \n');
      });

      it('task exec -t: an interactive shell on a terminal in the container', { skip: ptySkipReason() }, async () => {
        const r = await c().ctrTty(['task', 'exec', '-t', '--exec-id', 'e2', id, 'sh'], { input: 'tty; echo $((7*8)); exit 7\n' });
        assert.equal(r.status, 7, `terminal showed:\n${r.stdout}\n${r.stderr}`);
        assert.match(r.stdout, /^\/dev\/pts\/\d+\r*$/m);
        assert.match(r.stdout, /^56\r*$/m);
      });

      it("task ps lists the task's pid", async () => {
        const r = await c().ok(['task', 'ps', id]);
        const pids = lines(r.stdout).slice(1).map((l) => Number(l.split(/\s+/)[0]));
        assert.ok(pids.includes(pid), `task ps printed:\n${r.stdout}\nwithout the task's pid ${pid}`);
      });

      it('task pause freezes the task (PAUSED), task resume thaws it (RUNNING)', async () => {
        await c().ok(['task', 'pause', id]);
        assert.equal((await c().tasks()).get(id)?.status, 'PAUSED');
        const frozen = freezerState(pid);
        if (frozen !== undefined) assert.equal(frozen, 'FROZEN', 'the task is PAUSED but its cgroup is not frozen');
        await c().ok(['task', 'resume', id]);
        assert.equal((await c().tasks()).get(id)?.status, 'RUNNING');
        if (frozen !== undefined) assert.equal(freezerState(pid), 'THAWED');
        assert.ok(processAlive(pid));
      });

      it('task kill -s KILL stops it; task delete reports exit status 137 and removes the runtime state; container delete', async () => {
        const state = mode.runtimeState?.(id);
        if (state !== undefined) assert.ok(existsSync(state), `the runtime's state ${state} is missing while the task runs`);
        await c().ok(['task', 'kill', '-s', 'KILL', id]);
        assert.ok(
          await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000),
          `task not STOPPED after SIGKILL: ${JSON.stringify((await c().tasks()).get(id))}`,
        );
        assert.equal(processAlive(pid), false, 'the task is STOPPED but its process lives');
        const del = await c().ok(['task', 'delete', id]);
        assert.match(del.stderr + del.stdout, /exit code 137\b/);
        assert.equal((await c().tasks()).has(id), false, 'task delete left the task');
        if (state !== undefined) assert.equal(existsSync(state), false, `task delete left the runtime's state ${state}`);
        await c().ok(['container', 'delete', id]);
        assert.ok(!lines((await c().ok(['container', 'ls', '-q'])).stdout).includes(id), 'container delete left the container');
      });
    });

    it('task kill -s KILL of a paused task stops it (exit status 137)', async () => {
      const id = newId('pk');
      await c().ok(['run', '-d', ...mode.runArgs, IMAGE, id, 'sleep', '1000']);
      const pid = (await c().tasks()).get(id)?.pid ?? 0;
      await c().ok(['task', 'pause', id]);
      assert.equal((await c().tasks()).get(id)?.status, 'PAUSED');
      await c().ok(['task', 'kill', '-s', 'KILL', id]);
      assert.ok(
        await waitFor(async () => (await c().tasks()).get(id)?.status === 'STOPPED', 10_000),
        `a paused task is not STOPPED after SIGKILL: ${JSON.stringify((await c().tasks()).get(id))}`,
      );
      assert.equal(processAlive(pid), false);
      const del = await c().ok(['task', 'delete', id]);
      assert.match(del.stderr + del.stdout, /exit code 137\b/);
      await c().ok(['container', 'delete', id]);
    });

    it('leaves no container, task, runtime state or process behind', async () => {
      assert.deepEqual(lines((await c().ok(['container', 'ls', '-q'])).stdout), []);
      assert.deepEqual(lines((await c().ok(['task', 'ls', '-q'])).stdout), []);
      for (const id of ids) {
        const state = mode.runtimeState?.(id);
        if (state !== undefined) assert.equal(existsSync(state), false, `${state} is left`);
      }
      // shims exit shortly after their task is deleted: give them a moment
      const match = { paths: [c().dir], ids, except: [c().pid] };
      await waitFor(() => leftoverProcesses(match).length === 0, 5000);
      assert.deepEqual(leftoverProcesses(match), []);
    });
  });
}
