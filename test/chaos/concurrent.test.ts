/**
 * Concurrency: 100 create/start/delete cycles at once (10 workers x 10 cycles on distinct ids),
 * plus workers racing create, start and delete on one shared id, plus two readers running `state`
 * and `list` all the while. Every command succeeds or fails cleanly (an exit status and a
 * message, never a crash, a hang, "internal error" or a stack trace); no state file is ever
 * read corrupt; at the end nothing is left: no container listed, no state directory, no cgroup,
 * no process. Seeded: MOAT_CHAOS_SEED=<n> replays the racing workers' and the readers' choices
 * (the seed is printed).
 *
 * Moat only: it reads what Moat leaves on the host.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason, waitFor } from '../helpers/runtime.js';
import { CRASH_RE, cgroupMountpoints, chaosSeed, cleanFailure, findOrphans, prng, reapLeftovers, runCmd } from '../helpers/chaos.js';
import type { Timed } from '../helpers/chaos.js';

const skip = RUNTIME !== 'moat' ? 'chaos tests read what Moat leaves on the host; they test Moat, not runc' : skipReason();
if (skip) console.log(`# skipping concurrency chaos tests: ${skip}`);

const WORKERS = 10;
const CYCLES = 10;
const SHARED_WORKERS = 4;
const SHARED_OPS = 24;
const READERS = 2;

/** One command as it ran, for the report. */
interface Ran {
  who: string;
  args: string[];
  r: Timed;
}

