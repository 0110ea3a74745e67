/**
 * The dump half of the sentry checkpointer: it seizes a workload process with ptrace and records
 * what a restore needs — registers and FPU state, every private memory mapping with its saved
 * pages (all touched pages of anonymous memory, only the copied-on-write pages of file
 * mappings: the rest comes back from the file), the fds, signal handlers and mask, rseq and
 * robust-futex registrations, the mm's layout fields, rlimits, cwd and umask. The handlers and
 * the exact brk are read by system calls injected into the process (ptrace.ts). Whatever it
 * cannot restore it refuses up front, naming it (CheckpointRefused).
 */
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync, readSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import type { Dirent } from 'node:fs';
import { release } from 'node:os';
import { MoatError } from '../../errors.js';
import { descendants } from '../../container/proc.js';
import { findSyscallInsn, peekPipe, peekSocket, Regs, Tracee } from './ptrace.js';
import { PAGE, SPECIAL, toHex } from './manifest.js';
import type { FdImage, ProcessImage, RegionImage, SentryManifest } from './manifest.js';

/** The checkpointer cannot checkpoint this container (as it is now), and says why. */
export class CheckpointRefused extends MoatError {
  constructor(id: string, detail: string) {
    super(`container "${id}": cannot checkpoint: ${detail}`);
  }
}

const NR = { rt_sigaction: 13, brk: 12, prctl: 157 } as const;
const PR_GET_TID_ADDRESS = 40;
const PM_PRESENT = 1n << 63n;
const PM_SWAP = 1n << 62n;
const PM_FILE = 1n << 61n;
const O_CLOEXEC = 0o2000000;

/** What the host offers a restore: kernel release, CPU flags and the XSAVE features of `xstate`. */
export function hostInfo(xstate: Buffer): SentryManifest['host'] {
  const flags = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/) ?? [];
  return { kernel: release(), cpuFlags: flags, xfeatures: toHex(xfeaturesOf(xstate)) };
}

/** XCR0, which the kernel reports at offset 464 of the ptrace XSAVE area (where gdb reads it too). */
export function xfeaturesOf(xstate: Buffer): bigint {
  return xstate.length >= 472 ? xstate.readBigUInt64LE(464) : 0n;
}

/** One line of /proc/PID/maps. */
export interface MapsLine {
  start: bigint;
  end: bigint;
  perms: string;
  offset: bigint;
  inode: number;
  name: string;
}

/** Parses /proc/PID/maps. */
export function parseMaps(text: string): MapsLine[] {
  const out: MapsLine[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ (\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3]!, offset: BigInt(`0x${m[4]}`), inode: Number(m[5]), name: m[6] ?? '' });
  }
  return out;
}

/** Reads pagemap entries of `count` pages from `start`. */
function pagemap(fd: number, start: bigint, count: number): BigUint64Array {
  const buf = Buffer.alloc(count * 8);
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, Number((start / BigInt(PAGE)) * 8n) + done);
    if (n <= 0) break;
    done += n;
  }
  return new BigUint64Array(buf.buffer, buf.byteOffset, count);
}

/** Runs of pages to save: [first, count] where `keep(entry)` holds. */
function runsOf(entries: BigUint64Array, keep: (e: bigint) => boolean): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < entries.length; i++) {
    if (!keep(entries[i]!)) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  return runs;
}

