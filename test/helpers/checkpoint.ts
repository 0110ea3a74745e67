/**
 * Helpers of the checkpoint tests (microvm and sentry): running the runtime with the container's
 * output into a file, reading a counter's output, rewriting an image's sections, and finding
 * processes a refused restore might have left.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_FILE, ImageReader, ImageWriter } from '../../src/checkpoint/image.js';
import { runtimeArgv } from './runtime.js';
import type { Sandbox } from './runtime.js';

/** Runs the runtime with stdout into `out` (where create/restore leave the container's output) and waits for it. */
export function runtimeTo(sb: Sandbox, args: string[], out: string): Promise<{ status: number | null; stderr: string }> {
  const [cmd, pre] = runtimeArgv();
  const fd = openSync(out, 'a');
  const errPath = `${out}.err`;
  const errFd = openSync(errPath, 'w');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...pre, '--root', sb.root, ...args], { stdio: ['ignore', fd, errFd] });
    child.on('error', reject);
    child.on('exit', (status) => {
      closeSync(fd);
      closeSync(errFd);
      resolve({ status, stderr: readFileSync(errPath, 'utf8') });
    });
  });
}

/** The numbers a counter printed into `path`, one per line (none if the file is not there yet). */
export function numbers(path: string): number[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map(Number) : [];
}

/**
 * Copies the image in directory `from` to a new directory `to` with `edit` applied to each
 * section's payload, hashes recomputed: a well-formed image whose content lies.
 */
export async function rewriteImage(from: string, to: string, edit: (type: number, payload: Buffer) => Buffer): Promise<string> {
  mkdirSync(to);
  const reader = await ImageReader.open(join(from, IMAGE_FILE));
  const writer = await ImageWriter.create(join(to, IMAGE_FILE));
  for (const x of reader.sections) await writer.addSection(x.type, edit(x.type, await reader.readAll(x)));
  await writer.finish();
  await reader.close();
  return to;
}

/** Whether any process's command line mentions `text` (a state directory, say). */
export function processMentions(text: string): boolean {
  return readdirSync('/proc').some((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text);
    } catch {
      return false;
    }
  });
}

/**
 * A python3 program that imports a set of modules, then every 200 ms reports how many modules it
 * holds, whether each is loaded, and the json module's identity: a restored process must report
 * the same line (nothing imported again).
 */
export const PYTHON_MODULES = [
  'import sys, time, json, decimal, email.parser, http.client, xml.dom.minidom, argparse, csv',
  'names = ["json", "decimal", "email.parser", "http.client", "xml.dom.minidom", "argparse", "csv"]',
  'while True:',
  '    print("modules", len(sys.modules), all(n in sys.modules for n in names), id(sys.modules["json"]), flush=True)',
  '    time.sleep(0.2)',
].join('\n');

/** The report lines PYTHON_MODULES printed into `file`. */
export function moduleLines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith('modules ')) : [];
}
