/**
 * Protobuf messages of Moat's containerd shim v2 (`containerd-shim-moat-v1`), declared by hand
 * with protobufjs reflection (no .proto file is read at run time: the shim is bundled into one
 * file). Field numbers and types are those of containerd 1.6:
 *
 * - `containerd.task.v2` (runtime/v2/task/shim.proto): every request and response of service Task;
 * - `containerd.types` (api/types/mount.proto, metrics.proto): Mount, Metric;
 * - `containerd.v1.types` (api/types/task/task.proto): the Status enum, ProcessInfo;
 * - `containerd.events` (api/events/task.proto): the task events the shim publishes;
 * - `containerd.services.events.ttrpc.v1` (api/services/ttrpc/events/v1/events.proto):
 *   ForwardRequest and its Envelope;
 * - `containerd.runc.v1` (runtime/v2/runc/options/oci.proto): Options, CheckpointOptions,
 *   ProcessDetails (the runtime options containerd sends in CreateTaskRequest.options);
 * - `runtimeoptions.v1` (pkg/runtimeoptions/v1/api.proto): Options, CRI's generic runtime options
 *   (a config file path, or since containerd 1.7 the TOML body itself);
 * - `io.containerd.cgroups.v1` (containerd/cgroups stats/v1/metrics.proto) and
 *   `io.containerd.cgroups.v2` (containerd/cgroups v2/stats/metrics.proto): Metrics, what Stats
 *   returns on cgroup v1 / hybrid and on unified cgroup v2 hosts;
 * - `google.protobuf` Any, Timestamp, Empty and `google.rpc.Status`;
 * - `ttrpc` Request, Response, KeyValue, StringList (github.com/containerd/ttrpc types.go;
 *   ttrpc declares them as Go structs, the package name here is ours and never on the wire).
 *
 * JS field names are camelCase (`exec_id` is `execId`, `type_url` is `typeUrl`); the wire only
 * carries field numbers. {@link decode} returns plain objects with every field present:
 * scalars default to 0 / "" / false, repeated fields to [], maps to {}, absent message fields
 * to null; 64-bit integers come out as JS numbers (exact up to 2^53, which pids, exit statuses,
 * timestamps and cgroup counters stay below; `decode(..., String)` gives exact decimal strings
 * instead), bytes as Buffers, enums as numbers. To encode a uint64 above 2^53 exactly (cgroup
 * "no limit" values), pass {@link uint64}'s result rather than a number.
 */
import protobuf from 'protobufjs/light.js';
import { MoatError } from '../errors.js';

/** Bytes the shim received or must send cannot be (de)serialized as the message it should be. */
export class ShimProtocolError extends MoatError {}

// ---------------------------------------------------------------------------------------------
// The descriptor (protobufjs JSON form). Every message is proto3: implicit presence, so fields
// equal to their default value are not written, as Go's encoder does.

/** A protobufjs JSON field descriptor. */
interface FieldJson {
  type: string;
  id: number;
  rule?: 'repeated';
  keyType?: string;
}
type FieldsJson = Record<string, FieldJson>;

const f = (type: string, id: number): FieldJson => ({ type, id });
const rep = (type: string, id: number): FieldJson => ({ type, id, rule: 'repeated' });
const map = (keyType: string, type: string, id: number): FieldJson => ({ keyType, type, id });
const msg = (fields: FieldsJson): { fields: FieldsJson; edition: string } => ({ fields, edition: 'proto3' });

const ANY = '.google.protobuf.Any';
const TIMESTAMP = '.google.protobuf.Timestamp';
const MOUNT = '.containerd.types.Mount';

/** The id/exec_id pair most Task requests are made of. */
const idExec = (): FieldsJson => ({ id: f('string', 1), execId: f('string', 2) });
const idOnly = (): FieldsJson => ({ id: f('string', 1) });
const containerOnly = (): FieldsJson => ({ containerId: f('string', 1) });

/**
 * The uint64 fields 1..32 of io.containerd.cgroups.v1.MemoryStat, in field-number order (33..36
 * are the MemoryEntry fields usage, swap, kernel, kernel_tcp).
 */
export const V1_MEMORY_STAT_FIELDS = [
  'cache', 'rss', 'rssHuge', 'mappedFile', 'dirty', 'writeback', 'pgPgIn', 'pgPgOut', 'pgFault',
  'pgMajFault', 'inactiveAnon', 'activeAnon', 'inactiveFile', 'activeFile', 'unevictable',
  'hierarchicalMemoryLimit', 'hierarchicalSwapLimit', 'totalCache', 'totalRss', 'totalRssHuge',
  'totalMappedFile', 'totalDirty', 'totalWriteback', 'totalPgPgIn', 'totalPgPgOut', 'totalPgFault',
  'totalPgMajFault', 'totalInactiveAnon', 'totalActiveAnon', 'totalInactiveFile', 'totalActiveFile',
  'totalUnevictable',
] as const;

/** The fields of io.containerd.cgroups.v2.MemoryStat (all uint64), in field-number order from 1. */
export const V2_MEMORY_STAT_FIELDS = [
  'anon', 'file', 'kernelStack', 'slab', 'sock', 'shmem', 'fileMapped', 'fileDirty',
  'fileWriteback', 'anonThp', 'inactiveAnon', 'activeAnon', 'inactiveFile', 'activeFile',
  'unevictable', 'slabReclaimable', 'slabUnreclaimable', 'pgfault', 'pgmajfault',
  'workingsetRefault', 'workingsetActivate', 'workingsetNodereclaim', 'pgrefill', 'pgscan',
  'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'thpFaultAlloc',
  'thpCollapseAlloc', 'usage', 'usageLimit', 'swapUsage', 'swapLimit',
] as const;

