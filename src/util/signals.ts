/** Signal names and numbers as runc's `kill` accepts them: "KILL", "SIGKILL" or "9". */
import { constants } from 'node:os';
import { UsageError } from '../errors.js';

/** Parses a signal given by name (with or without SIG) or number; throws UsageError if unknown. */
export function parseSignal(text: string): number {
  if (/^\d+$/.test(text)) {
    const n = Number(text);
    if (n >= 1 && n <= 64) return n;
    throw new UsageError(`invalid signal number ${text}`);
  }
  const name = text.toUpperCase().startsWith('SIG') ? text.toUpperCase() : `SIG${text.toUpperCase()}`;
  const n = (constants.signals as Record<string, number>)[name];
  if (n === undefined) throw new UsageError(`unknown signal "${text}"`);
  return n;
}
