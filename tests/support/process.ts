/**
 * Runs modelgraph as a real process (`node --import tsx cli.ts …`), as an operator would, with a
 * config file written for the test, and reads its JSON log lines as they arrive (other output,
 * such as a printed bootstrap key, arrives as `{ raw: <text> }`).
 *
 * The child gets this process's environment minus the variables that choose Redis and the
 * credentials (REDIS_URL, MODELGRAPH_BOOTSTRAP_KEY, MODELGRAPH_IDENTITY_SECRET): a test passes
 * those itself, so a developer's shell or CI cannot change what it checks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';

const root = resolve(import.meta.dirname, '../..');

/** Inherited variables a test must set explicitly when it wants them. */
const NOT_INHERITED = ['REDIS_URL', 'MODELGRAPH_BOOTSTRAP_KEY', 'MODELGRAPH_IDENTITY_SECRET'];

export interface ModelgraphProcess {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: () => string;
  /** Resolves with the first log line matching, waiting for it if needed. */
  waitForLine(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  exit: Promise<number | null>;
  kill(): void;
}

/** A TCP port free on loopback now (for a child that must be told its port before it listens). */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((done) => server.close(done));
  return port;
}

export function writeConfig(config: Record<string, unknown>): string {
  const file = join(mkdtempSync(join(tmpdir(), 'modelgraph-process-')), 'modelgraph.yaml');
  writeFileSync(file, stringify(config));
  return file;
}

export function spawnModelgraph(args: string[], env: Record<string, string> = {}): ModelgraphProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !NOT_INHERITED.includes(name)));
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli.ts', ...args], {
    cwd: root,
    // NODE_ENV=production as deployed: libraries behave differently under vitest's NODE_ENV=test.
    env: { ...inherited, NODE_ENV: 'production', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  const waiters: { match: (line: Record<string, unknown>) => boolean; resolve: (line: Record<string, unknown>) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      line = { raw: text };
    }
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.match(line)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  // 'close' (not 'exit'): it fires once the output pipes are drained, so `lines` is complete.
  const exit = once(child, 'close').then(([code]) => code as number | null);
  return {
    child,
    lines,
    stderr: () => stderr,
    exit,
    waitForLine(match) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolvePromise, reject) => {
        waiters.push({ match, resolve: resolvePromise });
        void exit.then((code) => reject(new Error(`modelgraph exited (${code}) before the expected log line:\n${stderr}`)));
      });
    },
    kill: () => child.kill('SIGKILL'),
  };
}
