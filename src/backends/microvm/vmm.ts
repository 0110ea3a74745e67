/**
 * Choice of the VMM driver of the `microvm` backend: the one the user forces with `--vmm`, or
 * Firecracker when it can run here (binary on PATH, KVM usable, the VM's features supported), else
 * QEMU.
 */
import { HostError, UsageError } from '../../errors.js';
import { firecrackerDriver, firecrackerUnavailable, firecrackerUnsupported } from './firecracker.js';
import { qemuDriver } from './qemu.js';
import type { Accel, VmConfig, VmmDriver } from './types.js';

/** Every VMM driver, by the name `--vmm` takes. */
export const VMM_DRIVERS: Readonly<Record<VmmDriver['name'], VmmDriver>> = { qemu: qemuDriver, firecracker: firecrackerDriver };

/** What the VM needs of its VMM, when known: lets the choice skip a driver that cannot run it. */
export type VmNeeds = Partial<Pick<VmConfig, 'guest' | 'disk' | 'share' | 'binds' | 'net'>>;

/** Why `driver` cannot run a VM with `vm`'s needs under `accel`, or undefined if it can. */
function whyNot(driver: VmmDriver, accel: Accel, vm?: VmNeeds): string | undefined {
  if (driver.name !== 'firecracker') return driver.unavailable(accel);
  const reasons = [firecrackerUnavailable(accel, vm?.guest), ...(vm ? firecrackerUnsupported(vm) : [])].filter((r): r is string => r !== undefined);
  return reasons.length > 0 ? reasons.join('; ') : undefined;
}

/**
 * The VMM driver: `forced` ('qemu' or 'firecracker') wins, with a UsageError naming --vmm if it is
 * unknown or cannot run here; otherwise Firecracker when available, else QEMU (a HostError if
 * neither can run). `vm`, when given, also rules out a driver lacking a feature the VM uses.
 */
export function chooseDriver(forced: string | undefined, accel: Accel, vm?: VmNeeds): VmmDriver {
  if (forced !== undefined && forced !== '') {
    if (forced !== 'qemu' && forced !== 'firecracker') throw new UsageError(`--vmm: unknown VMM "${forced}" (expected qemu or firecracker)`);
    const driver = VMM_DRIVERS[forced];
    const why = whyNot(driver, accel, vm);
    if (why !== undefined) throw new UsageError(`--vmm ${forced}: cannot be used here: ${why}`);
    return driver;
  }
  const fc = whyNot(firecrackerDriver, accel, vm);
  if (fc === undefined) return firecrackerDriver;
  const qemu = whyNot(qemuDriver, accel, vm);
  if (qemu === undefined) return qemuDriver;
  throw new HostError(`no VMM can run the microvm here: qemu: ${qemu}; firecracker: ${fc}`);
}
