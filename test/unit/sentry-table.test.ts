import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { syscallsJson, syscallsMarkdown } from '../../src/backends/sentry/docs.js';
import { handlerFor } from '../../src/backends/sentry/core.js';
import { buildSentryFilter, classify } from '../../src/backends/sentry/filter.js';
import { FAMILIES } from '../../src/backends/sentry/main.js';
import { ENOSYS, EPERM, SYSCALL_TABLE, entryByName, entryByNr, fastCount, fastWhenAt, type ArgFilter } from '../../src/backends/sentry/table.js';
import type { SentryLevel } from '../../src/backends/sentry/types.js';
import {
  BPF_INSN_SIZE,
  BPF_MAXINSNS,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_USER_NOTIF,
  describeAction,
  runFilter,
} from '../../src/seccomp/bpf.js';
import { AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, syscallNames, syscallNumber } from '../../src/seccomp/syscalls.js';

/** The levels a user chooses (the workload's); `network` is the microVM's VMM's, tested apart. */
const LEVELS: readonly SentryLevel[] = ['balanced', 'strict'];
const ALL_LEVELS: readonly SentryLevel[] = [...LEVELS, 'network'];
const FILTERS: Readonly<Record<SentryLevel, Buffer>> = {
  balanced: buildSentryFilter('balanced'),
  strict: buildSentryFilter('strict'),
  network: buildSentryFilter('network'),
};
const ERRNO = (e: number) => (SECCOMP_RET_ERRNO | e) >>> 0;

/** Runs the level's filter on one x86_64 call. */
const run = (level: SentryLevel, nr: number, args: bigint[] = [], arch = AUDIT_ARCH_X86_64) =>
  runFilter(FILTERS[level], { nr, arch, args });

/** What the filter must return, from classify() and the table's errno. */
function expected(level: SentryLevel, nr: number, args: bigint[]): number {
  switch (classify(level, nr, args)) {
    case 'fast':
      return SECCOMP_RET_ALLOW;
    case 'served':
      return SECCOMP_RET_USER_NOTIF;
    case 'refused':
      return entryByNr(nr) === undefined ? ERRNO(ENOSYS) : SECCOMP_RET_USER_NOTIF;
  }
}

/** Syscalls that take a path (or a unix socket / mqueue name) the sentry must resolve. */
const PATH_SYSCALLS = [
  'open', 'openat', 'openat2', 'creat', 'stat', 'lstat', 'newfstatat', 'statx', 'access', 'faccessat', 'faccessat2',
  'readlink', 'readlinkat', 'mkdir', 'mkdirat', 'mknod', 'mknodat', 'unlink', 'unlinkat', 'rmdir', 'rename', 'renameat',
  'renameat2', 'link', 'linkat', 'symlink', 'symlinkat', 'chmod', 'fchmodat', 'fchmodat2', 'chown', 'lchown', 'fchownat',
  'utime', 'utimes', 'futimesat', 'utimensat', 'truncate', 'statfs', 'chdir', 'chroot', 'execve', 'execveat', 'getxattr',
  'lgetxattr', 'setxattr', 'lsetxattr', 'listxattr', 'llistxattr', 'removexattr', 'lremovexattr', 'setxattrat',
  'getxattrat', 'listxattrat', 'removexattrat', 'inotify_add_watch', 'fanotify_mark', 'name_to_handle_at', 'mount',
  'umount2', 'pivot_root', 'swapon', 'swapoff', 'acct', 'quotactl', 'uselib', 'bind', 'connect', 'sendto', 'sendmsg',
  'mq_open', 'mq_unlink', 'open_tree', 'open_tree_attr', 'move_mount', 'fspick', 'file_getattr', 'file_setattr',
];

/** A small deterministic PRNG of 64-bit values (xorshift64*). */
function prng(seed: bigint): () => bigint {
  let s = seed;
  return () => {
    s ^= s >> 12n;
    s ^= (s << 25n) & 0xffffffffffffffffn;
    s ^= s >> 27n;
    return (s * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn;
  };
}

/** Argument vectors that satisfy (and nearly satisfy) every alternative of a fastWhen. */
function matchingArgs(alts: readonly ArgFilter[][], rnd: () => bigint): bigint[][] {
  const out: bigint[][] = [];
  for (const alt of alts) {
    const width = Math.max(...alt.map((f) => f.values.length));
    for (let i = 0; i < width; i++) {
      const args = [rnd(), rnd(), rnd(), rnd(), rnd(), rnd()];
      for (const f of alt) {
        const v = f.values[i % f.values.length] ?? 0n;
        // masked_eq: keep the random bits outside the mask
        args[f.arg] = f.op === 'masked_eq' ? (args[f.arg]! & ~(f.mask ?? 0n)) | v : v;
      }
      out.push(args);
      // near misses: the high word set, or the value off by one
      for (const f of alt) {
        out.push(args.map((a, j) => (j === f.arg ? a | (1n << 40n) : a)));
        out.push(args.map((a, j) => (j === f.arg ? a ^ 1n : a)));
      }
    }
  }
  return out;
}

/** The repository root: the nearest directory with a package.json above this file (or the cwd). */
function repoRoot(): string {
  for (const start of [dirname(fileURLToPath(import.meta.url)), process.cwd()]) {
    for (let dir = start; ; dir = dirname(dir)) {
      if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'src/backends/sentry'))) return dir;
      if (dirname(dir) === dir) break;
    }
  }
  throw new Error('repository root (package.json) not found');
}

