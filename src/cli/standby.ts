/**
 * The CLI's warm standby: a `moat` process already booted (Node, Moat's bundle loaded, the code
 * paths of create warmed up), waiting on a socket of its user for the native front end
 * (native/moat.c, `dist/moat`) to hand it one command. Taken, it becomes that command's process:
 * it copies the caller's fds 0-2 (pidfd_getfd on the connection's SO_PEERPIDFD), takes its
 * working directory, umask, arguments and environment, runs the command as a cold `moat` would
 * and reports the exit code. One command per standby; the front end starts the next one. The
 * protocol and the context rules are in native/moat.c's header.
 *
 * The standby runs a command only for a caller of its own context (cliContext: credentials,
 * capabilities, namespaces, cgroups, limits and the rest a child inherits), checked here from
 * /proc against its own, and only commands whose processes end with the command or whose
 * parent does not matter (standbyPasses): a detached run or a create leaves processes that
 * belong in the caller's tree (containerd's shim and conmon reap them), so those pass.
 */
import { closeSync, fstatSync, lstatSync, openSync, readFileSync, readlinkSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import * as k from '../sys/kernel.js';
import { leaveIdlePriority } from '../sys/libc.js';
import { decodeRecords, encodeRecords } from '../shim/claim.js';
import { buildStamp, watchBuild } from '../util/buildstamp.js';
import type { ClaimRecord } from '../shim/claim.js';

/** How long an unclaimed standby waits before it exits. */
export const CLI_STANDBY_IDLE_MS = 10 * 60_000;
/** The request's first bytes: the magic and the protocol version. */
export const CLI_MAGIC = Buffer.from('MOATCLI\x01', 'latin1');
const MAX_REQUEST = 1 << 20;
const T_ARG = 1;
const T_ENV = 2;
const TAGS: ReadonlySet<number> = new Set([T_ARG, T_ENV]);
const SOL_SOCKET = 1;
const SO_PEERPIDFD = 77;
const GO_TIMEOUT_MS = 5000;

/** A request the standby would not take, with the reason it tells the front end. */
export class StandbyPass extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'StandbyPass';
  }
}

