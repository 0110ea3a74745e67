/**
 * Device nodes: reaching host hardware or host kernel interfaces through a device file the
 * container makes for itself (mknod) or finds. The host cannot always read its own root disk
 * (a sandbox may refuse it), so the "host disk" an attempt goes for is a loop device the host
 * attaches in setup over an image holding the host secret: reading the secret in the container
 * proves the host's block layer was reached. Kernel log, memory, I/O ports and KVM are judged
 * by a planted marker or by whether the call succeeded on the host's own kernel (a microVM
 * answers from its guest kernel, which shows as a different boot id).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { blocked, escaped, excerpt, leaksSecret, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';

/** Splits a Linux dev_t (glibc encoding) into major and minor. */
function splitDev(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

/** The block device holding the host's root filesystem, or undefined when / is not on one (overlay, tmpfs). */
export function hostRootDevice(): { major: number; minor: number } | undefined {
  const d = splitDev(statSync('/', { bigint: true }).dev);
  return d.major === 0 ? undefined : d;
}

/** A loop device the host attached for one trial. */
export interface HostLoop {
  dev: string;
  major: number;
  minor: number;
  /** The filesystem label when the image holds a filesystem. */
  label?: string;
}

/**
 * Attaches (read-only) a loop device over a new image in the trial's host directory. `fs`: an
 * ext2 filesystem labelled `label` whose file `host-secret` holds the secret; otherwise the
 * raw image is the secret repeated (any read of it shows the secret).
 */
export function attachLoop(t: Trial, fs: boolean): HostLoop {
  const img = join(t.hostDir, 'host-disk.img');
  let label: string | undefined;
  if (fs) {
    const content = join(t.hostDir, 'host-disk-content');
    mkdirSync(content, { recursive: true });
    writeFileSync(join(content, 'host-secret'), `${t.secret}\n`, { mode: 0o600 });
    label = `moat${randomBytes(4).toString('hex')}`;
    execFileSync('mke2fs', ['-q', '-F', '-t', 'ext2', '-L', label, '-d', content, img, '2M'], { stdio: 'ignore' });
  } else {
    writeFileSync(img, Buffer.from(`${t.secret}\n`.repeat(Math.ceil(65536 / (t.secret.length + 1)))).subarray(0, 65536));
  }
  const dev = execFileSync('losetup', ['-f', '--show', '--read-only', img], { encoding: 'utf8' }).trim();
  const { major, minor } = splitDev(statSync(dev, { bigint: true }).rdev);
  return { dev, major, minor, ...(label ? { label } : {}) };
}

/** Detaches a loop device attached by {@link attachLoop} (the judge calls it; a failure is only logged). */
export function detachLoop(l: HostLoop | undefined): void {
  if (!l) return;
  try {
    execFileSync('losetup', ['-d', l.dev], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

/** Adds `NAME=value` to the workload's environment. */
export function setEnv(t: Trial, name: string, value: string | number): void {
  (t.spec['process'].env as string[]).push(`${name}=${value}`);
}

/**
 * Whether a call the workload reports as successful ran on the host's kernel: a boot id that
 * differs is a microVM's guest kernel; runsc answers every call in gVisor's own kernel; the
 * Moat sentry synthesizes /proc (no boot id) but runs the workload on the host kernel.
 */
export function onHostKernel(t: Trial, boot: string | undefined): boolean {
  if (t.runtime === 'runsc') return false;
  if (boot) return boot === t.hostBootId;
  return t.runtime !== 'moat-microvm';
}

/** Where the kernel that answered is, for a verdict's detail. */
export function whichKernel(t: Trial, boot: string | undefined): string {
  if (t.runtime === 'runsc') return "gVisor's own kernel";
  return boot ? `the guest's own kernel (boot id ${boot})` : 'a kernel without a boot id';
}

/**
 * The start of every C attempt of these categories: the headers, boot() (prints BOOT=, the
 * kernel's boot id), env() (a variable or ""), err(KEY) (prints KEY=errno text) and readLine().
 */
export const C_PRELUDE = `#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((unused)) static void boot(void) {
  char b[64] = {0};
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, b, sizeof b - 1);
    b[n > 0 ? n : 0] = 0;
    close(fd);
  }
  b[strcspn(b, "\\n")] = 0;
  printf("BOOT=%s\\n", b);
}
__attribute__((unused)) static const char *env(const char *k) {
  const char *v = getenv(k);
  return v ? v : "";
}
/* prints KEY=the errno's text */
__attribute__((unused)) static void err(const char *key) {
  printf("%s=%s\\n", key, strerror(errno));
}
/* prints a file's first line as KEY=..., 1 when it could be read */
__attribute__((unused)) static int readLine(const char *key, const char *path) {
  char b[256];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, b, sizeof b - 1);
  close(fd);
  if (n <= 0) return 0;
  b[n] = 0;
  b[strcspn(b, "\\n")] = 0;
  printf("%s=%s\\n", key, b);
  return 1;
}
`;

/** The workload's shell prelude: its boot id. */
const BOOT = 'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)';

/** A shell loop that mknods the host's loop device as /dev/hostblk (unless MKNOD_SKIP) and reads it. */
const READ_LOOP = `${BOOT}
if out=$(mknod /dev/hostblk b $LOOP_MAJ $LOOP_MIN 2>&1); then echo MKNOD=1; else echo MKNOD=0; echo "MKNOD_ERR=$out"; fi
for d in /dev/hostblk $(find /dev -type b 2>/dev/null); do
  [ -b "$d" ] || continue
  if data=$(dd if=$d bs=512 count=2 2>/dev/null | tr -d '\\0' | head -c 200) && [ -n "$data" ]; then echo "READ_FROM=$d"; echo "DATA=$data"; else e=$(dd if=$d bs=512 count=1 2>&1 >/dev/null | grep -v records | head -1); echo "READ_ERR=\${e:-nothing but zeros}"; fi
done
if [ -n "$ROOT_MAJ" ] && mknod /dev/hostroot b $ROOT_MAJ $ROOT_MIN 2>/dev/null; then
  echo ROOTDISK_BYTES=$(dd if=/dev/hostroot bs=512 count=8 2>/dev/null | wc -c)
fi
echo DONE=1`;

let loop: HostLoop | undefined;

/** Setup of the block-device attempts: a loop device holding the secret, its numbers in the environment. */
function setupLoop(t: Trial): void {
  loop = attachLoop(t, false);
  setEnv(t, 'LOOP_MAJ', loop.major);
  setEnv(t, 'LOOP_MIN', loop.minor);
  const root = hostRootDevice();
  if (root) {
    setEnv(t, 'ROOT_MAJ', root.major);
    setEnv(t, 'ROOT_MIN', root.minor);
  }
}

/** Judge of the block-device attempts: the secret read back, or the host's root disk read on its kernel. */
function judgeLoop(t: Trial, out: RunOutput): Verdict {
  detachLoop(loop);
  loop = undefined;
  const r = report(out);
  if (leaksSecret(t, out)) return escaped(`read the host's block device (${r.get('READ_FROM') ?? 'a device node'}): the host secret came out`);
  if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
  const rootBytes = Number(r.get('ROOTDISK_BYTES') ?? '0');
  if (rootBytes > 0 && onHostKernel(t, r.get('BOOT'))) return escaped(`read ${rootBytes} bytes of the host's root disk`);
  if (r.get('MKNOD') === '1') return blocked(`mknod worked but the device could not be read: ${r.get('READ_ERR') ?? 'no data'}`);
  return blocked(`mknod refused: ${r.get('MKNOD_ERR') ?? 'refused'}`);
}

/** A judge for "a privileged device call": escaped only if it succeeded on the host's kernel. */
function judgeOnHost(what: string, keys: string[], why: (r: Map<string, string>) => string) {
  return (t: Trial, out: RunOutput): Verdict => {
    const r = report(out);
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    const ok = keys.filter((k) => r.get(k) === '1');
    if (ok.length && onHostKernel(t, r.get('BOOT'))) return escaped(`${what} on the host kernel (${ok.join(', ')})`);
    if (ok.length) return blocked(`${what} only in ${whichKernel(t, r.get('BOOT'))}`);
    return blocked(why(r));
  };
}

let kmsgMarker: string | undefined;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'dev-mknod-disk',
    category: 'device',
    title: 'mknods a host block device (a loop device over an image holding the host secret) and reads it',
    shows: 'mknod of a block device is refused (no CAP_MKNOD): the host\'s disks stay out of reach',
    sh: READ_LOOP,
    setup: setupLoop,
    judge: judgeLoop,
  },
  {
    id: 'dev-cgroup-mknod',
    category: 'device',
    title: 'with CAP_MKNOD granted (as Docker does), mknods the host\'s loop device and reads it',
    shows: 'the device cgroup refuses to open a device that is not on the allow list, even when mknod works',
    sh: READ_LOOP,
    setup: (t) => {
      const caps = t.spec['process'].capabilities as Record<string, string[]>;
      for (const set of ['bounding', 'effective', 'permitted']) caps[set] = [...(caps[set] ?? []), 'CAP_MKNOD'];
      setupLoop(t);
    },
    judge: judgeLoop,
  },
  {
    id: 'dev-mem',
    category: 'device',
    title: 'mknods /dev/mem (1:1) and /dev/kmem (1:2) and reads physical memory (the BIOS area at 0xF0000)',
    shows: 'no memory device can be made or read',
    sh: `${BOOT}
for m in MEM:1 KMEM:2; do n=\${m%%:*}; if mknod /dev/x$n c 1 \${m#*:} 2>/dev/null; then echo MKNOD_$n=1; fi
  c=$(dd if=/dev/x$n bs=4096 skip=240 count=1 2>/dev/null | wc -c); echo BYTES_$n=$c; [ "$c" -gt 0 ] && echo READ_$n=1; done
c=$(busybox devmem 0xF0000 2>/dev/null) && echo DEVMEM=1 && echo DEVMEM_VALUE=$c
echo DONE=1`,
    judge: judgeOnHost('read physical or kernel memory', ['READ_MEM', 'READ_KMEM', 'DEVMEM'], (r) =>
      r.get('MKNOD_MEM') === '1' ? 'the memory device was made but could not be read' : 'mknod of 1:1 and 1:2 refused'),
  },
  {
    id: 'dev-port',
    category: 'device',
    title: 'asks for raw I/O port access: iopl(3), ioperm(0x80) and a read of /dev/port (1:4) made with mknod',
    shows: 'iopl, ioperm and /dev/port are all refused (no CAP_SYS_RAWIO)',
    c: `${C_PRELUDE}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  if (syscall(SYS_iopl, 3) == 0) { printf("IOPL=1\\n"); syscall(SYS_iopl, 0); } else err("IOPL_ERR");
  if (syscall(SYS_ioperm, 0x80, 1, 1) == 0) { printf("IOPERM=1\\n"); syscall(SYS_ioperm, 0x80, 1, 0); } else err("IOPERM_ERR");
  if (mknod("/dev/xport", S_IFCHR | 0600, makedev(1, 4)) == 0) printf("MKNOD=1\\n"); else err("MKNOD_ERR");
  int fd = open("/dev/xport", O_RDONLY);
  if (fd >= 0) {
    unsigned char b;
    if (pread(fd, &b, 1, 0x80) == 1) printf("PORT=1\\n"); else err("PORT_ERR");
    close(fd);
  } else err("OPEN_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    judge: judgeOnHost('got raw I/O port access', ['IOPL', 'IOPERM', 'PORT'], (r) =>
      `iopl: ${r.get('IOPL_ERR') ?? '?'}; ioperm: ${r.get('IOPERM_ERR') ?? '?'}; mknod: ${r.get('MKNOD_ERR') ?? 'made'}`),
  },
  {
    id: 'dev-kmsg',
    category: 'device',
    title: 'reads the host kernel log (a marker the host planted) via /dev/kmsg, mknod 1:11, /proc/kmsg and syslog(2)',
    shows: 'the host kernel log is out of reach: no kmsg device, /proc/kmsg and syslog refused',
    c: `${C_PRELUDE}
#define BIG (1 << 20)
static char buf[BIG];
static int found;
/* prints the lines of buf[0..n) that hold a planted marker */
static void scan(const char *via, ssize_t n) {
  buf[n] = 0;
  for (char *line = strtok(buf, "\\n"); line; line = strtok(NULL, "\\n")) {
    char *m = strstr(line, "moat-kmsg-");
    if (m && found < 40) { printf("KMSG_LINE=%s %s\\n", via, m); found++; }
  }
}
/* reads what a kmsg-like file holds now, without blocking */
static void drain(const char *via, const char *path) {
  int fd = open(path, O_RDONLY | O_NONBLOCK);
  if (fd < 0) { printf("OPEN_%s=%s\\n", via, strerror(errno)); return; }
  ssize_t total = 0;
  for (int i = 0; i < 100000; i++) {
    char rec[8192];
    ssize_t n = read(fd, rec, sizeof rec - 1);
    if (n < 0 && errno == EPIPE) continue; /* records were overwritten: go on */
    if (n <= 0) break;
    total += n;
    rec[n] = 0;
    char *m = strstr(rec, "moat-kmsg-");
    if (m && found < 40) { m[strcspn(m, "\\n")] = 0; printf("KMSG_LINE=%s %s\\n", via, m); found++; }
  }
  printf("BYTES_%s=%zd\\n", via, total);
  close(fd);
}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  drain("DEVKMSG", "/dev/kmsg");
  if (mknod("/dev/xkmsg", S_IFCHR | 0600, makedev(1, 11)) == 0) { printf("MKNOD=1\\n"); drain("MKNOD", "/dev/xkmsg"); } else err("MKNOD_ERR");
  drain("PROCKMSG", "/proc/kmsg");
  long n = syscall(SYS_syslog, 3 /* SYSLOG_ACTION_READ_ALL */, buf, BIG - 1);
  if (n >= 0) { printf("SYSLOG_BYTES=%ld\\n", n); scan("SYSLOG", n); } else err("SYSLOG_ERR");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: () => {
      kmsgMarker = `moat-kmsg-${randomBytes(8).toString('hex')}`;
      writeFileSync('/dev/kmsg', `<6>${kmsgMarker} planted by the breakout suite\n`);
    },
    judge: (t, out) => {
      const marker = kmsgMarker ?? '(none)';
      kmsgMarker = undefined;
      const r = report(out);
      if (out.stdout.includes(marker)) return escaped(`read the host kernel log: ${out.stdout.split('\n').find((l) => l.includes(marker)) ?? ''}`);
      if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
      const read = ['BYTES_DEVKMSG', 'BYTES_MKNOD', 'BYTES_PROCKMSG', 'SYSLOG_BYTES'].filter((k) => Number(r.get(k) ?? '0') > 0);
      if (read.length && onHostKernel(t, r.get('BOOT'))) return escaped(`read the host kernel log (${read.join(', ')}), though not the planted marker`);
      if (read.length) return blocked(`read only ${whichKernel(t, r.get('BOOT'))}'s log (${read.join(', ')}), not the host's marker`);
      return blocked(`no kernel log: /dev/kmsg ${r.get('OPEN_DEVKMSG') ?? 'opened'}; /proc/kmsg ${r.get('OPEN_PROCKMSG') ?? 'opened'}; mknod ${r.get('MKNOD_ERR') ?? 'made'}; syslog ${r.get('SYSLOG_ERR') ?? '?'}`);
    },
  },
  {
    id: 'dev-kvm',
    category: 'device',
    title: 'mknods /dev/kvm (10:232) and asks the host\'s KVM for its API version (the door to host VM ioctls)',
    shows: 'no KVM device can be made or opened',
    c: `${C_PRELUDE}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  if (mknod("/dev/xkvm", S_IFCHR | 0600, makedev(10, 232)) == 0) printf("MKNOD=1\\n"); else err("MKNOD_ERR");
  const char *paths[] = {"/dev/xkvm", "/dev/kvm", NULL};
  for (int i = 0; paths[i]; i++) {
    int fd = open(paths[i], O_RDWR);
    if (fd < 0) { if (i == 0) err("OPEN_ERR"); continue; }
    int v = ioctl(fd, 0xAE00 /* KVM_GET_API_VERSION */, 0);
    if (v > 0) printf("KVM=1\\nKVM_API=%d\\n", v); else err("IOCTL_ERR");
    close(fd);
  }
  printf("DONE=1\\n");
  return 0;
}
`,
    judge: judgeOnHost('talked to KVM', ['KVM'], (r) => `mknod: ${r.get('MKNOD_ERR') ?? 'made'}; open: ${r.get('OPEN_ERR') ?? 'opened'}`),
  },
];
