#!/usr/bin/env node
// Moat vs runc: container start-up time and memory left resident per running container.
//
//   node bench/run.mjs [--iterations N] [--warmup N] [--containers K] [--moat PATH] [--runc PATH]
//
// Moat is `moat` as users run it, the native front end dist/moat (warm standby CLI processes take
// the commands; cycles run back to back, so some find no standby ready and run cold: the tail);
// --moat bin/moat.cjs times the Node CLI alone.
//
// Needs root and a compiled test tree (`npx tsc -p tsconfig.json`): the busybox bundle comes from
// build/test/fixtures/busybox.js. Plain JS on purpose, so the bench runs without compiling bench/.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { flagReader, interrupt, ratio, removeTemp, reportFailure, runtime, RuntimeFailure, stats, tail, which } from './lib.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CALL_TIMEOUT_MS = 60_000;


function usage(code) {
  const text = `usage: node bench/run.mjs [--iterations N] [--warmup N] [--containers K] [--moat PATH] [--runc PATH]
  --iterations N  timed run cycles per runtime (default 20)
  --warmup N      untimed cycles per runtime first (default 1)
  --containers K  detached containers per runtime for the memory measure (default 5)
  --moat PATH     moat executable (default ${path.join(repo, 'dist/moat')}, the native front end; .mjs/.js/.cjs run with node)
  --runc PATH     runc executable (default: runc on PATH)`;
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { iterations: 20, warmup: 1, containers: 5, moat: path.join(repo, 'dist/moat'), runc: undefined };
  const flags = flagReader(argv, usage);
  for (let flag = flags.next(); flag !== undefined; flag = flags.next()) {
    const { value, count } = flags;
    if (flag === '--iterations') opts.iterations = count(1);
    else if (flag === '--warmup') opts.warmup = count(0);
    else if (flag === '--containers') opts.containers = count(1);
    else if (flag === '--moat') opts.moat = path.resolve(value());
    else if (flag === '--runc') opts.runc = value();
    else if (flag === '--help' || flag === '-h') usage(0);
    else {
      console.error(`unknown argument: ${flag}`);
      usage(2);
    }
  }
  return opts;
}




let logSeq = 0;
let logDir = '';

/**
 * Runs `<runtime> --root R ...args` synchronously with stdout/stderr going to a fresh log file
 * (not a pipe: a detached container inherits them and would keep a pipe open). Returns the exit
 * status, the output, and the wall time of the call itself in nanoseconds.
 */
function call(rt, args, { env, allowFail = false } = {}) {
  const log = path.join(logDir, `${++logSeq}.log`);
  const fd = fs.openSync(log, 'w');
  let r;
  const t0 = process.hrtime.bigint();
  try {
    r = spawnSync(rt.cmd[0], [...rt.cmd.slice(1), '--root', rt.root, ...args], {
      stdio: ['ignore', fd, fd],
      timeout: CALL_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      env: env ?? process.env,
    });
  } finally {
    fs.closeSync(fd);
  }
  const ns = process.hrtime.bigint() - t0;
  const output = fs.readFileSync(log, 'utf8');
  interrupt.check();
  const what = `${rt.name}: ${rt.label} --root ${rt.root} ${args.join(' ')}`;
  if (r.error) throw new RuntimeFailure(`${what}: ${r.error.code === 'ETIMEDOUT' ? `timed out after ${CALL_TIMEOUT_MS} ms` : r.error.message}\n${tail(output)}`);
  if (r.status !== 0 && !allowFail) {
    const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
    throw new RuntimeFailure(`${what}: ${how}\n${tail(output)}`);
  }
  return { status: r.status, output, ns };
}


/**
 * One timed cycle: `run` (create+start+wait, and the delete that run does itself after the
 * container exits, for runc and Moat alike). A `delete -f` afterwards is only a safety net and
 * is not timed: it would add a second process start to the runtime being measured.
 */
function cycle(rt, bundle, id) {
  rt.ids.add(id);
  const run = call(rt, ['run', '-b', bundle, id]);
  call(rt, ['delete', '-f', id], { allowFail: true });
  rt.ids.delete(id);
  return Number(run.ns) / 1e6;
}


