/**
 * The host process of one `exec` in a microVM (`bin/moat.cjs --vm-exec-relay CONFIG`, started by
 * the microvm backend's exec). It stands for the guest process on the host as a container
 * backend's exec'd process does: its pid is what `exec` reports (and writes to --pid-file), so
 * containerd's runc shim, conmon and Moat's own shim can wait on it, get the guest process's exit
 * status as its own, and signal it directly. It asks the VM monitor to run the process, relays its
 * fds 0-2 to and from the guest (unless the process has a terminal, which the monitor relays),
 * forwards the catchable signals it gets to the guest process, and exits with the guest process's
 * status. The monitor kills the guest process with SIGKILL if the relay's connection closes
 * before it exited, so a SIGKILL of the relay ends the guest process too.
 *
 * It reports on fd 3, one line: "pid N" (the guest pid) once the process runs, "exited" when it
 * ended without starting (the reason went to its stderr, the status is its own exit code), or
 * "error MESSAGE".
 */
import { closeSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { constants } from 'node:os';
import { inputStream } from '../../util/input.js';
import type { ProcessSpec } from './protocol.js';

/** What the backend's exec tells the relay (JSON in argv; rlimits as decimal strings). */
export interface RelayConfig {
  id: string;
  monitorSocket: string;
  spec: ProcessSpec;
  /** With a terminal: the socket the monitor sends the pty master to. */
  consoleSocket?: string;
}

/** The status of a guest process whose VM went before it reported one: killed with it (SIGKILL's). */
export const KILLED_WITH_VM = 128 + 9;

/** Writes all of `data` to fd (synchronously: the guest's order is kept). */
export function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      return; // the reader went away: drop the rest, as a closed pipe would
    }
  }
}

/** Signals a relay passes on to its guest process (SIGKILL and SIGSTOP cannot be caught). */
export const RELAYED_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGCONT', 'SIGALRM'];

/** Runs the relay; resolves with its exit code (the guest process's status). */
export function relayMain(argv: string[]): Promise<number> {
  const cfg = JSON.parse(argv[0] ?? '{}') as RelayConfig;
  const tty = cfg.spec.terminal !== undefined;
  const report = (line: string): void => {
    try {
      writeSync(3, `${line}\n`);
      closeSync(3);
    } catch {
      // reported already, or started without a report pipe
    }
  };
  return new Promise((resolve) => {
    const sock = connect(cfg.monitorSocket);
    let buf = '';
    let started = false;
    let done = false;
    const end = (code: number): void => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve(code);
    };
    const send = (obj: unknown): void => {
      if (!sock.destroyed) sock.write(`${JSON.stringify(obj)}\n`);
    };
    // a signal before the process runs waits for it: the guest pid is not known yet
    const early: number[] = [];
    const forward = (sig: NodeJS.Signals): void => {
      const signal = constants.signals[sig];
      if (started) send({ signal });
      else early.push(signal);
    };
    for (const s of RELAYED_SIGNALS) process.on(s, forward);
    sock.on('connect', () => {
      const op = { op: 'exec', spec: cfg.spec, ...(cfg.consoleSocket !== undefined ? { consoleSocket: cfg.consoleSocket } : {}) };
      sock.write(`${JSON.stringify(op, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
      if (tty) return;
      const input = inputStream(0);
      input.on('data', (d: Buffer | string) => send({ in: Buffer.from(d).toString('base64') }));
      input.on('end', () => send({ eof: true }));
      input.on('error', () => send({ eof: true }));
    });
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: { pid?: number; out?: string; err?: string; status?: number; error?: string };
        try {
          m = JSON.parse(line) as typeof m;
        } catch {
          report('error the VM monitor sent an unreadable line');
          end(255);
          return;
        }
        if (typeof m.pid === 'number') {
          started = true;
          report(`pid ${m.pid}`);
          for (const signal of early.splice(0)) send({ signal });
        }
        if (typeof m.out === 'string') writeAll(1, Buffer.from(m.out, 'base64'));
        if (typeof m.err === 'string') writeAll(2, Buffer.from(m.err, 'base64'));
        if (typeof m.error === 'string') {
          report(`error ${m.error}`);
          end(255);
          return;
        }
        if (typeof m.status === 'number') {
          if (!started) report('exited');
          end(m.status);
          return;
        }
      }
    });
    sock.on('error', (e) => {
      report(`error cannot reach the VM monitor: ${e.message}`);
      end(255);
    });
    sock.on('close', () => {
      // the VM went before the process's status came: it was killed with it
      report('error the VM monitor closed the connection');
      end(KILLED_WITH_VM);
    });
  });
}