const DESCRIPTOR = {
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: msg({ typeUrl: f('string', 1), value: f('bytes', 2) }),
            Timestamp: msg({ seconds: f('int64', 1), nanos: f('int32', 2) }),
            Empty: msg({}),
          },
        },
        rpc: {
          nested: {
            Status: msg({ code: f('int32', 1), message: f('string', 2), details: rep(ANY, 3) }),
          },
        },
      },
    },
    ttrpc: {
      nested: {
        Request: msg({
          service: f('string', 1),
          method: f('string', 2),
          payload: f('bytes', 3),
          timeoutNano: f('int64', 4),
          metadata: rep('.ttrpc.KeyValue', 5),
        }),
        Response: msg({ status: f('.google.rpc.Status', 1), payload: f('bytes', 2) }),
        KeyValue: msg({ key: f('string', 1), value: f('string', 2) }),
        StringList: msg({ list: rep('string', 1) }),
      },
    },
    containerd: {
      nested: {
        types: {
          nested: {
            Mount: msg({
              type: f('string', 1),
              source: f('string', 2),
              target: f('string', 3),
              options: rep('string', 4),
            }),
            Metric: msg({ timestamp: f(TIMESTAMP, 1), id: f('string', 2), data: f(ANY, 3) }),
          },
        },
        v1: {
          nested: {
            types: {
              nested: {
                Status: {
                  values: { UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4, PAUSING: 5 },
                },
                Process: msg({
                  containerId: f('string', 1),
                  id: f('string', 2),
                  pid: f('uint32', 3),
                  status: f('.containerd.v1.types.Status', 4),
                  stdin: f('string', 5),
                  stdout: f('string', 6),
                  stderr: f('string', 7),
                  terminal: f('bool', 8),
                  exitStatus: f('uint32', 9),
                  exitedAt: f(TIMESTAMP, 10),
                }),
                ProcessInfo: msg({ pid: f('uint32', 1), info: f(ANY, 2) }),
              },
            },
          },
        },
        task: {
          nested: {
            v2: {
              nested: {
                CreateTaskRequest: msg({
                  id: f('string', 1),
                  bundle: f('string', 2),
                  rootfs: rep(MOUNT, 3),
                  terminal: f('bool', 4),
                  stdin: f('string', 5),
                  stdout: f('string', 6),
                  stderr: f('string', 7),
                  checkpoint: f('string', 8),
                  parentCheckpoint: f('string', 9),
                  options: f(ANY, 10),
                }),
                CreateTaskResponse: msg({ pid: f('uint32', 1) }),
                DeleteRequest: msg(idExec()),
                DeleteResponse: msg({
                  pid: f('uint32', 1),
                  exitStatus: f('uint32', 2),
                  exitedAt: f(TIMESTAMP, 3),
                }),
                ExecProcessRequest: msg({
                  id: f('string', 1),
                  execId: f('string', 2),
                  terminal: f('bool', 3),
                  stdin: f('string', 4),
                  stdout: f('string', 5),
                  stderr: f('string', 6),
                  spec: f(ANY, 7),
                }),
                ExecProcessResponse: msg({}),
                ResizePtyRequest: msg({ ...idExec(), width: f('uint32', 3), height: f('uint32', 4) }),
                StateRequest: msg(idExec()),
                StateResponse: msg({
                  id: f('string', 1),
                  bundle: f('string', 2),
                  pid: f('uint32', 3),
                  status: f('.containerd.v1.types.Status', 4),
                  stdin: f('string', 5),
                  stdout: f('string', 6),
                  stderr: f('string', 7),
                  terminal: f('bool', 8),
                  exitStatus: f('uint32', 9),
                  exitedAt: f(TIMESTAMP, 10),
                  execId: f('string', 11),
                }),
                KillRequest: msg({ ...idExec(), signal: f('uint32', 3), all: f('bool', 4) }),
                CloseIORequest: msg({ ...idExec(), stdin: f('bool', 3) }),
                PidsRequest: msg(idOnly()),
                PidsResponse: msg({ processes: rep('.containerd.v1.types.ProcessInfo', 1) }),
                CheckpointTaskRequest: msg({ id: f('string', 1), path: f('string', 2), options: f(ANY, 3) }),
                UpdateTaskRequest: msg({
                  id: f('string', 1),
                  resources: f(ANY, 2),
                  annotations: map('string', 'string', 3),
                }),
                StartRequest: msg(idExec()),
                StartResponse: msg({ pid: f('uint32', 1) }),
                WaitRequest: msg(idExec()),
                WaitResponse: msg({ exitStatus: f('uint32', 1), exitedAt: f(TIMESTAMP, 2) }),
                StatsRequest: msg(idOnly()),
                StatsResponse: msg({ stats: f(ANY, 1) }),
                ConnectRequest: msg(idOnly()),
                ConnectResponse: msg({
                  shimPid: f('uint32', 1),
                  taskPid: f('uint32', 2),
                  version: f('string', 3),
                }),
                ShutdownRequest: msg({ id: f('string', 1), now: f('bool', 2) }),
                PauseRequest: msg(idOnly()),
                ResumeRequest: msg(idOnly()),
              },
            },
          },
        },
        events: {
          nested: {
            TaskCreate: msg({
              containerId: f('string', 1),
              bundle: f('string', 2),
              rootfs: rep(MOUNT, 3),
              io: f('.containerd.events.TaskIO', 4),
              checkpoint: f('string', 5),
              pid: f('uint32', 6),
            }),
            TaskStart: msg({ ...containerOnly(), pid: f('uint32', 2) }),
            TaskDelete: msg({
              ...containerOnly(),
              pid: f('uint32', 2),
              exitStatus: f('uint32', 3),
              exitedAt: f(TIMESTAMP, 4),
              id: f('string', 5),
            }),
            TaskIO: msg({
              stdin: f('string', 1),
              stdout: f('string', 2),
              stderr: f('string', 3),
              terminal: f('bool', 4),
            }),
            TaskExit: msg({
              ...containerOnly(),
              id: f('string', 2),
              pid: f('uint32', 3),
              exitStatus: f('uint32', 4),
              exitedAt: f(TIMESTAMP, 5),
            }),
            TaskOOM: msg(containerOnly()),
            TaskExecAdded: msg({ ...containerOnly(), execId: f('string', 2) }),
            TaskExecStarted: msg({ ...containerOnly(), execId: f('string', 2), pid: f('uint32', 3) }),
            TaskPaused: msg(containerOnly()),
            TaskResumed: msg(containerOnly()),
            TaskCheckpointed: msg({ ...containerOnly(), checkpoint: f('string', 2) }),
          },
        },
        services: {
          nested: {
            events: {
              nested: {
                ttrpc: {
                  nested: {
                    v1: {
                      nested: {
                        ForwardRequest: msg({
                          envelope: f('.containerd.services.events.ttrpc.v1.Envelope', 1),
                        }),
                        Envelope: msg({
                          timestamp: f(TIMESTAMP, 1),
                          namespace: f('string', 2),
                          topic: f('string', 3),
                          event: f(ANY, 4),
                        }),
                      },
                    },
                  },
                },
              },
            },
          },
        },
        runc: {
          nested: {
            v1: {
              nested: {
                Options: msg({
                  noPivotRoot: f('bool', 1),
                  noNewKeyring: f('bool', 2),
                  shimCgroup: f('string', 3),
                  ioUid: f('uint32', 4),
                  ioGid: f('uint32', 5),
                  binaryName: f('string', 6),
                  root: f('string', 7),
                  criuPath: f('string', 8),
                  systemdCgroup: f('bool', 9),
                  criuImagePath: f('string', 10),
                  criuWorkPath: f('string', 11),
                }),
                CheckpointOptions: msg({
                  exit: f('bool', 1),
                  openTcp: f('bool', 2),
                  externalUnixSockets: f('bool', 3),
                  terminal: f('bool', 4),
                  fileLocks: f('bool', 5),
                  emptyNamespaces: rep('string', 6),
                  cgroupsMode: f('string', 7),
                  imagePath: f('string', 8),
                  workPath: f('string', 9),
                }),
                ProcessDetails: msg({ execId: f('string', 1) }),
              },
            },
          },
        },
      },
    },
    runtimeoptions: {
      nested: {
        v1: {
          nested: {
            // containerd pkg/runtimeoptions/v1/api.proto; config_body was added in containerd 1.7.
            Options: msg({ typeUrl: f('string', 1), configPath: f('string', 2), configBody: f('bytes', 3) }),
          },
        },
      },
    },
    io: {
      nested: {
        containerd: {
          nested: {
            cgroups: {
              nested: {
                v1: {
                  nested: {
                    Metrics: msg({
                      hugetlb: rep('HugetlbStat', 1),
                      pids: f('PidsStat', 2),
                      cpu: f('CPUStat', 3),
                      memory: f('MemoryStat', 4),
                      blkio: f('BlkIOStat', 5),
                      rdma: f('RdmaStat', 6),
                      network: rep('NetworkStat', 7),
                      cgroupStats: f('CgroupStats', 8),
                      memoryOomControl: f('MemoryOomControl', 9),
                    }),
                    HugetlbStat: msg({
                      usage: f('uint64', 1),
                      max: f('uint64', 2),
                      failcnt: f('uint64', 3),
                      pagesize: f('string', 4),
                    }),
                    PidsStat: msg({ current: f('uint64', 1), limit: f('uint64', 2) }),
                    CPUStat: msg({ usage: f('CPUUsage', 1), throttling: f('Throttle', 2) }),
                    // nanoseconds
                    CPUUsage: msg({
                      total: f('uint64', 1),
                      kernel: f('uint64', 2),
                      user: f('uint64', 3),
                      perCpu: rep('uint64', 4),
                    }),
                    Throttle: msg({
                      periods: f('uint64', 1),
                      throttledPeriods: f('uint64', 2),
                      throttledTime: f('uint64', 3),
                    }),
                    MemoryStat: msg({
                      ...Object.fromEntries(V1_MEMORY_STAT_FIELDS.map((name, i) => [name, f('uint64', i + 1)])),
                      usage: f('MemoryEntry', 33),
                      swap: f('MemoryEntry', 34),
                      kernel: f('MemoryEntry', 35),
                      kernelTcp: f('MemoryEntry', 36),
                    }),
                    MemoryEntry: msg({
                      limit: f('uint64', 1),
                      usage: f('uint64', 2),
                      max: f('uint64', 3),
                      failcnt: f('uint64', 4),
                    }),
                    MemoryOomControl: msg({
                      oomKillDisable: f('uint64', 1),
                      underOom: f('uint64', 2),
                      oomKill: f('uint64', 3),
                    }),
                    BlkIOStat: msg({
                      ioServiceBytesRecursive: rep('BlkIOEntry', 1),
                      ioServicedRecursive: rep('BlkIOEntry', 2),
                      ioQueuedRecursive: rep('BlkIOEntry', 3),
                      ioServiceTimeRecursive: rep('BlkIOEntry', 4),
                      ioWaitTimeRecursive: rep('BlkIOEntry', 5),
                      ioMergedRecursive: rep('BlkIOEntry', 6),
                      ioTimeRecursive: rep('BlkIOEntry', 7),
                      sectorsRecursive: rep('BlkIOEntry', 8),
                    }),
                    BlkIOEntry: msg({
                      op: f('string', 1),
                      device: f('string', 2),
                      major: f('uint64', 3),
                      minor: f('uint64', 4),
                      value: f('uint64', 5),
                    }),
                    RdmaStat: msg({ current: rep('RdmaEntry', 1), limit: rep('RdmaEntry', 2) }),
                    RdmaEntry: msg({
                      device: f('string', 1),
                      hcaHandles: f('uint32', 2),
                      hcaObjects: f('uint32', 3),
                    }),
                    NetworkStat: msg({
                      name: f('string', 1),
                      rxBytes: f('uint64', 2),
                      rxPackets: f('uint64', 3),
                      rxErrors: f('uint64', 4),
                      rxDropped: f('uint64', 5),
                      txBytes: f('uint64', 6),
                      txPackets: f('uint64', 7),
                      txErrors: f('uint64', 8),
                      txDropped: f('uint64', 9),
                    }),
                    CgroupStats: msg({
                      nrSleeping: f('uint64', 1),
                      nrRunning: f('uint64', 2),
                      nrStopped: f('uint64', 3),
                      nrUninterruptible: f('uint64', 4),
                      nrIoWait: f('uint64', 5),
                    }),
                  },
                },
                v2: {
                  nested: {
                    Metrics: msg({
                      pids: f('PidsStat', 1),
                      cpu: f('CPUStat', 2),
                      memory: f('MemoryStat', 4),
                      rdma: f('RdmaStat', 5),
                      io: f('IOStat', 6),
                      hugetlb: rep('HugeTlbStat', 7),
                      memoryEvents: f('MemoryEvents', 8),
                    }),
                    PidsStat: msg({ current: f('uint64', 1), limit: f('uint64', 2) }),
                    CPUStat: msg({
                      usageUsec: f('uint64', 1),
                      userUsec: f('uint64', 2),
                      systemUsec: f('uint64', 3),
                      nrPeriods: f('uint64', 4),
                      nrThrottled: f('uint64', 5),
                      throttledUsec: f('uint64', 6),
                    }),
                    MemoryStat: msg(Object.fromEntries(V2_MEMORY_STAT_FIELDS.map((name, i) => [name, f('uint64', i + 1)]))),
                    MemoryEvents: msg({
                      low: f('uint64', 1),
                      high: f('uint64', 2),
                      max: f('uint64', 3),
                      oom: f('uint64', 4),
                      oomKill: f('uint64', 5),
                    }),
                    RdmaStat: msg({ current: rep('RdmaEntry', 1), limit: rep('RdmaEntry', 2) }),
                    RdmaEntry: msg({
                      device: f('string', 1),
                      hcaHandles: f('uint32', 2),
                      hcaObjects: f('uint32', 3),
                    }),
                    IOStat: msg({ usage: rep('IOEntry', 1) }),
                    IOEntry: msg({
                      major: f('uint64', 1),
                      minor: f('uint64', 2),
                      rbytes: f('uint64', 3),
                      wbytes: f('uint64', 4),
                      rios: f('uint64', 5),
                      wios: f('uint64', 6),
                    }),
                    HugeTlbStat: msg({ current: f('uint64', 1), max: f('uint64', 2), pagesize: f('string', 3) }),
                  },
                },
              },
            },
          },
        },
      },
    },
  },
};

