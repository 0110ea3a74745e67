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
 * Picks the isolation for a container: the CLI flag wins over the annotation; the default is
 * `container`. A name that is not available is an error naming where it came from.
 */
export function chooseIsolation(flag: string | undefined, spec: Spec): Isolation {
  const fromSpec = spec.annotations?.[ISOLATION_ANNOTATION];
  const name = flag ?? fromSpec ?? 'container';
  if (!(name in loaders)) {
    const avail = availableIsolations().join(', ');
    if (flag === undefined) {
      throw new ConfigError(`annotations["${ISOLATION_ANNOTATION}"]`, `unknown isolation "${name}" (available: ${avail})`);
    }
    throw new UsageError(`--isolation: unknown isolation "${name}" (available: ${avail})`);
  }
  return name as Isolation;
}
