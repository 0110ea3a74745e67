/**
 * Checkpoint and restore of a microVM at the VMM level: QEMU's own migration, to and from Moat's
 * checkpoint image (src/checkpoint/image.ts). Checkpoint stops the vCPUs (QMP `stop`), takes the
 * monitor's view (the guest pid of the container process, a half-received frame), streams
 * QEMU's migration into the VM_MIGRATION section, then — the migration having flushed and
 * released the disk — the qcow2 overlay into VM_DISK, and a MANIFEST; the VM then goes on
 * (--leave-running: QMP `cont`) or ends (QMP `quit`). Restore boots a VMM with the same machine
 * paused on `-incoming defer`, copies the disk back, streams the memory in, checks every
 * section's SHA-256 and only then continues the VM (QMP `cont`); the guest agent never notices.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { MoatError } from '../../errors.js';
import { IMAGE_FILE, ImageReader, ImageWriter, SECTION } from '../../checkpoint/image.js';
import type { Spec } from '../../spec/schema.js';
import { qcow2BackingFile } from './disk.js';
import { isLoopback, MAX_NAMESERVERS } from './dns.js';
import { Qmp } from './qmp.js';
import type { Accel } from './types.js';
import { parsePolicy } from '../sentry/netpolicy.js';
import { socketDir } from './sockdir.js';

/** A checkpoint or restore the microvm backend cannot do, with the reason. */
export class MicrovmCheckpointError extends MoatError {
  constructor(id: string, detail: string) {
    super(`container "${id}": ${detail}`);
  }
}

/** The MANIFEST section of a microVM checkpoint (JSON). */
export interface MicrovmManifest {
  kind: 'moat-checkpoint';
  version: 1;
  backend: 'microvm';
  id: string;
  created: string;
  /** The host it was taken on (KVM restores need the same CPU). */
  host: { kernel: string; cpu: string };
  vm: {
    driver: 'qemu';
    accel: Accel;
    memoryMiB: number;
    vcpus: number;
    /** The extra kernel command line (QEMU's fw_cfg must match on restore). */
    cmdline: string;
    guestRelease: string;
    /** The read-only base image the qcow2 overlay in VM_DISK is backed by. */
    baseImage: string;
    /** The VM's --allow-egress rules (its network device is part of the machine); absent in older images: none. */
    egress?: string[];
  };
  monitor: { pid: number; pending: string; nextStream: number; dns?: string[] };
  spec: Spec;
}

/** The CPU model of this host, as /proc/cpuinfo names it. */
export function hostCpu(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Listens on `path` for exactly one connection. */
async function listenOnce(path: string): Promise<{ server: Server; conn: Promise<Socket> }> {
  const server = createServer({ pauseOnConnect: true });
  const conn = new Promise<Socket>((res) => server.once('connection', (s: Socket) => res(s)));
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => res());
  });
  return { server, conn };
}

