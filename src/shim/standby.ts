/**
 * The shim's warm standby: one idle shim daemon per Moat installation, already booted (Node,
 * Moat's bundle, protobuf types, the libc bindings), waiting on a root-only control socket for
 * a `start` to claim it. Claimed, it becomes the new sandbox's shim at once — it binds the
 * sandbox's ttrpc socket, takes the bundle as its working directory and containerd's
 * environment — so the sandbox skips the daemon's ~100 ms boot. A `start` for a sandbox whose
 * shim runs already gets that shim's address and leaves the standby waiting. Each shim keeps one
 * standby ready for the next sandbox (started a moment after it serves, off the critical path);
 * an unclaimed standby exits after STANDBY_IDLE_MS. MOAT_SHIM_STANDBY=0 in containerd's
 * environment turns it off. The protocol is claim.ts's.
 */
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, openSync, unlinkSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { flock, LOCK_EX, LOCK_NB } from '../sys/libc.js';
import { decodeClaim, encodeClaim, formatReply, parseReply, standbyPath } from './claim.js';
import type { ClaimReply, ClaimRequest } from './claim.js';
import type { ShimFlags } from './flags.js';

/** How long an unclaimed standby waits before it exits. */
export const STANDBY_IDLE_MS = 10 * 60_000;

/** A standby's new identity once claimed: the sandbox shim's flags (socket included), bundle and environment. */
export interface Claim {
  flags: ShimFlags;
  cwd: string;
  env: Record<string, string>;
  address: string;
}

/** What the standby does with a request: answer it and wait on, or become the shim it describes. */
export type Decision = { reply: ClaimReply } | { claim: Claim };

/** Whether the standby is enabled in this environment. */
export function standbyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['MOAT_SHIM_STANDBY'] !== '0';
}

/**
 * Hands `request` to the installation's standby; resolves with its reply, or undefined when
 * there is no standby or it did not answer in time (then `start` does the work itself).
 */
export function claimStandby(daemon: string, request: ClaimRequest, timeoutMs = 2000): Promise<ClaimReply | undefined> {
  let path: string;
  try {
    path = standbyPath(daemon);
  } catch {
    return Promise.resolve(undefined);
  }
  if (!existsSync(path)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const sock = connect(path);
    let buf = '';
    const done = (r: ClaimReply | undefined): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.once('connect', () => sock.end(encodeClaim(request)));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(parseReply(buf.slice(0, nl)));
    });
    sock.once('error', () => done(undefined));
    sock.once('close', () => done(undefined));
  });
}

/**
 * Waits on the control socket until `decide` turns a request into a claim; resolves with it
 * and the function that sends the claimant its reply. Requests `decide` answers itself leave
 * the standby waiting. Resolves undefined when another standby already serves this
 * installation, or after the idle timeout.
 */
export async function awaitClaim(
  daemon: string,
  decide: (request: ClaimRequest) => Promise<Decision>,
): Promise<{ claim: Claim; reply: (r: ClaimReply) => void } | undefined> {
  const path = standbyPath(daemon);
  if (existsSync(path)) {
    const alive = await new Promise<boolean>((res) => {
      const s = connect(path);
      // a live standby reads this connection as a request: close at once, with no bytes
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
    let busy = false; // deciding one request; others pass meanwhile
    let claimed = false;
    const idle = setTimeout(() => {
      server.close();
      resolve(undefined);
    }, STANDBY_IDLE_MS);
    const answer = (sock: Socket, r: ClaimReply): void => {
      sock.end(formatReply(r));
    };
    server.on('connection', (sock: Socket) => {
      let buf = Buffer.alloc(0);
      let handled = false;
      sock.on('data', (d: Buffer) => {
        if (handled) return;
        buf = Buffer.concat([buf, d]);
        let request: ClaimRequest | undefined;
        try {
          request = decodeClaim(buf);
        } catch (e) {
          handled = true;
          answer(sock, { kind: 'pass', reason: (e as Error).message });
          return;
        }
        if (!request) return;
        handled = true;
        if (busy || claimed) {
          answer(sock, { kind: 'pass', reason: 'the standby is taken' });
          return;
        }
        busy = true;
        decide(request).then(
          (d) => {
            busy = false;
            if ('reply' in d) {
              answer(sock, d.reply);
              return;
            }
            claimed = true;
            clearTimeout(idle);
            server.close(); // one claim per standby: the next start finds none, or the next standby
            resolve({ claim: d.claim, reply: (r) => answer(sock, r) });
          },
          (e: unknown) => {
            busy = false;
            answer(sock, { kind: 'pass', reason: (e as Error).message });
          },
        );
      });
      sock.on('error', () => {});
    });
    server.once('error', () => {
      clearTimeout(idle);
      resolve(undefined); // another standby bound the path first
    });
    // root-only from the first moment (the umask covers bind; chmod is belt and braces)
    const mask = process.umask(0o177);
    try {
      server.listen(path, () => chmodSync(path, 0o600));
    } finally {
      process.umask(mask);
    }
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