/** The reflection root holding every message above, resolved once at module load. */
const root: protobuf.Root = protobuf.Root.fromJSON(DESCRIPTOR);

/** How decode turns messages into plain objects (see the module comment). */
const TO_OBJECT: protobuf.IConversionOptions & { longs: NumberConstructor | StringConstructor } = {
  longs: Number,
  enums: Number,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: false,
  json: false,
};

const types = new Map<string, protobuf.Type>();

/** The reflected type of a full message name (no leading dot); throws for an unknown name. */
function typeOf(typeName: string): protobuf.Type {
  let t = types.get(typeName);
  if (t === undefined) {
    const found = typeName === '' ? null : root.lookup(typeName);
    if (!(found instanceof protobuf.Type)) throw new ShimProtocolError(`unknown protobuf message type "${typeName}"`);
    t = found;
    types.set(typeName, t);
  }
  return t;
}

/**
 * Runs protobufjs's code generation for the messages every container's life uses (it happens
 * on first use of each type), so a warm shim standby answers its first requests at full speed.
 */
export function warmTypes(): void {
  for (const name of ['CreateTaskRequest', 'CreateTaskResponse', 'StartRequest', 'StartResponse', 'WaitRequest', 'WaitResponse', 'StateRequest',
    'StateResponse', 'DeleteRequest', 'DeleteResponse', 'ConnectRequest', 'ConnectResponse', 'ShutdownRequest', 'KillRequest']) {
    const t = `containerd.task.v2.${name}`;
    decode(t, encode(t, {}));
  }
  for (const t of ['ttrpc.Request', 'ttrpc.Response', 'containerd.services.events.ttrpc.v1.ForwardRequest', 'containerd.events.TaskExit',
    'containerd.events.TaskCreate', 'containerd.events.TaskStart', 'containerd.events.TaskDelete']) {
    if (isKnownType(t)) decode(t, encode(t, {}));
  }
}

