/**
 * Fuzz of config.json parsing (issue 8): `parseSpec`, `loadSpec` and `parseProcess`
 * (src/spec/validate.ts), and of what runs right after them on a spec they accept: the container
 * plan builders `buildPlan` and `buildExecPlan` (src/backends/container/plan.ts).
 *
 * Properties, for every input:
 * - parsing returns, or throws a ConfigError whose message is not empty and whose `path` is a
 *   JSON path in Moat's syntax (`process.rlimits[0].soft`, `linux.sysctl["net.x"]`), whose
 *   parent exists in the input: the error points at the field that is wrong;
 * - a spec that parses is accepted by buildPlan (and a process by buildExecPlan), or refused
 *   with a MoatError (any subclass): never a TypeError, RangeError or plain Error;
 * - no input takes more than 1 s, and resident memory grows by less than 200 MB in all.
 *
 * Three generators per target: random values (or bytes, for loadSpec), mutations of valid
 * configs (defaultSpec, rootless and with the default seccomp profile, the busybox fixture's
 * config, and a rich config that touches every section), and structure-aware edits that put
 * edge values (0, max, max+1, 2^32-1, 2^53, 2^64, NUL bytes, huge lists, prototype keys) into
 * specific fields.
 *
 * Snapshot images (issue 7) do not exist yet, so they have no fuzz target here; add one next
 * to this file when their decoder lands.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { CreateRequest } from '../../src/backends/backend.js';
import { parseMountOptions } from '../../src/backends/container/mounts.js';
import { buildExecPlan, buildPlan } from '../../src/backends/container/plan.js';
import { buildSentryFilter } from '../../src/backends/sentry/filter.js';
import { sandboxLimits, sentrySpec } from '../../src/backends/sentry/index.js';
import { ConfigError, MoatError } from '../../src/errors.js';
import { defaultSeccompProfile } from '../../src/seccomp/index.js';
import { defaultSpec } from '../../src/spec/default.js';
import type { ProcessSpec, Spec } from '../../src/spec/schema.js';
import { loadSpec, parseProcess, parseSpec } from '../../src/spec/validate.js';
import type { Logger } from '../../src/util/log.js';
import { fixtureSpec } from '../fixtures/busybox.js';
import { REPLAYING, Rng, describeRun, expectTyped, fuzz, mutateBytes } from './prng.js';

type Key = string | number;
type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A deep copy that keeps own `__proto__` keys as own keys (as JSON.parse makes them). Below 200
 * levels values are shared, not copied: only the deep-nesting mutation builds such depths, and
 * nothing mutates inside them.
 */
function clone<T>(v: T, depth = 0): T {
  if (depth > 200) return v;
  if (Array.isArray(v)) return v.map((x) => clone(x, depth + 1)) as T;
  if (isObj(v)) {
    const out: Obj = {};
    for (const k of Object.keys(v)) setOwn(out, k, clone(v[k], depth + 1));
    return out as T;
  }
  return v;
}

/** Sets an own property, even one named `__proto__`. */
function setOwn(o: Obj, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

// ---------------------------------------------------------------------------------------------
// Valid baselines

/** A valid config that touches every section Moat reads (checked below to parse). */
function richSpec(): Obj {
  return {
    ociVersion: '1.2.0',
    root: { path: 'rootfs', readonly: false },
    hostname: 'rich',
    domainname: 'example.org',
    annotations: { 'org.example.key': 'value', '': '' },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro', 'nosuid'] },
      { destination: '/mnt/host-tmp', type: 'bind', source: '/tmp', options: ['rbind', 'ro', 'rprivate'] },
      { destination: '/mnt/data', source: '/tmp', options: ['bind', 'nodev', 'custom=1'] },
    ],
    process: {
      terminal: false,
      consoleSize: { height: 24, width: 80 },
      user: { uid: 1000, gid: 1000, umask: 0o022, additionalGids: [5, 10, 4294967295], username: 'u' },
      args: ['sh', '-c', 'true'],
      commandLine: 'sh -c true',
      env: ['PATH=/usr/bin:/bin', 'TERM=xterm', 'EMPTY='],
      cwd: '/work',
      capabilities: {
        bounding: ['CAP_KILL', 'CAP_CHOWN', 'CAP_CHECKPOINT_RESTORE'],
        effective: ['CAP_KILL'],
        inheritable: [],
        permitted: ['CAP_KILL', 'CAP_CHOWN'],
        ambient: ['CAP_KILL'],
      },
      rlimits: [
        { type: 'RLIMIT_NOFILE', soft: 1024, hard: 4096 },
        { type: 'RLIMIT_CORE', soft: 0, hard: 18446744073709551615 },
      ],
      noNewPrivileges: true,
      apparmorProfile: '',
      oomScoreAdj: -1000,
      selinuxLabel: '',
      ioPriority: { class: 'IOPRIO_CLASS_BE', priority: 4 },
      scheduler: { policy: 'SCHED_OTHER', nice: 0, priority: 0, flags: [], runtime: 0, deadline: 0, period: 0 },
      execCPUAffinity: { initial: '0', final: '0-1' },
    },
    hooks: {
      prestart: [{ path: '/usr/bin/true', args: ['true'], env: ['A=1'], timeout: 5 }],
      createRuntime: [{ path: '/usr/bin/true' }],
      createContainer: [{ path: '/usr/bin/true', args: ['true', 'x'], timeout: 1 }],
      startContainer: [{ path: '/bin/true', env: ['B=2'] }],
      poststart: [{ path: '/usr/bin/true' }],
      poststop: [{ path: '/usr/bin/true' }],
    },
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }, { type: 'time' }, { type: 'user' }],
      uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
      devices: [
        { type: 'c', path: '/dev/fuse', major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 },
        { type: 'b', path: '/dev/loop9', major: 7, minor: 9 },
        { type: 'p', path: '/dev/fifo' },
      ],
      cgroupsPath: '/moat/rich',
      resources: {
        devices: [{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: null, access: 'rw' }],
        memory: { limit: 2 ** 30, reservation: 2 ** 29, swap: 2 ** 31, swappiness: 60, disableOOMKiller: false },
        cpu: { shares: 1024, quota: 50000, period: 100000, realtimeRuntime: -1, cpus: '0-1', mems: '0', idle: 0 },
        pids: { limit: 100 },
        blockIO: { weight: 500, weightDevice: [{ major: 8, minor: 0, weight: 100 }], throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }] },
        hugepageLimits: [{ pageSize: '2MB', limit: 0 }],
        network: { classID: 1, priorities: [{ name: 'eth0', priority: 1 }] },
        rdma: { mlx5_0: { hcaHandles: 1, hcaObjects: 2 } },
        unified: { 'memory.high': '1073741824' },
      },
      sysctl: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '4096', 'kernel.domainname': 'x', 'fs.mqueue.msg_max': '10' },
      seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW',
        defaultErrnoRet: 1,
        architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'],
        flags: ['SECCOMP_FILTER_FLAG_LOG'],
        syscalls: [
          { names: ['mount', 'umount2'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 },
          { names: ['personality'], action: 'SCMP_ACT_ERRNO', args: [{ index: 0, value: 8, op: 'SCMP_CMP_NE' }] },
          { names: ['clone'], action: 'SCMP_ACT_KILL', args: [{ index: 0, value: 2114060288, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] },
        ],
      },
      rootfsPropagation: 'rslave',
      maskedPaths: ['/proc/kcore', '/proc/keys'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
      mountLabel: '',
      intelRdt: { closID: 'x', l3CacheSchema: 'L3:0=f' },
      personality: { domain: 'LINUX', flags: [] },
      timeOffsets: { monotonic: { secs: 10, nanosecs: 0 }, boottime: { secs: -5 } },
    },
  };
}

