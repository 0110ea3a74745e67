/**
 * Checkpoint and restore for the sentry backend, with Moat's own checkpointer
 * (src/checkpoint/sentry/): the image holds the workload's process (SENTRY_PAGES and the
 * MANIFEST) and, for a bundle, the upper layer of the sentry's copy-on-write root as a tar
 * stream (SENTRY_FS), so files the workload wrote and holds open exist again on restore.
 */
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { IMAGE_FILE, ImageReader, ImageWriter, SECTION } from '../../checkpoint/image.js';
import { CheckpointRefused, captureProcess, capturePipes, captureSockets, FdContext, hostInfo, pagesOf, seizeTree } from '../../checkpoint/sentry/dump.js';
import { checkLayout, checkTree, PAGE, parseSentryManifest, SentryImageError } from '../../checkpoint/sentry/manifest.js';
import type { SentryManifest } from '../../checkpoint/sentry/manifest.js';
import type { ContainerRecord } from '../../container/store.js';
import type { CheckpointRequest } from '../backend.js';
import { trace } from '../../util/log.js';

/** tar's options for an overlay upper layer: whiteouts are devices, opaque dirs xattrs. */
const TAR_OPTS = ['--xattrs', '--xattrs-include=trusted.overlay.*', '--numeric-owner'];

