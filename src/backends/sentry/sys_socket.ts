/**
 * The socket family, under the sandbox's network policy (netpolicy.ts).
 *
 * Where sockets live: the workload always has its own network namespace (only a loopback
 * device, up under `loopback`; under `pod` the interfaces its engine put there, a Docker or CNI
 * network). Unix, netlink-route and (under `loopback` and `pod`) IP sockets are made by the kernel
 * in that namespace (CONTINUE). Under `egress`, IP sockets are made by the sentry in the host's
 * namespace and installed in the workload, so every destination they reach goes through the
 * checks here.
 *
 * The rule: the kernel never acts on a pointer the sentry checked. bind, connect, and sends
 * with an address are performed by the sentry on a duplicate of the workload's socket
 * (pidfd_getfd: the same open file description, so O_NONBLOCK and the namespace are the
 * workload's), with the address bytes it copied and checked; their result is the syscall's.
 * Unix socket paths are resolved inside the container root (openat2 RESOLVE_IN_ROOT) and reached
 * through the sentry's own /proc/self/fd; abstract names get a per-sandbox prefix. Calls with no
 * checked pointer (accept, receives, shutdown, listen outside `egress`, getsockopt) continue.
 *
 * Known limits (by design, documented in the report of this family):
 * - a peer of a socket the sentry connected sees the sentry's pid in SO_PEERCRED /
 *   SCM_CREDENTIALS (uid and gids are the workload's: the sentry runs with them);
 * - the addresses accept, recvfrom and recvmsg report for unix sockets bound through the sentry
 *   are its names (`/proc/self/fd/N/name`, `\0moat/ID/name`); getsockname and getpeername are
 *   translated back, and connecting or sending to such a name reaches the intended socket;
 *
 * A send the sentry performs that fails with EPIPE raises SIGPIPE in the calling thread unless
 * the call asked MSG_NOSIGNAL, as the kernel's own send does (the sentry's copy asks it always).
 */
import { createHash } from 'node:crypto';
import * as k from '../../sys/kernel.js';
import { AF, decodeSockaddr, egressAllowed, formatAddr } from './netpolicy.js';
import { S_IFMT, S_IFSOCK, openInRoot, statFd } from './resolve.js';
import { nsPid } from './view.js';
import { CONTINUE, fail, fromResult, giveFd, interruption, ok } from './types.js';
import type { Handler, HandlerTable, Reply, Sandbox, Task } from './types.js';

const { E } = k;

/** Errnos kernel.ts does not list. */
const EMSGSIZE = 90;
const ESOCKTNOSUPPORT = 94;
const ENOBUFS = 105;

const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_RAW = 3;
const SOCK_TYPE_MASK = 0xf;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;

const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_ICMPV6 = 58;
const NETLINK_ROUTE = 0;

const SOL_IP = 0;
const SOL_SOCKET = 1;
const SOL_UDP = 17;
const SOL_IPV6 = 41;

const SO_TYPE = 3;
const SO_DOMAIN = 39;
const SCM_RIGHTS = 1;

const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_ZEROCOPY = 0x4000000;

const F_GETFL = 3;
const F_SETFL = 4;
const SO_ERROR = 4;
const POLLOUT = 4;
/** How often a worker waiting for a connect or a send checks that its caller still waits and has no signal pending (ms). */
const WAIT_RECHECK_MS = 50;

/** sizeof(struct sockaddr_storage): the largest address the kernel copies. */
const MAX_ADDR_LEN = 128;
/** Largest payload the sentry copies for one send (datagrams above it get EMSGSIZE, streams a short write). */
const MAX_PAYLOAD = 64 * 1024;
/** UIO_MAXIOV: the most iovecs (and sendmmsg messages) one call takes. */
const UIO_MAXIOV = 1024;
/** Largest control buffer the sentry copies (the kernel's default optmem_max of old). */
const MAX_CONTROL = 20480;
/** SCM_MAX_FD: the most fds one message passes. */
const SCM_MAX_FD = 253;
/** sizeof(struct msghdr) and sizeof(struct mmsghdr) on x86_64. */
const MSGHDR_SIZE = 56;
const MMSGHDR_SIZE = 64;
/** sun_path holds 108 bytes including the terminating NUL. */
const SUN_PATH_MAX = 107;
/** Sentry-side unix names remembered per sandbox for translating them back. */
const MAX_REMEMBERED = 4096;

/** One (level, option) pair as a single number, for sets of socket options and control messages. */
const opt = (level: number, name: number): number => level * 0x10000 + name;

/**
 * setsockopt options refused with EPERM: they pick an interface or a route other than the
 * destination's (SO_BINDTODEVICE, SO_BINDTOIFINDEX, IP_UNICAST_IF, IPV6_UNICAST_IF, sticky
 * IPV6_PKTINFO), source-route past the policy (IP_OPTIONS, IPv6 routing headers and the RFC 2292
 * sticky options), mark or intercept traffic (SO_MARK, IP_TRANSPARENT, IPV6_TRANSPARENT), or
 * load eBPF programs (SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_EBPF). Classic filters are allowed.
 */
const REFUSED_OPTIONS: ReadonlyMap<number, string> = new Map([
  [opt(SOL_SOCKET, 25), 'SO_BINDTODEVICE'],
  [opt(SOL_SOCKET, 36), 'SO_MARK'],
  [opt(SOL_SOCKET, 50), 'SO_ATTACH_BPF'],
  [opt(SOL_SOCKET, 52), 'SO_ATTACH_REUSEPORT_EBPF'],
  [opt(SOL_SOCKET, 62), 'SO_BINDTOIFINDEX'],
  [opt(SOL_IP, 4), 'IP_OPTIONS'],
  [opt(SOL_IP, 19), 'IP_TRANSPARENT'],
  [opt(SOL_IP, 50), 'IP_UNICAST_IF'],
  [opt(SOL_IPV6, 5), 'IPV6_2292RTHDR'],
  [opt(SOL_IPV6, 6), 'IPV6_2292PKTOPTIONS'],
  [opt(SOL_IPV6, 50), 'IPV6_PKTINFO'],
  [opt(SOL_IPV6, 57), 'IPV6_RTHDR'],
  [opt(SOL_IPV6, 75), 'IPV6_TRANSPARENT'],
  [opt(SOL_IPV6, 76), 'IPV6_UNICAST_IF'],
]);

