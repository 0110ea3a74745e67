/**
 * The backend registry: the one place that maps an isolation name to its implementation.
 * Backends load lazily, so a command pays only for the backend it uses.
 */
import { ConfigError, UsageError } from '../errors.js';
import type { Spec } from '../spec/schema.js';
import type { Backend, Isolation } from './backend.js';

/** The annotation in config.json that selects the isolation backend. */
export const ISOLATION_ANNOTATION = 'io.moat.isolation';

const loaders: Partial<Record<Isolation, () => Promise<Backend>>> = {
  container: async () => (await import('./container/index.js')).containerBackend,
  sentry: async () => (await import('./sentry/index.js')).sentryBackend,
  microvm: async () => (await import('./microvm/index.js')).microvmBackend,
};

/** The sentry levels a user may pick (docs/syscalls.md); `network` is internal (a VMM's sentry). */
export const SENTRY_LEVELS = ['strict', 'balanced'] as const;

/** Whether `v` names a sentry level a user may pick. */
export function isSentryLevel(v: string): v is (typeof SENTRY_LEVELS)[number] {
  return (SENTRY_LEVELS as readonly string[]).includes(v);
}

/** Names of the backends this build provides. */
export function availableIsolations(): Isolation[] {
  return Object.keys(loaders) as Isolation[];
}

/** Loads the backend called `name`. */
export async function getBackend(name: string): Promise<Backend> {
  const load = loaders[name as Isolation];
  if (!load) {
    throw new UsageError(`unknown isolation "${name}" (available: ${availableIsolations().join(', ')})`);
  }
  return load();
}

/**
 * Picks the isolation for a container: the command's flag, else the annotation, else `fallback`
 * (the global --isolation, as a runtime's registered arguments give it), else `container`. A name
 * that is not available is an error naming where it came from.
 */
export function chooseIsolation(flag: string | undefined, spec: Spec, fallback?: string): Isolation {
  const fromSpec = spec.annotations?.[ISOLATION_ANNOTATION];
  const name = flag ?? fromSpec ?? fallback ?? 'container';
  if (!(name in loaders)) {
    const avail = availableIsolations().join(', ');
    if (flag === undefined && fromSpec !== undefined) {
      throw new ConfigError(`annotations["${ISOLATION_ANNOTATION}"]`, `unknown isolation "${name}" (available: ${avail})`);
    }
    const where = flag === undefined ? '--isolation (before the command)' : '--isolation';
    throw new UsageError(`${where}: unknown isolation "${name}" (available: ${avail})`);
  }
  return name as Isolation;
}
