/**
 * Process identity from /proc: a pid is only trusted together with its start time, so a pid that
 * the kernel recycled for another process is never signalled by mistake (as crun does).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** The fields of /proc/PID/stat that Moat uses. */
export interface ProcStat {
  /** One-letter state: R, S, D, Z (zombie), T, ... */
  state: string;
  ppid: number;
  /** Start time in clock ticks since boot; stable for the life of the process. */
  startTime: string;
}

/** Reads /proc/PID/stat, or returns undefined if the process does not exist. */
export function procStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // the command name (field 2) may contain spaces and parentheses: split after the last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const ppid = rest[1];
  const startTime = rest[19];
  if (state === undefined || ppid === undefined || startTime === undefined) return undefined;
  return { state, ppid: Number(ppid), startTime };
}

/** True if `pid` is the very process that started at `startTime` and has not exited. */
export function isAlive(pid: number, startTime: string): boolean {
  if (pid <= 0) return false;
  const st = procStat(pid);
  return st !== undefined && st.startTime === startTime && st.state !== 'Z' && st.state !== 'X';
}

/** Sleeps synchronously; used only in short polling loops where nothing else can run meanwhile. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Waits until the process is gone (or a zombie), up to `timeoutMs`; returns true if it is. */
export async function waitGone(pid: number, startTime: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  while (isAlive(pid, startTime)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
  return true;
}

/** Host pids of `root` and all its descendants (through /proc/PID/task/TID/children). */
export function descendants(root: number): number[] {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').split(' ')) {
          if (c.trim()) queue.push(Number(c));
        }
      } catch {
        // the thread ended while we looked
      }
    }
  }
  return out;
}
