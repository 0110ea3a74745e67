/**
 * uname(2), sysinfo(2) and times(2) as the sandbox sees them: its hostname and the sentry's kernel
 * release, its memory, uptime and process count (the same view as /proc/meminfo, /proc/uptime and
 * /proc/loadavg, see view.ts), and clock ticks counted from the sandbox's boot.
 */
import { E } from '../../sys/kernel.js';
import { readProcFile } from './task.js';
import { fail, ok, type HandlerTable, type Reply, type Sandbox, type Task } from './types.js';
import { RELEASE, UTS_VERSION, memory, uptime, usage } from './view.js';

/** Size of one field of struct utsname (__NEW_UTS_LEN + 1). */
const UTS_FIELD = 65;
/** Size of struct utsname (six fields). */
export const UTSNAME_SIZE = 6 * UTS_FIELD;
/** Size of the x86_64 struct sysinfo. */
export const SYSINFO_SIZE = 112;

/** The sandbox's struct utsname: sysname, nodename, release, version, machine, domainname. */
export function utsname(sb: Sandbox): Buffer {
  const b = Buffer.alloc(UTSNAME_SIZE);
  const fields = ['Linux', sb.hostname, RELEASE, UTS_VERSION, 'x86_64', '(none)'];
  fields.forEach((s, i) => Buffer.from(s, 'utf8').subarray(0, UTS_FIELD - 1).copy(b, i * UTS_FIELD));
  return b;
}

/** The sandbox's struct sysinfo (mem_unit 1, no swap, no high memory, load averages 0). */
export function sysinfoStruct(sb: Sandbox): Buffer {
  const u = usage(sb);
  const m = memory(sb, u);
  const b = Buffer.alloc(SYSINFO_SIZE);
  b.writeBigInt64LE(BigInt(Math.floor(uptime(sb))), 0);
  // loads[3] at 8, 16, 24 stay 0, as /proc/loadavg says.
  b.writeBigUInt64LE(BigInt(m.total), 32);
  b.writeBigUInt64LE(BigInt(m.free), 40);
  // sharedram 48, bufferram 56, totalswap 64, freeswap 72: 0.
  b.writeUInt16LE(Math.min(0xffff, u.threads), 80);
  // totalhigh 88, freehigh 96: 0.
  b.writeUInt32LE(1, 104);
  return b;
}

/** Writes `data` to the task's buffer at argument 0: 0, or EFAULT. */
function answer(t: Task, data: Buffer): Reply {
  const addr = t.num(0);
  if (addr <= 0) return fail(E.EFAULT);
  return t.write(addr, data) ? ok(0) : fail(E.EFAULT);
}

/** Clock ticks per second (USER_HZ), the unit of times(2) and /proc/PID/stat. */
const USER_HZ = 100;

/**
 * times(2): the caller's and its waited-for children's CPU times, as the kernel keeps them
 * (/proc/TID/stat is the whole thread group's), and as its result the clock ticks since the
 * sandbox booted, not since the host did (the same clock as /proc/uptime and sysinfo).
 */
function times(t: Task, sb: Sandbox): Reply {
  const ticks = Math.floor(uptime(sb) * USER_HZ);
  const addr = t.num(0);
  if (addr === 0) return t.valid() ? ok(ticks) : fail(E.ESRCH);
  const stat = readProcFile(`/proc/${t.tid}/stat`);
  // the fields after "(comm)" start at field 3 (state); utime, stime, cutime, cstime are 14-17
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (f.length < 15) return fail(E.ESRCH);
  const tms = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) tms.writeBigInt64LE(BigInt(f[11 + i]!), 8 * i);
  return t.write(addr, tms) ? ok(ticks) : fail(E.EFAULT);
}

/** The uname, sysinfo and times handlers. */
export const handlers: HandlerTable = {
  uname: (t, sb) => answer(t, utsname(sb)),
  sysinfo: (t, sb) => answer(t, sysinfoStruct(sb)),
  times,
};
