/**
 * A readable stream of an inherited fd that never blocks a thread. `fs.createReadStream` reads in
 * libuv's thread pool, and a read of a pipe nobody closes (a shim's stdin FIFO) blocks its thread
 * for good; Node joins the pool's threads when it exits, so such a process never ends. Pipes and
 * sockets are read through the event loop instead (a non-blocking handle), and so are terminals;
 * anything else (a regular file, /dev/null) returns from read at once and keeps the thread-pool
 * stream.
 */
import { createReadStream, fstatSync } from 'node:fs';
import { Socket } from 'node:net';
import { isatty, ReadStream } from 'node:tty';
import type { Readable } from 'node:stream';

/** A stream of what arrives on `fd`, which it closes at the end (see the module comment for how it reads). */
export function inputStream(fd: number): Readable {
  let st;
  try {
    st = fstatSync(fd);
  } catch {
    st = undefined;
  }
  if (st && (st.isFIFO() || st.isSocket())) return new Socket({ fd, readable: true, writable: false });
  // libuv reads a terminal through its own non-blocking reopen of it, leaving the caller's as it was
  if (isatty(fd)) return new ReadStream(fd);
  return createReadStream('', { fd, autoClose: true, highWaterMark: 64 * 1024 });
}
