#!/usr/bin/env node
// Cold start against restore from a warm snapshot, for Moat's backends and runsc, in one run.
//
// The workload: python3 importing a set of standard modules (json, decimal, email, http.client,
// xml.dom.minidom, asyncio, argparse, unittest, logging, csv, sqlite3 when present), then printing
// "ready" and a "tick N" line every 100 ms. It runs from a bundle whose rootfs is the busybox
// fixture plus the host's python3, its libraries and /usr/lib/python3.X.
//   cold     `run -d` of the bundle until "ready" is on the container's stdout (boot + imports)
//   restore  from a snapshot taken once the workload was ready, until its first "tick" is out
//            (Moat: `snapshot create --from` + `run -d --from-snapshot`; runsc: `checkpoint` +
//            `restore --detach`)
// Each timed run is a fresh container, deleted afterwards; runs alternate between cold and
// restore. Targets (issue 7): microvm restore <= 0.25x its cold start; sentry restore faster than
// runsc's restore of the same workload.
//
//   sudo node bench/checkpoint.mjs [--iterations N] [--no-runsc] [--no-microvm]
//
// Needs root, qemu-system-x86_64 (microvm), python3, busybox-static, runsc for the comparison,
// and a compiled test tree (`npx tsc -p tsconfig.json`) for the busybox fixture.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { printTable, ratio, stats, which } from './lib.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const iterations = Number(args[args.indexOf('--iterations') + 1] ?? 0) || 5;
const useRunsc = !args.includes('--no-runsc') && which('runsc') !== undefined;
const useMicrovm = !args.includes('--no-microvm');
const MOAT = [process.execPath, path.join(repo, 'bin/moat.cjs')];

const SCRIPT = [
  'import json, decimal, email.parser, http.client, xml.dom.minidom, asyncio, argparse, unittest, logging, csv, sys, time',
  'try:\n    import sqlite3\nexcept ImportError:\n    pass',
  "print('ready', flush=True)",
  'n = 0',
  "while True:\n    n += 1\n    print('tick', n, flush=True)\n    time.sleep(0.1)",
].join('\n');

function die(msg) {
  console.error(`checkpoint bench: ${msg}`);
  process.exit(1);
}

/** The bundle: busybox fixture + python3 with its libraries and standard library (test/fixtures/python.ts). */
async function pythonBundle(dir) {
  const fixture = path.join(repo, 'build/test/fixtures/python.js');
  if (!fs.existsSync(fixture)) die(`${fixture} is missing: run "npx tsc -p tsconfig.json" first`);
  const { makePythonBundle, pythonSkipReason } = await import(pathToFileURL(fixture).href);
  const why = pythonSkipReason();
  if (why) die(why);
  return makePythonBundle({ dir, args: ['python3', '-c', SCRIPT] });
}

/** Starts `cmd` detached from the bench, its stdout into `out`; resolves with its exit. */
function launch(cmd, out) {
  const fd = fs.openSync(out, 'w');
  const errFile = `${out}.err`;
  const errFd = fs.openSync(errFile, 'w');
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ['ignore', fd, errFd] });
  fs.closeSync(fd);
  fs.closeSync(errFd);
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, err: () => fs.readFileSync(errFile, 'utf8') })));
}