test('the table lists every x86_64 syscall exactly once, with its number, sorted', () => {
  const names = syscallNames('x86_64');
  assert.deepEqual([...SYSCALL_TABLE.map((e) => e.name)].sort(), [...names].sort());
  assert.equal(new Set(SYSCALL_TABLE.map((e) => e.name)).size, SYSCALL_TABLE.length);
  for (const e of SYSCALL_TABLE) {
    assert.equal(e.nr, syscallNumber('x86_64', e.name), e.name);
    assert.equal(entryByName(e.name), e);
    assert.equal(entryByNr(e.nr), e);
    assert.ok(e.note.length > 0 && !e.note.includes('\n'), `${e.name}: one-line note`);
  }
  for (let i = 1; i < SYSCALL_TABLE.length; i++) assert.ok(SYSCALL_TABLE[i - 1]!.nr < SYSCALL_TABLE[i]!.nr);
  assert.equal(entryByNr(512), undefined, 'x32-only entries are not in the table');
});

test('served calls have a family, refused ones an errno', () => {
  for (const e of SYSCALL_TABLE) {
    for (const level of LEVELS) {
      if (e[level] === 'served') assert.ok(e.family, `${e.name} served at ${level} without a family`);
      if (e[level] === 'refused') assert.ok(e.errno === EPERM || e.errno === ENOSYS, `${e.name}: errno`);
    }
    if (e.fastWhen) assert.ok(e.family, `${e.name} has fastWhen without a family`);
  }
});

test('every call the sentry can be asked to serve has a handler (no ENOSYS by omission)', () => {
  const missing: string[] = [];
  for (const e of SYSCALL_TABLE) {
    const servable = LEVELS.some((l) => e[l] === 'served') || e.network === 'served' || e.fastWhen !== undefined || e.networkFastWhen !== undefined;
    if (servable && !handlerFor(FAMILIES, e)) missing.push(`${e.name} (${e.family ?? 'no family'})`);
  }
  assert.deepEqual(missing, [], 'served calls whose family table (or misc) has no handler');
});

test('at most 80 syscalls are fast per level', () => {
  for (const level of LEVELS) {
    const n = SYSCALL_TABLE.filter((e) => e[level] === 'fast').length;
    assert.equal(fastCount(level), n);
    assert.ok(n <= 80, `${level}: ${n} fast syscalls`);
  }
  assert.ok(fastCount('strict') <= fastCount('balanced'));
});

test('no path-based syscall is fast', () => {
  for (const name of PATH_SYSCALLS) {
    const e = entryByName(name);
    assert.ok(e, name);
    for (const level of LEVELS) assert.notEqual(e[level], 'fast', `${name} is fast at ${level}`);
    assert.equal(e.fastWhen, undefined, name);
  }
});

test('strict serves at least what balanced serves', () => {
  const rank = { fast: 0, served: 1, refused: 2 } as const;
  for (const e of SYSCALL_TABLE) assert.ok(rank[e.strict] >= rank[e.balanced], e.name);
  for (const name of ['ioctl', 'getdents64', 'fcntl']) assert.equal(entryByName(name)?.strict, 'served', name);
  assert.equal(entryByName('mmap')?.strict, 'fast');
});

test('docs/syscalls.md and docs/syscalls.json are up to date', () => {
  const root = repoRoot();
  const hint = 'regenerate them: npx tsc -p tsconfig.json && node scripts/gen-syscalls.mjs';
  const read = (f: string) => (existsSync(join(root, f)) ? readFileSync(join(root, f), 'utf8') : '');
  assert.ok(read('docs/syscalls.md') === syscallsMarkdown(), `docs/syscalls.md is stale; ${hint}`);
  assert.ok(read('docs/syscalls.json') === syscallsJson(), `docs/syscalls.json is stale; ${hint}`);
});

test('the filter fits in BPF_MAXINSNS', () => {
  for (const level of ALL_LEVELS) {
    const n = FILTERS[level].length / BPF_INSN_SIZE;
    assert.ok(n > 0 && n < BPF_MAXINSNS, `${level}: ${n} instructions`);
  }
});

