/**
 * The file-system identity the sentry acts with: the caller's.
 *
 * The sentry resolves, opens, creates and changes files for the workload. Done with the sentry's
 * own credentials (root), a workload running as uid 1000 read /etc/shadow, removed root's files
 * and created files owned by root. So before a served call of the file or socket family, the
 * serving thread takes on the caller's file-system identity, as the kernel would check it: its
 * fsuid, fsgid and supplementary groups, and of its effective capabilities the file-system ones
 * (CAP_FS_MASK: chown, dac_override, dac_read_search, fowner, fsetid, linux_immutable, mknod,
 * mac_override), as far as the sentry holds them. setfsuid, setfsgid, the raw setgroups and
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
import type { Task } from './types.js';

/** Capability bits of CAP_FS_MASK (plus linux_immutable), low and high 32-bit words. */
const FS_LO = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 9) | (1 << 27);
const FS_HI = 1 << 0; // CAP_MAC_OVERRIDE (32)
const CAP_SETGID = 6;
const CAP_SETUID = 7;
const CAP_V3 = 0x20080522;
/** How long a kept identity is trusted before /proc is read again (see the module comment). */
const REVALIDATE_MS = 10;
/** How many thread ids are kept. */
const MAX_KEPT = 1024;

/** A file-system identity: what the kernel checks a path operation against. */
export interface Ident {
  fsuid: number;
  fsgid: number;
  groups: number[];
  /** File-system capabilities in effect, low and high words (only CAP_FS_MASK bits). */
  fsCaps: [number, number];
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

const keyOf = (id: Ident): string => `${id.fsuid}/${id.fsgid}/${id.groups.join(',')}/${id.fsCaps[0]}.${id.fsCaps[1]}`;

/** The hex capability field `name` of a status file as (low, high) words. */
function capField(status: string, name: string): [number, number] {
  const m = new RegExp(`\\n${name}:\\s*([0-9a-f]+)`).exec(status);
  const v = m ? BigInt(`0x${m[1]}`) : 0n;
  return [Number(v & 0xffffffffn), Number(v >> 32n)];
}

/** Parses a /proc status file into a file-system identity and the thread group id; null if unreadable. */
export function identOf(status: string): { id: Ident; tgid: number } | null {
  const uid = statusIds(status, 'Uid');
  const gid = statusIds(status, 'Gid');
  if (uid.length < 4 || gid.length < 4) return null;
  const eff = capField(status, 'CapEff');
  return {
    id: { fsuid: uid[3]!, fsgid: gid[3]!, groups: statusIds(status, 'Groups'), fsCaps: [(eff[0] & FS_LO) >>> 0, (eff[1] & FS_HI) >>> 0] },
    tgid: statusIds(status, 'Tgid')[0] ?? 0,
  };
}

/** The calling thread's own credentials (call on the sentry's main thread before any switch). */
export function ownCreds(): OwnCreds {
  const status = readProcFile('/proc/thread-self/status');
  const parsed = identOf(status);
  const eff = capField(status, 'CapEff');
  return {
    ...(parsed?.id ?? { fsuid: 0, fsgid: 0, groups: [], fsCaps: [0, 0] }),
    eff,
    perm: capField(status, 'CapPrm'),
    inh: capField(status, 'CapInh'),
  };
}

/** One thread's switching between callers' identities (see the module comment). */
export class Identities {
  /** Whether switching is possible: the sentry runs as root with CAP_SETUID and CAP_SETGID. */
  readonly enabled: boolean;
  private readonly kept = new Map<number, { id: Ident; key: string; tgid: number; at: number }>();
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
    if (!this.enabled) return;
    const now = performance.now();
    let e = this.kept.get(t.tid);
    if (e === undefined || now - e.at > REVALIDATE_MS) {
      const parsed = identOf(readProcFile(`/proc/${t.tid}/status`));
      if (parsed === null) return; // the caller is gone: whatever is done next fails on its notification
      this.kept.delete(t.tid);
      if (this.kept.size >= MAX_KEPT) this.kept.delete(this.kept.keys().next().value!);
      e = { id: parsed.id, key: keyOf(parsed.id), tgid: parsed.tgid, at: now };
      this.kept.set(t.tid, e);
    }
    this.become(e.id, e.key);
  }

  /** Runs `fn` with the sentry's own identity (its scratch trees are root's), then acts as before. */
  asSentry<T>(fn: () => T): T {
    if (!this.enabled || this.current === this.ownKey) return fn();
    const before = this.current;
    const prior = this.currentId;
    this.become(this.own, this.ownKey);
    try {
      return fn();
    } finally {
      if (prior) this.become(prior, before);
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
    let rc = k.setgroupsThread(id.groups);
    if (rc < 0) throw new IdentitySwitchError(`setgroups(${id.groups.join(',')})`, -rc);
    k.setfsgid(id.fsgid);
    if (k.setfsgid(-1) !== id.fsgid) throw new IdentitySwitchError(`setfsgid(${id.fsgid})`, k.E.EPERM);
    k.setfsuid(id.fsuid);
    if (k.setfsuid(-1) !== id.fsuid) throw new IdentitySwitchError(`setfsuid(${id.fsuid})`, k.E.EPERM);
    // setfsuid dropped (to non-zero) or raised (to 0) the file-system capabilities: set them
    // exactly, as far as the sentry's permitted set goes; the others stay the sentry's own
    const o = this.own;
    const eff0 = ((o.eff[0] & ~FS_LO) | (id.fsCaps[0] & o.perm[0])) >>> 0;
    const eff1 = ((o.eff[1] & ~FS_HI) | (id.fsCaps[1] & o.perm[1])) >>> 0;
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
