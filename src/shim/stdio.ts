/**
 * The stdio of one container process under the shim, as containerd hands it over: paths of
 * FIFOs (or `file://` URIs) that the client (ctr, CRI, dockerd) reads and writes, or nothing.
 *
 * Without a terminal, stdout and stderr go straight to the container: the shim opens the FIFO
 * for writing and passes that fd, so output costs no copy through Node. The shim keeps a read
 * end of each FIFO open (as containerd's runc shim does) so that a client that goes away makes
 * the container block on a full pipe, not die of SIGPIPE. Stdin is a pipe the shim fills from
 * the FIFO, so that CloseIO can end it. With a terminal, the shim receives the pty master on a
 * console socket of its own and relays it to and from the FIFOs, resizing on request.
 */
import { closeSync, constants, openSync, write as fsWrite } from 'node:fs';
import { Socket } from 'node:net';
import { ReadStream } from 'node:tty';
import { fileURLToPath } from 'node:url';
import { MoatError } from '../errors.js';
import { fcntl, O, pipe2 } from '../sys/kernel.js';
import { setWindowSize } from '../sys/libc.js';
import { ConsoleSocket } from '../util/consolesocket.js';

/** What containerd asks for: FIFO paths or URIs (empty: none) and whether to use a terminal. */
export interface StdioRequest {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** A stdio path the shim cannot open, named by its stream (stdin, stdout or stderr). */
export class StdioError extends MoatError {
  constructor(stream: string, path: string, why: string) {
    super(`${stream} ${JSON.stringify(path)}: ${why}`);
  }
}

const F_GETFL = 3;
const F_SETFL = 4;

/** Turns a containerd stdio address into a path (a bare path or file://); other schemes are refused. */
function localPath(stream: string, address: string): string {
  if (!address.includes('://')) return address;
  if (address.startsWith('file://')) return fileURLToPath(address);
  throw new StdioError(stream, address, 'only FIFO paths and file:// URIs are supported (no binary:// logging drivers)');
}

/** Opens an output path for the container: a FIFO with a reader, or a file (appended). */
function openOutput(stream: string, address: string, held: number[]): number {
  const path = localPath(stream, address);
  if (address.startsWith('file://')) {
    return openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640);
  }
  let fd: number;
  try {
    // a FIFO whose reader is there (containerd's clients open theirs first) opens at once
    fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw new StdioError(stream, path, (e as Error).message);
    // nobody reads yet: read-write never blocks; output waits in the FIFO for its reader
    fd = openSync(path, constants.O_RDWR);
  }
  const flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O.NONBLOCK);
  try {
    held.push(openSync(path, constants.O_RDONLY | constants.O_NONBLOCK));
  } catch {
    // a regular file: nothing to hold
  }
  return fd;
}

/** Opens a stdin FIFO for reading without blocking; data flows once its writer appears. */
function openInput(path: string): Socket {
  const fd = openSync(localPath('stdin', path), constants.O_RDONLY | constants.O_NONBLOCK);
  // epoll reports a FIFO's hang-up only after a writer came and went, so this waits for the client
  return new Socket({ fd, readable: true, writable: false });
}

/** A pipe whose read end goes to the container and whose write end the shim keeps. */
function stdinPipe(): { read: number; write: Socket } {
  const fds = pipe2(O.CLOEXEC);
  if (typeof fds === 'number') throw new MoatError(`pipe2 for stdin: errno ${-fds}`);
  return { read: fds[0], write: new Socket({ fd: fds[1], readable: false, writable: true }) };
}

/** The stdio of one process, set up before create/exec and torn down after it exits. */
export class ProcessIO {
  /** Fds for the process (stdin, stdout, stderr); the shim closes its copies after the start. */
  readonly fds: [number, number, number];
  /** The console socket for a terminal process. */
  readonly consoleSocket?: string;
  private readonly own: number[] = [];
  private readonly held: number[] = [];
  private stdin?: Socket;
  private stdinWrite?: Socket;
  private console?: ConsoleRelay;

  private constructor(fds: [number, number, number], consoleSocket?: string) {
    this.fds = fds;
    if (consoleSocket) this.consoleSocket = consoleSocket;
  }

  /** Opens what `req` names; on failure nothing stays open. */
  static async open(req: StdioRequest): Promise<ProcessIO> {
    const own: number[] = [];
    const held: number[] = [];
    let stdin: Socket | undefined;
    let stdinWrite: Socket | undefined;
    try {
      if (req.terminal) {
        const relay = await ConsoleRelay.listen(req);
        const io = new ProcessIO([-1, -1, -1], relay.path);
        io.console = relay;
        return io;
      }
      const devnull = (): number => {
        const fd = openSync('/dev/null', constants.O_RDWR);
        own.push(fd);
        return fd;
      };
      let inFd: number;
      if (req.stdin) {
        stdin = openInput(req.stdin);
        const pipe = stdinPipe();
        own.push(pipe.read);
        stdinWrite = pipe.write;
        inFd = pipe.read;
        stdinWrite.on('error', () => {}); // the process closed its stdin: drop the rest
        stdin.on('error', () => stdinWrite?.destroy());
        stdin.pipe(stdinWrite);
      } else {
        inFd = devnull();
      }
      const out = req.stdout ? openOutput('stdout', req.stdout, held) : devnull();
      if (req.stdout) own.push(out);
      let err: number;
      if (req.stderr && req.stderr === req.stdout) err = out;
      else if (req.stderr) {
        err = openOutput('stderr', req.stderr, held);
        own.push(err);
      } else err = devnull();
      const io = new ProcessIO([inFd, out, err]);
      io.own.push(...own);
      io.held.push(...held);
      if (stdin) io.stdin = stdin;
      if (stdinWrite) io.stdinWrite = stdinWrite;
      return io;
    } catch (e) {
      for (const fd of [...own, ...held]) closeQuietly(fd);
      stdin?.destroy();
      stdinWrite?.destroy();
      throw e;
    }
  }

