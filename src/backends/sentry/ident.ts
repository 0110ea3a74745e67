/**
 * The identity the sentry acts with: the caller's.
 *
 * The sentry resolves, opens, creates and changes files, and binds and connects sockets, for the
 * workload. Done with the sentry's own credentials (root), a workload running as uid 1000 read
 * /etc/shadow, removed root's files, created files owned by root, bound port 80, and reached a
 * unix socket's server as uid 0 (SO_PEERCRED records the connecting thread's euid). So before a
 * served call of the file or socket family, the serving thread takes on the caller's identity
 * as the kernel would check it: effective and file-system uid and gid, supplementary groups,
 * and effective capabilities, as far as the sentry holds them. It keeps its real and saved uid 0,
 * and CAP_SYS_PTRACE, CAP_SETUID, CAP_SETGID and CAP_SYS_NICE in effect: what it needs to reach
 * the caller's memory and fds, to switch again and to keep an fd hand-over on one CPU (pin.ts);
 * none of them is checked by the calls it makes as the caller (credentials in control messages
 * are refused, sys_socket.ts). The raw setresuid, setresgid, setfsuid, setfsgid, setgroups and
 * capset act on the calling thread only, so each thread (the serving thread, each worker)
 * switches by itself, and only when the caller's identity differs from the one it has.
 *
 * A caller's identity comes from /proc/TID/status and is kept per thread id. It is read again
 * after the thread makes a call that may change its credentials (the setuid family, setgroups,
 * capset: all served; execve, which may run a set-id program, forgets its whole thread group),
 * and when the kept copy is older than REVALIDATE_MS: a thread id is reused only after the
 * kernel's cyclic allocator went round the whole pid space, which no sandbox does that fast.
 */
import * as k from '../../sys/kernel.js';
import { readProcFile, statusIds } from './task.js';
import type { Sandbox, Task } from './types.js';

const CAP_SETGID = 6;
const CAP_SETUID = 7;
const CAP_SYS_PTRACE = 19;
const CAP_SYS_NICE = 23;
/** The capabilities the sentry keeps in effect whoever it acts as (low word; none in the high one). */
const KEEP_LO = (1 << CAP_SETGID) | (1 << CAP_SETUID) | (1 << CAP_SYS_PTRACE) | (1 << CAP_SYS_NICE);
const CAP_V3 = 0x20080522;
/** How long a kept identity is trusted before /proc is read again (see the module comment). */
const REVALIDATE_MS = 10;
/** How many thread ids are kept. */
const MAX_KEPT = 1024;

/** An identity: what the kernel checks a file or socket operation against. */
export interface Ident {
  euid: number;
  egid: number;
  fsuid: number;
  fsgid: number;
  groups: number[];
  /** Effective capabilities, low and high words. */
  caps: [number, number];
}

/** The sentry's own credentials, captured on its main thread before any switch (workers get a copy). */
export interface OwnCreds extends Ident {
  /** Effective, permitted and inheritable capability words (low, high each). */
  eff: [number, number];
  perm: [number, number];
  inh: [number, number];
}

/** Thrown when a thread cannot take on a caller's identity (the call is then refused). */
export class IdentitySwitchError extends Error {
  constructor(what: string, errno: number) {
    super(`sentry: cannot act as the caller: ${what} failed (errno ${errno})`);
    this.name = 'IdentitySwitchError';
  }
}

const keyOf = (id: Ident): string => `${id.euid}/${id.egid}/${id.fsuid}/${id.fsgid}/${id.groups.join(',')}/${id.caps[0]}.${id.caps[1]}`;

