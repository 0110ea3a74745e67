/**
 * The shim's warm standby: one idle shim daemon per Moat installation, already booted (Node,
 * Moat's bundle, protobuf types, the libc bindings), waiting on a root-only control socket for
 * a `start` to claim it. Claimed, it becomes the new sandbox's shim at once — it binds the
 * sandbox's ttrpc socket, takes the bundle as its working directory and containerd's
 * environment — so the sandbox skips the daemon's ~100 ms boot. Each shim keeps one standby
 * ready for the next sandbox (started a moment after it serves, off the critical path); an
 * unclaimed standby exits after STANDBY_IDLE_MS. MOAT_SHIM_STANDBY=0 in containerd's
 * environment turns it off.
 *
 * Control protocol (one exchange per standby): `start` sends one JSON line
 * {"flags": ShimFlags, "cwd": string, "env": {...}}; the standby answers {"pid": N} once it
 * listens on flags.socket, or {"error": "..."}; then it closes the control socket for good.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, openSync, unlinkSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { flock, LOCK_EX, LOCK_NB } from '../sys/libc.js';
import { SOCKET_DIR } from './flags.js';
import type { ShimFlags } from './flags.js';

/** How long an unclaimed standby waits before it exits. */
export const STANDBY_IDLE_MS = 10 * 60_000;

/** What `start` hands a standby. */
export interface Claim {
  flags: ShimFlags;
  cwd: string;
  env: Record<string, string>;
}

/** Whether the standby is enabled in this environment. */
export function standbyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['MOAT_SHIM_STANDBY'] !== '0';
}

/** The control socket of the standby of the installation whose daemon script is `daemon`. */
export function standbyPath(daemon: string): string {
  return `${SOCKET_DIR}/moat-standby-${createHash('sha256').update(daemon).digest('hex').slice(0, 16)}`;
}

/**
 * Asks the installation's standby to become the shim described by `claim`; resolves with its
 * pid, or undefined when there is no standby or it did not answer in time (then `start` starts
 * a daemon the slow way).
 */
export function claimStandby(daemon: string, claim: Claim, timeoutMs = 2000): Promise<number | undefined> {
  const path = standbyPath(daemon);
  if (!existsSync(path)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const sock = connect(path);
    let buf = '';
    const done = (pid: number | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.once('connect', () => sock.write(`${JSON.stringify(claim)}\n`));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const r = JSON.parse(buf.slice(0, nl)) as { pid?: unknown };
        done(typeof r.pid === 'number' && r.pid > 0 ? r.pid : undefined);
      } catch {
        done(undefined);
      }
    });
    sock.once('error', () => done(undefined));
    sock.once('close', () => done(undefined));
  });
}

/** Parses and checks a claim line from the control socket. */
export function parseClaim(line: string): Claim {
  const v = JSON.parse(line) as Partial<Claim>;
  const f = v.flags as Partial<ShimFlags> | undefined;
  const str = (x: unknown): x is string => typeof x === 'string';
  if (!f || !str(f.namespace) || !str(f.id) || !str(f.address) || !str(f.publishBinary) || !str(f.socket) || typeof f.debug !== 'boolean') {
    throw new Error('claim: flags must name namespace, id, address, publishBinary, socket and debug');
  }
  if (!str(v.cwd) || !v.cwd.startsWith('/')) throw new Error('claim: cwd must be an absolute path');
  const env: Record<string, string> = {};
  for (const [k, val] of Object.entries(v.env ?? {})) if (str(val)) env[k] = val;
  return { flags: f as ShimFlags, cwd: v.cwd, env };
}

/**
 * Waits on the control socket for one claim; resolves with it and the connection to answer on.
 * Resolves undefined when another standby already serves this installation, or after the idle
 * timeout.
 */
export async function awaitClaim(daemon: string): Promise<{ claim: Claim; reply: (msg: object) => void } | undefined> {
  const path = standbyPath(daemon);
  if (existsSync(path)) {
    const alive = await new Promise<boolean>((res) => {
      const s = connect(path);
      // a live standby would take this connection as a claim: close at once, without a line
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (alive) return undefined;
    try {
      unlinkSync(path);
    } catch {
      // raced with another standby's clean-up
    }
  }
  return new Promise((resolve) => {
    const server = createServer();
    const idle = setTimeout(() => {
      server.close();
      resolve(undefined);
    }, STANDBY_IDLE_MS);
    server.on('connection', (sock: Socket) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > 1 << 20) sock.destroy();
          return;
        }
        let claim: Claim;
        try {
          claim = parseClaim(buf.slice(0, nl));
        } catch (e) {
          sock.end(`${JSON.stringify({ error: (e as Error).message })}\n`);
          return;
        }
        clearTimeout(idle);
        server.close(); // one claim per standby: the next start finds none, or the next standby
        resolve({ claim, reply: (msg) => sock.end(`${JSON.stringify(msg)}\n`) });
      });
      sock.on('error', () => {});
    });
    server.once('error', () => {
      clearTimeout(idle);
      resolve(undefined); // another standby bound the path first
    });
    server.listen(path, () => chmodSync(path, 0o600));
  });
}

/**
 * Takes the installation's standby lock (an flock on `<control socket>.lock`) without waiting:
 * a standby holds it from its first moment until it is claimed, so a second one is never
 * started while one boots. Returns the fd holding it, or undefined when someone holds it.
 */
export function standbyLock(daemon: string): number | undefined {
  const fd = openSync(`${standbyPath(daemon)}.lock`, 'w', 0o600);
  if (flock(fd, LOCK_EX | LOCK_NB, 'the shim standby lock')) return fd;
  closeSync(fd);
  return undefined;
}

/** Starts a standby for the installation unless one is booting or waiting; resolves once decided, never rejects. */
export function ensureStandby(daemon: string): Promise<void> {
  if (!standbyEnabled() || !daemon) return Promise.resolve();
  try {
    const free = standbyLock(daemon);
    if (free === undefined) return Promise.resolve(); // a standby holds the lock
    closeSync(free); // released for the new standby to take
  } catch {
    // no lock file possible: start one anyway; a duplicate finds the control socket taken and exits
  }
  return new Promise((resolve) => {
    try {
      const child = spawn(process.execPath, [daemon, 'standby'], { detached: true, stdio: 'ignore', cwd: '/', env: process.env });
      child.once('error', () => resolve());
      child.once('spawn', () => resolve());
      child.unref();
    } catch {
      resolve(); // the next start pays the boot itself
    }
  });
}
