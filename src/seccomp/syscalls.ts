/**
 * System call numbers of the three x86 ABIs a Linux x86_64 kernel runs, and the architecture
 * constants a seccomp filter checks.
 *
 * The tables below are transcriptions of the kernel's `arch/x86/entry/syscalls/syscall_64.tbl`
 * and `syscall_32.tbl` as of Linux 6.19 (last additions: `listns`, 470; `uprobe`, 336). The
 * x86_64 table keeps the kernel's ABI column: `common` entries exist for both x86_64 and x32,
 * `64` entries for x86_64 only, and `x32` entries (the legacy 512..547 range) for x32 only. An
 * x32 system call number is its table number with bit 30 (`X32_SYSCALL_BIT`) set.
 *
 * Only the three x86 ABIs are described: on an x86_64 host the kernel never reports any other
 * `seccomp_data.arch`, so filter code for a foreign architecture could never run (see
 * `OCI_ARCHITECTURES`).
 */

/** `AUDIT_ARCH_X86_64` (EM_X86_64 | 64-bit | little-endian): `seccomp_data.arch` of x86_64 and x32 tasks. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;

/** `AUDIT_ARCH_I386` (EM_386 | little-endian): `seccomp_data.arch` of i386 (ia32 compat) tasks. */
export const AUDIT_ARCH_I386 = 0x40000003;

/** Bit 30 of the system call number: set by x32 tasks, which otherwise report `AUDIT_ARCH_X86_64`. */
export const X32_SYSCALL_BIT = 0x40000000;

/** One of the x86 system call ABIs a filter can cover on an x86_64 host. */
export type SeccompArch = 'x86_64' | 'x86' | 'x32';

/**
 * Every architecture name the OCI runtime spec defines for `linux.seccomp.architectures` (plus
 * LOONGARCH64, which runc accepts), mapped to the ABI it adds to the filter on an x86_64 host, or
 * `null` for a foreign architecture.
 *
 * runc hands foreign architectures to libseccomp, which adds a branch for their AUDIT_ARCH value;
 * a kernel on x86_64 never reports those values, so the branch is dead code and leaving it out
 * changes no decision. The x86_64 ABI is always in the filter (libseccomp's native architecture),
 * listed or not.
 */
export const OCI_ARCHITECTURES: Readonly<Record<string, SeccompArch | null>> = {
  SCMP_ARCH_X86_64: 'x86_64',
  SCMP_ARCH_X86: 'x86',
  SCMP_ARCH_X32: 'x32',
  SCMP_ARCH_ARM: null,
  SCMP_ARCH_AARCH64: null,
  SCMP_ARCH_MIPS: null,
  SCMP_ARCH_MIPS64: null,
  SCMP_ARCH_MIPS64N32: null,
  SCMP_ARCH_MIPSEL: null,
  SCMP_ARCH_MIPSEL64: null,
  SCMP_ARCH_MIPSEL64N32: null,
  SCMP_ARCH_PPC: null,
  SCMP_ARCH_PPC64: null,
  SCMP_ARCH_PPC64LE: null,
  SCMP_ARCH_S390: null,
  SCMP_ARCH_S390X: null,
  SCMP_ARCH_PARISC: null,
  SCMP_ARCH_PARISC64: null,
  SCMP_ARCH_RISCV64: null,
  SCMP_ARCH_LOONGARCH64: null,
};

