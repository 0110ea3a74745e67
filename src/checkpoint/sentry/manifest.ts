/**
 * The MANIFEST of a sentry checkpoint: what the checkpointer recorded of each process (registers,
 * memory layout, fds, signal state) and of the host it ran on. The restore side trusts none of
 * it: `parseSentryManifest` checks every field's shape and bounds, and `checkLayout` that the
 * memory regions and page runs are sane and add up to the SENTRY_PAGES section's length.
 */
import { z } from 'zod';
import { MoatError } from '../../errors.js';

/** A sentry checkpoint image that is malformed or cannot be restored here. */
export class SentryImageError extends MoatError {
  constructor(readonly where: string, detail: string) {
    super(`sentry checkpoint image: ${where}: ${detail}`);
  }
}

/** Page size of x86_64. */
export const PAGE = 4096;
/** Highest user address of x86_64 with 4-level paging (TASK_SIZE). */
export const TASK_SIZE = 0x7ffffffff000n;
/** Special mappings the kernel makes; they are moved, never recreated. */
export const SPECIAL = ['[vvar]', '[vvar_vclock]', '[vdso]'] as const;

const hex = z.string().regex(/^0x[0-9a-f]{1,16}$/, 'a hex number like 0x7f00');
const path = z.string().min(1).max(4096).regex(/^\/[^\0]*$/, 'an absolute path without NUL');

const region = z.object({
  start: hex,
  end: hex,
  /** "rwxp" as /proc/PID/maps writes it (s: a shared mapping, only of a file, with no saved pages). */
  perms: z.string().regex(/^[r-][w-][x-][ps]$/),
  kind: z.enum(['anon', 'stack', 'file', 'special']),
  /** special: its name; file: the path inside the container. */
  name: z.string().max(4096).optional(),
  offset: hex.optional(),
  /** file: size and mtime (ns) when checkpointed, checked again on restore. */
  file: z.object({ size: z.number().int().nonnegative(), mtimeNs: z.string().regex(/^\d{1,24}$/) }).optional(),
  /** Runs of saved pages: [first page index in the region, page count]. */
  runs: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().positive()])).max(1 << 20),
}).strict();

const fdEntry = z.object({
  fd: z.number().int().min(0).max((1 << 20) - 1),
  /**
   * file: reopened by path inside the container; external: the init's stdio from outside (fd
   * `stdio` of the restoring runtime); pipe: end `end` (r, w) of the tree's pipe number `pipe`;
   * socket: end `end` (a, b; l for a listener) of the tree's unix socket number `socket`.
   */
  kind: z.enum(['file', 'external', 'pipe', 'socket']),
  socket: z.number().int().min(0).max(511).optional(),
  path: path.optional(),
  stdio: z.number().int().min(0).max(2).optional(),
  pipe: z.number().int().min(0).max(511).optional(),
  end: z.enum(['r', 'w', 'a', 'b', 'l']).optional(),
  /** open(2) flags as fdinfo shows them (O_CLOEXEC apart). */
  flags: z.number().int().nonnegative(),
  cloexec: z.boolean(),
  pos: z.number().int().nonnegative(),
}).strict();

const sigaction = z.object({
  sig: z.number().int().min(1).max(64),
  handler: hex,
  flags: hex,
  restorer: hex,
  mask: hex,
}).strict();

/** A thread of a process other than its first: its own registers and thread-local kernel state. */
const threadImage = z.object({
  tid: z.number().int().min(2).max(4194304),
  comm: z.string().max(64),
  regs: z.string().regex(/^[0-9a-f]{432}$/),
  xstate: z.string().max(32768),
  sigmask: hex,
  rseq: z.object({ ptr: hex, size: z.number().int().min(20).max(4096), signature: z.number().int().nonnegative() }).strict().nullable(),
  robust: z.object({ head: hex, len: z.number().int().nonnegative().max(4096) }).strict(),
  /** clear_child_tid: where the kernel writes 0 (and wakes a futex) when the thread ends; 0x0 for none. */
  clearTid: hex,
}).strict();

