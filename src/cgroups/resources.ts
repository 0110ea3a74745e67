/**
 * The runtime-spec `LinuxResources` object (config.json `linux.resources`, and the input of
 * `update`): a zod schema that checks every field's type and range, the few rules that tie
 * fields together, and the conversions from these (cgroup v1 shaped) values to cgroup v2 ones.
 *
 * Zero means "not set" for the numeric limits, as in runc; -1 means "unlimited" where the spec
 * allows it. Checks that depend on the host (which hugepage sizes exist, which CPUs the parent
 * cgroup has) happen in the manager's `set`, before it writes anything.
 */
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { describeValue, formatPath } from '../spec/paths.js';

// ---------------------------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------------------------

const UINT16_MAX = 0xffff;
const UINT32_MAX = 0xffff_ffff;

/**
 * An integral JSON number in [min, max]. JSON numbers beyond 2^53 arrive rounded, so the range
 * check is on the rounded value (an int64 "unlimited" such as 2^63-1 still passes).
 */
function intIn(min: number, max: number, expected: string) {
  const message = (input: unknown) => `expected ${expected}, got ${describeValue(input)}`;
  return z
    .number({ error: (iss) => (iss.code === 'invalid_type' && iss.input !== undefined ? message(iss.input) : undefined) })
    .refine((n) => Number.isInteger(n) && n >= min && n <= max, { error: (iss) => message(iss.input) });
}

/** Any integer (an int64 of the spec). */
const int64 = () => intIn(-Infinity, Infinity, 'an integer');
/** A non-negative integer (a uint64 of the spec). */
const uint64 = () => intIn(0, Infinity, 'a non-negative integer');
/** A limit where -1 means unlimited and 0 means unset. */
const limit = () => intIn(-1, Infinity, '-1 (unlimited) or a non-negative number of bytes');
/** A uint32. */
const uint32 = () => intIn(0, UINT32_MAX, `an integer from 0 to ${UINT32_MAX}`);
/** A block I/O weight; 0 means unset, as in runc. */
const blkioWeight = () => intIn(0, 1000, 'a weight from 10 to 1000 (or 0 for unset)').refine((n) => n === 0 || n >= 10, {
  error: (iss) => `expected a weight from 10 to 1000 (or 0 for unset), got ${describeValue(iss.input)}`,
});

/**
 * Parses a cpuset list ("0-3,5,7-8") into its members, ascending and each once; undefined if the
 * syntax is wrong. The ranges are merged before they are expanded, so the work and the result
 * are bounded by the 65536 possible members however often a list repeats a range: expanding
 * "0-65535,0-65535,..." range by range let a 25 KB config.json exhaust memory and abort Node.
 */
