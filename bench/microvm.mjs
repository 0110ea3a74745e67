#!/usr/bin/env node
// Moat's microvm isolation against a bare QEMU boot of the same kernel: boot-to-first-output and
// the VMM's host memory overhead, in one run.
//
//   node bench/microvm.mjs [--iterations N] [--quick] [--boot-timeout S] [--moat PATH] [--qemu PATH] [--append ARGS]
//
// (a) boot to first output of `echo hi`: the wall time from spawning the process to the first
//     byte of the line "hi" on its stdout (a pipe; the data event is timestamped), and the wall
//     time of the whole run, for
//       moat:  `moat run --isolation microvm -b BUNDLE ID` of a busybox bundle running `echo hi`
//              (fresh id each time; the run creates, boots, relays the output and deletes), and
//       floor: `qemu-system-x86_64 -M microvm` booting the SAME kernel (the copy `moat guest
//              build` made) with the same machine options, accelerator, CPU model, memory,
//              vCPUs and kernel parameters as Moat's VMM (copied from its command line, read in
//              /proc during Moat's warm-up boot, Moat's own moat.* parameters left out; rebuilt
//              from qemu.ts's values and accel.json if that boot was not seen),
//              `-serial stdio`, and a trivial initramfs built here: a static
//              busybox, /dev/console, and an /init that prints "hi" on the console (ttyS0) and
//              powers off (`busybox poweroff -f`). No modules, no disk, no control channel, no
//              -sandbox, no jail: the least a boot of that kernel to a first line of output can
//              cost on this machine.
//     The accelerator Moat chose is also read from <root>/guest/accel.json after Moat's warm-up
//     run (kvm only if its probe passed; tcg otherwise, and when the file is absent) and printed.
//     Medians, min-max, and moat/floor against the target <= 1.3x. Every moat run has
//     MOAT_TRACE=1 (a dozen writes on stderr): the moat-trace phases of the median run are shown
//     as a table on the bench's clock, with the median of each phase over all the runs.
// (b) memory: K=2 detached microVMs (`moat create --isolation microvm` + `moat start` of a bundle
//     running `sleep 1000`), then for each VM's QEMU (the qemu-system-x86_64 process whose command
//     line names the container's state directory): VmRSS, Pss (smaps_rollup), and the guest RAM
//     actually touched, i.e. the Rss of the anonymous mapping of exactly the guest's memory size
//     in /proc/PID/smaps. Overhead = VmRSS - guest RAM Rss; the TCG translation cache (the
//     anonymous executable mapping of -accel tcg,tb-size) is shown apart, as part of it. The VM
//     monitor (`moat.cjs --vm-monitor`, a node process per VM) is reported separately.
//     Firecracker's target of 5 MiB of VMM overhead is printed for comparison.
//
// Boots that hang are killed after --boot-timeout seconds (default 20; an idle 2-vCPU host boots
// in about 5 s under TCG), counted, and retried (a column gives up after iterations+1 hangs).
// Under TCG the guest kernel calibrates its TSC against the emulated PIT, and that calibration
// can fail ("tsc: Unable to calibrate against PIT"; measured here: about 1 boot in 4 on an idle
// host, most boots on a loaded one), after which the guest spins at 100% CPU and never reaches
// user space; with `quiet` nothing shows on the console. The hang counts are printed for both
// columns. Passing tsc_early_khz=<the host's TSC kHz> skips that calibration (with it: no hang in
// 12 boots here, idle and loaded); Moat's QEMU driver does that under TCG (qemu.ts,
// tcgClockCmdline), and the floor copies Moat's kernel parameters, so it gets them too.
//
// Moat runs with a private --root in a temporary directory under /var/tmp (short enough for the
// VM's unix sockets), where `moat guest build` builds the guest once at the start (its time is
// reported). Processes left behind by a failed or interrupted run (the VMM and the VM monitor
// name the state directory in their command lines) are killed by pid; Ctrl-C cleans up too.
//
// Needs root, qemu-system-x86_64, a static busybox (busybox-static) and a compiled test tree
// (`npx tsc -p tsconfig.json`): the busybox bundles come from build/test/fixtures/busybox.js.
// Plain JS on purpose, like the other benches.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { flagReader, interrupt, kbField, printTable, procMemory, ratio, removeTemp, runtime, RuntimeFailure, stats, tail, which } from './lib.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CALL_TIMEOUT_MS = 60_000; // delete, state, guest build
const BOOT_TARGET = 1.3; // moat / floor, boot to first output
const FC_OVERHEAD_TARGET_MIB = 5; // Firecracker's VMM memory overhead target
const MEM_VMS = 2;
const MAX_FAILURES = 2; // failed (not hung) boots per column before it is given up
const HOST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];
// What Moat's QEMU driver passes (src/backends/microvm/qemu.ts); the floor copies it.
const MEMORY_MIB = 256;
const TCG_TB_SIZE_MIB = 64;
const BASE_CMDLINE = 'console=ttyS0 quiet panic=-1 reboot=t';

