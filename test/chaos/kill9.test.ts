/**
 * Chaos: `moat create`, `start` and `delete --force` SIGKILLed at a random moment, 100 rounds.
 *
 * Each round runs one of the three commands on a busybox container running `sleep 1000` and
 * SIGKILLs the moat process after a delay drawn uniformly from 0 to the typical duration of that
 * command (measured at the start), so the kill lands inside the command. Then, whatever state the
 * kill left: `list` must work, `delete --force` must work, and nothing of the container may remain
 * on the host: no process in its cgroup, no runtime or native stage (moat-init) run from the
 * round's directory, no recorded init, no mount under its rootfs or state directory, no cgroup
 * directory of its linux.cgroupsPath, no state directory. Finally the same id must be creatable
 * again (no stale lock). Seeded: MOAT_CHAOS_SEED=<n> replays the same delays (the seed is printed).
 *
 * Moat only: how runc behaves when it is SIGKILLed is not what this tests.
 */
import assert from 'node:assert/strict';
import { closeSync, constants, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';
import { chaosSeed, cleanFailure, findOrphans, median, prng, reapLeftovers, recordedInit, runCmd } from '../helpers/chaos.js';
import type { Owned, Timed } from '../helpers/chaos.js';

const skip = RUNTIME !== 'moat' ? 'chaos tests SIGKILL Moat itself; runc under SIGKILL is not what they test' : skipReason();
if (skip) console.log(`# skipping kill -9 chaos tests: ${skip}`);

const ROUNDS = Number(process.env.MOAT_CHAOS_ROUNDS ?? 100);
const PHASES = ['create', 'start', 'delete'] as const;
type Phase = (typeof PHASES)[number];

describe('kill -9 of moat at a random moment', { skip }, () => {
  const sb = new Sandbox();
  const seed = chaosSeed();
  const cgPrefix = `/moat-chaos-k9-${process.pid}`;
  after(async () => {
    await sb.cleanup();
    const killed = await reapLeftovers(sb.tmp, cgPrefix);
    if (killed.length > 0) console.log(`# kill9 cleanup: killed leftover processes ${killed.join(' ')}`);
  });

  let spec: Record<string, any> = {};
  let rootfs = '';
  let n = 0;
  before(async () => {
    const base = await sb.bundle(['sleep', '1000']);
    spec = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Record<string, any>;
    rootfs = join(base, 'rootfs');
  });

  /** A bundle for one container: the shared rootfs, its own cgroupsPath, and its own cwd. */
  const round = (name: string) => {
    const dir = join(sb.tmp, name);
    mkdirSync(dir, { recursive: true });
    const cgroupPath = `${cgPrefix}/${name}`;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...spec, root: { path: rootfs }, linux: { ...spec.linux, cgroupsPath: cgroupPath } }));
    const id = `k9-${process.pid}-${name}`;
    const rt = (args: string[], killAfterMs?: number) =>
      runCmd(sb.root, args, { cwd: dir, scratch: sb.tmp, tag: `${name}-${++n}`, ...(killAfterMs !== undefined ? { killAfterMs } : {}) });
    const owned: Owned = { root: sb.root, id, cgroupPath, cwdDir: dir, pids: [], mountPrefixes: [rootfs, join(sb.root, id)] };
    return { dir, id, rt, owned };
  };
  const mustOk = (what: string, r: Timed) => assert.equal(r.status, 0, `${what} exited ${r.status ?? r.signal}: ${r.stderr}`);
  /** Waits up to 3 s for whatever is dying to be gone, then reports what is left. */
  const noOrphans = async (owned: Owned, ctx: string) => {
    let left: string[] = [];
    await waitFor(() => (left = findOrphans(owned)).length === 0, 3000);
    assert.deepEqual(left, [], `${ctx}: orphans left behind:\n  ${left.join('\n  ')}`);
  };

  /** Notes the init that ROOT/ID/state.json records, if any; fails if the file is not JSON. */
  const noteInit = (r: ReturnType<typeof round>, ctx: string) => {
    let init: ReturnType<typeof recordedInit>;
    try {
      init = recordedInit(sb.root, r.id);
    } catch (e) {
      assert.fail(`${ctx}: state.json is corrupt: ${(e as Error).message}`);
    }
    if (init) r.owned.pids.push(init);
  };

  it(`${ROUNDS} rounds of create, start or delete SIGKILLed midway leave nothing behind`, { timeout: 600_000 }, async () => {
    console.log(`# kill9 seed ${seed} (MOAT_CHAOS_SEED=${seed} replays the delays)`);
    const rand = prng(seed);

    // the typical duration of each command, from a few undisturbed cycles (the first, cold one
    // not counted)
    const took: Record<Phase, number[]> = { create: [], start: [], delete: [] };
    for (let i = 0; i < 4; i++) {
      const w = round(`warm${i}`);
      const c = await w.rt(['create', '-b', w.dir, w.id]);
      mustOk('warm-up create', c);
      const s = await w.rt(['start', w.id]);
      mustOk('warm-up start', s);
      const d = await w.rt(['delete', '--force', w.id]);
      mustOk('warm-up delete --force', d);
      if (i > 0) {
        took.create.push(c.ms);
        took.start.push(s.ms);
        took.delete.push(d.ms);
      }
      await noOrphans(w.owned, `warm-up ${i}`);
    }
    const typical = { create: median(took.create), start: median(took.start), delete: median(took.delete) };

    const t0 = Date.now();
    const landed: Record<Phase, number> = { create: 0, start: 0, delete: 0 };
    const rounds: Record<Phase, number> = { create: 0, start: 0, delete: 0 };
    const leftAs = new Map<string, number>();
    for (let i = 0; i < ROUNDS; i++) {
      const phase = PHASES[i % 3]!;
      const delay = Math.floor(rand() * typical[phase]);
      const ctx = `seed ${seed}, round ${i}, ${phase} killed after ${delay} ms (MOAT_CHAOS_SEED=${seed} replays the delays)`;
      const r = round(`r${i}`);
      const { id } = r;

      // bring the container to the phase's starting point (undisturbed)
      if (phase !== 'create') {
        mustOk(`${ctx}: create`, await r.rt(['create', '-b', r.dir, id]));
        if (phase === 'delete') mustOk(`${ctx}: start`, await r.rt(['start', id]));
      }
      noteInit(r, ctx);

      const args = phase === 'create' ? ['create', '-b', r.dir, id] : phase === 'start' ? ['start', id] : ['delete', '--force', id];
      const victim = await r.rt(args, delay);
      rounds[phase]++;
      if (victim.killed) landed[phase]++;
      else if (victim.status !== 0) assert.ok(cleanFailure(victim), `${ctx}: ${phase} failed uncleanly: ${victim.stderr}`);
      noteInit(r, ctx);

      // whatever the kill left, list works
      const l = await r.rt(['list', '--format', 'json']);
      mustOk(`${ctx}: list`, l);
      const listed = JSON.parse(l.stdout || 'null') as { id: string; status: string }[] | null;
      assert.ok(listed === null || Array.isArray(listed), `${ctx}: list printed ${l.stdout}`);
      const status = listed?.find((c) => c.id === id)?.status ?? 'absent';
      leftAs.set(`${phase}->${status}`, (leftAs.get(`${phase}->${status}`) ?? 0) + 1);

      // delete --force cleans up whatever it was, and leaves nothing behind
      const d = await r.rt(['delete', '--force', id]);
      assert.ok(d.status === 0 || /does not exist/.test(d.stderr), `${ctx}: delete --force (container ${status}) exited ${d.status ?? d.signal}: ${d.stderr}`);
      await noOrphans(r.owned, ctx);

      // and the very same id can be used again: no stale lock, no stale state
      const again = await r.rt(['create', '-b', r.dir, id]);
      mustOk(`${ctx}: create again`, again);
      noteInit(r, ctx);
      mustOk(`${ctx}: delete --force again`, await r.rt(['delete', '--force', id]));
      await noOrphans(r.owned, `${ctx}, after re-creating the id`);
    }
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    const hits = PHASES.map((p) => `${p} ${landed[p]}/${rounds[p]} (typical ${Math.round(typical[p])} ms)`).join(', ');
    console.log(`# kill9: ${ROUNDS} rounds in ${secs} s, seed ${seed}; kills that landed inside the command: ${hits}`);
    console.log(`# kill9: what list showed after the kill: ${[...leftAs].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    // honest: the kills must land inside the commands, not after them (most do; a third must)
    for (const p of PHASES) {
      assert.ok(landed[p] * 3 >= rounds[p], `seed ${seed}: only ${landed[p]} of ${rounds[p]} kills landed inside ${p} (typical ${typical[p]} ms)`);
    }
  });

  it('a create killed after it recorded its cgroups but before it made them (all or some) is deleted cleanly', async () => {
    // that window is a few milliseconds wide, so the random rounds hit it only now and then: here
    // the record such a create leaves is made on purpose
    for (const made of ['none', 'some'] as const) {
      const r = round(`unmade-${made}`);
      mustOk('create', await r.rt(['create', '-b', r.dir, r.id]));
      const rec = JSON.parse(readFileSync(join(sb.root, r.id, 'state.json'), 'utf8')) as Record<string, any>;
      mustOk('delete --force', await r.rt(['delete', '--force', r.id]));
      await noOrphans(r.owned, `${made}: the first container`);
      Object.assign(rec, { status: 'creating', pid: 0, pidStartTime: '' });
      mkdirSync(join(sb.root, r.id), { mode: 0o711 });
      writeFileSync(join(sb.root, r.id, 'state.json'), JSON.stringify(rec));
      const paths = Object.entries(rec.cgroupPaths as Record<string, string>);
      assert.ok(paths.length > 0, 'create recorded no cgroups');
      // "some": every v1 hierarchy but the freezer, as if the kill came while they were made
      if (made === 'some') for (const [controller, dir] of paths) if (controller !== 'freezer' && controller !== '') mkdirSync(dir, { recursive: true });

      const l = await r.rt(['list', '--format', 'json']);
      mustOk('list', l);
      assert.equal((JSON.parse(l.stdout) as { id: string; status: string }[]).find((c) => c.id === r.id)?.status, 'stopped');
      mustOk(`${made} made: delete --force`, await r.rt(['delete', '--force', r.id]));
      await noOrphans(r.owned, `${made} made`);
      mustOk('create again', await r.rt(['create', '-b', r.dir, r.id]));
      mustOk('delete --force again', await r.rt(['delete', '--force', r.id]));
      await noOrphans(r.owned, `${made} made, after re-creating the id`);
    }
  });

  it('a start killed after it let the program go (its exec fifo left) does not make the next start hang', async () => {
    // the window (between taking the fifo's byte and removing the fifo) is microseconds wide: the
    // interrupted start is played here by taking the byte by hand
    const r = round('half-started');
    mustOk('create', await r.rt(['create', '-b', r.dir, r.id]));
    const fifo = join(sb.root, r.id, 'exec.fifo');
    const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      const buf = Buffer.alloc(1);
      assert.ok(await waitFor(() => {
        try {
          return readSync(fd, buf, 0, 1, null) === 1;
        } catch {
          return false; // EAGAIN: the init has the fifo open but has not written yet
        }
      }, 5000), 'the init never wrote its start byte');
    } finally {
      closeSync(fd);
    }
    const init = recordedInit(sb.root, r.id);
    assert.ok(init && await waitFor(() => readFileSync(`/proc/${init.pid}/cmdline`, 'utf8').startsWith('sleep'), 5000), 'the program did not start');
    const again = await r.rt(['start', r.id], 10_000);
    assert.equal(again.killed, false, 'the second start hung (killed after 10 s)');
    assert.notEqual(again.status, 0, 'a second start of a running container succeeded');
    assert.match(again.stderr, /it is running/);
    const st = await r.rt(['state', r.id]);
    mustOk('state', st);
    assert.equal((JSON.parse(st.stdout) as { status: string }).status, 'running');
    mustOk('delete --force', await r.rt(['delete', '--force', r.id]));
    await noOrphans(r.owned, 'after a half-done start');
  });
});
