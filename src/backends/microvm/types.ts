/**
 * Contracts shared by the `microvm` backend's parts: the guest image, the VM a driver starts,
 * and the drivers themselves (QEMU, Firecracker).
 */

/** A bootable guest: kernel, initramfs (with Moat's agent as /init) and the kernel's release. */
export interface GuestImage {
  kernel: string;
  initramfs: string;
  /** `uname -r` of the guest kernel. */
  release: string;
}

/** Hardware acceleration of a VM. */
export type Accel = 'kvm' | 'tcg';

/** One VM to start. Every host path here must be reachable inside the VMM's jail. */
export interface VmConfig {
  id: string;
  /** Host directory of this VM (sockets, overlay disk, logs); bound into the jail at the same path. */
  dir: string;
  guest: GuestImage;
  /** Extra kernel command line (the driver adds console and panic settings). */
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  /** The container rootfs disk (virtio-blk, /dev/vda in the guest). */
  disk?: {
    path: string;
    format: 'qcow2' | 'raw';
    readonly?: boolean;
    /** The backing chain, when the caller checked it itself (a restored disk: qemu-img never reads it). */
    backing?: string[];
  };
  /** A host directory shared read-only (virtio-9p, mount tag `tag`), for the embedded default. */
  share?: { hostPath: string; tag: string };
  /**
   * The spec's bind mounts: host directories (as the VMM sees them) shared by virtio-9p, each
   * with its own tag. `passthrough`: the owners and modes the guest sets are the host files'
   * (9p security_model=passthrough, as a container's root changes them under runc; QEMU needs
   * CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER and CAP_FSETID for it); else files keep QEMU's own
   * owner and an ownership change is dropped (security_model=none).
   */
  binds?: { hostPath: string; tag: string; readonly: boolean; passthrough?: boolean }[];
  /**
   * One virtio-net device: behind a pod's tap (PodNic), or behind QEMU's user-mode network (libslirp: guest 10.0.2.15/24, gateway
   * 10.0.2.2, DNS 10.0.2.3), or none. Its host sockets are the sentry's, under the egress rules
   * (the VMM runs at the sentry's `network` level): the network itself has no allowlist.
   */
  net?: { mode: 'user' } | PodNic;
  /** Unix socket the VMM connects to (as a client) for the agent's control channel. */
  controlSocket: string;
  /** File the guest's console (kernel messages) goes to. */
  consoleLog: string;
  /** QEMU's machine-protocol socket (QEMU listens; checkpoint and restore use it). */
  qmpSocket?: string;
  /** Start paused, waiting for a migration stream (`-incoming defer`): a restore. */
  incoming?: boolean;
}

/**
 * A virtio-net device behind a tap device the VMM inherits as fd `fd` (a pod's network, podnet.ts),
 * with the Ethernet address `mac`.
 */
export interface PodNic {
  mode: 'tap';
  fd: number;
  mac: string;
}

/** How a driver starts a VM: the command, and what its jail must expose. */
export interface VmmLaunch {
  argv: string[];
  /** Host paths (files or directories) the VMM reads or writes, to bind into its jail. */
  paths: string[];
  /** Device nodes the VMM needs (e.g. /dev/kvm). */
  devices: string[];
  /**
   * Called once the process runs (Firecracker is configured through its API socket; QEMU needs
   * nothing): resolves when the VM is booting.
   */
  configure?: () => Promise<void>;
}

/** A VMM driver. */
export interface VmmDriver {
  readonly name: 'qemu' | 'firecracker';
  /** Why this driver cannot run here, or undefined if it can. */
  unavailable(accel: Accel): string | undefined;
  /** The command that starts `cfg`. */
  launch(cfg: VmConfig): VmmLaunch;
}