/** The memory regions of `pid` with the pages to save, or a refusal naming the first mapping it cannot restore. */
function captureRegions(id: string, pid: number): RegionImage[] {
  const maps = parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
  const pm = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const out: RegionImage[] = [];
    for (const m of maps) {
      const where = `the mapping ${toHex(m.start)}-${toHex(m.end)} ${m.name}`.trim();
      if (m.name === '[vsyscall]') continue;
      const shared = m.perms[3] === 's';
      if (m.name.endsWith(' (deleted)')) throw new CheckpointRefused(id, `${where} maps a deleted file${shared ? ' shared (shared anonymous memory is not checkpointed yet)' : ''}`);
      const base = { start: toHex(m.start), end: toHex(m.end), perms: m.perms };
      if ((SPECIAL as readonly string[]).includes(m.name)) {
        out.push({ ...base, kind: 'special', name: m.name, runs: [] });
        continue;
      }
      const n = Number((m.end - m.start) / BigInt(PAGE));
      const entries = pagemap(pm, m.start, n);
      if (shared && (m.inode === 0 || !m.name.startsWith('/') || m.name.startsWith('/memfd:') || m.name.startsWith('/SYSV'))) {
        throw new CheckpointRefused(id, `${where} is shared memory (MAP_SHARED of no file): not checkpointed yet`);
      }
      if (m.inode === 0 && (m.name === '' || m.name === '[heap]' || m.name === '[stack]' || m.name.startsWith('[anon:'))) {
        const runs = runsOf(entries, (e) => (e & (PM_PRESENT | PM_SWAP)) !== 0n);
        out.push({ ...base, kind: m.name === '[stack]' ? 'stack' : 'anon', runs });
        continue;
      }
      if (m.inode === 0 || !m.name.startsWith('/')) throw new CheckpointRefused(id, `${where} is a kind of mapping the checkpointer does not know`);
      // the file as the process maps it (map_files), not a path that may name another file now
      const st = statSync(`/proc/${pid}/map_files/${m.start.toString(16)}-${m.end.toString(16)}`, { bigint: true });
      let inside: { dev: bigint; ino: bigint } | undefined;
      try {
        inside = statSync(`/proc/${pid}/root${m.name}`, { bigint: true });
      } catch {
        // not in the container
      }
      if (shared) {
        // a shared mapping's pages are the file's: it is mapped again, nothing is saved
        if (!inside || inside.dev !== st.dev || inside.ino !== st.ino) throw new CheckpointRefused(id, `${where} is a shared mapping of a file from outside the container`);
        out.push({ ...base, kind: 'file', name: m.name, offset: toHex(m.offset), file: { size: Number(st.size), mtimeNs: st.mtimeNs.toString() }, runs: [] });
        continue;
      }
      if (!inside || inside.dev !== st.dev || inside.ino !== st.ino) {
        // a file from outside the container (a snapshot image its pages were mapped from):
        // every page is saved, as for anonymous memory, read through the mapping
        out.push({ ...base, kind: 'anon', runs: n > 0 ? [[0, n]] : [] });
        continue;
      }
      const runs = runsOf(entries, (e) => ((e & PM_PRESENT) !== 0n && (e & PM_FILE) === 0n) || (e & PM_SWAP) !== 0n);
      out.push({ ...base, kind: 'file', name: m.name, offset: toHex(m.offset), file: { size: Number(st.size), mtimeNs: st.mtimeNs.toString() }, runs });
    }
    return out;
  } finally {
    closeSync(pm);
  }
}

/** Mount ids of the process's mount namespace (to tell its own files from ones handed in from outside). */
function mountIds(pid: number): Set<number> {
  return new Set(readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split(' ')[0])));
}

/**
 * What the fds of the whole tree are checked against: the init's stdio from outside (by device
 * and inode), and the pipes found so far (by inode) with a read end to take their data from.
 */
export class FdContext {
  readonly external = new Map<string, number>();
  /** The object of each of the init's fds 0 to 2 from outside ("dev:ino"), by fd. */
  readonly stdio: (string | undefined)[] = [];
  readonly pipes = new Map<number, { index: number; reader?: { pid: number; fd: number } }>();
  /** The unix sockets of the container's network namespace (/proc/PID/net/unix), by inode. */
  readonly unix = new Map<number, { type: number; listening: boolean; path: string }>();
  /** Socket fds met so far, to be numbered once the pairs are known. */
  readonly socketFds: { image: FdImage; inode: number; pid: number; fd: number }[] = [];

