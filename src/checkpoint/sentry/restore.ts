/**
 * The restore half of the sentry checkpointer. A fresh container is created as for any start —
 * same spec, namespaces, cgroups, capabilities, no_new_privs and the spec's own seccomp filter —
 * but moat-init recreates the checkpointed tree (T_RESTORE_TREE: pids by clone3 set_tid, pipes,
 * unix socket pairs and listeners, zombies) and every process stops before the sentry's filter
 * and exec (T_RESTORE_STOP). This module seizes them all and turns each into its checkpointed
 * process by injected system calls:
 *
 *   1. unregister the stage's rseq, map a scratch page, unmap everything of the stage but the
 *      kernel's special mappings, and move those ([vvar], [vvar_vclock], [vdso]) to where the
 *      checkpointed process had them (same kernel: same vDSO);
 *   2. map every region again (files opened inside the container, by its own root), and write
 *      the saved pages — or, for a snapshot, map them copy-on-write from the image — only once
 *      the whole SENTRY_PAGES section matched its SHA-256 does anything run;
 *   3. the mm's layout (PR_SET_MM_MAP: brk, arg and env areas, auxv), signal handlers and mask,
 *      name, rseq and robust-list registrations, fds (reopened inside the container, offsets
 *      set; pipe and socket ends moved into place, their bytes refilled), cwd, umask,
 *      personality and rlimits (never above the spec's);
 *   4. the sentry's filter, whose notify fd this module hands to the sentry itself; then the
 *      other threads, each with its tid (ns_last_pid); then the registers and FPU state of every
 *      thread: a call one was in is restarted as the kernel would, and all go on together.
 *
 * Any failure leaves the half-made process to be killed by the caller.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { release } from 'node:os';
import type { ImageReader, SectionInfo } from '../image.js';
import { hostInfo, parseMaps, xfeaturesOf } from './dump.js';
import type { MapsLine } from './dump.js';
import { PAGE, SentryImageError, SPECIAL, TASK_SIZE } from './manifest.js';
import type { ProcessImage, SentryManifest } from './manifest.js';
import { findSyscallInsn, Regs, takeFd, Tracee } from './ptrace.js';
import type { Rlimit } from './ptrace.js';
import { trace } from '../../util/log.js';
import { descendants, isAlive, procStat } from '../../container/proc.js';
import * as k from '../../sys/kernel.js';

const NR = {
  mmap: 9, munmap: 11, mremap: 25, rt_sigaction: 13, close: 3, lseek: 8, dup3: 292, openat: 257, chdir: 80,
  umask: 95, personality: 135, prctl: 157, rseq: 334, set_robust_list: 273, seccomp: 317, fcntl: 72, close_range: 436,
  clone: 56, set_tid_address: 218,
} as const;
const F_DUPFD_CLOEXEC = 1030;
const F_SETFL = 4;
const F_SETPIPE_SZ = 1031;
const RLIMIT_NOFILE = 7;
/** clone(2) flags of a thread as glibc makes one (CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|CHILD_CLEARTID). */
const CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 | 0x80000 | 0x200000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const PROT = { r: 1, w: 2, x: 4 } as const;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_GROWSDOWN = 0x100;
const MAP_FIXED_NOREPLACE = 0x100000;
const MREMAP_MAYMOVE = 1;
const MREMAP_FIXED = 2;
const O_CLOEXEC = 0o2000000;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
const AT_FDCWD = -100;
const PR_SET_MM = 35;
const PR_SET_MM_MAP = 14;
const PR_SET_DUMPABLE = 4;
const PR_SET_NAME = 15;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;
const SCRATCH_SIZE = 1 << 18;

/** Checks that this host can run the checkpointed process: same kernel (vDSO), no CPU feature missing, same FPU state layout. */
export function checkHost(m: SentryManifest, stubXstate: Buffer): void {
  if (m.host.kernel !== release()) throw new SentryImageError('host.kernel', `taken on kernel ${m.host.kernel}, this host runs ${release()} (the vDSO and FPU layout must match)`);
  const here = new Set(hostInfo(stubXstate).cpuFlags);
  const missing = m.host.cpuFlags.filter((f) => !here.has(f));
  if (missing.length > 0) throw new SentryImageError('host.cpuFlags', `this CPU lacks ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', ...' : ''}`);
  if (BigInt(m.host.xfeatures) !== xfeaturesOf(stubXstate)) throw new SentryImageError('host.xfeatures', `the FPU state uses features ${m.host.xfeatures}, this host ${'0x' + xfeaturesOf(stubXstate).toString(16)}`);
}

