/**
 * The Firecracker driver against a fake Firecracker API: a node HTTP server on a unix socket that
 * follows Firecracker's published API (swagger firecracker.yaml) and its validation rules: PUT only,
 * no unknown or missing fields, files must open, InstanceStart only with a boot source and only
 * once, pre-boot endpoints refused after start, every refusal a 400 with a `fault_message`.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { HostError } from '../../src/errors.js';
import {
  FirecrackerApiError,
  FirecrackerConfigError,
  apiSocketPath,
  controlPath,
  firecrackerApi,
  firecrackerDriver,
  firecrackerUnavailable,
  kernelFormat,
  vsockPath,
} from '../../src/backends/microvm/firecracker.js';
import type { VmConfig } from '../../src/backends/microvm/types.js';

/** One request the fake received. */
interface Call {
  method: string;
  path: string;
  body: unknown;
  contentLength: string | undefined;
  contentType: string | undefined;
  chunked: boolean;
}

type Json = Record<string, unknown>;

/** Field rules of one endpoint body: required and optional names with a type check each. */
interface BodyRule {
  required: Record<string, (v: unknown) => boolean>;
  optional: Record<string, (v: unknown) => boolean>;
}

const isStr = (v: unknown): boolean => typeof v === 'string';
const isBool = (v: unknown): boolean => typeof v === 'boolean';
const isUint = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const isObj = (v: unknown): boolean => typeof v === 'object' && v !== null;

const RULES: Record<string, BodyRule> = {
  '/machine-config': {
    required: { vcpu_count: isUint, mem_size_mib: isUint },
    optional: { smt: isBool, track_dirty_pages: isBool, cpu_template: isStr, huge_pages: isStr },
  },
  '/boot-source': { required: { kernel_image_path: isStr }, optional: { boot_args: isStr, initrd_path: isStr } },
  '/drives': {
    required: { drive_id: isStr, is_root_device: isBool },
    optional: {
      partuuid: isStr,
      cache_type: (v) => v === 'Unsafe' || v === 'Writeback',
      is_read_only: isBool,
      path_on_host: isStr,
      rate_limiter: isObj,
      io_engine: (v) => v === 'Sync' || v === 'Async',
      socket: isStr,
    },
  },
  '/vsock': { required: { guest_cid: isUint, uds_path: isStr }, optional: { vsock_id: isStr } },
  '/actions': { required: { action_type: (v) => v === 'InstanceStart' || v === 'SendCtrlAltDel' || v === 'FlushMetrics' }, optional: {} },
  '/logger': { required: {}, optional: { log_path: isStr, level: isStr, show_level: isBool, show_log_origin: isBool, module: isStr } },
};

const SERDE = 'An error occurred when deserializing the json body of a request: ';

/** A fake Firecracker: validates like Firecracker, records every call, tracks the pre-boot state. */
class FakeFirecracker {
  readonly calls: Call[] = [];
  started = false;
  bootSource: Json | undefined;
  machine: Json | undefined;
  readonly drives = new Map<string, Json>();
  vsock: Json | undefined;
  private server: Server | undefined;

  constructor(readonly socketPath: string) {}

  listen(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    const server = this.server;
    return new Promise((res) => server.listen(this.socketPath, () => res()));
  }

