/**
 * A warm standby's rehearsal. Before a standby sentry waits for its sandbox, a thread of its own
 * runs under a seccomp filter that sends a few file calls to a listener, and the serving thread
 * answers them with the real loop and handlers, over the host root. The calls are read-only, on
 * fixed paths of the sentry's own choosing (its bundle, "/", a missing path, /proc/self/exe).
 * V8 then has compiled and optimized the code a sandbox's first calls run (its exec check, the
 * loader's stats and opens, the /proc/self/exe readlink) before a sandbox waits on it: cold,
 * each of those took 1-3 ms in the first sandbox's start-up.
 *
 * Only a standby rehearses, before it is confined (the rehearsal thread's filter is gone by then:
 * the listener hangs up only once the thread has exited), and never with a sandbox of its own.
 */
import * as k from '../../sys/kernel.js';
import { compileSeccomp } from '../../seccomp/index.js';

/** The calls the rehearsal thread's filter sends to the serving thread. */
export const REHEARSED_CALLS = ['newfstatat', 'openat', 'readlinkat', 'faccessat2'];

/** How many times the rehearsal thread makes its round of calls. */
export const REHEARSAL_ROUNDS = 150;

/** What the rehearsal thread is started with. */
export interface RehearsalData {
  role: 'sentry-rehearsal';
  /** [0]: 1 once [1] holds the listener fd (or -errno); the serving thread waits on it. */
  sync: SharedArrayBuffer;
  /** A regular file to stat and open (the sentry bundle). */
  file: string;
  rounds: number;
}

const PR_SET_NO_NEW_PRIVS = 38;

/**
 * Runs in the rehearsal thread: installs the filter on this thread only, hands its listener to
 * the serving thread through `sync`, then makes the calls (each one waits for the serving
 * thread's answer). Returns when done; the thread's exit ends the rehearsal.
 */
export function rehearsalThread(data: RehearsalData): void {
  const flag = new Int32Array(data.sync);
  let listener = -1;
  try {
    // no_new_privs is a thread's own attribute: this sets it for this thread alone
    if (k.prctl(PR_SET_NO_NEW_PRIVS, 1) === 0) {
      const compiled = compileSeccomp({
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64'],
        // OCI wants a socket to send a listener to; this thread hands it over through `sync`
        listenerPath: '/dev/null',
        syscalls: [{ names: REHEARSED_CALLS, action: 'SCMP_ACT_NOTIFY' }],
      });
      listener = k.seccompFilter(compiled.flags, compiled.filter); // this thread only: no TSYNC
    }
  } catch {
    listener = -1; // no rehearsal; the standby serves all the same
  } finally {
    Atomics.store(flag, 1, listener);
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  }
  if (listener < 0) return;
  const st = Buffer.alloc(144);
  const link = Buffer.alloc(4096);
  const file = k.cpath(data.file);
  const paths = [file, k.cpath('/'), k.cpath('/nonexistent-moat-rehearsal/x')];
  const self = k.cpath('/proc/self/exe');
  for (let i = 0; i < data.rounds; i++) {
    for (const p of paths) k.fstatat(k.AT.FDCWD, p, st, 0);
    k.fstatat(k.AT.FDCWD, file, st, k.AT.SYMLINK_NOFOLLOW);
    k.faccessat2(k.AT.FDCWD, file, 4 /* R_OK */, 0);
    const fd = k.openat(k.AT.FDCWD, file, k.O.RDONLY | k.O.CLOEXEC);
    if (fd >= 0) k.close(fd);
    k.readlinkat(k.AT.FDCWD, self, link);
  }
}