/** Polls query-migrate until the migration completed; throws if it failed or timed out. */
async function migrationDone(qmp: Qmp, id: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled') {
      throw new MicrovmCheckpointError(id, `QEMU's migration ${r.status}${r['error-desc'] ? `: ${r['error-desc']}` : ''}`);
    }
    if (Date.now() > deadline) throw new MicrovmCheckpointError(id, `QEMU's migration did not finish within ${timeoutMs / 1000} s (status ${r.status ?? '?'})`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** What checkpoint needs of the running VM. */
export interface VmCheckpointInput {
  id: string;
  dir: string;
  imagePath: string;
  leaveRunning: boolean;
  spec: Spec;
  vm: MicrovmManifest['vm'];
  /** Asks the VM monitor for its checkpoint state. */
  monitorState: () => Promise<{ pid: number; pending: string; nextStream: number; dns?: string[] }>;
}

/** Writes the checkpoint image of a running microVM; see the file comment. */
export async function checkpointVm(c: VmCheckpointInput): Promise<void> {
  mkdirSync(c.imagePath, { recursive: true, mode: 0o700 });
  const writer = await ImageWriter.create(join(c.imagePath, IMAGE_FILE));
  let qmp: Qmp | undefined;
  let stopped = false;
  try {
    qmp = await Qmp.connect(join(socketDir(c.dir), 'qmp.sock'));
    await qmp.execute('stop');
    stopped = true;
    // what QEMU took from the guest's queues before the stop reaches the monitor now
    await new Promise((res) => setTimeout(res, 100));
    const monitor = await c.monitorState();
    const sock = join(socketDir(c.dir), 'migrate.sock');
    const { server, conn } = await listenOnce(sock);
    try {
      await qmp.execute('migrate', { uri: `unix:${sock}` });
      // (paused until the section's async iteration reads it: nothing is lost before)
      await writer.addSection(SECTION.VM_MIGRATION, await conn);
      await migrationDone(qmp, c.id, 60_000);
    } finally {
      server.close();
    }
    // the source has flushed and released its disk at the end of the migration
    await writer.addSection(SECTION.VM_DISK, createReadStream(join(c.dir, 'disk.qcow2')));
    const manifest: MicrovmManifest = {
      kind: 'moat-checkpoint',
      version: 1,
      backend: 'microvm',
      id: c.id,
      created: new Date().toISOString(),
      host: { kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), cpu: hostCpu() },
      vm: c.vm,
      monitor,
      spec: c.spec,
    };
    await writer.addSection(SECTION.MANIFEST, Buffer.from(JSON.stringify(manifest)));
    await writer.finish();
  } catch (e) {
    await writer.abort();
    // a failed checkpoint leaves the container as it was
    if (stopped && qmp) await qmp.execute('cont').catch(() => {});
    qmp?.close();
    throw e;
  }
  try {
    if (c.leaveRunning) await qmp.execute('cont');
    else await qmp.execute('quit'); // the VMM exits; the monitor sees the channel close and ends
  } finally {
    qmp.close();
  }
}

/** Opens a checkpoint image and checks that it is a microVM checkpoint this host can restore. */
export async function openVmImage(id: string, imagePath: string, accelHere: () => Promise<Accel>): Promise<{ reader: ImageReader; manifest: MicrovmManifest }> {
  const reader = await ImageReader.open(join(imagePath, IMAGE_FILE));
  try {
    const m = reader.section(SECTION.MANIFEST);
    if (!m) throw new MicrovmCheckpointError(id, `${reader.path} has no MANIFEST section`);
    let manifest: MicrovmManifest;
    try {
      manifest = JSON.parse((await reader.readAll(m)).toString('utf8')) as MicrovmManifest;
    } catch (e) {
      throw e instanceof MoatError ? e : new MicrovmCheckpointError(id, `${reader.path}: the manifest is not JSON`);
    }
    const obj = (x: unknown): boolean => typeof x === 'object' && x !== null && !Array.isArray(x);
    if (!obj(manifest)) throw new MicrovmCheckpointError(id, `${reader.path}: the manifest is not a JSON object`);
    const v = manifest.vm;
    const mon = manifest.monitor;
    if (manifest.kind !== 'moat-checkpoint' || manifest.version !== 1 || manifest.backend !== 'microvm' || !obj(v) || !obj(mon) || !obj(manifest.host) ||
      typeof manifest.host.cpu !== 'string' || typeof v.guestRelease !== 'string') {
      throw new MicrovmCheckpointError(id, `${reader.path} is not a microvm checkpoint (backend ${String(manifest.backend)})`);
    }
    const int = (n: unknown, lo: number, hi: number): boolean => typeof n === 'number' && Number.isInteger(n) && n >= lo && n <= hi;
    if (!int(v.memoryMiB, 16, 1 << 16) || !int(v.vcpus, 1, 255) || (v.accel !== 'kvm' && v.accel !== 'tcg') || typeof v.cmdline !== 'string' || typeof v.baseImage !== 'string' ||
      !int(mon.pid, 0, 0xffffffff) || typeof mon.pending !== 'string' || mon.pending.length > 2 * 1024 * 1024 || !int(mon.nextStream, 1, 0xffffffff)) {
      throw new MicrovmCheckpointError(id, `${reader.path}: the manifest's vm or monitor settings are malformed`);
    }
    if (mon.dns !== undefined && (!Array.isArray(mon.dns) || mon.dns.length > MAX_NAMESERVERS || !mon.dns.every((a) => typeof a === 'string' && isLoopback(a)))) {
      throw new MicrovmCheckpointError(id, `${reader.path}: the manifest's relayed nameservers are malformed`);
    }
    if (v.egress !== undefined && (!Array.isArray(v.egress) || v.egress.length > 64 || !v.egress.every((r) => typeof r === 'string' && r.length <= 128 && !r.includes(',')))) {
      throw new MicrovmCheckpointError(id, `${reader.path}: the manifest's egress rules are malformed`);
    }
    if (v.egress !== undefined && v.egress.length > 0) parsePolicy('egress', v.egress);
    if (!reader.section(SECTION.VM_MIGRATION) || !reader.section(SECTION.VM_DISK)) {
      throw new MicrovmCheckpointError(id, `${reader.path} lacks the VM_MIGRATION or VM_DISK section`);
    }
    if (!existsSync(v.baseImage) || !statSync(v.baseImage).isFile()) {
      throw new MicrovmCheckpointError(id, `the checkpoint's base image ${v.baseImage} is gone (restore needs the image cache of the machine it was taken on)`);
    }
    const accel = await accelHere();
    if (accel !== v.accel) throw new MicrovmCheckpointError(id, `the checkpoint ran under ${v.accel}, this host runs VMs under ${accel}`);
    if (v.accel === 'kvm' && manifest.host.cpu !== hostCpu()) {
      throw new MicrovmCheckpointError(id, `the checkpoint ran on a "${manifest.host.cpu}" CPU under KVM; this host has "${hostCpu()}"`);
    }
    return { reader, manifest };
  } catch (e) {
    await reader.close();
    throw e;
  }
}

