/**
 * The VM monitor: one small host process per microVM (started by `moat create` through
 * `bin/moat.cjs --vm-monitor CONFIG`, like a containerd shim). It listens on the control socket
 * the VMM connects to, speaks the agent protocol (protocol.ts) over it, relays the container
 * process's stdio to and from its own fds 0-2 (the caller's stdio, as with runc), and takes
 * commands from the CLI on a second socket, one JSON object per line:
 *   {"op":"start"}                       RUN the container process (stream 0)
 *   {"op":"kill","signal":N,"all":B}     signal it (or every process of the guest)
 *   {"op":"wait"}                        answered with {"status":N} when stream 0 exits
 *   {"op":"exec","spec":{...}}           runs another process; answered {"pid":N}, then its
 *                                        output as {"out":BASE64} / {"err":BASE64} lines and at
 *                                        last {"status":N}; the exec's relay (relay.ts) sends
 *                                        {"in":BASE64} lines, {"eof":true} and {"signal":N} on
 *                                        the same connection; if it closes before the status,
 *                                        the process is killed (SIGKILL)
 *   {"op":"nameservers","servers":[...]} the loopback nameservers whose queries the agent relays
 *                                        (dns.ts), told by the create once the hooks ran
 *   {"op":"shutdown"}                    powers the guest off
 * Every answer is one JSON line; errors are {"error":"..."}. Every guest message is untrusted:
 * the decoder caps sizes and rejects unknown types, and a protocol error ends the VM.
 * It reports "hello RELEASE" on fd 3 once the agent is up, and exits when the VM is gone.
 *
 * Its pid is the container's (state, --pid-file): containerd's runc shim and conmon wait on it
 * for the container process's exit status, so it exits with that status (137 if the VM went
 * without one: it was killed), and it passes the catchable signals it gets on to that process,
 * as a container backend's init would take them itself.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { ReadStream as TtyReadStream } from 'node:tty';
import { getWindowSize, makeRaw, setControllingTerminal } from '../../sys/libc.js';
import { hostTerminal } from '../../util/consolesocket.js';
import { inputStream } from '../../util/input.js';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { constants } from 'node:os';
import { isLoopback, MAX_NAMESERVERS, NameRelay } from './dns.js';
import { decodeExit, decodeNameQuery, encodeFrame, encodeNameAnswer, encodeRun, encodeWinsize, FrameDecoder, MSG, STREAM_ALL, u32Payload } from './protocol.js';
import type { Frame, ProcessSpec } from './protocol.js';
import { KILLED_WITH_VM, RELAYED_SIGNALS, writeAll } from './relay.js';

/** What `moat create` tells the monitor (JSON in argv). */
export interface MonitorConfig {
  id: string;
  /** Socket the VMM connects to for the agent's control channel. */
  controlSocket: string;
  /** Socket the CLI talks to. */
  monitorSocket: string;
  /** The container process (stream 0). */
  process: ProcessSpec;
  log: string;
  /** Loopback nameservers of the pod's namespace the agent relays queries for (moat.dns=, in order; dns.ts). */
  dns?: string[];
  /**
   * A restored VM: its container process runs already (guest pid `pid`); `pending` (base64) is
   * the start of a frame the checkpointed monitor had received, which the guest completes;
   * exec streams go on from `nextStream`.
   */
  restored?: { pid: number; pending: string; nextStream: number; dns?: string[] };
}

/** One process in the guest the monitor relays: where its output goes, who waits for it. */
interface Stream {
  /** Takes the process's stdout or stderr. */
  sink: (kind: 'out' | 'err', data: Buffer) => void;
  /** Fd its stdin comes from, or -1 (an exec's stdin arrives on its CLI connection). */
  input: number;
  pid?: number;
  status?: number;
  started: ((pid: number) => void)[];
  waiters: ((status: number) => void)[];
  failures: string[];
}

