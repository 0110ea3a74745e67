/**
 * Translation of OCI mount options into mount(2) flags, propagation flags and filesystem data,
 * as runc reads them.
 */
import { ConfigError } from '../../errors.js';

/** mount(2) flags (from <sys/mount.h>). */
export const MS = {
  RDONLY: 0x1,
  NOSUID: 0x2,
  NODEV: 0x4,
  NOEXEC: 0x8,
  SYNCHRONOUS: 0x10,
  REMOUNT: 0x20,
  MANDLOCK: 0x40,
  DIRSYNC: 0x80,
  NOSYMFOLLOW: 0x100,
  NOATIME: 0x400,
  NODIRATIME: 0x800,
  BIND: 0x1000,
  REC: 0x4000,
  SILENT: 0x8000,
  UNBINDABLE: 0x20000,
  PRIVATE: 0x40000,
  SLAVE: 0x80000,
  SHARED: 0x100000,
  RELATIME: 0x200000,
  STRICTATIME: 0x1000000,
  LAZYTIME: 0x2000000,
} as const;

const setFlags: Record<string, number> = {
  ro: MS.RDONLY,
  nosuid: MS.NOSUID,
  nodev: MS.NODEV,
  noexec: MS.NOEXEC,
  sync: MS.SYNCHRONOUS,
  remount: MS.REMOUNT,
  mand: MS.MANDLOCK,
  dirsync: MS.DIRSYNC,
  nosymfollow: MS.NOSYMFOLLOW,
  noatime: MS.NOATIME,
  nodiratime: MS.NODIRATIME,
  bind: MS.BIND,
  rbind: MS.BIND | MS.REC,
  relatime: MS.RELATIME,
  strictatime: MS.STRICTATIME,
  lazytime: MS.LAZYTIME,
  silent: MS.SILENT,
};

const clearFlags: Record<string, number> = {
  rw: MS.RDONLY,
  suid: MS.NOSUID,
  dev: MS.NODEV,
  exec: MS.NOEXEC,
  async: MS.SYNCHRONOUS,
  nomand: MS.MANDLOCK,
  atime: MS.NOATIME,
  diratime: MS.NODIRATIME,
  norelatime: MS.RELATIME,
  nostrictatime: MS.STRICTATIME,
  symfollow: MS.NOSYMFOLLOW,
  nolazytime: MS.LAZYTIME,
  loud: MS.SILENT,
  defaults: 0,
};

/** Propagation options by name. */
export const PROPAGATION: Record<string, number> = {
  private: MS.PRIVATE,
  rprivate: MS.PRIVATE | MS.REC,
  shared: MS.SHARED,
  rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE,
  rslave: MS.SLAVE | MS.REC,
  unbindable: MS.UNBINDABLE,
  runbindable: MS.UNBINDABLE | MS.REC,
};

/** A mount's options, split the way mount(2) wants them. */
export interface ParsedOptions {
  flags: number;
  propagation: number;
  data: string[];
}

/** Splits OCI mount options into flags, propagation and data; `path` names the field for errors. */
export function parseMountOptions(options: readonly string[], path: string): ParsedOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  options.forEach((opt, i) => {
    // own keys only: `in` would also match Object.prototype names ("constructor") and drop them
    if (Object.hasOwn(setFlags, opt)) flags |= setFlags[opt]!;
    else if (Object.hasOwn(clearFlags, opt)) flags &= ~clearFlags[opt]!;
    else if (Object.hasOwn(PROPAGATION, opt)) propagation = PROPAGATION[opt]!;
    else if (opt === 'idmap' || opt === 'ridmap') {
      throw new ConfigError(`${path}[${i}]`, `mount option "${opt}" (id-mapped mounts) is not supported yet`);
    } else if (opt === 'tmpcopyup') {
      // runc copies the image's content into a new tmpfs; Moat does not yet, so refuse it loudly
      throw new ConfigError(`${path}[${i}]`, 'mount option "tmpcopyup" is not supported yet');
    } else if (opt.length > 0) data.push(opt);
  });
  return { flags, propagation, data };
}
