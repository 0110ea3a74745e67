/*
 * moat-agent: the guest side of Moat's `microvm` backend. It is /init (PID 1) of the initramfs
 * every microVM boots: it mounts the guest's pseudo filesystems, loads the kernel modules the
 * image lists, mounts the container's rootfs, switches root into it, opens the control channel
 * to the host and then runs, feeds, signals and reaps the container's processes on the host's
 * orders. It decides nothing on its own: every process setting comes from the host.
 *
 * Build line (scripts/build.mjs runs it during `npm ci`):
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -fno-strict-aliasing -static \
 *      -o dist/moat-agent native/moat-agent.c
 *
 * Boot (PID 1):
 *   1. mounts proc (/proc), sysfs (/sys) and devtmpfs (/dev) in the initramfs; fds 0..2 are
 *      /dev/console (messages for the console log go to stderr).
 *   2. loads the modules listed one per line in /modules.load (paths relative to "/", '#'
 *      starts a comment) in file order with finit_module(2); EEXIST is fine, other errors are
 *      reported on the console and boot continues. .ko.xz/.ko.zst/.ko.gz are passed with
 *      MODULE_INIT_COMPRESSED_FILE (the kernel decompresses them).
 *   3. reads /proc/cmdline:
 *        moat.ctl=serial       (default) the virtio-serial port named "moat.ctl", found under
 *                              /sys/class/virtio-ports/<vportXpY>/name and opened as /dev/<vportXpY>
 *        moat.ctl=vsock:PORT   an AF_VSOCK stream connection to the host (CID 2) port PORT
 *        moat.root=vda         /dev/vda mounted ext4 read-write as the rootfs
 *        moat.root=9p:TAG      the virtio-9p share TAG mounted read-only at /lower
 *                              (trans=virtio,version=9p2000.L,msize=262144), a tmpfs at /upper
 *                              and an overlay of both as the rootfs: writes stay in guest memory
 *        moat.net=none         (default) loopback only
 *        moat.net=user         also the first Ethernet interface (/sys/class/net/X/type 1) as
 *                              QEMU's `-netdev user` (libslirp) expects: 10.0.2.15/24, default
 *                              route via 10.0.2.2 (DNS is 10.0.2.3); IPv6 autoconfigures from
 *                              slirp's router advertisements
 *        moat.net=static       also the first Ethernet interface as a pod's interface the host
 *                              redirects to the VM's tap (its MAC is the NIC's already):
 *          moat.mtu=N          its MTU (68..65535)
 *          moat.addr=IP/LEN    an address (IPv4 or IPv6; at most 8), DAD off (the pod's
 *                              interface holds it already)
 *          moat.route=DST/LEN[,GW]  a route through it (at most 16; DST/0 is a default
 *                              route), added after every address, gatewayless ones first
 *        moat.dns=ADDR         (at most 3) a loopback nameserver of the pod's network namespace
 *                              the agent relays to the host (see NAME_QUERY)
 *      The channel, the rootfs and the network devices probe asynchronously: each is retried
 *      for 5 s. The control channel is opened first, so a rootfs or network failure (or a bad
 *      moat.root/moat.net value) reaches the host as FAILURE(0xffffffff, "boot: ...") before
 *      the power-off.
 *   4. switches root (chdir /newroot, mount --move . /, chroot .), then mounts, inside the new
 *      root, proc (/proc), sysfs read-only (/sys), devtmpfs (/dev), devpts (/dev/pts), and
 *      tmpfs mode 1777 at /dev/shm, creating missing mount points. (They are mounted after the
 *      chroot so that a symlink in the image resolves inside the image.) /tmp is the spec's: a
 *      tmpfs only where the spec mounts one (MOUNT), else the image's, as under runc.
 *   5. brings up the network with ioctls: lo always (the kernel gives it 127.0.0.1 and ::1),
 *      and with moat.net=user the Ethernet interface (address, netmask, up, default route),
 *      with moat.net=static the Ethernet interface (MTU, addresses, up, routes); then listens
 *      on each moat.dns address.
 *   6. sends HELLO and serves the protocol until stream 0 exits, SHUTDOWN arrives, the channel
 *      reports EOF or an error, or a malformed frame arrives; then every process is killed,
 *      the disks are synced and the VM powers off (reboot(RB_POWER_OFF); QEMU runs with
 *      -no-reboot). A boot failure powers off too.
 *
 * Protocol (all integers little-endian):
 *   frame   u32 len (bytes after this field; 5 <= len <= 1 MiB + 5), u8 type, u32 stream,
 *           payload[len - 5]
 *   streams small integers chosen by the host; stream 0 is the container's process;
 *           0xffffffff means "every process" (KILL) or "the agent itself" (FAILURE).
 *   host -> guest
 *     'R' RUN      the process spec, TLV records: u8 tag, u32 length, value[length]
 *                    1 ARG (string, repeated, >= 1)   2 ENV (string "K=V", repeated)
 *                    3 CWD (string, default "/")      4 UID (u32, default 0)
 *                    5 GID (u32, default 0)           6 GROUP (u32, repeated)
 *                    7 HOSTNAME (string; stream 0 only)
 *                    8 RLIMIT (u32 resource, u64 soft, u64 hard; all-ones = infinity)
 *                    9 UMASK (u32)                   10 TERMINAL (u16 rows, u16 columns)
 *                   11 BIND (u8 flags, u8 tag length, tag, destination: the rest)
 *                   12 MOUNT (u8 flags, u8 fs: 1 tmpfs, 2 mqueue; destination, NUL, options: the rest)
 *                   13 READONLY_ROOT (empty)
 *                  strings are raw bytes without NUL; at most 4096 ARG+ENV records, 64 GROUP,
 *                  16 RLIMIT, strings of at most 128 KiB; CWD, UID, GID, HOSTNAME, UMASK and
 *                  TERMINAL and READONLY_ROOT at most once; at most 64 BIND and MOUNT together,
 *                  for stream 0 only: before its process starts they are made in their order,
 *                  each at its destination (an absolute path without "..", missing directories
 *                  made 0755). BIND: the virtio-9p share TAG (waited for like the other devices)
 *                  is mounted there, or with flag FILE(2) its one entry "file" is bound there (a
 *                  missing file made empty, 0644) through a mount of the share at a staging
 *                  directory that is detached at once. MOUNT: a tmpfs with those options, or an
 *                  mqueue. Flags READONLY(1), NOSUID(4), NODEV(8), NOEXEC(16) apply to the mount.
 *                  READONLY_ROOT then remounts "/" read-only. Stream 0 runs as pid 1 of a new
 *                  pid namespace, in a mount namespace of its own with that namespace's /proc;
 *                  later RUNs fork into both (an exec before stream 0 runs in the agent's). A
 *                  failure is FAILURE ("mount DEST
 *                  ...: strerror") and EXIT 126. The process: setsid, sethostname, umask, setrlimit,
 *                  chdir, setgroups, setgid, setuid, default signal mask and dispositions, pipes
 *                  on 0/1/2 (with TERMINAL: a new pty of that size in the guest's devpts as its
 *                  controlling terminal on 0/1/2 instead; all its output comes as STDOUT, and an
 *                  empty STDIN only stops the input), every other fd closed, execvpe(ARG[0],
 *                  ARGs, ENVs) with PATH from the ENVs. Answer: STARTED, or FAILURE ("exec ARG0: strerror", or the step
 *                  that failed) followed by EXIT 127 (ENOENT) or 126 (any other errno). A RUN
 *                  for a stream that is running gets FAILURE only.
 *     'I' STDIN    bytes for the process's stdin; an empty payload closes it (EOF). Data is
 *                  queued while the pipe is full; over 1 MiB queued, stdin is closed (the
 *                  reader sees EOF, later data is discarded) and FAILURE is sent. STDIN for a
 *                  stream that is not running is discarded (it may just have exited).
 *     'K' KILL     u32 signal: kill(pid of the stream's process, signal); stream 0xffffffff:
 *                  kill(-1, signal), every process but the agent. Errors come back as FAILURE.
 *     'P' PS       (empty; stream echoed) answered by LIST
 *     'Q' SHUTDOWN (empty) kill every process, sync, power off
 *     'T' RESIZE   u16 rows, u16 columns: the window size of the stream's terminal (a stream
 *                  without one gets FAILURE)
 *     'A' NAME_ANSWER  (stream 0xffffffff) u32 query id, then the DNS message (at most 65535
 *                  bytes), or nothing if the query failed
 *   guest -> host
 *     'H' HELLO    the guest kernel's release (uname -r), once, first
 *     'S' STARTED  u32 pid
 *     'O' STDOUT   bytes (at most 64 KiB per frame)
 *     'D' STDERR   bytes (at most 64 KiB per frame)
 *     'W' EXIT     u32 status as a shell shows it: the exit code, or 128 + the signal. Sent after
 *                  every byte the process wrote to stdout and stderr; then the stream is free.
 *                  After stream 0's EXIT, the VM powers off.
 *     'F' FAILURE  text (at most 4 KiB): an order of the host failed
 *     'L' LIST     u32 pids: every numeric entry of /proc
 *     'N' NAME_QUERY  (stream 0xffffffff) u32 query id, u8 nameserver (index of its moat.dns),
 *                  u8 transport (0 UDP, 1 TCP), the DNS message (12 to 65535 bytes) a process
 *                  sent to that nameserver's address in the guest; the host asks the address on
 *                  its side and answers with NAME_ANSWER
 *   A frame with a length out of range, an unknown or guest->host type, a payload of the wrong
 *   size for its type, or a malformed RUN spec gets FAILURE(0xffffffff, "protocol: ...") and
 *   the VM powers off.
 *
 * Test mode: `moat-agent --test-fd N [--dns ADDR]... [--dns-port PORT] [--dns-idle-ms MS]`
 * (refused as PID 1) skips the boot steps and serves the protocol on fd N (a socketpair end),
 * relaying names from ADDR port PORT (default 53), closing idle TCP clients after MS (10000). It becomes a child subreaper so it reaps orphans as PID 1
 * would; stream 0's exit does not end it; where PID 1 would power off it kills the processes it
 * started and exits (0 after SHUTDOWN or EOF, 1 after an error); KILL 0xffffffff signals only
 * the processes it started, never kill(-1).
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the protocol is little-endian and this agent copies integers as they are in memory"
#endif
#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

#define HDR 9u                         /* u32 len, u8 type, u32 stream */
#define MAX_PAYLOAD (1u << 20)
#define MAX_LEN (MAX_PAYLOAD + 5u)
#define OUT_CHUNK 65536u               /* STDOUT/STDERR frame payload cap */
#define STDIN_CAP (1u << 20)           /* bytes queued for one process's stdin */
#define FAIL_MAX 4096u
#define MAX_STRV 4096u
#define MAX_GROUPS 64u
#define MAX_RLIMITS 16u
#define MAX_MOUNTS 64u
#define MAX_MOUNT_DATA 1024u
#define MAX_TAG 31u
#define MAX_PATH_LEN 4095u
#define BIND_RO 1u
#define BIND_FILE 2u
#define BIND_NOSUID 4u
#define BIND_NODEV 8u
#define BIND_NOEXEC 16u
#define BIND_STAGING "/dev/.moat-bind"
#define NINEP_OPTS "trans=virtio,version=9p2000.L,msize=262144"
#define MAX_STR (128u << 10)
#define MAX_PROCS 128
#define STREAM_ALL 0xffffffffu
#define WAIT_MS 5000
/* moat.net=user: libslirp's defaults for QEMU's `-netdev user` (network 10.0.2.0/24, gateway
 * and host 10.0.2.2, DNS 10.0.2.3); the host's qemu.ts relies on them and passes no address */
