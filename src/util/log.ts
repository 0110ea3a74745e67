/**
 * Logging as runc does it: --log FILE receives one line per event (JSON with --log-format json,
 * which containerd's shim parses), errors also go to stderr, and --debug adds debug lines.
 * Output never goes through process.stdout/stderr streams: touching them would make Node set
 * O_NONBLOCK on fds the container shares.
 */
import { appendFileSync, writeSync } from 'node:fs';

/** Log levels in increasing severity. */
export type Level = 'debug' | 'info' | 'warning' | 'error';

/** Where and how to log. */
export interface LogOptions {
  file?: string;
  /** An open fd to write log lines to instead of a file (the shim's log FIFO). */
  fd?: number;
  format: 'json' | 'text';
  debug: boolean;
}

/** A logger bound to one command invocation. */
export class Logger {
  constructor(private readonly opts: LogOptions) {}

  private emit(level: Level, msg: string, toStderr: boolean): void {
    if (level === 'debug' && !this.opts.debug) return;
    if (this.opts.file || this.opts.fd !== undefined) {
      const time = new Date().toISOString();
      const line = this.opts.format === 'json'
        ? JSON.stringify({ level, msg, time }) + '\n'
        : `time="${time}" level=${level} msg="${msg.replace(/"/g, '\\"')}"\n`;
      try {
        if (this.opts.fd !== undefined) writeSync(this.opts.fd, line);
        else if (this.opts.file) appendFileSync(this.opts.file, line);
      } catch {
        // a broken log file must not hide the error itself: stderr still gets it below
        toStderr = toStderr || level === 'error';
      }
    }
    // a logger writing to an fd already wrote the line where it belongs (the shim's stderr is its log)
    if (toStderr && this.opts.fd === undefined) writeErr(`${level === 'error' ? '' : level + ': '}${msg}\n`);
  }

  /** Logs a debug line (only with --debug). */
  debug(msg: string): void {
    this.emit('debug', msg, this.opts.debug && !this.opts.file);
  }
  /** Logs a warning (also on stderr). */
  warn(msg: string): void {
    this.emit('warning', msg, true);
  }
  /** Logs an error (also on stderr). */
  error(msg: string): void {
    this.emit('error', msg, true);
  }
}

/** Writes text to stdout synchronously, without touching process.stdout. */
export function writeOut(text: string): void {
  writeAll(1, text);
}

/** Writes text to stderr synchronously, without touching process.stderr. */
export function writeErr(text: string): void {
  writeAll(2, text);
}

function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') continue;
      if ((e as NodeJS.ErrnoException).code === 'EPIPE') return;
      throw e;
    }
  }
}

/**
 * Prints `moat-trace:` timing lines on stderr when MOAT_TRACE=1 (used by bench/). The variable is
 * read at each call: a warm standby CLI process (cli/standby.ts) takes its caller's environment
 * after it booted.
 */
export function trace(label: string): void {
  if (process.env['MOAT_TRACE'] !== '1') return;
  writeErr(`moat-trace: ${performance.now().toFixed(2)} ms ${label} (since process start; origin ${performance.timeOrigin.toFixed(0)})\n`);
}