/** The hex capability field `name` of a status file as (low, high) words. */
function capField(status: string, name: string): [number, number] {
  const m = new RegExp(`\\n${name}:\\s*([0-9a-f]+)`).exec(status);
  const v = m ? BigInt(`0x${m[1]}`) : 0n;
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

/**
 * Parses a /proc status file into a file-system identity, the identity access(2) checks with
 * and the thread group id; null if unreadable. access(2) (faccessat without AT_EACCESS) checks
 * with the real uid and gid as file-system ids, and with no capabilities unless the real uid is
 * 0, then with the permitted ones (the kernel's access_override_creds).
 */
export function identOf(status: string): { id: Ident; access: Ident; tgid: number } | null {
  const uid = statusIds(status, 'Uid');
  const gid = statusIds(status, 'Gid');
  if (uid.length < 4 || gid.length < 4) return null;
  const id: Ident = { euid: uid[1]!, egid: gid[1]!, fsuid: uid[3]!, fsgid: gid[3]!, groups: statusIds(status, 'Groups'), caps: capField(status, 'CapEff') };
  return {
    id,
    access: { ...id, fsuid: uid[0]!, fsgid: gid[0]!, caps: uid[0] === 0 ? capField(status, 'CapPrm') : [0, 0] },
    tgid: statusIds(status, 'Tgid')[0] ?? 0,
  };
}

/** The calling thread's own credentials (call on the sentry's main thread before any switch). */
export function ownCreds(): OwnCreds {
  const status = readProcFile('/proc/thread-self/status');
  const parsed = identOf(status);
  const eff = capField(status, 'CapEff');
  return {
    ...(parsed?.id ?? { euid: 0, egid: 0, fsuid: 0, fsgid: 0, groups: [], caps: eff }),
    eff,
    perm: capField(status, 'CapPrm'),
    inh: capField(status, 'CapInh'),
  };
}

/** One thread's switching between callers' identities (see the module comment). */
export class Identities {
  /** Whether switching is possible: the sentry runs as root with CAP_SETUID and CAP_SETGID. */
  readonly enabled: boolean;
  private readonly kept = new Map<number, { id: Ident; key: string; access: Ident; accessKey: string; tgid: number; at: number }>();
  private readonly ownKey: string;
  /** The key of the identity this thread has now; '?' when unknown (a thread that may have inherited a switch). */
  private current: string;
  /** The identity this thread has now, when known. */
  private currentId: Ident | null;
  private readonly hdr = Buffer.alloc(8);
  private readonly data = Buffer.alloc(24);

  constructor(
    private readonly own: OwnCreds,
    fresh = true,
  ) {
    this.enabled = own.fsuid === 0 && (own.eff[0] & (1 << CAP_SETUID)) !== 0 && (own.eff[0] & (1 << CAP_SETGID)) !== 0;
    this.ownKey = keyOf(own);
    this.current = fresh ? this.ownKey : '?';
    this.currentId = fresh ? own : null;
  }

  /** Makes this thread act with the file-system identity of `t`'s thread. */
  actAs(t: Task): void {
    const e = this.identityOf(t);
    if (e) this.become(e.id, e.key);
  }

  /** Makes this thread act with the identity access(2) of `t`'s thread checks with (its real ids). */
  actAsForAccess(t: Task): void {
    const e = this.identityOf(t);
    if (e) this.become(e.access, e.accessKey);
  }

  /** The kept identities of `t`'s thread (read again when stale); undefined if switching is off or the caller is gone. */
  private identityOf(t: Task): { id: Ident; key: string; access: Ident; accessKey: string } | undefined {
    if (!this.enabled) return undefined;
    const now = performance.now();
    let e = this.kept.get(t.tid);
    if (e === undefined || now - e.at > REVALIDATE_MS) {
      const parsed = identOf(readProcFile(`/proc/${t.tid}/status`));
      if (parsed === null) return undefined; // the caller is gone: whatever is done next fails on its notification
      this.kept.delete(t.tid);
      if (this.kept.size >= MAX_KEPT) this.kept.delete(this.kept.keys().next().value!);
      e = { id: parsed.id, key: keyOf(parsed.id), access: parsed.access, accessKey: keyOf(parsed.access), tgid: parsed.tgid, at: now };
      this.kept.set(t.tid, e);
    }
    return e;
  }

  /** Runs `fn` with the sentry's own identity (its scratch trees are root's), then acts as before. */
  asSentry<T>(fn: () => T): T {
    if (!this.enabled || this.current === this.ownKey) return fn();
    return this.during(this.own, this.ownKey, fn);
  }

  /**
   * Runs `fn` with the sentry's own identity but file-system ids `uid` and `gid`, then acts as
   * before: for host /proc entries only their owner may read (a non-root workload's fd directory
   * and environ), which the sentry, holding no DAC capability the workload lacks, cannot.
   */
  asOwner<T>(uid: number, gid: number, fn: () => T): T {
    if (!this.enabled || (uid === this.own.fsuid && gid === this.own.fsgid)) return this.asSentry(fn);
    const id: Ident = { ...this.own, fsuid: uid, fsgid: gid };
    return this.during(id, keyOf(id), fn);
  }

  /** Runs `fn` with the file-system identity of `t`'s thread (as actAs), then acts as before. */
  asCaller<T>(t: Task, fn: () => T): T {
    const e = this.identityOf(t);
    if (e === undefined || e.key === this.current) return fn();
    return this.during(e.id, e.key, fn);
  }

  /** Runs `fn` acting as `id`, then as before (as the sentry, if what came before is unknown). */
  private during<T>(id: Ident, key: string, fn: () => T): T {
    const before = this.current;
    const prior = this.currentId;
    this.become(id, key);
    try {
      return fn();
    } finally {
      if (prior) this.become(prior, before);
      else this.become(this.own, this.ownKey);
    }
  }

  /** Forgets thread `tid`'s identity (it made a call that may change its credentials). */
  forget(tid: number): void {
    this.kept.delete(tid);
  }

  /** Forgets every thread of group `tgid` (an execve: the group's credentials may change). */
  forgetGroup(tgid: number): void {
    for (const [tid, e] of this.kept) if (e.tgid === tgid || tid === tgid) this.kept.delete(tid);
  }

  private become(id: Ident, key: string): void {
    if (key === this.current) return;
    this.current = '?';
    this.currentId = null;
    // groups and gids first, while CAP_SETGID is in effect; then the uids (an effective uid
    // leaving 0 clears the effective capabilities, one coming back to 0 restores the permitted)
    let rc = k.setgroupsThread(id.groups);
    if (rc < 0) throw new IdentitySwitchError(`setgroups(${id.groups.join(',')})`, -rc);
    rc = k.setresgidThread(-1, id.egid, -1);
    if (rc < 0) throw new IdentitySwitchError(`setresgid(-1, ${id.egid}, -1)`, -rc);
    k.setfsgid(id.fsgid);
    if (k.setfsgid(-1) !== id.fsgid) throw new IdentitySwitchError(`setfsgid(${id.fsgid})`, k.E.EPERM);
    rc = k.setresuidThread(-1, id.euid, -1);
    if (rc < 0) throw new IdentitySwitchError(`setresuid(-1, ${id.euid}, -1)`, -rc);
    k.setfsuid(id.fsuid);
    if (k.setfsuid(-1) !== id.fsuid) throw new IdentitySwitchError(`setfsuid(${id.fsuid})`, k.E.EPERM);
    // the caller's effective capabilities as far as the sentry's permitted set goes, and the
    // sentry's own tools (KEEP_LO)
    const o = this.own;
    const eff0 = ((id.caps[0] & o.perm[0]) | (o.eff[0] & KEEP_LO)) >>> 0;
    const eff1 = (id.caps[1] & o.perm[1]) >>> 0;
    this.hdr.writeUInt32LE(CAP_V3, 0);
    this.hdr.writeInt32LE(0, 4);
    this.data.writeUInt32LE(eff0, 0);
    this.data.writeUInt32LE(o.perm[0] >>> 0, 4);
    this.data.writeUInt32LE(o.inh[0] >>> 0, 8);
    this.data.writeUInt32LE(eff1, 12);
    this.data.writeUInt32LE(o.perm[1] >>> 0, 16);
    this.data.writeUInt32LE(o.inh[1] >>> 0, 20);
    rc = k.capset(this.hdr, this.data);
    if (rc < 0) throw new IdentitySwitchError('capset', -rc);
    this.current = key;
    this.currentId = id;
  }
}

/** Calls after which a thread's credentials may have changed (served, so the sentry sees them). */
const CRED_CALLS = new Set(['setuid', 'setgid', 'setreuid', 'setregid', 'setresuid', 'setresgid', 'setfsuid', 'setfsgid', 'setgroups', 'capset']);

/**
 * Before a handler runs: forgets identities a credential-changing call may change, and makes
 * the thread act as the caller for the families that touch files on its behalf (file, socket).
 */
export function identityFor(ids: Identities | undefined, entry: { name: string; family?: string | undefined }, t: Task): void {
  if (ids === undefined || !ids.enabled) return;
  if (CRED_CALLS.has(entry.name)) ids.forget(t.tid);
  else if (entry.name === 'execve' || entry.name === 'execveat') ids.forgetGroup(t.tgid);
  if (entry.family === 'file' || entry.family === 'socket') ids.actAs(t);
}

/**
 * Runs `fn` with the sentry's own identity on this thread when the sandbox view switches
 * identities (for the sentry's own trees and watches, which check the caller's rights themselves
 * or need none), else just runs it.
 */
export function asSentry<T>(sb: Sandbox, fn: () => T): T {
  return sb.ids ? sb.ids.asSentry(fn) : fn();
}