#define NET_ADDR "10.0.2.15"
#define NET_MASK "255.255.255.0"
#define NET_GW "10.0.2.2"

enum { T_ARG = 1, T_ENV, T_CWD, T_UID, T_GID, T_GROUP, T_HOSTNAME, T_RLIMIT, T_UMASK, T_TERMINAL, T_BIND, T_MOUNT, T_READONLY_ROOT };
enum { M_BIND, M_TMPFS, M_MQUEUE };

/* steps of the child between fork and exec, reported through the error pipe */
enum { ST_SETSID, ST_HOSTNAME, ST_RLIMIT, ST_CHDIR, ST_SETGROUPS, ST_SETGID, ST_SETUID,
       ST_SIGNALS, ST_DUP, ST_CLOSE, ST_TTY, ST_EXEC, ST_NAMESPACE };
static const char *const step_name[] = { "setsid", "sethostname", "setrlimit", "chdir", "setgroups",
                                         "setgid", "setuid", "signals", "dup", "close_range",
                                         "controlling terminal", "exec", "namespaces" };

static int test_mode;
static int ctl = -1;           /* the control channel */
static int ctl_vsock;          /* ctl is an AF_VSOCK socket (sends are asynchronous) */
static int sigfd = -1;         /* signalfd for SIGCHLD */
static int cont_pidns;         /* the container's pid namespace is made (stream 0 is its pid 1) */
static int cont_mntns = -1;    /* the container's mount namespace (stream 0's), which execs join */

static uint8_t rx[HDR + MAX_PAYLOAD]; /* exactly one frame of the largest size */
static size_t rx_len;
static uint8_t tx[HDR + MAX_PAYLOAD];
static uint8_t iobuf[OUT_CHUNK];

/* the process spec of the RUN being served; strings live in `arena` */
static struct spec {
  char *argv[MAX_STRV + 1]; uint32_t argc;
  char *envp[MAX_STRV + 1]; uint32_t envc;
  char *cwd, *hostname;
  int has_uid, has_gid, has_umask, has_tty;
  uint16_t rows, cols;
  uint32_t uid, gid, umask_v;
  gid_t groups[MAX_GROUPS]; uint32_t ngroups;
  uint32_t nrl, rl_res[MAX_RLIMITS]; uint64_t rl_soft[MAX_RLIMITS], rl_hard[MAX_RLIMITS];
  uint32_t nmounts;
  struct { uint8_t kind, flags; char tag[MAX_TAG + 1]; char *dest, *data; } mounts[MAX_MOUNTS];
  int ro_root;
} sp;
static char arena[MAX_PAYLOAD]; /* each string takes len + 1 <= its record's 5 + len bytes */

struct proc {
  int used;
  uint32_t stream;
  pid_t pid;
  int out, err, in;           /* the agent's pipe ends (with a terminal: the pty master, and a
                                 duplicate of it for input); -1 once closed */
  int tty;                    /* runs on a terminal (out is its master) */
  uint8_t *q;                 /* stdin bytes not yet written (malloc'd, at most STDIN_CAP) */
  size_t qoff, qlen, qcap;
  int eof_pending;            /* close stdin once the queue is written */
};
static struct proc procs[MAX_PROCS];

/* ---------- reporting ---------- */

static void say(const char *fmt, ...) {
  char b[1024];
  va_list ap; va_start(ap, fmt); vsnprintf(b, sizeof b, fmt, ap); va_end(ap);
  dprintf(2, "moat-agent: %s\n", b); /* the console; nothing to do if even that fails */
}

static long now_ms(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void __attribute__((noreturn)) power_off(int code) {
  if (test_mode) {
    for (int i = 0; i < MAX_PROCS; i++)
      if (procs[i].used && kill(procs[i].pid, SIGKILL) != 0 && errno != ESRCH)
        say("kill %d: %s", (int)procs[i].pid, strerror(errno));
    _exit(code);
  }
  if (ctl_vsock && ctl >= 0) {
    /* virtio-vsock sends from a kernel worker: half-close, and let the host's close (at most
     * 1 s later) prove that everything written reached it. virtio-serial writes return only
     * once the host took the data. */
    if (shutdown(ctl, SHUT_WR) == 0) {
      struct pollfd p = { ctl, POLLIN, 0 };
      for (long end = now_ms() + 1000, left; (left = end - now_ms()) > 0;)
        if (poll(&p, 1, (int)left) <= 0 || read(ctl, iobuf, sizeof iobuf) <= 0) break;
    }
  }
  if (kill(-1, SIGKILL) != 0 && errno != ESRCH) say("kill -1: %s", strerror(errno));
  sync();
  reboot(RB_POWER_OFF);
  say("power off: %s", strerror(errno));
  _exit(1); /* PID 1 exiting panics the kernel; with panic=-1 and -no-reboot the VM ends too */
}

static void write_ctl(const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(ctl, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = { ctl, POLLOUT, 0 };
        if (poll(&pf, 1, -1) < 0 && errno != EINTR) { say("control channel: poll: %s", strerror(errno)); power_off(1); }
        continue;
      }
      say("control channel: write: %s", strerror(errno));
      power_off(1);
    }
    p += w; n -= (size_t)w;
  }
}

/* Sends one frame; `p` may point at tx + HDR (the payload was built in place). */
static void send_frame(char type, uint32_t stream, const void *p, size_t n) {
  uint32_t len = (uint32_t)n + 5;
  memcpy(tx, &len, 4); tx[4] = (uint8_t)type; memcpy(tx + 5, &stream, 4);
  if (n > 0 && p != tx + HDR) memmove(tx + HDR, p, n);
  write_ctl(tx, HDR + n);
}

static void send_u32(char type, uint32_t stream, uint32_t v) { send_frame(type, stream, &v, 4); }

static void failure(uint32_t stream, const char *fmt, ...) {
  char b[FAIL_MAX + 1];
  va_list ap; va_start(ap, fmt); vsnprintf(b, sizeof b, fmt, ap); va_end(ap);
  if (ctl >= 0) send_frame('F', stream, b, strlen(b));
  else say("%s", b);
}

static void __attribute__((noreturn, format(printf, 1, 2))) protocol_error(const char *fmt, ...) {
  char b[FAIL_MAX - 16];
  va_list ap; va_start(ap, fmt); vsnprintf(b, sizeof b, fmt, ap); va_end(ap);
  say("protocol: %s", b);
  failure(STREAM_ALL, "protocol: %s", b);
  power_off(1);
}

/* A boot step failed: tell the host if the channel is up, then power off. */
static void __attribute__((noreturn, format(printf, 1, 2))) boot_fail(const char *fmt, ...) {
  char b[FAIL_MAX - 16];
  va_list ap; va_start(ap, fmt); vsnprintf(b, sizeof b, fmt, ap); va_end(ap);
  say("boot: %s", b);
  if (ctl >= 0) failure(STREAM_ALL, "boot: %s", b);
  power_off(1);
}

/* ---------- small helpers ---------- */

static void nap(void) {
  struct timespec ts = { 0, 10 * 1000000 };
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static void close_fd(int *fd) {
  if (*fd < 0) return;
  if (close(*fd) != 0 && errno != EINTR) say("close %d: %s", *fd, strerror(errno));
  *fd = -1;
}

/* Reads a small file into buf (NUL-terminated, trailing newline removed); -1 with errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got < cap - 1) {
    ssize_t n = read(fd, buf + got, cap - 1 - got);
    if (n < 0) { if (errno == EINTR) continue; int e = errno; close(fd); errno = e; return -1; }
    if (n == 0) break;
    got += (size_t)n;
  }
  close(fd);
  buf[got] = 0;
  while (got > 0 && buf[got - 1] == '\n') buf[--got] = 0;
  return (ssize_t)got;
}

static void make_dir(const char *path, mode_t mode) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return;
  if (mkdir(path, mode) != 0 && errno != EEXIST) boot_fail("mkdir %s: %s", path, strerror(errno));
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data, mode_t mode) {
  make_dir(dst, mode);
  if (mount(src, dst, type, flags, data) != 0)
    boot_fail("mount %s on %s (%s): %s", src, dst, type, strerror(errno));
}

/* ---------- boot ---------- */

static void mount_early(void) {
  make_dir("/proc", 0555); make_dir("/sys", 0555); make_dir("/dev", 0755);
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
    boot_fail("mount /proc: %s", strerror(errno));
  if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
    boot_fail("mount /sys: %s", strerror(errno));
  if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0 && errno != EBUSY)
    boot_fail("mount /dev: %s", strerror(errno));
}

/* Makes sure fds 0..2 are open, so that no pipe or channel ever lands on them. */
static void std_fds(void) {
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int n = open("/dev/console", O_RDWR | O_NOCTTY);
    if (n < 0) n = open("/dev/null", O_RDWR);
    if (n < 0) { say("open /dev/null: %s", strerror(errno)); _exit(1); }
    if (n != fd) { say("fd %d is not free", fd); _exit(1); }
  }
}

