/**
 * Zod schemas of the OCI runtime-spec 1.2 config.json as Moat reads it on Linux.
 *
 * Objects are loose: keys this file does not know are kept as they are (runc does the same, so a
 * newer config still runs), but every key it does know must have the right type. Rules that
 * involve several fields (namespaces against mappings, sysctls, hostname) run last, on the whole
 * spec, and report the path of the field that is wrong.
 */
import { posix } from 'node:path';
import * as z from 'zod';
import { resourcesSchema } from '../cgroups/resources.js';
import { describeValue } from './paths.js';

export { describeValue } from './paths.js';

// A CLI process validates one config: compiling zod's JIT fast paths costs more than it saves.
z.config({ jitless: true });

// ---------------------------------------------------------------------------------------------
// Constant tables
// ---------------------------------------------------------------------------------------------

/** The Linux namespace types a config may ask for, as spelled in config.json. */
export const NAMESPACE_TYPES = [
  'pid',
  'network',
  'mount',
  'ipc',
  'uts',
  'user',
  'cgroup',
  'time',
] as const;

/** A namespace type as spelled in config.json (`linux.namespaces[].type`). */
export type NamespaceType = (typeof NAMESPACE_TYPES)[number];

/** Linux capability names mapped to their numbers (capabilities(7), 0..40). */
export const CAPABILITIES = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_LINUX_IMMUTABLE: 9,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_IPC_LOCK: 14,
  CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24,
  CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26,
  CAP_MKNOD: 27,
  CAP_LEASE: 28,
  CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31,
  CAP_MAC_OVERRIDE: 32,
  CAP_MAC_ADMIN: 33,
  CAP_SYSLOG: 34,
  CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36,
  CAP_AUDIT_READ: 37,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
  CAP_CHECKPOINT_RESTORE: 40,
} as const;

/** A Linux capability name such as `CAP_CHOWN`. */
export type CapabilityName = keyof typeof CAPABILITIES;

/** Rlimit type names mapped to their resource numbers on x86_64 Linux (setrlimit(2)). */
export const RLIMITS = {
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
} as const;

/** An rlimit type name such as `RLIMIT_NOFILE`. */
export type RlimitType = keyof typeof RLIMITS;

/** The kernel's RLIM_INFINITY (2^64-1): an rlimit value meaning "no limit". */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/**
 * Converts a config.json rlimit value to the exact integer to pass to setrlimit. JSON numbers
 * above 2^53 arrive rounded, so anything at or above 2^64-1 is taken as RLIM_INFINITY.
 */
export function rlimitValue(n: number): bigint {
  return n >= 2 ** 64 - 1 ? RLIM_INFINITY : BigInt(n);
}

const CAPABILITY_NAMES = Object.keys(CAPABILITIES) as [CapabilityName, ...CapabilityName[]];
const RLIMIT_NAMES = Object.keys(RLIMITS) as [RlimitType, ...RlimitType[]];
const PROPAGATIONS = [
  'shared',
  'slave',
  'private',
  'unbindable',
  'rshared',
  'rslave',
  'rprivate',
  'runbindable',
] as const;
const UINT32_MAX = 0xffff_ffff;

// ---------------------------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------------------------


/** An integer within the safe range, with an "expected an integer" message for other input. */
function integer() {
  return z.int({
    error: (iss) =>
      iss.code === 'invalid_type' && iss.input !== undefined
        ? `expected an integer, got ${describeValue(iss.input)}`
        : undefined,
  });
}

/** An unsigned 32-bit integer, at least `min`. */
function uint32(min = 0) {
  return integer().min(min).max(UINT32_MAX);
}

/**
 * An unsigned 64-bit integer. JSON numbers above 2^53 are already imprecise when they reach us,
 * so any non-negative integral number is accepted; see `rlimitValue` for the clamp.
 */
function uint64() {
  const message = (input: unknown) => `expected a non-negative integer, got ${describeValue(input)}`;
  return z
    .number({ error: (iss) => (iss.code === 'invalid_type' && iss.input !== undefined ? message(iss.input) : undefined) })
    .refine((n) => Number.isInteger(n) && n >= 0, { error: (iss) => message(iss.input) });
}

/**
 * A string that reaches the kernel (or execve) as a C string: a NUL byte would end it early, so
 * the plan encoder and child_process refuse it; it is refused here, with the field's path.
 */