/**
 * Writes the VM_DISK section to `path` (the new VM's qcow2 overlay), verified, and checks that
 * the overlay is backed by exactly `base`, an image of the state root's cache (`imagesDir`): an
 * image is untrusted, and a qcow2 naming another host file as its backing file would have the
 * VMM's jail bind that file and the guest read it. Returns the checked backing chain.
 */
export async function restoreDisk(id: string, reader: ImageReader, path: string, base: string, imagesDir: string): Promise<string[]> {
  const s = reader.section(SECTION.VM_DISK);
  if (!s) throw new MoatError(`${reader.path}: no VM_DISK section`);
  let real: string;
  try {
    real = realpathSync(base);
  } catch {
    throw new MicrovmCheckpointError(id, `the checkpoint's base image ${base} is gone`);
  }
  if (dirname(real) !== realpathSync(imagesDir) || !/^[0-9a-f]{64}\.ext4$/.test(basename(real))) {
    throw new MicrovmCheckpointError(id, `the checkpoint names ${base} as its base image, which is not an image of ${imagesDir}`);
  }
  await pipeline(reader.stream(s), createWriteStream(path, { flags: 'wx', mode: 0o600 }));
  const backing = qcow2BackingFile(path);
  if (backing !== base) throw new MicrovmCheckpointError(id, `the checkpoint's disk is backed by ${JSON.stringify(backing)}, not by its base image ${base}`);
  return [real];
}

/**
 * Feeds the VM_MIGRATION section to a VMM started with `-incoming defer` (QMP at `qmpSocket`,
 * the migration socket under `dir`) and continues the VM once the whole stream arrived and
 * matched its SHA-256.
 */
export async function restoreMemory(id: string, reader: ImageReader, dir: string, qmpSocket: string, timeoutMs = 120_000, paused = false): Promise<void> {
  const s = reader.section(SECTION.VM_MIGRATION);
  if (!s) throw new MoatError(`${reader.path}: no VM_MIGRATION section`);
  const deadline = Date.now() + timeoutMs;
  let qmp: Qmp | undefined;
  for (;;) {
    try {
      qmp = await Qmp.connect(qmpSocket, 5000);
      break;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((res) => setTimeout(res, 20));
    }
  }
  try {
    const sock = join(socketDir(dir), 'incoming.sock');
    await qmp.execute('migrate-incoming', { uri: `unix:${sock}` });
    const out = connect(sock);
    await new Promise<void>((res, rej) => {
      out.once('connect', () => res());
      out.once('error', rej);
    });
    // stream() throws at the end if the bytes differ from the recorded hash: the VM then never runs
    await pipeline(reader.stream(s), out);
    await migrationDone(qmp, id, Math.max(1000, deadline - Date.now()));
    if (!paused) await qmp.execute('cont');
  } finally {
    qmp.close();
  }
}

/** Continues a VM restored paused (`start` of a container made from a snapshot). */
export async function continueVm(dir: string): Promise<void> {
  const qmp = await Qmp.connect(join(socketDir(dir), 'qmp.sock'));
  try {
    await qmp.execute('cont');
  } finally {
    qmp.close();
  }
}