const processImage = z.object({
  pid: z.number().int().positive(),
  /** The first thread's clear_child_tid. */
  clearTid: hex,
  threads: z.array(threadImage).max(1024),
  comm: z.string().max(64),
  /** struct user_regs_struct, hex. */
  regs: z.string().regex(/^[0-9a-f]{432}$/),
  /** The XSAVE area, base64. */
  xstate: z.string().max(32768),
  sigmask: hex,
  sigactions: z.array(sigaction).max(64),
  rseq: z.object({ ptr: hex, size: z.number().int().min(20).max(4096), signature: z.number().int().nonnegative() }).strict().nullable(),
  robust: z.object({ head: hex, len: z.number().int().nonnegative().max(4096) }).strict(),
  mm: z.object({
    startCode: hex, endCode: hex, startData: hex, endData: hex, startBrk: hex, brk: hex, startStack: hex,
    argStart: hex, argEnd: hex, envStart: hex, envEnd: hex,
    /** The auxiliary vector, base64 (at most 64 pairs). */
    auxv: z.string().max(1400),
  }).strict(),
  regions: z.array(region).max(65536),
  fds: z.array(fdEntry).max(65536),
  cwd: path,
  umask: z.number().int().min(0).max(0o777),
  personality: z.number().int().nonnegative(),
  creds: z.object({ uid: z.number().int().nonnegative(), gid: z.number().int().nonnegative() }).strict(),
  rlimits: z.array(z.object({ resource: z.number().int().min(0).max(15), soft: hex, hard: hex }).strict()).max(16),
}).strict();

const manifest = z.object({
  kind: z.literal('moat-checkpoint'),
  version: z.literal(1),
  backend: z.literal('sentry'),
  id: z.string().max(1024),
  created: z.string().max(64),
  host: z.object({
    kernel: z.string().max(256),
    /** /proc/cpuinfo flags of the host (a restore needs all of them). */
    cpuFlags: z.array(z.string().max(64)).max(1024),
    /** XCR0: the XSAVE features the saved FPU state uses. */
    xfeatures: hex,
  }).strict(),
  level: z.enum(['strict', 'balanced']),
  /** Every process of the container (pids in its pid namespace), parents before children; zombies with their wait status. */
  tree: z.array(z.object({
    pid: z.number().int().min(1).max(4194304),
    ppid: z.number().int().min(0).max(4194304),
    /** 0: a group or session from outside the container (kept as inherited). */
    pgid: z.number().int().min(0).max(4194304),
    sid: z.number().int().min(0).max(4194304),
    zombie: z.number().int().min(0).max(0xffff).optional(),
  }).strict()).min(1).max(4096),
  /** The pipes between processes of the tree: capacity and the bytes in them. */
  pipes: z.array(z.object({ capacity: z.number().int().min(4096).max(1 << 20), data: z.string().max(1_400_000) }).strict()).max(512),
  /**
   * The unix sockets of the tree: connected pairs (with the messages waiting at end a and at end
   * b, base64; a stream's bytes are one message) or listeners bound to a path in the container.
   */
  sockets: z.array(z.object({
    type: z.enum(['stream', 'dgram', 'seqpacket']),
    listen: z.object({
      path: path.max(107),
      backlog: z.number().int().min(0).max(65535),
      uid: z.number().int().nonnegative(),
      gid: z.number().int().nonnegative(),
      mode: z.number().int().min(0).max(0o7777),
    }).strict().optional(),
    queued: z.tuple([z.array(z.string().max(1_400_000)).max(1024), z.array(z.string().max(1_400_000)).max(1024)]).optional(),
  }).strict()).max(512),
  /** Whether a SENTRY_FS section holds the overlay's upper layer. */
  fs: z.boolean(),
  /** Taken of the embedded default (the host root read-only): it is restored as one (its written files are not in the image). */
  embedded: z.boolean(),
  processes: z.array(processImage).min(1).max(4096),
  spec: z.record(z.string(), z.unknown()),
}).strict();

/** One memory region of a checkpointed process. */
export type RegionImage = z.infer<typeof region>;
/** One fd of a checkpointed process. */
export type FdImage = z.infer<typeof fdEntry>;
/** One checkpointed process. */
export type ProcessImage = z.infer<typeof processImage>;
/** The MANIFEST section of a sentry checkpoint. */
export type SentryManifest = z.infer<typeof manifest>;

/**
 * Checks the tree and the fds against it: pid 1 first, unique pids, every parent a live
 * process listed before its child, one process image per live process, fds of a kind with
 * their fields (a pipe that exists, a stdio number, an absolute path).
 */