  /** Records the init's fds 0 to 2 that come from outside the container. */
  constructor(init: number) {
    for (const line of readFileSync(`/proc/${init}/net/unix`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 7) continue;
      this.unix.set(Number(f[6]), { type: parseInt(f[4]!, 16), listening: (parseInt(f[3]!, 16) & 0x10000) !== 0, path: f.slice(7).join(' ') });
    }
    const own = mountIds(init);
    for (let fd = 0; fd <= 2; fd++) {
      try {
        const link = readlinkSync(`/proc/${init}/fd/${fd}`);
        const mnt = Number(/^mnt_id:\s*(\d+)/m.exec(readFileSync(`/proc/${init}/fdinfo/${fd}`, 'utf8'))?.[1] ?? 0);
        if (link.startsWith('/') && own.has(mnt)) continue;
        const st = statSync(`/proc/${init}/fd/${fd}`);
        const key = `${st.dev}:${st.ino}`;
        this.stdio[fd] = key;
        if (!this.external.has(key)) this.external.set(key, fd);
      } catch {
        // no such fd
      }
    }
  }
}

/**
 * The fds of `pid`: files inside the container by path, the init's stdio from outside as
 * `external`, pipes of the tree by number; anything else refused.
 */
function captureFds(id: string, pid: number, nsPid: number, ctx: FdContext): FdImage[] {
  const own = mountIds(pid);
  const out: FdImage[] = [];
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    const fd = Number(name);
    let link: string;
    let info: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile (the process is stopped: only by a racing delete)
    }
    const field = (k: string): string => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(info)?.[1] ?? '0';
    const rawFlags = parseInt(field('flags'), 8);
    const base = { fd, flags: rawFlags & ~O_CLOEXEC, cloexec: (rawFlags & O_CLOEXEC) !== 0 };
    const mnt = Number(field('mnt_id'));
    if (link.startsWith('/') && own.has(mnt)) {
      if (link.endsWith(' (deleted)')) throw new CheckpointRefused(id, `fd ${fd} of process ${nsPid} is a deleted file (${link})`);
      const st = statSync(`/proc/${pid}/fd/${fd}`);
      if (!st.isFile() && !st.isDirectory() && !st.isCharacterDevice()) throw new CheckpointRefused(id, `fd ${fd} of process ${nsPid} (${link}) is neither a file, a directory nor a device`);
      out.push({ ...base, kind: 'file', path: link, pos: st.isFile() ? Number(field('pos')) : 0 });
      continue;
    }
    const st = statSync(`/proc/${pid}/fd/${fd}`);
    const key = `${st.dev}:${st.ino}`;
    // the same number where it is the same object (stdout and stderr may be one file)
    const stdio = fd <= 2 && ctx.stdio[fd] === key ? fd : ctx.external.get(key);
    if (stdio !== undefined) {
      out.push({ ...base, kind: 'external', stdio, pos: 0 });
      continue;
    }
    const pipe = /^pipe:\[(\d+)\]$/.exec(link);
    if (pipe) {
      const ino = Number(pipe[1]);
      let entry = ctx.pipes.get(ino);
      if (!entry) ctx.pipes.set(ino, (entry = { index: ctx.pipes.size }));
      const end = (rawFlags & 3) === 0 ? 'r' : 'w';
      if (end === 'r') entry.reader ??= { pid, fd };
      out.push({ ...base, kind: 'pipe', pipe: entry.index, end, pos: 0 });
      continue;
    }
    const sock = /^socket:\[(\d+)\]$/.exec(link);
    if (sock && ctx.unix.has(Number(sock[1]))) {
      const image: FdImage = { ...base, kind: 'socket', socket: -1, pos: 0 };
      ctx.socketFds.push({ image, inode: Number(sock[1]), pid, fd });
      out.push(image);
      continue;
    }
    throw new CheckpointRefused(id, `fd ${fd} of process ${nsPid} (${link}) is not a file inside the container, its stdio, a pipe or a unix socket: other sockets and kernel objects are not checkpointed yet`);
  }
  return out.sort((a, b) => a.fd - b.fd);
}

/** The bytes in each pipe of `ctx` (read without taking them, with tee(2)) and its capacity. */
export function capturePipes(ctx: FdContext): SentryManifest['pipes'] {
  const out: SentryManifest['pipes'] = [];
  for (const [, p] of [...ctx.pipes].sort((a, b) => a[1].index - b[1].index)) {
    if (!p.reader) {
      out.push({ capacity: 65536, data: '' });
      continue;
    }
    out.push(peekPipe(p.reader.pid, p.reader.fd));
  }
  return out;
}
/** The fields of /proc/PID/stat after the command name (index 0 is field 3, the state). */
function statFields(pid: number): string[] {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2).trim().split(' ');
}