/**
 * Control messages a send the sentry performs may carry, besides SCM_RIGHTS (whose fds are
 * translated): per-packet TOS/TTL, hop limit, traffic class, don't-fragment and UDP GSO.
 * Anything else (credentials, marks, pktinfo, IP options, routing headers) gets EPERM.
 */
const ALLOWED_CMSGS: ReadonlySet<number> = new Set([
  opt(SOL_IP, 1), // IP_TOS
  opt(SOL_IP, 2), // IP_TTL
  opt(SOL_IPV6, 52), // IPV6_HOPLIMIT
  opt(SOL_IPV6, 62), // IPV6_DONTFRAG
  opt(SOL_IPV6, 67), // IPV6_TCLASS
  opt(SOL_UDP, 103), // UDP_SEGMENT
]);

/** Per-sandbox state of the family (one per isolate: a worker thread has its own). */
interface NetState {
  /** `moat/<id>/`: the prefix of every abstract name the sandbox binds or reaches. */
  prefix: Buffer;
  /** Sentry-side unix path (latin1) -> the path the workload bound and its absolute container form. */
  paths: Map<string, { shown: Buffer; abs: Buffer }>;
  /** Whether an abstract name was bound with the prefix (names must then be translated back). */
  abstract: boolean;
  /** Log lines written per kind (the log is rate-limited). */
  notes: Map<string, number>;
}

const states = new WeakMap<Sandbox, NetState>();

/** The family's state for a sandbox, made on first use. */
function state(sb: Sandbox): NetState {
  let st = states.get(sb);
  if (!st) {
    // a long id (a 64-hex containerd id) would leave little of sun_path: use a digest of it
    const id = Buffer.byteLength(sb.id) <= 32 ? sb.id : createHash('sha256').update(sb.id).digest('hex').slice(0, 16);
    st = { prefix: Buffer.from(`moat/${id}/`, 'latin1'), paths: new Map(), abstract: false, notes: new Map() };
    states.set(sb, st);
  }
  return st;
}

/** Logs a policy decision: the first 20 of each kind, then every 1000th. */
function note(sb: Sandbox, kind: string, msg: string): void {
  const st = state(sb);
  const n = (st.notes.get(kind) ?? 0) + 1;
  st.notes.set(kind, n);
  if (n <= 20) sb.log(msg);
  else if (n % 1000 === 0) sb.log(`${msg} (${n} of this kind so far)`);
}

/** A u64 field as a number; values of 2^53 and above (never a valid address or size) come back as -1. */
function u64(buf: Buffer, off: number): number {
  const v = buf.readBigUInt64LE(off);
  return v >= 2n ** 53n ? -1 : Number(v);
}

/** Runs `fn` on a sentry-owned duplicate of the task's fd `fd`, closed afterwards on every path. */
function withDup(t: Task, fd: number, fn: (dup: number) => Reply): Reply {
  const dup = t.getFd(fd);
  if (dup < 0) return fail(-dup);
  try {
    return fn(dup);
  } finally {
    k.close(dup);
  }
}

/** Copies a socket address argument: its bytes, or -EINVAL (length outside 2..128) / -EFAULT. */
function readAddr(t: Task, ptr: number, len: number): Buffer | number {
  if (len < 2 || len > MAX_ADDR_LEN) return -E.EINVAL;
  return t.read(ptr, len) ?? -E.EFAULT;
}

/** A struct sockaddr_un naming `path` (NUL-terminated, as the kernel reports it). */
function sunAddr(path: Buffer): Buffer {
  const out = Buffer.alloc(2 + path.length + 1);
  out.writeUInt16LE(AF.UNIX, 0);
  path.copy(out, 2);
  return out;
}

/** A struct sockaddr_un of an abstract name (a leading NUL, no terminator). */
function abstractAddr(name: Buffer): Buffer {
  const out = Buffer.alloc(3 + name.length);
  out.writeUInt16LE(AF.UNIX, 0);
  name.copy(out, 3);
  return out;
}

/** The abstract address the sandbox really uses for `name`: prefixed once, or -EINVAL if too long. */
function prefixedAbstract(sb: Sandbox, name: Buffer): Buffer | number {
  const { prefix } = state(sb);
  // a name that already carries the prefix came from getsockname/accept/recvfrom: keep it
  const full = name.length >= prefix.length && name.subarray(0, prefix.length).equals(prefix) ? name : Buffer.concat([prefix, name]);
  return full.length + 1 > SUN_PATH_MAX + 1 ? -E.EINVAL : abstractAddr(full);
}

/** A unix path as an absolute container path (relative ones against the task's cwd), or -EACCES. */
function absolutePath(t: Task, path: Buffer): Buffer | number {
  if (path[0] === 0x2f) return path;
  const cwd = t.cwd();
  if (!cwd) return -E.EACCES;
  return cwd.length > 0 && cwd[cwd.length - 1] === 0x2f ? Buffer.concat([cwd, path]) : Buffer.concat([cwd, Buffer.of(0x2f), path]);
}

/** Where a sentry-performed call goes: the address to pass, and an fd to close after the call (or -1). */
interface Target {
  addr: Buffer;
  fd: number;
}

/** Closes a Target's fd, if it has one. */
function release(target: Target | null): void {
  if (target && target.fd >= 0) k.close(target.fd);
}

/** "a.b.c.d:port" or "[v6]:port", for log lines. */
function endpoint(family: 4 | 6, addr: Buffer, port: number): string {
  return family === 4 ? `${formatAddr(4, addr)}:${port}` : `[${formatAddr(6, addr)}]:${port}`;
}

/** Checks an IP destination against the policy: 0, or -errno (logged). */
function checkDestination(t: Task, sb: Sandbox, family: 4 | 6, addr: Buffer, port: number, call: string): number {
  const policy = sb.network;
  if (egressAllowed(policy, family, addr, port)) return 0;
  const dest = endpoint(family, addr, port);
  switch (policy.mode) {
    case 'none':
      note(sb, 'none', `refused ${call} to ${dest} from tid ${t.tid}: network policy none`);
      return -E.EACCES;
    case 'loopback':
      note(sb, 'loopback', `refused ${call} to ${dest} from tid ${t.tid}: network policy loopback`);
      return -E.ENETUNREACH;
    case 'pod':
      return 0; // not reached: the namespace's routes decide
    case 'egress':
      note(sb, 'egress', `refused egress to ${dest} (${call} from tid ${t.tid}): no --allow-egress rule covers it`);
      // the VMM's libslirp (4.7) frees a packet twice when connect fails at once with
      // ECONNREFUSED and QEMU crashes; EHOSTUNREACH makes it answer the guest with an ICMP error
      return sb.level === 'network' ? -E.EHOSTUNREACH : -E.ECONNREFUSED;
  }
}

