/**
 * Console sockets (runc's --console-socket protocol: the pty master passed with SCM_RIGHTS, the
 * pty's name as the message). ConsoleSocket is one Moat serves itself: a unix socket in a fresh
 * private directory that accepts one connection and receives the master (the CLI's foreground
 * run/exec, the containerd shim). hostTerminal is the sending side for terminals Moat makes on
 * the host (the microvm backend's).
 */
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostError } from '../errors.js';
import * as k from '../sys/kernel.js';
import { openPty, recvFd, sendFd, setWindowSize } from '../sys/libc.js';

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

/**
 * Opens a pty pair on the host of `size`, sends its master to the console socket at `path` and
 * returns the slave (close-on-exec, not a controlling terminal). `what` names the container for
 * errors.
 */
export function hostTerminal(what: string, path: string, size: { rows: number; cols: number }): number {
  const pty = openPty();
  try {
    setWindowSize(pty.master, size.rows, size.cols);
    const p = Buffer.from(path);
    if (p.length > 107) throw new HostError(`${what}: the console socket path ${path} is longer than 107 bytes`);
    const sock = k.socket(1 /* AF_UNIX */, 1 /* SOCK_STREAM */ | k.O.CLOEXEC, 0);
    if (sock < 0) throw new HostError(`${what}: console socket ${path}: socket: errno ${-sock}`);
    try {
      const addr = Buffer.alloc(2 + p.length + 1);
      addr.writeUInt16LE(1, 0);
      p.copy(addr, 2);
      const r = k.connect(sock, addr);
      if (r < 0) throw new HostError(`${what}: cannot connect to the console socket ${path}: errno ${-r}`);
      sendFd(sock, pty.master, pty.name);
    } finally {
      k.close(sock);
    }
  } catch (e) {
    closeSync(pty.slave);
    throw e;
  } finally {
    closeSync(pty.master);
  }
  return pty.slave;
}
