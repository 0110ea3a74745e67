/**
 * What a spec says about the container's network namespace, for backends that do not simply
 * hand it to the kernel (the sentry's policy, the microvm's pod network).
 */
import type { Spec } from './schema.js';

/** The spec's network namespace: a path to join, a new one (no path), or undefined (the host's). */
export function specNetns(spec: Pick<Spec, 'linux'>): { path?: string } | undefined {
  const ns = spec.linux?.namespaces?.find((n) => n.type === 'network');
  if (ns === undefined) return undefined;
  return ns.path !== undefined && ns.path !== '' ? { path: ns.path } : {};
}

/**
 * Whether the container's network namespace is one its engine equips: it comes by path (a CNI
 * plugin, podman's netavark) or a prestart/createRuntime hook runs once it exists (Docker's
 * libnetwork moves a veth into /proc/PID/ns/net).
 */
export function engineNetwork(spec: Pick<Spec, 'linux' | 'hooks'>): boolean {
  const ns = specNetns(spec);
  if (ns === undefined) return false;
  return ns.path !== undefined || (spec.hooks?.prestart?.length ?? 0) + (spec.hooks?.createRuntime?.length ?? 0) > 0;
}