/** The valid configs mutations start from, as plain JSON values. */
const BASELINES: readonly { name: string; spec: Obj; weight: number }[] = [
  { name: 'defaultSpec', spec: JSON.parse(JSON.stringify(defaultSpec())) as Obj, weight: 3 },
  { name: 'defaultSpec rootless', spec: JSON.parse(JSON.stringify(defaultSpec({ rootless: true }))) as Obj, weight: 2 },
  { name: 'defaultSpec + default seccomp', spec: JSON.parse(JSON.stringify(defaultSpec({ seccomp: defaultSeccompProfile() }))) as Obj, weight: 1 },
  { name: 'busybox fixture', spec: fixtureSpec(['sh', '-c', 'echo hi'], false) as Obj, weight: 3 },
  { name: 'busybox fixture, terminal', spec: fixtureSpec(['sh'], true) as Obj, weight: 1 },
  { name: 'rich', spec: richSpec(), weight: 4 },
];

// ---------------------------------------------------------------------------------------------
// Edge values

const TWO32 = 2 ** 32;
const EDGE_NUMBERS: readonly number[] = [
  0, -0, 1, -1, 0.5, -0.5, 2, 7, 10, 100, 255, 256, 0o777, 0o7777, 0o10000, 1000, 1001, -1000, -1001, 4095, 4096,
  65535, 65536, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, TWO32 - 1, TWO32, TWO32 + 1, 2 ** 53 - 1, 2 ** 53,
  2 ** 53 + 2, -(2 ** 53), 2 ** 63, 2 ** 64 - 1, 2 ** 64, 2 ** 64 * 2, 1e21, 1e308, -1e308, Number.MAX_VALUE,
  Number.MIN_VALUE, Infinity, -Infinity, NaN,
];

/** Names that a lookup table built from an object literal answers for, unless it guards with hasOwn. */
const PROTO_KEYS = ['__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'prototype', '__defineGetter__', 'isPrototypeOf'];

const ENUM_STRINGS = [
  'CAP_SYS_ADMIN', 'CAP_KILL', 'CAP_LAST_CAP', 'cap_kill', 'RLIMIT_NOFILE', 'RLIMIT_CORE', 'RLIMIT_UNKNOWN',
  'pid', 'network', 'mount', 'ipc', 'uts', 'user', 'cgroup', 'time', 'net', 'c', 'b', 'u', 'p', 'a',
  'bind', 'rbind', 'ro', 'rw', 'nosuid', 'idmap', 'ridmap', 'tmpcopyup', 'rprivate', 'shared', 'private', 'remount', 'defaults',
  'proc', 'tmpfs', 'devpts', 'sysfs', 'mqueue', 'cgroup2', 'overlay', 'none',
  'SCMP_ACT_ALLOW', 'SCMP_ACT_ERRNO', 'SCMP_ACT_KILL', 'SCMP_ACT_NOTIFY', 'SCMP_ACT_TRACE', 'SCMP_ACT_LOG', 'SCMP_ACT_KILL_PROCESS',
  'SCMP_ARCH_X86_64', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_NATIVE', 'SCMP_CMP_EQ', 'SCMP_CMP_MASKED_EQ', 'SCMP_CMP_GT',
  'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW', 'SECCOMP_FILTER_FLAG_TSYNC', 'write', 'read', 'openat', 'no_such_syscall',
  'net.ipv4.ip_forward', 'kernel.shmmax', 'kernel.core_pattern', 'kernel.hostname', 'fs.mqueue.queues_max', 'vm.swappiness',
  'memory.max', 'cpu.weight', 'memory..max', 'a/b', '2MB', '1GB', '0KB', '0-3,5', '0-65535', '65536', '3-1',
];

const EDGE_STRINGS = (): string[] => [
  '', ' ', '/', '//', '///', '.', '..', '/..', '/.', '/../..', '/dev', '/dev/', '/dev/..', '/dev/../etc/shadow', 'relative/path',
  '/proc/self/ns/net', '/proc/self/ns/mnt', '/nonexistent/ns', '/dev/null', '/tmp', 'rootfs', 'KEY=value', '=value', 'KEY', 'A=B=C',
  '\u0000', 'a\u0000b', '/bin/\u0000sh', '\n', 'a\nb', '\t', '"', '\\', ',', ':', 'a,b:c\\d', '\ud800', '\udfff\ud800', '\uffff',
  '\u202eevil', 'Ω≈ç√', '😀'.repeat(50), 'e\u0301', '\u00a0', 'x'.repeat(255), 'x'.repeat(4096), 'x'.repeat(65536),
  '/'.repeat(5000), '../'.repeat(2000), ...PROTO_KEYS,
];
const EDGE_STRING_LIST = EDGE_STRINGS();

/** A random JSON-ish value (plus the NaN, ±Infinity, -0 and undefined a JS caller could pass). */
function randomValue(rng: Rng, depth = 0): unknown {
  const k = rng.int(depth > 3 ? 6 : 9);
  switch (k) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.chance(0.6) ? rng.pick(EDGE_NUMBERS) : (rng.next() - 0.5) * 2 ** rng.int(70);
    case 3:
      return rng.pick(EDGE_STRING_LIST);
    case 4:
      return rng.pick(ENUM_STRINGS);
    case 5:
      return rng.chance(0.05) ? undefined : rng.bytes(rng.size(40)).toString('latin1');
    case 6:
    case 7: {
      const n = rng.size(6);
      return Array.from({ length: n }, () => randomValue(rng, depth + 1));
    }
    default: {
      const o: Obj = {};
      const n = rng.size(6);
      for (let i = 0; i < n; i++) setOwn(o, rng.chance(0.5) ? rng.pick(SPEC_KEYS) : rng.pick([...EDGE_STRING_LIST.slice(0, 40), ...PROTO_KEYS]), randomValue(rng, depth + 1));
      return o;
    }
  }
}

