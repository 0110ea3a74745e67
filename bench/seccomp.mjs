#!/usr/bin/env node
// Moat vs runc: what the seccomp filter costs per system call inside the container.
//
//   node bench/seccomp.mjs [--iterations N] [--baseline N] [--moat PATH] [--runc PATH]
//
// A small static C program (inline below, compiled with cc into the bundle) makes 2,000,000
// getppid and 200,000 read(fd, buf, 0) calls on /dev/zero, timed inside with clock_gettime, and
// prints ns per call. It runs under `moat run` and `runc run` with Moat's default profile in
// config.json (noNewPrivileges true), N times each, alternating; then with no profile at all.
//
// Note: since Linux 5.11 the kernel caches, per syscall number, the verdict of a filter that
// allows the call whatever its arguments (the seccomp action cache), and does not run the BPF
// program for such calls; getppid and read are of that kind under the default profile, so their
// overhead is mostly the cost of the seccomp entry path itself, nearly the same for any filter.
// The program also times personality(0xffffffff), which the default profile allows only for
// listed argument values: that call runs the BPF program every time, so its overhead shows the
// cost of the compiled filter.
//
// Needs root, a C compiler with a static libc (libc6-dev) and a compiled test tree
// (`npx tsc -p tsconfig.json`): the bundle comes from build/test/fixtures/busybox.js and the
// profile from build/src/seccomp/index.js. Plain JS on purpose, like bench/run.mjs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { C_PRELUDE, flagReader, interrupt, ratio, removeTemp, reportFailure, runtime, RuntimeFailure, tail, which } from './lib.mjs';

const repo = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CALL_TIMEOUT_MS = 120_000;

/** The program timed in the container. Prints one line: seccomp=<mode> <kind>=<ns per call>... */
const LOOP_C = String.raw`${C_PRELUDE}
int main(void) {
  enum { GETPPID = 2000000, READ = 200000, PERSONALITY = 200000 };
  char buf[1];
  int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  if (fd < 0) { perror("/dev/zero"); return 1; }
  for (int i = 0; i < 10000; i++) syscall(SYS_getppid); /* warm up */
  double t0 = now();
  for (int i = 0; i < GETPPID; i++) syscall(SYS_getppid);
  double t1 = now();
  for (int i = 0; i < READ; i++)
    if (syscall(SYS_read, fd, buf, 0) != 0) { perror("read"); return 1; }
  double t2 = now();
  for (int i = 0; i < PERSONALITY; i++)
    if (syscall(SYS_personality, 0xffffffffUL) < 0) { perror("personality"); return 1; }
  double t3 = now();
  printf("seccomp=%d getppid=%.2f read=%.2f all=%.2f personality=%.2f\n", seccomp_mode(),
         (t1 - t0) / GETPPID, (t2 - t1) / READ, (t2 - t0) / (GETPPID + READ), (t3 - t2) / PERSONALITY);
  return 0;
}
`;

/** The measures the program prints, in table order. `all` is getppid and read together. */
const KINDS = ['getppid', 'read', 'all', 'personality'];