/** Runs tar with `args`; resolves when it exits 0. */
function tar(args: string[], stdin: 'pipe' | 'ignore'): { proc: ReturnType<typeof spawn>; done: Promise<void> } {
  const proc = spawn('tar', [...TAR_OPTS, ...args], { stdio: [stdin, stdin === 'pipe' ? 'ignore' : 'pipe', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<void>((resolve, reject) => {
    proc.on('error', (e) => reject(new SentryImageError('SENTRY_FS', `cannot run tar: ${e.message}`)));
    proc.on('close', (code) => (code === 0 ? resolve() : reject(new SentryImageError('SENTRY_FS', `tar failed (status ${code}): ${err.trim().slice(0, 500)}`))));
  });
  return { proc, done };
}

/** Writes the checkpoint of sentry container `rec` (state dir `dir`) into `req.imagePath`. */
export async function checkpointSentry(rec: ContainerRecord, dir: string, req: CheckpointRequest, level: string): Promise<void> {
  if (rec.spec.process?.terminal) throw new CheckpointRefused(rec.id, 'a container with a terminal is not checkpointed yet');
  if (level !== 'strict' && level !== 'balanced') throw new CheckpointRefused(rec.id, `sentry level ${level} is not checkpointed`);
  const upper = join(dir, 'upper');
  const fs = existsSync(upper);
  const tree = seizeTree(rec.id, rec.pid);
  trace(`checkpoint: ${tree.length} processes seized`);
  const live = tree.filter((f) => f.tracee !== undefined);
  let writer: ImageWriter | undefined;
  let ok = false;
  try {
    const ctx = new FdContext(rec.pid);
    const processes = live.map((f) => captureProcess(rec.id, f, ctx));
    trace('checkpoint: processes captured');
    const manifest: SentryManifest = {
      kind: 'moat-checkpoint',
      version: 1,
      backend: 'sentry',
      id: rec.id,
      created: new Date().toISOString(),
      host: hostInfo(Buffer.from(processes[0]!.xstate, 'base64')),
      level,
      tree: tree.map((f) => f.node),
      pipes: capturePipes(ctx),
      sockets: captureSockets(rec.id, rec.pid, ctx),
      fs,
      embedded: rec.bundle === '',
      processes,
      spec: rec.spec as unknown as Record<string, unknown>,
    };
    trace('checkpoint: pipes and sockets captured');
    mkdirSync(req.imagePath, { recursive: true, mode: 0o700 });
    writer = await ImageWriter.create(join(req.imagePath, IMAGE_FILE));
    await writer.padTo(4096); // the pages page-aligned in the file: a snapshot's can be mapped
    await writer.addSection(SECTION.SENTRY_PAGES, (async function* () {
      for (const [i, p] of processes.entries()) yield* pagesOf(live[i]!.tracee!, p);
    })());
    if (fs) {
      // the processes are stopped: the files they wrote are as they left them
      const { proc: p, done } = tar(['-C', upper, '-cf', '-', '.'], 'ignore');
      const failed = done.then(() => undefined, (e: unknown) => e);
      await writer.addSection(SECTION.SENTRY_FS, p.stdout as Readable);
      const e = await failed;
      if (e) throw e;
    }
    await writer.addSection(SECTION.MANIFEST, Buffer.from(JSON.stringify(manifest)));
    await writer.finish();
    trace('checkpoint: image written');
    ok = true;
  } catch (e) {
    await writer?.abort();
    throw e;
  } finally {
    // children before parents: a traced process that died must be waited for by its tracer
    // before its parent (the init last, whose end waits for all the others) can reap it
    for (const f of [...live].reverse()) {
      if (ok && !req.leaveRunning) {
        // the other threads first: the leader's end is reported only once they are gone
        for (const th of f.threads) th.tracee.kill();
        f.tracee!.kill();
        continue;
      }
      for (const { tracee, regs } of [...f.threads, { tracee: f.tracee!, regs: f.regs! }]) {
        try {
          tracee.setRegs(regs);
          tracee.detach();
        } catch {
          // it died meanwhile
        }
      }
    }
  }
}

/** An opened sentry checkpoint: its manifest (checked) and where its sections are. */
export interface SentryImage {
  reader: ImageReader;
  manifest: SentryManifest;
}

/** Opens and checks a sentry checkpoint image in `imagePath` (layout, page count, sections present). */
export async function openSentryImage(imagePath: string): Promise<SentryImage> {
  const reader = await ImageReader.open(join(imagePath, IMAGE_FILE));
  try {
    const ms = reader.section(SECTION.MANIFEST);
    if (!ms) throw new SentryImageError('image', 'no MANIFEST section');
    let raw: unknown;
    try {
      raw = JSON.parse((await reader.readAll(ms)).toString('utf8'));
    } catch (e) {
      if (e instanceof SyntaxError) throw new SentryImageError('manifest', 'not JSON');
      throw e;
    }
    const manifest = parseSentryManifest(raw);
    checkTree(manifest);
    const pages = manifest.processes.reduce((n, p, i) => n + checkLayout(p, `manifest.processes[${i}]`), 0);
    const ps = reader.section(SECTION.SENTRY_PAGES);
    if (!ps) throw new SentryImageError('image', 'no SENTRY_PAGES section');
    if (ps.length !== pages * PAGE) throw new SentryImageError('SENTRY_PAGES', `${ps.length} bytes, but the manifest lists ${pages} pages (${pages * PAGE} bytes)`);
    if (manifest.fs !== (reader.section(SECTION.SENTRY_FS) !== undefined)) throw new SentryImageError('manifest.fs', 'does not match whether the image has a SENTRY_FS section');
    return { reader, manifest };
  } catch (e) {
    await reader.close();
    throw e;
  }
}

/** Unpacks the image's upper layer into `upper` (an empty directory of a new container), checking its SHA-256. */
export async function restoreUpper(img: SentryImage, upper: string): Promise<void> {
  const s = img.reader.section(SECTION.SENTRY_FS);
  if (!s) return;
  mkdirSync(upper, { recursive: true, mode: 0o755 });
  // GNU tar keeps members inside -C (no absolute names, no "..", symlinks extracted last)
  const { proc, done } = tar(['-C', upper, '-xpf', '-'], 'pipe');
  const failed = done.then(() => undefined, (e: unknown) => e);
  const stdin = proc.stdin!;
  stdin.on('error', () => undefined); // tar's own failure is the one reported
  try {
    for await (const chunk of img.reader.stream(s, 1 << 20)) {
      if (!stdin.write(chunk)) await new Promise((r) => stdin.once('drain', r));
    }
  } finally {
    stdin.end();
  }
  const e = await failed;
  if (e) throw e;
  refuseDevices(upper, upper);
}

/**
 * Refuses device nodes in an unpacked upper layer but overlayfs's whiteouts (character 0:0):
 * an image must not hand the container a device the spec did not give it.
 */
function refuseDevices(dir: string, top: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) refuseDevices(path, top);
    else if (e.isBlockDevice() || (e.isCharacterDevice() && lstatSync(path).rdev !== 0)) {
      throw new SentryImageError('SENTRY_FS', `the container's files hold a device node (${path.slice(top.length)}): refused`);
    }
  }
}