/** Whether `typeName` (a full message name, e.g. `containerd.events.TaskExit`) is declared here. */
export function isKnownType(typeName: string): boolean {
  try {
    typeOf(typeName);
    return true;
  } catch {
    return false;
  }
}

/** The message of an error thrown by protobufjs or anything else. */
function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Serializes a plain object as message `typeName` (full name, e.g.
 * `containerd.task.v2.CreateTaskResponse`). Fields use the camelCase names of this module's
 * interfaces; absent, null or default-valued fields are not written; 64-bit fields take numbers;
 * bytes take Buffers; enums take numbers. Throws ShimProtocolError if `obj` does not fit.
 */
export function encode(typeName: string, obj: object): Buffer {
  const t = typeOf(typeName);
  const problem = t.verify(obj as Record<string, unknown>);
  if (problem !== null) throw new ShimProtocolError(`cannot encode ${typeName}: ${problem}`);
  try {
    const bytes = t.encode(t.fromObject(obj as Record<string, unknown>)).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } catch (e) {
    throw new ShimProtocolError(`cannot encode ${typeName}: ${reason(e)}`, { cause: e });
  }
}

/**
 * Parses `buf` as message `typeName` into a plain object with every field present (see the
 * module comment for the shapes). Throws ShimProtocolError for bytes that are not a valid
 * encoding; never anything else. `T` is the caller's claim about the shape, e.g.
 * `decode<CreateTaskRequest>('containerd.task.v2.CreateTaskRequest', payload)`. With `longs`
 * String, 64-bit integers come out as exact decimal strings rather than numbers.
 */