const STATUS_KEYS = new Set(['Uid', 'Gid', 'Groups', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp', 'Cpus_allowed_list', 'Mems_allowed_list']);
const NAMESPACES = ['cgroup', 'ipc', 'mnt', 'net', 'pid', 'pid_for_children', 'time', 'time_for_children', 'user', 'uts'];

const readOr = (path: string, fallback: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
};

/**
 * What process `pid` ('self' for this one) hands on to a child, as text: two processes with the
 * same text start containers with the same credentials, capabilities, filters, namespaces,
 * root, cgroups, limits (Node's own raise of the soft open-files limit aside), LSM label, audit
 * identity, OOM adjustment, nice value, personality and the environment that shapes a process
 * from its start (`env`: its NODE_*, UV_*, LD_*, GLIBC_* and MALLOC_* entries). Throws when
 * part of it cannot be read.
 */
export function cliContext(pid: number | 'self', env: Record<string, string | undefined>): string {
  return readContext(pid, env).text;
}

/** cliContext's text, and the process's umask from the same read of its status. */
function readContext(pid: number | 'self', env: Record<string, string | undefined>): { text: string; umask: number } {
  const base = `/proc/${pid}`;
  const out = ['moat-cli-context 1'];
  let umask = Number.NaN;
  for (const line of readFileSync(`${base}/status`, 'utf8').split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const key = line.slice(0, colon);
    if (STATUS_KEYS.has(key)) out.push(line);
    else if (key === 'Umask') umask = parseInt(line.slice(colon + 1).trim(), 8);
  }
  for (const ns of NAMESPACES) {
    let target = '-';
    try {
      target = readlinkSync(`${base}/ns/${ns}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    out.push(`ns ${ns} ${target}`);
  }
  const root = statSync(`${base}/root`, { bigint: true });
  out.push(`root ${root.dev} ${root.ino}`);
  for (const line of readFileSync(`${base}/cgroup`, 'utf8').split('\n')) if (line) out.push(`cgroup ${line}`);
  for (const line of readFileSync(`${base}/limits`, 'utf8').split('\n').slice(1)) {
    const folded = line.trim().split(/\s+/).join(' ');
    if (!folded) continue;
    out.push(folded.startsWith('Max open files ') ? `limit Max open files - ${folded.split(' ').slice(4).join(' ')}` : `limit ${folded}`);
  }
  out.push(`lsm ${readOr(`${base}/attr/current`, '-').replace(/\0/g, '').trimEnd()}`);
  for (const w of ['loginuid', 'sessionid', 'oom_score_adj', 'personality']) out.push(`${w} ${readOr(`${base}/${w}`, '-').trimEnd()}`);
  const stat = readFileSync(`${base}/stat`, 'utf8');
  out.push(`nice ${stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]}`);
  const nodeEnv = Object.entries(env)
    .filter(([key, v]) => v !== undefined && /^(NODE_|UV_|LD_|GLIBC_|MALLOC_)/.test(key))
    .map(([key, v]) => `${key}=${v}`)
    .sort();
  for (const e of nodeEnv) out.push(`env ${e}`);
  return { text: out.join('\n'), umask };
}

const GLOBAL_WITH_VALUE = new Set(['--root', '--log', '--log-format', '--rootless', '--criu']);
const TAKEN = new Set(['run', 'state', 'list', 'ps', 'kill', 'start', 'delete', 'features']);

/**
 * Why the standby does not take `argv` (the arguments after the program name), or undefined
 * when it does: a foreground run and the commands that start nothing that outlives them.
 */
export function standbyPasses(argv: readonly string[], env: Record<string, string | undefined>): string | undefined {
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) break;
    if (GLOBAL_WITH_VALUE.has(a)) i++;
    else if (a === '-v' || a === '--version' || a === '-h' || a === '--help') return undefined;
  }
  const command = argv[i];
  if (command === undefined) return 'no command';
  if (!TAKEN.has(command)) return `"${command}" runs in a process of its own`;
  if (command !== 'run') return undefined;
  if (env['LISTEN_FDS'] !== undefined) return 'LISTEN_FDS: the sockets stay with the caller';
  for (const a of argv.slice(i + 1)) {
    if (a === '--') break;
    if (a === '-d' || a === '--detach' || a === '--detach=true') return 'a detached container belongs in the caller\'s process tree';
    if (/^-[A-Za-z]{2,}$/.test(a)) return `combined short options (${a})`;
    if (/^--preserve-fds(=|$)/.test(a)) return '--preserve-fds: the fds stay with the caller';
  }
  return undefined;
}

/** The pid a pidfd refers to (its fdinfo), or -1 once that process is gone. */
function pidfdPid(pidfd: number): number {
  const m = /^Pid:\s*(-?\d+)/m.exec(readOr(`/proc/self/fdinfo/${pidfd}`, ''));
  return m ? Number(m[1]) : -1;
}

/** A caller checked and ready to hand over: its pidfd, pid, arguments, environment and umask. */
interface Caller {
  pidfd: number;
  pid: number;
  argv: string[];
  env: Record<string, string>;
  umask: number;
}

/**
 * Checks the records of a complete request from `sock` against this standby (`own`: its
 * context): the peer is this user, pinned by SO_PEERPIDFD, alive, of the same context, and asks
 * for a command the standby takes. Throws StandbyPass otherwise (its pidfd closed).
 */
function checkCaller(sock: Socket, records: ClaimRecord[], own: string): Caller {
  const argv: string[] = [];
  const env: Record<string, string> = {};
  for (const { tag, data } of records) {
    if (tag === T_ARG) argv.push(data.toString('utf8'));
    else if (tag === T_ENV) {
      const s = data.toString('utf8');
      const eq = s.indexOf('=');
      if (eq > 0) env[s.slice(0, eq)] = s.slice(eq + 1);
    }
  }
  const fd = k.socketFd(sock);
  const cred = k.peerCred(fd);
  if (typeof cred === 'number') throw new StandbyPass(`SO_PEERCRED: errno ${-cred}`);
  if (cred.uid !== (process.geteuid?.() ?? 0)) throw new StandbyPass(`caller uid ${cred.uid} is not this standby's user`);
  const pidfd = k.getsockoptInt(fd, SOL_SOCKET, SO_PEERPIDFD);
  if (pidfd < 0) throw new StandbyPass(`SO_PEERPIDFD: errno ${-pidfd} (Linux 6.5 or later pins the caller)`);
  try {
    const reason = standbyPasses(argv, env);
    if (reason) throw new StandbyPass(reason);
    if (pidfdPid(pidfd) !== cred.pid) throw new StandbyPass('the caller is gone');
    let theirs: string;
    let umask: number;
    try {
      ({ text: theirs, umask } = readContext(cred.pid, env));
    } catch (e) {
      throw new StandbyPass(`cannot read the caller's context: ${(e as Error).message}`);
    }
    // still the process that connected (alive all along: its pid was not reused meanwhile)
    if (pidfdPid(pidfd) !== cred.pid) throw new StandbyPass('the caller is gone');
    if (theirs !== own) throw new StandbyPass('the caller\'s context differs from this standby\'s');
    if (!Number.isInteger(umask)) throw new StandbyPass('no umask for the caller');
    return { pidfd, pid: cred.pid, argv, env, umask };
  } catch (e) {
    k.close(pidfd);
    throw e;
  }
}

/** Decodes what a connection sent so far and checks its caller: undefined while incomplete; throws to refuse it. */
function takeRequest(sock: Socket, buf: Buffer, own: string): Caller | undefined {
  const records = decodeRecords(buf, CLI_MAGIC, MAX_REQUEST, TAGS);
  return records ? checkCaller(sock, records, own) : undefined;
}

/**
 * Sends one request from this process to itself, over an abstract socket, through the steps a
 * claim takes (accepting, reading, checking the caller, answering), so that Node compiles that
 * code now rather than while a caller waits: the first claim of a standby took 2-3 ms of it.
 */
async function rehearse(own: string): Promise<void> {
  const name = `\0moat-cli-rehearsal-${process.pid}`;
  const env = Object.entries(process.env).flatMap(([key, v]) => (v === undefined ? [] : [{ tag: T_ENV, data: Buffer.from(`${key}=${v}`) }]));
  const request = encodeRecords(CLI_MAGIC, [{ tag: T_ARG, data: Buffer.from('state') }, { tag: T_ARG, data: Buffer.from('rehearsal') }, ...env]);
  const server = createServer((sock: Socket) => {
    let buf = Buffer.alloc(0);
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      let answer: string;
      try {
        const caller = takeRequest(sock, buf, own);
        if (!caller) return;
        k.close(caller.pidfd);
        answer = `claim ${process.pid}\n`;
      } catch (e) {
        answer = `pass ${(e as Error).message}\n`;
      }
      sock.end(answer);
    });
  });
  try {
    await new Promise<void>((resolve) => {
      const done = setTimeout(resolve, 2000); // a rehearsal never holds the standby up
      server.once('error', () => resolve());
      server.listen(name, () => {
        const client = connect(name);
        client.on('error', () => {});
        client.on('data', () => {});
        client.on('connect', () => client.write(request));
        client.on('close', () => {
          clearTimeout(done);
          resolve();
        });
      });
    });
  } finally {
    server.close();
  }
}

/** Becomes the caller's process: its fds 0-2, working directory, umask, arguments and environment. */
function adopt(c: Caller): void {
  for (let target = 0; target <= 2; target++) {
    let fd = k.pidfdGetfd(c.pidfd, target);
    if (fd < 0) fd = openSync('/dev/null', 'r+'); // closed there: Node would have opened /dev/null
    k.dup3(fd, target);
    k.close(fd);
  }
  process.chdir(`/proc/${c.pid}/cwd`); // the directory itself, whatever its path
  process.umask(c.umask);
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, c.env);
  process.argv = [process.argv[0]!, process.argv[1]!, ...c.argv];
  process.title = `moat ${c.argv.join(' ')}`; // what ps shows (cut to the room the standby's argv left)
  k.close(c.pidfd);
}

/** The standby directory of this user, checked (0700, owned by the user), as the front end made it. */
function checkedDir(dir: string): string {
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== (process.geteuid?.() ?? 0) || (st.mode & 0o077) !== 0) throw new Error(`${dir}: not a 0700 directory of this user`);
  return dir;
}