function usage(code) {
  const text = `usage: node bench/seccomp.mjs [--iterations N] [--baseline N] [--moat PATH] [--runc PATH]
  --iterations N  runs per runtime with the default profile (default 10)
  --baseline N    runs per runtime with no seccomp profile (default 1)
  --moat PATH     moat executable (default ${path.join(repo, 'bin/moat.cjs')}; .mjs/.js/.cjs run with node)
  --runc PATH     runc executable (default: runc on PATH)`;
  (code === 0 ? console.log : console.error)(text);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { iterations: 10, baseline: 1, moat: path.join(repo, 'bin/moat.cjs'), runc: undefined };
  const flags = flagReader(argv, usage);
  for (let flag = flags.next(); flag !== undefined; flag = flags.next()) {
    const { value, count } = flags;
    if (flag === '--iterations') opts.iterations = count(1);
    else if (flag === '--baseline') opts.baseline = count(1);
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
 * (not a pipe: a container inherits them and would keep a pipe open). Returns the exit status and
 * the output.
 */
function call(rt, args, { allowFail = false } = {}) {
  const log = path.join(logDir, `${++logSeq}.log`);
  const fd = fs.openSync(log, 'w');
  let r;
  try {
    r = spawnSync(rt.cmd[0], [...rt.cmd.slice(1), '--root', rt.root, ...args], {
      stdio: ['ignore', fd, fd],
      timeout: CALL_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
  } finally {
    fs.closeSync(fd);
  }
  const output = fs.readFileSync(log, 'utf8');
  interrupt.check();
  const what = `${rt.name}: ${rt.label} --root ${rt.root} ${args.join(' ')}`;
  if (r.error) throw new RuntimeFailure(`${what}: ${r.error.code === 'ETIMEDOUT' ? `timed out after ${CALL_TIMEOUT_MS} ms` : r.error.message}\n${tail(output)}`);
  if (r.status !== 0 && !allowFail) {
    const how = r.status === null ? `killed by ${r.signal}` : `exit status ${r.status}`;
    throw new RuntimeFailure(`${what}: ${how}\n${tail(output)}`);
  }
  return { status: r.status, output };
}


/** One `run` of the loop program; returns its measures after checking the filter is (not) loaded. */
function measure(rt, bundle, id, filtered) {
  rt.ids.add(id);
  const { output } = call(rt, ['run', '-b', bundle, id]);
  call(rt, ['delete', '-f', id], { allowFail: true });
  rt.ids.delete(id);
  const line = output.split('\n').find((l) => l.startsWith('seccomp='));
  if (line === undefined) throw new RuntimeFailure(`${rt.name}: the loop program printed no result:\n${tail(output)}`);
  const m = Object.fromEntries(line.split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  const wanted = filtered ? 2 : 0;
  if (m.seccomp !== wanted) {
    throw new RuntimeFailure(`${rt.name}: the container's Seccomp mode is ${m.seccomp}, expected ${wanted} (${filtered ? 'with' : 'without'} the profile)`);
  }
  for (const k of KINDS) if (!(m[k] > 0)) throw new RuntimeFailure(`${rt.name}: bad measure ${k} in "${line}"`);
  return m;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length / 2;
  return s.length % 2 ? s[Math.floor(mid)] : (s[mid - 1] + s[mid]) / 2;
}

const fmt = (n, w = 11) => n.toFixed(1).padStart(w);
const signed = (n, w = 11) => `${n >= 0 ? '+' : ''}${n.toFixed(1)}`.padStart(w);

/** Runs `count` alternating rounds of both runtimes on `bundle`; returns name → kind → samples. */
async function rounds(runtimes, bundle, count, filtered, tag) {
  const samples = Object.fromEntries(runtimes.map((rt) => [rt.name, Object.fromEntries(KINDS.map((k) => [k, []]))]));
  for (let i = 0; i < count; i++) {
    const order = i % 2 === 0 ? runtimes : [...runtimes].reverse(); // alternate who goes first
    for (const rt of order) {
      const m = measure(rt, bundle, `${tag}-${i}`, filtered);
      for (const k of KINDS) samples[rt.name][k].push(m[k]);
      await interrupt.tick();
    }
  }
  return samples;
}

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
  const seccompModule = path.join(repo, 'build/src/seccomp/index.js');
  for (const f of [fixture, seccompModule]) {
    if (!fs.existsSync(f)) {
      console.error(`${f} is missing: compile first with "npx tsc -p tsconfig.json"`);
      return 1;
    }
  }
  const cc = process.env.CC ?? 'cc';
  if (which(cc) === undefined) {
    console.error(`no C compiler (${cc}) to build the loop program: apt-get install gcc libc6-dev`);
    return 1;
  }
  if (process.getuid?.() !== 0) console.warn('warning: not running as root; both runtimes will probably fail');
  const { makeBundle } = await import(pathToFileURL(fixture).href);
  const { defaultSeccompProfile } = await import(pathToFileURL(seccompModule).href);

  const moat = runtime('moat', opts.moat);
  const runc = runtime('runc', runcPath);
  const runtimes = [moat, runc];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moat-bench-seccomp-'));
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
    const loop = path.join(tmp, 'loop');
    const build = spawnSync(cc, ['-static', '-O2', '-Wall', '-Wextra', '-Werror', '-x', 'c', '-o', loop, '-'], { input: LOOP_C, encoding: 'utf8' });
    if (build.status !== 0) {
      console.error(`cannot compile the loop program (is libc6-dev installed for -static?):\n${tail(build.stderr ?? String(build.error))}`);
      return 1;
    }
    const profile = defaultSeccompProfile();
    const withProfile = await makeBundle({
      dir: path.join(tmp, 'bundle-seccomp'),
      args: ['/bin/loop'],
      mutate: (s) => {
        s.process.noNewPrivileges = true;
        s.linux.seccomp = profile;
      },
    });
    const without = await makeBundle({
      dir: path.join(tmp, 'bundle-none'),
      args: ['/bin/loop'],
      mutate: (s) => {
        s.process.noNewPrivileges = true;
        delete s.linux.seccomp;
      },
    });
    for (const b of [withProfile, without]) fs.copyFileSync(loop, path.join(b, 'rootfs/bin/loop'));

    console.log(`seccomp filter cost: Moat's default profile (${profile.syscalls.length} rules), ${opts.iterations} runs per runtime with it (alternating), ${opts.baseline} without any profile`);
    console.log('per run: 2,000,000 getppid + 200,000 read(fd, buf, 0) of /dev/zero (= "all"), then 200,000 personality(0xffffffff)');
    for (const rt of runtimes) console.log(`  ${rt.name}: ${rt.label}`);

    const filtered = await rounds(runtimes, withProfile, opts.iterations, true, 'seccomp');
    const plain = await rounds(runtimes, without, opts.baseline, false, 'none');

    const med = (samples) => Object.fromEntries(runtimes.map((rt) => [rt.name, Object.fromEntries(KINDS.map((k) => [k, median(samples[rt.name][k])]))]));
    const f = med(filtered);
    const p = med(plain);

    console.log('\nmedian ns per system call');
    console.log(`${'runtime'.padEnd(7)} ${'filter'.padEnd(7)} ${KINDS.map((k) => k.padStart(11)).join(' ')}`);
    for (const rt of runtimes) {
      console.log(`${rt.name.padEnd(7)} ${'default'.padEnd(7)} ${KINDS.map((k) => fmt(f[rt.name][k])).join(' ')}`);
      console.log(`${rt.name.padEnd(7)} ${'none'.padEnd(7)} ${KINDS.map((k) => fmt(p[rt.name][k])).join(' ')}`);
    }
    console.log('\nfilter overhead (default - none), ns per call');
    for (const rt of runtimes) {
      console.log(`${rt.name.padEnd(15)} ${KINDS.map((k) => signed(f[rt.name][k] - p[rt.name][k])).join(' ')}`);
    }
    console.log(`\nratio moat/runc with the profile: ${KINDS.map((k) => `${k} ${ratio(f.moat[k], f.runc[k])}`).join(', ')}`);
    console.log(`ratio moat/runc of the filter overhead on personality (the BPF program runs): ${ratio(f.moat.personality - p.moat.personality, f.runc.personality - p.runc.personality)}`);
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
