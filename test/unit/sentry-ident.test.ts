/**
 * The identities the sentry acts with, parsed from /proc status text (ident.ts): the caller's
 * file-system identity, and the one access(2) checks with (real ids; no capabilities unless the
 * real uid is 0, then the permitted ones).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { identOf } from '../../src/backends/sentry/ident.js';

/** A /proc/TID/status excerpt with the fields identOf reads. */
function status(uid: number[], gid: number[], prm: string, eff: string): string {
  return [
    'Name:\tprobe', 'Tgid:\t42', 'Pid:\t43',
    `Uid:\t${uid.join('\t')}`, `Gid:\t${gid.join('\t')}`, 'Groups:\t20 30 ',
    'CapInh:\t0000000000000000', `CapPrm:\t${prm}`, `CapEff:\t${eff}`, '',
  ].join('\n');
}

describe('sentry identities from /proc status', () => {
  it('takes the effective and file-system ids, groups and effective capabilities', () => {
    const p = identOf(status([1000, 1001, 1002, 1003], [2000, 2001, 2002, 2003], '00000000000000c0', '0000000000000040'));
    assert.ok(p);
    assert.equal(p.tgid, 42);
    assert.deepEqual(p.id, { euid: 1001, egid: 2001, fsuid: 1003, fsgid: 2003, groups: [20, 30], caps: [0x40, 0] });
  });

  it('checks access(2) with the real ids and no capabilities for a non-root real uid', () => {
    // a set-uid root program run by uid 1000: effective 0, real 1000
    const p = identOf(status([1000, 0, 0, 0], [1000, 0, 0, 0], '000001ffffffffff', '000001ffffffffff'));
    assert.ok(p);
    assert.deepEqual(p.access, { euid: 0, egid: 0, fsuid: 1000, fsgid: 1000, groups: [20, 30], caps: [0, 0] });
  });

  it('checks access(2) with the permitted capabilities for real uid 0', () => {
    // root that dropped its effective capabilities keeps the permitted ones for access(2)
    const p = identOf(status([0, 1000, 1000, 1000], [0, 0, 0, 0], '0000000000000002', '0000000000000000'));
    assert.ok(p);
    assert.deepEqual(p.access, { euid: 1000, egid: 0, fsuid: 0, fsgid: 0, groups: [20, 30], caps: [2, 0] });
  });

  it('refuses status text without full id lines', () => {
    assert.equal(identOf('Name:\tx\nUid:\t0\t0\nGid:\t0\t0\t0\t0\n'), null);
  });
});