function usage(code) {
  const text = `usage: node bench/microvm.mjs [--iterations N] [--quick] [--boot-timeout S] [--moat PATH] [--qemu PATH] [--append ARGS]
  --iterations N    timed boots per column (default 5; 2 with --quick), after one warm-up each
  --quick           fewer boots
  --boot-timeout S  a boot still without output after S seconds is a hang: killed, counted, retried (default 20)
  --moat PATH       moat executable (default ${path.join(repo, 'bin/moat.cjs')}; .mjs/.js/.cjs run with node)
  --qemu PATH       QEMU for the floor (default: qemu-system-x86_64 on PATH)
  --append ARGS     extra kernel parameters for the floor, after those copied from moat's VMM`;
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { iterations: undefined, quick: false, bootTimeoutMs: 20_000, moat: path.join(repo, 'bin/moat.cjs'), qemu: 'qemu-system-x86_64', append: '' };
  const flags = flagReader(argv, usage);
  for (let flag = flags.next(); flag !== undefined; flag = flags.next()) {
    const { value, count } = flags;
    if (flag === '--iterations') opts.iterations = count(1);
    else if (flag === '--quick') opts.quick = true;
    else if (flag === '--boot-timeout') opts.bootTimeoutMs = count(1) * 1000;
    else if (flag === '--moat') opts.moat = path.resolve(value());
    else if (flag === '--qemu') opts.qemu = value();
    else if (flag === '--append') opts.append = value().trim();
    else if (flag === '--help' || flag === '-h') usage(0);
    else {
      console.error(`unknown argument: ${flag}`);
      usage(2);
    }
  }
  opts.iterations ??= opts.quick ? 2 : 5;
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Small helpers (formatting, tables)

/** `s` cut to `n` characters. */
const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 3)}...` : s);
const ms0 = (v) => (v === undefined ? 'n/a' : v.toFixed(0));
const mib = (kib) => (kib === undefined ? 'n/a' : (kib / 1024).toFixed(1));
const median = (xs) => (xs.length ? stats(xs).median : undefined);
const verdict = (r, target) => (r <= target ? 'met' : 'NOT met');

/** The last non-empty line of some output, for a short reason. */
function lastLine(text) {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : undefined;
}

/** The short reason of an error, for a table cell. */
function shortReason(err) {
  const s = err?.cause?.short ?? (err instanceof Error ? err.message.split('\n')[0] : String(err));
  return clip(s, 70);
}

// ---------------------------------------------------------------------------------------------
// Processes: synchronous calls to moat, timed asynchronous boots, and the leftovers' sweep

let logSeq = 0;
let logDir = '';

/**
 * Runs argv synchronously with stdout/stderr going to a fresh log file (not a pipe: the VM
 * monitor of a detached container inherits them and would keep a pipe open). Throws
 * RuntimeFailure unless it exits 0 (or `allowFail`); returns the status, the output and the ms.
 */
function exec(argv, { env, allowFail = false, timeoutMs = CALL_TIMEOUT_MS, what = argv.join(' ') } = {}) {
  const log = path.join(logDir, `${++logSeq}.log`);
  const fd = fs.openSync(log, 'w');
  let r;
  const t0 = process.hrtime.bigint();
  try {
    r = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], timeout: timeoutMs, killSignal: 'SIGKILL', env: env ?? process.env, cwd: '/' });
  } finally {
    fs.closeSync(fd);
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const output = fs.readFileSync(log, 'utf8');
  if (r.error) {
    const timeout = r.error.code === 'ETIMEDOUT';
    const why = timeout ? `timed out after ${timeoutMs / 1000} s` : r.error.message;
    throw new RuntimeFailure(`${what}: ${why}\n${tail(output)}`, { cause: { short: why, timeout } });
  }
  interrupt.check();
  if (r.status !== 0 && !allowFail) {
    const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
    throw new RuntimeFailure(`${what}: ${how}\n${tail(output)}`, { cause: { short: lastLine(output) ?? how } });
  }
  return { status: r.status, output, ms };
}

/** Children of a timed boot still running (killed on Ctrl-C). */
const live = new Set();

/** The first line "hi" of `text`: the offset of its "h", or -1. `final`: the stream has ended. */
function firstHi(text, final) {
  const m = (final ? /(?:^|\n)hi\r?(?:\n|$)/ : /(?:^|\n)hi\r?\n/).exec(text);
  if (!m) return -1;
  return m.index + (m[0].startsWith('\n') ? 1 : 0);
}

/**
 * Spawns argv with stdout and stderr piped and times it: `firstMs` is when the data event carrying
 * the first byte of a line "hi" on stdout arrived, `totalMs` when the process exited (ms since the
 * spawn). A run that exceeds `timeoutMs` is killed (SIGKILL) and has `timedOut`.
 */
function timedSpawn(argv, { env, timeoutMs }) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const spawnEpoch = performance.timeOrigin + performance.now();
    const since = () => Number(process.hrtime.bigint() - t0) / 1e6;
    let stdout = '';
    let stderr = '';
    const chunks = []; // [offset of its first byte in stdout, ms]
    let firstMs;
    let totalMs;
    let timedOut = false;
    let spawnError;
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: '/' });
    live.add(child);
    const locate = (final) => {
      if (firstMs !== undefined) return;
      const at = firstHi(stdout, final);
      if (at < 0) return;
      for (let i = chunks.length - 1; i >= 0; i--) {
        if (chunks[i][0] <= at) {
          firstMs = chunks[i][1];
          return;
        }
      }
    };
    child.stdout.setEncoding('latin1');
    child.stderr.setEncoding('latin1');
    child.stdout.on('data', (d) => {
      chunks.push([stdout.length, since()]);
      stdout += d;
      locate(false);
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    let closed = 0;
    let exitInfo;
    const finish = () => {
      clearTimeout(timer);
      live.delete(child);
      locate(true);
      resolve({ ...exitInfo, stdout, stderr, firstMs, totalMs, timedOut, spawnEpoch, error: spawnError });
    };
    // 'exit' gives the time; the output is complete once both pipes close, but a process the
    // child leaves behind may hold them open: after the exit, wait for them at most 2 s
    let grace;
    const onClose = () => {
      if (++closed === 2 && exitInfo) {
        clearTimeout(grace);
        finish();
      }
    };
    child.stdout.on('close', onClose);
    child.stderr.on('close', onClose);
    child.on('error', (err) => {
      spawnError = err;
      exitInfo = { status: null, signal: null };
      totalMs = since();
      child.stdout.destroy();
      child.stderr.destroy();
    });
    child.on('exit', (status, signal) => {
      totalMs = since();
      exitInfo = { status, signal };
      if (closed === 2) finish();
      else
        grace = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          if (closed < 2) finish();
        }, 2000);
    });
  });
}

/** Pids (not this process) whose command line contains `needle`, with their command lines. */
function processesNaming(needle) {
  const out = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let cmd;
    try {
      cmd = fs.readFileSync(`/proc/${name}/cmdline`, 'latin1');
    } catch {
      continue;
    }
    if (cmd.includes(needle)) out.push({ pid: Number(name), cmd: cmd.split('\0').filter(Boolean) });
  }
  return out;
}

/** Kills (SIGKILL, by pid) every process naming `needle`; returns short descriptions of them. */
function sweep(needle) {
  const found = processesNaming(needle);
  for (const p of found) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return found.map((p) => `${p.pid} ${path.basename(p.cmd[0] ?? '?')}${p.cmd.includes('--vm-monitor') ? ' --vm-monitor' : ''}`);
}

// ---------------------------------------------------------------------------------------------
// The floor's initramfs: a newc cpio archive written here (no cpio tool, no mknod on disk)

/** One newc entry: header, NUL-terminated name padded to 4 bytes, data padded to 4 bytes. */
function newcEntry(ino, name, mode, data = Buffer.alloc(0), rdev = [0, 0]) {
  const hex = (n) => n.toString(16).padStart(8, '0');
  const fields = [ino, mode, 0, 0, (mode & 0o170000) === 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdev[0], rdev[1], Buffer.byteLength(name) + 1, 0];
  const head = Buffer.from(`070701${fields.map(hex).join('')}${name}\0`, 'latin1');
  const pad = (n) => Buffer.alloc((4 - (n % 4)) % 4);
  return Buffer.concat([head, pad(head.length), data, pad(data.length)]);
}

/** Writes the floor's initramfs to `file`: /bin/busybox, /dev/console, /init. Returns its size. */
function writeFloorInitramfs(file, busybox) {
  const init = '#!/bin/busybox sh\n/bin/busybox echo hi\n/bin/busybox poweroff -f\n';
  const parts = [
    newcEntry(1, 'bin', 0o040755),
    newcEntry(2, 'dev', 0o040755),
    newcEntry(3, 'dev/console', 0o020600, undefined, [5, 1]),
    newcEntry(4, 'bin/busybox', 0o100755, fs.readFileSync(busybox)),
    newcEntry(5, 'init', 0o100755, Buffer.from(init)),
    newcEntry(0, 'TRAILER!!!', 0),
  ];
  const buf = Buffer.concat(parts);
  const padded = Buffer.concat([buf, Buffer.alloc((512 - (buf.length % 512)) % 512)]);
  fs.writeFileSync(file, padded);
  return padded.length;
}

/** True when `file` is an ELF without a PT_INTERP program header (statically linked). */
function isStaticElf(file) {
  try {
    const b = fs.readFileSync(file);
    if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false; // 64-bit little-endian only
    const phoff = Number(b.readBigUInt64LE(32));
    const size = b.readUInt16LE(54);
    const n = b.readUInt16LE(56);
    for (let i = 0; i < n; i++) if (b.readUInt32LE(phoff + i * size) === 3) return false;
    return true;
  } catch {
    return false;
  }
}

/** The QEMU options Moat's driver gives a microvm (qemu.ts), for `accel`. */
function machineArgs(accel) {
  const kvm = accel === 'kvm';
  return [
    '-M', `microvm,pit=${kvm ? 'off' : 'on'},pic=off,isa-serial=on,rtc=on`,
    '-accel', kvm ? 'kvm' : `tcg,tb-size=${TCG_TB_SIZE_MIB}`,
    '-cpu', kvm ? 'host' : 'max',
    '-m', String(MEMORY_MIB),
    '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-display', 'none',
  ];
}

/** The values of the options that matter for a fair comparison, from a QEMU argv. */
function keyOptions(argv) {
  const out = {};
  for (const k of ['-M', '-accel', '-cpu', '-m', '-smp', '-kernel', '-append']) {
    const i = argv.indexOf(k);
    if (i >= 0) out[k] = argv[i + 1];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Memory: /proc/PID/status, smaps_rollup and smaps

/** The mappings of /proc/PID/smaps: range, perms, inode, path, Size, Rss, Pss (KiB). */
function smaps(pid) {
  const maps = [];
  let cur;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const h = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (h) {
      cur = { range: `${h[1]}-${h[2]}`, perms: h[3], inode: Number(h[4]), path: h[5], size: 0, rss: 0, pss: 0, anonhugepages: 0 };
      maps.push(cur);
      continue;
    }
    const f = /^(Size|Rss|Pss|AnonHugePages):\s+(\d+) kB/.exec(line);
    if (f && cur) cur[f[1].toLowerCase()] = Number(f[2]);
  }
  return maps;
}

/**
 * The memory of one VMM: VmRSS, Pss, the guest RAM mapping (the anonymous mapping whose size is
 * the guest's memory) and its Rss, the TCG translation cache (anonymous and executable), and the
 * rest split into anonymous and file-backed Rss. KiB.
 */
function vmmMemory(pid, memoryMiB) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  let rollup = '';
  try {
    rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    // no smaps_rollup on this kernel: Pss is n/a
  }
  const maps = smaps(pid);
  const anon = (m) => m.inode === 0 && (m.path === '' || m.path.startsWith('[anon'));
  const want = memoryMiB * 1024;
  let ram = maps.find((m) => anon(m) && m.size === want);
  let ramNote;
  if (!ram) {
    // not an exact match (a mapping split or padded): the largest anonymous one within 4 MiB over
    ram = maps.filter((m) => anon(m) && m.size >= want && m.size <= want + 4096).sort((a, b) => b.size - a.size)[0];
    if (ram) ramNote = `guest RAM taken as the ${ram.size} kB mapping (no mapping of exactly ${want} kB)`;
  }
  const tcg = maps.filter((m) => m !== ram && m.inode === 0 && m.perms.includes('x') && m.size >= 1024);
  const tcgRss = tcg.length ? tcg.reduce((a, m) => a + m.rss, 0) : undefined;
  let fileRss = 0;
  let anonRss = 0;
  for (const m of maps) {
    if (m === ram || tcg.includes(m)) continue;
    if (m.inode !== 0) fileRss += m.rss;
    else anonRss += m.rss;
  }
  return {
    rss: kbField(status, 'VmRSS'),
    pss: kbField(rollup, 'Pss'),
    ramRss: ram?.rss,
    ramSize: ram?.size,
    ramHuge: ram?.anonhugepages,
    ramNote,
    tcgRss,
    fileRss,
    anonRss,
  };
}

// ---------------------------------------------------------------------------------------------
// moat-trace lines

/** Parses `moat-trace: MS ms LABEL (since process start; origin EPOCH)` lines. */
function parseTrace(stderr) {
  const phases = [];
  let origin;
  for (const line of stderr.split('\n')) {
    const m = /^moat-trace: ([\d.]+) ms (.*) \(since process start; origin (\d+)\)\s*$/.exec(line);
    if (!m) continue;
    origin = Number(m[3]);
    phases.push({ label: m[2], key: traceKey(m[2]), ms: Number(m[1]) });
  }
  return { phases, origin };
}

/** A trace label without its paths, pids and sizes, to match phases across runs. */
function traceKey(label) {
  return label
    .replace(/ of \/\S+.*$/, '')
    .replace(/ \/\S+/g, '')
    .replace(/\b(pid) \d+/g, '$1')
    .replace(/ in \d+ ms$/, '')
    .trim();
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const fixture = path.join(repo, 'build/test/fixtures/busybox.js');
  if (!fs.existsSync(fixture)) {
    console.error(`${fixture} is missing: compile first with "npx tsc -p tsconfig.json"`);
    return 1;
  }
  if (process.getuid?.() !== 0) console.warn('warning: not running as root; moat will probably fail');
  const { makeBundle } = await import(pathToFileURL(fixture).href);

  const qemu = which(opts.qemu);
  const moat = fs.existsSync(opts.moat) ? runtime('moat', opts.moat) : undefined;
  const busybox = BUSYBOX_CANDIDATES.map((c) => {
    try {
      return fs.realpathSync(c);
    } catch {
      return undefined;
    }
  }).find((c) => c !== undefined && isStaticElf(c));
  const missing = {
    moat: moat ? undefined : `moat not found at ${opts.moat}`,
    floor: qemu === undefined ? `${opts.qemu} not found (Debian package qemu-system-x86)` : busybox === undefined ? 'no static busybox (Debian package busybox-static)' : undefined,
  };

  fs.mkdirSync('/var/tmp', { recursive: true });
  const tmp = fs.mkdtempSync('/var/tmp/moat-bench-microvm-');
  fs.chmodSync(tmp, 0o755);
  logDir = path.join(tmp, 'logs');
  fs.mkdirSync(logDir);
  const root = path.join(tmp, 'root');
  const ids = new Set(); // moat containers that may exist
  const moatCall = (args, o = {}) => exec([...moat.cmd, '--root', root, ...args], { env: moatEnv(), what: `moat ${args.join(' ')}`, ...o });
  const stateDir = (id) => `${root}/${id}/`;

  /** `moat delete --force ID`, then kill whatever still names its state directory, then delete again. */
  const forceDelete = (id) => {
    const swept = [];
    try {
      moatCall(['delete', '--force', id], { allowFail: true });
    } catch (err) {
      console.error(`cleanup: moat delete --force ${id}: ${shortReason(err)}`);
    }
    swept.push(...sweep(stateDir(id)));
    if (swept.length) {
      try {
        moatCall(['delete', '--force', id], { allowFail: true });
      } catch {
        // reported above if it matters
      }
    }
    ids.delete(id);
    return swept;
  };

  const onSignal = () => {
    interrupt.stop();
    for (const c of live) c.kill('SIGKILL');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  const summary = [];
  const notes = [];
  try {
    // ---- preparation
    const echoBundle = moat ? await makeBundle({ dir: path.join(tmp, 'bundle-echo'), args: ['echo', 'hi'] }) : undefined;
    const sleepBundle = moat ? await makeBundle({ dir: path.join(tmp, 'bundle-sleep'), args: ['sleep', '1000'] }) : undefined;

    let guest;
    let guestLine;
    if (moat) {
      try {
        const r = moatCall(['guest', 'build']);
        const field = (k) => new RegExp(`^${k}: (.*)$`, 'm').exec(r.output)?.[1];
        guest = { release: field('release'), kernel: field('kernel'), initramfs: field('initramfs') };
        if (!guest.kernel || !guest.initramfs) throw new RuntimeFailure(`moat guest build: unexpected output\n${tail(r.output)}`, { cause: { short: 'unexpected guest build output' } });
        const done = /done in (\d+) ms/.exec(r.output)?.[1];
        const modules = /\((\d+) modules, ([\d.]+ MiB)\)/.exec(r.output);
        guestLine = `${r.ms.toFixed(0)} ms wall${done ? ` (${done} ms building)` : ''}: release ${guest.release}${modules ? `, initramfs of ${modules[2]} with ${modules[1]} modules` : ''}`;
      } catch (err) {
        if (!(err instanceof RuntimeFailure)) throw err;
        missing.moat = `guest build failed: ${shortReason(err)}`;
        notes.push(`moat guest build failed:\n${err.message.replace(/^/gm, '    ')}`);
      }
    }
    // the floor boots the kernel of Moat's guest (a copy of the /boot image), else the newest /boot one
    let kernel = guest?.kernel;
    if (!kernel) {
      const boot = fs.existsSync('/boot') ? fs.readdirSync('/boot').filter((f) => /^vmlinuz-/.test(f)).sort((a, b) => a.localeCompare(b, undefined, { numeric: true })) : [];
      if (boot.length) kernel = path.join('/boot', boot[boot.length - 1]);
      else missing.floor ??= 'no kernel: moat guest build failed and /boot has no vmlinuz-*';
    }
    const floorInitrd = path.join(tmp, 'floor-initramfs.cpio');
    let floorInitrdSize;
    if (missing.floor === undefined) floorInitrdSize = writeFloorInitramfs(floorInitrd, busybox);

    console.log(`moat microvm bench: ${opts.iterations} timed boots per column (+1 warm-up)${opts.quick ? ', --quick' : ''}; boot timeout ${opts.bootTimeoutMs / 1000} s`);
    console.log(`  moat:   ${moat ? `${moat.label} --root ${root}` : `n/a (${missing.moat})`}`);
    console.log(`  guest:  ${guestLine ?? `n/a (${missing.moat})`}`);
    console.log(`  floor:  ${missing.floor === undefined ? `${qemu}, kernel ${kernel}, busybox initramfs of ${(floorInitrdSize / 1048576).toFixed(1)} MiB` : `n/a (${missing.floor})`}`);
    const load = os.loadavg()[0];
    const cpus = os.availableParallelism?.() ?? os.cpus().length;
    console.log(`  load:   ${load.toFixed(2)} on ${cpus} CPUs${load > cpus / 2 + 0.5 ? ' (busy: other work is running; TCG boots slow down and hang more often)' : ''}`);

    // ---- (a) boot to first output
    let accel;
    let accelSource;
    const readAccel = () => {
      if (accel !== undefined) return accel;
      const file = path.join(root, 'guest', 'accel.json');
      try {
        const j = JSON.parse(fs.readFileSync(file, 'utf8'));
        accel = j.kvm === true ? 'kvm' : 'tcg';
        accelSource = `${file}: kvm=${j.kvm}`;
      } catch {
        accel = 'tcg';
        accelSource = fs.existsSync('/dev/kvm') ? `no ${file} (Moat never probed KVM): tcg` : 'no /dev/kvm: tcg';
      }
      return accel;
    };
    // The floor copies Moat's VMM: its argv is read from /proc during Moat's warm-up boot (machine,
    // accelerator, CPU, memory, vCPUs, kernel and kernel parameters but Moat's own moat.*); if that
    // boot was not seen, the options are rebuilt from what qemu.ts passes and accel.json.
    let moatVmm; // argv of the VMM of Moat's warm-up boot
    const floorArgv = () => {
      if (moatVmm) {
        const o = keyOptions(moatVmm);
        const params = (o['-append'] ?? BASE_CMDLINE).split(/\s+/).filter((w) => w && !w.startsWith('moat.'));
        const append = [...params, opts.append].filter(Boolean).join(' ');
        const copied = ['-M', '-accel', '-cpu', '-m', '-smp'].flatMap((k) => (o[k] !== undefined ? [k, o[k]] : []));
        return [qemu, ...copied, '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-display', 'none', '-serial', 'stdio', '-kernel', o['-kernel'] ?? kernel, '-initrd', floorInitrd, '-append', append];
      }
      return [qemu, ...machineArgs(readAccel()), '-serial', 'stdio', '-kernel', kernel, '-initrd', floorInitrd, '-append', [BASE_CMDLINE, opts.append].filter(Boolean).join(' ')];
    };
    /** Records the argv of the QEMU of moat container `id` once it shows in /proc; returns a stop function. */
    const watchVmm = (id) => {
      const timer = setInterval(() => {
        const q = processesNaming(stateDir(id)).find((p) => /qemu-system/.test(path.basename(p.cmd[0] ?? '')));
        if (q) {
          moatVmm = q.cmd;
          clearInterval(timer);
        }
      }, 100);
      return () => clearInterval(timer);
    };

    /** One boot of a column: { firstMs, totalMs, trace? } or { hang } ; throws RuntimeFailure. */
    const boot = {
      moat: async (id, warm) => {
        ids.add(id);
        const argv = [...moat.cmd, '--root', root, 'run', '--isolation', 'microvm', '-b', echoBundle, id];
        const unwatch = warm && !moatVmm ? watchVmm(id) : () => {}; // only in untimed boots: the polling costs CPU
        const r = await timedSpawn(argv, { env: { ...moatEnv(), MOAT_TRACE: '1' }, timeoutMs: opts.bootTimeoutMs }).finally(unwatch);
        interrupt.check();
        // what the state directory still holds (a failed create may already have removed it)
        const stateLog = (name) => {
          try {
            return fs.readFileSync(path.join(root, id, name), 'utf8');
          } catch {
            return '';
          }
        };
        const consoleTail = stateLog('console.log');
        const logs = ['monitor.log', 'vmm.log', 'console.log'].map((f) => [f, stateLog(f)]).filter(([, t]) => t.trim() !== '');
        const swept = forceDelete(id);
        const what = `moat run --isolation microvm -b BUNDLE ${id}`;
        if (r.error) throw new RuntimeFailure(`${what}: ${r.error.message}`, { cause: { short: r.error.message } });
        if (r.timedOut) {
          const trace = parseTrace(r.stderr).phases;
          return { hang: `no exit within ${opts.bootTimeoutMs / 1000} s (last trace: ${trace.length ? trace[trace.length - 1].label : 'none'}; console: ${lastLine(consoleTail) ?? 'empty'})` };
        }
        if (swept.length) notes.push(`moat run ${id} exited but left processes behind (killed): ${swept.join(', ')}`);
        if (r.status !== 0) {
          const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
          const errors = r.stderr.split('\n').filter((l) => !l.startsWith('moat-trace:')).join('\n');
          const extra = logs.map(([f, t]) => `\n  ${f}:\n${tail(t, 8)}`).join('');
          throw new RuntimeFailure(`${what}: ${how}\n${tail(errors)}${extra}`, { cause: { short: lastLine(errors) ?? how } });
        }
        if (r.firstMs === undefined) throw new RuntimeFailure(`${what}: no line "hi" on stdout\n${tail(r.stdout)}`, { cause: { short: `no "hi" on stdout (got ${JSON.stringify(clip(r.stdout, 30))})` } });
        return { firstMs: r.firstMs, totalMs: r.totalMs, trace: { ...parseTrace(r.stderr), spawnEpoch: r.spawnEpoch, firstMs: r.firstMs, totalMs: r.totalMs } };
      },
      floor: async () => {
        const argv = floorArgv();
        const r = await timedSpawn(argv, { env: { PATH: HOST_PATH }, timeoutMs: opts.bootTimeoutMs });
        interrupt.check();
        const what = 'floor qemu boot';
        if (r.error) throw new RuntimeFailure(`${what}: ${r.error.message}`, { cause: { short: r.error.message } });
        if (r.timedOut) return { hang: `no exit within ${opts.bootTimeoutMs / 1000} s (console: ${lastLine(r.stdout.replace(/\r/g, '')) ?? 'empty'})` };
        if (r.status !== 0) {
          const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
          throw new RuntimeFailure(`${what}: ${how}\n${tail(r.stderr + r.stdout)}`, { cause: { short: lastLine(r.stderr) ?? how } });
        }
        if (r.firstMs === undefined) throw new RuntimeFailure(`${what}: no line "hi" on the serial console\n${tail(r.stdout)}`, { cause: { short: 'no "hi" on the serial console' } });
        return { firstMs: r.firstMs, totalMs: r.totalMs };
      },
    };
    const cols = [
      { name: 'moat', run: boot.moat, error: missing.moat, samples: [], traces: [], hangs: [], failures: [], attempts: 0 },
      { name: 'floor', run: boot.floor, error: missing.floor, samples: [], traces: [], hangs: [], failures: [], attempts: 0 },
    ];
    const maxHangs = opts.iterations + 1;
    let seq = 0;
    /** One sample of a column, retrying hung boots; undefined once the column is given up. */
    const attempt = async (col, warm) => {
      for (;;) {
        if (col.error !== undefined) return undefined;
        const id = `a-${process.pid}-${seq++}`;
        col.attempts++;
        try {
          const r = await col.run(id, warm);
          if (r.hang === undefined) {
            if (!warm) {
              col.samples.push(r);
              if (r.trace) col.traces.push(r.trace);
            }
            return r;
          }
          col.hangs.push(r.hang);
          if (col.hangs.length >= maxHangs) col.error = `${col.hangs.length} boots hung (killed after ${opts.bootTimeoutMs / 1000} s)`;
          process.stderr.write(`  ${col.name}: boot ${id} hung: ${r.hang}; ${col.error === undefined ? 'retrying' : 'giving up'}\n`);
        } catch (err) {
          if (!(err instanceof RuntimeFailure)) throw err;
          // a failure is retried once (a boot can fail for reasons outside the runtime, e.g. a
          // VMM killed by something else on the machine); the second one ends the column
          col.failures.push(shortReason(err));
          notes.push(`${col.name} failed (${warm ? 'warm-up' : `run ${col.samples.length + 1}`}, attempt ${col.attempts}):\n${err.message.replace(/^/gm, '    ')}`);
          if (col.failures.length >= MAX_FAILURES) col.error = `${warm ? 'warm-up' : `run ${col.samples.length + 1}`}: ${shortReason(err)}`;
          else process.stderr.write(`  ${col.name}: boot ${id} failed: ${shortReason(err)}; retrying\n`);
        } finally {
          await interrupt.tick();
        }
      }
    };
    console.log(`\n(a) boot to first output of "echo hi": ms from spawn to the first byte of "hi" on stdout, and to the exit`);
    // moat first: its warm-up builds the base image and probes KVM (accel.json), which the floor then reads
    for (const col of cols) await attempt(col, true);
    for (let i = 0; i < opts.iterations; i++) {
      const order = i % 2 ? [...cols].reverse() : cols;
      for (const col of order) await attempt(col, false);
    }
    readAccel();
    const rows = [['column', 'first output median', 'min-max', 'whole run median', 'min-max', 'boots', 'hung', 'failed']];
    const med = {};
    for (const col of cols) {
      const f = col.samples.map((s) => s.firstMs);
      const t = col.samples.map((s) => s.totalMs);
      const hung = `${col.hangs.length}`;
      const failed = `${col.failures.length}`;
      if (f.length === 0) {
        rows.push([col.name, `n/a (${clip(col.error ?? 'no sample', 40)})`, '', '', '', '0', hung, failed]);
        continue;
      }
      const sf = stats(f);
      const st = stats(t);
      med[col.name] = sf.median;
      rows.push([col.name, ms0(sf.median), `${ms0(sf.min)}-${ms0(sf.max)}`, ms0(st.median), `${ms0(st.min)}-${ms0(st.max)}`, `${f.length}${col.error ? ' (then gave up)' : ''}`, hung, failed]);
    }
    printTable(rows);
    for (const col of cols) if (col.error !== undefined) console.log(`  ${col.name}: ${col.samples.length ? 'stopped early' : 'n/a'} (${col.error})`);
    for (const col of cols) for (const h of col.hangs) console.log(`  ${col.name} hang: ${h}`);
    for (const col of cols) for (const f of col.failures) console.log(`  ${col.name} failure: ${f} (details under notes)`);
    console.log(`accelerator: ${accel} (${accelSource})`);
    {
      const a = floorArgv();
      const shown = a.map((w, i) => (a[i - 1] === '-kernel' ? 'KERNEL' : a[i - 1] === '-initrd' ? 'BUSYBOX' : a[i - 1] === '-append' ? `"${w}"` : w));
      shown[0] = path.basename(qemu ?? opts.qemu);
      console.log(`floor: ${shown.join(' ')}`);
      console.log(`  (${moatVmm ? "options copied from moat's VMM in its warm-up boot; moat's own moat.* kernel parameters left out" : `moat's VMM not seen: options as qemu.ts passes them, accelerator from accel.json`}; KERNEL = ${a[a.indexOf('-kernel') + 1]})`);
      const fo = keyOptions(a);
      if (moatVmm && fo['-accel'] && !fo['-accel'].startsWith(accel)) notes.push(`accel.json says ${accel} but moat's VMM ran -accel ${fo['-accel']}`);
    }
    const bootRatio = med.moat !== undefined && med.floor !== undefined ? med.moat / med.floor : undefined;
    const bootResult = bootRatio !== undefined ? `${ratio(med.moat, med.floor)} ${verdict(bootRatio, BOOT_TARGET)}` : `n/a (${cols.filter((c) => c.samples.length === 0).map((c) => `${c.name}: ${clip(c.error ?? 'no sample', 60)}`).join('; ') || 'not measured'})`;
    console.log(`ratio moat/floor (first output): ${bootResult} (target <= ${BOOT_TARGET}x)${bootRatio !== undefined ? `; moat - floor = ${ms0(med.moat - med.floor)} ms` : ''}`);
    summary.push(`boot to first output: moat / floor <= ${BOOT_TARGET}x: ${bootResult}`);
    const hangTotal = cols.reduce((a, c) => a + c.hangs.length, 0);
    if (hangTotal) {
      const h = `hung boots: ${cols.map((c) => `${c.name} ${c.hangs.length} of ${c.attempts}`).join(', ')} (killed after ${opts.bootTimeoutMs / 1000} s)`;
      console.log(`${h}: under TCG, most likely the guest kernel failing to calibrate its TSC against the emulated PIT (see the file comment)`);
      summary.push(h);
    }
    if (cols.some((c) => c.failures.length)) summary.push(`failed boots: ${cols.map((c) => `${c.name} ${c.failures.length} of ${c.attempts}`).join(', ')} (see the notes)`);

    // the phases of the median moat run, on the bench's clock (ms since the spawn)
    const traces = cols[0].traces;
    if (traces.length) {
      const byFirst = [...traces].sort((a, b) => a.firstMs - b.firstMs);
      const mid = byFirst[Math.floor((byFirst.length - 1) / 2)];
      const shift = (t) => (t.origin !== undefined ? t.origin - t.spawnEpoch : 0); // spawn -> node's time origin
      const keyMedian = (key) => {
        const xs = traces.map((t) => t.phases.find((p) => p.key === key)).filter(Boolean);
        return xs.length === traces.length ? median(traces.map((t) => t.phases.find((p) => p.key === key).ms + shift(t))) : undefined;
      };
      console.log(`\nmoat phases (MOAT_TRACE=1), the median run by first output; ms since the spawn of "moat run"`);
      const timeline = [];
      const add = (label, at, medianAt) => timeline.push({ label, at, medianAt });
      add('node process started (trace origin)', shift(mid), median(traces.map(shift)));
      const seen = new Set();
      for (const p of mid.phases) {
        const dup = seen.has(p.key);
        seen.add(p.key);
        add(clip(p.label.replace(/ \/\S+/g, ' ...'), 60), p.ms + shift(mid), dup ? undefined : keyMedian(p.key));
      }
      add('(bench) first byte of "hi" on stdout', mid.firstMs, median(traces.map((t) => t.firstMs)));
      add('(bench) moat run exited', mid.totalMs, median(traces.map((t) => t.totalMs)));
      const prow = [['phase', 'at', 'step', `median of ${traces.length}`]];
      let prev = 0;
      for (const e of timeline.sort((a, b) => a.at - b.at)) {
        prow.push([e.label, ms0(e.at), `+${ms0(e.at - prev)}`, ms0(e.medianAt)]);
        prev = e.at;
      }
      printTable(prow);
      const phaseAt = (k) => mid.phases.find((p) => p.key === k);
      const [vs, up, cr] = [phaseAt('vmm started'), phaseAt('guest agent up'), phaseAt('created')];
      if (vs && up) console.log(`guest boot (vmm started -> guest agent up): ${ms0(up.ms - vs.ms)} ms of ${ms0(mid.firstMs)} ms to first output${cr ? `; everything before "vmm started": ${ms0(vs.ms + shift(mid))} ms` : ''}`);
    }

    // ---- (b) memory per VM
    console.log(`\n(b) host memory of the VMM: ${MEM_VMS} detached microVMs running "sleep 1000" (moat create --isolation microvm + start), KiB unless said`);
    const memRows = [['VM', 'qemu pid', 'VmRSS', 'Pss', 'guest RAM touched', 'overhead (RSS-RAM)', 'of which TCG cache', 'other anon', 'file-backed', 'monitor RSS', 'monitor Pss']];
    const overheads = [];
    const pssOverheads = [];
    const monitorRss = [];
    const hugeNotes = [];
    let memError = missing.moat;
    let vmmArgv;
    if (memError === undefined) {
      const memIds = [];
      try {
        for (let i = 0; i < MEM_VMS; i++) {
          let hangs = 0;
          for (;;) {
            const id = `m-${process.pid}-${i}-${hangs}`;
            ids.add(id);
            try {
              moatCall(['create', '--isolation', 'microvm', '-b', sleepBundle, id], { timeoutMs: opts.bootTimeoutMs + 5000 });
              memIds.push(id);
              break;
            } catch (err) {
              if (!(err instanceof RuntimeFailure) || !err.cause?.timeout) throw err;
              forceDelete(id);
              if (++hangs >= 3) throw new RuntimeFailure(`moat create of VM ${i + 1} hung ${hangs} times`, { cause: { short: `create hung ${hangs} times` } });
              process.stderr.write(`  memory: moat create ${id} hung (no guest agent within ${opts.bootTimeoutMs / 1000} s); retrying\n`);
            }
            await interrupt.tick();
          }
          moatCall(['start', memIds[i]]);
          await interrupt.tick();
        }
        // running = the state says so (the guest process was started by the agent)
        for (const id of memIds) {
          const deadline = Date.now() + 15_000;
          for (;;) {
            const st = JSON.parse(moatCall(['state', id]).output);
            if (st.status === 'running') break;
            if (Date.now() > deadline) throw new RuntimeFailure(`${id}: status "${st.status}" after 15 s, not running`, { cause: { short: `status ${st.status}, not running` } });
            await new Promise((r) => setTimeout(r, 200));
          }
        }
        await new Promise((r) => setTimeout(r, 1000)); // let the guests settle
        interrupt.check();
        for (const [i, id] of memIds.entries()) {
          const procs = processesNaming(stateDir(id));
          const vmm = procs.filter((p) => /qemu-system/.test(path.basename(p.cmd[0] ?? '')));
          const mon = procs.filter((p) => p.cmd.includes('--vm-monitor'));
          const other = procs.filter((p) => !vmm.includes(p) && !mon.includes(p));
          if (vmm.length !== 1) throw new RuntimeFailure(`${id}: ${vmm.length} QEMU processes name ${stateDir(id)}`, { cause: { short: `${vmm.length} QEMU processes for ${id}` } });
          if (other.length) notes.push(`${id}: other processes naming its state directory: ${other.map((p) => `${p.pid} ${p.cmd.slice(0, 2).join(' ')}`).join('; ')}`);
          vmmArgv ??= vmm[0].cmd;
          const memMiB = Number(keyOptions(vmm[0].cmd)['-m'] ?? MEMORY_MIB);
          const m = vmmMemory(vmm[0].pid, memMiB);
          if (m.ramNote) notes.push(`${id}: ${m.ramNote}`);
          if (m.ramHuge) hugeNotes.push(`VM ${i + 1} ${m.ramHuge} of ${m.ramRss}`);
          const monMem = mon.length === 1 ? procMemory(mon[0].pid) : undefined;
          const overhead = m.ramRss !== undefined && m.rss !== undefined ? m.rss - m.ramRss : undefined;
          if (overhead !== undefined) overheads.push(overhead);
          if (m.ramRss !== undefined && m.pss !== undefined) pssOverheads.push(m.pss - m.ramRss);
          if (monMem?.rss !== undefined) monitorRss.push(monMem.rss);
          memRows.push([
            `VM ${i + 1}`,
            vmm[0].pid,
            m.rss ?? 'n/a',
            m.pss ?? 'n/a',
            m.ramRss !== undefined ? `${m.ramRss} of ${m.ramSize}` : `n/a (no ${memMiB} MiB mapping)`,
            overhead ?? 'n/a',
            m.tcgRss ?? '-',
            m.anonRss,
            m.fileRss,
            monMem?.rss ?? `n/a (${mon.length} monitors)`,
            monMem?.pss ?? 'n/a',
          ]);
        }
      } catch (err) {
        if (!(err instanceof RuntimeFailure)) throw err;
        memError = shortReason(err);
        notes.push(`memory measure failed:\n${err.message.replace(/^/gm, '    ')}`);
      } finally {
        for (const id of memIds) {
          const swept = forceDelete(id);
          if (swept.length) notes.push(`moat delete --force ${id} left processes behind (killed): ${swept.join(', ')}`);
        }
      }
    }
    if (memRows.length > 1) printTable(memRows);
    if (memError !== undefined) console.log(`  memory: n/a (${memError})`);
    if (vmmArgv) {
      const vmmOpts = keyOptions(vmmArgv);
      const floorOpts = keyOptions(floorArgv());
      const diff = ['-M', '-accel', '-cpu', '-m', '-smp'].filter((k) => vmmOpts[k] !== floorOpts[k]);
      console.log(`moat's VMM: ${['-M', '-accel', '-cpu', '-m', '-smp'].map((k) => `${k} ${vmmOpts[k]}`).join(' ')}${diff.length ? ` (the floor differs in ${diff.join(', ')}: ${diff.map((k) => `${k} ${floorOpts[k]}`).join(' ')})` : ' (the floor used the same)'}`);
      if (vmmOpts['-kernel'] !== undefined && kernel !== undefined && vmmOpts['-kernel'] !== kernel) notes.push(`moat's VMM booted ${vmmOpts['-kernel']}, the floor ${kernel}`);
      // kernel parameters: moat's beyond its root= selection, against the floor's
      const params = (s) => new Set((s ?? '').split(/\s+/).filter((w) => w && !w.startsWith('moat.')));
      const [mp, fp] = [params(vmmOpts['-append']), params(floorOpts['-append'])];
      const onlyMoat = [...mp].filter((w) => !fp.has(w));
      const onlyFloor = [...fp].filter((w) => !mp.has(w));
      console.log(`moat's kernel parameters: ${vmmOpts['-append']}${onlyMoat.length || onlyFloor.length ? ` (differ from the floor's: moat only ${onlyMoat.join(' ') || '-'}, floor only ${onlyFloor.join(' ') || '-'}; see --append)` : ''}`);
    }
    const ov = median(overheads);
    if (ov !== undefined) {
      const target = FC_OVERHEAD_TARGET_MIB * 1024;
      console.log(`median VMM overhead: ${mib(ov)} MiB RSS beyond guest RAM (${ratio(ov, target)} Firecracker's ${FC_OVERHEAD_TARGET_MIB} MiB target: ${verdict(ov / target, 1)})${pssOverheads.length ? `; ${mib(median(pssOverheads))} MiB by Pss (shared libraries divided among the VMMs)` : ''}`);
      if (monitorRss.length) console.log(`VM monitor (node, one per VM): median ${mib(median(monitorRss))} MiB RSS, on top of the VMM`);
      if (hugeNotes.length) console.log(`guest RAM in transparent huge pages (AnonHugePages, KiB): ${hugeNotes.join(', ')}: a guest page touched costs the host 2 MiB there`);
      console.log('guest RAM touched = Rss of the anonymous mapping of the guest memory; TCG cache = anonymous executable mappings (the translated code, -accel tcg,tb-size)');
      summary.push(`VMM overhead (RSS - guest RAM), median of ${overheads.length}: ${mib(ov)} MiB vs Firecracker's ${FC_OVERHEAD_TARGET_MIB} MiB: ${verdict(ov / target, 1)}${monitorRss.length ? `; plus the VM monitor, ${mib(median(monitorRss))} MiB RSS` : ''}`);
    } else summary.push(`VMM overhead: n/a (${memError ?? 'no guest RAM mapping found'})`);

    // ---- summary
    if (notes.length) {
      console.log('\nnotes:');
      for (const n of notes) console.log(`  ${n}`);
    }
    console.log(`\nsummary (targets), ${((Date.now() - t0) / 1000).toFixed(0)} s in all:`);
    for (const l of summary) console.log(`  ${l}`);
    return cols.some((c) => c.samples.length === 0) || memError !== undefined ? 1 : 0;
  } catch (err) {
    if (interrupt.stopped) console.error('\nbench interrupted; cleaning up');
    else if (err instanceof RuntimeFailure) console.error(`\nbench failed: runtime error\n${err.message}`);
    else console.error(`\nbench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    return 1;
  } finally {
    interrupt.stopped = false; // cleanup must run even after Ctrl-C
    for (const c of live) c.kill('SIGKILL');
    if (moat) for (const id of [...ids]) forceDelete(id);
    const left = sweep(tmp); // anything else still naming the bench's directory
    if (left.length) console.error(`cleanup: killed leftover processes: ${left.join(', ')}`);
    removeTemp(tmp);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The environment of moat itself: a plain PATH and any MOAT_* setting of the caller. */
function moatEnv() {
  return { PATH: HOST_PATH, ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MOAT_'))) };
}

process.exitCode = await main();
