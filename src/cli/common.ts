/** What every subcommand shares: the global flags, the lifecycle context, output helpers. */
import type { Command } from 'commander';
import { availableIsolations, isSentryLevel } from '../backends/registry.js';
import type { Isolation } from '../backends/backend.js';
import { StateStore } from '../container/store.js';
import type { Context } from '../container/lifecycle.js';
import { UsageError } from '../errors.js';
import { Logger } from '../util/log.js';

/** The global flags (runc's set). */
export interface GlobalOptions {
  root: string;
  log?: string;
  logFormat: 'json' | 'text';
  debug: boolean;
  systemdCgroup: boolean;
  isolation?: string;
  sentryLevel?: string;
}

/** Reads the global flags from the root command. */
export function globals(cmd: Command): GlobalOptions {
  let root: Command = cmd;
  while (root.parent) root = root.parent;
  const o = root.opts<GlobalOptions>();
  if (o.logFormat !== 'json' && o.logFormat !== 'text') throw new UsageError(`--log-format: expected json or text, got "${o.logFormat}"`);
  // checked whatever the command (a runtime's registered arguments come before every command)
  if (o.isolation !== undefined && !availableIsolations().includes(o.isolation as Isolation)) {
    throw new UsageError(`--isolation (before the command): unknown isolation "${o.isolation}" (available: ${availableIsolations().join(', ')})`);
  }
  if (o.sentryLevel !== undefined && !isSentryLevel(o.sentryLevel)) {
    throw new UsageError(`--sentry-level (before the command): expected strict or balanced, got "${o.sentryLevel}"`);
  }
  return o;
}

/** A logger for the command's global flags. */
export function logger(cmd: Command): Logger {
  const g = globals(cmd);
  return new Logger({ ...(g.log ? { file: g.log } : {}), format: g.logFormat, debug: g.debug });
}

/** The lifecycle context for the command's global flags. */
export function context(cmd: Command): Context {
  const g = globals(cmd);
  const defaults = { ...(g.isolation ? { isolation: g.isolation } : {}), ...(g.sentryLevel ? { sentryLevel: g.sentryLevel } : {}) };
  return { store: new StateStore(g.root), log: logger(cmd), systemdCgroup: g.systemdCgroup === true, defaults };
}

/** Parses a non-negative integer flag value. */
export function nonNegativeInt(flag: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new UsageError(`${flag}: expected a non-negative integer, got "${v}"`);
    return Number(v);
  };
}

/** Collects a repeatable flag into an array. */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}
