/**
 * A unix socket server that receives one file descriptor (SCM_RIGHTS), as a console socket or
 * a seccomp agent's listener does.
 */
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { recvFd } from '../../src/sys/libc.js';

/** The fd under a node socket. */
function socketFd(socket: Socket): number {
  // Node exposes no public API for a socket's fd; its libuv handle carries it as `fd`
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('cannot get the fd of the accepted socket');
  return fd;
}

/** Listens at `path`; `received` resolves to the first fd sent there and the bytes sent with it. */
export async function fdServer(path: string): Promise<{ server: Server; received: Promise<{ fd: number; data: string }> }> {
  let resolve: (m: { fd: number; data: string }) => void = () => {};
  let reject: (e: unknown) => void = () => {};
  const received = new Promise<{ fd: number; data: string }>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  received.catch(() => {}); // observed by the test; never an unhandled rejection here
  // pauseOnConnect: node must not read the socket itself, or it would swallow the message;
  // recvFd waits (briefly) for the sender on the non-blocking socket
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    try {
      resolve(recvFd(socketFd(socket)));
    } catch (e) {
      reject(e);
    } finally {
      socket.destroy();
    }
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => res());
  });
  return { server, received };
}
