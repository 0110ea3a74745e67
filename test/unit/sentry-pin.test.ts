/**
 * The sentry's fd hand-over pinning (pin.ts) on real processes: during the hand-over the caller
 * may run only on the answering thread's CPU, which is real-time, afterwards it has every CPU
 * (and the answering thread its policy) again; if the answering thread was moved meanwhile, the
 * caller's group and children get their CPUs back too; a caller whose
 * affinity was narrowed is left alone; once stopped, nothing is pinned; the CPU list parser.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';

import { cpuListMask, HandoverPinning } from '../../src/backends/sentry/pin.js';
import { schedGetaffinity, schedGetcpu, schedSetaffinity } from '../../src/sys/kernel.js';

/** The CPUs set in an affinity mask. */
function cpusOf(mask: Buffer): number[] {
  const out: number[] = [];
  for (let c = 0; c < mask.length * 8; c++) if (mask[c >> 3]! & (1 << (c & 7))) out.push(c);
  return out;
}

/** The scheduling policy of the calling thread (field 41 of /proc/thread-self/stat: 0 normal, 1 FIFO). */
function policy(): number {
  const stat = readFileSync('/proc/thread-self/stat', 'latin1');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
}

/** The CPUs thread `tid` may run on now. */
function affinity(tid: number): number[] {
  const mask = Buffer.alloc(128);
  assert.equal(schedGetaffinity(tid, mask), 0, `sched_getaffinity(${tid})`);
  return cpusOf(mask);
}

const online = cpusOf(cpuListMask(readFileSync('/sys/devices/system/cpu/online', 'latin1'))!);
const oneCpu = online.length < 2 ? `only ${online.length} CPU online: a pinned mask would equal the full one` : undefined;
if (oneCpu) console.log(`# skipping the pinning assertions: ${oneCpu}`);

