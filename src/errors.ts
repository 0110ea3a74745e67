/**
 * Typed errors of Moat. Every error says what was wrong and where: the config field path, the
 * container id, or the operation that failed. The CLI prints `message` and exits with `exitCode`.
 */

/** Base class of every error Moat raises on purpose; anything else is a bug. */
export class MoatError extends Error {
  /** Process exit status the CLI uses when this error ends a command. */
  readonly exitCode: number = 1;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A field of config.json (or of an inline process spec) is invalid; `path` is its JSON path. */
export class ConfigError extends MoatError {
  constructor(readonly path: string, readonly problem: string) {
    super(`invalid config: ${path || '(root)'}: ${problem}`);
  }
}

/** A command-line flag or argument is invalid. */
export class UsageError extends MoatError {}

/** No container with this id exists under the state root. */
export class ContainerNotFoundError extends MoatError {
  constructor(readonly id: string) {
    super(`container "${id}" does not exist`);
  }
}

/** A container with this id already exists under the state root. */
export class ContainerExistsError extends MoatError {
  constructor(readonly id: string) {
    super(`container "${id}" already exists`);
  }
}

/** A container's state file cannot be parsed (a crash or a hand edit broke it). */
export class StateCorruptError extends MoatError {
  constructor(readonly id: string, readonly file: string) {
    super(`container "${id}": state file ${file} is corrupt`);
  }
}

/** An operation is not allowed in the container's current status. */
export class InvalidStateError extends MoatError {
  constructor(readonly id: string, readonly operation: string, readonly status: string) {
    super(`cannot ${operation} container "${id}": it is ${status}`);
  }
}

/** The native pre-exec stage reported a failure while setting up the container. */
export class StageError extends MoatError {
  constructor(
    readonly id: string,
    readonly op: string,
    readonly detail: string,
    readonly errno: number,
  ) {
    super(`container "${id}": ${op}: ${detail}`);
  }
}

/** A hook program failed, timed out, or could not be started. */
export class HookError extends MoatError {
  constructor(readonly id: string, readonly hook: string, detail: string) {
    super(`container "${id}": ${hook} hook: ${detail}`);
  }
}

/** The host lacks something this operation needs (a kernel feature, a binary, a privilege). */
export class HostError extends MoatError {}
