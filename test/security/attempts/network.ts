/**
 * Reaching the host's network services from a container whose network is off (the default spec
 * gives it a new, empty network namespace). The host listens on its loopback (TCP, UDP, IPv6),
 * on one of its own non-loopback addresses, and on an abstract unix socket (abstract names are
 * scoped to the network namespace); the workload tries to reach each. The judge counts, on the
 * host, what its listener received: any connection or datagram is an escape. The sandbox's own
 * loopback (up under Moat's sentry) is not the host's, and a unix socket file the host puts in a
 * volume is reachable by design, so that is not tried.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { blocked, escaped, excerpt, notApplicable, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';

/**
 * The probe: `PROBE tcp4|tcp6|udp4|udp6|unix-abstract`, with the destination in TARGET_ADDR and
 * TARGET_PORT (unix-abstract: the name in TARGET_ADDR, tried as is and NUL-padded to the whole
 * sun_path, the form Node binds). TCP connects without blocking and waits up to 3 s; UDP sends
 * three datagrams. Prints CONNECT=1 when the kernel reported success.
 */
const PROBE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len) {
  fcntl(fd, F_SETFL, O_NONBLOCK);
  if (connect(fd, sa, len) == 0) return 0;
  if (errno != EINPROGRESS) return -1;
  struct pollfd p = { fd, POLLOUT, 0 };
  if (poll(&p, 1, 3000) != 1) { errno = ETIMEDOUT; return -1; }
  int e = 0;
  socklen_t el = sizeof e;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
  if (e) { errno = e; return -1; }
  return 0;
}
int main(int argc, char **argv) {
  alarm(20);
  const char *mode = argc > 1 ? argv[1] : "";
  const char *addr = getenv("TARGET_ADDR"), *port = getenv("TARGET_PORT");
  if (!addr) { printf("ERR=no TARGET_ADDR\n"); return 1; }
  int v6 = strstr(mode, "6") != NULL, udp = strncmp(mode, "udp", 3) == 0;
  int fd, rc;
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof ss);
  if (strcmp(mode, "unix-abstract") == 0) {
    struct sockaddr_un *un = (struct sockaddr_un *)&ss;
    un->sun_family = AF_UNIX;
    size_t n = strlen(addr);
    if (n + 1 > sizeof un->sun_path) { printf("ERR=name too long\n"); return 1; }
    memcpy(un->sun_path + 1, addr, n); /* sun_path[0] = 0: an abstract name */
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
  } else if (v6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((unsigned short)atoi(port ? port : "0"));
    if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1) { printf("ERR=bad address %s\n", addr); return 1; }
    len = sizeof *s6;
    fd = socket(AF_INET6, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)atoi(port ? port : "0"));
    if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1) { printf("ERR=bad address %s\n", addr); return 1; }
    len = sizeof *s4;
    fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
  }
  if (fd < 0) {
    printf("CONNECT=0\nERR=socket: %s\nDONE=1\n", strerror(errno));
    return 0;
  }
  if (udp) {
    int sent = 0, err = 0;
    for (int i = 0; i < 3; i++) {
      if (sendto(fd, "moat-breakout", 13, 0, (struct sockaddr *)&ss, len) == 13) sent++;
      else err = errno;
      usleep(50000);
    }
    printf("SENT=%d\nCONNECT=%d\nERR=%s\nDONE=1\n", sent, sent > 0, err ? strerror(err) : "none");
    return 0;
  }
  rc = connect_wait(fd, (struct sockaddr *)&ss, len);
  if (rc != 0 && ss.ss_family == AF_UNIX) {
    /* Node binds abstract names padded with NULs to the whole sun_path: try that form too */
    int first = errno;
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    rc = connect_wait(fd, (struct sockaddr *)&ss, sizeof(struct sockaddr_un));
    if (rc != 0) errno = first; /* the plain name's answer is the telling one */
  }
  if (rc == 0) {
    fcntl(fd, F_SETFL, 0);
    (void)!write(fd, "moat-breakout\n", 14);
    printf("CONNECT=1\n");
  } else {
    printf("CONNECT=0\nERR=%s\n", strerror(errno));
  }
  close(fd);
  printf("DONE=1\n");
  return 0;
}
`;

/** A host listener of one trial: how many connections or datagrams it got, and how to close it. */
interface Listener {
  hits: number;
  close(): Promise<void>;
  /** Why the attempt cannot run here (no such address on this host). */
  missing?: string;
}

const listeners = new Map<string, Listener>();

/** Adds `NAME=value` to the workload's environment. */
function setEnv(t: Trial, name: string, value: string): void {
  const env = (t.spec['process'].env ??= []) as string[];
  env.push(`${name}=${value}`);
}

/** Starts a TCP listener on `host` (any free port, or a unix path/abstract name) and records its hits. */
async function tcpListener(t: Trial, host: string | undefined, path?: string): Promise<number> {
  const l: Listener = { hits: 0, close: async () => {} };
  const server = createServer((sock) => {
    l.hits++;
    sock.on('error', () => {});
    sock.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (path !== undefined) server.listen(path, () => resolve());
    else server.listen(0, host, () => resolve());
  });
  server.unref(); // a trial that fails before its judge must not keep the runner alive
  l.close = () => new Promise((resolve) => server.close(() => resolve()));
  listeners.set(t.hostDir, l);
  const a = server.address();
  return typeof a === 'object' && a ? a.port : 0;
}

/** Starts a UDP listener on `host` (any free port) and records its datagrams. */
async function udpListener(t: Trial, host: string, type: 'udp4' | 'udp6'): Promise<number> {
  const l: Listener = { hits: 0, close: async () => {} };
  const sock = createSocket(type);
  sock.on('message', () => l.hits++);
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, host, () => resolve());
  });
  sock.unref();
  l.close = () => new Promise((resolve) => sock.close(() => resolve()));
  listeners.set(t.hostDir, l);
  return sock.address().port;
}

/** A host address of `family` that is not loopback or link-local, or undefined. */
function hostAddress(family: 'IPv4' | 'IPv6'): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || a.family !== family) continue;
      if (family === 'IPv6' && /^fe[89ab]/i.test(a.address)) continue;
      return a.address;
    }
  }
  return undefined;
}

/** The judge of every attempt here: anything the host's listener received is an escape. */
function judgeListener(what: string) {
  return async (t: Trial, out: RunOutput): Promise<Verdict> => {
    const l = listeners.get(t.hostDir);
    listeners.delete(t.hostDir);
    if (!l) return trialError('the host listener was not started');
    await new Promise((r) => setTimeout(r, 200)); // a connection accepted just before the exit
    await l.close();
    if (l.missing) return notApplicable(l.missing);
    if (l.hits > 0) return escaped(`the host's ${what} received ${l.hits} connection(s)/datagram(s) from the container`);
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    const r = report(out);
    return blocked(`nothing reached the host's ${what} (${r.get('CONNECT') === '1' ? 'the container reached its own namespace\'s socket' : r.get('ERR') ?? 'refused'})`);
  };
}

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'net-host-loopback-tcp',
    category: 'network',
    title: 'connects (busybox nc) to a TCP listener on the host\'s 127.0.0.1',
    shows: 'the container\'s 127.0.0.1 is its own namespace\'s loopback, not the host\'s',
    // one process only: no pipeline (fewer forks, fewer ways for the trial itself to fail)
    sh: 'if nc -w 3 127.0.0.1 "$TARGET_PORT" </dev/null >/dev/null 2>&1; then echo CONNECT=1; else echo CONNECT=0; fi; echo DONE=1',
    setup: async (t) => setEnv(t, 'TARGET_PORT', String(await tcpListener(t, '127.0.0.1'))),
    judge: judgeListener('TCP listener on 127.0.0.1'),
  },
  {
    id: 'net-host-loopback-udp',
    category: 'network',
    title: 'sends UDP datagrams to a listener on the host\'s 127.0.0.1',
    shows: 'no datagram crosses from the container\'s namespace to the host\'s loopback',
    c: PROBE,
    args: ['udp4'],
    setup: async (t) => {
      setEnv(t, 'TARGET_ADDR', '127.0.0.1');
      setEnv(t, 'TARGET_PORT', String(await udpListener(t, '127.0.0.1', 'udp4')));
    },
    judge: judgeListener('UDP socket on 127.0.0.1'),
  },
  {
    id: 'net-host-loopback-v6',
    category: 'network',
    title: 'connects to a TCP listener on the host\'s IPv6 loopback ::1',
    shows: 'the container\'s ::1 is not the host\'s either',
    c: PROBE,
    args: ['tcp6'],
    setup: async (t) => {
      setEnv(t, 'TARGET_ADDR', '::1');
      try {
        setEnv(t, 'TARGET_PORT', String(await tcpListener(t, '::1')));
      } catch (e) {
        listeners.set(t.hostDir, { hits: 0, close: async () => {}, missing: `the host cannot listen on ::1 (${(e as Error).message})` });
      }
    },
    judge: judgeListener('TCP listener on ::1'),
  },
  {
    id: 'net-host-address-tcp',
    category: 'network',
    title: 'connects to a TCP listener on one of the host\'s own non-loopback addresses',
    shows: 'the empty network namespace has no route to the host (or anywhere)',
    c: PROBE,
    args: ['tcp4'],
    setup: async (t) => {
      const v4 = hostAddress('IPv4');
      const addr = v4 ?? hostAddress('IPv6');
      if (!addr) {
        listeners.set(t.hostDir, { hits: 0, close: async () => {}, missing: 'the host has no non-loopback address' });
        return;
      }
      if (!v4) t.spec['process'].args = ['/attempt', 'tcp6'];
      setEnv(t, 'TARGET_ADDR', addr);
      setEnv(t, 'TARGET_PORT', String(await tcpListener(t, addr)));
    },
    judge: judgeListener('TCP listener on its own address'),
  },
  {
    id: 'net-host-abstract-unix',
    category: 'network',
    title: 'connects to an abstract unix socket (@moat-breakout-...) the host listens on',
    shows: 'abstract socket names belong to the network namespace: the host\'s is out of reach',
    c: PROBE,
    args: ['unix-abstract'],
    setup: async (t) => {
      const name = `moat-breakout-${randomBytes(6).toString('hex')}`;
      setEnv(t, 'TARGET_ADDR', name);
      await tcpListener(t, undefined, `\0${name}`);
    },
    judge: judgeListener('abstract unix socket'),
  },
  {
    id: 'net-qemu-user-gateway',
    category: 'network',
    title: 'connects to 10.0.2.2, the address QEMU\'s user network gives the host\'s loopback, at a host 127.0.0.1 listener',
    shows: 'no user-mode network (or a restricted one) behind the container: the host\'s loopback stays out of reach',
    c: PROBE,
    args: ['tcp4'],
    setup: async (t) => {
      setEnv(t, 'TARGET_ADDR', '10.0.2.2');
      setEnv(t, 'TARGET_PORT', String(await tcpListener(t, '127.0.0.1')));
    },
    judge: judgeListener('TCP listener on 127.0.0.1 (via 10.0.2.2)'),
  },
];