  close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return Promise.resolve();
    server.closeAllConnections();
    return new Promise((res) => server.close(() => res()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        // recorded as text, refused below
      }
      const call: Call = {
        method: req.method ?? '',
        path: req.url ?? '',
        body,
        contentLength: req.headers['content-length'],
        contentType: req.headers['content-type'],
        chunked: req.headers['transfer-encoding'] !== undefined,
      };
      this.calls.push(call);
      const fault = this.route(call, text);
      if (fault === undefined) {
        res.writeHead(204).end();
        return;
      }
      const out = JSON.stringify({ fault_message: fault });
      res.writeHead(400, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) }).end(out);
    });
  }

  /** Firecracker's answer to one request: undefined for 204, else the fault message of a 400. */
  private route(call: Call, text: string): string | undefined {
    if (call.chunked) return 'Chunked transfer encoding is not supported.';
    const drive = /^\/drives\/([^/]+)$/.exec(call.path);
    const endpoint = drive ? '/drives' : call.path;
    const rule = RULES[endpoint];
    if (call.method !== 'PUT' || rule === undefined) return `Invalid request method and/or path: ${call.method} ${call.path}.`;
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      return `${SERDE}${(e as Error).message}.`;
    }
    if (!isObj(body) || Array.isArray(body)) return `${SERDE}invalid type: expected struct.`;
    const b = body as Json;
    const known = [...Object.keys(rule.required), ...Object.keys(rule.optional)];
    for (const [k, v] of Object.entries(b)) {
      if (!known.includes(k)) return `${SERDE}unknown field \`${k}\`, expected one of ${known.map((n) => `\`${n}\``).join(', ')}.`;
      const check = rule.required[k] ?? rule.optional[k];
      if (check !== undefined && !check(v)) return `${SERDE}invalid type for \`${k}\`.`;
    }
    for (const k of Object.keys(rule.required)) if (!(k in b)) return `${SERDE}missing field \`${k}\`.`;
    if (this.started && endpoint !== '/actions') return 'The requested operation is not supported after starting the microVM.';

    switch (endpoint) {
      case '/machine-config': {
        const n = b['vcpu_count'] as number;
        if (n < 1 || n > 32) return 'The vCPU number is invalid: it can only be 1 or an even number when SMT is enabled.';
        if ((b['mem_size_mib'] as number) === 0) return 'The memory size (MiB) is invalid.';
        this.machine = b;
        return undefined;
      }
      case '/boot-source': {
        if (!existsSync(b['kernel_image_path'] as string)) return 'The kernel file cannot be opened: No such file or directory (os error 2)';
        const initrd = b['initrd_path'];
        if (typeof initrd === 'string' && !existsSync(initrd)) return 'The initrd file cannot be opened due to invalid path or invalid permissions. No such file or directory (os error 2)';
        this.bootSource = b;
        return undefined;
      }
      case '/drives': {
        const id = drive?.[1] ?? '';
        if (!/^[A-Za-z0-9_]+$/.test(id)) return 'Invalid ID. It must only contain alphanumeric characters and underscores.';
        if (b['drive_id'] !== id) return `The id from the path [${id}] does not match the id from the body [${String(b['drive_id'])}]!`;
        const p = b['path_on_host'];
        if (typeof p === 'string' && !existsSync(p)) return 'Unable to create the block device: No such file or directory (os error 2)';
        this.drives.set(id, b);
        return undefined;
      }
      case '/vsock':
        if ((b['guest_cid'] as number) < 3) return 'Invalid guest CID: CIDs 0, 1 and 2 are reserved.';
        if (existsSync(b['uds_path'] as string)) return 'Cannot create backend for vsock device: Address in use (os error 98)';
        this.vsock = b;
        return undefined;
      case '/actions':
        if (b['action_type'] === 'InstanceStart') {
          if (this.started) return 'The requested operation is not supported after starting the microVM.';
          if (this.bootSource === undefined) return 'Cannot start microvm without kernel configuration.';
          this.started = true;
          return undefined;
        }
        if (!this.started) return 'The requested operation is not supported before starting the microVM.';
        return undefined;
      default:
        return undefined;
    }
  }
}

/** The ELF magic and padding: enough for the driver to take a file as a vmlinux. */
const FAKE_VMLINUX = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(1024)]);

/** A bzImage's boot-protocol magic "HdrS" at 0x202. */
function fakeBzImage(): Buffer {
  const b = Buffer.alloc(4096);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0xaa55, 0x1fe);
  return b;
}

let root: string;
let n = 0;