export function decode<T>(typeName: string, buf: Uint8Array, longs: NumberConstructor | StringConstructor = Number): T {
  const t = typeOf(typeName);
  if (!(buf instanceof Uint8Array)) throw new ShimProtocolError(`cannot decode ${typeName}: input is not bytes`);
  try {
    const m = t.decode(buf);
    return t.toObject(m, longs === Number ? TO_OBJECT : { ...TO_OBJECT, longs }) as T;
  } catch (e) {
    throw new ShimProtocolError(`cannot decode ${typeName}: ${reason(e)}`, { cause: e });
  }
}

/** A 64-bit value as protobufjs takes it exactly: two's-complement halves (long.js's Long shape). */
export interface LongBits {
  low: number;
  high: number;
  unsigned: boolean;
}

const TWO_64 = 2n ** 64n;

/**
 * A uint64 field value that encodes exactly. Numbers up to 2^53 stay numbers; larger ones
 * (including bigints) become {@link LongBits}, since a JS number above 2^53 is not an integer
 * protobufjs can always write exactly (without long.js it writes 2^64 as 0). Anything at or
 * above 2^64 — such as the number 2 ** 64 - 1, which rounds to 2^64 — is 2^64-1 (Go's
 * math.MaxUint64, what containerd reports for "max"); negative, fractional or non-finite
 * numbers are truncated toward 0, NaN is 0.
 */