static void load_modules(void) {
  static char list[65536];
  ssize_t n = read_small("/modules.load", list, sizeof list);
  if (n < 0) { if (errno != ENOENT) say("/modules.load: %s", strerror(errno)); return; }
  if ((size_t)n == sizeof list - 1) say("/modules.load: longer than %zu bytes, the rest is ignored", sizeof list - 1);
  char *save = NULL;
  for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    while (*line == ' ' || *line == '\t') line++;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r')) line[--len] = 0;
    if (len == 0 || line[0] == '#') continue;
    char path[4096];
    if (snprintf(path, sizeof path, "%s%s", line[0] == '/' ? "" : "/", line) >= (int)sizeof path) {
      say("module %s: path too long", line);
      continue;
    }
    unsigned flags = 0;
    if ((len > 3 && strcmp(line + len - 3, ".xz") == 0) || (len > 4 && strcmp(line + len - 4, ".zst") == 0) ||
        (len > 3 && strcmp(line + len - 3, ".gz") == 0))
      flags = MODULE_INIT_COMPRESSED_FILE;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { say("module %s: open: %s", path, strerror(errno)); continue; }
    /* ENOENT here means an unknown symbol: a module it needs is missing or listed later */
    if (syscall(SYS_finit_module, fd, "", flags) != 0 && errno != EEXIST)
      say("module %s: finit_module: %s", path, strerror(errno));
    close_fd(&fd);
  }
}

static char opt_root[256], opt_ctl[64] = "serial", opt_net[32] = "none";
#define MAX_NET_ADDRS 8
#define MAX_NET_ROUTES 16
/* moat.net=static: moat.mtu, moat.addr and moat.route (pointers into read_cmdline's buffer) */
static const char *opt_mtu, *opt_addr[MAX_NET_ADDRS], *opt_route[MAX_NET_ROUTES];
static int n_addr, n_route;
#define MAX_DNS 3                      /* resolv.conf's MAXNS */
/* moat.dns: the loopback nameservers the agent relays to the host (see the name relay) */
static const char *opt_dns[MAX_DNS];
static int n_dns;
static unsigned dns_port = 53;

static void read_cmdline(void) {
  static char line[4096];
  if (read_small("/proc/cmdline", line, sizeof line) < 0) boot_fail("/proc/cmdline: %s", strerror(errno));
  char *save = NULL;
  for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
    if (strncmp(w, "moat.root=", 10) == 0) snprintf(opt_root, sizeof opt_root, "%s", w + 10);
    else if (strncmp(w, "moat.ctl=", 9) == 0) snprintf(opt_ctl, sizeof opt_ctl, "%s", w + 9);
    else if (strncmp(w, "moat.net=", 9) == 0) snprintf(opt_net, sizeof opt_net, "%s", w + 9);
    else if (strncmp(w, "moat.mtu=", 9) == 0) opt_mtu = w + 9;
    else if (strncmp(w, "moat.addr=", 10) == 0) {
      if (n_addr == MAX_NET_ADDRS) boot_fail("moat.addr: more than %d", MAX_NET_ADDRS);
      opt_addr[n_addr++] = w + 10;
    } else if (strncmp(w, "moat.route=", 11) == 0) {
      if (n_route == MAX_NET_ROUTES) boot_fail("moat.route: more than %d", MAX_NET_ROUTES);
      opt_route[n_route++] = w + 11;
    } else if (strncmp(w, "moat.dns=", 9) == 0) {
      if (n_dns == MAX_DNS) boot_fail("moat.dns: more than %d", MAX_DNS);
      opt_dns[n_dns++] = w + 9;
    }
  }
}

/* Finds the entry E of sysfs directory `dir` whose file `dir`/E/`file` holds `want`; copies E
 * to `name`. 0 if found, -1 if not (yet). */
static int find_sysfs(const char *dir, const char *file, const char *want, char *name, size_t cap) {
  static char dents[8192];
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  int found = -1;
  for (;;) {
    ssize_t n = getdents64(dfd, dents, sizeof dents);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n && found < 0;) {
      struct dirent64 *d = (struct dirent64 *)(dents + off);
      off += d->d_reclen;
      if (d->d_name[0] == '.') continue;
      char path[512], value[256];
      snprintf(path, sizeof path, "%s/%s/%s", dir, d->d_name, file);
      if (read_small(path, value, sizeof value) < 0 || strcmp(value, want) != 0) continue;
      snprintf(name, cap, "%s", d->d_name);
      found = 0;
    }
    if (found == 0) break;
  }
  close_fd(&dfd);
  return found;
}

static void open_ctl(void) {
  long deadline = now_ms() + WAIT_MS;
  if (strcmp(opt_ctl, "serial") == 0) {
    char port[256], dev[320];
    for (;;) {
      if (find_sysfs("/sys/class/virtio-ports", "name", "moat.ctl", port, sizeof port) == 0 &&
          snprintf(dev, sizeof dev, "/dev/%s", port) > 0 && (ctl = open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY)) >= 0)
        return;
      if (now_ms() > deadline) boot_fail("no virtio-serial port named moat.ctl after %d ms", WAIT_MS);
      nap();
    }
  }
  if (strncmp(opt_ctl, "vsock:", 6) == 0) {
    char *end;
    unsigned long port = strtoul(opt_ctl + 6, &end, 10);
    if (*end || end == opt_ctl + 6 || port > 0xffffffffUL) boot_fail("moat.ctl=%s: bad port", opt_ctl);
    struct sockaddr_vm a;
    memset(&a, 0, sizeof a);
    a.svm_family = AF_VSOCK; a.svm_cid = VMADDR_CID_HOST; a.svm_port = (unsigned)port;
    int err = 0;
    for (;;) {
      int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) { ctl = s; ctl_vsock = 1; return; }
      err = errno;
      if (s >= 0) close_fd(&s);
      if (now_ms() > deadline) boot_fail("vsock connect to host port %lu: %s", port, strerror(err));
      nap();
    }
  }
  boot_fail("moat.ctl=%s: expected serial or vsock:PORT", opt_ctl);
}

static void mount_root(void) {
  make_dir("/newroot", 0755);
  if (strcmp(opt_root, "vda") == 0) {
    long deadline = now_ms() + WAIT_MS;
    struct stat st;
    while (stat("/dev/vda", &st) != 0) {
      if (now_ms() > deadline) boot_fail("/dev/vda did not appear within %d ms", WAIT_MS);
      nap();
    }
    if (mount("/dev/vda", "/newroot", "ext4", 0, NULL) != 0) boot_fail("mount /dev/vda (ext4): %s", strerror(errno));
  } else if (strncmp(opt_root, "9p:", 3) == 0 && opt_root[3]) {
    const char *tag = opt_root + 3;
    make_dir("/lower", 0755);
    long deadline = now_ms() + WAIT_MS;
    /* the tag exists once 9pnet_virtio has probed the device (mount would say ENOENT, and the
     * kernel would log every attempt): wait for it in sysfs, then mount once */
    char dev[256];
    while (find_sysfs("/sys/bus/virtio/drivers/9pnet_virtio", "mount_tag", tag, dev, sizeof dev) != 0 &&
           now_ms() <= deadline)
      nap();
    if (mount(tag, "/lower", "9p", MS_RDONLY, "trans=virtio,version=9p2000.L,msize=262144") != 0)
      boot_fail("mount 9p %s: %s", tag, strerror(errno));
    do_mount("tmpfs", "/upper", "tmpfs", 0, "mode=0755", 0755);
    make_dir("/upper/upper", 0755);
    make_dir("/upper/work", 0755);
    if (mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/upper/upper,workdir=/upper/work") != 0)
      boot_fail("mount overlay: %s", strerror(errno));
  } else {
    boot_fail("moat.root=%s: expected vda or 9p:TAG", opt_root);
  }
}

static void switch_root(void) {
  if (chdir("/newroot") != 0) boot_fail("chdir /newroot: %s", strerror(errno));
  if (mount(".", "/", NULL, MS_MOVE, NULL) != 0) boot_fail("move /newroot to /: %s", strerror(errno));
  if (chroot(".") != 0) boot_fail("chroot: %s", strerror(errno));
  if (chdir("/") != 0) boot_fail("chdir /: %s", strerror(errno));
  do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555);
  do_mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555);
  do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755);
  do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666", 0755);
  do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
}

/* Sets `sa` (a struct sockaddr in an ifreq or rtentry) to the IPv4 address `ip`. */
static void set_in(struct sockaddr *sa, const char *ip) {
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  if (inet_pton(AF_INET, ip, &in.sin_addr) != 1) boot_fail("network: bad address %s", ip);
  memcpy(sa, &in, sizeof in);
}

/* ORs IFF_UP into the flags of interface `dev`; `s` is an AF_INET datagram socket. */
static void if_up(int s, const char *dev) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) boot_fail("network: %s: get flags: %s", dev, strerror(errno));
  ifr.ifr_flags |= IFF_UP; /* IFF_RUNNING is the kernel's to set (carrier), not ours */
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) boot_fail("network: %s: set up: %s", dev, strerror(errno));
}

/* Parses "IP/LEN" (or "IP" with `deflen` > 0: LEN is deflen) into `addr` (16 bytes: an
 * in_addr or in6_addr) and `len`; returns AF_INET or AF_INET6, or boot_fail()s. `what` names
 * the option for the message. */
static int parse_prefix(const char *s, const char *what, unsigned char *addr, int *len) {
  char ip[INET6_ADDRSTRLEN + 1];
  const char *slash = strchr(s, '/');
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= sizeof ip || !slash) boot_fail("%s=%s: expected IP/LENGTH", what, s);
  memcpy(ip, s, n);
  ip[n] = 0;
  int family = strchr(ip, ':') ? AF_INET6 : AF_INET;
  if (inet_pton(family, ip, addr) != 1) boot_fail("%s=%s: bad address", what, s);
  char *end;
  long l = strtol(slash + 1, &end, 10);
  if (*end || end == slash + 1 || l < 0 || l > (family == AF_INET ? 32 : 128)) boot_fail("%s=%s: bad prefix length", what, s);
  *len = (int)l;
  return family;
}

/* The kernel's struct in6_ifreq (linux/ipv6.h), for SIOCSIFADDR on an AF_INET6 socket. */
struct moat_in6_ifreq {
  struct in6_addr addr;
  uint32_t prefixlen;
  int ifindex;
};

/* Writes `value` to /proc/sys/net/ipv6/conf/`dev`/`key`; failures are reported, not fatal. */
static void ipv6_conf(const char *dev, const char *key, const char *value) {
  char path[128];
  snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/%s", dev, key);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, value, strlen(value)) < 0) say("network: %s: %s", path, strerror(errno));
  close_fd(&fd);
}

/* moat.net=static on `dev`: MTU, addresses (the first IPv4 one on dev, more on dev:1, dev:2 ...),
 * up, then the routes: those without a gateway first (a gateway may need one of them). `s` is an
 * AF_INET datagram socket. */