/** A free address range of `size` bytes avoiding every range in `used`, at or above 64 KiB. */
function freeRange(used: { start: bigint; end: bigint }[], size: bigint, from = 0x10000000n): bigint {
  const sorted = [...used].sort((a, b) => (a.start < b.start ? -1 : 1));
  let at = from;
  for (const u of sorted) {
    if (u.end <= at) continue;
    if (u.start >= at + size) break;
    at = u.end;
  }
  if (at + size > TASK_SIZE) throw new SentryImageError('processes[0].regions', 'no free address range for the restorer\'s scratch memory');
  return at;
}

/** The mmap prot bits of "rwxp". */
const protOf = (perms: string): number => (perms[0] === 'r' ? PROT.r : 0) | (perms[1] === 'w' ? PROT.w : 0) | (perms[2] === 'x' ? PROT.x : 0);

/** Hands a notify fd of `pid` to the sentry listening at `socket`, as moat-init does: one line, one byte back. */
async function handOver(socket: string, pid: number, fd: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const s = connect(socket);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new SentryImageError('restore', `the sentry at ${socket} did not take the notify fd within 10 s`));
    }, 10_000);
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new SentryImageError('restore', `cannot reach the sentry at ${socket}: ${e.message}`));
    });
    s.once('connect', () => s.write(`{"pid":${pid},"fd":${fd}}\n`));
    s.once('data', (d: Buffer) => {
      clearTimeout(timer);
      s.destroy();
      if (d[0] === 0x4b) resolve();
      else reject(new SentryImageError('restore', `the sentry refused the notify fd (answered ${JSON.stringify(d.toString())})`));
    });
  });
}

/** Where the restore gets the sentry's filter and socket from. */
export interface RestoreTarget {
  /** Host pid of the stopped init (moat-init under T_RESTORE_STOP). */
  pid: number;
  /** The sentry's seccomp filter (struct sock_filter[]). */
  filter: Buffer;
  /** The sentry's socket. */
  socket: string;
  /**
   * The image file, whose SENTRY_PAGES section (page-aligned, already verified) is mapped
   * copy-on-write instead of copied; the init holds it open (T_RESTORE_IMAGE).
   */
  image?: string;
}

