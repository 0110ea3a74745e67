/**
 * The bpf(2) calls the cgroup v2 device filter needs: load a BPF_PROG_TYPE_CGROUP_DEVICE program,
 * attach it to a cgroup directory, list and detach the programs already there. Node has no
 * binding for bpf(2), so this goes through koffi's `syscall()`, loaded on first use like
 * src/sys/libc.ts (which the lead may fold this into).
 *
 * bpf_attr is built by hand in koffi-allocated memory: its pointer fields are 64-bit addresses,
 * which need memory that does not move (koffi.alloc) rather than a Node Buffer.
 */
import { loadKoffi } from '../sys/koffi.js';
import { HostError } from '../errors.js';


/** The few koffi entry points used here (koffi ships types, but loading them statically costs start-up time). */
interface Koffi {
  load(name: string): { func(sig: string): (...args: unknown[]) => unknown };
  alloc(type: string, len: number): unknown;
  free(ptr: unknown): void;
  address(ptr: unknown): bigint;
  view(ptr: unknown, len: number): ArrayBuffer;
  errno(): number;
}

interface Bpf {
  koffi: Koffi;
  syscall: (...args: unknown[]) => unknown;
  strerror: (errnum: number) => string;
}

let bpf: Bpf | undefined;


function load(): Bpf {
  if (bpf) return bpf;
  const koffi = loadKoffi() as Koffi;
  const lib = koffi.load('libc.so.6');
  bpf = {
    koffi,
    syscall: lib.func('long syscall(long nr, ...)'),
    strerror: lib.func('const char *strerror(int errnum)') as (e: number) => string,
  };
  return bpf;
}

/** bpf(2) syscall numbers by architecture. */
const SYS_BPF: Record<string, number> = { x64: 321, arm64: 280, ia32: 357, arm: 386, riscv64: 280, ppc64: 361, s390x: 351 };

/** bpf(2) commands. */
const BPF_PROG_LOAD = 5;
const BPF_PROG_ATTACH = 8;
const BPF_PROG_DETACH = 9;
const BPF_PROG_GET_FD_BY_ID = 13;
const BPF_PROG_QUERY = 16;
/** bpf program type and attach type of a cgroup device filter. */
const BPF_PROG_TYPE_CGROUP_DEVICE = 15;
/** BPF attach type of a cgroup device filter. */
export const BPF_CGROUP_DEVICE = 6;
/** Attach flag: more than one program may sit on the cgroup (all of them must allow). */
export const BPF_F_ALLOW_MULTI = 2;

/** A bpf(2) failure: the command, what it was for, and errno. */
export class BpfError extends HostError {
  constructor(
    message: string,
    /** errno of the failed call. */
    readonly errno: number,
  ) {
    super(message);
  }
}

/** Copies `data` into fresh koffi memory; the caller frees it. */
function pin(b: Bpf, data: Buffer): unknown {
  const ptr = b.koffi.alloc('uint8_t', Math.max(data.length, 1));
  Buffer.from(b.koffi.view(ptr, data.length)).set(data);
  return ptr;
}

/** Runs bpf(cmd, attr) and returns its result, or throws BpfError. `extra` are freed afterwards. */
function call(cmd: number, attr: Buffer, what: string, extra: unknown[] = [], readBack?: (view: Buffer) => void): number {
  const b = load();
  const nr = SYS_BPF[process.arch];
  if (nr === undefined) throw new HostError(`bpf(2): unsupported architecture ${process.arch}`);
  const ptr = pin(b, attr);
  try {
    const ret = Number(b.syscall(nr, 'int', cmd, 'void *', ptr, 'unsigned int', attr.length));
    if (ret < 0) {
      const e = b.koffi.errno();
      throw new BpfError(`bpf: ${what}: ${b.strerror(e)}`, e);
    }
    readBack?.(Buffer.from(b.koffi.view(ptr, attr.length)));
    return ret;
  } finally {
    b.koffi.free(ptr);
    for (const p of extra) b.koffi.free(p);
  }
}

/**
 * Loads a cgroup device program (encoded eBPF instructions) and returns its fd. On a verifier
 * rejection the error carries the verifier's log.
 */
