/**
 * Renders the syscall table as docs/syscalls.json and docs/syscalls.md (written by
 * scripts/gen-syscalls.mjs; a unit test checks the committed files are up to date).
 */
import { EPERM, ENOSYS, SYSCALL_TABLE, fastCount, type ArgFilter, type SyscallClass, type SyscallEntry } from './table.js';
import type { SentryLevel } from './types.js';

const LEVELS: readonly SentryLevel[] = ['balanced', 'strict'];
const CLASSES: readonly SyscallClass[] = ['fast', 'served', 'refused'];
const ERRNO_NAMES: Readonly<Record<number, string>> = { [EPERM]: 'EPERM', [ENOSYS]: 'ENOSYS' };

/** One row of docs/syscalls.json. */
interface JsonRow {
  name: string;
  nr: number;
  class: SyscallClass;
  strict?: SyscallClass;
  family?: string;
  errno?: number;
  note: string;
}

/** The table as pretty JSON: `{name, nr, class, strict?, family?, errno?, note}` per syscall, `class` being the balanced one. */
export function syscallsJson(): string {
  const rows = SYSCALL_TABLE.map((e): JsonRow => {
    return {
      name: e.name,
      nr: e.nr,
      class: e.balanced,
      ...(e.strict !== e.balanced ? { strict: e.strict } : {}),
      ...(e.family !== undefined ? { family: e.family } : {}),
      ...(e.errno !== undefined ? { errno: e.errno } : {}),
      note: e.note,
    };
  });
  return `${JSON.stringify(rows, null, 2)}\n`;
}

/** A number as the docs show it: below 4096 in decimal (fcntl/prctl codes), others in hex (ioctl requests, masks). */
const num = (v: bigint): string => (v < 4096n ? v.toString() : `0x${v.toString(16)}`);

/** One argument filter in words. */
function filterWords(f: ArgFilter): string {
  const arg = `argument ${f.arg}`;
  switch (f.op) {
    case 'eq':
      return `${arg} is ${f.values.map(num).join('')}`;
    case 'masked_eq':
      return `${arg} & ${num(f.mask ?? 0n)} is ${f.values.map(num).join('')}`;
    case 'in':
      return `${arg} is one of ${f.values.map(num).join(', ')}`;
  }
}

/** A class cell: refused calls show their errno. */
function classCell(e: SyscallEntry, level: SentryLevel): string {
  const cls = e[level];
  if (cls === 'refused') return `refused (${ERRNO_NAMES[e.errno ?? ENOSYS] ?? `errno ${e.errno}`})`;
  if (cls === 'fast' && e.fastWhen !== undefined) return 'fast*';
  return cls;
}

const cell = (s: string): string => s.replace(/\|/g, '\\|');

/** The docs page: the classes and levels, counts, one row per syscall, and every fast-path filter in words. */
export function syscallsMarkdown(): string {
  const count = (level: SentryLevel, cls: SyscallClass) => SYSCALL_TABLE.filter((e) => e[level] === cls).length;
  const changed = (from: SyscallClass, to: SyscallClass) =>
    SYSCALL_TABLE.filter((e) => e.balanced === from && e.strict === to)
      .map((e) => `\`${e.name}\``)
      .join(', ');
  const out: string[] = [
    '# System calls under the sentry',
    '',
    '<!-- Generated from src/backends/sentry/table.ts by scripts/gen-syscalls.mjs; do not edit. -->',
    '',
    'The `sentry` backend runs the workload under a seccomp filter that puts every x86_64 system call in one of three',
    'classes. A **fast** call returns `SECCOMP_RET_ALLOW`: the host kernel runs it directly, because its effect is local to',
    "the caller's memory or to fds it already holds. A **served** call returns `SECCOMP_RET_USER_NOTIF`: the sentry handles",
    'it in its family\'s handler (file, socket, process, info, misc), answering with a value, an errno, an fd it opened, or',
    'by letting the kernel continue once the arguments are checked. A **refused** call also reaches the sentry, which logs',
    'it (the first ten of each name, then every thousandth) and answers the fixed errno of the table, never letting it',
    'continue: EPERM for privileged calls, ENOSYS for obsolete or unsupported ones (libc then falls back). i386 and x32',
    'system calls, and numbers not listed below, are refused in the kernel with ENOSYS (`SECCOMP_RET_ERRNO`).',
    '',
    'Two levels exist. `balanced` (the default) keeps common fd- and memory-local calls on the fast path; `strict` also',
    `serves ${changed('fast', 'served')}, and refuses ${changed('served', 'refused')}.`,
    'A class marked `fast*` is fast only when the call\'s arguments match one of the filters listed at the end; otherwise',
    'it is served.',
    '',
    '## Summary',
    '',
    '| class | balanced | strict |',
    '|---|---|---|',
    ...CLASSES.map((c) => `| ${c} | ${count('balanced', c)} | ${count('strict', c)} |`),
    `| total | ${SYSCALL_TABLE.length} | ${SYSCALL_TABLE.length} |`,
    '',
    `Fast calls (with or without filters): ${fastCount('balanced')} at balanced, ${fastCount('strict')} at strict.`,
    '',
    '## The network level (the microVM\'s VMM)',
    '',
    'A third level is internal: when a `microvm` container has `--allow-egress` rules, its VMM (QEMU, whose user-mode',
    'network, libslirp, opens a host socket for each guest connection) runs under the sentry at the `network` level, on',
    'top of its own jail and seccomp allowlist. The sentry creates the host sockets and checks every destination against',
    'the same rules as for a sentry workload; everything else runs directly.',
    `Served: ${SYSCALL_TABLE.filter((e) => e.network === 'served').map((e) => `\`${e.name}\``).join(', ')}.`,
    `Refused: ${SYSCALL_TABLE.filter((e) => e.network === 'refused').map((e) => `\`${e.name}\` (${ERRNO_NAMES[e.errno ?? ENOSYS] ?? e.errno})`).join(', ')}.`,
    ...SYSCALL_TABLE.filter((e) => e.networkFastWhen !== undefined).map(
      (e) => `Fast only when ${(e.networkFastWhen ?? []).map((alt) => alt.map(filterWords).join(' and ')).join('; or ')}: \`${e.name}\` (otherwise served).`,
    ),
    '',
    '## System calls',
    '',
    '| nr | name | balanced | strict | family | note |',
    '|---|---|---|---|---|---|',
    ...SYSCALL_TABLE.map(
      (e) =>
        `| ${e.nr} | \`${e.name}\` | ${classCell(e, 'balanced')} | ${classCell(e, 'strict')} | ${e.family ?? ''} | ${cell(e.note)} |`,
    ),
    '',
    '## Fast-path argument filters',
    '',
  ];
  for (const e of SYSCALL_TABLE) {
    if (e.fastWhen === undefined) continue;
    const levels = LEVELS.filter((l) => e[l] === 'fast');
    const when = e.fastWhen.map((alt) => alt.map(filterWords).join(' and ')).join('; or ');
    out.push(`- \`${e.name}\` (${levels.join(' and ')}): fast when ${when}; otherwise served (${e.family ?? 'misc'}).`);
  }
  out.push('');
  return out.join('\n');
}
