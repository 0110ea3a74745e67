/**
 * The console of a foreground `run` whose process.terminal is set and which was given no
 * --console-socket (as `runc run` does interactively): Moat listens on a private socket of its
 * own, receives the pty master from the container, and relays it to its own stdio, in raw mode
 * when stdin is a terminal, forwarding window size changes.
 */
import { closeSync, read, write } from 'node:fs';
import { makeRaw, setWindowSize } from '../sys/libc.js';
import { ConsoleSocket } from '../util/consolesocket.js';

/** A console socket Moat serves itself, then the relay between the pty and Moat's stdio. */
export class ConsoleRelay {
  readonly path: string;
  private master = -1;
  private done: Promise<void> = Promise.resolve();
  private restore: () => void = () => {};

  private constructor(private readonly socket: ConsoleSocket) {
    this.path = socket.path;
  }

  /** Starts listening on a fresh private socket. */
  static async listen(): Promise<ConsoleRelay> {
    return new ConsoleRelay(await ConsoleSocket.listen('moat-console-'));
  }

  /** Receives the pty master (the container sent it during create) and starts relaying. */
  async attach(): Promise<void> {
    this.master = await this.socket.receive();
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
      // Node's raw mode keeps output processing (ONLCR: the container's "\r\n" would reach the
      // screen as "\r\r\n"); cfmakeraw's does not. Leaving raw mode, libuv puts back the
      // whole termios it saved when it entered it.
      stdin.setRawMode(true);
      makeRaw(0);
      this.restore = () => stdin.setRawMode(false);
    }
    // one write at a time, in order: fs.write runs on the thread pool, where two pending writes
    // may go in either order (a ^D ahead of the input typed before it ended the shell early)
    let queue = Promise.resolve();
    const send = (b: Buffer): void => {
      queue = queue.then(() => new Promise<void>((res) => write(master, b, () => res())));
    };
    stdin.on('data', (d: Buffer) => send(d));
    stdin.on('end', () => send(Buffer.from([4]))); // ^D: end of input for the tty
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
    this.socket.close();
  }

  /** Removes the socket after a failed create. */
  dispose(): void {
    this.socket.close();
  }
}
