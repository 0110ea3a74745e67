/**
 * The command line of `containerd-shim-moat-v1` (Go's flag syntax, as containerd passes it) and
 * the shim socket naming. Kept free of Moat's heavier modules: the short-lived `start` process
 * loads only this and Node's core (see start.ts).
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';

/** Where containerd 1.6 and its shims keep shim sockets. */
export const SOCKET_DIR = '/run/containerd/s';
/** Annotations that put containers into one sandbox (one shim). */
export const GROUP_ANNOTATIONS = ['io.kubernetes.cri.sandbox-id'];

/** A command line the shim does not accept. */
export class ShimUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShimUsageError';
  }
}

/** The shim's command line (Go's flag package syntax: -name value or -name=value). */
export interface ShimFlags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  action: string;
}

/** Parses the flags containerd passes; unknown flags are a ShimUsageError. */
export function parseShimFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = { namespace: '', id: '', address: '', publishBinary: 'containerd', bundle: '', socket: '', debug: false, version: false, action: '' };
  const strings: Record<string, keyof ShimFlags> = {
    namespace: 'namespace',
    id: 'id',
    address: 'address',
    'publish-binary': 'publishBinary',
    bundle: 'bundle',
    socket: 'socket',
  };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'debug' || name === 'v') {
      const v = eq >= 0 ? body.slice(eq + 1) : 'true';
      (f as unknown as Record<string, boolean>)[name === 'v' ? 'version' : 'debug'] = v === 'true' || v === '1';
      continue;
    }
    const key = strings[name];
    if (!key) throw new ShimUsageError(`flag provided but not defined: -${name}`);
    let value: string | undefined;
    if (eq >= 0) value = body.slice(eq + 1);
    else value = argv[++i];
    if (value === undefined) throw new ShimUsageError(`flag needs an argument: -${name}`);
    (f as unknown as Record<string, string>)[key] = value;
  }
  f.action = argv[i] ?? '';
  return f;
}

/** The ttrpc address of a sandbox's shim: a hash of containerd's address, namespace and group. */
export function socketAddress(containerdAddress: string, namespace: string, group: string): string {
  const d = createHash('sha256').update(posix.join(containerdAddress, namespace, group)).digest('hex');
  return `unix://${SOCKET_DIR}/${d}`;
}

/** The path of a unix:// address. */
export const socketPath = (address: string): string => address.replace(/^unix:\/\//, '');
