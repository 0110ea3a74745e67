/** `moat guest build` and `moat guest info`: the microvm backend's guest image (kernel and initramfs). */
import type { Command } from 'commander';
import { basename, join } from 'node:path';
import { UsageError } from '../errors.js';
import { writeErr, writeOut } from '../util/log.js';
import { globals } from './common.js';

/** Registers the `guest` command group. */
export function register(program: Command): void {
  const guest = program.command('guest').description('manage the guest image of the microvm backend (kernel and initramfs)');
  guest.command('build').description('build the guest image into the cache under --root (reused while kernel and agent are unchanged)')
    .option('--kernel <path>', 'kernel image (default: the newest /boot/vmlinuz-*)')
    .option('--modules <dir>', 'the kernel\'s modules directory (default: /lib/modules/RELEASE)')
    .option('--agent <path>', 'the static guest agent (default: dist/moat-agent of this package)')
    .option('--force', 'rebuild even when the cached image is current', false)
    .action(async (flags: { kernel?: string; modules?: string; agent?: string; force: boolean }, cmd: Command) => {
      const { agentPath, buildGuest, guestCacheDir } = await import('../backends/microvm/guest.js');
      const cacheDir = guestCacheDir(globals(cmd).root);
      const image = buildGuest({
        cacheDir,
        agent: flags.agent ?? agentPath(),
        ...(flags.kernel ? { kernel: flags.kernel } : {}),
        ...(flags.modules ? { modulesDir: flags.modules } : {}),
        force: flags.force === true,
        progress: (m) => writeErr(`guest: ${m}\n`),
      });
      writeOut(`release: ${image.release}\nkernel: ${image.kernel}\ninitramfs: ${image.initramfs}\nmanifest: ${join(cacheDir, image.release, 'manifest.json')}\n`);
    });
  guest.command('info').description('print the manifest of a cached guest image as JSON')
    .option('--release <release>', 'kernel release (default: the newest /boot kernel\'s, or the only one cached)')
    .action(async (flags: { release?: string }, cmd: Command) => {
      const { cachedReleases, defaultKernel, guestCacheDir, kernelImageRelease, readManifest } = await import('../backends/microvm/guest.js');
      const cacheDir = guestCacheDir(globals(cmd).root);
      const cached = cachedReleases(cacheDir);
      if (cached.length === 0) throw new UsageError(`no guest image is cached in ${cacheDir}: run "moat guest build"`);
      let release = flags.release;
      if (release === undefined) {
        let host: string | undefined;
        try {
          const k = defaultKernel();
          host = kernelImageRelease(k) ?? basename(k).slice('vmlinuz-'.length);
        } catch {
          host = undefined;
        }
        release = host !== undefined && cached.includes(host) ? host : cached.length === 1 ? cached[0] : undefined;
        if (release === undefined) throw new UsageError(`several guest images are cached in ${cacheDir} (${cached.join(', ')}): pass --release`);
      }
      const manifest = readManifest(join(cacheDir, release));
      if (!manifest) throw new UsageError(`no guest image for release "${release}" is cached in ${cacheDir} (cached: ${cached.join(', ')})`);
      writeOut(JSON.stringify(manifest, null, 2) + '\n');
    });
}