describe('sentry hand-over pinning', () => {
  const children: ChildProcess[] = [];
  after(() => children.forEach((c) => c.kill('SIGKILL')));
  /** A sleeping child process, optionally started under `taskset -c CPUS`. */
  const sleeper = (cpus?: string): number => {
    const c = cpus === undefined ? spawn('sleep', ['60']) : spawn('taskset', ['-c', cpus, 'sleep', '60']);
    children.push(c);
    assert.ok(c.pid);
    return c.pid;
  };
  /** Waits until `pid` runs `sleep` (taskset execs it after setting the mask). */
  const settled = async (pid: number): Promise<void> => {
    for (let i = 0; i < 200 && readFileSync(`/proc/${pid}/comm`, 'latin1').trim() !== 'sleep'; i++) await new Promise((r) => setTimeout(r, 10));
  };

  it('parses kernel CPU lists and refuses malformed ones', () => {
    assert.deepEqual(cpusOf(cpuListMask('0-3,8,10-11\n')!), [0, 1, 2, 3, 8, 10, 11]);
    assert.deepEqual(cpusOf(cpuListMask('5')!), [5]);
    for (const bad of ['', '3-1', 'a', '0,,1', '0-1024']) assert.equal(cpuListMask(bad), undefined, JSON.stringify(bad));
  });

  it('allows the caller only this thread\'s CPU during the hand-over, then every CPU again', { skip: oneCpu }, async () => {
    const pid = sleeper();
    await settled(pid);
    assert.deepEqual(affinity(pid), online);
    const mine = affinity(0);
    const p = HandoverPinning.create();
    let during: number[] = [];
    let self: number[] = [];
    let cpu = -1;
    let rt = -1;
    const rc = p.around(pid, () => {
      during = affinity(pid);
      self = affinity(0);
      cpu = schedGetcpu();
      rt = policy();
      return 7;
    });
    assert.equal(rc, 7, 'the hand-over\'s result comes back');
    assert.deepEqual(during, [cpu], 'the caller may run only on the answering CPU');
    assert.deepEqual(self, mine, 'the answering thread keeps its own mask');
    assert.equal(rt, 1, 'the answering thread is SCHED_FIFO during the hand-over');
    assert.equal(policy(), 0, 'and SCHED_OTHER after it');
    assert.deepEqual(affinity(pid), online, 'the caller has every CPU again');
    assert.deepEqual(affinity(0), mine, 'the answering thread has its CPUs again');
  });

  it('gives the narrowed tasks of the caller\'s group and children their CPUs back if the answering thread was moved', { skip: oneCpu }, async () => {
    const parent = spawn('sh', ['-c', 'sleep 60 & wait']);
    children.push(parent);
    assert.ok(parent.pid);
    let child = 0;
    for (let i = 0; i < 200 && child === 0; i++) {
      const list = readFileSync(`/proc/${parent.pid}/task/${parent.pid}/children`, 'latin1').trim();
      if (list !== '') child = Number(list.split(' ')[0]);
      else await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(child > 0, 'the child sleep started');
    const logged: string[] = [];
    const mine = affinity(0);
    try {
      HandoverPinning.create((m) => logged.push(m)).around(parent.pid, () => {
        const cpu = schedGetcpu();
        // as if the caller had forked while pinned, and this thread was pushed elsewhere
        const one = Buffer.alloc(128);
        one[cpu >> 3] = 1 << (cpu & 7);
        assert.equal(schedSetaffinity(child, one), 0);
        const other = online.find((c) => c !== cpu)!;
        const there = Buffer.alloc(128);
        there[other >> 3] = 1 << (other & 7);
        assert.equal(schedSetaffinity(0, there), 0);
        return 0;
      });
    } finally {
      const back = Buffer.alloc(128);
      for (const c of mine) back[c >> 3]! |= 1 << (c & 7);
      schedSetaffinity(0, back);
    }
    assert.deepEqual(affinity(child), online, 'the child has every CPU again');
    assert.deepEqual(affinity(parent.pid), online, 'the caller has every CPU again');
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /1 task\(s\) given them back/);
  });

  it('leaves a caller whose affinity was narrowed alone', { skip: oneCpu }, async () => {
    const pid = sleeper(String(online[online.length - 1]));
    await settled(pid);
    assert.deepEqual(affinity(pid), [online[online.length - 1]]);
    let during: number[] = [];
    HandoverPinning.create().around(pid, () => {
      during = affinity(pid);
      return 0;
    });
    assert.deepEqual(during, [online[online.length - 1]]);
    assert.deepEqual(affinity(pid), [online[online.length - 1]], 'its own mask, not every CPU');
  });

  it('leaves a real-time caller alone (it could run on before getting its CPUs back)', { skip: oneCpu }, async () => {
    const c = spawn('chrt', ['-f', '1', 'sleep', '60']);
    children.push(c);
    assert.ok(c.pid);
    await settled(c.pid);
    let during: number[] = [];
    HandoverPinning.create().around(c.pid, () => {
      during = affinity(c.pid!);
      return 0;
    });
    assert.deepEqual(during, online);
  });

  // a caller found fit is not looked at again for every hand-over: a sched_setattr in the sandbox
  // (policyChanged, from the served call, in any thread's view) makes every one be looked at again
  it('looks at a caller again once a thread of the sandbox may have changed its class', { skip: oneCpu }, async () => {
    const pid = sleeper();
    await settled(pid);
    const p = HandoverPinning.create();
    const during = (view: HandoverPinning): number[] => {
      let seen: number[] = [];
      view.around(pid, () => {
        seen = affinity(pid);
        return 0;
      });
      return seen;
    };
    assert.equal(during(p).length, 1, 'fit: pinned to one CPU');
    execFileSync('chrt', ['-f', '-p', '1', String(pid)]);
    assert.equal(during(p).length, 1, 'remembered as fit (the sandbox said nothing)');
    new HandoverPinning(p.state).policyChanged();
    assert.deepEqual(during(p), online, 'real-time now: left alone');
    assert.deepEqual(affinity(pid), online);
  });

  it('pins nothing once stopped, in any thread\'s view of the same sandbox', { skip: oneCpu }, async () => {
    const pid = sleeper();
    await settled(pid);
    const p = HandoverPinning.create();
    const other = new HandoverPinning(p.state); // a worker's view of the same shared state
    p.stop();
    assert.ok(other.stopped);
    let during: number[] = [];
    other.around(pid, () => {
      during = affinity(pid);
      return 0;
    });
    assert.deepEqual(during, online);
  });

  it('stops without waiting for ever on a hand-over that does not end (a stopped caller)', () => {
    const logged: string[] = [];
    const p = HandoverPinning.create((m) => logged.push(m));
    Atomics.store(p.state, 0, 1); // one pinned hand-over, never ending
    p.stop();
    assert.ok(p.stopped);
    assert.equal(logged.length, 1);
    assert.match(logged[0]!, /still pinned/);
  });

  it('hands over unpinned when the caller is gone', () => {
    const p = HandoverPinning.create();
    assert.equal(p.around(0x3fffffff, () => -3), -3);
    assert.equal(Atomics.load(p.state, 0), 0, 'no hand-over left counted in');
  });
});