function cstring() {
  return z.string().refine((s) => !s.includes('\0'), {
    error: (iss) => `must not contain a NUL byte (found at offset ${String(iss.input).indexOf('\0')})`,
  });
}

/** A string that must start with `/`. */
function absolutePath() {
  return cstring().refine((p) => p.startsWith('/'), {
    error: (iss) => `expected an absolute path, got ${JSON.stringify(iss.input)}`,
  });
}

/** One of a fixed set of strings; an unknown string is named with `label` in the message. */
function oneOf<const T extends readonly [string, ...string[]]>(values: T, label: string, hint?: string) {
  const expected = hint ?? `expected one of ${values.join(', ')}`;
  return z.enum(values, {
    error: (iss) =>
      typeof iss.input === 'string' ? `unknown ${label} ${JSON.stringify(iss.input)} (${expected})` : undefined,
  });
}

/** An environment entry of the form `KEY=value` with a non-empty KEY. */
function envEntry() {
  return cstring().refine((e) => e.indexOf('=') > 0, {
    error: (iss) => `expected "KEY=value", got ${JSON.stringify(iss.input)}`,
  });
}

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/** Schema of one uid or gid mapping (`linux.uidMappings[]`, `mounts[].uidMappings[]`). */
export const idMappingSchema = z.looseObject({
  containerID: uint32(),
  hostID: uint32(),
  size: uint32(1),
});

/** One uid or gid mapping: `size` ids from `containerID` map to ids from `hostID`. */
export type IdMapping = z.output<typeof idMappingSchema>;

/** Schema of one entry of `mounts`. */
export const mountSchema = z.looseObject({
  destination: absolutePath(),
  type: cstring().optional(),
  source: cstring().optional(),
  options: z.array(cstring()).optional(),
  uidMappings: z.array(idMappingSchema).optional(),
  gidMappings: z.array(idMappingSchema).optional(),
});

/** One entry of `mounts`. */
export type MountSpec = z.output<typeof mountSchema>;

/** Schema of one hook program (`hooks.prestart[]` and the other hook lists). */
export const hookSchema = z.looseObject({
  path: absolutePath(),
  args: z.array(cstring()).optional(),
  env: z.array(envEntry()).optional(),
  timeout: integer().min(1).optional(),
});

/** One hook program to run at a point of the container's lifecycle. */
export type HookSpec = z.output<typeof hookSchema>;

const hookList = () => z.array(hookSchema).optional();

const hooksSchema = z.looseObject({
  prestart: hookList(),
  createRuntime: hookList(),
  createContainer: hookList(),
  startContainer: hookList(),
  poststart: hookList(),
  poststop: hookList(),
});

// ---------------------------------------------------------------------------------------------
// process
// ---------------------------------------------------------------------------------------------

const capabilityList = () =>
  z
    .array(oneOf(CAPABILITY_NAMES, 'capability', 'expected a Linux capability name such as CAP_CHOWN'))
    .optional();

const rlimitSchema = z
  .looseObject({
    type: oneOf(RLIMIT_NAMES, 'rlimit type'),
    soft: uint64(),
    hard: uint64(),
  })
  .superRefine((r, ctx) => {
    // zod runs this even when soft or hard failed its own check (0.5, NaN): compare valid values only
    if (!Number.isInteger(r.soft) || !Number.isInteger(r.hard)) return;
    if (rlimitValue(r.soft) > rlimitValue(r.hard)) {
      ctx.addIssue({
        code: 'custom',
        path: ['soft'],
        message: `soft limit ${r.soft} is above hard limit ${r.hard}`,
      });
    }
  });

const userSchema = z.looseObject({
  uid: uint32(),
  gid: uint32(),
  umask: uint32().optional(),
  additionalGids: z.array(uint32()).optional(),
  username: z.string().optional(),
});