test('the BPF filter agrees with classify() for every syscall number 0..500', () => {
  const rnd = prng(0x9e3779b97f4a7c15n);
  for (const level of ALL_LEVELS) {
    for (let nr = 0; nr <= 500; nr++) {
      const vectors: bigint[][] = [[], [0n, 0n, 0n, 0n, 0n, 0n]];
      for (let i = 0; i < 4; i++) vectors.push([rnd(), rnd(), rnd(), rnd(), rnd(), rnd()]);
      vectors.push([rnd() & 0xffffn, rnd() & 0xffffffffn, 0n, 0n, 0n, 0n]);
      const e = entryByNr(nr);
      const when = e ? fastWhenAt(e, level) : undefined;
      if (when) vectors.push(...matchingArgs(when, rnd));
      for (const args of vectors) {
        const got = run(level, nr, args);
        const want = expected(level, nr, args);
        assert.equal(
          describeAction(got),
          describeAction(want),
          `${level} nr ${nr} (${e?.name ?? 'unassigned'}) args [${args.map((a) => `0x${a.toString(16)}`).join(', ')}]`,
        );
      }
    }
  }
});

test('fastWhen values take the fast path where the call is fast', () => {
  const rnd = prng(42n);
  for (const e of SYSCALL_TABLE) {
    if (!e.fastWhen) continue;
    const args = matchingArgs(e.fastWhen, rnd)[0]!;
    for (const level of LEVELS) {
      assert.equal(classify(level, e.nr, args), e[level] === 'fast' ? 'fast' : e[level], `${e.name} at ${level}`);
    }
  }
});

test('i386, x32 and unknown numbers get ERRNO(ENOSYS)', () => {
  for (const level of ALL_LEVELS) {
    for (const nr of [0, 1, 2, 11, 56, 165, 435, 512, 547]) {
      assert.equal(run(level, (nr | X32_SYSCALL_BIT) >>> 0), ERRNO(ENOSYS), `x32 ${nr}`);
      assert.equal(run(level, nr, [], AUDIT_ARCH_I386), ERRNO(ENOSYS), `i386 ${nr}`);
    }
    for (const nr of [337, 423, 471, 1000, 0x3fffffff, 0xffffffff]) assert.equal(run(level, nr), ERRNO(ENOSYS), `nr ${nr}`);
  }
});

test('clone: threads and processes are fast, new namespaces and tracing are served', () => {
  const clone = syscallNumber('x86_64', 'clone')!;
  // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID, as glibc's pthread_create
  const thread = 0x3d0f00n;
  for (const level of LEVELS) {
    assert.equal(run(level, clone, [thread]), SECCOMP_RET_ALLOW);
    assert.equal(run(level, clone, [thread | (1n << 40n)]), SECCOMP_RET_ALLOW, 'high bits are ignored by the kernel');
    // served, a fork interrupted by a signal while the sentry answered returned EINTR
    assert.equal(run(level, clone, [0x01200011n]), SECCOMP_RET_ALLOW, 'fork: CHILD_SETTID|CHILD_CLEARTID|SIGCHLD, as glibc\'s fork');
    assert.equal(run(level, clone, [0x4111n]), SECCOMP_RET_ALLOW, 'posix_spawn: CLONE_VM|CLONE_VFORK|SIGCHLD');
    assert.equal(run(level, clone, [thread | 0x10000000n]), SECCOMP_RET_USER_NOTIF, 'CLONE_NEWUSER');
    assert.equal(run(level, clone, [17n | 0x40000000n]), SECCOMP_RET_USER_NOTIF, 'CLONE_NEWNET');
    assert.equal(run(level, clone, [17n | 0x2000n]), SECCOMP_RET_USER_NOTIF, 'CLONE_PTRACE');
    assert.equal(run(level, clone, [17n | 0x00800000n]), SECCOMP_RET_USER_NOTIF, 'CLONE_UNTRACED');
  }
});

test('ioctl: listed requests are fast at balanced, others served', () => {
  const ioctl = syscallNumber('x86_64', 'ioctl')!;
  assert.equal(run('balanced', ioctl, [0n, 0x5401n]), SECCOMP_RET_ALLOW, 'TCGETS');
  assert.equal(run('balanced', ioctl, [3n, 0x80045430n]), SECCOMP_RET_ALLOW, 'TIOCGPTN');
  assert.equal(run('balanced', ioctl, [0n, 0x5412n]), SECCOMP_RET_USER_NOTIF, 'TIOCSTI');
  assert.equal(run('balanced', ioctl, [0n, 0x1_0000_5401n]), SECCOMP_RET_USER_NOTIF, 'high word set');
  assert.equal(run('strict', ioctl, [0n, 0x5401n]), SECCOMP_RET_USER_NOTIF, 'strict serves every ioctl');
});

