/**
 * Parsing of config.json and of inline process specs. Every failure becomes a ConfigError naming
 * the JSON path of the first wrong field and saying in plain words what is wrong with it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as z from 'zod';
import { ConfigError } from '../errors.js';
import { formatPath } from './paths.js';
import { describeValue, processSchema, specSchema } from './schema.js';
import type { ProcessSpec, Spec } from './schema.js';

/** Validates a parsed config.json object and returns it typed; throws ConfigError on the first problem. */
export function parseSpec(input: unknown): Spec {
  return runSchema(specSchema, input);
}

/** Validates an inline process spec (`exec --process`); error paths start at its root, e.g. `args`. */
export function parseProcess(input: unknown): ProcessSpec {
  return runSchema(processSchema, input);
}

/** Reads and validates `<bundleDir>/config.json`; throws ConfigError if unreadable, not JSON, or invalid. */
export function loadSpec(bundleDir: string): Spec {
  const file = join(bundleDir, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `cannot read ${file}: ${readFailure(err)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('', `config.json is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  return parseSpec(json);
}

export { formatPath } from './paths.js';

/** Turns a read error into plain words: "no such file or directory (ENOENT)". */
function readFailure(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  // Node's messages look like "ENOENT: no such file or directory, open '/b/config.json'".
  const words = /^[A-Z]+: ([^,]+),/.exec(err.message)?.[1];
  return code !== undefined && words !== undefined ? `${words} (${code})` : err.message;
}

/** Runs a schema and turns its first issue into a ConfigError. */
function runSchema<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input, { error: issueMessage });
  if (result.success) return result.data;
  const first = result.error.issues[0];
  if (first === undefined) throw new ConfigError('', 'invalid value');
  throw new ConfigError(formatPath(first.path), first.message);
}

const ARTICLE_NAMES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
  record: 'an object',
};

/** Default message for issues whose schema did not supply its own. */
function issueMessage(iss: z.core.$ZodRawIssue): string | undefined {
  if (iss.input === undefined && iss.code !== 'custom') return 'required field is missing';
  switch (iss.code) {
    case 'invalid_type': {
      const expected = ARTICLE_NAMES[iss.expected] ?? iss.expected;
      return `expected ${expected}, got ${describeValue(iss.input)}`;
    }
    case 'too_small':
    case 'too_big': {
      const bound = iss.code === 'too_small' ? iss.minimum : iss.maximum;
      const op = iss.code === 'too_small' ? (iss.inclusive === false ? '>' : '>=') : iss.inclusive === false ? '<' : '<=';
      if (iss.origin === 'array' || iss.origin === 'string') {
        if (iss.code === 'too_small' && Number(bound) === 1) return 'must not be empty';
        const unit = iss.origin === 'array' ? 'entries' : 'characters';
        return `expected ${op} ${bound} ${unit}`;
      }
      return `expected a value ${op} ${bound}, got ${describeValue(iss.input)}`;
    }
    case 'invalid_value':
      return `expected one of ${iss.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(iss.input)}`;
    case 'invalid_format':
      return `${JSON.stringify(iss.input)} is not in the expected format (${iss.pattern ?? iss.format})`;
    case 'invalid_key':
      return `invalid key ${JSON.stringify(iss.input)}`;
    case 'invalid_union':
      return 'does not match any accepted form';
    case 'unrecognized_keys':
      return `unknown keys ${iss.keys.join(', ')}`;
    default:
      return undefined;
  }
}
