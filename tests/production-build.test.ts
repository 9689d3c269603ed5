/**
 * The production build: `npm run build` output runs on plain node. It is laid out as a deployment
 * would be (dist/ beside package.json and node_modules, away from the sources, so nothing can be
 * read from the source tree by accident), started as `node dist/cli.js all`, and must serve a chat
 * through the router while loading no TypeScript tooling and no `.ts` file.
 *
 * The witness is a module-load recorder preloaded into the child (`node --import`): node:module
 * `register()` hooks see every ESM resolve and load, and at exit the child adds what ESM hooks do
 * not see on Node 20, the CommonJS require cache and the require extensions a loader installs
 * (tsx, ts-node and @swc/register add `.ts`). The same recorder must catch the sources started
 * through tsx, so it cannot pass by seeing nothing.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeConfig } from './support/process.ts';

const root = resolve(import.meta.dirname, '..');
const BOOTSTRAP_KEY = randomBytes(24).toString('hex');
/** Waits here are for a loaded 2-core machine: a cold start compiles nothing but still takes seconds. */
const SLOW = 60_000;

/** What gives a TypeScript transpiler away in a module URL. */
const TOOLING = ['/tsx/', '/typescript/', 'esbuild', 'ts-node', '@swc'];
const isTypeScriptFile = (url: string) => /\.[mc]?ts$/.test(new URL(url).pathname);

const HOOKS = `import { appendFileSync } from 'node:fs';
let log;
export function initialize(data) { log = data.log; }
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(log, 'esm ' + resolved.url + '\\n');
  return resolved;
}
export async function load(url, context, next) {
  appendFileSync(log, 'esm ' + url + '\\n');
  return next(url, context);
}
`;

const recorder = (log: string) => `import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';
const log = ${JSON.stringify(log)};
register('./hooks.mjs', import.meta.url, { data: { log } });
process.on('exit', () => {
  const require = createRequire(import.meta.url);
  const cjs = Object.keys(require.cache).map((file) => 'cjs ' + pathToFileURL(file).href);
  const extensions = Object.keys(require.extensions).map((extension) => 'extension ' + extension);
  appendFileSync(log, [...cjs, ...extensions, 'exit'].join('\\n') + '\\n');
});
`;

interface Loaded {
  urls: string[];
  extensions: string[];
  /** The child reached its exit handler: the record is complete. */
  complete: boolean;
}

/** A recorder writing to its own log; `node --import <url>` preloads it. */
function moduleRecorder(dir: string): { url: string; read: () => Loaded } {
  mkdirSync(dir, { recursive: true });
  const log = join(dir, 'loaded.log');
  writeFileSync(log, '');
  writeFileSync(join(dir, 'hooks.mjs'), HOOKS);
  writeFileSync(join(dir, 'recorder.mjs'), recorder(log));
  return {
    url: pathToFileURL(join(dir, 'recorder.mjs')).href,
    read() {
      const lines = readFileSync(log, 'utf8').split('\n').filter(Boolean);
      const after = (prefix: string) => lines.filter((line) => line.startsWith(prefix)).map((line) => line.slice(prefix.length));
      return {
        urls: [...new Set([...after('esm '), ...after('cjs ')])],
        extensions: after('extension '),
        complete: lines.includes('exit'),
      };
    },
  };
}

/** Everything in a record that means TypeScript was compiled at run time. */
const typeScriptAtRunTime = ({ urls, extensions }: Loaded) => [
  ...urls.filter((url) => url.startsWith('file:') && (TOOLING.some((mark) => url.includes(mark)) || isTypeScriptFile(url))),
  ...extensions.filter((extension) => /^\.[mc]?tsx?$/.test(extension)),
];

interface Started {
  child: ChildProcess;
  stderr: () => string;
  exit: Promise<number | null>;
  /** Resolves with the router's URL once the process logs that it is ready. */
  ready: Promise<string>;
}

/** Inherited variables that would change what the child does (Redis, credentials). */
const NOT_INHERITED = new Set(['REDIS_URL', 'MODELGRAPH_BOOTSTRAP_KEY', 'MODELGRAPH_IDENTITY_SECRET', 'NODE_OPTIONS']);