test('other fast-path filters', () => {
  const nr = (name: string) => syscallNumber('x86_64', name)!;
  assert.equal(run('balanced', nr('prlimit64'), [0n, 7n, 0n, 0x1000n]), SECCOMP_RET_ALLOW, 'get own limit');
  assert.equal(run('balanced', nr('prlimit64'), [0n, 7n, 0x1000n, 0n]), SECCOMP_RET_USER_NOTIF, 'set a limit');
  assert.equal(run('balanced', nr('prlimit64'), [123n, 7n, 0n, 0x1000n]), SECCOMP_RET_USER_NOTIF, 'another pid');
  assert.equal(run('balanced', nr('fcntl'), [3n, 1030n]), SECCOMP_RET_ALLOW, 'F_DUPFD_CLOEXEC');
  assert.equal(run('balanced', nr('fcntl'), [3n, 8n]), SECCOMP_RET_USER_NOTIF, 'F_SETOWN');
  assert.equal(run('balanced', nr('prctl'), [15n]), SECCOMP_RET_ALLOW, 'PR_SET_NAME');
  assert.equal(run('balanced', nr('prctl'), [4n, 1n]), SECCOMP_RET_USER_NOTIF, 'PR_SET_DUMPABLE');
  for (const level of LEVELS) {
    // arch_prctl (once or twice per program start) is served; the fd-to-fd copies are fast at balanced
    assert.equal(run(level, nr('arch_prctl'), [0x1002n]), SECCOMP_RET_USER_NOTIF, 'ARCH_SET_FS');
    assert.equal(run(level, nr('mmap'), [0n, 4096n, 7n, 0x22n, 0xffffffffffffffffn, 0n]), SECCOMP_RET_ALLOW, 'PROT_EXEC');
    for (const copy of ['sendfile', 'copy_file_range']) {
      assert.equal(run(level, nr(copy), [4n, 3n, 0n, 4096n]), level === 'balanced' ? SECCOMP_RET_ALLOW : SECCOMP_RET_USER_NOTIF, `${copy} at ${level}`);
    }
  }
});

test('refused calls go to the sentry (which logs them); the table says EPERM for privileged ones, ENOSYS for io_uring', () => {
  for (const level of LEVELS) {
    assert.equal(run(level, syscallNumber('x86_64', 'mount')!), SECCOMP_RET_USER_NOTIF);
    assert.equal(entryByName('mount')?.errno, EPERM);
    assert.equal(entryByName('bpf')?.errno, EPERM);
    assert.equal(entryByName('io_uring_setup')?.errno, ENOSYS);
    assert.equal(run(level, syscallNumber('x86_64', 'openat')!), SECCOMP_RET_USER_NOTIF);
    assert.equal(run(level, syscallNumber('x86_64', 'read')!), SECCOMP_RET_ALLOW);
  }
});

test('the network level (the microVM VMM): only socket creation and destinations are served, io_uring refused', () => {
  const nr = (name: string) => syscallNumber('x86_64', name)!;
  const served = SYSCALL_TABLE.filter((e) => e.network === 'served').map((e) => e.name).sort();
  assert.deepEqual(served, ['bind', 'connect', 'listen', 'sendmmsg', 'sendmsg', 'setsockopt', 'socket']);
  for (const e of SYSCALL_TABLE) if (e.network === 'served') assert.equal(e.family, 'socket', e.name);
  assert.deepEqual(SYSCALL_TABLE.filter((e) => e.network === 'refused').map((e) => e.name), ['io_uring_setup', 'io_uring_enter', 'io_uring_register']);
  assert.equal(run('network', nr('sendto'), [5n, 0x1000n, 10n, 0n, 0n, 0n]), SECCOMP_RET_ALLOW, 'send on a connected socket');
  assert.equal(run('network', nr('sendto'), [5n, 0x1000n, 10n, 0n, 0x2000n, 16n]), SECCOMP_RET_USER_NOTIF, 'sendto a destination');
  assert.equal(run('network', nr('sendmsg'), [5n, 0x1000n, 0n]), SECCOMP_RET_USER_NOTIF, 'msg_name is in memory: always served');
  assert.equal(run('network', nr('io_uring_setup')), SECCOMP_RET_USER_NOTIF, 'refused through the sentry (ENOSYS)');
  for (const name of ['openat', 'execve', 'read', 'recvfrom', 'recvmsg', 'accept4', 'seccomp', 'ioctl', 'ppoll']) {
    assert.equal(run('network', nr(name), [3n, 0x5412n, 0n, 0n, 0n, 0n]), SECCOMP_RET_ALLOW, name);
  }
  assert.equal(run('network', nr('clone'), [17n | 0x40000000n]), SECCOMP_RET_ALLOW, 'the VMM jail\'s own filter decides namespaces');
});
