/**
 * One behaviour for every isolation: a writable bind mount keeps the owners and modes the
 * container gives its files, on the host as in the container, and the kernel's permission
 * checks follow them (Docker's volumes under an image whose service runs as another user).
 */
import assert from 'node:assert/strict';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from './runtime.js';

/** The capabilities Docker gives a container's root that act on files. */
const FILE_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID'];

/**
 * In a container of `sb` (runtime arguments `extra`, e.g. `--isolation microvm`) with a host
 * directory bound read-write at /rw: root makes a directory for uid 1000 (0700) and a file for
 * 1001:1002 (0640); uid 1000 writes in its directory and cannot read the file. Asserts what the
 * container sees and what the host has.
 */
export async function assertBindOwners(sb: Sandbox, extra: string[], timeoutMs = 30_000): Promise<void> {
  const dir = join(sb.tmp, `bind-owners-${Date.now()}`);
  mkdirSync(dir);
  const b = await sb.bundle(['sleep', '1000'], (s) => {
    s.mounts.push({ destination: '/rw', type: 'bind', source: dir, options: ['rbind', 'rw'] });
    const c = s.process.capabilities;
    for (const set of ['bounding', 'effective', 'permitted']) c[set] = [...new Set([...(c[set] ?? []), ...FILE_CAPS])];
  });
  const id = sb.id('owners');
  const c = await sb.rt(['create', ...extra, '-b', b, id], { timeoutMs });
  assert.equal(c.status, 0, c.stderr);
  try {
    await sb.ok(['start', id]);
    const root = await sb.rt(['exec', id, 'sh', '-c', 'mkdir /rw/d && chown 1000:1000 /rw/d && chmod 700 /rw/d && echo x > /rw/f && chown 1001:1002 /rw/f && chmod 640 /rw/f && stat -c "%u:%g %a" /rw/f /rw/d'], { timeoutMs: 60_000 });
    assert.equal(root.status, 0, root.stderr);
    assert.equal(root.stdout, '1001:1002 640\n1000:1000 700\n', 'the container does not see the owners and modes it set');
    const user = await sb.rt(['exec', '--user', '1000:1000', id, 'sh', '-c', 'echo mine > /rw/d/mine && stat -c "%u:%g" /rw/d/mine; cat /rw/f 2>/dev/null || echo f-refused'], { timeoutMs: 60_000 });
    assert.equal(user.status, 0, user.stderr);
    assert.equal(user.stdout, '1000:1000\nf-refused\n');
    const host = (p: string): string => {
      const st = statSync(join(dir, p));
      return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;
    };
    assert.deepEqual([host('f'), host('d'), host('d/mine')], ['1001:1002 640', '1000:1000 700', '1000:1000 644'], 'the host files do not have the owners and modes the container set');
  } finally {
    await sb.rt(['delete', '--force', id], { timeoutMs: 60_000 });
  }
}