describe('concurrent create/start/delete', { skip }, () => {
  const sb = new Sandbox();
  const seed = chaosSeed();
  const cgPrefix = `/moat-chaos-cc-${process.pid}`;
  after(async () => {
    await sb.cleanup();
    const killed = await reapLeftovers(sb.tmp, cgPrefix);
    if (killed.length > 0) console.log(`# concurrent cleanup: killed leftover processes ${killed.join(' ')}`);
  });

  it(`${WORKERS * CYCLES} cycles on distinct ids and ${SHARED_WORKERS * SHARED_OPS} commands racing on one id: clean errors only, nothing left`, { timeout: 600_000 }, async () => {
    console.log(`# concurrent seed ${seed} (MOAT_CHAOS_SEED=${seed} replays the workers' choices)`);
    const base = await sb.bundle(['sleep', '1000']);
    const spec = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8')) as Record<string, any>;
    const rootfs = join(base, 'rootfs');
    // every command runs here, so anything they leave running is found by its cwd
    const cwd = join(sb.tmp, 'cwd');
    mkdirSync(cwd, { recursive: true });
    let n = 0;
    const ran: Ran[] = [];
    const rt = async (who: string, args: string[]): Promise<Timed> => {
      const r = await runCmd(sb.root, args, { cwd, scratch: sb.tmp, tag: `cmd-${++n}`, timeoutMs: 90_000 });
      ran.push({ who, args, r });
      return r;
    };
    /** A bundle whose container lives in cgroup PREFIX/<name>. */
    const bundle = (name: string): string => {
      const dir = join(sb.tmp, `b-${name}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...spec, root: { path: rootfs }, linux: { ...spec.linux, cgroupsPath: `${cgPrefix}/${name}` } }));
      return dir;
    };
    const show = (x: Ran) => `[${x.who}] moat ${x.args.join(' ')} -> ${x.r.status ?? x.r.signal}: ${x.r.stderr.trim()}`;

    const inFlight = new Set<string>();
    const ids: string[] = [];
    const cycleFailures: string[] = [];

    // 10 workers x 10 cycles, each on its own ids: everything must succeed
    const distinct = async (w: number) => {
      for (let c = 0; c < CYCLES; c++) {
        const name = `w${w}-c${c}`;
        const id = `cc-${process.pid}-${name}`;
        const b = bundle(name);
        ids.push(id);
        inFlight.add(id);
        for (const args of [['create', '-b', b, id], ['start', id], ['delete', '--force', id]]) {
          const r = await rt(`w${w}`, args);
          if (r.status !== 0) cycleFailures.push(show(ran.at(-1)!));
        }
        inFlight.delete(id);
      }
    };

    // workers racing on one id, each a seeded random sequence of create, start and delete
    // --force: any step may lose the race, but only with a clean error
    const sharedId = `cc-${process.pid}-shared`;
    const sharedBundle = bundle('shared');
    ids.push(sharedId);
    const sharedOk = { create: 0, start: 0, delete: 0 };
    const shared = async (w: number) => {
      const pick = prng(seed + 1 + w);
      for (let k = 0; k < SHARED_OPS; k++) {
        const op = (['create', 'start', 'delete'] as const)[Math.floor(pick() * 3)]!;
        const args = op === 'create' ? ['create', '-b', sharedBundle, sharedId] : op === 'start' ? ['start', sharedId] : ['delete', '--force', sharedId];
        if ((await rt(`s${w}`, args)).status === 0) sharedOk[op]++;
      }
    };

    // readers: `state` of ids being worked on, and `list`, until the workers are done
    let done = false;
    let reads = 0;
    const readProblems: string[] = [];
    const STATUSES: unknown[] = ['creating', 'created', 'running', 'stopped', 'paused'];
    const parsed = (text: string): any => {
      try {
        return JSON.parse(text);
      } catch {
        return undefined; // reported by the caller: a torn or corrupt answer
      }
    };
    const reader = async (k: number) => {
      const rand = prng(seed + 100 + k);
      while (!done) {
        const live = [...inFlight, sharedId];
        const id = live[Math.floor(rand() * live.length)]!;
        const st = await rt(`r${k}`, ['state', id]);
        reads++;
        if (st.status === 0) {
          const status = parsed(st.stdout)?.status;
          if (!STATUSES.includes(status)) readProblems.push(`state ${id} printed ${st.stdout}`);
        }
        if (rand() < 0.25) {
          const l = await rt(`r${k}`, ['list', '--format', 'json']);
          const v = parsed(l.stdout || 'null'); // no container: `null`, as runc prints
          if (l.status === 0 && v !== null && !Array.isArray(v)) readProblems.push(`list printed ${l.stdout}`);
        }
      }
    };

    const t0 = Date.now();
    const readersDone = Promise.all(Array.from({ length: READERS }, (_, k) => reader(k)));
    try {
      await Promise.all([
        ...Array.from({ length: WORKERS }, (_, w) => distinct(w)),
        ...Array.from({ length: SHARED_WORKERS }, (_, w) => shared(w)),
      ]);
    } finally {
      done = true;
      await readersDone;
    }
    // the races over, the shared container (if the last step created it) goes too
    const last = await rt('final', ['delete', '--force', sharedId]);
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    const failed = ran.filter((x) => x.r.status !== 0);
    console.log(`# concurrent: ${ran.length} commands in ${secs} s (${reads} state reads), ${failed.length} failed; ` +
      `on the shared id ${sharedOk.create} creates, ${sharedOk.start} starts, ${sharedOk.delete} deletes succeeded; seed ${seed}`);
    const why = new Map<string, number>();
    for (const x of failed) {
      const key = `${x.args[0]}: ${x.r.stderr.trim().replace(/"[^"]*"/g, '"…"').slice(0, 100)}`;
      why.set(key, (why.get(key) ?? 0) + 1);
    }
    for (const [k, v] of why) console.log(`#   ${v} x ${k}`);

    // every command: success, or a clean failure; never a crash, a hang or a corrupt state
    const unclean = ran.filter((x) => (x.r.status !== 0 && !cleanFailure(x.r)) || CRASH_RE.test(x.r.stderr));
    assert.deepEqual(unclean.map(show), [], `seed ${seed}: commands that crashed, hung or saw a corrupt state`);
    assert.deepEqual(readProblems, [], `seed ${seed}: state or list printed something that is not a container state`);
    assert.deepEqual(cycleFailures, [], `seed ${seed}: create/start/delete on distinct ids must all succeed`);
    assert.ok(sharedOk.create > 1, 'the shared id was created less than twice: the race did not happen');
    assert.equal(last.status, 0, `delete --force of the shared id after the races: ${last.stderr}`);

    // nothing is left: no container, no state directory, no cgroup, no process, no mount
    const l = await rt('final', ['list', '--format', 'json']);
    assert.equal(l.status, 0, l.stderr);
    assert.deepEqual(JSON.parse(l.stdout || 'null') ?? [], [], 'containers are still listed');
    assert.deepEqual(existsSync(sb.root) ? readdirSync(sb.root) : [], [], `files left in the state root ${sb.root}`);
    const leftCgroups = cgroupMountpoints().flatMap((mp) => {
      const dir = join(mp, cgPrefix);
      return existsSync(dir) ? readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name)) : [];
    });
    assert.deepEqual(leftCgroups, [], 'cgroup directories left');
    let left: string[] = [];
    await waitFor(() => {
      left = ids.flatMap((id) => findOrphans({
        root: sb.root, id, cgroupPath: `${cgPrefix}/${id.slice(`cc-${process.pid}-`.length)}`, cwdDir: cwd, pids: [], mountPrefixes: [rootfs, join(sb.root, id)],
      }));
      return left.length === 0;
    }, 3000);
    assert.deepEqual([...new Set(left)], [], 'orphans left behind');
  });
});
