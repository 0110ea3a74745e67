/**
 * How validation errors name fields and values; shared by the config schema and the cgroup
 * resources schema (this module imports nothing, so neither depends on the other for it).
 */

/** Describes a value for an error message: numbers by value, everything else by JSON type. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return String(value);
  return typeof value;
}

/**
 * Formats an issue path the way Moat prints field paths: `process.rlimits[0].type`, with keys
 * that are not plain identifiers quoted in brackets, e.g. `linux.sysctl["net.ipv4.ip_forward"]`.
 */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') {
      out += `[${key}]`;
    } else {
      const name = typeof key === 'symbol' ? (key.description ?? '') : key;
      out += /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? (out === '' ? name : `.${name}`) : `[${JSON.stringify(name)}]`;
    }
  }
  return out;
}