/** Resolves with the ms from `t0` until `re` matches the text of `file`; fails after `ms`. */
async function until(file, re, t0, ms, what) {
  for (;;) {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      // not yet
    }
    if (re.test(text)) return performance.now() - t0;
    if (performance.now() - t0 > ms) throw new Error(`${what}: no ${re} within ${ms} ms; stdout: ${text.slice(-300)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const run = (cmd) => spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8' });

/** Summed Rss and Pss (MiB) of the processes `pids` and their descendants (a VM: its VMM). */
function memoryOf(pids) {
  const all = [];
  const queue = [...pids];
  while (queue.length > 0) {
    const p = queue.shift();
    all.push(p);
    try {
      for (const t of fs.readdirSync(`/proc/${p}/task`)) queue.push(...fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      // gone
    }
  }
  let rss = 0;
  let pss = 0;
  for (const p of all) {
    try {
      const t = fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      rss += Number(/^Rss:\s+(\d+)/m.exec(t)?.[1] ?? 0);
      pss += Number(/^Pss:\s+(\d+)/m.exec(t)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return { rss: rss / 1024, pss: pss / 1024 };
}

async function main() {
  if (process.getuid() !== 0) die('needs root');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-ckpt-bench-'));
  const root = path.join(tmp, 'moat');
  const runscRoot = path.join(tmp, 'runsc');
  const ids = [];
  const rt = (...a) => [...MOAT, '--root', root, ...a];
  try {
    console.log(`checkpoint bench: python3 warm-up workload, ${iterations} timed runs per configuration`);
    const bundle = await pythonBundle(path.join(tmp, 'bundle'));
    console.log(`  bundle ${bundle} (busybox + ${fs.realpathSync('/usr/bin/python3')} and its standard library)`);
    const g = run(rt('guest', 'build'));
    if (g.status !== 0) die(`moat guest build failed: ${g.stderr}`);
    const rows = [['configuration', 'cold ms (median)', 'restore ms (median)', 'restore / cold', 'target']];
    const summary = [];

    /** Cold start and restore-from-snapshot medians of Moat under `isolation`. */
    const moat = async (isolation) => {
      const warm = `warm-${isolation}`;
      // the template: a warmed container, snapshotted while it runs
      const tid = `tpl-${isolation}-${process.pid}`;
      ids.push(tid);
      const tout = path.join(tmp, `${tid}.out`);
      const t0 = performance.now();
      const created = launch(rt('run', '-d', '--isolation', isolation, '-b', bundle, tid), tout);
      const warmup = await until(tout, /^ready$/m, t0, 300_000, `the ${isolation} template`);
      const c = await created;
      if (c.code !== 0) die(`moat run -d failed: ${c.err()}`);
      console.log(`  ${isolation} template warmed in ${warmup.toFixed(0)} ms${isolation === 'microvm' ? ' (first boot of a new base image included)' : ''}`);
      const s = run(rt('snapshot', 'create', '--from', tid, warm));
      if (s.status !== 0) die(`snapshot create failed: ${s.stderr}`);
      run(rt('delete', '--force', tid));
      const cold = [];
      const restore = [];
      for (let i = 0; i < iterations; i++) {
        for (const kind of ['cold', 'restore']) {
          const id = `${isolation}-${kind}-${i}-${process.pid}`;
          ids.push(id);
          const out = path.join(tmp, `${id}.out`);
          const t = performance.now();
          const cmd = kind === 'cold' ? rt('run', '-d', '--isolation', isolation, '-b', bundle, id) : rt('run', '-d', '--from-snapshot', warm, id);
          const p = launch(cmd, out);
          const ms = await until(out, kind === 'cold' ? /^ready$/m : /^tick \d+$/m, t, 300_000, `moat ${isolation} ${kind}`);
          const r = await p;
          if (r.code !== 0) die(`moat ${kind} failed: ${r.err()}`);
          (kind === 'cold' ? cold : restore).push(ms);
          run(rt('delete', '--force', id));
        }
      }
      const img = fs.statSync(path.join(root, 'snapshots', warm, 'moat-checkpoint.img')).size;
      // memory of five containers made from the snapshot, running side by side
      const clones = [];
      for (let i = 0; i < 5; i++) {
        const id = `${isolation}-clone-${i}-${process.pid}`;
        ids.push(id);
        clones.push(id);
        const out = path.join(tmp, `${id}.out`);
        const p = launch(rt('run', '-d', '--from-snapshot', warm, id), out);
        await until(out, /^tick \d+$/m, performance.now(), 300_000, `moat ${isolation} clone`);
        await p;
      }
      const mem = memoryOf(clones.map((id) => JSON.parse(fs.readFileSync(path.join(root, id, 'state.json'), 'utf8')).pid));
      for (const id of clones) run(rt('delete', '--force', id));
      run(rt('snapshot', 'delete', warm));
      return { cold: stats(cold).median, restore: stats(restore).median, imageMiB: img / 1048576, mem };
    };

    // --- moat microvm
    if (useMicrovm) {
      const m = await moat('microvm');
      rows.push(['moat microvm', m.cold.toFixed(0), m.restore.toFixed(0), ratio(m.restore, m.cold), '<= 0.25x']);
      summary.push(`microvm restore / cold start: ${ratio(m.restore, m.cold)} (target <= 0.25x: ${m.restore / m.cold <= 0.25 ? 'met' : 'NOT met'}); snapshot image ${m.imageMiB.toFixed(0)} MiB; five VMs from it: ${m.mem.pss.toFixed(0)} MiB PSS (${m.mem.rss.toFixed(0)} MiB RSS)`);
    } else {
      rows.push(['moat microvm', 'skipped', '', '', '']);
    }
    // --- moat sentry
    const sentry = await moat('sentry');
    rows.push(['moat sentry', sentry.cold.toFixed(0), sentry.restore.toFixed(0), ratio(sentry.restore, sentry.cold), '< runsc restore']);
    summary.push(`sentry: the workload processes of five containers from one snapshot use ${sentry.mem.pss.toFixed(1)} MiB PSS together, ${sentry.mem.rss.toFixed(1)} MiB RSS (the snapshot's pages are shared copy-on-write; their sentries not counted)`);

    // --- runsc
    if (useRunsc) {
      const rs = (...a) => ['runsc', '--root', runscRoot, '--network=none', ...a];
      const cold = [];
      const restore = [];
      for (let i = 0; i < iterations; i++) {
        const id = `rs-${i}-${process.pid}`;
        const out = path.join(tmp, `${id}.out`);
        const t = performance.now();
        const p = launch(rs('run', '--detach', '--bundle', bundle, id), out);
        cold.push(await until(out, /^ready$/m, t, 120_000, 'runsc cold'));
        const r = await p;
        if (r.code !== 0) die(`runsc run failed: ${r.err()}`);
        const img = path.join(tmp, `${id}-img`);
        const ck = run(rs('checkpoint', '--image-path', img, id));
        if (ck.status !== 0) die(`runsc checkpoint failed: ${ck.stderr}`);
        run(rs('delete', '--force', id));
        const id2 = `${id}-r`;
        const out2 = path.join(tmp, `${id2}.out`);
        const t2 = performance.now();
        const p2 = launch(rs('restore', '--detach', '--image-path', img, '--bundle', bundle, id2), out2);
        restore.push(await until(out2, /^tick \d+$/m, t2, 120_000, 'runsc restore'));
        const r2 = await p2;
        if (r2.code !== 0) die(`runsc restore failed: ${r2.err()}`);
        run(rs('delete', '--force', id2));
        fs.rmSync(img, { recursive: true, force: true });
      }
      const c50 = stats(cold).median;
      const r50 = stats(restore).median;
      rows.push(['runsc (gVisor)', c50.toFixed(0), r50.toFixed(0), ratio(r50, c50), '(peer)']);
      summary.push(`sentry restore / runsc restore: ${ratio(sentry.restore, r50)} (target < 1x: ${sentry.restore < r50 ? 'met' : 'NOT met'}); sentry cold / runsc cold: ${ratio(sentry.cold, c50)}; sentry snapshot image ${sentry.imageMiB.toFixed(0)} MiB`);
    } else {
      rows.push(['runsc (gVisor)', 'skipped', '', '', '']);
      summary.push(`sentry restore ${sentry.restore.toFixed(0)} ms, image ${sentry.imageMiB.toFixed(0)} MiB (runsc skipped: no comparison)`);
    }
    console.log('\ntime to a warmed workload, ms (cold: to "ready"; restore: to the first "tick")');
    printTable(rows);
    console.log('\nsummary:');
    for (const l of summary) console.log(`  ${l}`);
  } finally {
    for (const id of ids) run(rt('delete', '--force', id));
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => die(e.stack ?? String(e)));