static void net_static(int s, const char *dev) {
  struct ifreq ifr;
  int s6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s6 < 0) boot_fail("network: IPv6 socket: %s", strerror(errno));
  int ifindex = (int)if_nametoindex(dev);
  if (ifindex == 0) boot_fail("network: %s: no index: %s", dev, strerror(errno));
  if (opt_mtu) {
    char *end;
    long mtu = strtol(opt_mtu, &end, 10);
    if (*end || mtu < 68 || mtu > 65535) boot_fail("moat.mtu=%s: expected 68 to 65535", opt_mtu);
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    ifr.ifr_mtu = (int)mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) != 0) boot_fail("network: %s: set MTU %ld: %s", dev, mtu, strerror(errno));
  }
  ipv6_conf(dev, "accept_dad", "0");
  int v4 = 0;
  for (int i = 0; i < n_addr; i++) {
    unsigned char a[16];
    int len;
    if (parse_prefix(opt_addr[i], "moat.addr", a, &len) == AF_INET) {
      memset(&ifr, 0, sizeof ifr);
      if (v4 == 0) snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
      else snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%.10s:%u", dev, (unsigned)v4 % 10u); /* v4 < MAX_NET_ADDRS */
      struct sockaddr_in in;
      memset(&in, 0, sizeof in);
      in.sin_family = AF_INET;
      memcpy(&in.sin_addr, a, 4);
      memcpy(&ifr.ifr_addr, &in, sizeof in);
      if (ioctl(s, SIOCSIFADDR, &ifr) != 0) boot_fail("network: %s: set address %s: %s", ifr.ifr_name, opt_addr[i], strerror(errno));
      in.sin_addr.s_addr = len == 0 ? 0 : htonl(0xffffffffu << (32 - len));
      memcpy(&ifr.ifr_netmask, &in, sizeof in);
      if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) boot_fail("network: %s: set netmask of %s: %s", ifr.ifr_name, opt_addr[i], strerror(errno));
      if (v4 > 0) if_up(s, ifr.ifr_name);
      v4++;
    } else {
      struct moat_in6_ifreq r6;
      memset(&r6, 0, sizeof r6);
      memcpy(&r6.addr, a, 16);
      r6.prefixlen = (uint32_t)len;
      r6.ifindex = ifindex;
      if (ioctl(s6, SIOCSIFADDR, &r6) != 0) boot_fail("network: %s: set address %s: %s", dev, opt_addr[i], strerror(errno));
    }
  }
  if_up(s, dev);
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < n_route; i++) {
      char dst[INET6_ADDRSTRLEN + 8];
      const char *comma = strchr(opt_route[i], ',');
      size_t n = comma ? (size_t)(comma - opt_route[i]) : strlen(opt_route[i]);
      if (n >= sizeof dst) boot_fail("moat.route=%s: too long", opt_route[i]);
      if ((comma != NULL) != (pass == 1)) continue;
      memcpy(dst, opt_route[i], n);
      dst[n] = 0;
      unsigned char d[16], g[16];
      int len;
      int family = parse_prefix(dst, "moat.route", d, &len);
      if (comma && inet_pton(family, comma + 1, g) != 1) boot_fail("moat.route=%s: bad gateway", opt_route[i]);
      if (family == AF_INET) {
        struct rtentry rt;
        struct sockaddr_in in;
        memset(&rt, 0, sizeof rt);
        memset(&in, 0, sizeof in);
        in.sin_family = AF_INET;
        memcpy(&in.sin_addr, d, 4);
        memcpy(&rt.rt_dst, &in, sizeof in);
        in.sin_addr.s_addr = len == 0 ? 0 : htonl(0xffffffffu << (32 - len));
        memcpy(&rt.rt_genmask, &in, sizeof in);
        rt.rt_flags = RTF_UP | (len == 32 ? RTF_HOST : 0);
        if (comma) {
          memcpy(&in.sin_addr, g, 4);
          memcpy(&rt.rt_gateway, &in, sizeof in);
          rt.rt_flags |= RTF_GATEWAY;
        }
        rt.rt_dev = (char *)dev;
        if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) boot_fail("network: %s: route %s: %s", dev, opt_route[i], strerror(errno));
      } else {
        struct in6_rtmsg rt;
        memset(&rt, 0, sizeof rt);
        memcpy(&rt.rtmsg_dst, d, 16);
        rt.rtmsg_dst_len = (unsigned short)len;
        rt.rtmsg_metric = 1;
        rt.rtmsg_ifindex = ifindex;
        rt.rtmsg_flags = RTF_UP | (len == 128 ? RTF_HOST : 0);
        if (comma) {
          memcpy(&rt.rtmsg_gateway, g, 16);
          rt.rtmsg_flags |= RTF_GATEWAY;
        }
        if (ioctl(s6, SIOCADDRT, &rt) != 0 && errno != EEXIST) boot_fail("network: %s: route %s: %s", dev, opt_route[i], strerror(errno));
      }
    }
  }
  close_fd(&s6);
}

/* Brings up lo (the kernel gives it 127.0.0.1/8 and ::1 once up) and, with moat.net=user, the
 * first Ethernet interface (type 1 in sysfs, waited for like the other devices) with
 * NET_ADDR/NET_MASK and a default route via NET_GW. IPv6 needs nothing: slirp sends router
 * advertisements and the kernel configures itself. Runs after switch_root (sysfs is mounted
 * read-only there, enough to read it), so the NIC probes while the rootfs mounts. */
static void net_up(void) {
  int user = strcmp(opt_net, "user") == 0, stat = strcmp(opt_net, "static") == 0;
  if (!user && !stat && strcmp(opt_net, "none") != 0) boot_fail("moat.net=%s: expected none, user or static", opt_net);
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) boot_fail("network: socket: %s", strerror(errno));
  if_up(s, "lo");
  char dev[IFNAMSIZ];
  if (user || stat) {
    long deadline = now_ms() + WAIT_MS;
    while (find_sysfs("/sys/class/net", "type", "1", dev, sizeof dev) != 0) { /* 1: ARPHRD_ETHER */
      if (now_ms() > deadline) boot_fail("network: no Ethernet interface after %d ms", WAIT_MS);
      nap();
    }
  }
  if (stat) net_static(s, dev);
  if (user) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
    set_in(&ifr.ifr_addr, NET_ADDR);
    if (ioctl(s, SIOCSIFADDR, &ifr) != 0) boot_fail("network: %s: set address %s: %s", dev, NET_ADDR, strerror(errno));
    set_in(&ifr.ifr_netmask, NET_MASK);
    if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) boot_fail("network: %s: set netmask %s: %s", dev, NET_MASK, strerror(errno));
    if_up(s, dev); /* up first: the route needs the gateway reachable on dev's subnet */
    struct rtentry rt;
    memset(&rt, 0, sizeof rt);
    set_in(&rt.rt_dst, "0.0.0.0");
    set_in(&rt.rt_genmask, "0.0.0.0");
    set_in(&rt.rt_gateway, NET_GW);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = dev;
    if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST)
      boot_fail("network: %s: default route via %s: %s", dev, NET_GW, strerror(errno));
  }
  close_fd(&s);
}

/* ---------- processes ---------- */

static struct proc *find_stream(uint32_t stream) {
  for (int i = 0; i < MAX_PROCS; i++) if (procs[i].used && procs[i].stream == stream) return &procs[i];
  return NULL;
}

static struct proc *find_pid(pid_t pid) {
  for (int i = 0; i < MAX_PROCS; i++) if (procs[i].used && procs[i].pid == pid) return &procs[i];
  return NULL;
}

static void stdin_close(struct proc *p) {
  close_fd(&p->in);
  free(p->q);
  p->q = NULL; p->qoff = p->qlen = p->qcap = 0; p->eof_pending = 0;
}

/* Writes what the pipe takes of the queue; closes stdin once an EOF request is reached. */
static void stdin_flush(struct proc *p) {
  while (p->in >= 0 && p->qoff < p->qlen) {
    ssize_t w = write(p->in, p->q + p->qoff, p->qlen - p->qoff);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      if (errno != EPIPE) failure(p->stream, "stdin: %s", strerror(errno));
      stdin_close(p); /* EPIPE: the process closed its stdin, later data is discarded */
      return;
    }
    p->qoff += (size_t)w;
  }
  if (p->in >= 0) {
    p->qoff = p->qlen = 0;
    if (p->eof_pending) stdin_close(p);
  }
}

static void stdin_data(struct proc *p, const uint8_t *d, size_t n) {
  if (p->in < 0 || p->eof_pending) return; /* closed: discarded */
  if (n == 0) { p->eof_pending = 1; stdin_flush(p); return; } /* on a terminal: closes only our input fd */
  if (p->qoff > 0) { memmove(p->q, p->q + p->qoff, p->qlen - p->qoff); p->qlen -= p->qoff; p->qoff = 0; }
  if (p->qlen + n > STDIN_CAP) {
    failure(p->stream, "stdin: more than %u bytes queued; stdin closed", STDIN_CAP);
    stdin_close(p);
    return;
  }
  if (p->qlen + n > p->qcap) {
    size_t cap = p->qcap ? p->qcap : 65536;
    while (cap < p->qlen + n) cap *= 2;
    if (cap > STDIN_CAP) cap = STDIN_CAP;
    uint8_t *q = realloc(p->q, cap);
    if (!q) { failure(p->stream, "stdin: out of memory; stdin closed"); stdin_close(p); return; }
    p->q = q; p->qcap = cap;
  }
  memcpy(p->q + p->qlen, d, n);
  p->qlen += n;
  stdin_flush(p);
}

/* Reads once from an output pipe: 1 data sent, 0 EOF (closed), -1 nothing there now. */
static int pump(struct proc *p, int *fd, char type) {
  for (;;) {
    ssize_t n = read(*fd, iobuf, sizeof iobuf);
    if (n > 0) { send_frame(type, p->stream, iobuf, (size_t)n); return 1; }
    if (n == 0) { close_fd(fd); return 0; }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return -1;
    if (errno == EIO && p->tty) { close_fd(fd); return 0; } /* every slave fd closed */
    failure(p->stream, "%s: %s", type == 'O' ? "stdout" : "stderr", strerror(errno));
    close_fd(fd);
    return 0;
  }
}

/* The process of `p` ended with wait status `st`: its output, then EXIT; the stream is free. */
static void exited(struct proc *p, int st) {
  /* Everything the process wrote is in the pipes now; stop at EOF, or when the pipe is empty
   * but a descendant still holds it open (that must not hold up EXIT). */
  while (p->out >= 0 && pump(p, &p->out, 'O') == 1) {}
  while (p->err >= 0 && pump(p, &p->err, 'D') == 1) {}
  close_fd(&p->out); close_fd(&p->err); stdin_close(p);
  uint32_t code = WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : 128u + (uint32_t)WTERMSIG(st);
  uint32_t stream = p->stream;
  send_u32('W', stream, code);
  memset(p, 0, sizeof *p);
  p->out = p->err = p->in = -1;
  if (stream == 0 && !test_mode) power_off(0);
}