/** Schema of the `process` object; also used alone for `exec --process` files. */
export const processSchema = z
  .looseObject({
    terminal: z.boolean().optional(),
    consoleSize: z.looseObject({ height: uint32(), width: uint32() }).optional(),
    // runc reads a missing user as uid 0, gid 0; the default makes that explicit.
    user: userSchema.default({ uid: 0, gid: 0 }),
    args: z.array(cstring()).min(1),
    commandLine: z.string().optional(),
    env: z.array(envEntry()).optional(),
    cwd: absolutePath(),
    capabilities: z
      .looseObject({
        bounding: capabilityList(),
        effective: capabilityList(),
        inheritable: capabilityList(),
        permitted: capabilityList(),
        ambient: capabilityList(),
      })
      .optional(),
    rlimits: z.array(rlimitSchema).optional(),
    noNewPrivileges: z.boolean().optional(),
    apparmorProfile: z.string().optional(),
    oomScoreAdj: integer().min(-1000).max(1000).optional(),
    selinuxLabel: z.string().optional(),
    ioPriority: z.looseObject({ class: z.string(), priority: integer().optional() }).optional(),
    scheduler: z
      .looseObject({
        policy: z.string(),
        nice: integer().optional(),
        priority: integer().optional(),
        flags: z.array(z.string()).optional(),
        runtime: uint64().optional(),
        deadline: uint64().optional(),
        period: uint64().optional(),
      })
      .optional(),
    execCPUAffinity: z
      .looseObject({ initial: z.string().optional(), final: z.string().optional() })
      .optional(),
  })
  .superRefine((p, ctx) => {
    // The runtime spec says a type listed twice is an error.
    const seen = new Set<string>();
    p.rlimits?.forEach((r, i) => {
      if (seen.has(r.type)) {
        ctx.addIssue({ code: 'custom', path: ['rlimits', i, 'type'], message: `duplicate rlimit type "${r.type}"` });
      }
      seen.add(r.type);
    });
  });

/** The `process` object of config.json: what to run in the container and with which rights. */
export type ProcessSpec = z.output<typeof processSchema>;

// ---------------------------------------------------------------------------------------------
// linux
// ---------------------------------------------------------------------------------------------

const namespaceSchema = z.looseObject({
  type: oneOf(NAMESPACE_TYPES, 'namespace type'),
  path: absolutePath().optional(),
});

const deviceSchema = z
  .looseObject({
    type: oneOf(['c', 'b', 'u', 'p'], 'device type'),
    path: absolutePath().refine((p) => posix.normalize(p).startsWith('/dev/'), {
      error: (iss) => `expected a path under /dev, got ${JSON.stringify(iss.input)}`,
    }),
    major: integer().optional(),
    minor: integer().optional(),
    fileMode: uint32().optional(),
    uid: uint32().optional(),
    gid: uint32().optional(),
  })
  .superRefine((d, ctx) => {
    if (d.type === 'p') return;
    for (const key of ['major', 'minor'] as const) {
      if (d[key] === undefined) {
        ctx.addIssue({ code: 'custom', path: [key], message: `required for a device of type "${d.type}"` });
      }
    }
  });

const seccompArgSchema = z.looseObject({
  index: uint32(),
  value: uint64(),
  valueTwo: uint64().optional(),
  op: z.string(),
});

/** Schema of `linux.seccomp`; field types are checked, action and op names are not yet. */
export const seccompSchema = z.looseObject({
  defaultAction: z.string(),
  defaultErrnoRet: uint32().optional(),
  architectures: z.array(z.string()).optional(),
  flags: z.array(z.string()).optional(),
  listenerPath: cstring().optional(),
  listenerMetadata: cstring().optional(),
  syscalls: z
    .array(
      z.looseObject({
        names: z.array(z.string()).min(1),
        action: z.string(),
        errnoRet: uint32().optional(),
        args: z.array(seccompArgSchema).optional(),
      }),
    )
    .optional(),
});

/** The `linux.seccomp` object: a syscall filter profile. */
export type SeccompSpec = z.output<typeof seccompSchema>;

