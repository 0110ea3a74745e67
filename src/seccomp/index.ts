/**
 * Seccomp for Moat: OCI `linux.seccomp` profiles compiled to classic BPF in TypeScript (no
 * libseccomp at run time), a BPF interpreter to check the result, and Moat's default profile.
 */
export {
  compileSeccomp,
  isSeccompDisabled,
  SECCOMP_FILTER_FLAG_LOG,
  SECCOMP_FILTER_FLAG_NEW_LISTENER,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_FILTER_FLAG_TSYNC_ESRCH,
  SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
  type CompiledSeccomp,
  type CompileSeccompOptions,
} from './compile.js';
export {
  BPF_MAXINSNS,
  describeAction,
  disassemble,
  runFilter,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SECCOMP_RET_KILL_THREAD,
  SECCOMP_RET_LOG,
  SECCOMP_RET_TRACE,
  SECCOMP_RET_TRAP,
  SECCOMP_RET_USER_NOTIF,
  type SeccompInput,
} from './bpf.js';
export { DEFAULT_ALLOWED_SYSCALLS, DEFAULT_DENIED_SYSCALLS, defaultSeccompProfile } from './default.js';
export {
  AUDIT_ARCH_I386,
  AUDIT_ARCH_X86_64,
  OCI_ARCHITECTURES,
  X32_SYSCALL_BIT,
  isKnownSyscall,
  syscallName,
  syscallNames,
  syscallNumber,
  type SeccompArch,
} from './syscalls.js';