/**
 * Runs a standby (argv: DIR KEY-SLOT LOCKFD, from the front end, which took the slot's lock on
 * LOCKFD): warms up, waits on DIR/KEY-SLOT.sock and, once a caller of its context goes, runs its
 * command with `run` (the CLI's main). Resolves with the exit code of an unclaimed standby, or
 * undefined after a command (process.exitCode holds its code).
 */
export async function cliStandby(args: string[], run: (argv: string[]) => Promise<void>, warmUp: () => Promise<void>): Promise<number | undefined> {
  const [dirArg, key, lockArg] = args;
  if (!dirArg || !key || !/^[0-9a-f]{16}-\d$/.test(key) || !/^\d+$/.test(lockArg ?? '')) throw new Error('usage: moat --cli-standby DIR KEY-SLOT LOCKFD');
  const lockFd = Number(lockArg);
  fstatSync(lockFd); // inherited from the front end, which holds the key's lock through it
  // the files the front end made the key from (native/moat.c): this installation's entry point
  // and bundle, as they were when it started this standby
  const entry = process.argv[1] ?? '';
  const build = [entry, join(dirname(dirname(entry)), 'dist', 'moat.cjs')];
  const stamp = buildStamp(build);
  const dir = checkedDir(dirArg);
  const own = cliContext('self', process.env);
  if (!/^Seccomp:\s*0$/m.test(own)) return 0; // a filtered process never hands over: nobody to serve
  await warmUp();
  // the checks of a caller, on this process: the system-call bindings load and the code compiles
  // now rather than in the caller's time
  for (let i = 0; i < 3; i++) cliContext(process.pid, process.env);
  for (let i = 0; i < 2; i++) await rehearse(own); // a second pass runs the code compiled by the first
  // booted at idle priority (the front end does that as root): every thread normal before serving
  leaveIdlePriority();
  const path = join(dir, `${key}.sock`);
  try {
    unlinkSync(path); // left by a standby that died: the lock says none other is here
  } catch {
    // none
  }
  return new Promise((resolve) => {
    const server = createServer();
    let claimed = false;
    let started = false;
    let goTimer: NodeJS.Timeout | undefined;
    let ino = -1;
    const leave = (): void => {
      try {
        if (statSync(path).ino === ino) unlinkSync(path);
      } catch {
        // gone already
      }
    };
    const idle = setTimeout(() => {
      stopWatch();
      server.close();
      leave();
      resolve(0);
    }, CLI_STANDBY_IDLE_MS);
    // stopped before any claim (pkill, shutdown): leave no socket that refuses connections
    const onTerm = (): void => {
      leave();
      process.exit(0);
    };
    // rebuilt or upgraded: callers now make another key, so nobody will claim this standby; its
    // key's files go with it (the lock it holds, the context's mark)
    const stopWatch = watchBuild(build, stamp, () => {
      clearTimeout(idle);
      server.close();
      leave();
      const context = key.slice(0, key.lastIndexOf('-'));
      for (const f of [`${key}.lock`, `${context}.mark`, `${context}.adopted`]) {
        try {
          unlinkSync(join(dir, f));
        } catch {
          // none
        }
      }
      process.off('SIGTERM', onTerm);
      resolve(0);
    });
    server.on('connection', (sock: Socket) => {
      let buf = Buffer.alloc(0);
      let caller: Caller | undefined;
      let answered = false;
      sock.on('error', () => {});
      sock.on('data', (d: Buffer) => {
        if (answered) return;
        buf = Buffer.concat([buf, d]);
        if (caller) {
          // the claim is out: only "go" starts the command
          if (buf.toString('latin1') !== 'go\n') {
            if (buf.length >= 3 || !'go\n'.startsWith(buf.toString('latin1'))) process.exit(0);
            return;
          }
          sock.pause();
          go(sock, caller);
          return;
        }
        if (claimed) {
          answered = true;
          sock.end('pass taken: this standby runs another command\n');
          return;
        }
        try {
          caller = takeRequest(sock, buf, own);
          if (!caller) return; // incomplete
        } catch (e) {
          answered = true;
          sock.end(`pass ${(e as Error).message.replace(/\n/g, ' ')}\n`);
          return;
        }
        claimed = true;
        buf = Buffer.alloc(0);
        clearTimeout(idle);
        stopWatch();
        process.off('SIGTERM', onTerm); // from here on signals are the command's (run forwards them)
        server.close();
        leave();
        closeSync(lockFd); // the key is free: the front end starts the next standby
        // a caller that gives up before "go" has run nothing here: nor will this standby
        goTimer = setTimeout(() => process.exit(0), GO_TIMEOUT_MS);
        sock.once('close', () => {
          if (!started) process.exit(0);
        });
        sock.write(`claim ${process.pid}\n`);
      });
    });
    const go = (sock: Socket, c: Caller): void => {
      started = true;
      clearTimeout(goTimer);
      const fd = k.socketFd(sock);
      try {
        adopt(c);
      } catch (e) {
        // nothing of the command ran: the caller runs it itself
        sock.end(`pass cannot take the caller's place: ${(e as Error).message.replace(/\n/g, ' ')}\n`, () => process.exit(0));
        return;
      }
      // the exit code reaches the front end however the command ends (process.exit included);
      // then the caller's fds go, so that a pipe it reads ends now, not when this process has
      // wound down (a sentry standby is started at exit too)
      process.on('exit', (code) => {
        try {
          writeSync(fd, `exit ${code}\n`);
          const nul = openSync('/dev/null', 'r+');
          for (let target = 0; target <= 2; target++) k.dup3(nul, target);
        } catch {
          // the front end is gone
        }
      });
      run([process.argv[0]!, process.argv[1]!, ...c.argv]).then(() => resolve(undefined), (e: unknown) => {
        process.stderr.write(`moat: ${e instanceof Error && e.stack ? e.stack : String(e)}\n`);
        process.exitCode = 1;
        resolve(undefined);
      });
    };
    server.once('error', () => {
      clearTimeout(idle);
      resolve(0);
    });
    process.once('SIGTERM', onTerm);
    const mask = process.umask(0o177); // the socket is the user's only from its first moment
    try {
      server.listen(path, () => {
        ino = statSync(path).ino;
      });
    } finally {
      process.umask(mask);
    }
  });
}