/**
 * Opens the socket inode a workload path names, inside the container root (symlinks followed
 * there, never out of it): an O_PATH fd, reached as /proc/self/fd/N so the kernel acts on
 * exactly that inode. The sentry runs with the workload's credentials, so the kernel checks
 * search and write permission. Sentry-side names the workload learned from accept or recvfrom
 * are mapped back to the path they were bound as.
 */
function openPeer(t: Task, sb: Sandbox, path: Buffer): number {
  const back = states.get(sb)?.paths.get(path.toString('latin1'));
  const abs = back ? back.abs : absolutePath(t, path);
  if (typeof abs === 'number') return abs;
  const fd = openInRoot(sb, abs, k.O.PATH);
  if (fd < 0) return fd;
  const st = statFd(fd);
  if (typeof st === 'number' || (st.readUInt32LE(24) & S_IFMT) !== S_IFSOCK) {
    k.close(fd);
    return typeof st === 'number' ? st : -E.ECONNREFUSED; // what connect(2) says of a non-socket
  }
  return fd;
}

/** The address a connect or send really uses (prefixed, re-rooted, or checked), or -errno. */
function destination(t: Task, sb: Sandbox, raw: Buffer, call: 'connect' | 'sendto' | 'sendmsg'): Target | number {
  const sa = decodeSockaddr(raw);
  if (!sa) return -E.EINVAL;
  switch (sa.family) {
    case 'unix': {
      if (sa.abstract) {
        const a = prefixedAbstract(sb, sa.path);
        return typeof a === 'number' ? a : { addr: a, fd: -1 };
      }
      if (sa.path.length === 0) return -E.EINVAL; // unnamed: nothing to reach
      const fd = openPeer(t, sb, sa.path);
      return fd < 0 ? fd : { addr: sunAddr(Buffer.from(`/proc/self/fd/${fd}`, 'latin1')), fd };
    }
    case 4:
    case 6: {
      const rc = checkDestination(t, sb, sa.family, sa.addr, sa.port, call);
      return rc < 0 ? rc : { addr: raw, fd: -1 };
    }
    default:
      // connect(AF_UNSPEC) disconnects, whatever the socket; a send with AF_UNSPEC is taken by
      // IPv4 UDP as AF_INET (udp_sendmsg), so it is refused. Any other family is rejected by
      // the kernel unless it is the socket's own (netlink, in the sandbox's namespace).
      if (sa.af === AF.UNSPEC && call !== 'connect') return -E.EAFNOSUPPORT;
      return { addr: raw, fd: -1 };
  }
}

/** The socket's SOCK_* type, or -errno (ENOTSOCK for another kind of fd). */
function sockType(dup: number): number {
  return k.getsockoptInt(dup, SOL_SOCKET, SO_TYPE);
}

const SIGPIPE = 13;

/**
 * A send's result as the caller gets it: an EPIPE without MSG_NOSIGNAL raises SIGPIPE in the
 * calling thread, as the kernel does for its own sends; it is delivered when the call returns.
 * The thread acts as the caller here, so the kernel checks the caller's right to signal itself.
 */
function withSigpipe(t: Task, flags: number, rc: number): number {
  // refused (the caller may not signal itself?) or gone: the call still fails with EPIPE
  if (rc === -E.EPIPE && (flags & MSG_NOSIGNAL) === 0 && t.valid()) k.tgkill(t.tgid, t.tid, SIGPIPE);
  return rc;
}

/** Flags of a send the sentry performs: no zero-copy (its buffer is transient), no SIGPIPE to the sentry. */
function sendFlags(flags: number): number {
  return (flags & ~MSG_ZEROCOPY) | MSG_NOSIGNAL;
}

/** Whether a socket address names the netlink family (sockaddr_nl: family, pad, nl_pid, nl_groups). */
function isNetlinkAddr(raw: Buffer): boolean {
  return raw.length >= 2 && raw.readUInt16LE(0) === AF.NETLINK;
}

/**
 * Binds a netlink socket of the workload that asked the kernel to choose its port id (nl_pid 0
 * in a bind, or the implicit bind of a connect or send to a netlink address, both performed by
 * the sentry): the kernel would pick the binding process's pid, which is the sentry's host pid
 * and not for the sandbox to learn. The socket gets the caller's pid in the sandbox, as the
 * caller's own bind would, or, if that is taken, a negative id, as the kernel's fallback picks.
 */
function bindNetlink(t: Task, dup: number, groups: number): number {
  const addr = Buffer.alloc(12);
  addr.writeUInt16LE(AF.NETLINK, 0);
  addr.writeUInt32LE(groups >>> 0, 8);
  const own = nsPid(t.tgid);
  for (let i = 0; i < 64; i++) {
    addr.writeInt32LE(i === 0 && own > 0 ? own : -4096 - Math.floor(Math.random() * 0x7fff0000), 4);
    const rc = k.bind(dup, addr);
    if (rc !== -E.EADDRINUSE) return rc;
  }
  return -E.EADDRINUSE;
}

/** Whether `dup` is a netlink socket with no port id yet (a bound one, or an error, is left to the kernel's call). */
function unboundNetlink(dup: number): boolean {
  if (k.getsockoptInt(dup, SOL_SOCKET, SO_DOMAIN) !== AF.NETLINK) return false;
  const own = k.getsockname(dup);
  return typeof own !== 'number' && own.length >= 8 && own.readUInt32LE(4) === 0;
}

/** Before the sentry connects or sends to a netlink address: binds an unbound netlink socket (bindNetlink); 0 or -errno. */
function netlinkBound(t: Task, dup: number, dest: Buffer): number {
  return isNetlinkAddr(dest) && unboundNetlink(dup) ? bindNetlink(t, dup, 0) : 0;
}

// ---------------------------------------------------------------------------------------------
// socket, socketpair

