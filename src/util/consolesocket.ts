/**
 * A console socket that Moat serves itself (runc's --console-socket protocol): a unix socket in a
 * fresh private directory that accepts one connection and receives the pty master over it with
 * SCM_RIGHTS. Used by the CLI's foreground run/exec and by the containerd shim.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recvFd } from '../sys/libc.js';

/** A listening console socket; `receive()` waits for the container and returns the pty master. */
export class ConsoleSocket {
  private constructor(
    /** The socket's path (short: sun_path holds 108 bytes). */
    readonly path: string,
    private readonly dir: string,
    private readonly server: Server,
    private readonly conn: Promise<Socket>,
  ) {}

  /** Listens on `<tmpdir>/<prefix>XXXXXX/console.sock`. */
  static async listen(prefix: string): Promise<ConsoleSocket> {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    let accept: (s: Socket) => void = () => {};
    const conn = new Promise<Socket>((r) => (accept = r));
    const server = createServer({ pauseOnConnect: true }, (s) => accept(s));
    const path = join(dir, 'console.sock');
    try {
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen(path, () => res());
      });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return new ConsoleSocket(path, dir, server, conn);
  }

  /** Waits for the container's connection and returns the pty master it sends; closes the socket. */
  async receive(): Promise<number> {
    const sock = await this.conn;
    // `_handle` is Node's internal wrapper; its fd is the only way to reach recvmsg from here
    const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
    try {
      return recvFd(fd).fd;
    } finally {
      sock.destroy();
      this.close();
    }
  }

  /** Stops listening and removes the directory (also after a failed create). */
  close(): void {
    this.server.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