export function loadCgroupDeviceProgram(insns: Buffer, license = 'Apache'): number {
  const b = load();
  const code = pin(b, insns);
  const lic = pin(b, Buffer.from(`${license}\0`));
  const logSize = 64 * 1024;
  const log = b.koffi.alloc('uint8_t', logSize);
  Buffer.from(b.koffi.view(log, logSize)).fill(0);
  // union bpf_attr for BPF_PROG_LOAD: prog_type u32, insn_cnt u32, insns u64, license u64,
  // log_level u32, log_size u32, log_buf u64, kern_version u32, prog_flags u32, prog_name[16], ...
  const attr = Buffer.alloc(128);
  attr.writeUInt32LE(BPF_PROG_TYPE_CGROUP_DEVICE, 0);
  attr.writeUInt32LE(insns.length / 8, 4);
  attr.writeBigUInt64LE(b.koffi.address(code), 8);
  attr.writeBigUInt64LE(b.koffi.address(lic), 16);
  attr.writeUInt32LE(1, 24);
  attr.writeUInt32LE(logSize, 28);
  attr.writeBigUInt64LE(b.koffi.address(log), 32);
  attr.write('moat_devices', 48, 'latin1');
  try {
    return call(BPF_PROG_LOAD, attr, 'loading the device filter program', [code, lic]);
  } catch (err) {
    if (err instanceof BpfError) {
      const text = Buffer.from(b.koffi.view(log, logSize)).toString('utf8').replace(/\0[\s\S]*$/, '').trim();
      if (text !== '') throw new BpfError(`${err.message}; verifier log: ${text}`, err.errno);
    }
    throw err;
  } finally {
    b.koffi.free(log);
  }
}

/** Attaches program `progFd` to the cgroup directory open as `cgroupFd`. */
export function attachProgram(cgroupFd: number, progFd: number, attachType: number, flags: number): void {
  // target_fd u32, attach_bpf_fd u32, attach_type u32, attach_flags u32, replace_bpf_fd u32
  const attr = Buffer.alloc(24);
  attr.writeUInt32LE(cgroupFd, 0);
  attr.writeUInt32LE(progFd, 4);
  attr.writeUInt32LE(attachType, 8);
  attr.writeUInt32LE(flags, 12);
  call(BPF_PROG_ATTACH, attr, 'attaching the device filter program');
}

/** Detaches program `progFd` from the cgroup directory open as `cgroupFd`. */
export function detachProgram(cgroupFd: number, progFd: number, attachType: number): void {
  const attr = Buffer.alloc(24);
  attr.writeUInt32LE(cgroupFd, 0);
  attr.writeUInt32LE(progFd, 4);
  attr.writeUInt32LE(attachType, 8);
  call(BPF_PROG_DETACH, attr, 'detaching an old device filter program');
}

/** The ids of the programs of `attachType` attached directly to the cgroup open as `cgroupFd`. */
export function queryPrograms(cgroupFd: number, attachType: number): number[] {
  const b = load();
  for (let size = 64; ; size *= 4) {
    const ids = b.koffi.alloc('uint32_t', size);
    // target_fd u32, attach_type u32, query_flags u32, attach_flags u32, prog_ids u64, prog_cnt u32
    const attr = Buffer.alloc(40);
    attr.writeUInt32LE(cgroupFd, 0);
    attr.writeUInt32LE(attachType, 4);
    attr.writeBigUInt64LE(b.koffi.address(ids), 16);
    attr.writeUInt32LE(size, 24);
    let count = 0;
    try {
      call(BPF_PROG_QUERY, attr, 'listing the device filter programs of a cgroup', [], (v) => {
        count = v.readUInt32LE(24);
      });
      const view = Buffer.from(b.koffi.view(ids, size * 4));
      return Array.from({ length: Math.min(count, size) }, (_, i) => view.readUInt32LE(i * 4));
    } catch (err) {
      // ENOSPC: more programs than room; retry with a bigger array
      if (!(err instanceof BpfError && err.errno === 28 && size < 4096)) throw err;
    } finally {
      b.koffi.free(ids);
    }
  }
}

/** Opens the program with kernel id `id` and returns an fd for it. */
export function programFdById(id: number): number {
  const attr = Buffer.alloc(16);
  attr.writeUInt32LE(id, 0);
  return call(BPF_PROG_GET_FD_BY_ID, attr, `opening device filter program ${id}`);
}
