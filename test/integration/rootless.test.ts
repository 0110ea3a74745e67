/**
 * Rootless: an unprivileged user runs containers in a user namespace of its own. The bundle
 * part is runtime-agnostic (runc runs it too); the embedded default is Moat's.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

const NOBODY = 65534;
const userns = (() => {
  try {
    return Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8')) > 0;
  } catch {
    return false;
  }
})();
const skip = skipReason() ?? (userns ? undefined : 'user namespaces are disabled on this host');
if (skip) console.log(`# skipping rootless tests: ${skip}`);

/** Makes a tree readable (and directories traversable) by everyone. */
function openUp(dir: string): void {
  chmodSync(dir, 0o755);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) openUp(join(dir, e.name));
  }
}

describe(`rootless (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());
  let root: string;
  before(() => {
    chmodSync(sb.tmp, 0o755);
    root = join(sb.tmp, 'nobody-state');
    mkdirSync(root);
    chownSync(root, NOBODY, NOBODY);
  });
  const asNobody = (args: string[]) => sb.rt(['--root', root, ...args], { asUser: NOBODY });

  it('runs a bundle whose user namespace maps root to the caller', async () => {
    const b = await sb.bundle(['sh', '-c', 'id -u; cat /proc/self/uid_map; echo ok > /tmp/w && cat /tmp/w'], (s) => {
      s.linux.namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'user' }];
      s.linux.uidMappings = [{ containerID: 0, hostID: NOBODY, size: 1 }];
      s.linux.gidMappings = [{ containerID: 0, hostID: NOBODY, size: 1 }];
      for (const m of s.mounts) {
        if (m.destination === '/dev/pts') m.options = m.options.filter((o: string) => !o.startsWith('gid='));
        if (m.destination === '/sys') Object.assign(m, { type: 'none', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] });
      }
    });
    openUp(b);
    chownSync(join(b, 'rootfs/tmp'), NOBODY, NOBODY);
    const id = sb.id();
    // sb.rt puts its own --root first; runc and Moat both take the last --root given
    const r = await asNobody(['run', '-b', b, id]);
    assert.equal(r.status, 0, r.stderr);
    const [uid, map, ok] = r.stdout.trim().split('\n');
    assert.equal(uid, '0');
    assert.deepEqual(map!.trim().split(/\s+/), ['0', String(NOBODY), '1']);
    assert.equal(ok, 'ok');
  });

  it('moat run -- CMD works unprivileged: read-only host root, private writable /tmp', { skip: RUNTIME !== 'moat' ? 'the embedded default is Moat-only' : false }, async () => {
    const r = await asNobody(['run', '--cwd', '/', '--', 'sh', '-c', 'id -u; echo hi > /tmp/x && cat /tmp/x; touch /etc/moat-rootless 2>/dev/null && echo wrote-etc; cat /proc/self/uid_map']);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], '0');
    assert.equal(lines[1], 'hi');
    assert.ok(!lines.includes('wrote-etc'), 'the host root was writable');
    assert.deepEqual(lines.at(-1)!.trim().split(/\s+/), ['0', String(NOBODY), '1']);
  });

  it('moat run --isolation sentry -- CMD works unprivileged too (the host mounts made read-only before the synthesized /proc)', { skip: RUNTIME !== 'moat' ? 'the sentry is Moat-only' : false }, async () => {
    const r = await asNobody(['run', '--isolation', 'sentry', '--cwd', '/', '--', 'sh', '-c', 'id -u; echo hi > /tmp/x && cat /tmp/x; touch /etc/moat-rootless 2>/dev/null && echo wrote-etc; ls /proc']);
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 2), ['0', 'hi']);
    assert.ok(!lines.includes('wrote-etc'), 'the host root was writable');
    // the sentry's /proc: the sandbox's own processes only
    assert.ok(lines.includes('self') && lines.filter((l) => /^\d+$/.test(l)).every((p) => Number(p) < 100), `ls /proc: ${lines.slice(2).join(' ')}`);
  });
});