/** A fresh VM directory with a fake vmlinux, initramfs and raw disk. */
function makeVm(over: Partial<VmConfig> = {}): VmConfig {
  const dir = join(root, `vm${n++}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vmlinux'), FAKE_VMLINUX);
  writeFileSync(join(dir, 'initramfs.cpio'), 'cpio');
  writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(4096));
  return {
    id: 'ctr-1',
    dir,
    guest: { kernel: join(dir, 'vmlinux'), initramfs: join(dir, 'initramfs.cpio'), release: '6.1.0-test' },
    cmdline: 'moat.root=vda',
    memoryMiB: 256,
    vcpus: 2,
    accel: 'kvm',
    disk: { path: join(dir, 'disk.raw'), format: 'raw', readonly: true },
    controlSocket: join(dir, 'ctl.sock'),
    consoleLog: join(dir, 'console.log'),
    ...over,
  };
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'moat-fc-test-'));
});
after(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('firecrackerDriver.launch', () => {
  test('starts firecracker with its API socket and id, keeping its seccomp filters', () => {
    const cfg = makeVm();
    const l = firecrackerDriver.launch(cfg);
    assert.match(l.argv[0] ?? '', /(^|\/)firecracker$/);
    assert.deepEqual(l.argv.slice(1), ['--api-sock', join(cfg.dir, 'fc.sock'), '--id', 'ctr-1']);
    assert.ok(!l.argv.includes('--no-seccomp'));
    assert.equal(apiSocketPath(cfg), join(cfg.dir, 'fc.sock'));
    assert.equal(vsockPath(cfg), join(cfg.dir, 'fc-vsock.sock'));
    assert.equal(controlPath(cfg), join(cfg.dir, 'fc-vsock.sock_1024'));
    assert.deepEqual(l.devices, ['/dev/kvm']);
    assert.deepEqual(l.paths, [cfg.dir, cfg.guest.kernel, cfg.guest.initramfs, cfg.disk?.path]);
    assert.equal(typeof l.configure, 'function');
  });

  test('refuses what Firecracker cannot do, naming the field', () => {
    const refuses = (over: Partial<VmConfig>, field: string, re: RegExp): void => {
      assert.throws(
        () => firecrackerDriver.launch(makeVm(over)),
        (e: unknown) => e instanceof FirecrackerConfigError && e.field === field && re.test(e.message),
      );
    };
    const cfg = makeVm();
    refuses({ disk: { path: cfg.disk?.path ?? '', format: 'qcow2' } }, 'disk.format', /raw disks only/);
    refuses({ share: { hostPath: '/', tag: 'hostroot' } }, 'share', /9p/);
    refuses({ net: { mode: 'user' } }, 'net', /tap/);
    refuses({ id: 'has_underscore' }, 'id', /--id/);
    refuses({ vcpus: 33 }, 'vcpus', /1 to 32/);
    const bz = join(root, 'vmlinuz-test');
    writeFileSync(bz, fakeBzImage());
    refuses({ guest: { kernel: bz, initramfs: cfg.guest.initramfs, release: 'no-such-release' } }, 'guest.kernel', /bzimage image and no uncompressed vmlinux/);
  });

  test('unavailable() says why: no binary, no KVM under tcg, a bzImage without vmlinux', () => {
    const tcg = firecrackerDriver.unavailable('tcg');
    assert.ok(tcg !== undefined);
    assert.match(tcg, /needs KVM/);
    const bz = join(root, 'vmlinuz-test2');
    writeFileSync(bz, fakeBzImage());
    assert.equal(kernelFormat(bz), 'bzimage');
    assert.equal(kernelFormat(join(makeVm().dir, 'vmlinux')), 'elf');
    const why = firecrackerUnavailable('kvm', { kernel: bz, initramfs: '/nonexistent', release: 'no-such-release' });
    assert.ok(why !== undefined);
    assert.match(why, /is a bzImage and Firecracker boots only an uncompressed vmlinux/);
    // On this kind of host (no firecracker binary) the reason names the binary.
    if (!existsSyncOnPath('firecracker')) assert.match(firecrackerDriver.unavailable('kvm') ?? '', /firecracker is not installed/);
  });
});

/** One request outside the driver's client (which only PUTs), to check the fake's own rules. */
function rawRequest(socketPath: string, method: string, path: string, body: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const r = request({ socketPath, method, path, headers: { 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

function existsSyncOnPath(program: string): boolean {
  return (process.env['PATH'] ?? '').split(':').some((d) => d !== '' && existsSync(join(d, program)));
}

describe('configure() against a fake Firecracker API', () => {
  test('sends exactly the documented requests, in a valid order, with the right JSON', async () => {
    const cfg = makeVm();
    const fake = new FakeFirecracker(apiSocketPath(cfg));
    await fake.listen();
    try {
      await firecrackerDriver.launch(cfg).configure?.();
      assert.equal(fake.started, true);
      assert.deepEqual(
        fake.calls.map((c) => ({ method: c.method, path: c.path, body: c.body })),
        [
          { method: 'PUT', path: '/machine-config', body: { vcpu_count: 2, mem_size_mib: 256 } },
          {
            method: 'PUT',
            path: '/boot-source',
            body: {
              kernel_image_path: cfg.guest.kernel,
              initrd_path: cfg.guest.initramfs,
              boot_args: 'moat.ctl=vsock:1024 console=ttyS0 reboot=k panic=1 pci=off moat.root=vda',
            },
          },
          {
            method: 'PUT',
            path: '/drives/rootfs',
            body: { drive_id: 'rootfs', path_on_host: cfg.disk?.path, is_root_device: false, is_read_only: true, cache_type: 'Writeback' },
          },
          { method: 'PUT', path: '/vsock', body: { guest_cid: 3, uds_path: join(cfg.dir, 'fc-vsock.sock') } },
          { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } },
        ],
      );
      for (const c of fake.calls) {
        assert.equal(c.chunked, false, `${c.path} was sent chunked`);
        assert.equal(c.contentType, 'application/json');
        assert.equal(Number(c.contentLength), Buffer.byteLength(JSON.stringify(c.body)));
      }
    } finally {
      await fake.close();
    }
  });

  test('without a disk there is no drive request, and the VM still starts', async () => {
    const { disk: _d, ...cfg } = makeVm();
    const fake = new FakeFirecracker(apiSocketPath(cfg));
    await fake.listen();
    try {
      await firecrackerDriver.launch(cfg).configure?.();
      assert.deepEqual(fake.calls.map((c) => c.path), ['/machine-config', '/boot-source', '/vsock', '/actions']);
      assert.equal(fake.started, true);
    } finally {
      await fake.close();
    }
  });

  test('a 400 becomes a FirecrackerApiError naming the endpoint and the fault, and nothing follows it', async () => {
    const cfg = makeVm();
    rmSync(cfg.guest.initramfs);
    const fake = new FakeFirecracker(apiSocketPath(cfg));
    await fake.listen();
    try {
      await assert.rejects(firecrackerDriver.launch(cfg).configure?.() ?? Promise.resolve(), (e: unknown) => {
        assert.ok(e instanceof FirecrackerApiError);
        assert.equal(e.method, 'PUT');
        assert.equal(e.path, '/boot-source');
        assert.equal(e.status, 400);
        assert.match(e.faultMessage, /^The initrd file cannot be opened/);
        assert.ok(e.message.includes('PUT /boot-source'), e.message);
        assert.ok(e.message.includes(e.faultMessage), e.message);
        return true;
      });
      assert.deepEqual(fake.calls.map((c) => c.path), ['/machine-config', '/boot-source']);
      assert.equal(fake.started, false);
    } finally {
      await fake.close();
    }
  });

  test("Firecracker's own rules come back as faults: start before boot source, unknown or missing fields, mismatched ids, non-PUT", async () => {
    const cfg = makeVm();
    const sock = apiSocketPath(cfg);
    const fake = new FakeFirecracker(sock);
    await fake.listen();
    const fault = async (p: Promise<void>, path: string, re: RegExp): Promise<void> => {
      await assert.rejects(p, (e: unknown) => e instanceof FirecrackerApiError && e.status === 400 && e.path === path && re.test(e.faultMessage));
    };
    try {
      await fault(firecrackerApi(sock, { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } }), '/actions', /^Cannot start microvm without kernel configuration\.$/);
      await fault(firecrackerApi(sock, { method: 'PUT', path: '/machine-config', body: { vcpu_count: 1, mem_size_mib: 128, memory: 1 } }), '/machine-config', /unknown field `memory`/);
      await fault(firecrackerApi(sock, { method: 'PUT', path: '/vsock', body: { uds_path: '/x' } }), '/vsock', /missing field `guest_cid`/);
      await fault(firecrackerApi(sock, { method: 'PUT', path: '/drives/rootfs', body: { drive_id: 'other', is_root_device: false } }), '/drives/rootfs', /does not match/);
      const patch = await rawRequest(sock, 'PATCH', '/machine-config', '{"vcpu_count":1}');
      assert.deepEqual(patch, { status: 400, body: { fault_message: 'Invalid request method and/or path: PATCH /machine-config.' } });
      assert.equal(fake.started, false);
    } finally {
      await fake.close();
    }
  });

  test('configure() waits for Firecracker to create its API socket', async () => {
    const cfg = makeVm();
    const fake = new FakeFirecracker(apiSocketPath(cfg));
    const configured = firecrackerDriver.launch(cfg).configure?.();
    await new Promise((r) => setTimeout(r, 300));
    await fake.listen();
    try {
      await configured;
      assert.equal(fake.started, true);
    } finally {
      await fake.close();
    }
  });

  test('an API socket that never appears is a HostError after the wait', async () => {
    const sock = join(makeVm().dir, 'fc.sock');
    const t0 = Date.now();
    await assert.rejects(firecrackerApi(sock, { method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } }, 200), (e: unknown) => {
      assert.ok(e instanceof HostError);
      assert.match(e.message, /did not accept connections within 200 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000);
  });
});
