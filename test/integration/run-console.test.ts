/**
 * `moat run` of a terminal container without --console-socket: Moat serves the console itself
 * and relays the pty to its own stdio (runc insists on a real terminal there, so Moat only).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

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
});
