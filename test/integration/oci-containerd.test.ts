/**
 * The runtime under test inside containerd: containerd's own runc shim (io.containerd.runc.v2, the
 * default) is told to run it instead of runc (`ctr run --runc-binary RUNTIME`), so every container
 * operation goes ctr -> containerd -> shim -> RUNTIME create/start/exec/ps/pause/resume/kill/delete.
 * Runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc. The cases themselves are
 * in test/helpers/containerd-cases.ts, shared with other ways of reaching the runtime.
 */
import { join } from 'node:path';
import { containerdCases } from '../helpers/containerd-cases.js';
import { RUNC_SHIM_ROOT } from '../helpers/containerd.js';
import { runtimeBinary } from '../helpers/harness.js';
import { RUNTIME } from '../helpers/runtime.js';

let binary: string | undefined;
let missing: string | undefined;
try {
  binary = runtimeBinary();
} catch (err) {
  missing = (err as Error).message;
}

containerdCases({
  label: `runc-shim-${RUNTIME}`,
  runArgs: ['--runc-binary', binary ?? RUNTIME],
  // the shim runs `RUNTIME --root /run/containerd/runc/moat-test ...`: a container's state is ROOT/ID
  runtimeState: (id) => join(RUNC_SHIM_ROOT, id),
  ...(missing !== undefined ? { skip: missing } : {}),
});