/** socket(2): the family and type against the policy; IP sockets under `egress` are the sentry's. */
function sysSocket(t: Task, sb: Sandbox): Reply {
  const domain = t.int(0);
  const type = t.int(1);
  const proto = t.int(2);
  const base = type & SOCK_TYPE_MASK;
  switch (domain) {
    case AF.UNIX:
      return CONTINUE; // lives in the sandbox; paths and names are checked at bind/connect/send
    case AF.NETLINK:
      // route netlink sees only the sandbox's own network namespace
      return proto === NETLINK_ROUTE ? CONTINUE : fail(E.EAFNOSUPPORT);
    case AF.INET:
    case AF.INET6:
      break;
    case AF.PACKET:
      note(sb, 'raw', `refused socket(AF_PACKET) from tid ${t.tid}: raw packet access is never allowed`);
      return fail(E.EACCES);
    default:
      return fail(E.EAFNOSUPPORT);
  }
  const fam = domain === AF.INET ? 'AF_INET' : 'AF_INET6';
  if ((type & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC)) !== 0) return fail(E.EINVAL);
  if (base === SOCK_RAW) {
    note(sb, 'raw', `refused socket(${fam}, SOCK_RAW) from tid ${t.tid}: raw sockets are never allowed`);
    return fail(E.EACCES);
  }
  if (base !== SOCK_STREAM && base !== SOCK_DGRAM) return fail(ESOCKTNOSUPPORT);
  if (base === SOCK_DGRAM && (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6)) {
    note(sb, 'raw', `refused socket(${fam}, SOCK_DGRAM, ICMP) from tid ${t.tid}: ping sockets are not allowed`);
    return fail(E.EACCES);
  }
  if (proto !== 0 && !(base === SOCK_STREAM && proto === IPPROTO_TCP) && !(base === SOCK_DGRAM && proto === IPPROTO_UDP)) {
    return fail(E.EPROTONOSUPPORT);
  }
  switch (sb.network.mode) {
    case 'none':
      note(sb, 'none', `refused socket(${fam}) from tid ${t.tid}: network policy none`);
      return fail(E.EACCES);
    case 'loopback':
      return CONTINUE; // made in the sandbox's namespace, whose only interface is lo
    case 'pod':
      return CONTINUE; // made in the sandbox's namespace, with the interfaces its engine put there
    case 'egress': {
      const fd = k.socket(domain, type | SOCK_CLOEXEC, proto);
      if (fd < 0) return fail(-fd);
      note(sb, 'socket', `socket(${fam}, ${base === SOCK_STREAM ? 'SOCK_STREAM' : 'SOCK_DGRAM'}) for tid ${t.tid} made on the host network (egress policy)`);
      return giveFd(fd, (type & SOCK_CLOEXEC) !== 0);
    }
  }
}

/** socketpair(2): unix pairs only (the kernel has no other kind); no address is involved. */
function sysSocketpair(t: Task): Reply {
  return t.int(0) === AF.UNIX ? CONTINUE : fail(E.EOPNOTSUPP);
}

// ---------------------------------------------------------------------------------------------
// bind

/**
 * Binds a unix socket to a workload path: the parent directory is opened inside the root and
 * the name is created through /proc/self/fd/<parent>/<name> (a final component is never
 * followed by bind). The inode gets the workload's umask (the sentry's is 0).
 */
function bindPath(t: Task, sb: Sandbox, dup: number, path: Buffer): Reply {
  const abs = absolutePath(t, path);
  if (typeof abs === 'number') return fail(-abs);
  const cut = abs.lastIndexOf(0x2f);
  const dir = cut === 0 ? Buffer.from('/') : abs.subarray(0, cut);
  const base = abs.subarray(cut + 1);
  const baseText = base.toString('latin1');
  if (base.length === 0 || baseText === '.' || baseText === '..') return fail(E.EINVAL);
  const parent = openInRoot(sb, dir, k.O.PATH | k.O.DIRECTORY);
  if (parent < 0) return fail(-parent);
  try {
    const where = Buffer.concat([Buffer.from(`/proc/self/fd/${parent}/`, 'latin1'), base]);
    if (where.length > SUN_PATH_MAX) return fail(E.ENAMETOOLONG);
    // the socket inode's own mode (fchmod before bind narrows it), less the workload's umask
    const own = statFd(dup);
    const sockMode = typeof own === 'number' ? 0o777 : own.readUInt32LE(24) & 0o777;
    const rc = k.bind(dup, sunAddr(where));
    if (rc < 0) return fail(-rc);
    const name = k.cpath(base);
    const made = Buffer.alloc(144);
    // the name was created just now by this bind; only a socket is changed, never followed
    if (k.fstatat(parent, name, made, k.AT.SYMLINK_NOFOLLOW) === 0 && (made.readUInt32LE(24) & S_IFMT) === S_IFSOCK) {
      k.fchmodat2(parent, name, sockMode & ~t.umask(), k.AT.SYMLINK_NOFOLLOW);
    }
    const st = state(sb);
    if (st.paths.size >= MAX_REMEMBERED) {
      const oldest = st.paths.keys().next();
      if (!oldest.done) st.paths.delete(oldest.value);
    }
    const key = where.toString('latin1');
    st.paths.delete(key); // newest last
    st.paths.set(key, { shown: Buffer.from(path), abs: Buffer.from(abs) });
    return ok(0);
  } finally {
    k.close(parent);
  }
}

