/**
 * A microVM's pod network: the interface that a CNI plugin (containerd, Kubernetes), podman's
 * netavark or Docker's libnetwork (from its prestart hook) put in the container's network
 * namespace, carried into the guest as Kata Containers does. The namespace keeps its interface
 * (a veth, macvlan, ...) and its addresses; a tap device made next to it is QEMU's network
 * backend, and two tc redirects (ingress of each to egress of the other) move every frame
 * between them. The guest's NIC gets the interface's MAC and MTU, and the agent gives it the
 * interface's addresses and routes (moat.net=static on the kernel command line): to the
 * network outside, the VM is the interface.
 *
 * The namespace work runs in the calling thread: setns(2) of this thread only, and every step
 * between the switch and the switch back is synchronous (no event-loop turn runs in the pod's
 * namespace). The `ip` and `tc` commands of iproute2 read the namespace and install the
 * redirects; children started from this thread start in its namespace.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { HostError, MoatError } from '../../errors.js';
import * as k from '../../sys/kernel.js';

/** clone(2)/setns(2) flag of a network namespace. */
const CLONE_NEWNET = 0x40000000;
/** TUNSETIFF: _IOW('T', 202, int). */
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
/** The tap's name template: the kernel picks the first free number. */
const TAP_NAME = 'moat%d';
/** What the guest command line can carry (it is at most 2048 bytes in all). */
const MAX_ADDRS = 8;
const MAX_ROUTES = 16;
/** iproute2's commands run with this PATH (the runtime's own may be a caller's). */
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

/** A pod network that cannot be carried into a microVM: the container id and what was wrong. */
export class PodNetworkError extends MoatError {
  constructor(
    readonly containerId: string,
    detail: string,
  ) {
    super(`container "${containerId}": pod network: ${detail}`);
    this.name = 'PodNetworkError';
  }
}

/** An address of the pod's interface, as the guest is given it. */
export interface PodAddress {
  family: 4 | 6;
  address: string;
  prefix: number;
}

/** A route of the pod's namespace through its interface: `dst`/`prefix`, via `gateway` when set. */
export interface PodRoute {
  family: 4 | 6;
  dst: string;
  prefix: number;
  gateway?: string;
}

/** The one interface of a pod's network namespace, as the guest takes it over. */
export interface PodInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: PodAddress[];
  routes: PodRoute[];
}

/** Puts the calling thread back into the network namespace `own`; a thread left in another must not go on. */
function returnTo(own: number): void {
  const rc = k.setns(own, CLONE_NEWNET);
  if (rc < 0) {
    process.stderr.write(`moat: cannot return to the runtime's network namespace (errno ${-rc})\n`);
    process.exit(70);
  }
}

/** Runs `fn` with the calling thread in the network namespace `nsFd`, then puts it back. */
export function inNetns<T>(nsFd: number, fn: () => T): T {
  const own = openSync('/proc/thread-self/ns/net', 'r');
  try {
    const rc = k.setns(nsFd, CLONE_NEWNET);
    if (rc < 0) throw new HostError(`setns into a network namespace: errno ${-rc}`);
    try {
      return fn();
    } finally {
      returnTo(own);
    }
  } finally {
    closeSync(own);
  }
}

