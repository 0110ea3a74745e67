/**
 * The console of a foreground `run` whose process.terminal is set and which was given no
 * --console-socket (as `runc run` does interactively): Moat listens on a private socket of its
 * own, receives the pty master from the container, and relays it to its own stdio, in raw mode
 * when stdin is a terminal, forwarding window size changes.
 */
import { closeSync, mkdtempSync, read, rmSync, write } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recvFd, setWindowSize } from '../sys/libc.js';

/** A console socket Moat serves itself, then the relay between the pty and Moat's stdio. */
export class ConsoleRelay {
  readonly path: string;
  private readonly dir: string;
  private readonly server: Server;
  private conn: Promise<Socket>;
  private master = -1;
  private done: Promise<void> = Promise.resolve();
  private restore: () => void = () => {};

  private constructor(dir: string, server: Server, conn: Promise<Socket>) {
    this.dir = dir;
    this.path = join(dir, 'console.sock');
    this.server = server;
    this.conn = conn;
  }

  /** Starts listening on a fresh private socket. */
  static async listen(): Promise<ConsoleRelay> {
    const dir = mkdtempSync(join(tmpdir(), 'moat-console-'));
    let accept: (s: Socket) => void = () => {};
    const conn = new Promise<Socket>((r) => (accept = r));
    const server = createServer({ pauseOnConnect: true }, (s) => accept(s));
    const relay = new ConsoleRelay(dir, server, conn);
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(relay.path, () => res());
    });
    return relay;
  }

  /** Receives the pty master (the container sent it during create) and starts relaying. */
  async attach(): Promise<void> {
    const sock = await this.conn;
    // `_handle` is Node's internal wrapper; its fd is the only way to reach recvmsg from here
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    this.master = recvFd(fd).fd;
    sock.destroy();
    this.server.close();
    const master = this.master;
    const stdin = process.stdin;
    const stdout = process.stdout;
    if (stdout.isTTY) {
      const resize = () => {
        try {
          setWindowSize(master, stdout.rows, stdout.columns);
        } catch {
          // the container is gone
        }
      };
      resize();
      stdout.on('resize', resize);
    }
    if (stdin.isTTY) {
      stdin.setRawMode(true);
      this.restore = () => stdin.setRawMode(false);
    }
    stdin.on('data', (d: Buffer) => write(master, d, () => {}));
    stdin.on('end', () => write(master, Buffer.from([4]), () => {})); // ^D: end of input for the tty
    stdin.resume();
    this.done = new Promise((resolve) => {
      const buf = Buffer.alloc(65536);
      const pump = () =>
        read(master, buf, 0, buf.length, null, (err, n) => {
          // EIO: every holder of the pty's other end is gone
          if (err || n === 0) return resolve();
          stdout.write(buf.subarray(0, n), pump);
        });
      pump();
    });
  }

  /** Waits until the container's side of the pty closed, restores the terminal, cleans up. */
  async close(): Promise<void> {
    await Promise.race([this.done, new Promise((r) => setTimeout(r, 2000))]);
    this.restore();
    process.stdin.pause();
    process.stdin.unref?.();
    if (this.master >= 0) closeSync(this.master);
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Removes the socket after a failed create. */
  dispose(): void {
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