static void reap(void) {
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof si) > 0) {}
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid == 0) return;
    if (pid < 0) {
      if (errno == EINTR) continue;
      if (errno != ECHILD) say("waitpid: %s", strerror(errno));
      return;
    }
    struct proc *p = find_pid(pid);
    if (p) exited(p, st); /* anything else is an orphan: reaped, nothing to report */
  }
}

static void __attribute__((noreturn)) child_fail(int ep, int step, uint32_t aux) {
  int32_t r[3] = { step, errno, (int32_t)aux };
  ssize_t w = write(ep, r, sizeof r); /* nothing more to do if the report itself fails */
  (void)w;
  _exit(r[1] == ENOENT ? 127 : 126);
}

/* Creates the missing directories of an absolute path (0755), as runc does for process.cwd. */
static void make_dirs(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf || path[0] != '/') return;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') continue;
    char c = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return; /* chdir then reports the error */
    buf[i] = c;
  }
}

/* Makes the missing directories of absolute `path` (0755) following symlinks as it goes, so
 * that a symlink in the image naming a directory that does not exist yet gets it made, as
 * runc's MkdirAll inside the root does for a mount destination. The agent runs chrooted in the
 * container's root, so every link resolves inside it. 0, or -1 with errno (ELOOP after 40
 * links, ENOTDIR where a component is not a directory). */
static int make_dirs_follow(const char *path) {
  char todo[2 * 4096], cur[4096] = "", next[4096 + 256], target[4096], tmp[2 * 4096];
  if (snprintf(todo, sizeof todo, "%s", path) >= (int)sizeof todo) { errno = ENAMETOOLONG; return -1; }
  size_t off = 0;
  int links = 0;
  for (;;) {
    while (todo[off] == '/') off++;
    if (!todo[off]) return 0;
    size_t n = strcspn(todo + off, "/");
    char comp[256];
    if (n >= sizeof comp) { errno = ENAMETOOLONG; return -1; }
    memcpy(comp, todo + off, n);
    comp[n] = 0;
    off += n;
    if (strcmp(comp, ".") == 0) continue;
    if (strcmp(comp, "..") == 0) { char *sl = strrchr(cur, '/'); if (sl) *sl = 0; continue; }
    if (snprintf(next, sizeof next, "%s/%s", cur, comp) >= (int)sizeof cur) { errno = ENAMETOOLONG; return -1; }
    struct stat st;
    if (lstat(next, &st) == 0 && S_ISLNK(st.st_mode)) {
      if (++links > 40) { errno = ELOOP; return -1; }
      ssize_t t = readlink(next, target, sizeof target - 1);
      if (t < 0) return -1;
      target[t] = 0;
      /* the link's target, then what was left of the path, relative to cur (or to the root) */
      if (snprintf(tmp, sizeof tmp, "%s%s", target, todo + off) >= (int)sizeof tmp) { errno = ENAMETOOLONG; return -1; }
      memcpy(todo, tmp, sizeof todo);
      off = 0;
      if (target[0] == '/') cur[0] = 0;
      continue;
    }
    if (lstat(next, &st) != 0) {
      if (errno != ENOENT || (mkdir(next, 0755) != 0 && errno != EEXIST)) return -1;
    } else if (!S_ISDIR(st.st_mode)) {
      errno = ENOTDIR;
      return -1;
    }
    memcpy(cur, next, strlen(next) + 1);
  }
}

/* The child of RUN: `tty` is the pty slave's path (in, out and err are then -1), or NULL. */
static void __attribute__((noreturn)) child(uint32_t stream, const char *tty, int in, int out, int err, int ep) {
  if (!test_mode && stream == 0) {
    /* pid 1 of the container's pid namespace, in a mount namespace of its own whose /proc is
     * that namespace's: the container sees its own processes only, as under runc */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
      child_fail(ep, ST_NAMESPACE, 0);
  } else if (!test_mode && cont_mntns >= 0 && setns(cont_mntns, CLONE_NEWNS) != 0) {
    child_fail(ep, ST_NAMESPACE, 0);
  }
  if (setsid() < 0) child_fail(ep, ST_SETSID, 0);
  if (tty) {
    /* opened after setsid, without O_NOCTTY, it becomes the controlling terminal; TIOCSCTTY
     * says so explicitly (the new session has no other) */
    int t = open(tty, O_RDWR | O_CLOEXEC);
    if (t < 0 || ioctl(t, TIOCSCTTY, 0) != 0) child_fail(ep, ST_TTY, 0);
    in = out = err = t;
  }
  if (stream == 0 && sp.hostname && sethostname(sp.hostname, strlen(sp.hostname)) != 0)
    child_fail(ep, ST_HOSTNAME, 0);
  if (sp.has_umask) umask((mode_t)(sp.umask_v & 0777));
  for (uint32_t i = 0; i < sp.nrl; i++) {
    struct rlimit rl = { (rlim_t)sp.rl_soft[i], (rlim_t)sp.rl_hard[i] };
    if (setrlimit((__rlimit_resource_t)sp.rl_res[i], &rl) != 0) child_fail(ep, ST_RLIMIT, sp.rl_res[i]);
  }
  if (sp.cwd && chdir(sp.cwd) != 0 && errno == ENOENT) make_dirs(sp.cwd);
  if (chdir(sp.cwd ? sp.cwd : "/") != 0) child_fail(ep, ST_CHDIR, 0);
  /* An unprivileged agent (test mode only) asked for its own ids has nothing to change. */
  if (geteuid() == 0 || sp.uid != geteuid() || sp.gid != getegid() || sp.ngroups > 0) {
    if (setgroups(sp.ngroups, sp.groups) != 0) child_fail(ep, ST_SETGROUPS, 0);
    if (setgid(sp.gid) != 0) child_fail(ep, ST_SETGID, sp.gid);
    if (setuid(sp.uid) != 0) child_fail(ep, ST_SETUID, sp.uid);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    if (sigaction(s, &sa, NULL) != 0 && errno != EINVAL) child_fail(ep, ST_SIGNALS, (uint32_t)s);
  }
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) child_fail(ep, ST_SIGNALS, 0);
  /* fds 0..2 of the agent are always open, so the pipe ends are all >= 3 */
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_fail(ep, ST_DUP, 0);
  if (ep != 3) {
    if (dup3(ep, 3, O_CLOEXEC) < 0) child_fail(ep, ST_DUP, 0);
    ep = 3;
  }
  if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0) {
    if (errno != ENOSYS) child_fail(ep, ST_CLOSE, 0);
    for (int fd = 4; fd < 65536; fd++) close(fd); /* kernels before 5.9 */
  }
  environ = sp.envp; /* execvpe searches the PATH of environ */
  execvpe(sp.argv[0], sp.argv, sp.envp);
  child_fail(ep, ST_EXEC, 0);
}

static void parse_spec(const uint8_t *p, size_t n) {
  memset(&sp, 0, sizeof sp);
  size_t off = 0, used = 0;
  while (off < n) {
    if (n - off < 5) protocol_error("RUN: truncated record header");
    uint8_t tag = p[off];
    uint32_t len;
    memcpy(&len, p + off + 1, 4);
    off += 5;
    if (len > n - off) protocol_error("RUN: record %u is longer than the payload", tag);
    const uint8_t *v = p + off;
    off += len;
    switch (tag) {
    case T_ARG: case T_ENV: case T_CWD: case T_HOSTNAME: {
      if (len > MAX_STR) protocol_error("RUN: string of %u bytes in record %u (limit %u)", len, tag, MAX_STR);
      if (memchr(v, 0, len)) protocol_error("RUN: NUL byte in string record %u", tag);
      char *s = arena + used;
      memcpy(s, v, len);
      s[len] = 0;
      used += (size_t)len + 1;
      if (tag == T_ARG || tag == T_ENV) {
        if (sp.argc + sp.envc >= MAX_STRV) protocol_error("RUN: more than %u ARG and ENV records", MAX_STRV);
        if (tag == T_ARG) sp.argv[sp.argc++] = s; else sp.envp[sp.envc++] = s;
      } else if (tag == T_CWD) {
        if (sp.cwd) protocol_error("RUN: CWD given twice");
        sp.cwd = s;
      } else {
        if (sp.hostname) protocol_error("RUN: HOSTNAME given twice");
        sp.hostname = s;
      }
      break;
    }
    case T_UID: case T_GID: case T_UMASK: case T_GROUP: {
      if (len != 4) protocol_error("RUN: record %u has %u bytes (want 4)", tag, len);
      uint32_t x;
      memcpy(&x, v, 4);
      int *has = tag == T_UID ? &sp.has_uid : tag == T_GID ? &sp.has_gid : tag == T_UMASK ? &sp.has_umask : NULL;
      if (has && *has) protocol_error("RUN: record %u given twice", tag);
      if (has) *has = 1;
      if (tag == T_UID) sp.uid = x;
      else if (tag == T_GID) sp.gid = x;
      else if (tag == T_UMASK) sp.umask_v = x;
      else {
        if (sp.ngroups >= MAX_GROUPS) protocol_error("RUN: more than %u GROUP records", MAX_GROUPS);
        sp.groups[sp.ngroups++] = x;
      }
      break;
    }
    case T_TERMINAL:
      if (len != 4) protocol_error("RUN: TERMINAL record has %u bytes (want 4)", len);
      if (sp.has_tty) protocol_error("RUN: TERMINAL given twice");
      sp.has_tty = 1;
      memcpy(&sp.rows, v, 2);
      memcpy(&sp.cols, v + 2, 2);
      break;
    case T_BIND: case T_MOUNT: {
      if (len < 4) protocol_error("RUN: record %u has %u bytes (want at least 4)", tag, len);
      if (sp.nmounts >= MAX_MOUNTS) protocol_error("RUN: more than %u BIND and MOUNT records", MAX_MOUNTS);
      uint8_t flags = v[0];
      uint32_t allowed = BIND_RO | BIND_NOSUID | BIND_NODEV | BIND_NOEXEC | (tag == T_BIND ? BIND_FILE : 0);
      if (flags & ~allowed) protocol_error("RUN: record %u flags %#x", tag, flags);
      const uint8_t *d;
      uint32_t dlen, datalen = 0;
      uint8_t kind = M_BIND;
      if (tag == T_BIND) {
        uint8_t tlen = v[1];
        if (tlen == 0 || tlen > MAX_TAG || (uint32_t)tlen + 2 >= len) protocol_error("RUN: BIND tag of %u bytes in a record of %u", tlen, len);
        for (uint8_t i = 0; i < tlen; i++) {
          uint8_t ch = v[2 + i];
          if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
            protocol_error("RUN: BIND tag byte %#x", ch);
        }
        memcpy(sp.mounts[sp.nmounts].tag, v + 2, tlen);
        sp.mounts[sp.nmounts].tag[tlen] = 0;
        d = v + 2 + tlen;
        dlen = len - 2 - tlen;
      } else {
        if (v[1] != 1 && v[1] != 2) protocol_error("RUN: MOUNT file system %u", v[1]);
        kind = v[1] == 1 ? M_TMPFS : M_MQUEUE;
        d = v + 2;
        const uint8_t *nul = memchr(d, 0, len - 2);
        if (!nul) protocol_error("RUN: MOUNT without a NUL after its destination");
        dlen = (uint32_t)(nul - d);
        datalen = len - 2 - dlen - 1;
        if (datalen > MAX_MOUNT_DATA || memchr(nul + 1, 0, datalen)) protocol_error("RUN: MOUNT options are not a string of at most %u bytes", MAX_MOUNT_DATA);
      }
      if (dlen == 0 || dlen > MAX_PATH_LEN || d[0] != '/' || memchr(d, 0, dlen)) protocol_error("RUN: record %u destination is not an absolute path of at most %u bytes", tag, MAX_PATH_LEN);
      char *s = arena + used;
      memcpy(s, d, dlen);
      s[dlen] = 0;
      used += (size_t)dlen + 1;
      if (strcmp(s, "/..") == 0 || strncmp(s, "/../", 4) == 0 || strstr(s, "/../") || (dlen >= 3 && strcmp(s + dlen - 3, "/..") == 0))
        protocol_error("RUN: record %u destination %s has a \"..\"", tag, s);
      char *data = arena + used;
      if (datalen) memcpy(data, d + dlen + 1, datalen); /* MOUNT's options follow the NUL */
      data[datalen] = 0;
      used += (size_t)datalen + 1;
      sp.mounts[sp.nmounts].kind = kind;
      sp.mounts[sp.nmounts].flags = flags;
      sp.mounts[sp.nmounts].dest = s;
      sp.mounts[sp.nmounts].data = data;
      sp.nmounts++;
      break;
    }
    case T_READONLY_ROOT:
      if (len != 0) protocol_error("RUN: READONLY_ROOT record has %u bytes (want 0)", len);
      if (sp.ro_root) protocol_error("RUN: READONLY_ROOT given twice");
      sp.ro_root = 1;
      break;
    case T_RLIMIT:
      if (len != 20) protocol_error("RUN: RLIMIT record has %u bytes (want 20)", len);
      if (sp.nrl >= MAX_RLIMITS) protocol_error("RUN: more than %u RLIMIT records", MAX_RLIMITS);
      memcpy(&sp.rl_res[sp.nrl], v, 4);
      memcpy(&sp.rl_soft[sp.nrl], v + 4, 8);
      memcpy(&sp.rl_hard[sp.nrl], v + 12, 8);
      sp.nrl++;
      break;
    default:
      protocol_error("RUN: unknown record tag %u", tag);
    }
  }
  if (sp.argc == 0) protocol_error("RUN: no ARG record");
  sp.argv[sp.argc] = NULL;
  sp.envp[sp.envc] = NULL;
}