/** The process `pid` (seized as `t`): everything a restore needs but its pages. */
export function captureProcess(id: string, found: FoundProcess, ctx: FdContext): ProcessImage {
  const pid = found.host;
  const nsPid = found.node.pid;
  const t = found.tracee!;
  const regs = found.regs!;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = (k: string): string => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
  if (BigInt(`0x${line('SigPnd')}`) !== 0n || BigInt(`0x${line('ShdPnd')}`) !== 0n) throw new CheckpointRefused(id, `process ${nsPid} has signals pending; try again`);
  for (const th of found.threads) {
    const pending = /^SigPnd:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${th.host}/status`, 'utf8'))?.[1] ?? '0';
    if (BigInt(`0x${pending}`) !== 0n) throw new CheckpointRefused(id, `thread ${th.tid} of process ${nsPid} has signals pending; try again`);
  }
  let timers = '';
  try {
    timers = readFileSync(`/proc/${pid}/timers`, 'utf8');
  } catch {
    // no CONFIG_CHECKPOINT_RESTORE: nothing to check
  }
  if (timers.trim() !== '') throw new CheckpointRefused(id, `process ${nsPid} has POSIX timers: they are not checkpointed yet`);
  const fds = captureFds(id, pid, nsPid, ctx);

  // calls injected on the vDSO's own syscall instruction; their scratch memory is below the
  // stack's red zone, where nothing live can be
  const vdso = parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8')).find((m) => m.name === '[vdso]');
  if (!vdso) throw new CheckpointRefused(id, `process ${nsPid} has no vDSO to run calls on`);
  t.useSyscallAt(findSyscallInsn(t.read(vdso.start, Number(vdso.end - vdso.start)), vdso.start));
  const scratch = ((regs.get('rsp') - 4096n - 256n) / 16n) * 16n;
  const sigactions: ProcessImage['sigactions'] = [];
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === 9 || sig === 19) continue;
    t.call(`rt_sigaction(${sig})`, NR.rt_sigaction, [sig, 0, scratch, 8]);
    const a = t.read(scratch, 32);
    const [handler, flags, restorer, mask] = [0, 8, 16, 24].map((o) => a.readBigUInt64LE(o)) as [bigint, bigint, bigint, bigint];
    if (handler !== 0n || flags !== 0n || mask !== 0n) sigactions.push({ sig, handler: toHex(handler), flags: toHex(flags), restorer: toHex(restorer), mask: toHex(mask) });
  }
  const brk = t.call('brk(0)', NR.brk, [0]);
  const clearTid = (tr: Tracee, r: Regs): string => {
    const at = ((r.get('rsp') - 4096n - 256n) / 16n) * 16n;
    tr.call('prctl(PR_GET_TID_ADDRESS)', NR.prctl, [PR_GET_TID_ADDRESS, at, 0, 0, 0]);
    return toHex(tr.read(at, 8).readBigUInt64LE(0));
  };
  const mainClearTid = clearTid(t, regs);
  t.setRegs(regs);
  const threads: ProcessImage['threads'] = found.threads.map((th) => {
    th.tracee.useSyscallAt(findSyscallInsn(t.read(vdso.start, Number(vdso.end - vdso.start)), vdso.start));
    const ct = clearTid(th.tracee, th.regs);
    th.tracee.setRegs(th.regs);
    const rs = th.tracee.rseq();
    const rb = th.tracee.robustList();
    return {
      tid: th.tid,
      comm: readFileSync(`/proc/${pid}/task/${th.host}/comm`, 'utf8').trim().slice(0, 64),
      regs: th.regs.buf.toString('hex'),
      xstate: th.tracee.getXstate().toString('base64'),
      sigmask: toHex(th.tracee.getSigmask()),
      rseq: rs ? { ptr: toHex(rs.ptr), size: rs.size, signature: rs.signature } : null,
      robust: { head: toHex(rb.head), len: rb.len },
      clearTid: ct,
    };
  }).sort((a, b) => a.tid - b.tid);

  const f = statFields(pid);
  const at = (n: number): string => toHex(BigInt(f[n - 3] ?? '0'));
  const xstate = t.getXstate();
  const rseq = t.rseq();
  const robust = t.robustList();
  const rlimits = [];
  for (let r = 0; r < 16; r++) {
    const l = t.getRlimit(r);
    rlimits.push({ resource: r, soft: toHex(l.soft), hard: toHex(l.hard) });
  }
  return {
    pid: nsPid,
    clearTid: mainClearTid,
    threads,
    comm: line('Name').slice(0, 64),
    regs: regs.buf.toString('hex'),
    xstate: xstate.toString('base64'),
    sigmask: toHex(t.getSigmask()),
    sigactions,
    rseq: rseq ? { ptr: toHex(rseq.ptr), size: rseq.size, signature: rseq.signature } : null,
    robust: { head: toHex(robust.head), len: robust.len },
    mm: {
      startCode: at(26), endCode: at(27), startStack: at(28), startData: at(45), endData: at(46), startBrk: at(47), brk: toHex(brk),
      argStart: at(48), argEnd: at(49), envStart: at(50), envEnd: at(51),
      auxv: readFileSync(`/proc/${pid}/auxv`).toString('base64'),
    },
    regions: captureRegions(id, pid),
    fds,
    cwd: readlinkSync(`/proc/${pid}/cwd`),
    umask: parseInt(line('Umask') || '22', 8),
    personality: parseInt(readFileSync(`/proc/${pid}/personality`, 'utf8').trim(), 16),
    creds: { uid: Number(line('Uid').split(/\s+/)[0]), gid: Number(line('Gid').split(/\s+/)[0]) },
    rlimits,
  };
}

/** The saved pages of `p`, in manifest order, read from the stopped process. */
export async function* pagesOf(t: Tracee, p: ProcessImage): AsyncIterable<Buffer> {
  const CHUNK = 256; // pages per read
  for (const r of p.regions) {
    const start = BigInt(r.start);
    for (const [first, count] of r.runs) {
      for (let i = 0; i < count; i += CHUNK) {
        const n = Math.min(CHUNK, count - i);
        yield t.read(start + BigInt((first + i) * PAGE), n * PAGE);
      }
    }
  }
}

/** A process of the tree as the checkpointer found it. */
export interface FoundProcess {
  host: number;
  node: SentryManifest['tree'][number];
  /** The seized process (absent for a zombie). */
  tracee?: Tracee;
  regs?: Regs;
  /** Its other threads, seized too: host tid, tid in the container, registers. */
  threads: { host: number; tid: number; tracee: Tracee; regs: Regs }[];
}

/** The innermost value of a /proc/PID/status line listing one value per pid namespace (NSpid, NSpgid, NSsid). */
function nsField(status: string, key: string): number {
  const v = new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim().split(/\s+/) ?? [];
  return Number(v.at(-1) ?? 0);
}

/**
 * Seizes every process of the tree under `init` (listing again until a pass finds no new one:
 * a process stopped cannot fork, so this ends), and records each one's place: pid, parent,
 * process group and session in the container, or a zombie's wait status. Threads are refused.
 * On failure everything seized so far is let go again.
 */
export function seizeTree(id: string, init: number): FoundProcess[] {
  const found = new Map<number, FoundProcess>();
  try {
    for (let pass = 0; ; pass++) {
      const fresh = descendants(init).filter((p) => !found.has(p));
      if (fresh.length === 0) break;
      if (pass > 64) throw new CheckpointRefused(id, 'its processes keep forking faster than they can be stopped');
      for (const host of fresh) {
        let status: string;
        try {
          status = readFileSync(`/proc/${host}/status`, 'utf8');
        } catch {
          continue; // gone (reaped) meanwhile
        }
        const zombie = /^State:\s*Z/m.test(status);
        const node = { pid: nsField(status, 'NSpid'), ppid: 0, pgid: nsField(status, 'NSpgid'), sid: nsField(status, 'NSsid') };
        if (zombie) {
          const exit = Number(statFields(host)[49] ?? 0);
          found.set(host, { host, node: { ...node, zombie: exit }, threads: [] });
          continue;
        }
        const tracee = Tracee.seize(host);
        found.set(host, { host, node, tracee, regs: tracee.getRegs(), threads: [] });
      }
      // every thread of every live process, until a pass finds no new one
      for (const f of found.values()) {
        if (!f.tracee) continue;
        for (;;) {
          const have = new Set([f.host, ...f.threads.map((x) => x.host)]);
          const fresh = readdirSync(`/proc/${f.host}/task`).map(Number).filter((t) => !have.has(t));
          if (fresh.length === 0) break;
          for (const tid of fresh) {
            let status: string;
            try {
              status = readFileSync(`/proc/${f.host}/task/${tid}/status`, 'utf8');
            } catch {
              continue; // ended meanwhile
            }
            const tracee = Tracee.seize(tid);
            f.threads.push({ host: tid, tid: nsField(status, 'NSpid'), tracee, regs: tracee.getRegs() });
          }
        }
      }
    }
    // parents: host ppid -> container pid (the init's parent is outside: 0)
    const nsOf = new Map([...found.values()].map((f) => [f.host, f.node.pid]));
    for (const f of found.values()) {
      const ppid = f.host === init ? 0 : Number(/^PPid:\s*(\d+)/m.exec(readFileSync(`/proc/${f.host}/status`, 'utf8'))?.[1] ?? 0);
      f.node.ppid = f.host === init ? 0 : nsOf.get(ppid) ?? -1;
      if (f.node.ppid < 0) throw new CheckpointRefused(id, `process ${f.node.pid}'s parent is outside the container`);
    }
    // parents before children (descendants() lists breadth-first, and so does this)
    return descendants(init).map((p) => found.get(p)).filter((f): f is FoundProcess => f !== undefined);
  } catch (e) {
    for (const f of found.values()) {
      for (const t of [...f.threads.map((x) => x.tracee), f.tracee]) {
        try {
          t?.detach();
        } catch {
          // gone
        }
      }
    }
    throw e;
  }
}