/** Every key the spec schema knows at some level (collected from the baselines). */
const SPEC_KEYS: string[] = (() => {
  const keys = new Set<string>();
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (isObj(v)) for (const k of Object.keys(v)) (keys.add(k), walk(v[k]));
  };
  for (const b of BASELINES) walk(b.spec);
  return [...keys];
})();

/** An array (or object) nested `depth` levels deep. */
function nested(depth: number, objects: boolean): unknown {
  let v: unknown = objects ? { leaf: 1 } : [1];
  for (let i = 0; i < depth; i++) v = objects ? { a: v } : [v];
  return v;
}

// ---------------------------------------------------------------------------------------------
// Mutations of valid configs

function getAt(root: unknown, path: readonly Key[]): unknown {
  let v = root;
  for (const k of path) v = (v as Record<Key, unknown> | undefined)?.[k];
  return v;
}

/** A random path by a random walk from the root: sections stay about equally likely, whatever their size. */
function randomPath(rng: Rng, root: unknown): Key[] {
  const path: Key[] = [];
  let v = root;
  for (;;) {
    const keys: Key[] = Array.isArray(v) ? v.map((_, i) => i) : isObj(v) ? Object.keys(v) : [];
    if (keys.length === 0 || (path.length > 0 && rng.chance(0.3))) return path;
    const k = rng.pick(keys);
    path.push(k);
    v = (v as Record<Key, unknown>)[k];
  }
}

/** Applies one random mutation at a random place of `root` (in place). */
function mutateJson(rng: Rng, root: Obj): void {
  const path = randomPath(rng, root);
  const key = path[path.length - 1];
  const parent = path.length === 0 ? undefined : (getAt(root, path.slice(0, -1)) as Record<Key, unknown>);
  const cur = path.length === 0 ? root : parent![key!];
  const set = (v: unknown): void => {
    if (parent === undefined || key === undefined) return;
    if (Array.isArray(parent)) parent[key as number] = v;
    else setOwn(parent as Obj, String(key), v);
  };
  switch (rng.int(14)) {
    case 0: // remove the field or element
      if (parent === undefined) return;
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete (parent as Obj)[String(key)];
      return;
    case 1: // wrong type
      return set(randomValue(rng));
    case 2: // edge number
      return set(rng.pick(EDGE_NUMBERS));
    case 3: // edge string
      return set(rng.pick(EDGE_STRING_LIST));
    case 4: // a name from one of the spec's enumerations (often the wrong one)
      return set(rng.pick(ENUM_STRINGS));
    case 5: // duplicate array entries, a few or very many
      if (Array.isArray(cur) && cur.length > 0) {
        const n = rng.pick([1, 2, 10, 1000, 5000]);
        const item = cur[rng.int(cur.length)];
        for (let i = 0; i < n; i++) cur.push(i < 10 ? clone(item) : item);
      } else if (Array.isArray(parent)) {
        parent.push(clone(cur));
      }
      return;
    case 6: // an own __proto__ key (what JSON.parse makes of "__proto__"), or another prototype name
      if (isObj(cur)) setOwn(cur, rng.pick(PROTO_KEYS), rng.chance(0.5) ? clone(root) : randomValue(rng));
      else if (parent !== undefined && !Array.isArray(parent)) setOwn(parent as Obj, rng.pick(PROTO_KEYS), clone(cur));
      return;
    case 7: // deeply nested arrays or objects
      return set(nested(rng.pick([10, 100, 1000, 5000]), rng.chance(0.5)));
    case 8: // another field's value (right shape, wrong place)
      return set(clone(getAt(root, randomPath(rng, root))));
    case 9: // empty it
      return set(Array.isArray(cur) ? [] : isObj(cur) ? {} : typeof cur === 'string' ? '' : null);
    case 10: // wrap it
      return set(rng.chance(0.5) ? [cur] : { value: cur });
    case 11: {
      // a very long string, or a long one made of something meaningful (a path, a name)
      const stem = typeof cur === 'string' ? cur : '/';
      return set(rng.chance(0.5) ? 'a'.repeat(rng.pick([4096, 65536, 1 << 20])) : `${stem}${'/x'.repeat(rng.pick([100, 5000]))}`);
    }
    case 12: // NUL or odd unicode spliced into a string
      if (typeof cur === 'string') {
        const at = rng.int(cur.length + 1);
        return set(cur.slice(0, at) + rng.pick(['\u0000', '\ud800', '😀', '\u202e', '/', '..', '=', ',']) + cur.slice(at));
      }
      return set(rng.pick(EDGE_STRING_LIST));
    default: // a number nudged across its range edge
      if (typeof cur === 'number') return set(rng.pick([cur + 1, cur - 1, -cur, cur * 2 ** 32, cur + 0.5, cur * 1e300]));
      return set(rng.pick(EDGE_NUMBERS));
  }
}