/* Makes mount `i` of the spec (see the header); 0, or -1 with errno set and `what` naming the step. */
static int mount_one(uint32_t i, const char **what) {
  const char *dest = sp.mounts[i].dest, *tag = sp.mounts[i].tag;
  uint8_t f = sp.mounts[i].flags;
  unsigned long fl = ((f & BIND_RO) ? MS_RDONLY : 0) | ((f & BIND_NOSUID) ? MS_NOSUID : 0) |
                     ((f & BIND_NODEV) ? MS_NODEV : 0) | ((f & BIND_NOEXEC) ? MS_NOEXEC : 0);
  *what = "mount point";
  if (sp.mounts[i].kind != M_BIND) {
    if (make_dirs_follow(dest) != 0) return -1;
    *what = sp.mounts[i].kind == M_TMPFS ? "tmpfs" : "mqueue";
    int r = mount(*what, dest, *what, fl, sp.mounts[i].kind == M_TMPFS ? sp.mounts[i].data : NULL);
    /* the guest's one mqueue instance is there already (a spec that names it twice) */
    return r != 0 && errno == EBUSY && sp.mounts[i].kind == M_MQUEUE ? 0 : r;
  }
  char dev[256];
  long deadline = now_ms() + WAIT_MS;
  *what = "share";
  while (find_sysfs("/sys/bus/virtio/drivers/9pnet_virtio", "mount_tag", tag, dev, sizeof dev) != 0) {
    if (now_ms() > deadline) { errno = ENODEV; return -1; }
    nap();
  }
  if (!(f & BIND_FILE)) {
    *what = "mount point";
    if (make_dirs_follow(dest) != 0) return -1;
    *what = "9p";
    return mount(tag, dest, "9p", fl, NINEP_OPTS);
  }
  char parent[MAX_PATH_LEN + 1], src[sizeof BIND_STAGING + 8];
  snprintf(parent, sizeof parent, "%s", dest);
  char *slash = strrchr(parent, '/');
  *what = "mount point";
  if (slash && slash != parent) { *slash = 0; if (make_dirs_follow(parent) != 0) return -1; }
  *what = "create";
  int fd = open(dest, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
  if (fd < 0 && errno != EISDIR) return -1;
  if (fd >= 0) close_fd(&fd);
  *what = "staging";
  if (mkdir(BIND_STAGING, 0700) != 0 && errno != EEXIST) return -1;
  if (mount(tag, BIND_STAGING, "9p", fl & MS_RDONLY, NINEP_OPTS) != 0) return -1;
  snprintf(src, sizeof src, "%s/file", BIND_STAGING);
  *what = "bind";
  int r = mount(src, dest, NULL, MS_BIND, NULL);
  if (r == 0 && fl) r = mount(NULL, dest, NULL, MS_REMOUNT | MS_BIND | fl, NULL);
  int e = errno;
  /* the bind holds the share's superblock: the staging mount is not needed any more */
  if (umount2(BIND_STAGING, MNT_DETACH) != 0) say("umount %s: %s", BIND_STAGING, strerror(errno));
  rmdir(BIND_STAGING);
  errno = e;
  return r;
}

/* Makes the spec's mounts and its read-only root before stream 0 starts; 0, or -1 after FAILURE and EXIT 126. */
static int mount_all(uint32_t stream) {
  if (sp.nmounts == 0 && !sp.ro_root) return 0;
  if (stream != 0 || test_mode) {
    failure(stream, "run: mounts are for stream 0 of a VM only");
    send_u32('W', stream, 126);
    return -1;
  }
  for (uint32_t i = 0; i < sp.nmounts; i++) {
    const char *what = "";
    if (mount_one(i, &what) != 0) {
      if (sp.mounts[i].kind == M_BIND) failure(stream, "mount %s (share %s): %s: %s", sp.mounts[i].dest, sp.mounts[i].tag, what, strerror(errno));
      else failure(stream, "mount %s (%s): %s", sp.mounts[i].dest, what, strerror(errno));
      send_u32('W', stream, 126);
      return -1;
    }
  }
  if (sp.ro_root && mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0) {
    failure(stream, "remount / read-only: %s", strerror(errno));
    send_u32('W', stream, 126);
    return -1;
  }
  return 0;
}

static void run(uint32_t stream, const uint8_t *payload, size_t n) {
  parse_spec(payload, n);
  if (stream == STREAM_ALL) { failure(stream, "run: stream %u is reserved", stream); return; }
  if (find_stream(stream)) { failure(stream, "run: stream %u is already running", stream); return; }
  if (mount_all(stream) != 0) return;
  struct proc *p = NULL;
  for (int i = 0; i < MAX_PROCS && !p; i++) if (!procs[i].used) p = &procs[i];
  if (!p) { failure(stream, "run: too many processes (%d)", MAX_PROCS); return; }

  int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, ep[2] = { -1, -1 };
  int tty = sp.has_tty;
  char slave[64] = "";
  if (pipe2(ep, O_CLOEXEC) != 0) { failure(stream, "run: pipe: %s", strerror(errno)); goto fail; }
  if (tty) {
    /* the agent keeps the master: out[0] reads the terminal, in[1] (a duplicate) writes it */
    struct winsize ws = { .ws_row = sp.rows, .ws_col = sp.cols };
    out[0] = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (out[0] < 0 || grantpt(out[0]) != 0 || unlockpt(out[0]) != 0 || ptsname_r(out[0], slave, sizeof slave) != 0 ||
        ioctl(out[0], TIOCSWINSZ, &ws) != 0 || (in[1] = fcntl(out[0], F_DUPFD_CLOEXEC, 3)) < 0) {
      failure(stream, "run: terminal: %s", strerror(errno));
      goto fail;
    }
  } else if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    failure(stream, "run: pipe: %s", strerror(errno));
    goto fail;
  }
  if (fcntl(in[1], F_SETFL, O_NONBLOCK) != 0 || fcntl(out[0], F_SETFL, O_NONBLOCK) != 0 ||
      (err[0] >= 0 && fcntl(err[0], F_SETFL, O_NONBLOCK) != 0)) {
    failure(stream, "run: fcntl: %s", strerror(errno));
    goto fail;
  }
  /* the container's pid namespace, made once before stream 0's fork: stream 0 is its pid 1 and
   * every later RUN (an exec) forks into it (the agent's pid_for_children); an exec before the
   * container process started runs in the agent's namespaces */
  if (!test_mode && !cont_pidns && stream == 0) {
    if (unshare(CLONE_NEWPID) != 0) { failure(stream, "run: pid namespace: %s", strerror(errno)); goto fail; }
    cont_pidns = 1;
  }
  pid_t pid = fork();
  if (pid < 0) { failure(stream, "run: fork: %s", strerror(errno)); goto fail; }
  if (pid == 0) child(stream, tty ? slave : NULL, in[0], out[1], err[1], ep[1]);
  close_fd(&in[0]); close_fd(&out[1]); close_fd(&err[1]); close_fd(&ep[1]);

  int32_t r[3];
  ssize_t got;
  do got = read(ep[0], r, sizeof r); while (got < 0 && errno == EINTR);
  if (got < 0) say("run: error pipe: %s", strerror(errno)); /* the child runs; treat as started */
  close_fd(&ep[0]);
  if (got == (ssize_t)sizeof r) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    int step = r[0] >= 0 && r[0] <= ST_NAMESPACE ? r[0] : ST_EXEC;
    const char *msg = strerror(r[1]);
    if (step == ST_EXEC) failure(stream, "exec %s: %s", sp.argv[0], msg);
    else if (step == ST_CHDIR) failure(stream, "chdir %s: %s", sp.cwd ? sp.cwd : "/", msg);
    else if (step == ST_SETUID || step == ST_SETGID || step == ST_RLIMIT)
      failure(stream, "%s %u: %s", step_name[step], (uint32_t)r[2], msg);
    else failure(stream, "%s: %s", step_name[step], msg);
    send_u32('W', stream, r[1] == ENOENT ? 127 : 126);
    goto fail;
  }
  if (stream == 0 && !test_mode && cont_mntns < 0) {
    /* it has exec'd (the error pipe closed): its mount namespace is the container's */
    char ns[64];
    snprintf(ns, sizeof ns, "/proc/%d/ns/mnt", (int)pid);
    cont_mntns = open(ns, O_RDONLY | O_CLOEXEC);
    if (cont_mntns < 0) say("open %s: %s (execs run in the agent's mounts)", ns, strerror(errno));
  }
  p->used = 1; p->stream = stream; p->pid = pid;
  p->in = in[1]; p->out = out[0]; p->err = err[0]; p->tty = tty;
  p->q = NULL; p->qoff = p->qlen = p->qcap = 0; p->eof_pending = 0;
  send_u32('S', stream, (uint32_t)pid);
  return;