const fmt = (n, w = 8) => n.toFixed(1).padStart(w);

// ---------------------------------------------------------------------------------------------
// Process table and memory accounting

/** Reads /proc/PID/stat: ppid, start time (to tell pid reuse apart) and comm; undefined if gone. */
function procStat(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    return { pid, comm, state: f[0], ppid: Number(f[1]), start: f[19] };
  } catch {
    return undefined;
  }
}

function readLink(p) {
  try {
    return fs.readlinkSync(p);
  } catch {
    return undefined;
  }
}

/** Snapshot of every process, keyed by "pid:starttime". */
function processTable() {
  const table = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = procStat(Number(name));
    if (p) table.set(`${p.pid}:${p.start}`, p);
  }
  return table;
}

/** True when the process's command line, cwd or any open file refers to something under `dir`. */
function touches(pid, dir) {
  try {
    if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) return true;
  } catch {
    return false;
  }
  if (readLink(`/proc/${pid}/cwd`)?.startsWith(dir)) return true;
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      if (readLink(`/proc/${pid}/fd/${fd}`)?.startsWith(dir)) return true;
    }
  } catch {
    // process gone or fds unreadable
  }
  return false;
}

/** VmRSS (status) and Pss (smaps_rollup, when the kernel has it) of one process, in KiB. */
function memoryOf(pid) {
  let rss = 0;
  let pss;
  try {
    rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    // gone
  }
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    if (m) pss = Number(m[1]);
  } catch {
    // no smaps_rollup (kernel < 4.14) or gone
  }
  return { rss, pss };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts K detached `sleep 1000` containers and accounts for every process that exists because of
 * them: processes in the containers' pid namespaces, plus new host-side processes (monitors, shims)
 * tied to them: ancestors of a container process, processes whose cmdline/cwd/open files refer to
 * the bench's temp dir (runtime root, bundle, log files), and their descendants. Other processes
 * that happened to start meanwhile on this machine are listed as ignored.
 */
async function measureMemory(rt, bundle, k, tmp) {
  const hostPidNs = readLink('/proc/self/ns/pid');
  const before = processTable();
  const ids = [];
  for (let i = 0; i < k; i++) {
    const id = `mem-${i}`;
    rt.ids.add(id);
    ids.push(id);
    call(rt, ['run', '--detach', '-b', bundle, id]);
    await interrupt.tick();
  }
  await sleep(300); // let runtimes finish any post-start work

  const initPids = [];
  for (const id of ids) {
    const { output } = call(rt, ['state', id]);
    let state;
    try {
      state = JSON.parse(output);
    } catch {
      throw new RuntimeFailure(`${rt.name}: state ${id} did not print JSON:\n${tail(output)}`);
    }
    if (state.status !== 'running' || !(state.pid > 0)) {
      throw new RuntimeFailure(`${rt.name}: container ${id} is not running (status ${state.status}, pid ${state.pid})`);
    }
    initPids.push(state.pid);
  }

  const after = processTable();
  const fresh = [...after.entries()].filter(([key]) => !before.has(key)).map(([, p]) => p);
  const byPid = new Map([...after.values()].map((p) => [p.pid, p]));
  const containerNs = new Set(initPids.map((pid) => readLink(`/proc/${pid}/ns/pid`)).filter((ns) => ns && ns !== hostPidNs));

  const container = new Set();
  const runtimeProcs = new Set();
  for (const p of fresh) {
    const ns = readLink(`/proc/${p.pid}/ns/pid`);
    if ((ns && containerNs.has(ns)) || initPids.includes(p.pid)) container.add(p.pid);
  }
  const freshPids = new Set(fresh.map((p) => p.pid));
  for (const pid of initPids) {
    for (let q = byPid.get(pid); q && q.ppid > 1; q = byPid.get(q.ppid)) {
      if (freshPids.has(q.ppid) && !container.has(q.ppid)) runtimeProcs.add(q.ppid);
    }
  }
  for (const p of fresh) if (!container.has(p.pid) && touches(p.pid, tmp)) runtimeProcs.add(p.pid);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of fresh) {
      if (!container.has(p.pid) && !runtimeProcs.has(p.pid) && (runtimeProcs.has(p.ppid) || container.has(p.ppid))) {
        runtimeProcs.add(p.pid);
        grew = true;
      }
    }
  }
  const ignored = fresh.filter((p) => !container.has(p.pid) && !runtimeProcs.has(p.pid));

  const sum = (pids) => {
    let rss = 0;
    let pss = 0;
    let pssKnown = true;
    for (const pid of pids) {
      const m = memoryOf(pid);
      rss += m.rss;
      if (m.pss === undefined) pssKnown = false;
      else pss += m.pss;
    }
    return { rss, pss: pssKnown ? pss : undefined, count: pids.size };
  };
  const c = sum(container);
  const r = sum(runtimeProcs);
  const names = (pids) => [...pids].map((pid) => byPid.get(pid)?.comm ?? '?');
  const result = {
    k,
    container: c,
    runtime: r,
    rssPer: (c.rss + r.rss) / k,
    pssPer: c.pss !== undefined && r.pss !== undefined ? (c.pss + r.pss) / k : undefined,
    runtimeNames: names(runtimeProcs),
    ignored: ignored.map((p) => `${p.comm}[${p.pid}]`),
  };

  for (const id of ids) {
    call(rt, ['kill', id, 'KILL'], { allowFail: true });
  }
  for (const id of ids) {
    await waitStopped(rt, id);
    call(rt, ['delete', '-f', id], { allowFail: true });
    rt.ids.delete(id);
  }
  return result;
}

