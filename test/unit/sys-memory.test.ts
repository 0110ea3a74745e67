/**
 * process_vm_readv/writev as src/sys/kernel.ts makes them (through a staging area in native
 * memory for transfers up to 16 KiB, through koffi structs above): on this process's own native
 * memory, whose address koffi gives, with short reads at an unmapped page and errors as -errno.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { E, processVmRead, processVmWrite, putI64 } from '../../src/sys/kernel.js';

const require = createRequire(import.meta.url);
// koffi's own surface, only the calls used here
const koffi = require('koffi') as {
  alloc(type: string, n: number): unknown;
  address(p: unknown): bigint;
  view(p: unknown, n: number): ArrayBuffer;
  free(p: unknown): void;
};

describe('process memory access (process_vm_readv/writev)', () => {
  for (const size of [1, 255, 4096, 16384, 16385, 40000]) {
    it(`reads and writes ${size} bytes of a process's memory`, () => {
      const mem = koffi.alloc('uint8_t', size);
      try {
        const addr = Number(koffi.address(mem));
        const view = Buffer.from(koffi.view(mem, size));
        const data = Buffer.alloc(size, 0);
        for (let i = 0; i < size; i++) data[i] = (i * 7 + size) & 0xff;
        assert.equal(processVmWrite(process.pid, data, addr), size);
        assert.deepEqual(view, data);
        view.fill(0x5a);
        const back = Buffer.alloc(size);
        assert.equal(processVmRead(process.pid, back, addr), size);
        assert.deepEqual(back, Buffer.alloc(size, 0x5a));
      } finally {
        koffi.free(mem);
      }
    });
  }

  it('answers -EFAULT for an unmapped address and -ESRCH for a process that does not exist', () => {
    const buf = Buffer.alloc(64, 1);
    assert.equal(processVmRead(process.pid, buf, 4096), -E.EFAULT);
    assert.equal(processVmWrite(process.pid, buf, 4096), -E.EFAULT);
    assert.deepEqual(buf, Buffer.alloc(64, 1), 'a failed read leaves the buffer alone');
    assert.equal(processVmRead(0x3fffffff, buf, 4096), -E.ESRCH);
  });

  it('putI64 writes a safe integer as writeBigInt64LE does', () => {
    for (const v of [0, 1, -1, 255, 2 ** 31, -(2 ** 31) - 1, 2 ** 32, -(2 ** 32) - 5, 2 ** 47 + 12345, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
      const a = Buffer.alloc(8);
      const b = Buffer.alloc(8);
      putI64(a, 0, v);
      b.writeBigInt64LE(BigInt(v));
      assert.deepEqual(a, b, `value ${v}`);
    }
  });
});
