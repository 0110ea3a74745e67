/**
 * The error a cgroup operation raises when the kernel refuses it: it names the file (or
 * directory) and the errno, so "cannot write 16777216 to .../memory.limit_in_bytes: EBUSY" tells
 * the user what went wrong and where.
 */
import { MoatError } from '../errors.js';

/** A cgroup file or directory could not be read, written, created or removed. */
export class CgroupError extends MoatError {
  constructor(
    message: string,
    /** The cgroup file or directory the operation was on, if there was one. */
    readonly path?: string,
    /** The errno name (EBUSY, EINVAL, ...) of the failure, if it came from a syscall. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** The errno name of a Node.js system error, or undefined for anything else. */
export function errnoCode(err: unknown): string | undefined {
  if (err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string') {
    return (err as NodeJS.ErrnoException).code;
  }
  return undefined;
}