const SOCK_TYPES: Readonly<Record<number, 'stream' | 'dgram' | 'seqpacket'>> = { 1: 'stream', 2: 'dgram', 5: 'seqpacket' };

/**
 * Each unix socket's peer (inode to inode), queue length and, for a bound one, the device and
 * inode of its file, from `ss -xaHe` (sock_diag) run in the container's network namespace.
 */
function unixPeers(id: string, init: number): Map<number, { peer: number; recvq: number; file?: { dev: string; ino: number } }> {
  const r = spawnSync('nsenter', ['-t', String(init), '-n', 'ss', '-xaHe'], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new CheckpointRefused(id, `cannot list its unix sockets' peers (nsenter ... ss -xaH: ${(r.stderr || r.error?.message || '').trim()})`);
  const out = new Map<number, { peer: number; recvq: number; file?: { dev: string; ino: number } }>();
  for (const raw of r.stdout.split('\n')) {
    // u_str ESTAB 0 0 <local path or *> <inode> <peer path or *> <peer inode> [<-> ino:N dev:M/m peers:...]:
    // the paths may hold spaces, so the numbers are found from both ends
    const extra = raw.indexOf(' <->');
    const line = extra >= 0 ? raw.slice(0, extra) : raw;
    const vfs = / ino:(\d+) dev:(\d+)\/(\d+)/.exec(extra >= 0 ? raw.slice(extra) : '');
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const peer = Number(f[f.length - 1]);
    // the local inode is the last number before the peer's path
    let i = f.length - 3;
    while (i > 4 && !/^\d+$/.test(f[i]!)) i--;
    // ss decodes the kernel's dev_t (major << 20 | minor) with glibc's major()/minor(): undo that
    const dev = vfs ? `${Number(vfs[3]) >> 8}:${(Number(vfs[2]) << 8) | (Number(vfs[3]) & 0xff)}` : '';
    out.set(Number(f[i]), { peer, recvq: Number(f[2]), ...(vfs ? { file: { dev, ino: Number(vfs[1]) } } : {}) });
  }
  return out;
}

/**
 * Numbers the tree's unix sockets: a pair whose two ends are both in the container, or a
 * listener bound to a path with no connection waiting; the messages waiting at each end of a
 * pair are copied without taking them. Anything else is refused.
 */
export function captureSockets(id: string, init: number, ctx: FdContext): SentryManifest['sockets'] {
  const out: SentryManifest['sockets'] = [];
  if (ctx.socketFds.length === 0) return out;
  const peers = unixPeers(id, init);
  const index = new Map<number, number>();
  const held = new Set(ctx.socketFds.map((s) => s.inode));
  for (const s of ctx.socketFds) {
    const u = ctx.unix.get(s.inode)!;
    const type = SOCK_TYPES[u.type];
    if (!type) throw new CheckpointRefused(id, `a unix socket of type ${u.type} is not checkpointed`);
    const p = peers.get(s.inode);
    if (u.listening) {
      if (p && p.recvq > 0) throw new CheckpointRefused(id, `the unix socket listening at ${u.path} has ${p.recvq} connections waiting to be accepted; try again`);
      if (!u.path.startsWith('/') || !p?.file) throw new CheckpointRefused(id, `a unix socket listening at "${u.path}" (abstract or unnamed) is not checkpointed yet`);
      if (!index.has(s.inode)) {
        // the sentry binds through its own /proc/self/fd/N/ paths: the file is found by device and inode
        const found = findSocketFile(init, p.file.dev, p.file.ino, u.path.slice(u.path.lastIndexOf('/') + 1));
        if (!found) throw new CheckpointRefused(id, `the file of the unix socket listening at ${u.path} was not found in the container`);
        index.set(s.inode, out.length);
        out.push({ type, listen: { path: found.path, backlog: 128, uid: found.uid, gid: found.gid, mode: found.mode & 0o7777 } });
      }
      s.image.socket = index.get(s.inode)!;
      s.image.end = 'l';
      continue;
    }
    if (!p || p.peer === 0 || !held.has(p.peer)) throw new CheckpointRefused(id, `a unix socket (inode ${s.inode}) is not connected to another process of the container`);
    const a = Math.min(s.inode, p.peer);
    if (!index.has(a)) {
      index.set(a, out.length);
      const at = (inode: number): string[] => {
        const holder = ctx.socketFds.find((x) => x.inode === inode)!;
        const q = peekSocket(holder.pid, holder.fd, type === 'stream');
        if (q === null) throw new CheckpointRefused(id, 'a unix socket has file descriptors or credentials in flight');
        return q;
      };
      out.push({ type, queued: [at(a), at(Math.max(s.inode, p.peer))] });
    }
    s.image.socket = index.get(a)!;
    s.image.end = s.inode === a ? 'a' : 'b';
  }
  return out;
}

/**
 * The path inside the container of the socket file `name` with device `dev` (major:minor) and
 * inode `ino`: the mount of that device is found in the container's mountinfo and walked (not
 * into other mounts), looking only at entries of that name; at most 200,000 entries.
 */
function findSocketFile(init: number, dev: string, ino: number, name: string): { path: string; uid: number; gid: number; mode: number } | undefined {
  const root = `/proc/${init}/root`;
  const mounts = readFileSync(`/proc/${init}/mountinfo`, 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === dev).map((f) => f[4]!.replace(/\\040/g, ' '));
  let budget = 200_000;
  for (const mnt of mounts) {
    const top = statSync(`${root}${mnt}`);
    const queue = [mnt === '/' ? '' : mnt];
    while (queue.length > 0 && budget > 0) {
      const dir = queue.shift()!;
      let entries: Dirent[];
      try {
        entries = readdirSync(`${root}${dir || '/'}`, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        if (--budget <= 0) break;
        const rel = `${dir}/${e.name}`;
        if (e.isDirectory()) {
          try {
            if (statSync(`${root}${rel}`).dev === top.dev) queue.push(rel);
          } catch {
            // gone
          }
        } else if (e.isSocket() && e.name === name) {
          const st = statSync(`${root}${rel}`);
          if (st.ino === ino) return { path: rel, uid: st.uid, gid: st.gid, mode: st.mode };
        }
      }
    }
  }
  return undefined;
}
