#!/usr/bin/env node
// Moat under containerd: the start-up time of `ctr run --rm IMAGE ID /bin/true` through runc's
// shim with runc, runc's shim with Moat as its runtime binary, and Moat's own shim (containerd-
// shim-moat-v1), side by side against one private containerd, and the memory of the shim daemon
// serving one running container (Moat's shim against runc's).
//
//   sudo node bench/containerd.mjs [--iterations N] [--warmup N] [--sentry] [--no-standby]
//
// The configurations, each a `ctr run --rm` of the image moat.test/busybox:latest (a fresh id
// every time; ctr creates the container, starts the task, waits for it and deletes both):
//   runc              the default runtime io.containerd.runc.v2 (containerd-shim-runc-v2) with runc
//   runc shim + moat  the same shim with `--runc-binary bin/moat.cjs`
//   moat shim         `--runtime io.containerd.moat.v1`: containerd starts containerd-shim-moat-v1
//   moat shim sentry  (with --sentry) the same plus `--annotation io.moat.isolation=sentry`
// Moat's shim keeps a warm standby daemon (src/shim/standby.ts): from the second run on, a sandbox's
// shim is a standby booted in the background, not a fresh Node start; the warm-up runs get there.
// --no-standby sets MOAT_SHIM_STANDBY=0 in containerd's environment to time the cold path. A
// standby this run started is stopped at the end.
// Each configuration first runs `sh -c 'echo ok'` once (it must print ok), then --warmup untimed
// runs; the timed runs go round-robin, one of each configuration per iteration, the one going
// first rotating, so that drifting load on the machine spreads over all of them. The time is the
// wall time of the whole ctr process. Medians, p90 and means, each against runc's median, and
// Moat's shim against the issue's target: at most 1.5x runc.
//
// Memory: one detached `sleep 1000` container (`ctr run -d`) under runc's shim and one under
// Moat's; then VmRSS and Pss (smaps_rollup) of the shim daemon serving it: for runc the
// containerd-shim-runc-v2 process whose command line has `-id ID` (the daemon; `start` has exited),
// for Moat the new process whose command line is its process.title, `containerd-shim-moat-v1`.
// Processes a daemon keeps between itself and the container count too: under Moat's shim the
// native stage (moat-init, process P of native/moat-init.c) stays as the container's monitor and
// reports its exit; runc's shim is the container's parent itself. The container's own processes
// do not count. Pss divides shared pages among the processes mapping them, so other node
// processes on the machine (other Moat shims) lower Moat's; RSS does not depend on them.
//
// containerd runs with its own root, state, sockets and log in a temporary directory (CRI off, log
// level info: debug would make the shims log more, and time that), from a PATH that starts with a
// directory holding the link containerd-shim-moat-v1 -> dist/containerd-shim-moat-v1. At the
// end, and on a failure or Ctrl-C: every task and container is deleted, containerd stopped
// (SIGTERM, then SIGKILL after 10 s), shims it left behind killed by pid, mounts left under the
// directory unmounted and the directory removed. A failure prints the end of containerd's log.
//
// Needs root, containerd (with ctr and containerd-shim-runc-v2), runc, a static busybox
// (busybox-static) and a compiled test tree (`npx tsc -p tsconfig.json`): the image archive comes
// from build/test/fixtures/ociimage.js. Plain JS on purpose, like the other benches.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  flagReader,
  interrupt,
  printTable,
  procMemory,
  ratio,
  removeTemp,
  reportFailure,
  RuntimeFailure,
  stats,
  tail,
  unmountUnder,
  which,
} from './lib.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CALL_TIMEOUT_MS = 60_000;
const START_TIMEOUT_MS = 20_000; // containerd answering `ctr version`
const NAMESPACE = 'moat-bench';
const IMAGE = 'moat.test/busybox:latest';
const SHIM_TITLE = 'containerd-shim-moat-v1'; // the daemon's process.title (src/shim/main.ts)
const STANDBY_TITLE = 'containerd-shim-moat-v1-standby'; // an unclaimed standby's (src/shim/standby.ts)
const TARGET = 1.5; // Moat shim / runc, median
/** Where the shims keep the runtime's state for our namespace (outside containerd's own dirs). */
const SHIM_ROOTS = [`/run/containerd/runc/${NAMESPACE}`, `/run/containerd/moat/${NAMESPACE}`];