  /** Drops the shim's copies of the process's ends, once the process holds its own. */
  releaseChildEnds(): void {
    for (const fd of this.own.splice(0)) closeQuietly(fd);
  }

  /** Waits for the pty master (terminal processes) and starts relaying it. */
  async attachConsole(): Promise<void> {
    await this.console?.attach();
  }

  /** CloseIO: the process's stdin reaches end of file. */
  closeStdin(): void {
    this.stdin?.unpipe();
    this.stdin?.destroy();
    this.stdinWrite?.end();
    this.console?.closeInput();
  }

  /** Resizes the process's terminal. */
  resize(width: number, height: number): void {
    if (!this.console) throw new MoatError('the process has no terminal');
    this.console.resize(width, height);
  }

  /** Waits (at most `ms`) until the terminal output is drained, then closes everything. */
  async close(ms = 2000): Promise<void> {
    await this.console?.close(ms);
    this.releaseChildEnds();
    for (const fd of this.held.splice(0)) closeQuietly(fd);
    this.stdin?.destroy();
    this.stdinWrite?.destroy();
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/** The shim's end of a terminal: a console socket, then the pty master relayed to the FIFOs. */
class ConsoleRelay {
  readonly path: string;
  private master = -1;
  private reader?: ReadStream;
  private out = -1;
  private input?: Socket;
  private done: Promise<void> = Promise.resolve();

  private constructor(
    private readonly socket: ConsoleSocket,
    private readonly req: StdioRequest,
  ) {
    this.path = socket.path;
  }

  /** Listens on a fresh private console socket. */
  static async listen(req: StdioRequest): Promise<ConsoleRelay> {
    return new ConsoleRelay(await ConsoleSocket.listen('moat-shim-'), req);
  }

  /** Receives the master and starts copying: stdin FIFO -> master -> stdout FIFO. */
  async attach(): Promise<void> {
    this.master = await this.socket.receive();
    const held: number[] = [];
    if (this.req.stdout) this.out = openOutput('stdout', this.req.stdout, held);
    for (const h of held) closeQuietly(h);
    const master = this.master;
    if (this.req.stdin) {
      const input = openInput(this.req.stdin);
      this.input = input;
      input.on('data', (d: Buffer) => writeAll(master, d));
      input.on('error', () => {});
    }
    // a pty master is a tty to libuv (polled, not read on the thread pool); EIO means the other side closed
    const reader = new ReadStream(master);
    this.reader = reader;
    this.done = new Promise((resolve) => {
      reader.on('data', (d: Buffer) => {
        if (this.out >= 0) writeAll(this.out, d);
      });
      reader.on('error', () => resolve());
      reader.on('end', () => resolve());
      reader.on('close', () => resolve());
    });
  }

  /** End of input for the terminal (^D), as a client's closed stdin means. */
  closeInput(): void {
    this.input?.destroy();
    if (this.master >= 0) writeAll(this.master, Buffer.from([4]));
  }

  /** TIOCSWINSZ on the master. */
  resize(width: number, height: number): void {
    if (this.master < 0) return;
    setWindowSize(this.master, height, width);
  }

  /** Waits for the output to drain (bounded), then closes the master, the FIFO and the socket. */
  async close(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.done, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
    this.input?.destroy();
    this.reader?.destroy(); // closes the master
    this.master = -1;
    // the last output may still be on its way to the FIFO: closing now would lose it
    if (this.out >= 0) await Promise.race([drained(this.out), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
    if (this.out >= 0) closeQuietly(this.out);
    this.out = -1;
    this.socket.close();
  }
}

/** Writes pending per fd, in order; `idle` resolves when the fd's queue is empty. */
interface WriteQueue {
  bufs: Buffer[];
  idle: Promise<void>;
  settle: () => void;
}
const queues = new Map<number, WriteQueue>();

/** Writes all of `data` to a (possibly non-blocking) fd, in order, retrying on EAGAIN. */
function writeAll(fd: number, data: Buffer): void {
  const q = queues.get(fd);
  if (q) {
    q.bufs.push(data);
    return;
  }
  let settle: () => void = () => {};
  const idle = new Promise<void>((r) => (settle = r));
  const queue: WriteQueue = { bufs: [data], idle, settle };
  queues.set(fd, queue);
  const finish = (): void => {
    queues.delete(fd);
    queue.settle();
  };
  const next = (): void => {
    const buf = queue.bufs[0];
    if (!buf) return finish();
    fsWrite(fd, buf, (err, n) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          setTimeout(next, 5);
          return;
        }
        return finish(); // the reader is gone: drop the rest
      }
      if (n < buf.length) queue.bufs[0] = buf.subarray(n);
      else queue.bufs.shift();
      next();
    });
  };
  next();
}

/** Resolves once everything queued for `fd` is written (or dropped). */
function drained(fd: number): Promise<void> {
  return queues.get(fd)?.idle ?? Promise.resolve();
}
