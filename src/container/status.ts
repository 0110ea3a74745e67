/**
 * The container state machine of the OCI runtime spec. Every operation asks a guard first, and
 * an illegal transition throws InvalidStateError naming the container and its status.
 */
import { InvalidStateError } from '../errors.js';

/** The statuses of the OCI runtime spec, plus `paused` as runc reports it. */
export type Status = 'creating' | 'created' | 'running' | 'paused' | 'stopped';

/** The operations whose legality depends on the status. */
export type Operation = 'start' | 'kill' | 'delete' | 'forceDelete' | 'pause' | 'resume' | 'exec' | 'update' | 'checkpoint';

const allowed: Record<Operation, readonly Status[]> = {
  start: ['created'],
  kill: ['created', 'running', 'paused'],
  // runc deletes a created container without --force (it was never started)
  delete: ['created', 'stopped'],
  forceDelete: ['creating', 'created', 'running', 'paused', 'stopped'],
  pause: ['running'],
  resume: ['paused'],
  exec: ['created', 'running'],
  update: ['created', 'running', 'paused'],
  // containerd pauses a task before it checkpoints it
  checkpoint: ['running', 'paused'],
};

/** True if `op` may be applied to a container in `status`. */
export function can(op: Operation, status: Status): boolean {
  return allowed[op].includes(status);
}

/** Throws InvalidStateError unless `op` may be applied to a container in `status`. */
export function check(id: string, op: Operation, status: Status): void {
  if (!can(op, status)) throw new InvalidStateError(id, op === 'forceDelete' ? 'delete' : op, status);
}