fail:
  close_fd(&in[0]); close_fd(&in[1]); close_fd(&out[0]); close_fd(&out[1]);
  close_fd(&err[0]); close_fd(&err[1]); close_fd(&ep[0]); close_fd(&ep[1]);
}

static void do_kill(uint32_t stream, uint32_t sig) {
  if (stream == STREAM_ALL) {
    if (test_mode) {
      for (int i = 0; i < MAX_PROCS; i++)
        if (procs[i].used && kill(procs[i].pid, (int)sig) != 0 && errno != ESRCH)
          failure(stream, "kill %d %u: %s", (int)procs[i].pid, sig, strerror(errno));
    } else if (kill(-1, (int)sig) != 0 && errno != ESRCH) {
      failure(stream, "kill -1 %u: %s", sig, strerror(errno));
    }
    return;
  }
  struct proc *p = find_stream(stream);
  if (!p) { failure(stream, "kill: stream %u is not running", stream); return; }
  if (kill(p->pid, (int)sig) != 0) failure(stream, "kill %d %u: %s", (int)p->pid, sig, strerror(errno));
}

static void ps(uint32_t stream) {
  static char dents[32768];
  int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) { failure(stream, "ps: /proc: %s", strerror(errno)); return; }
  uint8_t *out = tx + HDR;
  size_t n = 0;
  for (;;) {
    ssize_t got = getdents64(fd, dents, sizeof dents);
    if (got < 0) { int e = errno; close_fd(&fd); failure(stream, "ps: /proc: %s", strerror(e)); return; }
    if (got == 0) break;
    for (ssize_t off = 0; off < got;) {
      struct dirent64 *d = (struct dirent64 *)(dents + off);
      off += d->d_reclen;
      char *end;
      if (d->d_name[0] < '1' || d->d_name[0] > '9') continue;
      unsigned long pid = strtoul(d->d_name, &end, 10);
      if (*end || pid > 0xffffffffUL || n + 4 > MAX_PAYLOAD) continue;
      uint32_t v = (uint32_t)pid;
      memcpy(out + n, &v, 4);
      n += 4;
    }
  }
  close_fd(&fd);
  send_frame('L', stream, out, n);
}

/* RESIZE: sets the window size of the stream's terminal (the kernel signals its foreground group). */
static void resize(uint32_t stream, const uint8_t *p) {
  struct proc *pr = find_stream(stream);
  if (!pr || !pr->tty || pr->out < 0) { failure(stream, "resize: stream %u has no terminal", stream); return; }
  struct winsize ws;
  memset(&ws, 0, sizeof ws);
  memcpy(&ws.ws_row, p, 2);
  memcpy(&ws.ws_col, p + 2, 2);
  if (ioctl(pr->out, TIOCSWINSZ, &ws) != 0) failure(stream, "resize: %s", strerror(errno));
}

/* ---------- name relay ----------
 * A loopback nameserver in the container's resolv.conf (Docker's embedded DNS at 127.0.0.11)
 * is a service of the pod's network namespace on the host, while the guest's loopback is the
 * VM's own. For each moat.dns=ADDR the agent listens on ADDR port 53, UDP and TCP, and sends
 * every query to the host as NAME_QUERY; the host asks ADDR:53 in the pod's namespace and
 * answers with NAME_ANSWER, which goes back to the client (UDP: to its address; TCP: with the
 * two-byte length, one query at a time per connection, in order). An empty answer drops a UDP
 * query and closes a TCP connection. At most DNS_PENDING UDP queries wait (the oldest is
 * forgotten) and DNS_CONNS TCP clients are served (more are closed at once); a TCP client
 * without a query at the host that makes no progress (sends nothing, reads nothing) for
 * DNS_IDLE_MS is closed, so that idle connections cannot hold every slot. */
#define DNS_PENDING 64u
#define DNS_CONNS 16
#define DNS_MSG_MAX 65535u
#define DNS_HEADER 12u
#define DNS_IDLE_MS 10000              /* a TCP client with no query out is closed after this long without progress */
static int dns_udp[MAX_DNS] = { -1, -1, -1 }, dns_tcp[MAX_DNS] = { -1, -1, -1 };
static uint32_t dns_next_id;
static struct dns_wait {               /* a UDP query waiting for its answer */
  int used;
  uint32_t id;
  uint8_t server;
  struct sockaddr_storage from;
  socklen_t fromlen;
} dns_wait[DNS_PENDING];
static struct dns_conn {               /* a TCP client */
  int fd;                              /* -1: free */
  uint8_t server;
  int waiting;                         /* a query of it is with the host */
  uint32_t id;                         /* that query's */
  size_t inlen, outlen, outoff;        /* bytes read not yet sent on; the answer, and how much is written */
  long active;                         /* now_ms() of its last progress: accepted, read, written */
  uint8_t in[2 + DNS_MSG_MAX], out[2 + DNS_MSG_MAX];
} dns_conn[DNS_CONNS];
static long dns_idle_ms = DNS_IDLE_MS;

/* Fills `ss` with ADDR (IPv4 or IPv6) port dns_port; 0, or -1 if ADDR is neither. */
static int dns_sockaddr(const char *addr, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET; v4->sin_port = htons((uint16_t)dns_port); *len = sizeof *v4;
    return 0;
  }
  if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6; v6->sin6_port = htons((uint16_t)dns_port); *len = sizeof *v6;
    return 0;
  }
  return -1;
}

/* Opens the listeners (after net_up: lo is up). A listener that cannot be made is reported to
 * the host and left out; the container then finds nothing at that address, as with no relay. */
static void dns_listen(void) {
  for (int i = 0; i < DNS_CONNS; i++) dns_conn[i].fd = -1;
  for (int i = 0; i < n_dns; i++) {
    struct sockaddr_storage ss;
    socklen_t sl;
    if (dns_sockaddr(opt_dns[i], &ss, &sl) != 0) boot_fail("moat.dns=%s: not an IPv4 or IPv6 address", opt_dns[i]);
    int u = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int t = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    const char *step = "socket";
    if (u >= 0 && t >= 0) {
      step = "bind";
      if (setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 && bind(u, (struct sockaddr *)&ss, sl) == 0 &&
          bind(t, (struct sockaddr *)&ss, sl) == 0) {
        step = "listen";
        if (listen(t, DNS_CONNS) == 0) { dns_udp[i] = u; dns_tcp[i] = t; continue; }
      }
    }
    failure(STREAM_ALL, "name relay: %s port %u: %s: %s", opt_dns[i], dns_port, step, strerror(errno));
    close_fd(&u);
    close_fd(&t);
  }
}

/* Sends the query built at tx + HDR + 6 (`n` bytes) as NAME_QUERY. */
static void dns_forward(uint32_t id, int server, int tcp, size_t n) {
  uint8_t *p = tx + HDR;
  memcpy(p, &id, 4);
  p[4] = (uint8_t)server;
  p[5] = (uint8_t)tcp;
  send_frame('N', STREAM_ALL, p, 6 + n);
}

static void dns_udp_in(int server) {
  struct dns_wait w = { .used = 1, .server = (uint8_t)server, .fromlen = sizeof w.from };
  ssize_t n = recvfrom(dns_udp[server], tx + HDR + 6, DNS_MSG_MAX, 0, (struct sockaddr *)&w.from, &w.fromlen);
  if (n < (ssize_t)DNS_HEADER) return; /* EAGAIN, an error, or not a DNS message */
  w.id = dns_next_id++;
  dns_wait[w.id % DNS_PENDING] = w; /* forgets the query 64 before, if it is still waiting */
  dns_forward(w.id, server, 0, (size_t)n);
}

static void dns_close(struct dns_conn *c) {
  close_fd(&c->fd);
  c->waiting = 0;
  c->inlen = c->outlen = c->outoff = 0;
}

/* Sends the connection's next complete query on, if it has one and none is with the host. */
static void dns_tcp_next(struct dns_conn *c) {
  if (c->fd < 0 || c->waiting || c->outoff < c->outlen || c->inlen < 2) return;
  size_t n = (size_t)c->in[0] << 8 | c->in[1];
  if (n < DNS_HEADER) { dns_close(c); return; }
  if (c->inlen < 2 + n) return;
  memcpy(tx + HDR + 6, c->in + 2, n);
  c->inlen -= 2 + n;
  memmove(c->in, c->in + 2 + n, c->inlen);
  c->id = dns_next_id++;
  c->waiting = 1;
  dns_forward(c->id, c->server, 1, n);
}

static void dns_tcp_read(struct dns_conn *c) {
  ssize_t n = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) { dns_close(c); return; } /* EOF (an answer on its way is dropped) or an error */
  c->inlen += (size_t)n;
  c->active = now_ms();
  dns_tcp_next(c);
}

static void dns_tcp_write(struct dns_conn *c) {
  ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) { dns_close(c); return; }
  c->outoff += (size_t)n;
  c->active = now_ms();
  if (c->outoff == c->outlen) { c->outoff = c->outlen = 0; dns_tcp_next(c); }
}