/** Waits until the stage sits in its pause() loop, and seizes it there. */
async function seizeStub(pid: number): Promise<Tracee> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const t = Tracee.seize(pid);
    if (t.getRegs().signed('orig_rax') === 34n) return t; // pause
    t.detach();
    if (Date.now() > deadline) throw new SentryImageError('restore', `the new container's process ${pid} did not reach its restore point within 10 s`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** The pid of host process `hostPid` in its innermost pid namespace (NSpid), or -1. */
function nsPidOf(hostPid: number): number {
  try {
    const line = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${hostPid}/status`, 'utf8'))?.[1] ?? '';
    return Number(line.trim().split(/\s+/).at(-1) ?? -1);
  } catch {
    return -1;
  }
}

/** Where each process of the new tree runs on the host: container pid -> host pid, once all are there. */
async function findTree(m: SentryManifest, init: number): Promise<Map<number, number>> {
  const want = m.tree.filter((n) => n.zombie === undefined).map((n) => n.pid);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = new Map<number, number>();
    for (const host of descendants(init)) found.set(nsPidOf(host), host);
    if (want.every((p) => found.has(p))) return found;
    if (!isAlive(init, procStat(init)?.startTime ?? '')) throw new SentryImageError('restore', 'the new container\'s init ended');
    if (Date.now() > deadline) throw new SentryImageError('restore', `processes ${want.filter((p) => !found.has(p)).join(', ')} of the tree did not appear within 10 s`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * The pipes moat-init made for the tree: pipes of which the init holds both ends (other pipe
 * fds it may hold, such as its plan's read end, have their other end elsewhere), in the order
 * it made them (by fd).
 */
function stubPipes(pid: number, count: number): { r: number; w: number }[] {
  const byInode = new Map<string, { r?: number; w?: number }>();
  for (const fd of readdirSync(`/proc/${pid}/fd`).map(Number).filter((n) => n > 2)) {
    let link: string;
    let flags: number;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      flags = parseInt(/^flags:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '0', 8);
    } catch {
      continue;
    }
    if (!link.startsWith('pipe:')) continue;
    const e = byInode.get(link) ?? {};
    if ((flags & 3) === 0) e.r ??= fd;
    else e.w ??= fd;
    byInode.set(link, e);
  }
  const out = [...byInode.values()].filter((e): e is { r: number; w: number } => e.r !== undefined && e.w !== undefined).sort((a, b) => a.r - b.r);
  if (out.length !== count) throw new SentryImageError('restore', `the new init holds ${out.length} pipes of its own, ${count} expected`);
  return out;
}

/** The unix sockets moat-init made for the tree (socket fds above 2 of the init, in the order made): a listener's fd, or a pair's two. */
function stubSockets(pid: number, m: SentryManifest): { a: number; b?: number }[] {
  const fds = readdirSync(`/proc/${pid}/fd`).map(Number).filter((n) => n > 2).sort((x, y) => x - y).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  });
  const want = m.sockets.reduce((n, x) => n + (x.listen ? 1 : 2), 0);
  if (fds.length !== want) throw new SentryImageError('restore', `the new init holds ${fds.length} sockets of its own, ${want} expected`);
  const out: { a: number; b?: number }[] = [];
  let i = 0;
  for (const x of m.sockets) out.push(x.listen ? { a: fds[i++]! } : { a: fds[i++]!, b: fds[i++]! });
  return out;
}

/** Sends the messages `queued` through fd `fd` of `pid` (a copy of it), so they wait at its peer. */
function refillSocket(pid: number, fd: number, queued: string[]): void {
  if (queued.length === 0) return;
  const s = takeFd(pid, fd);
  try {
    for (const q of queued) {
      const data = Buffer.from(q, 'base64');
      const n = k.sendto(s, data, MSG_DONTWAIT | MSG_NOSIGNAL, null);
      if (n !== data.length) throw new SentryImageError('sockets', `cannot queue ${data.length} bytes again (${n < 0 ? `errno ${-n}` : `${n} sent`})`);
    }
  } finally {
    k.close(s);
  }
}

/**
 * Restores the whole checkpointed tree into the new container whose init (moat-init under
 * T_RESTORE_STOP and T_RESTORE_TREE, host pid `target.pid`) made every process and pipe of it:
 * each process is seized, its memory rebuilt, the pages streamed in (only once the whole
 * SENTRY_PAGES section matched its SHA-256 does anything run), its state and fds restored and
 * the sentry's filter loaded; then all go on together (or, with `stopped`, stay in a group stop).
 */
export async function restoreTree(m: SentryManifest, reader: ImageReader, pages: SectionInfo, target: RestoreTarget, stopped = false): Promise<void> {
  const hosts = await findTree(m, target.pid);
  const pipes = stubPipes(target.pid, m.pipes.length);
  const sockets = stubSockets(target.pid, m);
  const restorers: ProcessRestorer[] = [];
  let done = false;
  try {
    for (const p of m.processes) {
      const host = hosts.get(p.pid)!;
      restorers.push(new ProcessRestorer(m, p, host, await seizeStub(host), target));
    }
    trace('restore: seized');
    // pipe contents, through the init's write ends (every process holds all of them yet)
    m.pipes.forEach((pipe, i) => {
      const data = Buffer.from(pipe.data, 'base64');
      if (data.length > 0 || pipe.capacity !== 65536) fillPipe(target.pid, pipes[i]!.w, pipe.capacity, data);
    });
    // socket messages, sent again from the other end of each pair
    m.sockets.forEach((x, i) => {
      if (!x.queued) return;
      refillSocket(target.pid, sockets[i]!.b!, x.queued[0]);
      refillSocket(target.pid, sockets[i]!.a, x.queued[1]);
    });
    for (const r of restorers) r.rebuildMemory();
    trace('restore: regions mapped');
    if (target.image) {
      // copy-on-write from the image: every restored process of every container made from this
      // snapshot shares the page cache's copy until it writes
      const fd = imageFd(target.pid, target.image);
      let at = pages.offset;
      for (const r of restorers) at = r.mapPages(fd, at);
      if (at !== pages.offset + pages.length) throw new SentryImageError('SENTRY_PAGES', 'the manifest lists other pages than the section holds');
    } else {
      await writePages(restorers, reader, pages);
    }
    trace('restore: pages written');
    for (const r of restorers) r.restoreState(pipes, sockets);
    trace('restore: process state set');
    for (const r of restorers) await r.seal();
    for (const r of restorers) r.release(stopped);
    done = true;
  } finally {
    if (!done) {
      // children first, each process's other threads before it, as in checkpointSentry
      for (const r of [...restorers].reverse()) {
        for (const th of r.threads) th.tracee.kill();
        r.tracee.kill();
      }
    }
  }
}

/** The fd of the init through which it holds `image` open (T_RESTORE_IMAGE); every process of the tree inherited it. */
function imageFd(pid: number, image: string): number {
  const want = statSync(image);
  for (const fd of readdirSync(`/proc/${pid}/fd`).map(Number)) {
    try {
      const st = statSync(`/proc/${pid}/fd/${fd}`);
      if (st.dev === want.dev && st.ino === want.ino) return fd;
    } catch {
      // closed meanwhile
    }
  }
  throw new SentryImageError('restore', `the new init does not hold ${image} open`);
}

/**
 * Makes `pid` the last pid the container's pid namespace gave out (its ns_last_pid), so the next
 * new task there gets `pid + 1`: written by a process in that namespace (nsenter), as only a
 * task of the namespace can (with CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE over it). Everything in
 * the container is stopped, so nothing takes the pid meanwhile.
 */
function setLastPid(init: number, pid: number): void {
  const r = spawnSync('nsenter', ['-t', String(init), '-p', '--', 'sh', '-c', `echo ${pid} > /proc/sys/kernel/ns_last_pid`], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new SentryImageError('restore', `cannot set the container's last pid to ${pid}: ${(r.stderr || r.error?.message || '').trim()}`);
}

/** Writes `data` into the pipe whose write end is fd `fd` of `pid` (sized to `capacity` first). */
function fillPipe(pid: number, fd: number, capacity: number, data: Buffer): void {
  const w = takeFd(pid, fd);
  try {
    if (k.fcntl(w, F_SETPIPE_SZ, capacity) < 0) throw new SentryImageError('pipes', `cannot size a pipe to ${capacity} bytes`);
    if (data.length > 0 && k.write(w, data, data.length) !== data.length) throw new SentryImageError('pipes', `cannot refill a pipe with ${data.length} bytes`);
  } finally {
    k.close(w);
  }
}

/** One process of the tree being restored: the seized stage it becomes. */
class ProcessRestorer {
  private scratch = 0n;
  /** The threads made again, with what they are restored to. */
  readonly threads: { tracee: Tracee; image: ProcessImage['threads'][number] }[] = [];
  private savedX = Buffer.alloc(0);
  private readonly where: string;

  constructor(
    private readonly m: SentryManifest,
    private readonly p: ProcessImage,
    private readonly host: number,
    readonly tracee: Tracee,
    private readonly target: RestoreTarget,
  ) {
    this.where = `processes[${m.processes.indexOf(p)}]`;
  }

  /** The limits the spec gave the stage (a restore may lower them, never raise them). */
  private specLimits = new Map<number, Rlimit>();

  /** Checks the host, clears the stage out and maps every region of the process. */
  rebuildMemory(): void {
    const { p, tracee: t, host } = this;
    for (let r = 0; r < 16; r++) this.specLimits.set(r, t.getRlimit(r));
    const stubX = t.getXstate();
    checkHost(this.m, stubX);
    this.savedX = Buffer.from(p.xstate, 'base64');
    if (this.savedX.length !== stubX.length) throw new SentryImageError(`${this.where}.xstate`, `${this.savedX.length} bytes, this host's FPU state has ${stubX.length}`);
    const status = readFileSync(`/proc/${host}/status`, 'utf8');
    const id = (key: string): number => Number(new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(status)?.[1] ?? -1);
    if (id('Uid') !== p.creds.uid || id('Gid') !== p.creds.gid) {
      throw new SentryImageError(`${this.where}.creds`, `the process ran as ${p.creds.uid}:${p.creds.gid}, the spec's user is ${id('Uid')}:${id('Gid')}`);
    }
    const stubMaps = parseMaps(readFileSync(`/proc/${host}/maps`, 'utf8'));
    const vdso = stubMaps.find((x) => x.name === '[vdso]');
    if (!vdso) throw new SentryImageError('restore', 'the new process has no vDSO');
    let insn = findSyscallInsn(t.read(vdso.start, Number(vdso.end - vdso.start)), vdso.start);
    t.useSyscallAt(insn);

    // the stage's rseq goes (the kernel would write into restored memory), a scratch area comes
    const rseq = t.rseq();
    if (rseq) t.call('rseq unregister', NR.rseq, [rseq.ptr, rseq.size, 1, rseq.signature]);
    const wanted = p.regions.map((r) => ({ start: BigInt(r.start), end: BigInt(r.end) }));
    const scratch = (this.scratch = freeRange([...wanted, ...stubMaps], BigInt(SCRATCH_SIZE)));
    t.call('mmap scratch', NR.mmap, [scratch, SCRATCH_SIZE, PROT.r | PROT.w, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0]);
    const keep = new Set<string>([...SPECIAL, '[vsyscall]']);
    for (const r of stubMaps) if (!keep.has(r.name)) t.call(`munmap ${r.name || 'anon'}`, NR.munmap, [r.start, r.end - r.start]);
    // the special mappings: first aside (a target may overlap one of them), then into place
    const specials = stubMaps.filter((x) => (SPECIAL as readonly string[]).includes(x.name));
    const moved = new Map<string, MapsLine>();
    let aside = freeRange([...wanted, ...specials, { start: scratch, end: scratch + BigInt(SCRATCH_SIZE) }], 0x100000n, scratch);
    for (const s of specials) {
      const size = s.end - s.start;
      t.call(`mremap ${s.name} aside`, NR.mremap, [s.start, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, aside]);
      if (s.name === '[vdso]') t.useSyscallAt((insn = aside + (insn - s.start)));
      moved.set(s.name, { ...s, start: aside, end: aside + size });
      aside += size;
    }
    for (const r of p.regions.filter((x) => x.kind === 'special')) {
      const s = moved.get(r.name!);
      const size = BigInt(r.end) - BigInt(r.start);
      if (!s || s.end - s.start !== size) throw new SentryImageError(`${this.where}.regions`, `${r.name} of ${size} bytes has no match on this host`);
      t.call(`mremap ${r.name}`, NR.mremap, [s.start, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, BigInt(r.start)]);
      if (r.name === '[vdso]') t.useSyscallAt((insn = BigInt(r.start) + (insn - s.start)));
      moved.delete(r.name!);
    }
    for (const [name, s] of moved) t.call(`munmap ${name}`, NR.munmap, [s.start, s.end - s.start]);

    // the regions, each mapped file opened once and checked against its size and mtime
    const opened = new Map<string, bigint>();
    try {
      for (const [i, r] of p.regions.entries()) {
        if (r.kind === 'special') continue;
        const start = BigInt(r.start);
        const len = BigInt(r.end) - start;
        const prot = protOf(r.perms);
        if (r.kind !== 'file') {
          t.call(`mmap ${r.start}`, NR.mmap, [start, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (r.kind === 'stack' ? MAP_GROWSDOWN : 0), -1, 0]);
          continue;
        }
        // a shared mapping is the file itself (opened for writing if it is mapped so); a private
        // one must find the file as it was, its unsaved pages coming from it
        const shared = r.perms[3] === 's';
        const rw = shared && r.perms[1] === 'w';
        const key = `${rw ? 'rw' : 'r'}:${r.name!}`;
        let fd = opened.get(key);
        if (fd === undefined) {
          fd = t.call(`open ${r.name}`, NR.openat, [AT_FDCWD, this.putString(r.name!), O_CLOEXEC | (rw ? O_RDWR : 0), 0]);
          opened.set(key, fd);
          const st = statSync(`/proc/${host}/fd/${fd}`, { bigint: true });
          if (!shared && (Number(st.size) !== r.file!.size || st.mtimeNs.toString() !== r.file!.mtimeNs)) {
            throw new SentryImageError(`${this.where}.regions[${i}]`, `${r.name} changed since the checkpoint (size or mtime differs)`);
          }
        }
        t.call(`mmap ${r.name}`, NR.mmap, [start, len, prot, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, BigInt(r.offset!)]);
      }
    } finally {
      for (const fd of opened.values()) t.inject(NR.close, [fd]);
    }
  }

  /**
   * Maps this process's saved pages from the image (fd `fd` in the process, pages from byte
   * `at`) over its regions, MAP_PRIVATE: a stack's are written instead (a file mapping would
   * end its growing down). Returns where the next process's pages start.
   */
  mapPages(fd: number, at: number): number {
    const t = this.tracee;
    for (const r of this.p.regions) {
      const start = BigInt(r.start);
      for (const [first, count] of r.runs) {
        const addr = start + BigInt(first * PAGE);
        const len = count * PAGE;
        if (r.kind === 'stack') {
          const pfd = openSync(`/proc/${this.host}/fd/${fd}`, 'r');
          try {
            const buf = Buffer.alloc(len);
            readSync(pfd, buf, 0, len, at);
            t.write(addr, buf);
          } finally {
            closeSync(pfd);
          }
        } else {
          t.call(`mmap pages at ${r.start}`, NR.mmap, [addr, len, protOf(r.perms), MAP_PRIVATE | MAP_FIXED, fd, at]);
        }
        at += len;
      }
    }
    return at;
  }

  /** Where each saved page of this process goes, in manifest order. */
  pageTargets(): { t: Tracee; addr: bigint; len: number }[] {
    const out: { t: Tracee; addr: bigint; len: number }[] = [];
    for (const r of this.p.regions) for (const [first, count] of r.runs) out.push({ t: this.tracee, addr: BigInt(r.start) + BigInt(first * PAGE), len: count * PAGE });
    return out;
  }

  private putString(s: string, at = 0): bigint {
    const b = Buffer.from(`${s}\0`);
    if (b.length > 8192) throw new SentryImageError('restore', 'a path is too long');
    this.tracee.write(this.scratch + BigInt(at), b);
    return this.scratch + BigInt(at);
  }

  /** The mm layout, handlers, name, rseq, robust list, fds, cwd, umask, personality, rlimits and mask. */
  restoreState(pipes: { r: number; w: number }[], sockets: { a: number; b?: number }[]): void {
    const { p, tracee: t, scratch } = this;
    const mm = p.mm;
    const auxv = Buffer.from(mm.auxv, 'base64');
    const map = Buffer.alloc(104);
    [mm.startCode, mm.endCode, mm.startData, mm.endData, mm.startBrk, mm.brk, mm.startStack, mm.argStart, mm.argEnd, mm.envStart, mm.envEnd]
      .forEach((v, i) => map.writeBigUInt64LE(BigInt(v), i * 8));
    map.writeBigUInt64LE(scratch + 4096n, 88);
    map.writeUInt32LE(auxv.length, 96);
    map.writeUInt32LE(0xffffffff, 100); // exe_fd: keep
    t.write(scratch + 4096n, auxv);
    t.write(scratch, map);
    t.call('prctl(PR_SET_MM_MAP)', NR.prctl, [PR_SET_MM, PR_SET_MM_MAP, scratch, 104, 0]);
    // moat-init left every action at the kernel's default: only the process's own are set
    for (const a of p.sigactions) {
      const b = Buffer.alloc(32);
      [a.handler, a.flags, a.restorer, a.mask].forEach((v, i) => b.writeBigUInt64LE(BigInt(v), i * 8));
      t.write(scratch, b);
      t.call(`rt_sigaction(${a.sig})`, NR.rt_sigaction, [a.sig, scratch, 0, 8]);
    }
    t.call('prctl(PR_SET_NAME)', NR.prctl, [PR_SET_NAME, this.putString(p.comm), 0, 0, 0]);
    if (p.rseq) t.call('rseq', NR.rseq, [BigInt(p.rseq.ptr), p.rseq.size, 0, p.rseq.signature]);
    if (p.robust.head !== '0x0') t.call('set_robust_list', NR.set_robust_list, [BigInt(p.robust.head), p.robust.len]);
    this.restoreFds(pipes, sockets);
    t.call(`chdir ${p.cwd}`, NR.chdir, [this.putString(p.cwd)]);
    t.inject(NR.umask, [p.umask]);
    if (p.personality !== 0) t.inject(NR.personality, [p.personality]);
    // the checkpoint's limits, but never above the spec's (an image cannot grant more)
    for (const l of p.rlimits) {
      const spec = this.specLimits.get(l.resource)!;
      const hard = BigInt(l.hard) < spec.hard ? BigInt(l.hard) : spec.hard;
      t.setRlimit({ resource: l.resource, soft: BigInt(l.soft) < hard ? BigInt(l.soft) : hard, hard });
    }
    t.setSigmask(BigInt(p.sigmask));
  }

  /**
   * Puts every checkpointed fd at its number: the ones the stage already holds (stdio from
   * outside, pipe ends) are first copied above every fd in use, then everything below is
   * closed, then each fd is put in place — a copy, or a file opened again inside the container
   * (with its flags, at its offset) — and the copies are closed.
   */
  private restoreFds(pipes: { r: number; w: number }[], sockets: { a: number; b?: number }[]): void {
    const { p, tracee: t, host } = this;
    const stubFds = readdirSync(`/proc/${host}/fd`).map(Number);
    const high = Math.max(0, ...stubFds, ...p.fds.map((f) => f.fd)) + 1;
    const need = high + p.fds.length + 1;
    const nofile = t.getRlimit(RLIMIT_NOFILE);
    if (nofile.soft < BigInt(need)) t.setRlimit({ resource: RLIMIT_NOFILE, soft: BigInt(need), hard: nofile.hard > BigInt(need) ? nofile.hard : BigInt(need) });
    const copies = new Map<number, bigint>();
    for (const f of p.fds) {
      const source = f.kind === 'external' ? f.stdio!
        : f.kind === 'pipe' ? (f.end === 'r' ? pipes[f.pipe!]!.r : pipes[f.pipe!]!.w)
        : f.kind === 'socket' ? (f.end === 'b' ? sockets[f.socket!]!.b! : sockets[f.socket!]!.a)
        : -1;
      if (source >= 0) copies.set(f.fd, t.call(`copy of fd ${source}`, NR.fcntl, [source, F_DUPFD_CLOEXEC, high]));
    }
    t.call('close_range (the stage\'s fds)', NR.close_range, [0, high - 1, 0]);
    for (const f of p.fds) {
      const copy = copies.get(f.fd);
      if (copy !== undefined) {
        t.call(`dup3 to fd ${f.fd}`, NR.dup3, [copy, f.fd, f.cloexec ? O_CLOEXEC : 0]);
        if (f.kind === 'pipe' || f.kind === 'socket') t.call(`fcntl(F_SETFL) fd ${f.fd}`, NR.fcntl, [f.fd, F_SETFL, f.flags]);
        continue;
      }
      const flags = (f.flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | (f.cloexec ? O_CLOEXEC : 0);
      const got = Number(t.call(`open fd ${f.fd} (${f.path})`, NR.openat, [AT_FDCWD, this.putString(f.path!), flags, 0]));
      if (got !== f.fd) {
        t.call(`dup3 to fd ${f.fd}`, NR.dup3, [got, f.fd, f.cloexec ? O_CLOEXEC : 0]);
        t.inject(NR.close, [got]);
      }
      if (f.pos > 0) t.call(`lseek fd ${f.fd}`, NR.lseek, [f.fd, f.pos, 0]);
    }
    t.call('close_range (the copies)', NR.close_range, [high, 0xffffffff, 0]);
  }

  /** Loads the sentry's filter and hands its notify fd to the sentry; the scratch area goes. */
  async seal(): Promise<void> {
    const { tracee: t, scratch, target } = this;
    t.call('prctl(PR_SET_DUMPABLE)', NR.prctl, [PR_SET_DUMPABLE, 1, 0, 0, 0]);
    if (target.filter.length % 8 !== 0 || target.filter.length > SCRATCH_SIZE - 8192) throw new SentryImageError('restore', 'the sentry filter does not fit');
    const prog = Buffer.alloc(16);
    prog.writeUInt16LE(target.filter.length / 8, 0);
    prog.writeBigUInt64LE(scratch + 8192n, 8);
    t.write(scratch + 8192n, target.filter);
    t.write(scratch, prog);
    const notify = t.call('seccomp (the sentry filter)', NR.seccomp, [SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, scratch]);
    await handOver(target.socket, this.host, Number(notify));
    t.call('close (notify fd)', NR.close, [notify]);
    // the threads, made now so that they share the filter; each gets its tid through ns_last_pid
    if (this.p.clearTid !== '0x0') t.call('set_tid_address', NR.set_tid_address, [BigInt(this.p.clearTid)]);
    if (this.p.threads.length > 0) t.traceClones();
    for (const th of this.p.threads) {
      const regs = new Regs(Buffer.from(th.regs, 'hex'));
      setLastPid(this.target.pid, th.tid - 1);
      const got = t.call(`clone (thread ${th.tid})`, NR.clone, [CLONE_THREAD_FLAGS, regs.get('rsp'), 0, BigInt(th.clearTid), regs.get('fs_base')]);
      const host = t.cloned.pop();
      if (host === undefined) throw new SentryImageError('restore', `thread ${th.tid}: the clone was not reported`);
      const tracee = Tracee.adopt(host);
      this.threads.push({ tracee, image: th });
      if (Number(got) !== th.tid) throw new SentryImageError(`${this.where}.threads`, `thread ${th.tid} came back as ${got} (another process took the tid)`);
      tracee.useSyscallAt(t.syscallAt());
      if (th.robust.head !== '0x0') tracee.call('set_robust_list', NR.set_robust_list, [BigInt(th.robust.head), th.robust.len]);
      if (th.rseq) tracee.call('rseq', NR.rseq, [BigInt(th.rseq.ptr), th.rseq.size, 0, th.rseq.signature]);
      tracee.call('prctl(PR_SET_NAME)', NR.prctl, [PR_SET_NAME, this.putString(th.comm), 0, 0, 0]);
    }
    t.call('munmap scratch', NR.munmap, [scratch, SCRATCH_SIZE]);
  }

  /** Sets the registers (a call it was stopped in runs again) and FPU state, and lets it go. */
  release(stopped: boolean): void {
    for (const { tracee, image } of this.threads) {
      const r = new Regs(Buffer.from(image.regs, 'hex'));
      restartCall(r);
      tracee.setRegs(r);
      tracee.setXstate(Buffer.from(image.xstate, 'base64'));
      tracee.setSigmask(BigInt(image.sigmask));
      tracee.detach(stopped ? 19 : 0);
    }
    const regs = new Regs(Buffer.from(this.p.regs, 'hex'));
    restartCall(regs);
    this.tracee.setRegs(regs);
    this.tracee.setXstate(this.savedX);
    this.tracee.detach(stopped ? 19 : 0); // SIGSTOP: a snapshot's container waits, restored, for `start` (SIGCONT)
  }
}

/**
 * Makes a system call the process was stopped in run again, as the kernel's signal code would
 * have: -ERESTARTSYS, -ERESTARTNOINTR and -ERESTARTNOHAND re-execute it; -ERESTART_RESTARTBLOCK
 * (a sleep's remaining time lived in the old kernel task) returns EINTR, which callers retry.
 */
export function restartCall(regs: Regs): void {
  const orig = regs.signed('orig_rax');
  const rax = regs.signed('rax');
  if (orig >= 0n) {
    if (rax === -512n || rax === -513n || rax === -514n) {
      regs.set('rax', orig);
      regs.set('rip', regs.get('rip') - 2n);
    } else if (rax === -516n) {
      regs.set('rax', -4n);
    }
  }
  regs.set('orig_rax', -1n);
}

/** Streams the SENTRY_PAGES section into the processes' regions, in manifest order. */
async function writePages(restorers: ProcessRestorer[], reader: ImageReader, pages: SectionInfo): Promise<void> {
  const targets = restorers.flatMap((r) => r.pageTargets());
  let ti = 0;
  let into = 0;
  for await (const chunk of reader.stream(pages, 1 << 20)) {
    let off = 0;
    while (off < chunk.length) {
      const tg = targets[ti];
      if (!tg) throw new SentryImageError('SENTRY_PAGES', 'more pages than the manifest lists');
      const n = Math.min(tg.len - into, chunk.length - off);
      tg.t.write(tg.addr + BigInt(into), chunk.subarray(off, off + n));
      off += n;
      into += n;
      if (into === tg.len) {
        ti++;
        into = 0;
      }
    }
  }
  if (ti !== targets.length) throw new SentryImageError('SENTRY_PAGES', 'fewer pages than the manifest lists');
}
