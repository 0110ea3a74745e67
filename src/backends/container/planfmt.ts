/**
 * Encoder of the plan that native/moat-init.c executes. The wire format and the meaning of each
 * tag are documented at the top of that file; the numbers here must match its `enum tag`.
 */

/** Record tags of the plan (see native/moat-init.c). */
export const Tag = {
  NS_UNSHARE: 1,
  NS_JOIN: 2,
  UID_MAP: 3,
  GID_MAP: 4,
  SETGROUPS_DENY: 5,
  MONITOR: 6,
  ROOT_PROPAGATION: 20,
  HOST_MKDIR: 21,
  HOST_MOUNT: 22,
  ROOTFS: 23,
  MOUNT: 24,
  MKNOD: 25,
  BIND_DEV: 26,
  SYMLINK: 27,
  SYNC_HOOKS: 28,
  HOOK: 29,
  PIVOT_ROOT: 30,
  MASK: 31,
  READONLY: 32,
  ROOT_READONLY: 33,
  SYSCTL: 34,
  HOSTNAME: 35,
  DOMAINNAME: 36,
  LOOPBACK_UP: 37,
  MKDIR: 38,
  ARGS: 40,
  ENV: 41,
  CWD: 42,
  USER: 43,
  CAPS: 44,
  RLIMIT: 45,
  NO_NEW_PRIVS: 46,
  CONSOLE: 47,
  SECCOMP: 48,
  PRESERVE_FDS: 49,
  EXEC_FIFO: 50,
  NEW_KEYRING: 51,
  OOM_SCORE_ADJ: 52,
  SETSID: 53,
  SECCOMP_LISTENER: 54,
  SENTRY_FILTER: 55,
  RESTORE_STOP: 56,
  RESTORE_TREE: 57,
  RESTORE_IMAGE: 58,
} as const;

/** One field of a record payload. */
export type Field =
  | { u32: number }
  | { u64: bigint }
  | { str: string }
  | { strv: readonly string[] }
  | { bytes: Uint8Array };

/** Builds a plan: records appended in the order moat-init must act on them. */
export class PlanWriter {
  private readonly chunks: Buffer[] = [];

  /** Appends one record. */
  add(tag: number, ...fields: Field[]): this {
    const parts: Buffer[] = [];
    for (const f of fields) {
      if ('u32' in f) {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(f.u32 >>> 0);
        parts.push(b);
      } else if ('u64' in f) {
        const b = Buffer.alloc(8);
        b.writeBigUInt64LE(BigInt.asUintN(64, f.u64));
        parts.push(b);
      } else if ('str' in f) {
        parts.push(str(f.str));
      } else if ('strv' in f) {
        const n = Buffer.alloc(4);
        n.writeUInt32LE(f.strv.length);
        parts.push(n, ...f.strv.map(str));
      } else {
        const n = Buffer.alloc(4);
        n.writeUInt32LE(f.bytes.length);
        parts.push(n, Buffer.from(f.bytes));
      }
    }
    const body = Buffer.concat(parts);
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(tag, 0);
    hdr.writeUInt32LE(body.length, 4);
    this.chunks.push(hdr, body);
    return this;
  }

  /** The encoded plan: header and records. */
  encode(): Buffer {
    const body = Buffer.concat(this.chunks);
    const hdr = Buffer.alloc(16);
    hdr.write('MOATPLAN', 0, 'latin1');
    hdr.writeUInt32LE(1, 8);
    hdr.writeUInt32LE(body.length, 12);
    return Buffer.concat([hdr, body]);
  }
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.includes(0)) throw new Error(`string contains a NUL byte: ${JSON.stringify(s)}`);
  const n = Buffer.alloc(4);
  n.writeUInt32LE(b.length);
  return Buffer.concat([n, b]);
}