// ---------------------------------------------------------------------------------------------
// Structure-aware edits: edge values in specific fields

type Edit = (rng: Rng, s: Obj) => void;

/** The object at `path`, created (as {} or []) along the way. */
function ensure(root: Obj, path: readonly Key[], leafArray = false): Record<Key, unknown> {
  let v: Record<Key, unknown> = root;
  path.forEach((k, i) => {
    const last = i === path.length - 1;
    if (typeof v[k] !== 'object' || v[k] === null) v[k] = last && leafArray ? [] : typeof path[i + 1] === 'number' ? [] : {};
    v = v[k] as Record<Key, unknown>;
  });
  return v;
}

const U32_EDGES = [0, 1, TWO32 - 2, TWO32 - 1, TWO32, -1, 2 ** 53, 0.5];
const U64_EDGES = [0, 1, 2 ** 53 - 1, 2 ** 53, 2 ** 63, 2 ** 64 - 1, 2 ** 64, 1e308, -1, 0.5];

const EDITS: readonly Edit[] = [
  // rlimits at the u64 edges, soft above hard, duplicate types
  (rng, s) => {
    const p = ensure(s, ['process']);
    p.rlimits = [{ type: rng.pick(['RLIMIT_NOFILE', 'RLIMIT_CORE', 'RLIMIT_CPU', ...PROTO_KEYS]), soft: rng.pick(U64_EDGES), hard: rng.pick(U64_EDGES) }];
    if (rng.chance(0.3)) (p.rlimits as unknown[]).push(clone((p.rlimits as unknown[])[0]));
  },
  // user ids and umask at the u32 edges, many additional gids
  (rng, s) => {
    const u = ensure(s, ['process', 'user']);
    u[rng.pick(['uid', 'gid', 'umask'])] = rng.pick(U32_EDGES);
    if (rng.chance(0.3)) u.additionalGids = Array.from({ length: rng.pick([0, 1, 65, 10000]) }, (_, i) => (rng.chance(0.01) ? rng.pick(U32_EDGES) : i));
  },
  // id mappings at the u32 edges
  (rng, s) => {
    const l = ensure(s, ['linux']);
    const m = { containerID: rng.pick(U32_EDGES), hostID: rng.pick(U32_EDGES), size: rng.pick(U32_EDGES) };
    l[rng.pick(['uidMappings', 'gidMappings'])] = rng.chance(0.2) ? Array.from({ length: 1000 }, () => m) : [m];
  },
  // oomScoreAdj and consoleSize edges
  (rng, s) => {
    const p = ensure(s, ['process']);
    if (rng.chance(0.5)) p.oomScoreAdj = rng.pick([-1001, -1000, 0, 1000, 1001, 2 ** 31, NaN, 1.5]);
    else p.consoleSize = { height: rng.pick(U32_EDGES), width: rng.pick(U32_EDGES) };
  },
  // devices with edge numbers and odd paths
  (rng, s) => {
    const l = ensure(s, ['linux']);
    l.devices = [{
      type: rng.pick(['c', 'b', 'p', 'u', 'x', '']),
      path: rng.pick(['/dev/x', '/dev/../etc/x', '/dev', '/dev/', '/dev//x', '/dev/\u0000', 'dev/x', '/devx']),
      ...(rng.chance(0.8) ? { major: rng.pick([-1, 0, 1, TWO32 - 1, TWO32, 2 ** 53]) } : {}),
      ...(rng.chance(0.8) ? { minor: rng.pick([-1, 0, 1, TWO32 - 1, TWO32, 2 ** 53]) } : {}),
      ...(rng.chance(0.5) ? { fileMode: rng.pick([0, 0o7777, 0o10000, TWO32 - 1, TWO32]) } : {}),
      ...(rng.chance(0.3) ? { uid: rng.pick(U32_EDGES), gid: rng.pick(U32_EDGES) } : {}),
    }];
  },
  // argv and env: huge, empty, NUL, no '='
  (rng, s) => {
    const p = ensure(s, ['process']);
    switch (rng.int(5)) {
      case 0:
        p.args = Array.from({ length: rng.pick([0, 1, 4097, 20000]) }, () => 'a');
        break;
      case 1:
        p.args = [rng.pick(['', 'sh\u0000', 'x'.repeat(1 << 20), '\ud800'])];
        break;
      case 2:
        p.env = [rng.pick(['A', '=B', 'A=\u0000', '\u0000=1', 'A=B', 'x'.repeat(200000) + '=1'])];
        break;
      case 3:
        p.cwd = rng.pick(['', '.', 'rel', '/\u0000', '/' + 'd/'.repeat(3000), '/..']);
        break;
      default:
        p.env = Array.from({ length: 10000 }, (_, i) => `K${i}=v`);
    }
  },
  // capabilities: unknown names, prototype names, many entries
  (rng, s) => {
    const c = ensure(s, ['process', 'capabilities']);
    c[rng.pick(['bounding', 'effective', 'inheritable', 'permitted', 'ambient'])] = rng.chance(0.3)
      ? Array.from({ length: 5000 }, () => 'CAP_KILL')
      : [rng.pick(['CAP_CHOWN', 'CAP_CHECKPOINT_RESTORE', 'CAP_LAST', 'CAP_41', 'chown', '', ...PROTO_KEYS])];
  },
  // namespaces: joins, unknown types, duplicates, missing mount
  (rng, s) => {
    const l = ensure(s, ['linux']);
    const ns: Obj[] = [{ type: 'mount' }];
    const n = rng.int(4);
    for (let i = 0; i < n; i++) {
      ns.push({
        type: rng.pick(['pid', 'network', 'ipc', 'uts', 'user', 'cgroup', 'time', 'mount', 'net', ...PROTO_KEYS]),
        ...(rng.chance(0.5) ? { path: rng.pick(['/proc/self/ns/net', '/proc/self/ns/uts', '/nonexistent', 'relative', '/proc/self/ns/\u0000', '']) } : {}),
      });
    }
    if (rng.chance(0.2)) ns.shift();
    l.namespaces = ns;
  },
  // mounts: odd destinations, options (prototype names included), bind sources
  (rng, s) => {
    const mounts = ensure(s, ['mounts'], true) as unknown as unknown[];
    mounts.push({
      destination: rng.pick(['/', '/.', '//', '/..', '/mnt', 'mnt', '/mnt\u0000x', '/dev', '/dev/pts', '/sys/fs/cgroup']),
      ...(rng.chance(0.8) ? { type: rng.pick(['bind', 'tmpfs', 'proc', 'cgroup', 'sysfs', 'devpts', '', 'overlay']) } : {}),
      ...(rng.chance(0.7) ? { source: rng.pick(['/tmp', '/nonexistent', 'relative', '', 'tmpfs', '/tmp\u0000']) } : {}),
      options: Array.from({ length: rng.range(0, 4) }, () => rng.pick(['bind', 'rbind', 'ro', 'rw', 'idmap', 'ridmap', 'tmpcopyup', 'rprivate', 'size=1k', '', 'a,b', 'x\u0000', ...PROTO_KEYS])),
    });
  },
  // sysctl names and values
  (rng, s) => {
    const l = ensure(s, ['linux']);
    const sys: Obj = {};
    setOwn(sys, rng.pick(['net.ipv4.ip_forward', 'kernel.shmmax', 'kernel.core_pattern', 'net/../x', 'net..x', 'net.\u0000', '', 'kernel.hostname', ...PROTO_KEYS]), rng.pick(['1', '', '\u0000', 'x'.repeat(10000)]));
    l.sysctl = sys;
  },
  // cgroup resources: huge cpusets, edge limits, bad unified keys
  (rng, s) => {
    const r = ensure(s, ['linux', 'resources']);
    switch (rng.int(5)) {
      case 0: {
        // the largest range, repeated: a crafted config must not make Moat expand it n times
        const n = rng.pick([1, 2, 100, 2000, 20000]);
        ensure(s, ['linux', 'resources', 'cpu'])[rng.pick(['cpus', 'mems'])] = Array.from({ length: n }, () => '0-65535').join(',');
        break;
      }
      case 1:
        ensure(s, ['linux', 'resources', 'cpu'])[rng.pick(['cpus', 'mems'])] = rng.pick(['0-65536', '65535', '1-0', '0--1', ',', '0,', ' 0 ', '٣', '0x1']);
        break;
      case 2:
        ensure(s, ['linux', 'resources', 'memory'])[rng.pick(['limit', 'swap', 'reservation', 'swappiness'])] = rng.pick([-2, -1, 0, 1, 2 ** 63, 1e308, 101]);
        break;
      case 3:
        r.unified = { [rng.pick(['memory.max', 'memory/../x', '.', '..', 'x', 'a.b\u0000'])]: rng.pick(['max', '', '\u0000']) };
        break;
      default:
        r.hugepageLimits = [{ pageSize: rng.pick(['2MB', '0MB', '99999999999999999999999GB', 'MB', '2mb']), limit: rng.pick(U64_EDGES) }];
    }
  },
  // seccomp: prototype names for actions, ops, architectures and flags; edge errnos and indexes; huge profiles
  (rng, s) => {
    const l = ensure(s, ['linux']);
    const weird = (): string => rng.pick([...PROTO_KEYS, 'SCMP_ACT_ALLOW', 'SCMP_ACT_ERRNO', 'SCMP_ACT_NOTIFY', '', 'x']);
    const rule = (): Obj => ({
      names: rng.chance(0.1) ? [] : [rng.pick(['mount', 'write', 'read', '', 'no_such_syscall', 'constructor', 'socket'])],
      action: rng.chance(0.5) ? weird() : 'SCMP_ACT_ERRNO',
      ...(rng.chance(0.5) ? { errnoRet: rng.pick([0, 1, 4095, 4096, 65535, 65536, TWO32 - 1]) } : {}),
      ...(rng.chance(0.5)
        ? { args: [{ index: rng.pick([0, 5, 6, TWO32 - 1]), value: rng.pick(U64_EDGES), ...(rng.chance(0.5) ? { valueTwo: rng.pick(U64_EDGES) } : {}), op: rng.chance(0.5) ? rng.pick([...PROTO_KEYS, 'SCMP_CMP_EQ', '']) : 'SCMP_CMP_MASKED_EQ' }] }
        : {}),
    });
    l.seccomp = {
      defaultAction: rng.chance(0.3) ? weird() : 'SCMP_ACT_ALLOW',
      ...(rng.chance(0.3) ? { architectures: [rng.pick([...PROTO_KEYS, 'SCMP_ARCH_X86_64', 'SCMP_ARCH_NATIVE'])] } : {}),
      ...(rng.chance(0.3) ? { flags: [rng.pick([...PROTO_KEYS, 'SECCOMP_FILTER_FLAG_LOG'])] } : {}),
      ...(rng.chance(0.2) ? { listenerPath: rng.pick(['/run/x.sock', '', '\u0000']) } : {}),
      syscalls: rng.chance(0.1)
        ? Array.from({ length: 1500 }, (_, i) => ({ names: ['read'], action: 'SCMP_ACT_ERRNO', args: [{ index: i % 6, value: i, op: 'SCMP_CMP_EQ' }] }))
        : Array.from({ length: rng.range(0, 3) }, rule),
    };
  },
  // hooks with odd fields
  (rng, s) => {
    const h = ensure(s, ['hooks']);
    h[rng.pick(['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop', ...PROTO_KEYS])] = [{
      path: rng.pick(['/bin/true', 'true', '', '/bin/\u0000', '/']),
      ...(rng.chance(0.5) ? { args: [rng.pick(['x', '\u0000', ''])] } : {}),
      ...(rng.chance(0.5) ? { env: [rng.pick(['A=1', 'A', '=', 'A=\u0000'])] } : {}),
      ...(rng.chance(0.5) ? { timeout: rng.pick([0, 1, -1, 2 ** 31, 2 ** 53, 1.5, Infinity]) } : {}),
    }];
  },
  // hostname, domainname, root path, propagation, masked paths
  (rng, s) => {
    const target = rng.int(5);
    if (target === 0) s.hostname = rng.pick(['', 'x'.repeat(65), 'a\u0000', 'h']);
    else if (target === 1) s.domainname = rng.pick(['', 'x'.repeat(65), 'a\u0000']);
    else if (target === 2) ensure(s, ['root']).path = rng.pick(['', '/', 'rootfs\u0000', '../..', 'x'.repeat(5000)]);
    else if (target === 3) ensure(s, ['linux']).rootfsPropagation = rng.pick(['rprivate', 'shared', ...PROTO_KEYS, '']);
    else ensure(s, ['linux'])[rng.pick(['maskedPaths', 'readonlyPaths'])] = [rng.pick(['/proc/kcore', 'proc', '', '/\u0000', '/'])];
  },
  // terminal without a console, process missing
  (rng, s) => {
    if (rng.chance(0.5)) ensure(s, ['process']).terminal = true;
    else delete s.process;
  },
];