export function parseCpuList(list: string): number[] | undefined {
  const trimmed = list.trim();
  if (trimmed === '') return [];
  const ranges: [number, number][] = [];
  for (const part of trimmed.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (m === null) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (lo > hi || hi > UINT16_MAX) return undefined;
    ranges.push([lo, hi]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  let next = 0; // the smallest member not yet in `out`
  for (const [lo, hi] of ranges) {
    for (let i = Math.max(lo, next); i <= hi; i++) out.push(i);
    next = Math.max(next, hi + 1);
  }
  return out;
}

/** A cpuset list string such as "0-3,5"; the empty string means unset. */
const cpuList = () =>
  z.string().refine((s) => parseCpuList(s) !== undefined, {
    error: (iss) => `expected a list such as "0-3,5" (numbers and ranges separated by commas), got ${JSON.stringify(iss.input)}`,
  });

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

const DEVICE_RULE_TYPES = ['a', 'b', 'c'] as const;

/** A device major or minor number: an integer, or null / -1 / absent for "any". */
const deviceNumber = () => z.union([intIn(-1, UINT32_MAX, `-1 (any) or an integer from 0 to ${UINT32_MAX}`), z.null()]);

const deviceRuleSchema = z.looseObject({
  allow: z.boolean(),
  type: z
    .enum(DEVICE_RULE_TYPES, {
      error: (iss) =>
        typeof iss.input === 'string' ? `unknown device type ${JSON.stringify(iss.input)} (expected one of a, b, c)` : undefined,
    })
    .optional(),
  major: deviceNumber().optional(),
  minor: deviceNumber().optional(),
  access: z
    .string()
    .refine((a) => /^[rwm]+$/.test(a), {
      error: (iss) => `expected one or more of the letters r, w, m, got ${JSON.stringify(iss.input)}`,
    })
    .optional(),
});

const memorySchema = z
  .looseObject({
    limit: limit().optional(),
    reservation: limit().optional(),
    swap: limit().optional(),
    kernel: limit().optional(),
    kernelTCP: limit().optional(),
    swappiness: intIn(0, 100, 'a swappiness from 0 to 100').optional(),
    disableOOMKiller: z.boolean().optional(),
    useHierarchy: z.boolean().optional(),
    checkBeforeUpdate: z.boolean().optional(),
  })
  .superRefine((m, ctx) => {
    const swap = m.swap ?? 0;
    const mem = m.limit ?? 0;
    if (swap > 0 && mem <= 0) {
      ctx.addIssue({ code: 'custom', path: ['swap'], message: 'a memory+swap limit needs a memory limit (memory.limit)' });
    } else if (swap > 0 && swap < mem) {
      ctx.addIssue({
        code: 'custom',
        path: ['swap'],
        message: `memory+swap limit ${swap} is below the memory limit ${mem} (swap counts memory plus swap)`,
      });
    }
  });

const cpuSchema = z.looseObject({
  shares: uint64().optional(),
  quota: intIn(-1, Infinity, '-1 (unlimited) or a non-negative number of microseconds').optional(),
  burst: uint64().optional(),
  period: uint64().optional(),
  realtimeRuntime: intIn(-1, Infinity, '-1 (unlimited) or a non-negative number of microseconds').optional(),
  realtimePeriod: uint64().optional(),
  cpus: cpuList().optional(),
  mems: cpuList().optional(),
  idle: intIn(0, 1, '0 or 1').optional(),
});

const deviceNumbers = {
  major: intIn(0, UINT32_MAX, 'a device major number'),
  minor: intIn(0, UINT32_MAX, 'a device minor number'),
};

const throttleList = () => z.array(z.looseObject({ ...deviceNumbers, rate: uint64() })).optional();

const blockIOSchema = z.looseObject({
  weight: blkioWeight().optional(),
  leafWeight: blkioWeight().optional(),
  weightDevice: z
    .array(z.looseObject({ ...deviceNumbers, weight: blkioWeight().optional(), leafWeight: blkioWeight().optional() }))
    .optional(),
  throttleReadBpsDevice: throttleList(),
  throttleWriteBpsDevice: throttleList(),
  throttleReadIOPSDevice: throttleList(),
  throttleWriteIOPSDevice: throttleList(),
});

const hugepageLimitSchema = z.looseObject({
  pageSize: z.string().refine((s) => /^[1-9][0-9]*[KMGTP]B$/.test(s), {
    error: (iss) => `expected a page size such as "2MB" or "1GB", got ${JSON.stringify(iss.input)}`,
  }),
  limit: uint64(),
});

const networkSchema = z.looseObject({
  classID: uint32().optional(),
  priorities: z
    .array(
      z.looseObject({
        name: z.string().refine((s) => s !== '' && !/\s/.test(s), {
          error: (iss) => `expected an interface name, got ${JSON.stringify(iss.input)}`,
        }),
        priority: uint32(),
      }),
    )
    .optional(),
});

const rdmaSchema = z.record(
  z.string(),
  z.looseObject({ hcaHandles: uint32().optional(), hcaObjects: uint32().optional() }),
);

const unifiedSchema = z.record(z.string(), z.string()).superRefine((map, ctx) => {
  for (const key of Object.keys(map)) {
    if (key.includes('/') || key === '.' || key === '..') {
      ctx.addIssue({ code: 'custom', path: [key], message: 'must be a file name of the cgroup (no "/")' });
    } else if (!/^[a-z0-9_]+\.[A-Za-z0-9_.]+$/.test(key)) {
      ctx.addIssue({ code: 'custom', path: [key], message: 'must be a cgroup v2 file name of the form CONTROLLER.PARAMETER' });
    }
  }
});

/** Schema of the runtime-spec `LinuxResources` object (`linux.resources` of config.json). */
export const resourcesSchema = z.looseObject({
  devices: z.array(deviceRuleSchema).optional(),
  memory: memorySchema.optional(),
  cpu: cpuSchema.optional(),
  pids: z.looseObject({ limit: int64().optional() }).optional(),
  blockIO: blockIOSchema.optional(),
  hugepageLimits: z.array(hugepageLimitSchema).optional(),
  network: networkSchema.optional(),
  rdma: rdmaSchema.optional(),
  unified: unifiedSchema.optional(),
});

/** A validated `linux.resources` object. */
export type Resources = z.output<typeof resourcesSchema>;

/** One entry of `linux.resources.devices`, validated. */
export type DeviceRuleSpec = NonNullable<Resources['devices']>[number];

const ARTICLES: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
  record: 'an object',
};

/** Messages for the issues whose schema gives none of its own (type mismatches, missing fields). */
function defaultMessage(iss: z.core.$ZodRawIssue): string | undefined {
  if (iss.input === undefined && iss.code !== 'custom') return 'required field is missing';
  if (iss.code === 'invalid_type') return `expected ${ARTICLES[iss.expected] ?? iss.expected}, got ${describeValue(iss.input)}`;
  if (iss.code === 'invalid_union') return `expected -1, null or a non-negative integer, got ${describeValue(iss.input)}`;
  return undefined;
}

/** Joins a path prefix such as `linux.resources` with a relative issue path such as `memory.limit`. */
function joinPath(prefix: string, rest: string): string {
  if (prefix === '') return rest;
  if (rest === '') return prefix;
  return rest.startsWith('[') ? `${prefix}${rest}` : `${prefix}.${rest}`;
}

/**
 * Validates a `LinuxResources` object and returns it typed; throws ConfigError naming the first
 * wrong field with `pathPrefix` in front, e.g. `linux.resources.memory.limit`.
 */
export function parseResources(input: unknown, pathPrefix: string): Resources {
  const result = resourcesSchema.safeParse(input, { error: defaultMessage });
  if (result.success) return result.data;
  const first = result.error.issues[0];
  if (first === undefined) throw new ConfigError(pathPrefix, 'invalid value');
  throw new ConfigError(joinPath(pathPrefix, formatPath(first.path)), first.message);
}

// ---------------------------------------------------------------------------------------------
// v1 -> v2 conversions
// ---------------------------------------------------------------------------------------------

/**
 * Converts v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000] the way current runc does
 * (a quadratic fit in log2 space that maps the default 1024 to the default 100); 0 stays 0.
 */
export function cpuSharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  if (shares <= 2) return 1;
  if (shares >= 262144) return 10000;
  const l = Math.log2(shares);
  const exponent = (l * l + 125 * l) / 612 - 7 / 34;
  return Math.ceil(10 ** exponent);
}