function usage(code) {
  const text = `usage: sudo node bench/containerd.mjs [--iterations N] [--warmup N] [--sentry] [--no-standby]
  --iterations N  timed runs per configuration (default 20)
  --warmup N      untimed runs per configuration first (default 3)
  --sentry        also time Moat's shim with --annotation io.moat.isolation=sentry
  --no-standby    no warm standby shim (MOAT_SHIM_STANDBY=0): every Moat shim boots Node on the critical path`;
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { iterations: 20, warmup: 3, sentry: false, standby: true };
  const flags = flagReader(argv, usage);
  for (let flag = flags.next(); flag !== undefined; flag = flags.next()) {
    const { count } = flags;
    if (flag === '--iterations') opts.iterations = count(1);
    else if (flag === '--warmup') opts.warmup = count(0);
    else if (flag === '--sentry') opts.sentry = true;
    else if (flag === '--no-standby') opts.standby = false;
    else if (flag === '--help' || flag === '-h') usage(0);
    else {
      console.error(`unknown argument: ${flag}`);
      usage(2);
    }
  }
  return opts;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ms1 = (v) => v.toFixed(1);

// ---------------------------------------------------------------------------------------------
// The private containerd and ctr

/** The private containerd: { dir, address, logFile, child, exited, error }; undefined until started. */
let ctd;

/** The last lines of containerd's log, for a failure message. */
function containerdLog(lines = 25) {
  try {
    return `containerd's log (${ctd.logFile}) ends:\n${tail(fs.readFileSync(ctd.logFile, 'utf8'), lines)}`;
  } catch {
    return "containerd's log: (none)";
  }
}

/**
 * Runs argv synchronously (stdin /dev/null, stdout and stderr piped: ctr's children are started
 * by containerd, so nothing keeps the pipes open). Throws RuntimeFailure, with the output and the
 * end of containerd's log, unless it exits 0 (or `allowFail`); returns the status, stdout, all the
 * output, and the wall time in ms.
 */
function exec(argv, { allowFail = false } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: CALL_TIMEOUT_MS, killSignal: 'SIGKILL' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  interrupt.check();
  if (!allowFail && (r.error || r.status !== 0)) {
    const how = r.error
      ? r.error.code === 'ETIMEDOUT' ? `timed out after ${CALL_TIMEOUT_MS / 1000} s` : r.error.message
      : r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
    throw new RuntimeFailure(`${argv.join(' ')}: ${how}\n${tail(output)}${ctd ? `\n${containerdLog()}` : ''}`);
  }
  return { status: r.status, stdout: r.stdout ?? '', output, ms };
}

/** `ctr -a SOCKET -n moat-bench ...args` (see exec). */
const ctr = (args, opts) => exec(['ctr', '-a', ctd.address, '-n', NAMESPACE, ...args], opts);

/**
 * Starts containerd confined to `dir` (root, state, gRPC and ttrpc sockets, log; the CRI plugin
 * disabled), in a session of its own so that Ctrl-C reaches the bench and not it, and waits until
 * `ctr version` answers.
 */
async function startContainerd(dir, env) {
  const q = JSON.stringify; // TOML basic strings: the same escapes as JSON for these paths
  const config = path.join(dir, 'config.toml');
  fs.writeFileSync(config, [
    'version = 2',
    `root = ${q(path.join(dir, 'root'))}`,
    `state = ${q(path.join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '',
    '[grpc]',
    `  address = ${q(path.join(dir, 'containerd.sock'))}`,
    '',
    '[ttrpc]',
    `  address = ${q(path.join(dir, 'containerd.sock.ttrpc'))}`,
    '',
  ].join('\n'));
  const logFile = path.join(dir, 'containerd.log');
  const log = fs.openSync(logFile, 'a');
  const child = spawn('containerd', ['--config', config], { stdio: ['ignore', log, log], env, detached: true });
  fs.closeSync(log);
  ctd = { dir, address: path.join(dir, 'containerd.sock'), logFile, child, exited: false, error: undefined };
  child.on('exit', () => (ctd.exited = true));
  child.on('error', (err) => (ctd.error = err));
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    await sleep(100);
    interrupt.check();
    if (ctd.error) throw new RuntimeFailure(`cannot start containerd: ${ctd.error.message}`);
    if (ctd.exited) throw new RuntimeFailure(`containerd exited at start\n${containerdLog()}`);
    if (fs.existsSync(ctd.address) && ctr(['version'], { allowFail: true }).status === 0) return;
    if (Date.now() > deadline) throw new RuntimeFailure(`containerd did not answer within ${START_TIMEOUT_MS / 1000} s\n${containerdLog()}`);
  }
}

/** Deletes every task (killing it) and container, then stops containerd: SIGTERM, SIGKILL after 10 s. */
async function stopContainerd() {
  if (!ctd || ctd.exited || ctd.error) return;
  const list = (args) => ctr(args, { allowFail: true }).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  for (const id of list(['task', 'ls', '-q'])) {
    const r = ctr(['task', 'delete', '-f', id], { allowFail: true });
    if (r.status !== 0) console.error(`cleanup: ctr task delete -f ${id}: ${r.output.trim()}`);
  }
  for (const id of list(['container', 'ls', '-q'])) {
    const r = ctr(['container', 'delete', id], { allowFail: true });
    if (r.status !== 0) console.error(`cleanup: ctr container delete ${id}: ${r.output.trim()}`);
  }
  const exited = new Promise((resolve) => ctd.child.once('exit', resolve));
  ctd.child.kill('SIGTERM');
  if ((await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)])) === false) {
    console.error('cleanup: containerd did not stop within 10 s of SIGTERM; killing it');
    ctd.child.kill('SIGKILL');
    await exited;
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/** Every process: pid -> { ppid, argv } (argv from /proc/PID/cmdline, NUL-separated). */
function processTable() {
  const table = new Map();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const argv = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      table.set(Number(name), { ppid, argv });
    } catch {
      // exited while we looked
    }
  }
  return table;
}

/** `root` and its descendants in a process table. */
function subtree(table, root) {
  const out = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, p] of table) {
      if (!out.has(pid) && out.has(p.ppid)) {
        out.add(pid);
        grew = true;
      }
    }
  }
  return out;
}

/** Moat shim daemons: processes whose command line is exactly the daemon's process.title. */
const moatShims = (table) => [...table].filter(([, p]) => p.argv.length === 1 && p.argv[0] === SHIM_TITLE).map(([pid]) => pid);

/** runc shim daemons of container `id`: containerd-shim-runc-v2 ... -id ID ..., not a `start`/`delete` call. */
const runcShims = (table, id) =>
  [...table]
    .filter(([, p]) => path.basename(p.argv[0] ?? '') === 'containerd-shim-runc-v2' && p.argv[p.argv.indexOf('-id') + 1] === id)
    .filter(([, p]) => !p.argv.includes('start') && !p.argv.includes('delete'))
    .map(([pid]) => pid);

/** Pids of idle standby shims (any Moat installation's). */
function standbys() {
  return [...processTable()].filter(([, p]) => p.argv[0] === STANDBY_TITLE).map(([pid]) => pid);
}

/**
 * Processes other than this one that name `dir` in their command line (runc's shims: -address)
 * or work in it (Moat's shims: their cwd is the task's bundle under containerd's state): shims
 * containerd left behind. SIGKILLed by pid; returns short descriptions.
 */
function killLeftovers(dir) {
  const found = [];
  for (const [pid, p] of processTable()) {
    if (pid === process.pid) continue;
    let cwd = '';
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      // gone, or a kernel thread
    }
    if (!p.argv.some((a) => a.includes(dir)) && !cwd.startsWith(`${dir}/`)) continue;
    try {
      process.kill(pid, 'SIGKILL');
      found.push(`${pid} ${path.basename(p.argv[0] ?? '?')}`);
    } catch {
      // already gone
    }
  }
  return found;
}

/**
 * Deletes (`delete --force`, by the runtime that made it) the state of this run's containers that
 * a shim left under its root: after containerd was stopped while a create was under way (Ctrl-C).
 * Returns the ids.
 */
function deleteStaleState(configs) {
  const deleted = [];
  for (const root of SHIM_ROOTS) {
    let names = [];
    try {
      names = fs.readdirSync(root);
    } catch {
      continue; // none
    }
    for (const id of names) {
      const cfg = configs.find((c) => id.startsWith(`${c.key}-${process.pid}-`));
      if (!cfg) continue; // not ours
      const moat = cfg.shim === 'moat' || cfg.args.includes('--runc-binary');
      spawnSync(moat ? process.execPath : 'runc', [...(moat ? [path.join(repo, 'bin/moat.cjs')] : []), '--root', root, 'delete', '--force', id], { stdio: 'ignore', timeout: CALL_TIMEOUT_MS });
      deleted.push(id);
    }
  }
  return deleted;
}

// ---------------------------------------------------------------------------------------------
// Measures

/** `ctr run --rm` of `cmd` in a new container of configuration `cfg`; returns ctr's result. */
function runOnce(cfg, tag, cmd) {
  return ctr(['run', '--rm', ...cfg.args, IMAGE, `${cfg.key}-${process.pid}-${tag}`, ...cmd]);
}

/** The pid and status of task `id` in `ctr task ls`, or undefined. */
function taskOf(id) {
  for (const line of ctr(['task', 'ls']).stdout.split('\n').slice(1)) {
    const [tid, pid, status] = line.trim().split(/\s+/);
    if (tid === id) return { pid: Number(pid), status };
  }
  return undefined;
}

/**
 * Starts a detached `sleep 1000` container of `cfg`, finds the shim daemon(s) serving it (see the
 * file comment) and measures them; deletes it again. Returns { rss, pss } (KiB, summed; pss
 * undefined without smaps_rollup) and `names`, each process with its RSS.
 */
async function shimMemory(cfg) {
  const id = `${cfg.key}-${process.pid}-mem`;
  const before = new Set(moatShims(processTable()));
  ctr(['run', '-d', ...cfg.args, IMAGE, id, 'sleep', '1000']);
  try {
    let task;
    for (let i = 0; i < 100 && task?.status !== 'RUNNING'; i++) {
      if (i > 0) await sleep(50);
      task = taskOf(id);
    }
    if (task?.status !== 'RUNNING') throw new RuntimeFailure(`${cfg.name}: task ${id} is ${task?.status ?? 'missing'}, not RUNNING, 5 s after ctr run -d\n${containerdLog()}`);
    await sleep(1000); // let the daemon finish its post-start work (and a JIT its warm-up)
    await interrupt.tick();

    const table = processTable();
    const daemons = cfg.shim === 'moat' ? moatShims(table).filter((pid) => !before.has(pid)) : runcShims(table, id);
    if (daemons.length === 0) throw new RuntimeFailure(`${cfg.name}: no shim daemon found for ${id}\n${containerdLog()}`);
    // the daemons and whatever they keep running, but not the container's processes
    const container = subtree(table, task.pid);
    // nor a standby shim a daemon started for the next sandbox (one per host, not per sandbox)
    const isStandby = (pid) => table.get(pid).argv[0] === STANDBY_TITLE || table.get(pid).argv.at(-1) === 'standby';
    const procs = [...new Set(daemons.flatMap((d) => [...subtree(table, d)]))].filter((pid) => !container.has(pid) && !isStandby(pid));
    const each = procs.map((pid) => ({ pid, name: path.basename(table.get(pid).argv[0] ?? '?'), ...procMemory(pid) }));
    const gone = each.find((m) => m.rss === undefined);
    if (gone) throw new RuntimeFailure(`${cfg.name}: shim process ${gone.name}[${gone.pid}] exited while being measured`);
    return {
      rss: each.reduce((a, m) => a + m.rss, 0),
      pss: each.every((m) => m.pss !== undefined) ? each.reduce((a, m) => a + m.pss, 0) : undefined,
      names: each.map((m) => `${m.name}[${m.pid}] ${m.rss}`),
    };
  } finally {
    ctr(['task', 'delete', '-f', id], { allowFail: true });
    ctr(['container', 'delete', id], { allowFail: true });
  }
}

/** `argv`'s first line of output, or why there is none. */
function versionOf(argv) {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  return r.error ? `(${r.error.message})` : (`${r.stdout}${r.stderr}`.split('\n')[0] ?? '').trim();
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  for (const program of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'runc']) {
    if (which(program) === undefined) {
      console.log(`bench skipped: ${program} not found on PATH (install the Debian packages containerd and runc)`);
      return 0;
    }
  }
  if (process.getuid?.() !== 0) {
    console.error('containerd needs root: run sudo node bench/containerd.mjs');
    return 1;
  }
  const fixture = path.join(repo, 'build/test/fixtures/ociimage.js');
  if (!fs.existsSync(fixture)) {
    console.error(`${fixture} is missing: compile first with "npx tsc -p tsconfig.json"`);
    return 1;
  }
  const { makeOciImageArchive } = await import(pathToFileURL(fixture).href);

  const moatShim = { key: 'moat-shim', name: 'moat shim', shim: 'moat', args: ['--runtime', 'io.containerd.moat.v1'] };
  const runc = { key: 'runc', name: 'runc', shim: 'runc', args: [] };
  const configs = [
    runc,
    { key: 'runc-moat', name: 'runc shim + moat', shim: 'runc', args: ['--runc-binary', path.join(repo, 'bin/moat.cjs')] },
    moatShim,
    ...(opts.sentry ? [{ key: 'moat-sentry', name: 'moat shim sentry', shim: 'moat', args: [...moatShim.args, '--annotation', 'io.moat.isolation=sentry'] }] : []),
  ];
  for (const c of configs) c.samples = [];

  // short: containerd's sockets must fit in sockaddr_un (108 bytes)
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-ctd-bench-'));
  const hadShimRoots = SHIM_ROOTS.filter((d) => fs.existsSync(d));
  const standbysBefore = new Set(standbys());
  process.on('SIGINT', interrupt.stop);
  process.on('SIGTERM', interrupt.stop);
  try {
    // containerd finds `containerd-shim-moat-v1` on its PATH, as after `npm install -g`
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(path.join(repo, 'dist/containerd-shim-moat-v1'), path.join(bin, SHIM_TITLE)); // the launcher (package.json bin)
    await startContainerd(tmp, { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, MOAT_SHIM_STANDBY: opts.standby ? '1' : '0' });
    const archive = await makeOciImageArchive(path.join(tmp, 'busybox-oci.tar'), { ref: IMAGE });
    ctr(['image', 'import', archive.path]);

    console.log(`containerd start-up: ctr run --rm ${IMAGE} ID /bin/true, ${opts.iterations} timed runs (+${opts.warmup} warm-up) per configuration, round-robin`);
    console.log(`  ${versionOf(['containerd', '--version'])}`);
    console.log(`  ${versionOf(['runc', '--version'])}`);
    console.log(`  node ${process.version}`);
    const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
    console.log(`  load average ${load()} (1, 5, 15 min; ${os.cpus().length} CPUs)`);
    for (const c of configs) console.log(`  ${c.name}: ctr run --rm ${c.args.length ? `${c.args.join(' ')} ` : ''}...`);

    // each configuration works before any is timed
    for (const c of configs) {
      const out = runOnce(c, 'check', ['sh', '-c', 'echo ok']).stdout;
      if (out.trim() !== 'ok') throw new RuntimeFailure(`${c.name}: sh -c 'echo ok' printed ${JSON.stringify(out)}, not ok\n${containerdLog()}`);
      await interrupt.tick();
    }
    for (let i = 0; i < opts.warmup + opts.iterations; i++) {
      const first = i % configs.length; // rotate who goes first
      const warm = i < opts.warmup;
      for (const c of [...configs.slice(first), ...configs.slice(0, first)]) {
        const { ms } = runOnce(c, warm ? `w${i}` : `${i - opts.warmup}`, ['/bin/true']);
        if (!warm) c.samples.push(ms);
        await interrupt.tick();
      }
    }

    const st = new Map(configs.map((c) => [c, stats(c.samples)]));
    const base = st.get(runc).median;
    console.log('\nwall time of ctr run --rm (create, start, wait, delete), ms');
    const rows = [['configuration', 'median', 'p90', 'mean', 'vs runc (median)']];
    for (const c of configs) {
      const s = st.get(c);
      rows.push([c.name, ms1(s.median), ms1(s.p90), ms1(s.mean), ratio(s.median, base)]);
    }
    printTable(rows);
    console.log(`Moat shim / runc: ${ratio(st.get(moatShim).median, base)} (target: at most ${TARGET}x)`);
    console.log(`load average after: ${load()}`);

    console.log('\nmemory per sandbox: the shim daemon serving one running `sleep 1000` container, KiB');
    const mem = new Map();
    for (const c of [runc, moatShim]) mem.set(c, await shimMemory(c));
    const mrows = [['shim', 'RSS', 'PSS', 'processes (RSS of each)']];
    for (const [c, m] of mem) mrows.push([c === runc ? 'runc shim' : 'moat shim', m.rss, m.pss ?? 'n/a', m.names.join(', ')]);
    printTable(mrows);
    const [r, m] = [mem.get(runc), mem.get(moatShim)];
    console.log(`Moat shim / runc shim: RSS ${ratio(m.rss, r.rss)}, PSS ${r.pss !== undefined && m.pss !== undefined ? ratio(m.pss, r.pss) : 'n/a'}`);
    return 0;
  } catch (err) {
    await new Promise((resolve) => setImmediate(resolve)); // a Ctrl-C that also killed ctr: let the handler see it
    return reportFailure(err);
  } finally {
    interrupt.stopped = false; // cleanup must run even after Ctrl-C
    try {
      await stopContainerd();
    } catch (err) {
      console.error(`cleanup: stopping containerd: ${err instanceof Error ? err.message : String(err)}`);
    }
    const left = killLeftovers(tmp);
    for (const pid of standbys()) {
      if (standbysBefore.has(pid)) continue;
      try {
        process.kill(pid, 'SIGTERM');
        left.push(`${pid} ${STANDBY_TITLE}`);
      } catch {
        // gone
      }
    }
    if (left.length) console.error(`cleanup: killed processes containerd left behind: ${left.join(', ')}`);
    const mounts = unmountUnder(tmp);
    if (mounts.length) console.error(`cleanup: unmounted ${mounts.join(', ')}`);
    removeTemp(tmp);
    const stale = deleteStaleState(configs);
    if (stale.length) console.error(`cleanup: deleted runtime state the shims left behind: ${stale.join(', ')}`);
    // the shims' state roots for our namespace, when this run made them and left them empty
    for (const d of SHIM_ROOTS.filter((x) => !hadShimRoots.includes(x))) {
      try {
        fs.rmdirSync(d);
      } catch {
        // never made, or not empty: left alone
      }
    }
    process.off('SIGINT', interrupt.stop);
    process.off('SIGTERM', interrupt.stop);
  }
}

process.exitCode = await main();
