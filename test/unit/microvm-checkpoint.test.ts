/**
 * The microvm restore's reading of a checkpoint's manifest (src/backends/microvm/checkpoint.ts,
 * openVmImage) with hostile manifests: every malformed shape is a MoatError naming the problem,
 * never a TypeError, and a well-formed one is accepted. No VM runs.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openVmImage } from '../../src/backends/microvm/checkpoint.js';
import { IMAGE_FILE, ImageWriter, SECTION } from '../../src/checkpoint/image.js';
import { MoatError } from '../../src/errors.js';

const work = mkdtempSync(join(tmpdir(), 'moat-vm-manifest-'));
after(() => rmSync(work, { recursive: true, force: true }));
const base = join(work, 'base.ext4');
writeFileSync(base, 'not really ext4');

const good = {
  kind: 'moat-checkpoint',
  version: 1,
  backend: 'microvm',
  id: 'c1',
  created: '2026-11-29T00:00:00Z',
  host: { kernel: '6.18', cpu: 'AMD EPYC' },
  vm: { driver: 'qemu', accel: 'tcg', memoryMiB: 256, vcpus: 1, cmdline: 'moat.root=vda', guestRelease: '6.1.0', baseImage: base },
  monitor: { pid: 84, pending: '', nextStream: 1 },
  spec: {},
};

let n = 0;
/** An image with `manifest` (JSON of any value, or raw text) and empty VM sections. */
async function image(manifest: unknown, raw = false): Promise<string> {
  const dir = join(work, `img-${++n}`);
  mkdirSync(dir);
  const w = await ImageWriter.create(join(dir, IMAGE_FILE));
  await w.addSection(SECTION.MANIFEST, Buffer.from(raw ? String(manifest) : JSON.stringify(manifest)));
  await w.addSection(SECTION.VM_MIGRATION, Buffer.from('QEVM'));
  await w.addSection(SECTION.VM_DISK, Buffer.alloc(0));
  await w.finish();
  return dir;
}

describe('microvm restore: the manifest', () => {
  it('accepts a well-formed manifest', async () => {
    const { reader, manifest } = await openVmImage('r1', await image(good), async () => 'tcg');
    assert.equal(manifest.vm.memoryMiB, 256);
    await reader.close();
  });

  it('refuses hostile shapes with a MoatError, never a TypeError', async () => {
    const cases: [string, unknown, boolean?][] = [
      ['not JSON', '{"kind":', true],
      ['null', null],
      ['an array', [1, 2]],
      ['no host', { ...good, host: undefined }],
      ['host not an object', { ...good, host: 'x' }],
      ['cpu not a string', { ...good, host: { cpu: 7 } }],
      ['vm null', { ...good, vm: null }],
      ['monitor an array', { ...good, monitor: [] }],
      ['another backend', { ...good, backend: 'sentry' }],
      ['version 2', { ...good, version: 2 }],
      ['huge memory', { ...good, vm: { ...good.vm, memoryMiB: 1 << 20 } }],
      ['fractional vcpus', { ...good, vm: { ...good.vm, vcpus: 1.5 } }],
      ['accel other', { ...good, vm: { ...good.vm, accel: 'hvf' } }],
      ['cmdline not a string', { ...good, vm: { ...good.vm, cmdline: ['a'] } }],
      ['stream 0', { ...good, monitor: { ...good.monitor, nextStream: 0 } }],
      ['negative pid', { ...good, monitor: { ...good.monitor, pid: -1 } }],
      ['missing base image', { ...good, vm: { ...good.vm, baseImage: join(work, 'nope.ext4') } }],
      ['egress not an array', { ...good, vm: { ...good.vm, egress: '1.2.3.4' } }],
      ['egress rule not a string', { ...good, vm: { ...good.vm, egress: [7] } }],
      ['egress rule with a comma', { ...good, vm: { ...good.vm, egress: ['1.2.3.4,5.6.7.8'] } }],
      ['egress rule that is no rule', { ...good, vm: { ...good.vm, egress: ['not-an-address'] } }],
    ];
    for (const [what, m, raw] of cases) {
      await assert.rejects(openVmImage('r2', await image(m, raw), async () => 'tcg'), (e: unknown) => e instanceof MoatError, what);
    }
  });

  it('takes the egress rules of a VM that had them', async () => {
    const { reader, manifest } = await openVmImage('r4', await image({ ...good, vm: { ...good.vm, egress: ['127.0.0.1:8080', '10.0.0.0/8'] } }), async () => 'tcg');
    assert.deepEqual(manifest.vm.egress, ['127.0.0.1:8080', '10.0.0.0/8']);
    await reader.close();
  });

  it('refuses another accelerator than this host uses', async () => {
    await assert.rejects(openVmImage('r3', await image(good), async () => 'kvm'), /ran under tcg/);
  });
});
