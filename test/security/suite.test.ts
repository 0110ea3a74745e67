/**
 * The breakout suite in CI: every attempt of test/security/attempts/ under each Moat backend and,
 * for comparison, runc and runsc. Fails if anything escapes under `moat-sentry` or
 * `moat-microvm`, if something escapes under `moat-container` that does not also escape under
 * runc (or is not listed as a known limit in docs/security.md), or if a trial does not run as
 * meant under Moat or runc (a broken attempt proves nothing).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ATTEMPTS } from './attempts/index.js';
import { RUNTIMES } from './framework.js';
import type { RuntimeName } from './framework.js';
import { availableRuntimes, markdownTable, runSuite } from './runner.js';
import type { Table } from './runner.js';
import { REPO, RUNTIME, skipReason } from '../helpers/runtime.js';

const skip = RUNTIME !== 'moat' ? 'the suite compares runtimes itself (it runs once, in the Moat pass)' : skipReason();
if (skip) console.log(`# skipping the breakout suite: ${skip}`);

describe('breakout suite', { skip, timeout: 40 * 60_000 }, () => {
  const { run, missing } = availableRuntimes(RUNTIMES);
  let table: Table = new Map();

  before(async () => {
    for (const [rt, why] of missing) console.log(`# breakout suite: ${rt} not run: ${why}`);
    table = await runSuite(ATTEMPTS, run);
    console.log(markdownTable(table, run, ATTEMPTS).replace(/^/gm, '# '));
  });

  it('has at least 40 attempts with unique ids, each saying what it tries and what a block shows', () => {
    assert.ok(ATTEMPTS.length >= 40, `${ATTEMPTS.length} attempts`);
    assert.equal(new Set(ATTEMPTS.map((a) => a.id)).size, ATTEMPTS.length, 'duplicate attempt ids');
    for (const a of ATTEMPTS) {
      assert.ok(a.title.length > 10 && a.shows.length > 5, `${a.id}: title/shows missing`);
      assert.ok(a.sh !== undefined || a.c !== undefined, `${a.id}: no workload`);
    }
  });

  it('every trial ran as meant under Moat and runc (no errors)', () => {
    const errors: string[] = [];
    for (const [id, row] of table) {
      for (const [rt, r] of row) if (r.outcome === 'error' && rt !== 'runsc') errors.push(`${id} / ${rt}: ${r.detail}`);
    }
    assert.deepEqual(errors, []);
  });

  for (const rt of ['moat-sentry', 'moat-microvm'] as RuntimeName[]) {
    it(`nothing escapes under ${rt}`, { skip: missing.get(rt) }, () => {
      const escapes = [...table].filter(([, row]) => row.get(rt)?.outcome === 'escaped').map(([id, row]) => `${id}: ${row.get(rt)?.detail}`);
      assert.deepEqual(escapes, []);
    });
  }

  it('whatever escapes under moat-container also escapes under runc, and docs/security.md names it', () => {
    const doc = readFileSync(join(REPO, 'docs', 'security.md'), 'utf8');
    const problems: string[] = [];
    for (const [id, row] of table) {
      if (row.get('moat-container')?.outcome !== 'escaped') continue;
      if (!missing.has('runc') && row.get('runc')?.outcome !== 'escaped') problems.push(`${id}: escapes under Moat's container backend only`);
      if (!doc.includes(`\`${id}\` under moat-container`)) problems.push(`${id}: not documented as a known limit in docs/security.md`);
    }
    assert.deepEqual(problems, []);
  });

  it('docs/security.md describes every attempt', () => {
    const doc = readFileSync(join(REPO, 'docs', 'security.md'), 'utf8');
    const undocumented = ATTEMPTS.filter((a) => !doc.includes(`- \`${a.id}\`: `)).map((a) => a.id);
    assert.deepEqual(undocumented, [], 'run: sudo node build/test/security/runner.js --write-docs');
  });
});
