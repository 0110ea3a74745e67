/**
 * `moat run` of a terminal container without --console-socket: Moat serves the console itself
 * and relays the pty to its own stdio (runc insists on a real terminal there, so Moat only);
 * and `moat run -t -- CMD`, which asks for that terminal for the embedded default.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, runtimeArgv, skipReason } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'runc needs a real terminal on stdin for this' : skipReason();
if (skip) console.log(`# skipping run-console tests: ${skip}`);

describe('run with process.terminal and no console socket', { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  it('relays the pty both ways and passes the exit code', async () => {
    const b = await sb.bundle(['sh'], undefined, true);
    const r = await sb.rt(['run', '-b', b, sb.id()], { input: 'tty; echo hi-$((6*7)); exit 3\n' });
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stdout, /\/dev\/pts\/0/);
    assert.match(r.stdout, /hi-42/);
  });

  for (const isolation of ['container', 'sentry']) {
    it(`gives an embedded-default command a terminal of its own with -t (${isolation})`, async () => {
      // an interactive shell whose job control works: it leads its session on the new pty
      const r = await sb.rt(['run', '-t', '--isolation', isolation, '--', 'sh', '-i'], { input: 'tty; echo hi-$((6*7)); sleep 0.1 & wait; exit 3\n' });
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stdout, /\/dev\/pts\/0\r\n/);
      assert.match(r.stdout, /hi-42\r\n/);
      assert.doesNotMatch(r.stdout + r.stderr, /job control|tty process group|can't access tty/i);
    });
  }

  it('puts a real terminal in raw mode without output processing while it relays, and restores it', async (t) => {
    if (spawnSync('script', ['--version']).status !== 0) {
      console.log('# skipping the raw-mode test: script(1) (util-linux) is not installed');
      t.skip('script(1) is not installed');
      return;
    }
    // script(1) gives the runtime a pty as its terminal; its stdin stays open until the end
    const [cmd, pre] = runtimeArgv();
    const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const moat = [cmd, ...pre, '--root', sb.root, 'run', '-t', '--', 'sh', '-c', 'echo hi-$((6*7))'].map(q).join(' ');
    const child = spawn('script', ['-qec', `stty -a | grep -o -- '-*opost'; ${moat}; stty -a | grep -o -- '-*opost'`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
    const status = await new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.stdin.end();
    assert.equal(status, 0, out);
    // the container's pty turns "\n" into "\r\n"; the relaying terminal adds no second "\r"
    assert.match(out, /hi-42\r\n/, JSON.stringify(out));
    assert.equal(out.match(/-*opost/g)?.join(' '), 'opost opost', `the terminal's output processing before and after: ${JSON.stringify(out)}`);
  });

  it('refuses -t for a bundle, whose config.json says whether it gets a terminal', async () => {
    const b = await sb.bundle(['true']);
    const r = await sb.rt(['run', '-t', '-b', b, sb.id()]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--tty is only for the embedded default/);
  });
});
