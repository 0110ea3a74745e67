/**
 * inputStream (src/util/input.ts): a process that reads an inherited pipe nobody closes (a
 * shim's stdin FIFO, as a microVM exec's relay and monitor have) can still exit, and reads what
 * arrives. With fs.createReadStream the read blocks a thread-pool thread, which Node joins at
 * exit: such a process never ends.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, test } from 'node:test';

const module = pathToFileURL(fileURLToPath(new URL('../../src/util/input.js', import.meta.url))).href;

/** Runs `reader` (a module body given inputStream) with stdin a pipe this process keeps open; resolves with its status and output. */
function runReader(reader: string, input: string): Promise<{ status: number | null; out: string }> {
  const code = `import { inputStream } from ${JSON.stringify(module)};\n${reader}`;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.write(input); // and never ended while the child runs
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (status) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ status, out });
    });
  });
}

describe('inputStream', () => {
  test('reads an open pipe, and the process exits while the pipe stays open', async () => {
    const r = await runReader(
      `const s = inputStream(0);
       s.on('data', (d) => { process.stdout.write('got ' + d); setTimeout(() => process.exit(3), 50); });`,
      'hello\n',
    );
    assert.equal(r.out, 'got hello\n');
    assert.equal(r.status, 3, 'the reader did not exit with its own status (killed after 30 s: it hung)');
  });
});