const linuxSchema = z.looseObject({
  namespaces: z.array(namespaceSchema).optional(),
  uidMappings: z.array(idMappingSchema).optional(),
  gidMappings: z.array(idMappingSchema).optional(),
  devices: z.array(deviceSchema).optional(),
  cgroupsPath: cstring().optional(),
  resources: resourcesSchema.optional(),
  sysctl: z.record(z.string(), cstring()).optional(),
  seccomp: seccompSchema.optional(),
  rootfsPropagation: oneOf(PROPAGATIONS, 'rootfs propagation').optional(),
  maskedPaths: z.array(absolutePath()).optional(),
  readonlyPaths: z.array(absolutePath()).optional(),
  mountLabel: z.string().optional(),
  intelRdt: z
    .looseObject({
      closID: z.string().optional(),
      l3CacheSchema: z.string().optional(),
      memBwSchema: z.string().optional(),
    })
    .optional(),
  personality: z
    .looseObject({ domain: z.string(), flags: z.array(z.string()).optional() })
    .optional(),
  timeOffsets: z
    .record(z.string(), z.looseObject({ secs: integer().optional(), nanosecs: integer().optional() }))
    .optional(),
});

// ---------------------------------------------------------------------------------------------
// Whole spec
// ---------------------------------------------------------------------------------------------

/** The namespace a sysctl key belongs to, or undefined if the kernel does not namespace it. */
function sysctlNamespace(key: string): NamespaceType | undefined {
  if (key.startsWith('net.')) return 'network';
  if (
    key.startsWith('kernel.shm') ||
    key.startsWith('kernel.msg') ||
    key === 'kernel.sem' ||
    key.startsWith('fs.mqueue.')
  ) {
    return 'ipc';
  }
  if (key === 'kernel.hostname' || key === 'kernel.domainname') return 'uts';
  return undefined;
}

/** Rules that tie several fields together; runs after every field has been checked. */
function checkCrossFields(spec: z.output<typeof specObject>, ctx: z.RefinementCtx): void {
  const fail = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const linux: z.output<typeof linuxSchema> = spec.linux ?? {};

  const present = new Set<NamespaceType>();
  (linux.namespaces ?? []).forEach((ns, i) => {
    if (present.has(ns.type)) fail(['linux', 'namespaces', i, 'type'], `duplicate namespace type "${ns.type}"`);
    present.add(ns.type);
  });

  // User namespace and id mappings go together.
  const userNs = linux.namespaces?.find((ns) => ns.type === 'user');
  const mappings = [
    ['uidMappings', linux.uidMappings ?? []],
    ['gidMappings', linux.gidMappings ?? []],
  ] as const;
  for (const [key, list] of mappings) {
    const kind = key === 'uidMappings' ? 'uid' : 'gid';
    if (userNs === undefined && list.length > 0) {
      fail(['linux', key], `${kind} mappings are set but there is no user namespace`);
    } else if (userNs !== undefined && userNs.path === undefined && list.length === 0) {
      fail(['linux', key], `a new user namespace needs at least one ${kind} mapping`);
    }
  }

  if (spec.hostname && !present.has('uts')) fail(['hostname'], 'setting the hostname needs a uts namespace');
  if (spec.domainname && !present.has('uts')) fail(['domainname'], 'setting the domainname needs a uts namespace');

  if (linux.timeOffsets && Object.keys(linux.timeOffsets).length > 0 && !present.has('time')) {
    fail(['linux', 'timeOffsets'], 'time offsets need a time namespace');
  }

  for (const key of Object.keys(linux.sysctl ?? {})) {
    const path = ['linux', 'sysctl', key];
    if (key.includes('/') || key.includes('..') || key.includes('\0')) {
      fail(path, `sysctl name ${JSON.stringify(key)} must not contain "/", ".." or a NUL byte`);
      continue;
    }
    const ns = sysctlNamespace(key);
    if (ns === undefined) {
      fail(path, `sysctl ${JSON.stringify(key)} is not namespaced and cannot be set for a container`);
    } else if (!present.has(ns)) {
      fail(path, `sysctl ${JSON.stringify(key)} needs a ${ns} namespace`);
    }
  }
}

const specObject = z.looseObject({
  ociVersion: z.string(),
  root: z.looseObject({ path: cstring().min(1), readonly: z.boolean().optional() }),
  mounts: z.array(mountSchema).optional(),
  process: processSchema.optional(),
  hostname: cstring().optional(),
  domainname: cstring().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  hooks: hooksSchema.optional(),
  linux: linuxSchema.optional(),
  // vm, windows, solaris and zos are not for this platform; the loose object keeps them as-is.
});

/** Schema of a whole config.json, including the rules that tie several fields together. */
export const specSchema = specObject.superRefine(checkCrossFields);

/** A validated config.json. */
export type Spec = z.output<typeof specSchema>;