// ---------------------------------------------------------------------------------------------
// Checks

/** Splits a Moat JSON path back into keys; throws if it is not one. */
function pathKeys(path: string): Key[] {
  const keys: Key[] = [];
  const re = /(?:^|\.)([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/y;
  let at = 0;
  while (at < path.length) {
    re.lastIndex = at;
    const m = re.exec(path);
    if (m === null || m.index !== at) throw new Error(`ConfigError path ${JSON.stringify(path)} is not a JSON path (at offset ${at})`);
    if (m[1] !== undefined) {
      if (at > 0 && !m[0].startsWith('.')) throw new Error(`ConfigError path ${JSON.stringify(path)}: a key without a "." at offset ${at}`);
      keys.push(m[1]);
    } else if (m[2] !== undefined) keys.push(Number(m[2]));
    else keys.push(JSON.parse(m[3]!) as string);
    at = re.lastIndex;
  }
  return keys;
}

/**
 * Checks a ConfigError: typed, a message made of its path and a non-empty problem, a path in
 * Moat's syntax. With `input`, the path must point into it: every key but the last exists
 * there, so the error names the wrong field (the last key itself may be a missing one).
 */
function checkConfigError(err: unknown, what: string, input?: unknown): ConfigError {
  const e = expectTyped(err, ConfigError, what);
  assert.equal(typeof e.path, 'string');
  assert.ok(typeof e.problem === 'string' && e.problem.trim() !== '', `${what}: ConfigError without a problem: ${e.message}`);
  assert.equal(e.message, `invalid config: ${e.path || '(root)'}: ${e.problem}`);
  assert.doesNotMatch(e.problem, /\bundefined\b|\[object /, `${what}: unclear problem text: ${e.problem.slice(0, 300)}`);
  const keys = pathKeys(e.path);
  if (input !== undefined) {
    if (keys.length === 0) {
      assert.ok(!isObj(input), `${what}: a ConfigError at the root for an object input: ${e.message.slice(0, 300)}`);
    }
    let v: unknown = input;
    for (const k of keys.slice(0, -1)) {
      const has = (Array.isArray(v) && typeof k === 'number' && k < v.length) || (isObj(v) && typeof k === 'string' && Object.hasOwn(v, k));
      assert.ok(has, `${what}: ConfigError path ${e.path} does not exist in the input (no ${String(k)}): ${e.message.slice(0, 300)}`);
      v = (v as Record<Key, unknown>)[k];
    }
  }
  return e;
}

/** Anything the plan builders may throw: a MoatError subclass, with a clear message (and a well-formed path for a ConfigError). */
function checkMoatError(err: unknown, what: string): void {
  const e = expectTyped(err, MoatError, what);
  if (e instanceof ConfigError) checkConfigError(e, what);
}

const quietLog = { warn() {}, debug() {}, error() {} } as unknown as Logger;
const SENTRY_FILTER = buildSentryFilter('balanced');
const BUNDLE = mkdtempSync(join(tmpdir(), 'moat-fuzz-config-'));
after(() => rmSync(BUNDLE, { recursive: true, force: true }));

/** The request `moat create` would make for `spec` (no process is started: buildPlan only encodes). */
function request(rng: Rng, spec: Spec, jailed = false): CreateRequest {
  return {
    id: rng.pick(['fuzz', 'a'.repeat(64), 'x-y_z.1']),
    dir: '/nonexistent/state',
    bundle: BUNDLE,
    rootfs: join(BUNDLE, 'rootfs'),
    spec,
    preserveFds: rng.pick([0, 0, 1, 3]),
    noNewKeyring: rng.chance(0.3),
    foreground: rng.chance(0.5),
    systemdCgroup: false,
    hookState: () => '{}',
    recordCgroups: () => {},
    log: quietLog,
    ...(jailed ? { sentryJail: { filter: SENTRY_FILTER, socket: '/nonexistent/sentry.sock' } } : {}),
  };
}

/** Counts of what a target's inputs did (for the diagnostic line). */
interface Tally {
  parsed: number;
  refused: number;
  planned: number;
  planRefused: number;
}
const tally = (): Tally => ({ parsed: 0, refused: 0, planned: 0, planRefused: 0 });
const showTally = (t: Tally): string => `${t.parsed} parsed, ${t.refused} refused; plan: ${t.planned} built, ${t.planRefused} refused`;

/**
 * Runs buildPlan on a parsed spec: a plan, or a MoatError. One time in five the spec first goes
 * through the sentry backend's rewrite (sentrySpec, sandboxLimits) and the plan gets its jail,
 * as `moat create --isolation sentry` does.
 */
function planOrMoatError(rng: Rng, spec: Spec, t: Tally): void {
  const jailed = rng.chance(0.2);
  if (jailed) {
    try {
      spec = sentrySpec(spec);
      const limits = sandboxLimits(spec);
      assert.ok(Number.isInteger(limits.cpus) && limits.cpus >= 1, `sandboxLimits: ${limits.cpus} cpus`);
    } catch (e) {
      checkMoatError(e, 'sentrySpec');
      t.planRefused++;
      return;
    }
  }
  const req = request(rng, spec, jailed);
  // mostly the console socket the CLI would require (or refuse); sometimes the wrong choice
  const console = (spec.process?.terminal === true) !== rng.chance(0.1);
  const extras = { fifo: '/nonexistent/exec.fifo', ...(console ? { consoleSocket: '/nonexistent/console.sock' } : {}) };
  let plan: Buffer;
  try {
    plan = buildPlan(req, extras);
  } catch (e) {
    checkMoatError(e, 'buildPlan');
    t.planRefused++;
    return;
  }
  assert.ok(Buffer.isBuffer(plan) && plan.subarray(0, 8).toString('latin1') === 'MOATPLAN', 'buildPlan returned no plan');
  t.planned++;
}

/** parseSpec, then (when it accepts) buildPlan. */
function parseThenPlan(rng: Rng, input: unknown, t: Tally): void {
  let spec: Spec;
  try {
    spec = parseSpec(input);
  } catch (e) {
    checkConfigError(e, 'parseSpec', input);
    t.refused++;
    return;
  }
  t.parsed++;
  planOrMoatError(rng, spec, t);
}

/** A mutated copy of a weighted random baseline. */
function mutatedBaseline(rng: Rng, maxMutations = 4): Obj {
  const base = rng.weighted(BASELINES.map((b) => [b.weight, b] as const));
  const spec = clone(base.spec);
  const n = rng.range(1, maxMutations);
  for (let i = 0; i < n; i++) mutateJson(rng, spec);
  return spec;
}

/** A baseline with 1 to 3 structure-aware edits. */
function editedBaseline(rng: Rng): Obj {
  const base = rng.weighted(BASELINES.map((b) => [b.weight, b] as const));
  const spec = clone(base.spec);
  const n = rng.range(1, 3);
  for (let i = 0; i < n; i++) rng.pick(EDITS)(rng, spec);
  return spec;
}

// ---------------------------------------------------------------------------------------------

describe('fuzz: config.json (parseSpec, loadSpec, parseProcess) and the plan built from it', { timeout: 120_000 }, () => {
  it('every baseline parses and plans (the mutations start from valid input)', () => {
    const rng = new Rng(1);
    for (const b of BASELINES) {
      const spec = parseSpec(clone(b.spec));
      const req = { ...request(rng, spec), preserveFds: 0 };
      const plan = buildPlan(req, { fifo: '/nonexistent/exec.fifo', ...(spec.process?.terminal ? { consoleSocket: '/nonexistent/console.sock' } : {}) });
      assert.equal(plan.subarray(0, 8).toString('latin1'), 'MOATPLAN', `${b.name} does not plan`);
    }
  });

  it('mount options that are Object.prototype names are data, not flags', () => {
    // a table lookup with `in` would take "constructor" for a known flag and drop it silently
    const words = ['constructor', 'toString', '__proto__', 'valueOf', 'hasOwnProperty'];
    assert.deepEqual(parseMountOptions(words, 'mounts[0].options'), { flags: 0, propagation: 0, data: words });
  });

  it('parseSpec + buildPlan: random values', (t) => {
    const c = tally();
    const r = fuzz({
      name: 'parseSpec random values',
      count: 4000,
      generate: (rng) => {
        if (rng.chance(0.3)) return randomValue(rng);
        // an object with the spec's top-level keys, each a random value (reaches further than pure noise)
        const o: Obj = {};
        for (const k of ['ociVersion', 'root', 'process', 'mounts', 'linux', 'hooks', 'hostname', 'annotations', 'domainname']) {
          if (rng.chance(0.6)) setOwn(o, k, k === 'ociVersion' ? '1.2.0' : k === 'root' && rng.chance(0.5) ? { path: 'rootfs' } : randomValue(rng));
        }
        return o;
      },
      check: (input, rng) => parseThenPlan(rng, input, c),
    });
    t.diagnostic(`${describeRun('parseSpec random values', r)}; ${showTally(c)}`);
  });

  it('parseSpec + buildPlan: mutations of valid configs', (t) => {
    const c = tally();
    const r = fuzz({
      name: 'parseSpec mutations',
      count: 6000,
      generate: (rng) => mutatedBaseline(rng),
      check: (input, rng) => parseThenPlan(rng, input, c),
    });
    t.diagnostic(`${describeRun('parseSpec mutations', r)}; ${showTally(c)}`);
    assert.ok(REPLAYING || (c.parsed > 300 && c.planned > 100), `too few mutations stay valid to reach buildPlan: ${showTally(c)}`);
  });

  it('parseSpec + buildPlan: edge values in specific fields', (t) => {
    const c = tally();
    const r = fuzz({
      name: 'parseSpec edge values',
      count: 4000,
      generate: (rng) => editedBaseline(rng),
      check: (input, rng) => parseThenPlan(rng, input, c),
    });
    t.diagnostic(`${describeRun('parseSpec edge values', r)}; ${showTally(c)}`);
    assert.ok(REPLAYING || (c.parsed > 300 && c.planned > 100), `too few edits stay valid to reach buildPlan: ${showTally(c)}`);
  });

  it('loadSpec: random bytes, mutated JSON text, huge exponents, deep nesting', (t) => {
    const c = tally();
    const file = join(BUNDLE, 'config.json');
    const r = fuzz({
      name: 'loadSpec',
      count: 2500,
      generate: (rng): Buffer => {
        const text = (): string => {
          try {
            return JSON.stringify(mutatedBaseline(rng, 2));
          } catch {
            return JSON.stringify(rng.pick(BASELINES).spec); // a mutation nested too deep for JSON.stringify
          }
        };
        switch (rng.int(7)) {
          case 0: // random bytes
            return rng.bytes(rng.size(4096));
          case 1: // byte-level mutations of valid JSON text
            return mutateBytes(rng, Buffer.from(JSON.stringify(rng.pick(BASELINES).spec)), 6);
          case 2: {
            // a number token replaced by one JSON allows but a double cannot hold (±Infinity, 0, rounding)
            const s = JSON.stringify(rng.pick(BASELINES).spec);
            const nums = [...s.matchAll(/(?<=[:[,])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=[,\]}])/g)];
            const big = rng.pick(['1e999', '-1e999', '1e-999', '-0', '18446744073709551615', '18446744073709551616', '4294967296', '1' + '0'.repeat(400), '0.' + '0'.repeat(400) + '1', '1.5e3', '1E+2']);
            if (nums.length === 0) return Buffer.from(s);
            const m = rng.pick(nums);
            return Buffer.from(s.slice(0, m.index) + big + s.slice(m.index! + m[0].length));
          }
          case 3: {
            // deep nesting under a known or an unknown key
            const depth = rng.pick([100, 1000, 10000, 100000]);
            const key = rng.pick(['x', 'process', 'linux', 'mounts', 'annotations']);
            const open = rng.chance(0.5) ? '['.repeat(depth) : '{"a":'.repeat(depth);
            const close = open.startsWith('[') ? ']'.repeat(depth) : '}'.repeat(depth);
            return Buffer.from(`{"ociVersion":"1.2.0","root":{"path":"rootfs"},"${key}":${open}1${close}}`);
          }
          case 4: {
            // duplicate keys (JSON.parse keeps the last) and "__proto__" keys in the text
            const s = text();
            const dup = rng.pick(['"process":5,', '"linux":{"namespaces":"x"},', '"__proto__":{"process":{"args":["x"],"cwd":"/"}},', '"root":null,', '"ociVersion":[],']);
            return Buffer.from(rng.chance(0.5) ? s.replace('{', `{${dup}`) : s.replace(/}$/, `,${dup.slice(0, -1)}}`));
          }
          case 5: // BOM, invalid UTF-8, truncation
            return Buffer.concat([rng.pick([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from([0xff, 0xfe]), Buffer.from([0xc3]), Buffer.alloc(0)]), Buffer.from(text()).subarray(0, rng.chance(0.3) ? rng.int(500) : undefined)]);
          default:
            return Buffer.from(text());
        }
      },
      check: (input, rng) => {
        writeFileSync(file, input);
        let spec: Spec;
        try {
          spec = loadSpec(BUNDLE);
        } catch (e) {
          checkConfigError(e, 'loadSpec');
          c.refused++;
          return;
        }
        c.parsed++;
        planOrMoatError(rng, spec, c);
      },
    });
    t.diagnostic(`${describeRun('loadSpec', r)}; ${showTally(c)}`);
  });

  it('parseProcess + buildExecPlan: random, mutated and edge processes (exec --process, containerd Exec)', (t) => {
    const c = tally();
    const container = parseSpec(clone(BASELINES[0]!.spec));
    const processes = BASELINES.map((b) => b.spec.process as Obj);
    const r = fuzz({
      name: 'parseProcess',
      count: 5000,
      generate: (rng): unknown => {
        switch (rng.int(4)) {
          case 0:
            return randomValue(rng);
          case 1: {
            const p = clone(rng.pick(processes));
            const n = rng.range(1, 4);
            for (let i = 0; i < n; i++) mutateJson(rng, p);
            return p;
          }
          case 2: {
            // the edits work on a whole spec: apply them and take its process
            const s: Obj = { process: clone(rng.pick(processes)) };
            rng.pick(EDITS.slice(0, 7))(rng, s);
            return s.process;
          }
          default: {
            // the JSON text containerd sends (ExecProcessRequest.spec), mutated as bytes
            const text = mutateBytes(rng, Buffer.from(JSON.stringify(rng.pick(processes))), 3).toString('utf8');
            try {
              return JSON.parse(text) as unknown;
            } catch {
              return text;
            }
          }
        }
      },
      check: (input, rng) => {
        let proc: ProcessSpec;
        try {
          proc = parseProcess(input);
        } catch (e) {
          checkConfigError(e, 'parseProcess', input);
          c.refused++;
          return;
        }
        c.parsed++;
        try {
          const plan = buildExecPlan({
            id: 'fuzz',
            initPid: 1,
            spec: container,
            process: proc,
            preserveFds: rng.pick([0, 2]),
            foreground: rng.chance(0.5),
            ...((proc.terminal === true) !== rng.chance(0.1) ? { consoleSocket: '/nonexistent/console.sock' } : {}),
          });
          assert.ok(plan.subarray(0, 8).toString('latin1') === 'MOATPLAN');
          c.planned++;
        } catch (e) {
          checkMoatError(e, 'buildExecPlan');
          c.planRefused++;
        }
      },
    });
    t.diagnostic(`${describeRun('parseProcess', r)}; ${showTally(c)}`);
  });
});
