/**
 * Hides most of the kernel's wait before a cgroup migration behind a create's own set-up work.
 *
 * Moving a process into a cgroup (a write to cgroup.procs) takes the kernel's
 * cgroup_threadgroup_rwsem for writing. That per-CPU rwsem favours its readers (every fork and
 * exit): a writer first waits for an RCU grace period, 5-30 ms on a small VM — most of the time
 * between the container init's pid and its READY, for runc as for Moat. The rwsem stays in its
 * writer mode for about one more grace period after a writer leaves, so a second migration soon
 * after the first costs microseconds. primeMigration starts a migration that changes nothing
 * (this process into the cgroup it is already in, in one hierarchy) on libuv's thread pool as
 * soon as a create knows it will place a process; the create's real migration, ~10-20 ms of
 * work later, then finds the rwsem in writer mode or waits only for the rest of the same grace
 * period. Kernels mounted with favordynmods (cgroup v2, Linux 6.1+) never wait: the write is
 * then just cheap. A failed write (a cgroup this user cannot write) changes nothing either.
 */
import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { readCgroupMounts, readOwnCgroups, UNIFIED } from './paths.js';

let primed = false;

/**
 * The cgroup.procs file of this process's own cgroup in one mounted hierarchy (the unified one
 * if mounted, else pids, else any), or undefined when none shows this process's cgroup.
 */
export function ownProcsFile(): string | undefined {
  const mounts = readCgroupMounts();
  const own = readOwnCgroups();
  const under = (root: string, p: string | undefined): string | undefined => {
    if (p === undefined) return undefined;
    const rel = posix.relative(root, p);
    return rel.startsWith('..') ? undefined : rel;
  };
  const order: [string, string | undefined][] = [];
  if (mounts.v2) order.push([mounts.v2.mountpoint, under(mounts.v2.root, own.get(UNIFIED))]);
  const pids = mounts.v1.get('pids');
  if (pids) order.push([pids.mountpoint, under(pids.root, own.get('pids'))]);
  for (const [controller, m] of mounts.v1) order.push([m.mountpoint, under(m.root, own.get(controller))]);
  for (const [mountpoint, rel] of order) if (rel !== undefined) return posix.join(mountpoint, rel, 'cgroup.procs');
  return undefined;
}

/**
 * Starts, once per process and in the background, a migration of this process into its own
 * cgroup (see above). Never throws; the returned promise settles when the write is done or
 * failed (for tests; creates do not wait for it).
 */
export function primeMigration(): Promise<void> {
  if (primed) return Promise.resolve();
  primed = true;
  let file: string | undefined;
  try {
    file = ownProcsFile();
  } catch {
    return Promise.resolve(); // no cgroup filesystem to read: nothing to prime
  }
  if (file === undefined) return Promise.resolve();
  const path = file;
  return (async () => {
    const fh = await open(path, 'r+');
    try {
      await fh.write(String(process.pid));
    } finally {
      await fh.close();
    }
  })().catch(() => {});
}
