/**
 * Hooks that run in the runtime's namespaces (prestart, createRuntime, poststart, poststop):
 * each program gets the container state JSON on stdin and is killed when its timeout passes.
 * createContainer and startContainer hooks run inside the container (native/moat-init.c).
 */
import { spawn } from 'node:child_process';
import { HookError } from '../errors.js';
import type { HookSpec } from '../spec/schema.js';

/** Runs `hooks` one after another; the first failure throws HookError naming the hook. */
export async function runHooks(id: string, kind: string, hooks: readonly HookSpec[] | undefined, state: string): Promise<void> {
  for (const hook of hooks ?? []) await runHook(id, kind, hook, state);
}

function runHook(id: string, kind: string, hook: HookSpec, state: string): Promise<void> {
  const args = hook.args ?? [hook.path];
  const env: Record<string, string> = {};
  for (const e of hook.env ?? []) {
    const eq = e.indexOf('=');
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(hook.path, args.slice(1), { argv0: args[0] ?? hook.path, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    const collect = (b: Buffer) => {
      if (output.length < 4096) output += b.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.stdin.on('error', () => {}); // a hook that ignores stdin may close it early
    child.stdin.end(state);
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (hook.timeout) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, hook.timeout * 1000);
    }
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new HookError(id, kind, `cannot run ${hook.path}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const out = output.trim();
      if (timedOut) reject(new HookError(id, kind, `${hook.path} timed out after ${hook.timeout} s`));
      else if (code !== 0) reject(new HookError(id, kind, `${hook.path} failed (${signal ? `signal ${signal}` : `exit status ${code}`})${out ? `: ${out}` : ''}`));
      else resolve();
    });
  });
}