export function checkTree(m: SentryManifest): void {
  const seen = new Map<number, boolean>();
  m.tree.forEach((n, i) => {
    const at = `manifest.tree[${i}]`;
    if (i === 0 ? n.pid !== 1 || n.ppid !== 0 || n.zombie !== undefined : n.pid === 1) throw new SentryImageError(at, 'the tree must start with the live pid 1, and only there');
    if (seen.has(n.pid)) throw new SentryImageError(at, `pid ${n.pid} appears twice`);
    if (i > 0 && seen.get(n.ppid) !== true) throw new SentryImageError(at, `the parent ${n.ppid} of pid ${n.pid} is not a live process listed before it`);
    seen.set(n.pid, n.zombie === undefined);
  });
  const live = [...seen].filter(([, l]) => l).map(([p]) => p).sort((a, b) => a - b);
  const imaged = m.processes.map((p) => p.pid).sort((a, b) => a - b);
  const tids = new Set<number>(seen.keys());
  m.processes.forEach((p, i) => p.threads.forEach((t, j) => {
    if (tids.has(t.tid)) throw new SentryImageError(`manifest.processes[${i}].threads[${j}]`, `tid ${t.tid} is used twice`);
    tids.add(t.tid);
  }));
  if (live.join() !== imaged.join()) throw new SentryImageError('manifest.processes', `images for pids ${imaged.join(', ')}, the tree's live processes are ${live.join(', ')}`);
  m.processes.forEach((p, i) => p.fds.forEach((f, j) => {
    const at = `manifest.processes[${i}].fds[${j}]`;
    const sock = f.socket === undefined ? undefined : m.sockets[f.socket];
    const ok = f.kind === 'file' ? f.path !== undefined
      : f.kind === 'external' ? f.stdio !== undefined
      : f.kind === 'pipe' ? f.pipe !== undefined && f.pipe < m.pipes.length && (f.end === 'r' || f.end === 'w')
      : sock !== undefined && (sock.listen ? f.end === 'l' : f.end === 'a' || f.end === 'b');
    const needs = { file: 'path', external: 'stdio number', pipe: 'pipe and end', socket: 'socket and end' }[f.kind];
    if (!ok) throw new SentryImageError(at, `a ${f.kind} fd without its ${needs}`);
  }));
  m.pipes.forEach((pp, i) => {
    if (Buffer.from(pp.data, 'base64').length > pp.capacity) throw new SentryImageError(`manifest.pipes[${i}]`, 'holds more than its capacity');
  });
}

/** `0x...` of a bigint. */
export const toHex = (v: bigint): string => `0x${v.toString(16)}`;

/** Parses and checks a sentry MANIFEST; every problem is a SentryImageError naming the field. */
export function parseSentryManifest(raw: unknown): SentryManifest {
  const r = manifest.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new SentryImageError(`manifest.${issue.path.join('.')}`, issue.message);
  }
  return r.data;
}

/**
 * Checks one process's memory layout: regions page-aligned, ordered, disjoint and below
 * TASK_SIZE; runs inside their region, ordered and disjoint. Returns the number of saved pages,
 * which the SENTRY_PAGES section must hold exactly.
 */
export function checkLayout(p: ProcessImage, where: string): number {
  let pages = 0;
  let prevEnd = 0n;
  p.regions.forEach((r, i) => {
    const at = `${where}.regions[${i}]`;
    const start = BigInt(r.start);
    const end = BigInt(r.end);
    if (start % BigInt(PAGE) !== 0n || end % BigInt(PAGE) !== 0n) throw new SentryImageError(at, 'not page-aligned');
    if (start >= end || end > TASK_SIZE) throw new SentryImageError(at, `${r.start}-${r.end} is not a user address range`);
    if (start < prevEnd) throw new SentryImageError(at, 'overlaps the region before it or is out of order');
    prevEnd = end;
    if (r.kind === 'file' && (r.name === undefined || !r.name.startsWith('/') || r.offset === undefined || r.file === undefined)) {
      throw new SentryImageError(at, 'a file mapping needs an absolute path, an offset and the file\'s size and mtime');
    }
    if (r.kind === 'special' && !(SPECIAL as readonly string[]).includes(r.name ?? '')) throw new SentryImageError(at, `unknown special mapping ${String(r.name)}`);
    if (r.kind === 'special' && r.runs.length > 0) throw new SentryImageError(at, 'a special mapping has no saved pages');
    if (r.perms[3] === 's' && (r.kind !== 'file' || r.runs.length > 0)) throw new SentryImageError(at, 'a shared mapping is of a file, with no saved pages');
    const npages = Number((end - start) / BigInt(PAGE));
    let next = 0;
    for (const [first, count] of r.runs) {
      if (first < next || first + count > npages) throw new SentryImageError(at, `page run [${first}, ${count}] is outside the region or out of order`);
      next = first + count;
      pages += count;
    }
  });
  return pages;
}