/** Opens the container's network namespace: the spec's path, or a new empty one (an fd; the caller closes it). */
export function openNetns(id: string, ns: { path?: string }): number {
  if (ns.path !== undefined) {
    try {
      return openSync(ns.path, 'r');
    } catch (e) {
      throw new PodNetworkError(id, `linux.namespaces: network namespace ${ns.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const own = openSync('/proc/thread-self/ns/net', 'r');
  try {
    const rc = k.unshare(CLONE_NEWNET);
    if (rc < 0) throw new HostError(`container "${id}": unshare of a network namespace: errno ${-rc}`);
    try {
      return openSync('/proc/thread-self/ns/net', 'r');
    } finally {
      returnTo(own);
    }
  } finally {
    closeSync(own);
  }
}

/** Runs an iproute2 command in the calling thread's namespace; its stdout, or a PodNetworkError with its stderr. */
function tool(id: string, argv: readonly string[]): string {
  const r = spawnSync(argv[0] ?? '', argv.slice(1), { encoding: 'utf8', env: TOOL_ENV, timeout: 10_000 });
  if (r.error !== undefined) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new PodNetworkError(id, code === 'ENOENT' ? `\`${argv[0]}\` is not installed (iproute2 carries the network into the VM)` : `${argv.join(' ')}: ${r.error.message}`);
  }
  if (r.status !== 0) throw new PodNetworkError(id, `${argv.join(' ')}: ${(r.stderr || `status ${String(r.status)}`).trim()}`);
  return r.stdout;
}

const linkSchema = z.array(
  z.object({
    ifname: z.string(),
    link_type: z.string().optional(),
    linkinfo: z.object({ info_kind: z.string().optional() }).passthrough().optional(),
    address: z.string().optional(),
    mtu: z.number().int().positive().optional(),
    addr_info: z.array(z.object({ family: z.string(), local: z.string().optional(), prefixlen: z.number().int(), scope: z.string().optional() }).passthrough()).optional(),
  }).passthrough(),
);

const routeSchema = z.array(
  z.object({ dst: z.string(), gateway: z.string().optional(), dev: z.string().optional(), protocol: z.string().optional(), type: z.string().optional() }).passthrough(),
);

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Whether a link (of `ip -j -d`) is a VM's tap made by attachTap. */
const isVmTap = (l: z.infer<typeof linkSchema>[number]): boolean => l.linkinfo?.info_kind === 'tun' && /^moat\d+$/.test(l.ifname);

/** "default", "10.0.0.0/8", "10.1.2.3" as address and prefix length. */
function parseDst(dst: string, family: 4 | 6): { dst: string; prefix: number } {
  if (dst === 'default') return { dst: family === 4 ? '0.0.0.0' : '::', prefix: 0 };
  const slash = dst.indexOf('/');
  if (slash < 0) return { dst, prefix: family === 4 ? 32 : 128 };
  return { dst: dst.slice(0, slash), prefix: Number(dst.slice(slash + 1)) };
}

/**
 * The Ethernet interface of the namespace (lo aside) with its global addresses and the routes
 * through it that the kernel did not make itself (a default route, static routes), or
 * undefined when there is none. More than one is refused: a microVM has one network device.
 */
export function readPodInterface(id: string, nsFd: number): PodInterface | undefined {
  return inNetns(nsFd, () => {
    const links = linkSchema.parse(JSON.parse(tool(id, ['ip', '-j', '-d', 'address', 'show'])));
    // another VM's tap: the namespace's interface is taken (one VM per interface; a pod's
    // containers under microvm cannot share it)
    const taken = links.find(isVmTap);
    if (taken !== undefined) throw new PodNetworkError(id, `the network namespace's interface already carries another microVM's network (its tap ${taken.ifname}); a VM takes an interface over alone`);
    const ether = links.filter((l) => l.ifname !== 'lo' && (l.link_type ?? 'ether') === 'ether');
    if (ether.length === 0) return undefined;
    if (ether.length > 1) throw new PodNetworkError(id, `the network namespace has ${ether.length} interfaces (${ether.map((l) => l.ifname).join(', ')}); a microVM has one network device`);
    const link = ether[0]!;
    const mac = (link.address ?? '').toLowerCase();
    if (!MAC.test(mac)) throw new PodNetworkError(id, `interface ${link.ifname} has no Ethernet address (${link.address ?? 'none'})`);
    const addresses: PodAddress[] = [];
    for (const a of link.addr_info ?? []) {
      if (a.local === undefined || (a.scope !== undefined && a.scope !== 'global')) continue;
      if (a.family !== 'inet' && a.family !== 'inet6') continue;
      addresses.push({ family: a.family === 'inet' ? 4 : 6, address: a.local, prefix: a.prefixlen });
    }
    const routes: PodRoute[] = [];
    for (const family of [4, 6] as const) {
      const list = routeSchema.parse(JSON.parse(tool(id, ['ip', '-j', `-${family}`, 'route', 'show', 'table', 'main'])));
      for (const r of list) {
        // the kernel's own routes (an address's subnet, IPv6 link-local) come back with the addresses
        if (r.dev !== link.ifname || r.protocol === 'kernel' || (r.type !== undefined && r.type !== 'unicast')) continue;
        routes.push({ family, ...parseDst(r.dst, family), ...(r.gateway !== undefined ? { gateway: r.gateway } : {}) });
      }
    }
    // the guest's command line carries them: nothing but an address may go there
    for (const x of [...addresses.map((a) => a.address), ...routes.flatMap((r) => [r.dst, ...(r.gateway !== undefined ? [r.gateway] : [])])]) {
      if (isIP(x) === 0) throw new PodNetworkError(id, `interface ${link.ifname}: "${x}" is not an IP address`);
    }
    if (addresses.length > MAX_ADDRS) throw new PodNetworkError(id, `interface ${link.ifname} has ${addresses.length} addresses; a microVM takes at most ${MAX_ADDRS}`);
    if (routes.length > MAX_ROUTES) throw new PodNetworkError(id, `interface ${link.ifname} has ${routes.length} routes; a microVM takes at most ${MAX_ROUTES}`);
    return { name: link.ifname, mac, mtu: link.mtu ?? 1500, addresses, routes };
  });
}

/**
 * Makes the tap device next to `pod` in its namespace and the tc redirects between the two;
 * returns the tap's fd (for QEMU; close-on-exec here) and name. The tap lives as long as an fd
 * of it is open: when the VM ends, it and its redirect go, and the one on the pod's interface
 * drops frames until the next VM replaces it.
 */
export function attachTap(id: string, nsFd: number, pod: PodInterface): { fd: number; name: string } {
  return inNetns(nsFd, () => {
    const fd = openSync('/dev/net/tun', 'r+');
    try {
      const ifr = Buffer.alloc(40);
      ifr.write(TAP_NAME, 0, 'latin1');
      ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, 16);
      const rc = k.ioctlBuf(fd, TUNSETIFF, ifr);
      if (rc < 0) throw new PodNetworkError(id, `cannot make a tap device: errno ${-rc}`);
      const name = ifr.toString('latin1', 0, 16).replace(/\0.*$/s, '');
      tool(id, ['ip', 'link', 'set', 'dev', name, 'mtu', String(pod.mtu), 'up']);
      for (const [from, to] of [[pod.name, name], [name, pod.name]] as const) {
        // a redirect a VM before this one left on the pod's interface goes first
        spawnSync('tc', ['qdisc', 'del', 'dev', from, 'ingress'], { env: TOOL_ENV, stdio: 'ignore', timeout: 10_000 });
        tool(id, ['tc', 'qdisc', 'add', 'dev', from, 'ingress']);
        tool(id, ['tc', 'filter', 'add', 'dev', from, 'parent', 'ffff:', 'protocol', 'all', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', to]);
      }
      return { fd, name };
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  });
}

/**
 * Takes the redirect off the pod's interface `ifname` in the namespace `nsFd`, unless another
 * VM's tap lives there now (a container of the pod made after this one's VM ended: the redirect
 * is that VM's); errors are ignored.
 */
export function unredirect(nsFd: number, ifname: string): void {
  try {
    inNetns(nsFd, () => {
      const r = spawnSync('ip', ['-j', '-d', 'link', 'show'], { encoding: 'utf8', env: TOOL_ENV, timeout: 10_000 });
      const links = r.status === 0 ? linkSchema.safeParse(JSON.parse(r.stdout)) : undefined;
      if (links === undefined || !links.success || links.data.some(isVmTap)) return;
      spawnSync('tc', ['qdisc', 'del', 'dev', ifname, 'ingress'], { env: TOOL_ENV, stdio: 'ignore', timeout: 10_000 });
    });
  } catch {
    // best effort: the namespace keeps a redirect to nothing until the next VM replaces it
  }
}

/** Takes the redirect off the pod's interface when a VM whose namespace outlives it is deleted; errors are ignored. */
export function detachPodInterface(nsPath: string, ifname: string): void {
  let fd: number;
  try {
    fd = openSync(nsPath, 'r');
  } catch {
    return; // the namespace went with its pod
  }
  try {
    unredirect(fd, ifname);
  } finally {
    closeSync(fd);
  }
}

/** The guest kernel command line that gives the guest's NIC the pod interface's MTU, addresses and routes (the agent's moat.net=static). */
export function guestNetArgs(pod: PodInterface): string {
  const words = ['moat.net=static', `moat.mtu=${pod.mtu}`];
  for (const a of pod.addresses) words.push(`moat.addr=${a.address}/${a.prefix}`);
  for (const r of pod.routes) words.push(`moat.route=${r.dst}/${r.prefix}${r.gateway !== undefined ? `,${r.gateway}` : ''}`);
  return words.join(' ');
}
