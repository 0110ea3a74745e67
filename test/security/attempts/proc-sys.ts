/**
 * /proc and /sys abuse: the kernel's global knobs and views that a container must not reach
 * (sysrq, core_pattern, sysctls, kcore, uevent_helper, cgroup release_agent, host processes).
 * Where a write could change the host, the judge reads the host's value before and after (and
 * puts it back if it changed); a write that only reaches a microVM's own guest kernel shows as
 * a different boot id and is no escape.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { blocked, escaped, excerpt, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial } from '../framework.js';

/** Reads a host file, or undefined when it does not exist here. */
function hostRead(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** A judge for "a write to a global kernel file": escaped only if it succeeded on the host's kernel. */
function judgeGlobalWrite(what: string) {
  return (t: Trial, out: RunOutput) => {
    const r = report(out);
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    if (r.get('WROTE') === '1' && r.get('BOOT') === t.hostBootId) return escaped(`wrote ${what} of the host kernel`);
    if (r.get('WROTE') === '1') return blocked(`the write reached only the guest's own kernel (boot id ${r.get('BOOT')})`);
    return blocked(`the write failed: ${r.get('ERR') ?? 'refused'}`);
  };
}

const BOOT = 'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)';

/** Host values that attempts may change, restored after each trial. */
const saved = new Map<string, string>();
function save(path: string): void {
  const v = hostRead(path);
  if (v !== undefined) saved.set(path, v);
}
/** Compares with the saved value; restores it if it changed and says so. */
function changedAndRestored(path: string): boolean {
  const before = saved.get(path);
  saved.delete(path);
  const now = hostRead(path);
  if (before === undefined || now === undefined || now === before) return false;
  try {
    writeFileSync(path, before);
  } catch {
    // nothing more to do: the escape is reported
  }
  return true;
}

let sleeper: ChildProcess | undefined;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'proc-sysrq-trigger',
    category: 'proc-sys',
    title: 'writes "h" (help) to /proc/sysrq-trigger, the kernel\'s magic SysRq switch',
    shows: '/proc/sysrq-trigger is read-only (or served by the sentry, or the guest\'s own)',
    sh: `${BOOT}; if echo h 2>/dev/shm/e > /proc/sysrq-trigger; then echo WROTE=1; else echo WROTE=0; echo ERR=$(cat /dev/shm/e); fi; echo DONE=1`,
    judge: judgeGlobalWrite('/proc/sysrq-trigger'),
  },
  {
    id: 'proc-core-pattern',
    category: 'proc-sys',
    title: 'rewrites /proc/sys/kernel/core_pattern (a pipe there runs as root on the host at the next crash)',
    shows: 'the host\'s core_pattern is unchanged after the run',
    sh: `${BOOT}; if echo 'core.moat-breakout' 2>/dev/shm/e > /proc/sys/kernel/core_pattern; then echo WROTE=1; else echo WROTE=0; echo ERR=$(cat /dev/shm/e); fi; echo DONE=1`,
    setup: () => save('/proc/sys/kernel/core_pattern'),
    judge: (t, out) => {
      if (changedAndRestored('/proc/sys/kernel/core_pattern')) return escaped('the host\'s core_pattern changed (restored)');
      return judgeGlobalWrite('core_pattern')(t, out);
    },
  },
  {
    id: 'proc-sys-vm',
    category: 'proc-sys',
    title: 'writes a global sysctl (/proc/sys/vm/overcommit_ratio, its own value back)',
    shows: '/proc/sys is read-only in the container',
    sh: `${BOOT}; v=$(cat /proc/sys/vm/overcommit_ratio); if echo "$v" 2>/dev/shm/e > /proc/sys/vm/overcommit_ratio; then echo WROTE=1; else echo WROTE=0; echo ERR=$(cat /dev/shm/e); fi; echo DONE=1`,
    judge: judgeGlobalWrite('/proc/sys/vm/overcommit_ratio'),
  },
  {
    id: 'proc-kcore',
    category: 'proc-sys',
    title: 'reads /proc/kcore (the host kernel\'s memory as an ELF core)',
    shows: '/proc/kcore is masked (reads nothing) or not the host kernel\'s',
    sh: `${BOOT}; n=$(head -c 4096 /proc/kcore 2>/dev/null | wc -c); echo BYTES=$n; echo DONE=1`,
    judge: (t, out) => {
      const r = report(out);
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const n = Number(r.get('BYTES') ?? '0');
      if (n > 0 && r.get('BOOT') === t.hostBootId) return escaped(`read ${n} bytes of the host's /proc/kcore`);
      return blocked(n > 0 ? 'read the guest kernel\'s own kcore' : 'nothing to read');
    },
  },
  {
    id: 'sys-uevent-helper',
    category: 'proc-sys',
    title: 'sets /sys/kernel/uevent_helper (the kernel runs it as root on the host at the next uevent)',
    shows: 'sysfs is read-only; the host\'s uevent_helper is unchanged',
    sh: `${BOOT}; if echo /tmp/evil-helper 2>/dev/shm/e > /sys/kernel/uevent_helper; then echo WROTE=1; else echo WROTE=0; echo ERR=$(cat /dev/shm/e); fi; echo DONE=1`,
    setup: () => save('/sys/kernel/uevent_helper'),
    judge: (t, out) => {
      if (changedAndRestored('/sys/kernel/uevent_helper')) return escaped('the host\'s uevent_helper changed (restored)');
      return judgeGlobalWrite('/sys/kernel/uevent_helper')(t, out);
    },
  },
  {
    id: 'cgroup-release-agent',
    category: 'proc-sys',
    title: 'mounts a cgroup v1 hierarchy and sets its release_agent (CVE-2022-0492)',
    shows: 'cgroupfs cannot be mounted writable; the host\'s release_agent is unchanged',
    sh: `${BOOT}; mkdir -p /dev/shm/cg; if mount -t cgroup -o rdma cgroup /dev/shm/cg 2>/dev/shm/e || mount -t cgroup -o memory cgroup /dev/shm/cg 2>>/dev/shm/e; then echo MOUNTED=1; ` +
      `if echo /tmp/evil-agent 2>/dev/shm/e > /dev/shm/cg/release_agent; then echo WROTE=1; else echo WROTE=0; echo ERR=$(cat /dev/shm/e); fi; else echo MOUNTED=0; echo WROTE=0; echo ERR=$(cat /dev/shm/e | tr '\\n' ' '); fi; echo DONE=1`,
    setup: () => {
      save('/sys/fs/cgroup/rdma/release_agent');
      save('/sys/fs/cgroup/memory/release_agent');
    },
    judge: (t, out) => {
      const a = changedAndRestored('/sys/fs/cgroup/rdma/release_agent');
      const b = changedAndRestored('/sys/fs/cgroup/memory/release_agent');
      if (a || b) return escaped('a host cgroup release_agent changed (restored)');
      return judgeGlobalWrite('a cgroup release_agent')(t, out);
    },
  },
  {
    id: 'proc-host-processes',
    category: 'proc-sys',
    title: 'looks through /proc for a host process (one whose command line holds a host secret)',
    shows: 'the container\'s /proc lists only its own pid namespace',
    sh: 'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < $f 2>/dev/null; echo; done; echo DONE=1',
    setup: (t) => {
      sleeper = spawn('sh', ['-c', 'sleep 120', t.secret], { stdio: 'ignore' });
    },
    judge: (t, out) => {
      sleeper?.kill('SIGKILL');
      sleeper = undefined;
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      if (out.stdout.includes(t.secret)) return escaped('a host process\'s command line showed in the container\'s /proc');
      return blocked('no host process visible');
    },
  },
];
