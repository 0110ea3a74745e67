/**
 * Snapshot naming and the forensic reading of a QEMU migration stream's RAM blocks
 * (src/checkpoint/snapshots.ts): names are one path component of a fixed alphabet; the parser of
 * untrusted stream bytes returns what it can and never throws.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { qemuRamBlocks, snapshotDir } from '../../src/checkpoint/snapshots.js';
import { UsageError } from '../../src/errors.js';

/** The start of a migration stream as QEMU 7.2 writes it: magic, version, a configuration section, then the "ram" section's setup. */
function stream(blocks: [string, bigint][], total?: bigint): Buffer {
  const be32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  const be64 = (n: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(n);
    return b;
  };
  const sum = total ?? blocks.reduce((a, [, n]) => a + n, 0n);
  return Buffer.concat([
    be32(0x5145564d), be32(3), Buffer.from([7]), be32(7), Buffer.from('microvm'),
    Buffer.from([1]), be32(2), Buffer.from([3]), Buffer.from('ram'), be32(0), be32(4), be64(sum | 4n),
    ...blocks.flatMap(([name, n]) => [Buffer.from([name.length]), Buffer.from(name), be64(n)]),
    Buffer.from([0x10, 0, 0]),
  ]);
}

describe('snapshots', () => {
  it('names are one path component of [A-Za-z0-9_.-], starting with a letter or digit', () => {
    assert.equal(snapshotDir('/run/moat', 'warm-1.py_3'), '/run/moat/snapshots/warm-1.py_3');
    for (const bad of ['', '..', '.hidden', 'a/b', '../x', 'a b', 'x'.repeat(65), '-flag']) {
      assert.throws(() => snapshotDir('/run/moat', bad), UsageError, bad);
    }
  });

  it('reads the RAM blocks a migration stream declares', () => {
    const mib = 1024n * 1024n;
    assert.deepEqual(qemuRamBlocks(stream([['microvm.ram', 256n * mib], ['pc.bios', 128n * 1024n]])), [
      { name: 'microvm.ram', bytes: 256 * 1024 * 1024 },
      { name: 'pc.bios', bytes: 128 * 1024 },
    ]);
  });

  it('returns what it can from a damaged or foreign stream and never throws', () => {
    const good = stream([['microvm.ram', 1n << 28n], ['pc.bios', 1n << 17n]]);
    assert.deepEqual(qemuRamBlocks(Buffer.from('not a stream at all')), []);
    assert.ok(qemuRamBlocks(good.subarray(0, good.length - 12)).length <= 2);
    // a block larger than the declared total stops the list
    assert.deepEqual(qemuRamBlocks(stream([['huge', 1n << 40n]], 1n << 20n)), []);
    let s = 0x2545f491;
    const rnd = (): number => {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return s >>> 0;
    };
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(good);
      for (let k = 0; k < 1 + (rnd() % 4); k++) b[rnd() % b.length] = rnd() & 0xff;
      const cut = b.subarray(0, rnd() % (b.length + 1));
      const blocks = qemuRamBlocks(cut);
      assert.ok(Array.isArray(blocks) && blocks.length <= 64);
    }
  });
});