// <number> <abi> <name>, from syscall_64.tbl.
const TABLE_64 = `
0   common read
1   common write
2   common open
3   common close
4   common stat
5   common fstat
6   common lstat
7   common poll
8   common lseek
9   common mmap
10  common mprotect
11  common munmap
12  common brk
13  64     rt_sigaction
14  common rt_sigprocmask
15  64     rt_sigreturn
16  64     ioctl
17  common pread64
18  common pwrite64
19  64     readv
20  64     writev
21  common access
22  common pipe
23  common select
24  common sched_yield
25  common mremap
26  common msync
27  common mincore
28  common madvise
29  common shmget
30  common shmat
31  common shmctl
32  common dup
33  common dup2
34  common pause
35  common nanosleep
36  common getitimer
37  common alarm
38  common setitimer
39  common getpid
40  common sendfile
41  common socket
42  common connect
43  common accept
44  common sendto
45  64     recvfrom
46  64     sendmsg
47  64     recvmsg
48  common shutdown
49  common bind
50  common listen
51  common getsockname
52  common getpeername
53  common socketpair
54  64     setsockopt
55  64     getsockopt
56  common clone
57  common fork
58  common vfork
59  64     execve
60  common exit
61  common wait4
62  common kill
63  common uname
64  common semget
65  common semop
66  common semctl
67  common shmdt
68  common msgget
69  common msgsnd
70  common msgrcv
71  common msgctl
72  common fcntl
73  common flock
74  common fsync
75  common fdatasync
76  common truncate
77  common ftruncate
78  common getdents
79  common getcwd
80  common chdir
81  common fchdir
82  common rename
83  common mkdir
84  common rmdir
85  common creat
86  common link
87  common unlink
88  common symlink
89  common readlink
90  common chmod
91  common fchmod
92  common chown
93  common fchown
94  common lchown
95  common umask
96  common gettimeofday
97  common getrlimit
98  common getrusage
99  common sysinfo
100 common times
101 64     ptrace
102 common getuid
103 common syslog
104 common getgid
105 common setuid
106 common setgid
107 common geteuid
108 common getegid
109 common setpgid
110 common getppid
111 common getpgrp
112 common setsid
113 common setreuid
114 common setregid
115 common getgroups
116 common setgroups
117 common setresuid
118 common getresuid
119 common setresgid
120 common getresgid
121 common getpgid
122 common setfsuid
123 common setfsgid
124 common getsid
125 common capget
126 common capset
127 64     rt_sigpending
128 64     rt_sigtimedwait
129 64     rt_sigqueueinfo
130 common rt_sigsuspend
131 64     sigaltstack
132 common utime
133 common mknod
134 64     uselib
135 common personality
136 common ustat
137 common statfs
138 common fstatfs
139 common sysfs
140 common getpriority
141 common setpriority
142 common sched_setparam
143 common sched_getparam
144 common sched_setscheduler
145 common sched_getscheduler
146 common sched_get_priority_max
147 common sched_get_priority_min
148 common sched_rr_get_interval
149 common mlock
150 common munlock
151 common mlockall
152 common munlockall
153 common vhangup
154 common modify_ldt
155 common pivot_root
156 64     _sysctl
157 common prctl
158 common arch_prctl
159 common adjtimex
160 common setrlimit
161 common chroot
162 common sync
163 common acct
164 common settimeofday
165 common mount
166 common umount2
167 common swapon
168 common swapoff
169 common reboot
170 common sethostname
171 common setdomainname
172 common iopl
173 common ioperm
174 64     create_module
175 common init_module
176 common delete_module
177 64     get_kernel_syms
178 64     query_module
179 common quotactl
180 64     nfsservctl
181 common getpmsg
182 common putpmsg
183 common afs_syscall
184 common tuxcall
185 common security
186 common gettid
187 common readahead
188 common setxattr
189 common lsetxattr
190 common fsetxattr
191 common getxattr
192 common lgetxattr
193 common fgetxattr
194 common listxattr
195 common llistxattr
196 common flistxattr
197 common removexattr
198 common lremovexattr
199 common fremovexattr
200 common tkill
201 common time
202 common futex
203 common sched_setaffinity
204 common sched_getaffinity
205 64     set_thread_area
206 64     io_setup
207 common io_destroy
208 common io_getevents
209 64     io_submit
210 common io_cancel
211 64     get_thread_area
212 common lookup_dcookie
213 common epoll_create
214 64     epoll_ctl_old
215 64     epoll_wait_old
216 common remap_file_pages
217 common getdents64
218 common set_tid_address
219 common restart_syscall
220 common semtimedop
221 common fadvise64
222 64     timer_create
223 common timer_settime
224 common timer_gettime
225 common timer_getoverrun
226 common timer_delete
227 common clock_settime
228 common clock_gettime
229 common clock_getres
230 common clock_nanosleep
231 common exit_group
232 common epoll_wait
233 common epoll_ctl
234 common tgkill
235 common utimes
236 64     vserver
237 common mbind
238 common set_mempolicy
239 common get_mempolicy
240 common mq_open
241 common mq_unlink
242 common mq_timedsend
243 common mq_timedreceive
244 64     mq_notify
245 common mq_getsetattr
246 64     kexec_load
247 64     waitid
248 common add_key
249 common request_key
250 common keyctl
251 common ioprio_set
252 common ioprio_get
253 common inotify_init
254 common inotify_add_watch
255 common inotify_rm_watch
256 common migrate_pages
257 common openat
258 common mkdirat
259 common mknodat
260 common fchownat
261 common futimesat
262 common newfstatat
263 common unlinkat
264 common renameat
265 common linkat
266 common symlinkat
267 common readlinkat
268 common fchmodat
269 common faccessat
270 common pselect6
271 common ppoll
272 common unshare
273 64     set_robust_list
274 64     get_robust_list
275 common splice
276 common tee
277 common sync_file_range
278 64     vmsplice
279 64     move_pages
280 common utimensat
281 common epoll_pwait
282 common signalfd
283 common timerfd_create
284 common eventfd
285 common fallocate
286 common timerfd_settime
287 common timerfd_gettime
288 common accept4
289 common signalfd4
290 common eventfd2
291 common epoll_create1
292 common dup3
293 common pipe2
294 common inotify_init1
295 64     preadv
296 64     pwritev
297 64     rt_tgsigqueueinfo
298 common perf_event_open
299 64     recvmmsg
300 common fanotify_init
301 common fanotify_mark
302 common prlimit64
303 common name_to_handle_at
304 common open_by_handle_at
305 common clock_adjtime
306 common syncfs
307 64     sendmmsg
308 common setns
309 common getcpu
310 64     process_vm_readv
311 64     process_vm_writev
312 common kcmp
313 common finit_module
314 common sched_setattr
315 common sched_getattr
316 common renameat2
317 common seccomp
318 common getrandom
319 common memfd_create
320 common kexec_file_load
321 common bpf
322 64     execveat
323 common userfaultfd
324 common membarrier
325 common mlock2
326 common copy_file_range
327 64     preadv2
328 64     pwritev2
329 common pkey_mprotect
330 common pkey_alloc
331 common pkey_free
332 common statx
333 common io_pgetevents
334 common rseq
335 common uretprobe
336 common uprobe
424 common pidfd_send_signal
425 common io_uring_setup
426 common io_uring_enter
427 common io_uring_register
428 common open_tree
429 common move_mount
430 common fsopen
431 common fsconfig
432 common fsmount
433 common fspick
434 common pidfd_open
435 common clone3
436 common close_range
437 common openat2
438 common pidfd_getfd
439 common faccessat2
440 common process_madvise
441 common epoll_pwait2
442 common mount_setattr
443 common quotactl_fd
444 common landlock_create_ruleset
445 common landlock_add_rule
446 common landlock_restrict_self
447 common memfd_secret
448 common process_mrelease
449 common futex_waitv
450 common set_mempolicy_home_node
451 common cachestat
452 common fchmodat2
453 64     map_shadow_stack
454 common futex_wake
455 common futex_wait
456 common futex_requeue
457 common statmount
458 common listmount
459 common lsm_get_self_attr
460 common lsm_set_self_attr
461 common lsm_list_modules
462 common mseal
463 common setxattrat
464 common getxattrat
465 common listxattrat
466 common removexattrat
467 common open_tree_attr
468 common file_getattr
469 common file_setattr
470 common listns
512 x32    rt_sigaction
513 x32    rt_sigreturn
514 x32    ioctl
515 x32    readv
516 x32    writev
517 x32    recvfrom
518 x32    sendmsg
519 x32    recvmsg
520 x32    execve
521 x32    ptrace
522 x32    rt_sigpending
523 x32    rt_sigtimedwait
524 x32    rt_sigqueueinfo
525 x32    sigaltstack
526 x32    timer_create
527 x32    mq_notify
528 x32    kexec_load
529 x32    waitid
530 x32    set_robust_list
531 x32    get_robust_list
532 x32    vmsplice
533 x32    move_pages
534 x32    preadv
535 x32    pwritev
536 x32    rt_tgsigqueueinfo
537 x32    recvmmsg
538 x32    sendmmsg
539 x32    process_vm_readv
540 x32    process_vm_writev
541 x32    setsockopt
542 x32    getsockopt
543 x32    io_setup
544 x32    io_submit
545 x32    execveat
546 x32    preadv2
547 x32    pwritev2`;