static void dns_accept(int server) {
  int fd = accept4(dns_tcp[server], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) return;
  for (int i = 0; i < DNS_CONNS; i++) {
    struct dns_conn *c = &dns_conn[i];
    if (c->fd >= 0) continue;
    c->fd = fd; c->server = (uint8_t)server; c->waiting = 0; c->inlen = c->outlen = c->outoff = 0;
    c->active = now_ms();
    return;
  }
  close_fd(&fd); /* DNS_CONNS clients already */
}

/* NAME_ANSWER: u32 id, then the DNS message (or nothing: the query failed). */
static void dns_answer(const uint8_t *p, size_t n) {
  uint32_t id;
  memcpy(&id, p, 4);
  p += 4; n -= 4;
  struct dns_wait *w = &dns_wait[id % DNS_PENDING];
  if (w->used && w->id == id) {
    w->used = 0;
    if (n > 0 && dns_udp[w->server] >= 0) sendto(dns_udp[w->server], p, n, MSG_DONTWAIT, (struct sockaddr *)&w->from, w->fromlen);
    return;
  }
  for (int i = 0; i < DNS_CONNS; i++) {
    struct dns_conn *c = &dns_conn[i];
    if (c->fd < 0 || !c->waiting || c->id != id) continue;
    c->waiting = 0;
    c->active = now_ms();
    if (n == 0) { dns_close(c); return; }
    c->out[0] = (uint8_t)(n >> 8); c->out[1] = (uint8_t)n;
    memcpy(c->out + 2, p, n);
    c->outlen = 2 + n; c->outoff = 0;
    dns_tcp_write(c);
    return;
  }
  /* the client went, or its UDP slot was reused: nobody waits for this answer */
}

/* Checks a frame's header as soon as its first 5 bytes are in: nothing malformed is buffered. */
static void check_header(uint32_t len, uint8_t type) {
  if (len < 5) protocol_error("frame length %u is below 5", len);
  if (len > MAX_LEN) protocol_error("frame length %u is above %u", len, MAX_LEN);
  uint32_t n = len - 5;
  switch (type) {
  case 'R': if (n == 0) protocol_error("RUN without a process spec"); break;
  case 'I': break;
  case 'K': if (n != 4) protocol_error("KILL payload of %u bytes (want 4)", n); break;
  case 'P': if (n != 0) protocol_error("PS payload of %u bytes (want 0)", n); break;
  case 'Q': if (n != 0) protocol_error("SHUTDOWN payload of %u bytes (want 0)", n); break;
  case 'T': if (n != 4) protocol_error("RESIZE payload of %u bytes (want 4)", n); break;
  case 'A': if (n < 4 || n > 4 + DNS_MSG_MAX) protocol_error("NAME_ANSWER payload of %u bytes (want 4 to %u)", n, 4 + DNS_MSG_MAX); break;
  default:
    if (type >= 0x20 && type < 0x7f) protocol_error("unknown frame type 0x%02x ('%c')", type, type);
    protocol_error("unknown frame type 0x%02x", type);
  }
}

static void dispatch(uint8_t type, uint32_t stream, const uint8_t *p, size_t n) {
  switch (type) {
  case 'R': run(stream, p, n); break;
  case 'I': { struct proc *pr = find_stream(stream); if (pr) stdin_data(pr, p, n); break; }
  case 'K': { uint32_t sig; memcpy(&sig, p, 4); do_kill(stream, sig); break; }
  case 'P': ps(stream); break;
  case 'T': resize(stream, p); break;
  case 'A': dns_answer(p, n); break;
  case 'Q': power_off(0);
  default: break; /* check_header admitted nothing else */
  }
}

static void read_ctl(void) {
  ssize_t n;
  do n = read(ctl, rx + rx_len, sizeof rx - rx_len); while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return;
  if (n < 0) { say("control channel: read: %s", strerror(errno)); power_off(1); }
  if (n == 0) { say("control channel closed"); power_off(0); }
  rx_len += (size_t)n;
  size_t off = 0;
  while (rx_len - off >= 5) {
    uint32_t len;
    memcpy(&len, rx + off, 4);
    check_header(len, rx[off + 4]);
    if (rx_len - off < 4 + (size_t)len) break;
    uint32_t stream;
    memcpy(&stream, rx + off + 5, 4);
    dispatch(rx[off + 4], stream, rx + off + HDR, len - 5);
    off += 4 + (size_t)len;
  }
  if (off > 0) { memmove(rx, rx + off, rx_len - off); rx_len -= off; }
}

/* Closes the TCP clients idle for dns_idle_ms; returns the ms until the next one would be (-1: none). */
static int dns_expire(void) {
  long now = now_ms(), next = -1;
  for (int i = 0; i < DNS_CONNS; i++) {
    struct dns_conn *c = &dns_conn[i];
    if (c->fd < 0 || c->waiting) continue;
    long left = c->active + dns_idle_ms - now;
    if (left <= 0) { dns_close(c); continue; }
    if (next < 0 || left < next) next = left;
  }
  return (int)next;
}

/* ---------- main loop ---------- */

static void serve(void) {
  enum { W_OUT, W_ERR, W_IN, W_DNS_UDP, W_DNS_TCP, W_DNS_CONN };
  static struct pollfd pf[2 + 3 * MAX_PROCS + 2 * MAX_DNS + DNS_CONNS];
  static struct { struct proc *p; int which, i; } ref[2 + 3 * MAX_PROCS + 2 * MAX_DNS + DNS_CONNS];
  for (;;) {
    int n = 0, timeout = n_dns > 0 ? dns_expire() : -1; /* before the fds are listed: it closes some */
    pf[n++] = (struct pollfd){ ctl, POLLIN, 0 };
    pf[n++] = (struct pollfd){ sigfd, POLLIN, 0 };
    for (int i = 0; i < MAX_PROCS; i++) {
      struct proc *p = &procs[i];
      if (!p->used) continue;
      if (p->out >= 0) { ref[n].p = p; ref[n].which = W_OUT; pf[n++] = (struct pollfd){ p->out, POLLIN, 0 }; }
      if (p->err >= 0) { ref[n].p = p; ref[n].which = W_ERR; pf[n++] = (struct pollfd){ p->err, POLLIN, 0 }; }
      if (p->in >= 0 && p->qoff < p->qlen) { ref[n].p = p; ref[n].which = W_IN; pf[n++] = (struct pollfd){ p->in, POLLOUT, 0 }; }
    }
    for (int i = 0; i < n_dns; i++) {
      if (dns_udp[i] >= 0) { ref[n].which = W_DNS_UDP; ref[n].i = i; pf[n++] = (struct pollfd){ dns_udp[i], POLLIN, 0 }; }
      if (dns_tcp[i] >= 0) { ref[n].which = W_DNS_TCP; ref[n].i = i; pf[n++] = (struct pollfd){ dns_tcp[i], POLLIN, 0 }; }
    }
    for (int i = 0; i < DNS_CONNS && n_dns > 0; i++) {
      struct dns_conn *c = &dns_conn[i];
      if (c->fd < 0) continue;
      short ev = c->outoff < c->outlen ? POLLOUT : c->waiting ? 0 : POLLIN;
      ref[n].which = W_DNS_CONN; ref[n].i = i; pf[n++] = (struct pollfd){ c->fd, ev, 0 };
    }
    if (poll(pf, (nfds_t)n, timeout) < 0) {
      if (errno == EINTR) continue;
      say("poll: %s", strerror(errno));
      power_off(1);
    }
    /* pipes and the name relay first (they never free a slot), then exits, then the host's orders */
    for (int i = 2; i < n; i++) {
      if (!pf[i].revents) continue;
      struct proc *p = ref[i].p;
      switch (ref[i].which) {
      case W_OUT: if (p->out >= 0) pump(p, &p->out, 'O'); break;
      case W_ERR: if (p->err >= 0) pump(p, &p->err, 'D'); break;
      case W_IN: if (p->in >= 0) stdin_flush(p); break;
      case W_DNS_UDP: dns_udp_in(ref[i].i); break;
      case W_DNS_TCP: dns_accept(ref[i].i); break;
      case W_DNS_CONN: {
        struct dns_conn *c = &dns_conn[ref[i].i];
        if (c->fd < 0) break;
        if (c->outoff < c->outlen) dns_tcp_write(c);
        else if (!c->waiting) dns_tcp_read(c);
        else if (pf[i].revents & (POLLERR | POLLHUP)) dns_close(c);
        break;
      }
      }
    }
    if (pf[1].revents) reap();
    if (pf[0].revents) read_ctl();
  }
}

int main(int argc, char **argv) {
  if (argc >= 3 && argc % 2 == 1 && strcmp(argv[1], "--test-fd") == 0 && getpid() != 1) {
    char *end;
    long fd = strtol(argv[2], &end, 10);
    if (*end || fd < 3 || fd > 65535 || fcntl((int)fd, F_SETFD, FD_CLOEXEC) != 0) {
      say("--test-fd %s: not an open fd >= 3", argv[2]);
      return 2;
    }
    for (int i = 3; i + 1 < argc; i += 2) {
      if (strcmp(argv[i], "--dns") == 0 && n_dns < MAX_DNS) opt_dns[n_dns++] = argv[i + 1];
      else if (strcmp(argv[i], "--dns-port") == 0 && (dns_port = (unsigned)strtoul(argv[i + 1], &end, 10)) > 0 && dns_port < 65536 && !*end) {}
      else if (strcmp(argv[i], "--dns-idle-ms") == 0 && (dns_idle_ms = strtol(argv[i + 1], &end, 10)) > 0 && !*end) {}
      else { say("%s %s: expected --dns ADDR (at most %d), --dns-port PORT or --dns-idle-ms MS", argv[i], argv[i + 1], MAX_DNS); return 2; }
    }
    test_mode = 1;
    ctl = (int)fd;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) say("child subreaper: %s", strerror(errno));
  } else if (getpid() != 1) {
    say("runs as /init (PID 1) of a Moat microVM; it powers the machine off when done");
    return 2;
  }

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0) { say("sigprocmask: %s", strerror(errno)); return 1; }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) { say("SIGPIPE: %s", strerror(errno)); return 1; }
  for (int i = 0; i < MAX_PROCS; i++) procs[i].out = procs[i].err = procs[i].in = -1;

  if (!test_mode) {
    mount_early();
    std_fds();
    load_modules();
    read_cmdline();
    open_ctl();
    mount_root();
    switch_root();
    net_up();
  } else {
    std_fds();
  }
  dns_listen();
  sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) boot_fail("signalfd: %s", strerror(errno));

  struct utsname u;
  if (uname(&u) != 0) snprintf(u.release, sizeof u.release, "unknown");
  send_frame('H', 0, u.release, strlen(u.release));
  serve();
}
