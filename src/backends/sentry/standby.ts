/**
 * The sentry's warm standby: an idle sentry process, already booted (Node, the sentry bundle,
 * its system-call bindings, its own seccomp confinement), waiting on a socket only its user can reach
 * for a `moat create` to hand it a sandbox. Claimed, it becomes that sandbox's sentry at once,
 * so a create skips the sentry's ~70 ms boot; the create then starts the next standby, off its
 * critical path. An unclaimed standby exits after STANDBY_IDLE_MS. MOAT_SENTRY_STANDBY=0 turns
 * it off.
 *
 * A standby serves only creates like the one that started it: the same installation (the
 * bundle file), user, capability bounding set and namespaces — they make its key, and its
 * socket and lock are named after it (one standby per key; the lock is held for its life). A
 * standby that starts removes the files that dead standbys of other keys left (their locks free).
 *
 * Protocol, one line of JSON each way on the standby's socket:
 *   create  -> {"pid": P, "fd": N, "config": {...}}   P: the create's pid; N: its listening
 *              socket for the sandbox (the standby copies it with pidfd_getfd); config: the
 *              sentry configuration without listenFd
 *   standby -> "ready PID STARTTIME" once it serves, or "error REASON"
 * The standby checks SO_PEERCRED (same uid, the pid the request names) and that fd N is a
 * listening socket, and answers "error taken" once another create claimed it. A create that
 * gets no answer in time kills the standby (it may hold the socket already) and starts a
 * sentry itself; a refusal leaves the standby alone.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { procStat } from '../../container/proc.js';
import * as k from '../../sys/kernel.js';
import { flock, LOCK_EX, LOCK_NB } from '../../sys/libc.js';
import type { SentryProcessConfig } from './main.js';

/** How long an unclaimed standby waits before it exits. */
export const STANDBY_IDLE_MS = 10 * 60_000;

/** Where the standby's socket lives, and which one it is. */
export interface StandbyPlace {
  dir: string;
  key: string;
}

/** What the standby is started with (JSON in argv). */
export interface StandbyArgs extends StandbyPlace {
  /** Room in argv for the process title the claimed sentry takes (its container id). */
  pad: string;
  /** The pid of the process that started it (a create), whose end reparents it. */
  spawner?: number;
}

/** A request to a standby (one line of JSON). */
export interface StandbyRequest {
  pid: number;
  fd: number;
  config: Omit<SentryProcessConfig, 'listenFd'>;
}

/**
 * Whether creates use (and start) standbys: not with MOAT_SENTRY_STANDBY=0, nor while a
 * profiling setting asks for a sentry started with particular flags.
 */
export function standbyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['MOAT_SENTRY_STANDBY'] !== '0' && !env['MOAT_SENTRY_PROFILE'] && !env['MOAT_SENTRY_NODE_FLAGS'] && !env['MOAT_SENTRY_CPU_PROF'];
}

/**
 * This user's standby directory (/run/moat-sentry-standby for root, else under
 * $XDG_RUNTIME_DIR), made mode 0700 if missing; null when there is none or it is not a
 * directory of this user that only this user can enter.
 */
export function standbyDir(): string | null {
  const euid = process.geteuid?.() ?? 0;
  const base = euid === 0 ? '/run' : process.env['XDG_RUNTIME_DIR'];
  if (!base) return null;
  const dir = join(base, 'moat-sentry-standby');
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return null;
  }
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === euid && (st.mode & 0o077) === 0 ? dir : null;
  } catch {
    return null;
  }
}

/**
 * The key of the standby that can serve a create here: the sentry bundle file (device, inode,
 * mtime), the user, the capability bounding set (null: rootless, no setpriv) and the caller's
 * namespaces (the standby runs in the ones of the create that started it).
 */
export function standbyKey(bundle: string, caps: readonly string[] | null): string {
  const st = statSync(bundle, { bigint: true });
  const ns = ['mnt', 'pid', 'net', 'user', 'cgroup', 'ipc', 'uts'].map((n) => {
    try {
      return readlinkSync(`/proc/self/ns/${n}`);
    } catch {
      return '-';
    }
  });
  const parts = [st.dev, st.ino, st.mtimeNs, process.geteuid?.() ?? 0, caps ? [...caps].sort().join(',') : 'rootless', ...ns];
  return createHash('sha256').update(parts.join('|')).digest('hex').slice(0, 24);
}

/** The standby's socket and lock files. */
export const standbyFiles = (p: StandbyPlace): { socket: string; lock: string } => ({
  socket: join(p.dir, `${p.key}.sock`),
  lock: join(p.dir, `${p.key}.lock`),
});

/** The bounding-set argument of setpriv for `caps` (lower-case names, no CAP_ prefix). */
export const boundingSet = (caps: readonly string[]): string => `-all${caps.map((c) => `,+${c}`).join('')}`;

/**
 * Starts a standby for `place` in the background (detached, no stdio, cwd /): with setpriv
 * and `caps` as its bounding set when `caps` is given, as for a sentry. A standby that finds
 * another one holding the key's lock exits at once.
 */