/** Runs the monitor until the VM has ended; resolves with the exit code. */
export function monitorMain(argv: string[]): Promise<number> {
  const cfg = JSON.parse(argv[0] ?? '{}') as MonitorConfig;
  // rlimits travel as decimal strings (JSON has no 64-bit integers)
  cfg.process.rlimits = (cfg.process.rlimits ?? []).map((r) => ({ resource: r.resource, soft: BigInt(r.soft), hard: BigInt(r.hard) }));
  const logFd = openLog(cfg.log);
  const log = (m: string): void => {
    if (logFd >= 0) writeSync(logFd, `${new Date().toISOString()} vm-monitor[${cfg.id}] ${m}\n`);
  };
  const streams = new Map<number, Stream>();
  streams.set(0, { sink: (kind, data) => writeAll(kind === 'out' ? 1 : 2, data), input: 0, started: [], waiters: [], failures: [] });
  let guest: Socket | undefined;
  let release = '';
  const pending: Frame[] = [];
  let nextStream = cfg.restored?.nextStream ?? 1;
  /** The guest connection's frame decoder (checkpoint reads its partial frame). */
  let decoder: FrameDecoder | undefined;

  const names = new NameRelay(() => cfg.dns ?? [], log);
  const send = (f: Frame): void => {
    if (guest) guest.write(encodeFrame(f));
    else pending.push(f);
  };

  /** The size of terminal `fd`, or undefined if it cannot be read. */
  const terminalSizeOf = (fd: number): { rows: number; cols: number } | undefined => {
    try {
      const ws = getWindowSize(fd);
      return ws.rows > 0 && ws.cols > 0 ? ws : undefined;
    } catch {
      return undefined;
    }
  };
  /** The host terminal's size now (the runtime sets it on the master), or `fallback`. */
  const terminalSize = (fallback: { rows: number; cols: number }): { rows: number; cols: number } => terminalSizeOf(0) ?? fallback;
  let ttyIn: TtyReadStream | undefined;
  if (cfg.process.terminal) {
    // raw from the start, so that the guest's terminal alone does echo, line editing and signal
    // keys (input typed before the process starts waits unechoed); read once the process runs
    makeRaw(0);
    ttyIn = new TtyReadStream(0);
    // stdio is the host end (pty slave) of the container's terminal, whose master the runtime
    // sent to the console socket. As its session's controlling terminal, a resize of the master
    // (TIOCSWINSZ: `moat run -t` on SIGWINCH, the shim's ResizePty) raises SIGWINCH here, and
    // the new size goes to the guest's terminal.
    setControllingTerminal(0);
    // ... and the kernel hangs it up when the master's last holder closes it: not the VM's end
    process.on('SIGHUP', () => log('the terminal was hung up'));
    process.on('SIGWINCH', () => {
      // before start, RUN carries the size of that moment
      if (streams.get(0)?.pid === undefined) return;
      const { rows, cols } = terminalSize(cfg.process.terminal ?? { rows: 24, cols: 80 });
      send({ type: MSG.RESIZE, stream: 0, payload: encodeWinsize(rows, cols) });
    });
  }

  return new Promise((resolve) => {
    let control: Server | undefined;
    let cli: Server | undefined;
    /** Ends the monitor with the container process's status (`code` if it never ended). */
    const finish = (code: number): void => {
      names.close();
      control?.close();
      cli?.close();
      for (const s of streams.values()) {
        for (const w of s.waiters) w(s.status ?? KILLED_WITH_VM);
        s.waiters = [];
      }
      const status = streams.get(0)?.status ?? code;
      log(`monitor ends (${status})`);
      resolve(status);
    };
    // a signal to the container's pid is for its process (before it runs: for the VM)
    for (const sig of RELAYED_SIGNALS) {
      if (sig === 'SIGHUP' && ttyIn) continue; // the terminal's hang-up, handled above
      process.on(sig, () => {
        if (streams.get(0)?.pid !== undefined) send({ type: MSG.KILL, stream: 0, payload: u32Payload(constants.signals[sig]) });
        else if (sig !== 'SIGCONT' && sig !== 'SIGWINCH') send({ type: MSG.SHUTDOWN, stream: 0, payload: Buffer.alloc(0) });
      });
    }

    const onFrame = (f: Frame): void => {
      const s = streams.get(f.stream);
      switch (f.type) {
        case MSG.HELLO:
          release = f.payload.toString('latin1');
          log(`agent up, guest kernel ${release}`);
          try {
            writeSync(3, `hello ${release}\n`);
            closeSync(3);
          } catch {
            // started without a report pipe
          }
          return;
        case MSG.STARTED:
          if (!s) return;
          const pid = f.payload.readUInt32LE(0);
          s.pid = pid;
          for (const w of s.started) w(pid);
          s.started = [];
          if (s.input >= 0) pumpStdin(f.stream, s.input);
          return;
        case MSG.STDOUT:
        case MSG.STDERR:
          if (!s) return;
          s.sink(f.type === MSG.STDOUT ? 'out' : 'err', f.payload);
          return;
        case MSG.FAILURE:
          log(`guest failure on stream ${f.stream}: ${f.payload.toString('utf8')}`);
          if (s) {
            s.failures.push(f.payload.toString('utf8'));
            s.sink('err', Buffer.from(`moat: ${f.payload.toString('utf8')}\n`));
          }
          return;
        case MSG.NAME_QUERY: {
          let q;
          try {
            q = decodeNameQuery(f.payload);
          } catch (e) {
            log(`rejected a guest message: ${(e as Error).message}; ending the VM`);
            guest?.destroy();
            finish(1);
            return;
          }
          names.query(q, (message) => send({ type: MSG.NAME_ANSWER, stream: STREAM_ALL, payload: encodeNameAnswer(q.id, message) }));
          return;
        }
        case MSG.EXIT: {
          if (!s) return;
          const status = decodeExit(f.payload);
          s.status = status;
          log(`stream ${f.stream} exited with ${status}`);
          for (const w of s.waiters) w(status);
          s.waiters = [];
          return;
        }
      }
    };

    /** Sends what arrives on `fd` to the guest as STDIN of `stream`, then EOF. */
    const pumpStdin = (stream: number, fd: number): void => {
      if (stream === 0 && ttyIn) {
        ttyIn.on('data', (chunk: Buffer) => send({ type: MSG.STDIN, stream, payload: chunk }));
        ttyIn.on('error', () => {}); // the runtime closed the master: no more input
        return;
      }
      const rs = inputStream(fd);
      rs.on('data', (chunk: Buffer | string) => send({ type: MSG.STDIN, stream, payload: Buffer.from(chunk) }));
      rs.on('end', () => send({ type: MSG.STDIN, stream, payload: Buffer.alloc(0) }));
      rs.on('error', () => send({ type: MSG.STDIN, stream, payload: Buffer.alloc(0) }));
    };

    control = createServer((sock) => {
      if (guest) {
        sock.destroy(); // one VMM, one connection
        return;
      }
      guest = sock;
      const dec = new FrameDecoder();
      decoder = dec;
      if (cfg.restored) {
        // the restored guest goes on mid-stream: first the part of a frame the old monitor had
        const s0 = streams.get(0)!;
        s0.pid = cfg.restored.pid;
        try {
          for (const f of dec.push(Buffer.from(cfg.restored.pending, 'base64'))) onFrame(f);
        } catch (e) {
          log(`the checkpoint's pending bytes: ${(e as Error).message}; ending the VM`);
          finish(1);
          return;
        }
        if (s0.input >= 0) pumpStdin(0, s0.input);
      }
      sock.on('data', (chunk: Buffer) => {
        let frames: Frame[];
        try {
          frames = dec.push(chunk);
        } catch (e) {
          log(`rejected a guest message: ${(e as Error).message}; ending the VM`);
          sock.destroy();
          finish(1);
          return;
        }
        for (const f of frames) onFrame(f);
      });
      sock.on('close', () => finish(KILLED_WITH_VM));
      sock.on('error', () => {});
      for (const f of pending.splice(0)) sock.write(encodeFrame(f));
    });
    // a VMM that never connects (its create was killed, say) must not leave the monitor behind
    const noGuest = setTimeout(() => {
      if (!guest) {
        log('no VMM connected within 5 minutes; giving up');
        finish(1);
      }
    }, 5 * 60_000);
    noGuest.unref();
    let listening = 0;
    const onListening = (): void => {
      if (++listening < 2) return;
      log('listening');
      try {
        writeSync(3, 'listening\n');
      } catch {
        // started without a report pipe
      }
    };
    control.listen(cfg.controlSocket, onListening);

    cli = createServer((conn) => {
      let buf = '';
      /** The exec stream this connection runs, once it asked for one (its stdin lines follow). */
      let execStream = -1;
      conn.on('data', (chunk: Buffer) => {
        buf += chunk.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (execStream >= 0) execInput(execStream, line);
          else execStream = handleCommand(conn, line);
        }
        if (buf.length > 1 << 20) conn.destroy(); // no line is that long
      });
      conn.on('close', () => {
        // the relay is the process's host end: without it, no one waits for the process
        const s = streams.get(execStream);
        if (execStream >= 0 && s && s.status === undefined) {
          log(`the relay of stream ${execStream} went; killing its process`);
          if (s.pid !== undefined) send({ type: MSG.KILL, stream: execStream, payload: u32Payload(9) });
          else s.started.push(() => send({ type: MSG.KILL, stream: execStream, payload: u32Payload(9) }));
        }
      });
      conn.on('error', () => {});
    });

    /** A line of an exec connection after its command: {"in":BASE64}, {"eof":true} or {"signal":N}. */
    const execInput = (stream: number, line: string): void => {
      let m: { in?: string; eof?: boolean; signal?: number };
      try {
        m = JSON.parse(line) as typeof m;
      } catch {
        return;
      }
      if (typeof m.in === 'string') send({ type: MSG.STDIN, stream, payload: Buffer.from(m.in, 'base64') });
      if (m.eof === true) send({ type: MSG.STDIN, stream, payload: Buffer.alloc(0) });
      if (typeof m.signal === 'number' && Number.isInteger(m.signal) && m.signal > 0 && m.signal < 65 && streams.get(stream)?.pid !== undefined) {
        send({ type: MSG.KILL, stream, payload: u32Payload(m.signal) });
      }
    };
    cli.listen(cfg.monitorSocket, onListening);

    const reply = (conn: Socket, obj: unknown): void => {
      if (!conn.destroyed) conn.write(`${JSON.stringify(obj)}\n`);
    };

    /** Runs one command; returns the exec stream it started, or -1. */
    const handleCommand = (conn: Socket, line: string): number => {
      let cmd: { op?: string; signal?: number; all?: boolean; spec?: ProcessSpec; consoleSocket?: string };
      try {
        cmd = JSON.parse(line) as typeof cmd;
      } catch {
        reply(conn, { error: 'unreadable command' });
        return -1;
      }
      const s0 = streams.get(0)!;
      switch (cmd.op) {
        case 'start':
          s0.started.push((pid) => reply(conn, { pid }));
          // a process that cannot start (exec or chdir failed) gets FAILURE and EXIT, no STARTED
          s0.waiters.push((status) => {
            if (s0.pid === undefined) reply(conn, { error: `the container process did not start (${s0.failures.join('; ') || `status ${status}`})` });
          });
          try {
            send({ type: MSG.RUN, stream: 0, payload: encodeRun(cfg.process.terminal ? { ...cfg.process, terminal: terminalSize(cfg.process.terminal) } : cfg.process) });
          } catch (e) {
            reply(conn, { error: (e as Error).message });
          }
          return -1;
        case 'kill':
          send({ type: MSG.KILL, stream: cmd.all ? 0xffffffff : 0, payload: u32Payload(cmd.signal ?? 15) });
          reply(conn, { ok: true });
          return -1;
        case 'wait':
          if (s0.status !== undefined) reply(conn, { status: s0.status });
          else s0.waiters.push((status) => reply(conn, { status }));
          return -1;
        case 'checkpoint-state':
          // asked once the VM is stopped: what a restored monitor must know to go on
          reply(conn, {
            pid: s0.pid ?? 0,
            pending: (decoder?.pendingBytes() ?? Buffer.alloc(0)).toString('base64'),
            nextStream,
            ...(cfg.dns ? { dns: cfg.dns } : {}),
          });
          return -1;
        case 'nameservers': {
          // the create, once the hooks ran: the loopback nameservers the agent will relay (dns.ts)
          const servers = (cmd as { servers?: unknown }).servers;
          if (!Array.isArray(servers) || servers.length > MAX_NAMESERVERS || !servers.every((a) => typeof a === 'string' && isLoopback(a))) {
            reply(conn, { error: `nameservers: expected at most ${MAX_NAMESERVERS} loopback addresses, got ${JSON.stringify(servers)}` });
            return -1;
          }
          cfg.dns = servers as string[];
          log(`relaying nameservers ${cfg.dns.join(', ')}`);
          reply(conn, {});
          return -1;
        }
        case 'shutdown':
          send({ type: MSG.SHUTDOWN, stream: 0, payload: Buffer.alloc(0) });
          reply(conn, { ok: true });
          return -1;
        case 'exec': {
          if (!cmd.spec) {
            reply(conn, { error: 'exec needs a process spec' });
            return -1;
          }
          cmd.spec.rlimits = (cmd.spec.rlimits ?? []).map((r) => ({ resource: r.resource, soft: BigInt(r.soft), hard: BigInt(r.hard) }));
          let payload: Buffer;
          try {
            payload = encodeRun(cmd.spec);
          } catch (e) {
            reply(conn, { error: (e as Error).message });
            return -1;
          }
          const stream = nextStream++;
          // a terminal: its host end is a pty pair made here, the master sent to the console
          // socket, the slave (raw) relayed to and from the guest's terminal
          let tty: { fd: number; input: TtyReadStream; size: string; timer: NodeJS.Timeout } | undefined;
          if (cmd.spec.terminal && cmd.consoleSocket) {
            try {
              const fd = hostTerminal(`exec in container "${cfg.id}"`, cmd.consoleSocket, cmd.spec.terminal);
              makeRaw(fd);
              const input = new TtyReadStream(fd);
              input.on('data', (chunk: Buffer) => send({ type: MSG.STDIN, stream, payload: chunk }));
              input.on('error', () => {}); // the console's owner closed the master
              // not this process's controlling terminal, so no SIGWINCH: the size is polled
              const timer = setInterval(() => {
                if (!tty || streams.get(stream)?.pid === undefined) return;
                const now = terminalSizeOf(fd);
                if (now && `${now.rows}x${now.cols}` !== tty.size) {
                  tty.size = `${now.rows}x${now.cols}`;
                  send({ type: MSG.RESIZE, stream, payload: encodeWinsize(now.rows, now.cols) });
                }
              }, 250);
              tty = { fd, input, size: `${cmd.spec.terminal.rows}x${cmd.spec.terminal.cols}`, timer };
            } catch (e) {
              reply(conn, { error: (e as Error).message });
              return -1;
            }
          }
          const endTty = (): void => {
            if (!tty) return;
            clearInterval(tty.timer);
            tty.input.destroy();
            // libuv read from a reopened copy of the slave: this fd is still ours to close (the
            // console's owner sees EIO once every slave fd is closed)
            closeSync(tty.fd);
            tty = undefined;
          };
          const s: Stream = {
            sink: tty ? (_kind, data) => writeAll(tty?.fd ?? -1, data) : (kind, data) => reply(conn, { [kind]: data.toString('base64') }),
            input: -1,
            started: [(pid) => reply(conn, { pid })],
            waiters: [(status) => {
              endTty();
              reply(conn, { status, failures: s.failures });
              streams.delete(stream);
            }],
            failures: [],
          };
          streams.set(stream, s);
          send({ type: MSG.RUN, stream, payload });
          // a terminal's input comes from the pty; the connection's lines are then signals only
          return stream;
        }
        default:
          reply(conn, { error: `unknown op ${JSON.stringify(cmd.op)}` });
          return -1;
      }
    };
  });
}

function openLog(path: string): number {
  try {
    return openSync(path, 'a');
  } catch {
    return -1;
  }
}