export function uint64(n: number | bigint): number | LongBits {
  if (typeof n === 'number') {
    if (Number.isNaN(n) || n <= 0) return 0;
    if (n <= Number.MAX_SAFE_INTEGER) return Math.trunc(n);
    if (n === Infinity) n = TWO_64;
  }
  let b = typeof n === 'bigint' ? n : BigInt(Math.trunc(n));
  if (b < 0n) return 0;
  if (b >= TWO_64) b = TWO_64 - 1n;
  if (b <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(b);
  return { low: Number(BigInt.asIntN(32, b)), high: Number(BigInt.asIntN(32, b >> 32n)), unsigned: true };
}

/**
 * Packs a message into a google.protobuf.Any the way containerd's typeurl does for protobuf
 * messages: the type URL is the plain full message name (`containerd.events.TaskExit`), with
 * no `type.googleapis.com/` prefix.
 */
export function anyOf(typeName: string, obj: object): Any {
  return { typeUrl: typeName, value: encode(typeName, obj) };
}

/**
 * Unpacks an Any holding a protobuf message declared here. The message name is the type URL's
 * last path segment, so both `containerd.runc.v1.Options` and
 * `type.googleapis.com/containerd.runc.v1.Options` work. Throws ShimProtocolError for an
 * unknown type (e.g. the JSON-encoded runtime-spec types, see {@link TypeUrl}: JSON.parse their
 * `value` instead) or a malformed value.
 */
export function unpackAny<T>(any: Any): T {
  const name = any.typeUrl.slice(any.typeUrl.lastIndexOf('/') + 1);
  if (!isKnownType(name)) throw new ShimProtocolError(`cannot unpack Any: unknown type URL "${any.typeUrl}"`);
  return decode<T>(name, any.value);
}

/** A Date as a google.protobuf.Timestamp (millisecond precision, as Dates have). */
export function timestamp(date: Date): Timestamp {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new ShimProtocolError('cannot make a Timestamp of an invalid Date');
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** A google.protobuf.Timestamp as a Date (nanoseconds are truncated to milliseconds). */
export function dateOf(ts: Timestamp): Date {
  return new Date(ts.seconds * 1000 + Math.floor(ts.nanos / 1_000_000));
}

// ---------------------------------------------------------------------------------------------
// Names containerd uses on the wire.

/** Full ttrpc service names the shim serves and calls. */
export const Service = {
  /** The shim's task service: `containerd.task.v2.Task/<Method>`. */
  TASK: 'containerd.task.v2.Task',
  /** containerd's event service the shim forwards events to (`Forward`). */
  EVENTS: 'containerd.services.events.ttrpc.v1.Events',
} as const;

/** The ttrpc metadata key carrying the containerd namespace of a request. */
export const NAMESPACE_HEADER = 'containerd-namespace-ttrpc';

/**
 * Type URLs containerd registers for JSON-encoded runtime-spec types
 * (containerd runtime/typeurl.go): the value of such an Any is JSON, not protobuf.
 * ExecProcessRequest.spec carries a `PROCESS`; UpdateTaskRequest.resources a `LINUX_RESOURCES`.
 */
export const TypeUrl = {
  SPEC: 'types.containerd.io/opencontainers/runtime-spec/1/Spec',
  PROCESS: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
  LINUX_RESOURCES: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
  WINDOWS_RESOURCES: 'types.containerd.io/opencontainers/runtime-spec/1/WindowsResources',
  /** containerd.runc.v1.Options: what containerd puts in CreateTaskRequest.options for runc-like shims. */
  RUNC_OPTIONS: 'containerd.runc.v1.Options',
  /** runtimeoptions.v1.Options: what CRI sends in CreateTaskRequest.options for other runtimes. */
  RUNTIME_OPTIONS: 'runtimeoptions.v1.Options',
  /**
   * cgroup v1 metrics, what a StatsResponse.stats holds on a cgroup v1 or hybrid host
   * (containerd/cgroups stats/v1: the proto message name, which containerd's typeurl falls back
   * to for gogo-registered messages; no `type.googleapis.com/` prefix).
   */
  CGROUPS_V1_METRICS: 'io.containerd.cgroups.v1.Metrics',
  /** cgroup v2 metrics, what a StatsResponse.stats holds on a unified cgroup v2 host. */
  CGROUPS_V2_METRICS: 'io.containerd.cgroups.v2.Metrics',
} as const;

/** The topic containerd expects in the Envelope of each task event (containerd runtime/events.go). */
export const EventTopic = {
  'containerd.events.TaskCreate': '/tasks/create',
  'containerd.events.TaskStart': '/tasks/start',
  'containerd.events.TaskOOM': '/tasks/oom',
  'containerd.events.TaskExit': '/tasks/exit',
  'containerd.events.TaskDelete': '/tasks/delete',
  'containerd.events.TaskExecAdded': '/tasks/exec-added',
  'containerd.events.TaskExecStarted': '/tasks/exec-started',
  'containerd.events.TaskPaused': '/tasks/paused',
  'containerd.events.TaskResumed': '/tasks/resumed',
  'containerd.events.TaskCheckpointed': '/tasks/checkpointed',
} as const;

/** containerd.v1.types.Status: the status of a task or exec process, as StateResponse carries it. */
export const ProcessStatus = {
  UNKNOWN: 0,
  CREATED: 1,
  RUNNING: 2,
  STOPPED: 3,
  PAUSED: 4,
  PAUSING: 5,
} as const;
/** One value of {@link ProcessStatus}. */
export type ProcessStatus = (typeof ProcessStatus)[keyof typeof ProcessStatus];

// ---------------------------------------------------------------------------------------------
// Shapes of decoded messages. Every field is present after decode; message-typed fields are
// null when absent. For encode, any field may be left out.

/** google.protobuf.Any: a message of another type, `value` being its encoding. */
export interface Any {
  typeUrl: string;
  value: Buffer;
}

/** google.protobuf.Timestamp: seconds since the Unix epoch plus nanoseconds (0 ..< 1e9). */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** google.protobuf.Empty: the response of most Task methods. */
export type Empty = Record<string, never>;

/** google.rpc.Status: the status of a ttrpc response. */
export interface RpcStatus {
  code: number;
  message: string;
  details: Any[];
}

/** ttrpc.KeyValue: one metadata entry of a ttrpc request. */
export interface KeyValue {
  key: string;
  value: string;
}

/** ttrpc.Request: the payload of a ttrpc request frame. `timeoutNano` 0 means no deadline. */
export interface TtrpcRequest {
  service: string;
  method: string;
  payload: Buffer;
  timeoutNano: number;
  metadata: KeyValue[];
}

/** ttrpc.Response: the payload of a ttrpc response frame. */
export interface TtrpcResponse {
  status: RpcStatus | null;
  payload: Buffer;
}

/** containerd.types.Mount: one rootfs mount of CreateTaskRequest. */
export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** containerd.types.Metric. */
export interface Metric {
  timestamp: Timestamp | null;
  id: string;
  data: Any | null;
}

/** containerd.v1.types.ProcessInfo: one entry of PidsResponse. */
export interface ProcessInfo {
  pid: number;
  info: Any | null;
}

/** containerd.task.v2.CreateTaskRequest. */
export interface CreateTaskRequest {
  id: string;
  bundle: string;
  rootfs: Mount[];
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  checkpoint: string;
  parentCheckpoint: string;
  options: Any | null;
}

/** containerd.task.v2.CreateTaskResponse. */
export interface CreateTaskResponse {
  pid: number;
}

/** containerd.task.v2.DeleteRequest. */
export interface DeleteRequest {
  id: string;
  execId: string;
}

/** containerd.task.v2.DeleteResponse. */
export interface DeleteResponse {
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp | null;
}

/** containerd.task.v2.ExecProcessRequest; `spec` is a JSON runtime-spec Process ({@link TypeUrl}.PROCESS). */
export interface ExecProcessRequest {
  id: string;
  execId: string;
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  spec: Any | null;
}

/** containerd.task.v2.ExecProcessResponse (empty; Exec actually returns google.protobuf.Empty). */
export type ExecProcessResponse = Record<string, never>;

/** containerd.task.v2.ResizePtyRequest. */
export interface ResizePtyRequest {
  id: string;
  execId: string;
  width: number;
  height: number;
}

/** containerd.task.v2.StateRequest. */
export interface StateRequest {
  id: string;
  execId: string;
}

/** containerd.task.v2.StateResponse. */
export interface StateResponse {
  id: string;
  bundle: string;
  pid: number;
  status: ProcessStatus | number;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exitStatus: number;
  exitedAt: Timestamp | null;
  execId: string;
}

/** containerd.task.v2.KillRequest. */
export interface KillRequest {
  id: string;
  execId: string;
  signal: number;
  all: boolean;
}

/** containerd.task.v2.CloseIORequest. */
export interface CloseIORequest {
  id: string;
  execId: string;
  stdin: boolean;
}

/** containerd.task.v2.PidsRequest. */
export interface PidsRequest {
  id: string;
}

/** containerd.task.v2.PidsResponse. */
export interface PidsResponse {
  processes: ProcessInfo[];
}

/** containerd.task.v2.CheckpointTaskRequest. */
export interface CheckpointTaskRequest {
  id: string;
  path: string;
  options: Any | null;
}

/** containerd.task.v2.UpdateTaskRequest; `resources` is JSON LinuxResources ({@link TypeUrl}.LINUX_RESOURCES). */
export interface UpdateTaskRequest {
  id: string;
  resources: Any | null;
  annotations: Record<string, string>;
}

/** containerd.task.v2.StartRequest. */
export interface StartRequest {
  id: string;
  execId: string;
}

/** containerd.task.v2.StartResponse. */
export interface StartResponse {
  pid: number;
}

/** containerd.task.v2.WaitRequest. */
export interface WaitRequest {
  id: string;
  execId: string;
}

/** containerd.task.v2.WaitResponse. */
export interface WaitResponse {
  exitStatus: number;
  exitedAt: Timestamp | null;
}

/** containerd.task.v2.StatsRequest. */
export interface StatsRequest {
  id: string;
}

/** containerd.task.v2.StatsResponse; `stats` is e.g. an io.containerd.cgroups.v2.Metrics. */
export interface StatsResponse {
  stats: Any | null;
}

/** containerd.task.v2.ConnectRequest. */
export interface ConnectRequest {
  id: string;
}

/** containerd.task.v2.ConnectResponse. */
export interface ConnectResponse {
  shimPid: number;
  taskPid: number;
  version: string;
}

/** containerd.task.v2.ShutdownRequest. */
export interface ShutdownRequest {
  id: string;
  now: boolean;
}

/** containerd.task.v2.PauseRequest. */
export interface PauseRequest {
  id: string;
}

/** containerd.task.v2.ResumeRequest. */
export interface ResumeRequest {
  id: string;
}

/** containerd.events.TaskIO. */
export interface TaskIO {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** containerd.events.TaskCreate (topic /tasks/create). */
export interface TaskCreate {
  containerId: string;
  bundle: string;
  rootfs: Mount[];
  io: TaskIO | null;
  checkpoint: string;
  pid: number;
}

/** containerd.events.TaskStart (topic /tasks/start). */
export interface TaskStart {
  containerId: string;
  pid: number;
}

/** containerd.events.TaskDelete (topic /tasks/delete); `id` is the exec id, "" for the init process. */
export interface TaskDelete {
  containerId: string;
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp | null;
  id: string;
}

/** containerd.events.TaskExit (topic /tasks/exit); `id` is the exec id, or the container id for init. */
export interface TaskExit {
  containerId: string;
  id: string;
  pid: number;
  exitStatus: number;
  exitedAt: Timestamp | null;
}

/** containerd.events.TaskOOM (topic /tasks/oom). */
export interface TaskOOM {
  containerId: string;
}

/** containerd.events.TaskExecAdded (topic /tasks/exec-added). */
export interface TaskExecAdded {
  containerId: string;
  execId: string;
}

/** containerd.events.TaskExecStarted (topic /tasks/exec-started). */
export interface TaskExecStarted {
  containerId: string;
  execId: string;
  pid: number;
}

/** containerd.events.TaskPaused (topic /tasks/paused). */
export interface TaskPaused {
  containerId: string;
}

/** containerd.events.TaskResumed (topic /tasks/resumed). */
export interface TaskResumed {
  containerId: string;
}

/** containerd.events.TaskCheckpointed (topic /tasks/checkpointed). */
export interface TaskCheckpointed {
  containerId: string;
  checkpoint: string;
}

/** containerd.services.events.ttrpc.v1.Envelope: an event with its time, namespace and topic. */
export interface Envelope {
  timestamp: Timestamp | null;
  namespace: string;
  topic: string;
  event: Any | null;
}

/** containerd.services.events.ttrpc.v1.ForwardRequest: the argument of Events/Forward. */
export interface ForwardRequest {
  envelope: Envelope | null;
}

/** containerd.runc.v1.Options: runtime options containerd passes in CreateTaskRequest.options. */
export interface RuncOptions {
  noPivotRoot: boolean;
  noNewKeyring: boolean;
  shimCgroup: string;
  ioUid: number;
  ioGid: number;
  binaryName: string;
  root: string;
  criuPath: string;
  systemdCgroup: boolean;
  criuImagePath: string;
  criuWorkPath: string;
}

/** containerd.runc.v1.CheckpointOptions: CheckpointTaskRequest.options for runc-like shims. */
export interface RuncCheckpointOptions {
  exit: boolean;
  openTcp: boolean;
  externalUnixSockets: boolean;
  terminal: boolean;
  fileLocks: boolean;
  emptyNamespaces: string[];
  cgroupsMode: string;
  imagePath: string;
  workPath: string;
}

/** containerd.runc.v1.ProcessDetails: ProcessInfo.info of an exec'd process. */
export interface RuncProcessDetails {
  execId: string;
}

/** runtimeoptions.v1.Options: CRI's runtime options for runtimes it does not know (config_body: containerd 1.7+). */
export interface RuntimeOptions {
  typeUrl: string;
  configPath: string;
  configBody: Buffer;
}

/** io.containerd.cgroups.v2.Metrics: StatsResponse.stats on a cgroup v2 host. */
export interface CgroupsV2Metrics {
  pids: { current: number; limit: number } | null;
  cpu: {
    usageUsec: number;
    userUsec: number;
    systemUsec: number;
    nrPeriods: number;
    nrThrottled: number;
    throttledUsec: number;
  } | null;
  memory: Record<(typeof V2_MEMORY_STAT_FIELDS)[number], number> | null;
  rdma: {
    current: { device: string; hcaHandles: number; hcaObjects: number }[];
    limit: { device: string; hcaHandles: number; hcaObjects: number }[];
  } | null;
  io: {
    usage: { major: number; minor: number; rbytes: number; wbytes: number; rios: number; wios: number }[];
  } | null;
  hugetlb: { current: number; max: number; pagesize: string }[];
  memoryEvents: { low: number; high: number; max: number; oom: number; oomKill: number } | null;
}

/** io.containerd.cgroups.v1.MemoryEntry: one v1 memory counter family (memory, memsw, kmem, kmem.tcp). */
export interface CgroupsV1MemoryEntry {
  limit: number;
  usage: number;
  max: number;
  failcnt: number;
}

/** io.containerd.cgroups.v1.BlkIOEntry. */
export interface CgroupsV1BlkIOEntry {
  op: string;
  device: string;
  major: number;
  minor: number;
  value: number;
}

/** io.containerd.cgroups.v1.RdmaEntry. */
export interface CgroupsRdmaEntry {
  device: string;
  hcaHandles: number;
  hcaObjects: number;
}

/** io.containerd.cgroups.v1.Metrics: StatsResponse.stats on a cgroup v1 or hybrid host. */
export interface CgroupsV1Metrics {
  hugetlb: { usage: number; max: number; failcnt: number; pagesize: string }[];
  pids: { current: number; limit: number } | null;
  cpu: {
    usage: { total: number; kernel: number; user: number; perCpu: number[] } | null;
    throttling: { periods: number; throttledPeriods: number; throttledTime: number } | null;
  } | null;
  memory:
    | (Record<(typeof V1_MEMORY_STAT_FIELDS)[number], number> & {
        usage: CgroupsV1MemoryEntry | null;
        swap: CgroupsV1MemoryEntry | null;
        kernel: CgroupsV1MemoryEntry | null;
        kernelTcp: CgroupsV1MemoryEntry | null;
      })
    | null;
  blkio: Record<
    | 'ioServiceBytesRecursive' | 'ioServicedRecursive' | 'ioQueuedRecursive' | 'ioServiceTimeRecursive'
    | 'ioWaitTimeRecursive' | 'ioMergedRecursive' | 'ioTimeRecursive' | 'sectorsRecursive',
    CgroupsV1BlkIOEntry[]
  > | null;
  rdma: { current: CgroupsRdmaEntry[]; limit: CgroupsRdmaEntry[] } | null;
  network: {
    name: string;
    rxBytes: number;
    rxPackets: number;
    rxErrors: number;
    rxDropped: number;
    txBytes: number;
    txPackets: number;
    txErrors: number;
    txDropped: number;
  }[];
  cgroupStats: {
    nrSleeping: number;
    nrRunning: number;
    nrStopped: number;
    nrUninterruptible: number;
    nrIoWait: number;
  } | null;
  memoryOomControl: { oomKillDisable: number; underOom: number; oomKill: number } | null;
}