function start(args: string[], cwd: string): Started {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !NOT_INHERITED.has(name)));
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...inherited, NODE_ENV: 'production', LOG_LEVEL: 'info', MODELGRAPH_BOOTSTRAP_KEY: BOOTSTRAP_KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.push(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exit = once(child, 'close').then(([code]) => code as number | null);
  const ready = new Promise<string>((resolveReady, reject) => {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      let line: { msg?: string; url?: string } = {};
      try {
        line = JSON.parse(text) as typeof line;
      } catch {
        // not a log line (the bootstrap key notice is on standard error; this is anything else)
      }
      if (line.msg?.startsWith('modelgraph is ready') && line.url) resolveReady(line.url);
    });
    void exit.then((code) => reject(new Error(`exited (${code}) before it was ready:\n${stderr}`)));
  });
  // A run that is not meant to become ready (`--help`) leaves this rejected and unawaited.
  ready.catch(() => undefined);
  return { child, stderr: () => stderr, exit, ready };
}

const running: ChildProcess[] = [];
let app: string;

beforeAll(async () => {
  // A deployment's layout: the build, package.json (for "type": "module") and the dependencies.
  app = mkdtempSync(join(tmpdir(), 'modelgraph-build-'));
  copyFileSync(join(root, 'package.json'), join(app, 'package.json'));
  symlinkSync(join(root, 'node_modules'), join(app, 'node_modules'), 'dir');
  // A file from an earlier build that the sources no longer make must not survive the next one.
  mkdirSync(join(app, 'dist'));
  writeFileSync(join(app, 'dist', 'stale.js'), 'throw new Error("stale");\n');
  await promisify(execFile)(process.execPath, ['--import', 'tsx', 'schema/build.ts', '--out-dir', join(app, 'dist')], { cwd: root });
}, SLOW);

afterAll(() => {
  for (const child of running.splice(0)) child.kill('SIGKILL');
  if (!app) return;
  // The link first, on its own: the removal of the folder must not follow it into the real node_modules.
  unlinkSync(join(app, 'node_modules'));
  rmSync(app, { recursive: true, force: true });
});

const config = () =>
  writeConfig({
    router: { port: 0, shutdownGraceMs: 1_000 },
    subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
  });

describe('the production build', () => {
  it('is a fresh dist/ of JavaScript and the schema files, with a plain-node executable cli.js', () => {
    const dist = join(app, 'dist');
    expect(existsSync(join(dist, 'stale.js'))).toBe(false);
    expect(existsSync(join(dist, 'router', 'server.js'))).toBe(true);
    expect(existsSync(join(dist, 'schema', 'supergraph.graphql'))).toBe(true);
    expect(existsSync(join(dist, 'tests'))).toBe(false);
    expect(existsSync(join(dist, 'platform', 'config.test.js'))).toBe(false);
    const cli = readFileSync(join(dist, 'cli.js'), 'utf8');
    expect(cli.split('\n', 1)[0]).toBe('#!/usr/bin/env node');
    expect(cli).not.toMatch(/from '\.{1,2}\/[^']+\.ts'/);
    expect(statSync(join(dist, 'cli.js')).mode & 0o111).not.toBe(0);
  });

  it(
    'starts as `node dist/cli.js all`, answers a chat through the router, and loads no TypeScript tooling',
    async () => {
      const loads = moduleRecorder(join(app, 'recorder-dist'));
      const modelgraph = start(['--import', loads.url, 'dist/cli.js', 'all', '--config', config()], app);
      const url = await modelgraph.ready;
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${BOOTSTRAP_KEY}` },
        body: JSON.stringify({
          query: 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "hello from dist"}]}) { content } }',
        }),
      });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ data: { chat: { content: 'hello from dist' } } });
      modelgraph.child.kill('SIGTERM');
      expect(await modelgraph.exit).toBe(0);

      const loaded = loads.read();
      expect(loaded.complete).toBe(true);
      // The recorder saw the compiled code and the dependencies, so an empty finding means something.
      expect(loaded.urls).toContain(pathToFileURL(join(app, 'dist', 'router', 'server.js')).href);
      expect(loaded.urls.some((loadedUrl) => loadedUrl.includes('/node_modules/graphql/'))).toBe(true);
      expect(typeScriptAtRunTime(loaded)).toEqual([]);
    },
    SLOW,
  );

  it(
    'has a recorder that catches TypeScript compiled at run time: the sources started through tsx',
    async () => {
      const loads = moduleRecorder(join(app, 'recorder-tsx'));
      const help = start(['--import', loads.url, '--import', 'tsx', 'cli.ts', '--help'], root);
      expect(await help.exit).toBe(0);
      const found = typeScriptAtRunTime(loads.read());
      expect(found.some((url) => url.includes('/tsx/'))).toBe(true);
      expect(found).toContain(pathToFileURL(join(root, 'cli.ts')).href);
      expect(found).toContain('.ts');
    },
    SLOW,
  );
});
