/**
 * The container process's attributes (capabilities, user, umask, cwd, env, rlimits, no_new_privs,
 * oom score, sysctls, pid 1), runtime-agnostic: runs against Moat and (MOAT_TEST_RUNTIME=runc) runc.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNTIME, Sandbox, skipReason } from '../helpers/runtime.js';

const skip = skipReason();
if (skip) console.log(`# skipping process tests: ${skip}`);

/** Capability numbers from linux/capability.h. */
const CAP: Record<string, number> = { CAP_CHOWN: 0, CAP_KILL: 5, CAP_SETUID: 7, CAP_NET_BIND_SERVICE: 10 };

/** The /proc/<pid>/status hex mask of a capability set (16 hex digits, as the kernel prints it). */
function mask(caps: string[]): string {
  let m = 0n;
  for (const c of caps) {
    const n = CAP[c];
    assert.ok(n !== undefined, `unknown capability ${c}`);
    m |= 1n << BigInt(n);
  }
  return m.toString(16).padStart(16, '0');
}

/** The `Key:\tvalue` lines of a /proc/<pid>/status dump, by key. */
function statusFields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\w+):\s*(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!.trim());
  }
  return out;
}

describe(`process (${RUNTIME})`, { skip }, () => {
  const sb = new Sandbox();
  after(() => sb.cleanup());

  const sh = sb.sh.bind(sb);

  it('applies the configured bounding, effective, permitted, inheritable and ambient capability sets', async () => {
    const caps = {
      bounding: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE', 'CAP_SETUID'],
      effective: ['CAP_CHOWN', 'CAP_KILL'],
      permitted: ['CAP_CHOWN', 'CAP_KILL'],
      inheritable: ['CAP_KILL'],
      ambient: ['CAP_KILL'],
    };
    const status = statusFields(
      await sh('cat /proc/self/status', (s) => {
        s.process.capabilities = structuredClone(caps);
        // no_new_privs keeps exec from granting uid 0 its "root gets every bounding cap" file
        // capabilities, so the sets after exec are exactly the configured ones
        s.process.noNewPrivileges = true;
      }),
    );
    assert.equal(status.get('CapBnd'), mask(caps.bounding), 'CapBnd');
    assert.equal(status.get('CapPrm'), mask(caps.permitted), 'CapPrm');
    assert.equal(status.get('CapEff'), mask(caps.effective), 'CapEff');
    assert.equal(status.get('CapInh'), mask(caps.inheritable), 'CapInh');
    assert.equal(status.get('CapAmb'), mask(caps.ambient), 'CapAmb');
  });

  it('a non-root user keeps its ambient capabilities across exec, and only those', async () => {
    const status = statusFields(
      await sh('cat /proc/self/status', (s) => {
        s.process.user = { uid: 1000, gid: 1000 };
        s.process.capabilities = {
          bounding: ['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'],
          effective: ['CAP_KILL', 'CAP_NET_BIND_SERVICE'],
          permitted: ['CAP_KILL', 'CAP_NET_BIND_SERVICE'],
          inheritable: ['CAP_KILL', 'CAP_NET_BIND_SERVICE'],
          ambient: ['CAP_NET_BIND_SERVICE'],
        };
      }),
    );
    assert.equal(status.get('Uid')?.split(/\s+/)[0], '1000');
    // execve of a file without capabilities by a non-root user: permitted = effective = ambient
    assert.equal(status.get('CapAmb'), mask(['CAP_NET_BIND_SERVICE']), 'CapAmb');
    assert.equal(status.get('CapPrm'), mask(['CAP_NET_BIND_SERVICE']), 'CapPrm');
    assert.equal(status.get('CapEff'), mask(['CAP_NET_BIND_SERVICE']), 'CapEff');
    assert.equal(status.get('CapInh'), mask(['CAP_KILL', 'CAP_NET_BIND_SERVICE']), 'CapInh');
    assert.equal(status.get('CapBnd'), mask(['CAP_CHOWN', 'CAP_KILL', 'CAP_NET_BIND_SERVICE']), 'CapBnd');
  });

  it('runs as the configured uid, gid and additional gids', async () => {
    const out = await sh('id; grep -E "^(Uid|Gid|Groups):" /proc/self/status', (s) => {
      s.process.user = { uid: 1000, gid: 1000, additionalGids: [10, 20] };
    });
    const [id, ...rest] = out.trim().split('\n');
    assert.match(id ?? '', /^uid=1000(\(\w+\))? gid=1000(\(\w+\))? /);
    const groups = /groups=(\S+)/.exec(id ?? '')?.[1]?.split(',').map((g) => g.replace(/\(.*\)$/, ''));
    assert.ok(groups?.includes('10') && groups.includes('20'), `groups 10 and 20 missing from: ${id}`);
    const status = statusFields(rest.join('\n'));
    assert.deepEqual(status.get('Uid')?.split(/\s+/), ['1000', '1000', '1000', '1000']);
    assert.deepEqual(status.get('Gid')?.split(/\s+/), ['1000', '1000', '1000', '1000']);
    assert.deepEqual(status.get('Groups')?.split(/\s+/).sort(), ['10', '20']);
  });

  // Moat's sentry opens, creates and changes files and binds sockets for the workload: it must
  // do so as the caller (before, a uid-1000 workload under the sentry read a root-only file,
  // wrote in a root-owned directory, changed a root-owned file's mode and bound port 80, and
  // what it created was root's).
  // runc ignores the annotation: both rounds prove the test itself.
  for (const isolation of ['container', 'sentry'] as const) {
    it(`checks a non-root user's file access as that user, with its groups (io.moat.isolation=${isolation})`, async () => {
      const script = [
        'cat /data/secret || echo no-read',
        'echo x > /data/new || echo no-create',
        'chmod 666 /data/secret || echo no-chmod',
        'rm /data/secret || echo no-unlink',
        'echo y > /data/group/f && stat -c %u:%g:%a /data/group/f',
        'mkdir /data/group/d && stat -c %u:%g /data/group/d',
        'stat -c %a /data/secret',
        // a privileged port: bind fails at once (1); a bound listener waits until timeout kills it
        'timeout 1 nc -l -p 80 2>/dev/null; [ $? -eq 1 ] && echo no-bind || echo bound',
      ].join('; ');
      const b = await sb.bundle(['sh', '-c', script], (s) => {
        s.process.user = { uid: 1000, gid: 1000, additionalGids: [20], umask: 0o022 };
        s.root.readonly = false;
        s.annotations = { ...(s.annotations ?? {}), 'io.moat.isolation': isolation };
      });
      const data = join(b, 'rootfs/data');
      mkdirSync(join(data, 'group'), { recursive: true });
      chmodSync(data, 0o755);
      writeFileSync(join(data, 'secret'), 'root only\n', { mode: 0o600 });
      chownSync(join(data, 'group'), 0, 20);
      chmodSync(join(data, 'group'), 0o770);
      const r = await sb.rt(['run', '-b', b, sb.id()]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), ['no-read', 'no-create', 'no-chmod', 'no-unlink', '1000:1000:644', '1000:1000', '600', 'no-bind']);
    });
  }

  // Moat's sentry keeps the caller on its own CPU while it hands over an opened fd (pin.ts): the
  // workload's affinity must be what it was after every open, whether it narrowed it or not.
  for (const isolation of ['container', 'sentry'] as const) {
    it(`keeps the process's CPU affinity through many file opens (io.moat.isolation=${isolation})`, async () => {
      const opens = 'i=0; while [ $i -lt 300 ]; do : < /bin/sh; i=$((i+1)); done';
      const script = [`${opens}; nproc`, `taskset -c 0 sh -c '${opens}; nproc'`, `${opens}; nproc`].join('; ');
      const out = await sh(script, (s) => {
        s.annotations = { ...(s.annotations ?? {}), 'io.moat.isolation': isolation };
      });
      const all = String(availableParallelism());
      assert.deepEqual(out.trim().split('\n'), [all, '1', all]);
    });
  }

  // kill(2) never fails with EINTR. Under the sentry, a kill of a child that was just starting
  // (its startup calls in the sentry, where a fatal signal ends it at once) let the child's
  // SIGCHLD come while the shell's next kill waited for the sentry to take it: a handler without
  // SA_RESTART (the shell's) made that kill fail with EINTR and the child lived on.
  for (const isolation of ['container', 'sentry'] as const) {
    it(`a shell's kills of several children just started all succeed, each ending its child (io.moat.isolation=${isolation})`, async () => {
      const script = [
        'fails=0; i=0',
        'while [ $i -lt 60 ]; do',
        '  sleep 30 & a=$!; sleep 30 & b=$!; sleep 30 & c=$!',
        '  kill $a $b $c || fails=$((fails+1))',
        '  wait $a; s1=$?; wait $b; s2=$?; wait $c; s3=$?',
        '  [ "$s1 $s2 $s3" = "143 143 143" ] || { echo "statuses $s1 $s2 $s3"; fails=$((fails+1)); }',
        '  i=$((i+1))',
        'done',
        'sleep 30 & d=$!; kill -9 $d; wait $d; echo "kill -9: $?"',
        'echo "failed: $fails"',
      ].join('\n');
      const out = await sh(script, (s) => {
        s.annotations = { ...(s.annotations ?? {}), 'io.moat.isolation': isolation };
      });
      assert.equal(out, 'kill -9: 137\nfailed: 0\n');
    });
  }

  it('clears supplementary groups when additionalGids is empty', async () => {
    const status = statusFields(
      await sh('cat /proc/self/status', (s) => {
        s.process.user = { uid: 1000, gid: 1000 };
      }),
    );
    assert.equal(status.get('Groups'), '', 'the runtime leaked its supplementary groups');
  });

  it('applies the umask', async () => {
    const out = await sh('umask; touch /tmp/f; stat -c %a /tmp/f', (s) => {
      s.process.user.umask = 0o027;
    });
    assert.deepEqual(out.trim().split('\n'), ['0027', '640']);
  });

  it('starts in cwd with the configured environment; PATH finds a bare args[0]', async () => {
    const out = await sh('pwd; echo "FOO=$FOO"; echo "PATH=$PATH"', (s) => {
      s.process.cwd = '/home/moat';
      s.process.env.push('FOO=bar');
    });
    assert.deepEqual(out.trim().split('\n'), ['/home/moat', 'FOO=bar', 'PATH=/bin:/sbin:/usr/bin']);

    const b = await sb.bundle(['hello', 'world'], (s) => {
      s.process.env = ['PATH=/opt/moat/bin:/bin'];
    });
    mkdirSync(join(b, 'rootfs/opt/moat/bin'), { recursive: true });
    writeFileSync(join(b, 'rootfs/opt/moat/bin/hello'), '#!/bin/sh\necho "hello $1 from $0"\n', { mode: 0o755 });
    const r = await sb.rt(['run', '-b', b, sb.id()]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'hello world from /opt/moat/bin/hello\n');
  });

  it('creates a missing cwd inside the rootfs', async () => {
    const b = await sb.bundle(['sh', '-c', 'pwd'], (s) => {
      s.process.cwd = '/does/not/exist';
    });
    const r = await sb.rt(['run', '-b', b, sb.id()]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '/does/not/exist\n');
    assert.ok(existsSync(join(b, 'rootfs/does/not/exist')), 'the cwd was not created in the rootfs');
  });

  it('sets HOME from the user\'s /etc/passwd entry when the environment has none, "/" when it has no entry', async () => {
    const home = async (uid: number, env?: string): Promise<string> =>
      (
        await sh('echo "$HOME"', (s) => {
          s.process.user = { uid, gid: uid };
          if (env) s.process.env.push(env);
        })
      ).trim();
    assert.equal(await home(0), '/root');
    assert.equal(await home(1000), '/home/moat');
    assert.equal(await home(4242), '/');
    assert.equal(await home(1000, 'HOME=/custom'), '/custom', 'an explicit HOME must win');
  });

  it('applies rlimits (soft and hard)', async () => {
    const out = await sh('ulimit -n; ulimit -Sn; ulimit -Hn; grep "Max open files" /proc/self/limits', (s) => {
      s.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 512, hard: 1024 }];
    });
    const [n, soft, hard, limits] = out.trim().split('\n');
    assert.equal(n, '512');
    assert.equal(soft, '512');
    assert.equal(hard, '1024');
    assert.match(limits ?? '', /^Max open files\s+512\s+1024\s+files/);
  });

  it('sets no_new_privs when noNewPrivileges is true, and not when false', async () => {
    const on = statusFields(await sh('cat /proc/self/status', (s) => void (s.process.noNewPrivileges = true)));
    assert.equal(on.get('NoNewPrivs'), '1');
    const off = statusFields(await sh('cat /proc/self/status', (s) => void (s.process.noNewPrivileges = false)));
    assert.equal(off.get('NoNewPrivs'), '0');
  });

  it('sets oom_score_adj', async () => {
    const out = await sh('cat /proc/self/oom_score_adj', (s) => {
      s.process.oomScoreAdj = 500;
    });
    assert.equal(out.trim(), '500');
  });

  it('writes linux.sysctl values in the container namespaces', async () => {
    const out = await sh('cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax', (s) => {
      s.linux.sysctl = { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '123456789' };
    });
    assert.deepEqual(out.trim().split('\n'), ['1', '123456789']);
  });

  it('create fails when args[0] does not exist and leaves no container behind', async () => {
    for (const args of [['no-such-program-moat'], ['/bin/no-such-program-moat']]) {
      const b = await sb.bundle(args);
      const id = sb.id();
      const r = await sb.rt(['create', '-b', b, id]);
      assert.notEqual(r.status, 0, `create of ${args[0]} must fail`);
      assert.notEqual((await sb.rt(['state', id])).status, 0, `a failed create of ${args[0]} left a container`);
      const list = JSON.parse((await sb.ok(['list', '--format', 'json'])).stdout || 'null') as { id: string }[] | null;
      assert.equal((list ?? []).some((c) => c.id === id), false, 'list shows the failed container');
    }
  });

  it('the program is pid 1 of its pid namespace', async () => {
    const script = 'echo $$; cat /proc/1/cmdline | tr "\\0" "\\n"';
    const out = await sh(script);
    assert.deepEqual(out.split('\n'), ['1', 'sh', '-c', script, '']);
  });
});