export function spawnStandby(node: string, moatCjs: string, place: StandbyPlace, caps: readonly string[] | null): void {
  // a standby of this key that holds its lock (booting, or waiting with its socket not yet
  // reached) makes another one pointless: it would boot Node only to exit
  if (lockHeld(standbyFiles(place).lock)) return;
  if (underAdopter(place.dir)) return;
  const arg: StandbyArgs = { ...place, pad: ' '.repeat(160), spawner: process.pid };
  const own = [moatCjs, '--sentry-standby', JSON.stringify(arg)];
  const [cmd, argv] = caps
    ? ['setpriv', ['--bounding-set', boundingSet(caps), '--inh-caps', '-all', '--no-new-privs', '--', node, ...own]]
    : [node, own];
  try {
    const child = spawn(cmd, argv, { detached: true, stdio: 'ignore', cwd: '/', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } });
    child.on('error', () => {}); // best effort: the next create starts its sentry itself
    child.unref();
  } catch {
    // as above
  }
}

/**
 * The file listing the programs that adopted a standby (one executable path per line): a
 * subreaper among a create's ancestors (conmon, a shim) becomes the parent of whatever the
 * create leaves behind, and conmon waits for every child before it exits, so a standby there
 * would keep it for the standby's whole life (and a claimed one, for its sandbox's).
 */
const adoptersFile = (dir: string): string => join(dir, 'adopters');

/** Whether one of this process's ancestors runs a program known to adopt standbys. */
function underAdopter(dir: string): boolean {
  let known: Set<string>;
  try {
    known = new Set(readFileSync(adoptersFile(dir), 'utf8').split('\n').filter(Boolean));
  } catch {
    return false; // none known
  }
  let pid = process.ppid;
  for (let hops = 0; pid > 1 && hops < 64; hops++) {
    try {
      if (known.has(readlinkSync(`/proc/${pid}/exe`))) return true;
    } catch {
      // a process this user may not look into: not one it started
    }
    const st = procStat(pid);
    if (st === undefined) return false;
    pid = st.ppid;
  }
  return false;
}

/** How long a new standby waits for the create that started it to end (ms). */
const SPAWNER_WAIT_MS = 2000;

/**
 * Run by a new standby first: once the create that started it has ended, whether it was
 * reparented to a subreaper rather than to pid 1. If so, the subreaper's program is added to
 * the adopters file (so that creates under it start no standby) and true is returned: the
 * standby should exit at once.
 */
export function adoptedStandby(args: StandbyArgs): boolean {
  const spawner = args.spawner;
  if (spawner === undefined) return false;
  const deadline = Date.now() + SPAWNER_WAIT_MS;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (process.ppid === spawner && Date.now() < deadline) Atomics.wait(nap, 0, 0, 1);
  const parent = process.ppid;
  if (parent === spawner || parent === 1) return false; // a long-lived spawner, or pid 1
  let exe: string;
  try {
    exe = readlinkSync(`/proc/${parent}/exe`);
  } catch {
    return true; // adopted all the same; unnamed, so not remembered
  }
  try {
    const listed = readFileSync(adoptersFile(args.dir), 'utf8').split('\n');
    if (listed.includes(exe)) return true;
  } catch {
    // the first one
  }
  try {
    appendFileSync(adoptersFile(args.dir), `${exe}\n`, { mode: 0o600 });
  } catch {
    // not remembered: the next create under it boots a standby that exits again
  }
  return true;
}

/** Whether another process holds the flock on `lock` (a missing or unopenable file: no). */
function lockHeld(lock: string): boolean {
  let fd: number;
  try {
    fd = openSync(lock, 'r');
  } catch {
    return false;
  }
  try {
    return !flock(fd, LOCK_EX | LOCK_NB, lock);
  } catch {
    return false;
  } finally {
    closeSync(fd); // closing drops the lock this probe may have taken
  }
}

/**
 * Hands a sandbox to the standby at `place`: resolves with the sentry (the standby's pid and
 * start time) once it serves, or undefined when there is no standby or it did not take the
 * sandbox (the caller then starts a sentry itself). A standby that took the request but did not
 * answer within `timeoutMs` is killed first (it may hold the listening socket).
 */
export function claimStandby(place: StandbyPlace, config: Omit<SentryProcessConfig, 'listenFd'>, listenFd: number, timeoutMs = 3000): Promise<{ pid: number; startTime: string } | undefined> {
  const { socket } = standbyFiles(place);
  return new Promise((resolve) => {
    let peer = 0;
    let settled = false;
    let buf = '';
    const sock = connect(socket);
    const done = (r: { pid: number; startTime: string } | undefined, killPeer = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (killPeer && peer > 0) {
        try {
          process.kill(peer, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined, true), timeoutMs);
    sock.once('connect', () => {
      const cred = k.peerCred(k.socketFd(sock));
      if (typeof cred === 'number' || cred.uid !== (process.geteuid?.() ?? 0)) {
        done(undefined); // not our standby: leave it alone and start a sentry here
        return;
      }
      peer = cred.pid;
      const req: StandbyRequest = { pid: process.pid, fd: listenFd, config };
      sock.write(`${JSON.stringify(req)}\n`);
    });
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 4096) done(undefined, true);
        return;
      }
      const line = buf.slice(0, nl);
      const m = /^ready (\d+) (\d*)$/.exec(line);
      if (m && Number(m[1]) === peer) done({ pid: peer, startTime: m[2]! });
      // a refusal took nothing (it may be another sandbox's sentry by now: leave it be); a
      // garbled answer comes from something broken that may hold the socket
      else done(undefined, !line.startsWith('error '));
    });
    // a standby that closed or reset the connection (it died, or was claimed before it
    // accepted this one) holds nothing of ours
    sock.once('error', () => done(undefined));
    sock.once('close', () => done(undefined));
  });
}