/** bind(2). */
function sysBind(t: Task, sb: Sandbox): Reply {
  const len = t.int(2);
  // two bytes: a unix socket autobinds (in the sandbox's own namespace); every other family
  // refuses an address that short (EINVAL), whatever the bytes say by the time the kernel reads
  if (len === 2) return CONTINUE;
  return withDup(t, t.int(0), (dup) => {
    const raw = readAddr(t, t.num(1), len);
    if (typeof raw === 'number') return fail(-raw);
    const sa = decodeSockaddr(raw);
    if (!sa) return fail(E.EINVAL);
    switch (sa.family) {
      case 'unix': {
        if (!sa.abstract) return bindPath(t, sb, dup, sa.path);
        const a = prefixedAbstract(sb, sa.path);
        if (typeof a === 'number') return fail(-a);
        const rc = k.bind(dup, a);
        if (rc === 0) state(sb).abstract = true;
        return fromResult(rc);
      }
      case 4:
      case 6: {
        const mode = sb.network.mode;
        if (mode === 'none') {
          note(sb, 'none', `refused bind to ${endpoint(sa.family, sa.addr, sa.port)} from tid ${t.tid}: network policy none`);
          return fail(E.EACCES);
        }
        if (mode === 'egress' && sa.port !== 0) {
          // the socket is on the host network: no port of the host is handed to the workload
          note(sb, 'bind', `refused bind to ${endpoint(sa.family, sa.addr, sa.port)} from tid ${t.tid}: egress policy allows only port 0`);
          return fail(E.EACCES);
        }
        return fromResult(k.bind(dup, raw));
      }
      default:
        // IPv4 takes AF_UNSPEC with INADDR_ANY as AF_INET (inet_bind): only in the sandbox's namespace
        if (sa.af === AF.UNSPEC && sb.network.mode !== 'loopback' && sb.network.mode !== 'pod') return fail(E.EAFNOSUPPORT);
        // nl_pid 0 on an unbound socket: the kernel would choose (a bound one answers EINVAL itself)
        if (sa.af === AF.NETLINK && raw.length >= 12 && raw.readUInt32LE(4) === 0 && unboundNetlink(dup)) {
          return fromResult(bindNetlink(t, dup, raw.readUInt32LE(8)));
        }
        return fromResult(k.bind(dup, raw));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// connect, listen

/** connect(2): performed by the sentry on the duplicate, to the checked (or re-rooted) address. */
function sysConnect(t: Task, sb: Sandbox): Reply {
  const len = t.int(2);
  return withDup(t, t.int(0), (dup) => {
    const raw = readAddr(t, t.num(1), len);
    if (typeof raw === 'number') return fail(-raw);
    const target = destination(t, sb, raw, 'connect');
    if (typeof target === 'number') return fail(-target);
    try {
      const bound = netlinkBound(t, dup, target.addr);
      if (bound < 0) return fail(-bound);
      if (t.onWorker && isIpStream(dup)) return fromResult(connectInterruptibly(t, dup, target.addr));
      return fromResult(k.connect(dup, target.addr));
    } finally {
      release(target);
    }
  });
}

/** Whether `dup` is a TCP-like socket: IPv4 or IPv6, SOCK_STREAM. */
function isIpStream(dup: number): boolean {
  const domain = k.getsockoptInt(dup, SOL_SOCKET, SO_DOMAIN);
  return (domain === AF.INET || domain === AF.INET6) && sockType(dup) === SOCK_STREAM;
}

/**
 * connect(2) of a blocking IP stream socket on a worker, which a signal ends as it would the
 * kernel's own wait: started non-blocking (O_NONBLOCK set on the shared open file for that one
 * call), then waited for with poll in 50 ms steps, each of which checks the caller. -ERESTARTSYS
 * once it has a signal pending (the kernel then restarts the connect, which waits on, EALREADY
 * here, or fails it with EINTR); -EINPROGRESS once the socket's SO_SNDTIMEO has passed (the
 * kernel's connect answers so, and the connection goes on); else the outcome, from SO_ERROR.
 * The caller waits killably (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV): a blocking connect in the
 * worker could otherwise keep it waiting through every handled signal until the connection
 * succeeded or timed out.
 */
function connectInterruptibly(t: Task, dup: number, addr: Buffer): number {
  const until = performance.now() + sendTimeoutMs(dup);
  const fl = k.fcntl(dup, F_GETFL);
  if (fl < 0) return fl;
  const set = k.fcntl(dup, F_SETFL, fl | k.O.NONBLOCK);
  if (set < 0) return set;
  let rc: number;
  try {
    rc = k.connect(dup, addr);
  } finally {
    k.fcntl(dup, F_SETFL, fl);
  }
  if (rc !== -E.EINPROGRESS && rc !== -E.EALREADY) return rc;
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(dup, 0);
  pfd.writeInt16LE(POLLOUT, 4);
  for (;;) {
    pfd.writeInt16LE(0, 6);
    if (k.poll(pfd, 1, stepMs(until)) > 0) {
      const err = k.getsockoptInt(dup, SOL_SOCKET, SO_ERROR);
      return err <= 0 ? err : -err;
    }
    const stop = interruption(t);
    if (stop < 0) return stop;
    // the socket's SO_SNDTIMEO ran out: the kernel's connect says EINPROGRESS and goes on connecting
    if (performance.now() >= until) return -E.EINPROGRESS;
  }
}

/** SO_SNDTIMEO (x86_64: a struct timeval): how long a blocking connect or send may wait. */
const SO_SNDTIMEO = 21;

/** A socket's SO_SNDTIMEO in ms; Infinity if it has none (0), or if it cannot be read. */
function sendTimeoutMs(dup: number): number {
  const tv = Buffer.alloc(16);
  if (k.getsockoptBuf(dup, SOL_SOCKET, SO_SNDTIMEO, tv) !== 16) return Infinity;
  const ms = Number(tv.readBigInt64LE(0)) * 1000 + Number(tv.readBigInt64LE(8)) / 1000;
  return ms > 0 ? ms : Infinity;
}

/** The next poll's timeout: a WAIT_RECHECK_MS step, shorter if the deadline `until` comes first. */
function stepMs(until: number): number {
  return Math.max(0, Math.min(WAIT_RECHECK_MS, Math.ceil(until - performance.now())));
}

/**
 * listen(2): no pointer. Outside `egress` every socket is in the sandbox's namespace
 * (CONTINUE). Under `egress` IP sockets are on the host network, where the workload may not
 * accept connections: refused; other sockets listen through the duplicate (the fd number could
 * be swapped for an IP socket between a check and a CONTINUE).
 */
function sysListen(t: Task, sb: Sandbox): Reply {
  if (sb.network.mode !== 'egress') return CONTINUE;
  return withDup(t, t.int(0), (dup) => {
    const domain = k.getsockoptInt(dup, SOL_SOCKET, SO_DOMAIN);
    if (domain < 0) return fail(-domain);
    if (domain === AF.INET || domain === AF.INET6) {
      note(sb, 'listen', `refused listen on an IP socket from tid ${t.tid}: the egress policy admits no incoming connections`);
      return fail(E.EACCES);
    }
    return fromResult(k.listen(dup, t.int(1)));
  });
}

// ---------------------------------------------------------------------------------------------
// sends

/**
 * A send the sentry performs, which on a worker (a blocking socket, no MSG_DONTWAIT) a signal
 * ends as it would the kernel's own wait: tried with MSG_DONTWAIT and, while the socket has no
 * room, waited for with poll in 50 ms steps that check the caller. A stream's bytes go on until
 * all `len` are sent, as a blocking send does; once the caller has a signal pending the answer is
 * the count sent so far, or -ERESTARTSYS if none (the kernel then restarts the send or fails it
 * with EINTR); once the socket's SO_SNDTIMEO has passed, the count or -EAGAIN, as the kernel's
 * send answers. `send(flags, from)` sends the bytes from offset `from`. Elsewhere it runs once.
 */
function sendWaiting(t: Task, dup: number, flags: number, len: number, send: (flags: number, from: number) => number): number {
  if (!t.onWorker || (flags & MSG_DONTWAIT) !== 0) return send(flags, 0);
  const fl = k.fcntl(dup, F_GETFL);
  if (fl < 0 || (fl & k.O.NONBLOCK) !== 0) return send(flags, 0);
  const until = performance.now() + sendTimeoutMs(dup);
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(dup, 0);
  pfd.writeInt16LE(POLLOUT, 4);
  let sent = 0;
  let full = 0; // EAGAINs in a row although poll said there was room
  for (;;) {
    const rc = send(flags | MSG_DONTWAIT, sent);
    if (rc >= 0) sent += rc;
    else if (rc !== -E.EAGAIN) return sent > 0 ? sent : rc;
    if (sent >= len || (rc > 0 && sockType(dup) !== SOCK_STREAM)) return sent;
    full = rc < 0 ? full + 1 : 0;
    const stop = interruption(t);
    if (stop < 0) return stop === -E.ERESTARTSYS && sent > 0 ? sent : stop;
    // the socket's SO_SNDTIMEO ran out: what was sent, or EAGAIN, as the kernel's send answers
    if (performance.now() >= until) return sent > 0 ? sent : -E.EAGAIN;
    // an unconnected datagram socket polls writable while its peer's queue is full (poll cannot
    // see the peer): after a second such EAGAIN, try again in 5 ms rather than at once
    pfd.writeInt16LE(0, 6);
    if (full >= 2) k.poll(pfd, 0, Math.min(5, stepMs(until)));
    else k.poll(pfd, 1, stepMs(until));
  }
}

/** Reads a payload for a send: at most 64 KiB (datagrams above get -EMSGSIZE, streams a short write). */
function readPayload(t: Task, ptr: number, len: number, stream: boolean): Buffer | number {
  let n = len;
  if (n < 0 || n > MAX_PAYLOAD) {
    if (!stream) return -EMSGSIZE;
    n = MAX_PAYLOAD;
  }
  if (n === 0) return Buffer.alloc(0);
  return t.read(ptr, n) ?? -E.EFAULT;
}

/** sendto(2): without an address the kernel runs it; with one, the sentry sends the copied bytes. */
function sysSendto(t: Task, sb: Sandbox): Reply {
  const addrPtr = t.num(4);
  // a NULL address is a register: nothing the kernel reads later can add a destination
  if (addrPtr === 0) return CONTINUE;
  const flags = t.int(3);
  return withDup(t, t.int(0), (dup) => {
    const type = sockType(dup);
    if (type < 0) return fail(-type);
    const raw = readAddr(t, addrPtr, t.int(5));
    if (typeof raw === 'number') return fail(-raw);
    const target = destination(t, sb, raw, 'sendto');
    if (typeof target === 'number') return fail(-target);
    try {
      const data = readPayload(t, t.num(1), t.num(2), type === SOCK_STREAM);
      if (typeof data === 'number') return fail(-data);
      const bound = netlinkBound(t, dup, target.addr);
      if (bound < 0) return fail(-bound);
      return fromResult(withSigpipe(t, flags, sendWaiting(t, dup, flags, data.length, (f, from) => k.sendto(dup, data.subarray(from), sendFlags(f), target.addr))));
    } finally {
      release(target);
    }
  });
}

/** A message copied out of the workload for a send the sentry performs. */
interface OutMsg {
  name: Buffer | null;
  data: Buffer;
  control: Buffer | null;
  /** Sentry-owned duplicates of the SCM_RIGHTS fds (closed after the send). */
  fds: number[];
}

/** Whether a struct msghdr names a destination (the kernel ignores a name of length 0). */
function hasName(hdr: Buffer): boolean {
  return hdr.readBigUInt64LE(0) !== 0n && hdr.readInt32LE(8) !== 0;
}

/** Gathers the iovecs of a message: at most 1024 of them and 64 KiB in all (see readPayload). */
function gather(t: Task, iovPtr: number, iovlen: number, stream: boolean): Buffer | number {
  if (iovlen < 0 || iovlen > UIO_MAXIOV) return -EMSGSIZE;
  if (iovlen === 0) return Buffer.alloc(0);
  const iov = t.read(iovPtr, iovlen * 16);
  if (!iov) return -E.EFAULT;
  const chunks: Buffer[] = [];
  let total = 0;
  for (let i = 0; i < iovlen; i++) {
    const base = u64(iov, i * 16);
    const len = u64(iov, i * 16 + 8);
    if (len === 0) continue;
    const want = len < 0 ? Infinity : len;
    const room = MAX_PAYLOAD - total;
    if (want > room && !stream) return -EMSGSIZE;
    const take = Math.min(want, room);
    if (take === 0) break; // a stream's 64 KiB are full: a short write
    const chunk = t.read(base, take);
    if (!chunk) return -E.EFAULT;
    chunks.push(chunk);
    total += take;
  }
  return Buffer.concat(chunks, total);
}

/**
 * Checks a control buffer and makes the sentry's copy of it: SCM_RIGHTS fds become
 * duplicates of the workload's fds (the numbers are looked up in the sentry's fd table by the
 * kernel), other messages must be on ALLOWED_CMSGS. Returns the copy and the duplicates, or
 * -errno (every duplicate closed).
 */
function checkControl(t: Task, sb: Sandbox, ctl: Buffer): { control: Buffer; fds: number[] } | number {
  const out = Buffer.from(ctl);
  const fds: number[] = [];
  const bail = (errno: number): number => {
    for (const fd of fds) k.close(fd);
    return -errno;
  };
  // for_each_cmsghdr: a header must fit whole; cmsg_len covers it and stays in the buffer
  for (let off = 0; off + 16 <= out.length; ) {
    const len = u64(out, off);
    const level = out.readInt32LE(off + 8);
    const type = out.readInt32LE(off + 12);
    if (len < 16 || len > out.length - off) return bail(E.EINVAL);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const n = Math.floor((len - 16) / 4);
      if (fds.length + n > SCM_MAX_FD) return bail(E.EINVAL);
      for (let i = 0; i < n; i++) {
        const at = off + 16 + i * 4;
        const dup = t.getFd(out.readInt32LE(at));
        if (dup < 0) return bail(E.EBADF);
        fds.push(dup);
        out.writeInt32LE(dup, at);
      }
    } else if (!ALLOWED_CMSGS.has(opt(level, type))) {
      note(sb, 'cmsg', `refused a control message (level ${level}, type ${type}) in a send from tid ${t.tid}`);
      return bail(E.EPERM);
    }
    off += (len + 7) & ~7; // CMSG_ALIGN
  }
  return { control: out, fds };
}

/**
 * Copies a struct msghdr's name, data and control (see gather and checkControl), or -errno.
 * Exported for the fuzz tests: it parses workload memory and reaches the host only through
 * `t.getFd` (SCM_RIGHTS) and closing what that returned.
 */
export function readMsg(t: Task, sb: Sandbox, hdr: Buffer, stream: boolean): OutMsg | number {
  let name: Buffer | null = null;
  if (hasName(hdr)) {
    const namelen = hdr.readInt32LE(8);
    if (namelen < 0) return -E.EINVAL;
    name = t.read(u64(hdr, 0), Math.min(namelen, MAX_ADDR_LEN));
    if (!name) return -E.EFAULT;
  }
  const data = gather(t, u64(hdr, 16), u64(hdr, 24), stream);
  if (typeof data === 'number') return data;
  const ctlPtr = u64(hdr, 32);
  const ctlLen = u64(hdr, 40);
  if (ctlLen === 0) return { name, data, control: null, fds: [] };
  if (ctlLen < 0 || ctlLen > MAX_CONTROL) return -ENOBUFS;
  const ctl = t.read(ctlPtr, ctlLen);
  if (!ctl) return -E.EFAULT;
  const checked = checkControl(t, sb, ctl);
  if (typeof checked === 'number') return checked;
  return { name, data, control: checked.control, fds: checked.fds };
}

/** Sends one message (a struct msghdr already copied) through the duplicate: the count, or -errno. */
function sendOne(t: Task, sb: Sandbox, dup: number, type: number, hdr: Buffer, flags: number): number {
  const msg = readMsg(t, sb, hdr, type === SOCK_STREAM);
  if (typeof msg === 'number') return msg;
  let target: Target | null = null;
  try {
    if (msg.name) {
      const tg = destination(t, sb, msg.name, 'sendmsg');
      if (typeof tg === 'number') return tg;
      target = tg;
      const bound = netlinkBound(t, dup, tg.addr);
      if (bound < 0) return bound;
    }
    const to = target ? target.addr : null;
    // the control data (SCM_RIGHTS, credentials) goes with the first bytes only, as the kernel's own partial send
    return withSigpipe(t, flags, sendWaiting(t, dup, flags, msg.data.length, (f, from) => k.sendmsg(dup, msg.data.subarray(from), sendFlags(f), to, from === 0 ? msg.control : null)));
  } finally {
    release(target);
    for (const fd of msg.fds) k.close(fd);
  }
}

/**
 * sendmsg(2). Under `egress` the sentry performs every one: msg_name is in memory the workload
 * can change after a check, and the fd could be swapped for a host-network socket, so a
 * CONTINUE could send anywhere. Elsewhere, a message without a name continues (SCM_RIGHTS
 * between the sandbox's own sockets stays in the kernel): a name written in after the check is
 * resolved by the kernel in the workload's own mount and network namespaces, which reach
 * nothing outside the sandbox. A message with a name is performed by the sentry.
 */
function sysSendmsg(t: Task, sb: Sandbox): Reply {
  const hdr = t.read(t.num(1), MSGHDR_SIZE);
  if (!hdr) return fail(E.EFAULT);
  if (sb.network.mode !== 'egress' && !hasName(hdr)) return CONTINUE;
  const flags = t.int(2);
  return withDup(t, t.int(0), (dup) => {
    const type = sockType(dup);
    if (type < 0) return fail(-type);
    return fromResult(sendOne(t, sb, dup, type, hdr, flags));
  });
}

/**
 * sendmmsg(2): continues when no message has a name (outside `egress`, as sendmsg); otherwise
 * the sentry sends the messages one by one as sendmsg does, writing each msg_len back, and
 * returns how many were sent (an error only if the first fails).
 */
function sysSendmmsg(t: Task, sb: Sandbox): Reply {
  const vecPtr = t.num(1);
  const vlen = Math.min(t.int(2) >>> 0, UIO_MAXIOV);
  const flags = t.int(3);
  if (vlen === 0) return CONTINUE; // nothing is read: the kernel checks the fd and returns 0
  const vec = t.read(vecPtr, vlen * MMSGHDR_SIZE);
  if (!vec) return fail(E.EFAULT);
  const hdrs: Buffer[] = [];
  for (let i = 0; i < vlen; i++) hdrs.push(vec.subarray(i * MMSGHDR_SIZE, i * MMSGHDR_SIZE + MSGHDR_SIZE));
  if (sb.network.mode !== 'egress' && !hdrs.some(hasName)) return CONTINUE;
  return withDup(t, t.int(0), (dup) => {
    const type = sockType(dup);
    if (type < 0) return fail(-type);
    let sent = 0;
    const lenBuf = Buffer.alloc(4);
    for (const hdr of hdrs) {
      const rc = sendOne(t, sb, dup, type, hdr, flags);
      if (rc < 0) return sent === 0 ? fail(-rc) : ok(sent);
      lenBuf.writeUInt32LE(rc);
      if (!t.write(vecPtr + sent * MMSGHDR_SIZE + MSGHDR_SIZE, lenBuf)) return sent === 0 ? fail(E.EFAULT) : ok(sent);
      sent++;
    }
    return ok(sent);
  });
}

// ---------------------------------------------------------------------------------------------
// names

/** The address the workload should see for a sentry-side unix name, or null if it is not one. */
function shownName(st: NetState, addr: Buffer): Buffer | null {
  const sa = decodeSockaddr(addr);
  if (!sa || sa.family !== 'unix' || sa.path.length === 0) return null;
  if (sa.abstract) {
    const { prefix } = st;
    if (sa.path.length < prefix.length || !sa.path.subarray(0, prefix.length).equals(prefix)) return null;
    return abstractAddr(sa.path.subarray(prefix.length));
  }
  const bound = st.paths.get(sa.path.toString('latin1'));
  return bound ? sunAddr(bound.shown) : null;
}

/**
 * getsockname(2) / getpeername(2): no pointer is checked, so they continue, unless the sandbox
 * bound unix names through the sentry; then a sentry-side name (a prefixed abstract name, a
 * /proc/self/fd path) is reported as the name the workload bound (truncated to *addrlen, the
 * full length written back, as the kernel does). The sentry-side names remembered for paths
 * are keyed by the sentry's fd number, which is reused: after many binds an old name may be
 * reported as a newer bind's.
 */
function nameHandler(peer: boolean): Handler {
  return (t, sb) => {
    const st = states.get(sb);
    if (!st || (!st.abstract && st.paths.size === 0)) return CONTINUE;
    return withDup(t, t.int(0), (dup) => {
      const got = peer ? k.getpeername(dup) : k.getsockname(dup);
      if (typeof got === 'number') return fail(-got);
      const shown = shownName(st, got);
      if (!shown) return CONTINUE;
      const addrPtr = t.num(1);
      const lenPtr = t.num(2);
      const lenBuf = t.read(lenPtr, 4);
      if (!lenBuf) return fail(E.EFAULT);
      const room = lenBuf.readInt32LE(0);
      if (room < 0) return fail(E.EINVAL);
      const n = Math.min(room, shown.length);
      if (n > 0 && !t.write(addrPtr, shown.subarray(0, n))) return fail(E.EFAULT);
      lenBuf.writeUInt32LE(shown.length);
      return t.write(lenPtr, lenBuf) ? ok(0) : fail(E.EFAULT);
    });
  };
}

// ---------------------------------------------------------------------------------------------
// options

/** setsockopt(2): level and name are registers; the few options that escape the policy get EPERM. */
function sysSetsockopt(t: Task, sb: Sandbox): Reply {
  const level = t.int(1);
  const name = t.int(2);
  const refused = REFUSED_OPTIONS.get(opt(level, name));
  if (refused === undefined) return CONTINUE;
  note(sb, 'sockopt', `refused setsockopt(${refused}) from tid ${t.tid}`);
  return fail(E.EPERM);
}

const pass = (): Reply => CONTINUE;

/** Whether a task's fd is a blocking socket (no O_NONBLOCK on the shared file description). */
function isBlocking(t: Task, fd: number): boolean {
  const dup = t.getFd(fd);
  if (dup < 0) return false;
  try {
    const fl = k.fcntl(dup, F_GETFL);
    return fl >= 0 && (fl & k.O.NONBLOCK) === 0;
  } finally {
    k.close(dup);
  }
}

/**
 * Whether the socket call of `t` may block in the sentry (so the core runs it on a worker
 * thread): connect on a blocking socket, and sends the sentry performs (with an address, or
 * every sendmsg/sendmmsg under `egress`) on a blocking socket without MSG_DONTWAIT. Without
 * `sb` the policy is unknown and every sendmsg/sendmmsg on a blocking socket counts.
 */
export function mayBlock(name: string, t: Task, sb?: Sandbox): boolean {
  const sentrySends = (hdrs: () => Buffer[]): boolean => sb === undefined || sb.network.mode === 'egress' || hdrs().some(hasName);
  switch (name) {
    case 'connect':
      return isBlocking(t, t.int(0));
    case 'sendto':
      return t.num(4) !== 0 && (t.int(3) & MSG_DONTWAIT) === 0 && isBlocking(t, t.int(0));
    case 'sendmsg': {
      if ((t.int(2) & MSG_DONTWAIT) !== 0) return false;
      const hdr = (): Buffer[] => {
        const h = t.read(t.num(1), MSGHDR_SIZE);
        return h ? [h] : [];
      };
      return sentrySends(hdr) && isBlocking(t, t.int(0));
    }
    case 'sendmmsg': {
      if ((t.int(3) & MSG_DONTWAIT) !== 0) return false;
      const vlen = Math.min(t.int(2) >>> 0, UIO_MAXIOV);
      const hdrs = (): Buffer[] => {
        const vec = vlen > 0 ? t.read(t.num(1), vlen * MMSGHDR_SIZE) : null;
        const out: Buffer[] = [];
        for (let i = 0; vec && i < vlen; i++) out.push(vec.subarray(i * MMSGHDR_SIZE, i * MMSGHDR_SIZE + MSGHDR_SIZE));
        return out;
      };
      return vlen > 0 && sentrySends(hdrs) && isBlocking(t, t.int(0));
    }
    default:
      return false;
  }
}

/** The socket family's handlers, keyed by syscall name. */
export const handlers: HandlerTable = {
  socket: sysSocket,
  socketpair: sysSocketpair,
  bind: sysBind,
  connect: sysConnect,
  listen: sysListen,
  // accept/accept4: the addr/addrlen pointers are outputs the kernel fills; the new socket is
  // in the listening socket's namespace, which the policy already admitted
  accept: pass,
  accept4: pass,
  sendto: sysSendto,
  // receives: every pointer is an output buffer (data, source address, control with SCM_RIGHTS
  // installed in the workload's own fd table); nothing is checked, so nothing can be swapped
  recvfrom: pass,
  recvmsg: pass,
  recvmmsg: pass,
  sendmsg: sysSendmsg,
  sendmmsg: sysSendmmsg,
  // shutdown: an fd and a value (SHUT_RD/WR/RDWR), no pointer
  shutdown: pass,
  getsockname: nameHandler(false),
  getpeername: nameHandler(true),
  // getsockopt: level and name are values, the option buffer is an output
  getsockopt: pass,
  setsockopt: sysSetsockopt,
};