/** Converts a v1 blkio weight [10, 1000] to a v2 io.weight [1, 10000] (runc's linear map); 0 stays 0. */
export function blkioWeightToIoWeight(weight: number): number {
  if (weight === 0) return 0;
  return 1 + Math.floor(((weight - 10) * 9999) / 990);
}

/**
 * Converts the spec's memory+swap limit to cgroup v2's swap-only memory.swap.max value, as runc
 * does: -1 stays unlimited, 0 stays unset, otherwise swap minus memory. Returns the string to
 * write, or undefined to leave the file alone.
 */
export function swapToV2(swap: number, memory: number): string | undefined {
  if (memory === -1 && swap === 0) return 'max';
  if (swap === -1) return 'max';
  if (swap === 0) return undefined;
  if (memory <= 0) throw new ConfigError('linux.resources.memory.swap', 'a memory+swap limit needs a memory limit (memory.limit)');
  if (swap < memory) {
    throw new ConfigError('linux.resources.memory.swap', `memory+swap limit ${swap} is below the memory limit ${memory}`);
  }
  return decimal(swap - memory);
}

/** Formats an integral number in plain decimal (never exponent notation), for cgroup files. */
export function decimal(n: number): string {
  return BigInt(Math.trunc(n)).toString();
}

/** True if nothing in `r` asks for a limit (all fields absent or zero/unset). */
export function isEmptyResources(r: Resources): boolean {
  const m = r.memory ?? {};
  const c = r.cpu ?? {};
  const b = r.blockIO ?? {};
  const nonZero = (v: number | undefined) => v !== undefined && v !== 0;
  return (
    r.devices === undefined &&
    !nonZero(m.limit) && !nonZero(m.reservation) && !nonZero(m.swap) && m.swappiness === undefined && m.disableOOMKiller !== true &&
    !nonZero(c.shares) && !nonZero(c.quota) && !nonZero(c.period) && c.burst === undefined && !nonZero(c.realtimeRuntime) &&
    !nonZero(c.realtimePeriod) && !c.cpus && !c.mems && c.idle === undefined &&
    !nonZero(r.pids?.limit) &&
    !nonZero(b.weight) && !nonZero(b.leafWeight) && (b.weightDevice ?? []).length === 0 &&
    (b.throttleReadBpsDevice ?? []).length === 0 && (b.throttleWriteBpsDevice ?? []).length === 0 &&
    (b.throttleReadIOPSDevice ?? []).length === 0 && (b.throttleWriteIOPSDevice ?? []).length === 0 &&
    (r.hugepageLimits ?? []).length === 0 &&
    r.network?.classID === undefined && (r.network?.priorities ?? []).length === 0 &&
    Object.keys(r.rdma ?? {}).length === 0 && Object.keys(r.unified ?? {}).length === 0
  );
}
