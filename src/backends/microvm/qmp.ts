/**
 * A client of QEMU's machine protocol (QMP) over the VM's unix socket: JSON objects, one per
 * line. QEMU greets with {"QMP": ...}; the client answers qmp_capabilities; each command gets
 * {"return": ...} or {"error": {"class", "desc"}}; events ({"event": ...}) arrive at any time
 * and are kept for those who wait on them. Used to stop, migrate and continue VMs (checkpoint and
 * restore).
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { HostError, MoatError } from '../../errors.js';

/** A QMP command QEMU refused, with its error class and description. */
export class QmpError extends MoatError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`QEMU refused ${command}: ${desc} (${errorClass})`);
  }
}

/** One event QEMU sent. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

/** A connected, negotiated QMP session. */
export class Qmp {
  private buf = '';
  private pending: { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private readonly events: QmpEvent[] = [];
  private eventWaiters: (() => void)[] = [];
  private closed?: Error;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    const fail = (e: Error): void => {
      this.closed ??= e;
      for (const p of this.pending.splice(0)) p.reject(e);
      for (const w of this.eventWaiters.splice(0)) w();
    };
    sock.on('error', (e) => fail(new HostError(`QMP: ${e.message}`)));
    sock.on('close', () => fail(new HostError('QMP: QEMU closed the connection')));
  }

  /** Connects to QEMU's QMP socket at `path` and negotiates capabilities; at most `timeoutMs`. */
  static async connect(path: string, timeoutMs = 10_000): Promise<Qmp> {
    const sock = connect(path);
    const timer = setTimeout(() => sock.destroy(new Error(`no QMP greeting within ${timeoutMs} ms`)), timeoutMs);
    try {
      await new Promise<void>((res, rej) => {
        sock.once('connect', () => res());
        sock.once('error', rej);
      });
      const q = new Qmp(sock);
      // the greeting is the first line; the pending queue's first entry takes it
      await new Promise((res, rej) => q.pending.push({ command: 'greeting', resolve: res, reject: rej }));
      await q.execute('qmp_capabilities');
      return q;
    } catch (e) {
      sock.destroy();
      throw e instanceof MoatError ? e : new HostError(`QMP ${path}: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('utf8');
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: { QMP?: unknown; return?: unknown; error?: { class?: string; desc?: string }; event?: string; data?: Record<string, unknown> };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue; // QEMU speaks JSON; anything else is not an answer
      }
      if (typeof msg.event === 'string') {
        this.events.push({ event: msg.event, ...(msg.data ? { data: msg.data } : {}) });
        for (const w of this.eventWaiters.splice(0)) w();
        continue;
      }
      const p = this.pending.shift();
      if (!p) continue;
      if (msg.error) p.reject(new QmpError(p.command, msg.error.class ?? 'GenericError', msg.error.desc ?? 'no description'));
      else p.resolve(msg.QMP !== undefined ? msg.QMP : msg.return);
    }
  }

  /** Runs one command; resolves with its `return` value. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.pending.push({ command, resolve, reject });
      this.sock.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  /**
   * Waits until `done` holds for the events received so far (checked on each new one), at most
   * `timeoutMs`; resolves with the event that satisfied it.
   */
  async waitEvent(done: (e: QmpEvent) => boolean, what: string, timeoutMs: number): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex(done);
      if (i >= 0) return this.events.splice(i, 1)[0]!;
      if (this.closed) throw this.closed;
      const left = deadline - Date.now();
      if (left <= 0) throw new HostError(`QMP: ${what} did not happen within ${timeoutMs / 1000} s`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, Math.min(left, 1000));
        this.eventWaiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** Closes the session. */
  close(): void {
    this.sock.destroy();
  }
}
