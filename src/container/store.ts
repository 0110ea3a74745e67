/**
 * The state store: one directory per container under --root holding state.json (written
 * atomically: temp file + rename) and the exec fifo. Every command that changes a container
 * holds an flock on its directory, so concurrent commands on one id cannot corrupt it.
 */
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, constants } from 'node:fs';
import { join } from 'node:path';
import { ContainerExistsError, ContainerNotFoundError, StateCorruptError, UsageError } from '../errors.js';
import type { Spec } from '../spec/schema.js';
import { flock, LOCK_EX, LOCK_NB, LOCK_UN } from '../sys/libc.js';
import type { Status } from './status.js';

/** What Moat records about one container; the OCI state is derived from it. */
export interface ContainerRecord {
  ociVersion: string;
  id: string;
  /** Absolute bundle directory ("" for the embedded default). */
  bundle: string;
  /** Absolute rootfs path on the host. */
  rootfs: string;
  /** RFC 3339 creation time. */
  created: string;
  owner: string;
  annotations: Record<string, string>;
  /** Host pid of the container init, 0 until known. */
  pid: number;
  /** Start time of `pid` from /proc/PID/stat, so a recycled pid is never mistaken for it. */
  pidStartTime: string;
  /** Backend name, e.g. "container". */
  isolation: string;
  /** Status as last recorded; `creating` until create finished. The live status is derived. */
  status: Extract<Status, 'creating' | 'created' | 'paused'>;
  /** The validated config the container was created from (hooks and exec read it later). */
  spec: Spec;
  /** Controller -> cgroup directory, as created (so delete works even if the layout changed). */
  cgroupPaths?: Record<string, string>;
  /** What the backend keeps about the container (e.g. the sentry's pid and socket). */
  backendState?: Record<string, string | number>;
}

const ID_RE = /^[\w+.-]+$/;

/** Throws UsageError unless `id` is a valid container id (runc's rule: [A-Za-z0-9_+.-], not . or ..). */
export function validateId(id: string): void {
  if (!id) throw new UsageError('container id cannot be empty');
  if (!ID_RE.test(id) || id === '.' || id === '..' || id.length > 1024) {
    throw new UsageError(`invalid container id "${id}": use letters, digits, "_", "+", "-" and "."`);
  }
}

/** A held lock on one container's directory; release it with `unlock()`. */
export interface ContainerLock {
  readonly id: string;
  readonly dir: string;
  unlock(): void;
}

/** The state directory tree under --root. */
export class StateStore {
  constructor(readonly root: string) {}

  /** Directory of container `id`. */
  dir(id: string): string {
    return join(this.root, id);
  }

  private ensureRoot(): void {
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
  }

  private lockDir(id: string, dir: string): ContainerLock {
    let fd: number;
    try {
      fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ContainerNotFoundError(id);
      throw e;
    }
    flock(fd, LOCK_EX, `container "${id}"`);
    // the directory may have been removed (a delete of a half-made container) or replaced while
    // this waited for the lock: a lock on a directory no longer at the path guards nothing
    let current: { dev: number; ino: number } | undefined;
    try {
      current = statSync(dir);
    } catch {
      // gone
    }
    const mine = fstatSync(fd);
    if (!current || current.ino !== mine.ino || current.dev !== mine.dev) {
      flock(fd, LOCK_UN, `container "${id}"`);
      closeSync(fd);
      throw new ContainerNotFoundError(id);
    }
    let held = true;
    return {
      id,
      dir,
      unlock() {
        if (!held) return;
        held = false;
        flock(fd, LOCK_UN, `container "${id}"`);
        closeSync(fd);
      },
    };
  }

  /** Creates the directory of a new container and locks it; fails if the id is taken. */
  createLocked(id: string): ContainerLock {
    validateId(id);
    this.ensureRoot();
    const dir = this.dir(id);
    try {
      mkdirSync(dir, { mode: 0o711 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new ContainerExistsError(id);
      throw e;
    }
    try {
      return this.lockDir(id, dir);
    } catch (e) {
      if (e instanceof ContainerNotFoundError) throw new ContainerExistsError(id); // a racing command on the same id took it
      throw e;
    }
  }

  /**
   * True if a `creating` record is stale: its creator died (the lock is free). A live creator
   * holds the lock for the whole of create.
   */
  creatorGone(id: string): boolean {
    let fd: number;
    try {
      fd = openSync(this.dir(id), constants.O_RDONLY | constants.O_DIRECTORY);
    } catch {
      return true;
    }
    try {
      const free = flock(fd, LOCK_EX | LOCK_NB, `container "${id}"`);
      if (free) flock(fd, LOCK_UN, `container "${id}"`);
      return free;
    } finally {
      closeSync(fd);
    }
  }

  /** Locks an existing container; the record is read after the lock is held. */
  lock(id: string): ContainerLock {
    validateId(id);
    return this.lockDir(id, this.dir(id));
  }

  /** Reads the record of `id`; throws ContainerNotFoundError if there is none. */
  read(id: string): ContainerRecord {
    validateId(id);
    let text: string;
    try {
      text = readFileSync(join(this.dir(id), 'state.json'), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ContainerNotFoundError(id);
      throw e;
    }
    try {
      return JSON.parse(text) as ContainerRecord;
    } catch {
      throw new StateCorruptError(id, join(this.dir(id), 'state.json'));
    }
  }

  /** Writes the record atomically (a reader sees the old or the new file, never half of one). */
  write(rec: ContainerRecord): void {
    const dir = this.dir(rec.id);
    const tmp = join(dir, `.state.json.${process.pid}`);
    writeFileSync(tmp, JSON.stringify(rec), { mode: 0o600 });
    renameSync(tmp, join(dir, 'state.json'));
  }

  /** Removes everything Moat keeps for `id`. */
  remove(id: string): void {
    rmSync(this.dir(id), { recursive: true, force: true });
  }

  /** Ids of all containers under the root, sorted. */
  ids(): string[] {
    try {
      return readdirSync(this.root, { withFileTypes: true })
        .filter((d) => d.isDirectory() && ID_RE.test(d.name))
        .map((d) => d.name)
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }
}
