/** The runtime-spec "features" document: what this build of Moat implements. */
import { availableIsolations, ISOLATION_ANNOTATION } from './backends/registry.js';
import { PROPAGATION } from './backends/container/mounts.js';
import { CAPABILITIES, NAMESPACE_TYPES } from './spec/schema.js';

/** The features JSON (runtime-spec features.md), plus Moat's annotations. */
export function features(): Record<string, unknown> {
  const options = [
    'async', 'atime', 'bind', 'defaults', 'dev', 'diratime', 'dirsync', 'exec', 'lazytime', 'loud', 'mand', 'noatime', 'nodev',
    'nodiratime', 'noexec', 'nolazytime', 'nomand', 'norelatime', 'nostrictatime', 'nosuid', 'nosymfollow', 'rbind', 'relatime',
    'remount', 'ro', 'rw', 'silent', 'strictatime', 'suid', 'symfollow', 'sync', ...Object.keys(PROPAGATION),
  ].sort();
  return {
    ociVersionMin: '1.0.0',
    ociVersionMax: '1.2.0',
    hooks: ['prestart', 'createRuntime', 'createContainer', 'startContainer', 'poststart', 'poststop'],
    mountOptions: options,
    linux: {
      namespaces: [...NAMESPACE_TYPES],
      capabilities: Object.keys(CAPABILITIES),
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false, rdma: false },
      seccomp: { enabled: false },
      apparmor: { enabled: false },
      selinux: { enabled: false },
      intelRdt: { enabled: false },
      mountExtensions: { idmap: { enabled: false } },
    },
    annotations: {
      [ISOLATION_ANNOTATION]: availableIsolations().join(','),
    },
  };
}