/** Polls `state` until the container is stopped or gone (at most ~2 s). */
async function waitStopped(rt, id) {
  for (let i = 0; i < 40; i++) {
    const r = call(rt, ['state', id], { allowFail: true });
    if (r.status !== 0) return;
    try {
      if (JSON.parse(r.output).status === 'stopped') return;
    } catch {
      return;
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const runcPath = which(opts.runc ?? 'runc');
  if (runcPath === undefined) {
    console.log(`bench skipped: runc not found (${opts.runc ?? 'runc on PATH'}); install the Debian package runc to compare against it`);
    return 0;
  }
  if (!fs.existsSync(opts.moat)) {
    console.error(`moat not found at ${opts.moat}`);
    return 1;
  }
  const fixture = path.join(repo, 'build/test/fixtures/busybox.js');
  if (!fs.existsSync(fixture)) {
    console.error(`${fixture} is missing: compile first with "npx tsc -p tsconfig.json"`);
    return 1;
  }
  if (process.getuid?.() !== 0) console.warn('warning: not running as root; both runtimes will probably fail');
  const { makeBundle } = await import(pathToFileURL(fixture).href);

  const moat = runtime('moat', opts.moat);
  const runc = runtime('runc', runcPath);
  const runtimes = [moat, runc];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-bench-'));
  logDir = path.join(tmp, 'logs');
  fs.mkdirSync(logDir);
  moat.root = path.join(tmp, 'moat-root');
  runc.root = path.join(tmp, 'runc-root');

  const onSignal = () => {
    interrupt.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const trueBundle = await makeBundle({ dir: path.join(tmp, 'bundle-true'), args: ['/bin/true'] });
    const sleepBundle = await makeBundle({ dir: path.join(tmp, 'bundle-sleep'), args: ['sleep', '1000'] });

    console.log(`moat vs runc start-up: ${opts.iterations} iterations (+${opts.warmup} warm-up), bundle ${trueBundle} (args /bin/true)`);
    for (const rt of runtimes) console.log(`  ${rt.name}: ${rt.label}`);

    for (let i = 0; i < opts.warmup; i++) {
      for (const rt of runtimes) {
        cycle(rt, trueBundle, `warmup-${i}`);
        await interrupt.tick();
      }
    }
    const times = { moat: [], runc: [] };
    for (let i = 0; i < opts.iterations; i++) {
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse(); // alternate who goes first
      for (const rt of order) {
        times[rt.name].push(cycle(rt, trueBundle, `bench-${i}`));
        await interrupt.tick();
      }
    }
    const st = { moat: stats(times.moat), runc: stats(times.runc) };
    console.log('\ncycle = run (create+start+wait+delete), wall time in ms');
    console.log(`runtime ${'median'.padStart(8)} ${'p90'.padStart(8)} ${'mean'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
    for (const rt of runtimes) {
      const s = st[rt.name];
      console.log(`${rt.name.padEnd(7)} ${fmt(s.median)} ${fmt(s.p90)} ${fmt(s.mean)} ${fmt(s.min)} ${fmt(s.max)}`);
    }
    console.log(
      `ratio moat/runc: median ${ratio(st.moat.median, st.runc.median)}, p90 ${ratio(st.moat.p90, st.runc.p90)}, mean ${ratio(st.moat.mean, st.runc.mean)}`,
    );

    // context: what Node itself costs to start and exit on this machine, with no Moat code
    const floor = [];
    for (let i = 0; i < opts.iterations; i++) {
      const t0 = process.hrtime.bigint();
      spawnSync(process.execPath, ['-e', '0']);
      floor.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    const fl = stats(floor);
    console.log(`node -e 0 (Node start-up floor): median ${fl.median.toFixed(1)} ms = ${ratio(fl.median, st.runc.median)} of runc's whole cycle; moat above the floor: ${(st.moat.median - fl.median).toFixed(1)} ms`);

    console.log(`\nmemory left resident per running container (K=${opts.containers} detached "sleep 1000" containers per runtime)`);
    const mem = {};
    for (const rt of runtimes) mem[rt.name] = await measureMemory(rt, sleepBundle, opts.containers, tmp);
    console.log(`runtime ${'RSS KiB'.padStart(10)} ${'PSS KiB'.padStart(10)}  processes (container + runtime-side)`);
    for (const rt of runtimes) {
      const m = mem[rt.name];
      const pss = m.pssPer === undefined ? 'n/a'.padStart(10) : fmt(m.pssPer, 10);
      const side = m.runtime.count > 0 ? ` [${[...new Set(m.runtimeNames)].join(', ')}]` : '';
      console.log(`${rt.name.padEnd(7)} ${fmt(m.rssPer, 10)} ${pss}  ${m.container.count} + ${m.runtime.count}${side}`);
      if (m.ignored.length > 0) console.log(`        (ignored ${m.ignored.length} unrelated new processes: ${m.ignored.join(' ')})`);
    }
    const pssRatio = mem.moat.pssPer !== undefined && mem.runc.pssPer !== undefined ? ratio(mem.moat.pssPer, mem.runc.pssPer) : 'n/a';
    console.log(`ratio moat/runc: RSS ${ratio(mem.moat.rssPer, mem.runc.rssPer)}, PSS ${pssRatio}`);

    console.log('\nmoat time breakdown (one run with MOAT_TRACE=1):');
    moat.ids.add('trace-0');
    const traced = call(moat, ['run', '-b', trueBundle, 'trace-0'], { env: { ...process.env, MOAT_TRACE: '1' } });
    call(moat, ['delete', '-f', 'trace-0'], { allowFail: true });
    moat.ids.delete('trace-0');
    const lines = traced.output.split('\n').filter((l) => l.startsWith('moat-trace:'));
    if (lines.length === 0) console.log('  (no moat-trace: lines; this moat does not support MOAT_TRACE)');
    else for (const l of lines) console.log(`  ${l}`);
    return 0;
  } catch (err) {
    return reportFailure(err);
  } finally {
    interrupt.stopped = false; // cleanup must run even after Ctrl-C
    for (const rt of runtimes) {
      for (const id of rt.ids) {
        try {
          call(rt, ['kill', id, 'KILL'], { allowFail: true });
          call(rt, ['delete', '-f', id], { allowFail: true });
        } catch (err) {
          console.error(`cleanup: ${rt.name} ${id}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    }
    removeTemp(tmp);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main();