// <number> <name>, from syscall_32.tbl (every entry has the i386 ABI).
const TABLE_32 = `
0   restart_syscall
1   exit
2   fork
3   read
4   write
5   open
6   close
7   waitpid
8   creat
9   link
10  unlink
11  execve
12  chdir
13  time
14  mknod
15  chmod
16  lchown
17  break
18  oldstat
19  lseek
20  getpid
21  mount
22  umount
23  setuid
24  getuid
25  stime
26  ptrace
27  alarm
28  oldfstat
29  pause
30  utime
31  stty
32  gtty
33  access
34  nice
35  ftime
36  sync
37  kill
38  rename
39  mkdir
40  rmdir
41  dup
42  pipe
43  times
44  prof
45  brk
46  setgid
47  getgid
48  signal
49  geteuid
50  getegid
51  acct
52  umount2
53  lock
54  ioctl
55  fcntl
56  mpx
57  setpgid
58  ulimit
59  oldolduname
60  umask
61  chroot
62  ustat
63  dup2
64  getppid
65  getpgrp
66  setsid
67  sigaction
68  sgetmask
69  ssetmask
70  setreuid
71  setregid
72  sigsuspend
73  sigpending
74  sethostname
75  setrlimit
76  getrlimit
77  getrusage
78  gettimeofday
79  settimeofday
80  getgroups
81  setgroups
82  select
83  symlink
84  oldlstat
85  readlink
86  uselib
87  swapon
88  reboot
89  readdir
90  mmap
91  munmap
92  truncate
93  ftruncate
94  fchmod
95  fchown
96  getpriority
97  setpriority
98  profil
99  statfs
100 fstatfs
101 ioperm
102 socketcall
103 syslog
104 setitimer
105 getitimer
106 stat
107 lstat
108 fstat
109 olduname
110 iopl
111 vhangup
112 idle
113 vm86old
114 wait4
115 swapoff
116 sysinfo
117 ipc
118 fsync
119 sigreturn
120 clone
121 setdomainname
122 uname
123 modify_ldt
124 adjtimex
125 mprotect
126 sigprocmask
127 create_module
128 init_module
129 delete_module
130 get_kernel_syms
131 quotactl
132 getpgid
133 fchdir
134 bdflush
135 sysfs
136 personality
137 afs_syscall
138 setfsuid
139 setfsgid
140 _llseek
141 getdents
142 _newselect
143 flock
144 msync
145 readv
146 writev
147 getsid
148 fdatasync
149 _sysctl
150 mlock
151 munlock
152 mlockall
153 munlockall
154 sched_setparam
155 sched_getparam
156 sched_setscheduler
157 sched_getscheduler
158 sched_yield
159 sched_get_priority_max
160 sched_get_priority_min
161 sched_rr_get_interval
162 nanosleep
163 mremap
164 setresuid
165 getresuid
166 vm86
167 query_module
168 poll
169 nfsservctl
170 setresgid
171 getresgid
172 prctl
173 rt_sigreturn
174 rt_sigaction
175 rt_sigprocmask
176 rt_sigpending
177 rt_sigtimedwait
178 rt_sigqueueinfo
179 rt_sigsuspend
180 pread64
181 pwrite64
182 chown
183 getcwd
184 capget
185 capset
186 sigaltstack
187 sendfile
188 getpmsg
189 putpmsg
190 vfork
191 ugetrlimit
192 mmap2
193 truncate64
194 ftruncate64
195 stat64
196 lstat64
197 fstat64
198 lchown32
199 getuid32
200 getgid32
201 geteuid32
202 getegid32
203 setreuid32
204 setregid32
205 getgroups32
206 setgroups32
207 fchown32
208 setresuid32
209 getresuid32
210 setresgid32
211 getresgid32
212 chown32
213 setuid32
214 setgid32
215 setfsuid32
216 setfsgid32
217 pivot_root
218 mincore
219 madvise
220 getdents64
221 fcntl64
224 gettid
225 readahead
226 setxattr
227 lsetxattr
228 fsetxattr
229 getxattr
230 lgetxattr
231 fgetxattr
232 listxattr
233 llistxattr
234 flistxattr
235 removexattr
236 lremovexattr
237 fremovexattr
238 tkill
239 sendfile64
240 futex
241 sched_setaffinity
242 sched_getaffinity
243 set_thread_area
244 get_thread_area
245 io_setup
246 io_destroy
247 io_getevents
248 io_submit
249 io_cancel
250 fadvise64
252 exit_group
253 lookup_dcookie
254 epoll_create
255 epoll_ctl
256 epoll_wait
257 remap_file_pages
258 set_tid_address
259 timer_create
260 timer_settime
261 timer_gettime
262 timer_getoverrun
263 timer_delete
264 clock_settime
265 clock_gettime
266 clock_getres
267 clock_nanosleep
268 statfs64
269 fstatfs64
270 tgkill
271 utimes
272 fadvise64_64
273 vserver
274 mbind
275 get_mempolicy
276 set_mempolicy
277 mq_open
278 mq_unlink
279 mq_timedsend
280 mq_timedreceive
281 mq_notify
282 mq_getsetattr
283 kexec_load
284 waitid
286 add_key
287 request_key
288 keyctl
289 ioprio_set
290 ioprio_get
291 inotify_init
292 inotify_add_watch
293 inotify_rm_watch
294 migrate_pages
295 openat
296 mkdirat
297 mknodat
298 fchownat
299 futimesat
300 fstatat64
301 unlinkat
302 renameat
303 linkat
304 symlinkat
305 readlinkat
306 fchmodat
307 faccessat
308 pselect6
309 ppoll
310 unshare
311 set_robust_list
312 get_robust_list
313 splice
314 sync_file_range
315 tee
316 vmsplice
317 move_pages
318 getcpu
319 epoll_pwait
320 utimensat
321 signalfd
322 timerfd_create
323 eventfd
324 fallocate
325 timerfd_settime
326 timerfd_gettime
327 signalfd4
328 eventfd2
329 epoll_create1
330 dup3
331 pipe2
332 inotify_init1
333 preadv
334 pwritev
335 rt_tgsigqueueinfo
336 perf_event_open
337 recvmmsg
338 fanotify_init
339 fanotify_mark
340 prlimit64
341 name_to_handle_at
342 open_by_handle_at
343 clock_adjtime
344 syncfs
345 sendmmsg
346 setns
347 process_vm_readv
348 process_vm_writev
349 kcmp
350 finit_module
351 sched_setattr
352 sched_getattr
353 renameat2
354 seccomp
355 getrandom
356 memfd_create
357 bpf
358 execveat
359 socket
360 socketpair
361 bind
362 connect
363 listen
364 accept4
365 getsockopt
366 setsockopt
367 getsockname
368 getpeername
369 sendto
370 sendmsg
371 recvfrom
372 recvmsg
373 shutdown
374 userfaultfd
375 membarrier
376 mlock2
377 copy_file_range
378 preadv2
379 pwritev2
380 pkey_mprotect
381 pkey_alloc
382 pkey_free
383 statx
384 arch_prctl
385 io_pgetevents
386 rseq
393 semget
394 semctl
395 shmget
396 shmctl
397 shmat
398 shmdt
399 msgget
400 msgsnd
401 msgrcv
402 msgctl
403 clock_gettime64
404 clock_settime64
405 clock_adjtime64
406 clock_getres_time64
407 clock_nanosleep_time64
408 timer_gettime64
409 timer_settime64
410 timerfd_gettime64
411 timerfd_settime64
412 utimensat_time64
413 pselect6_time64
414 ppoll_time64
416 io_pgetevents_time64
417 recvmmsg_time64
418 mq_timedsend_time64
419 mq_timedreceive_time64
420 semtimedop_time64
421 rt_sigtimedwait_time64
422 futex_time64
423 sched_rr_get_interval_time64
424 pidfd_send_signal
425 io_uring_setup
426 io_uring_enter
427 io_uring_register
428 open_tree
429 move_mount
430 fsopen
431 fsconfig
432 fsmount
433 fspick
434 pidfd_open
435 clone3
436 close_range
437 openat2
438 pidfd_getfd
439 faccessat2
440 process_madvise
441 epoll_pwait2
442 mount_setattr
443 quotactl_fd
444 landlock_create_ruleset
445 landlock_add_rule
446 landlock_restrict_self
447 memfd_secret
448 process_mrelease
449 futex_waitv
450 set_mempolicy_home_node
451 cachestat
452 fchmodat2
453 map_shadow_stack
454 futex_wake
455 futex_wait
456 futex_requeue
457 statmount
458 listmount
459 lsm_get_self_attr
460 lsm_set_self_attr
461 lsm_list_modules
462 mseal
463 setxattrat
464 getxattrat
465 listxattrat
466 removexattrat
467 open_tree_attr
468 file_getattr
469 file_setattr
470 listns`;

