/** Every attempt of the breakout suite, in table order (one module per category). */
import type { Attempt } from '../framework.js';
import { attempts as mountNamespace } from './mount-namespace.js';
import { attempts as procSys } from './proc-sys.js';
import { attempts as device } from './device.js';
import { attempts as capability } from './capability.js';
import { attempts as syscall } from './syscall.js';
import { attempts as traversal } from './traversal.js';
import { attempts as fdLeak } from './fd-leak.js';
import { attempts as runtimeBinary } from './runtime-binary.js';
import { attempts as exhaustion } from './exhaustion.js';
import { attempts as network } from './network.js';

/** All attempts; ids are unique (checked by the suite test). */
export const ATTEMPTS: readonly Attempt[] = [
  ...mountNamespace,
  ...procSys,
  ...device,
  ...capability,
  ...syscall,
  ...traversal,
  ...fdLeak,
  ...runtimeBinary,
  ...exhaustion,
  ...network,
];