type Tables = Record<SeccompArch, { byName: Map<string, number>; byNumber: Map<number, string> }>;
let tables: Tables | undefined;

/** Parses the tables above once, on first use. */
function load(): Tables {
  if (tables !== undefined) return tables;
  const make = () => ({ byName: new Map<string, number>(), byNumber: new Map<number, string>() });
  const t: Tables = { x86_64: make(), x86: make(), x32: make() };
  const add = (arch: SeccompArch, nr: number, name: string) => {
    t[arch].byName.set(name, nr);
    t[arch].byNumber.set(nr, name);
  };
  for (const line of TABLE_64.trim().split('\n')) {
    const [nr, abi, name] = line.trim().split(/\s+/);
    if (nr === undefined || abi === undefined || name === undefined) throw new Error(`bad syscall_64 line: ${line}`);
    if (abi !== 'x32') add('x86_64', Number(nr), name);
    if (abi !== '64') add('x32', (Number(nr) | X32_SYSCALL_BIT) >>> 0, name);
  }
  for (const line of TABLE_32.trim().split('\n')) {
    const [nr, name] = line.trim().split(/\s+/);
    if (nr === undefined || name === undefined) throw new Error(`bad syscall_32 line: ${line}`);
    add('x86', Number(nr), name);
  }
  tables = t;
  return t;
}

/** The number of system call `name` on `arch` (x32 numbers include `X32_SYSCALL_BIT`), or undefined if that ABI lacks it. */
export function syscallNumber(arch: SeccompArch, name: string): number | undefined {
  return load()[arch].byName.get(name);
}

/** The name of system call number `nr` on `arch`, or undefined if the number is unassigned. */
export function syscallName(arch: SeccompArch, nr: number): string | undefined {
  return load()[arch].byNumber.get(nr);
}

/** Every system call name `arch` has, in table order. */
export function syscallNames(arch: SeccompArch): string[] {
  return [...load()[arch].byName.keys()];
}

/** True if `name` is a system call of at least one of the x86 ABIs. */
export function isKnownSyscall(name: string): boolean {
  const t = load();
  return t.x86_64.byName.has(name) || t.x86.byName.has(name) || t.x32.byName.has(name);
}
