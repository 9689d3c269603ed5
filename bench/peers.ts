/**
 * modelgraph beside a peer: the same OpenAI-compatible upstream (a mock, bench/peer-mock.ts)
 * called directly, through the Portkey gateway (@portkey-ai/gateway, its REST API) and through
 * modelgraph as shipped (GraphQL through the router, an API key on every request, rate limits,
 * budgets and metering on). For each, in one run:
 *
 *   - non-streaming chat throughput at --connections for --seconds (after a --warmup not counted),
 *     errors counted (non-2xx, transport errors, answers without the mock's text or with GraphQL errors);
 *   - CPU milliseconds per request of the gateway's processes (utime + stime from /proc, all its
 *     processes and their children), the figure that matters most on a small, shared machine;
 *   - latency at one connection (sequential requests), p50 and p99, and what the gateway adds;
 *   - time to the first streamed token (sequential streams): SSE for the REST targets, GraphQL over
 *     SSE and over graphql-ws for modelgraph;
 *   - --concurrent-streams streams at once from a mock that waits --slow-token-delay-ms per token:
 *     time per whole stream, p50 and p99, and its ratio to direct;
 *   - idle RSS after start (VmRSS) and peak RSS (VmHWM), summed over the gateway's processes;
 *   - modelgraph's ready time (spawn to the router's /readyz answering 200);
 *   - modelgraph only, last: --idle-subscriptions chatStream subscriptions over graphql-ws (20 per
 *     socket, the router's default cap) held open on a mock whose first token comes after
 *     --idle-token-delay-ms, and the RSS each costs every modelgraph process (0 skips it).
 *
 *   npx tsx bench/peers.ts [--seconds 10] [--warmup 2] [--connections 50] [--latency-requests 500]
 *     [--streams 200] [--concurrent-streams 100] [--stream-rounds 3] [--token-delay-ms 0] [--slow-token-delay-ms 20]
 *     [--idle-subscriptions 10000] [--idle-token-delay-ms 25000]
 *     [--layout all|split] [--redis redis://127.0.0.1:6379] [--log-level warn]
 *     [--modelgraph-command "node --import tsx cli.ts"] [--production] [--modelgraph-node-options "<flags>"]
 *     [--cpu-prof <dir>]
 *
 * --layout split runs the router and each subgraph as its own process (their CPU and memory are
 * summed); split processes share keys through Redis, so it uses --redis or redis://127.0.0.1:6379,
 * under a key prefix of its own that is deleted at the end. --modelgraph-command is what precedes
 * the role (`all`, `router`, `subgraph <name>`); --production uses `node dist/cli.js` when built;
 * --modelgraph-node-options adds to its NODE_OPTIONS (e.g. --trace-warnings).
 * --cpu-prof <dir> starts modelgraph with --cpu-prof (whole lifetime, every process) and prints the
 * top packages by self time after a graceful stop.
 *
 * Everything listens on 127.0.0.1; the mock and each gateway are processes of their own, the load
 * generator (autocannon, undici, graphql-ws) is this one. Portkey is started with a preload that
 * forces its listener onto 127.0.0.1 (it binds every interface), refuses any connection that would
 * leave loopback, and works around a header bug of its Node build (see PORTKEY_PRELOAD). Results go
 * to standard output as Markdown; record them in bench/results.md.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { createClient, type Client as WsClient } from 'graphql-ws';
import { Redis } from 'ioredis';
import { Client, Pool } from 'undici';
import WebSocket from 'ws';
import { newKeySecret } from '../platform/access/access-store.ts';
import { SUBGRAPH_NAMES } from '../platform/config.ts';
import { PLATFORM_TENANT } from '../platform/identity/principal.ts';
import { freePort, writeConfig } from '../tests/support/process.ts';
import { ANSWER, COMPLETION_TOKENS, promptTokens, type MockStats } from './peer-mock.ts';
import { cpuMs, listeningSockets, machineBusyMs, memoryKiB, processTree } from './support.ts';

const root = resolve(import.meta.dirname, '..');

// --- options ----------------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    'latency-requests': { type: 'string', default: '500' },
    streams: { type: 'string', default: '200' },
    'concurrent-streams': { type: 'string', default: '100' },
    'stream-rounds': { type: 'string', default: '3' },
    'token-delay-ms': { type: 'string', default: '0' },
    'slow-token-delay-ms': { type: 'string', default: '20' },
    'idle-subscriptions': { type: 'string', default: '10000' },
    'idle-token-delay-ms': { type: 'string', default: '25000' },
    layout: { type: 'string', default: 'all' },
    redis: { type: 'string' },
    'log-level': { type: 'string', default: 'warn' },
    'modelgraph-command': { type: 'string', default: 'node --import tsx cli.ts' },
    production: { type: 'boolean', default: false },
    'cpu-prof': { type: 'string' },
    'modelgraph-node-options': { type: 'string' },
  },
});
const options = {
  seconds: Number(values.seconds),
  warmup: Number(values.warmup),
  connections: Number(values.connections),
  latencyRequests: Number(values['latency-requests']),
  streams: Number(values.streams),
  concurrentStreams: Number(values['concurrent-streams']),
  streamRounds: Number(values['stream-rounds']),
  tokenDelayMs: Number(values['token-delay-ms']),
  slowTokenDelayMs: Number(values['slow-token-delay-ms']),
  idleSubscriptions: Number(values['idle-subscriptions']),
  idleTokenDelayMs: Number(values['idle-token-delay-ms']),
  layout: values.layout,
  logLevel: values['log-level'],
  cpuProfDir: values['cpu-prof'] && resolve(values['cpu-prof']),
};
if (options.idleSubscriptions > 0 && options.idleTokenDelayMs < 10_000)
  throw new Error('--idle-token-delay-ms must leave time to open them (10000 or more)');
if (options.layout !== 'all' && options.layout !== 'split') throw new Error('--layout is all or split');
// Split processes share API keys through Redis; `all` runs without it unless asked, as `npm start` does.
const redisUrl = values.redis ?? (options.layout === 'split' ? 'redis://127.0.0.1:6379' : undefined);
if (redisUrl && !/^redis:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(`${redisUrl}/`)) throw new Error('--redis must be on loopback');

/** The command before the role; with --cpu-prof, node's profiling flags (not allowed in NODE_OPTIONS on Node 20). */
function modelgraphCommand(): string[] {
  let command: string[];
  if (values.production) {
    if (!existsSync(join(root, 'dist/cli.js'))) throw new Error('--production needs dist/cli.js (build it first)');
    command = [process.execPath, 'dist/cli.js'];
  } else {
    const words = values['modelgraph-command'].trim().split(/\s+/);
    command = words[0] === 'node' ? [process.execPath, ...words.slice(1)] : words;
  }
  if (!options.cpuProfDir) return command;
  if (command[0] !== process.execPath) throw new Error('--cpu-prof needs a --modelgraph-command that starts with node');
  return [process.execPath, '--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`, ...command.slice(1)];
}

// --- the requests every target answers ---------------------------------------------------------

const PROMPT = 'The quick brown fox jumps over the lazy dog.';
const UPSTREAM_MODEL = 'gpt-4o-mini';
const MESSAGES = [{ role: 'user', content: PROMPT }];
const TOTAL_TOKENS = promptTokens(MESSAGES) + COMPLETION_TOKENS;
const API_KEY = newKeySecret('bench').secret;

const openAiBody = (stream: boolean, model = UPSTREAM_MODEL) =>
  JSON.stringify({ model, messages: MESSAGES, ...(stream && { stream: true, stream_options: { include_usage: true } }) });
const CHAT_MUTATION = 'mutation Chat($input: ChatInput!) { chat(input: $input) { id content finishReason usage { totalTokens } } }';
const CHAT_STREAM = `subscription ChatStream($input: ChatInput!) {
  chatStream(input: $input) {
    __typename
    ... on ChatDelta { content }
    ... on ChatCompleted { finishReason usage { totalTokens } }
    ... on ChatFailed { code message }
  }
}`;
const chatInput = (model: string) => ({ input: { model, messages: [{ role: 'USER', content: PROMPT }] } });

// --- processes ---------------------------------------------------------------------------------

interface Child {
  name: string;
  child: ChildProcess;
  spawnedAt: number;
  stdout: string[];
  /** Every line of standard output and standard error, with the phase of the run it came in. */
  output: { phase: string; stream: 'stdout' | 'stderr'; line: string }[];
  stderr: () => string;
  exit: Promise<number | null>;
  /** Resolves with the first stdout line matching; rejects if the process exits first. */
  waitForLine(match: (line: string) => boolean): Promise<string>;
}

const children: Child[] = [];
/** Temporary folders to remove at the end, however the run ends. */
const cleanup: string[] = [];
/** This run's Redis keys (with Redis), deleted at the end. */
const REDIS_PREFIX = `peers-bench:${randomUUID()}:`;

/** What the run is doing now: gateway output is attributed to it, and it is shown as progress. */
let phase = 'start-up';
function enterPhase(name: string): void {
  phase = name;
  process.stderr.write(`${name} …\n`);
}

function spawnChild(name: string, command: string[], env: NodeJS.ProcessEnv): Child {
  const [file, ...args] = command;
  const child = spawn(file!, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const output: Child['output'] = [];
  const waiters: { match: (line: string) => boolean; resolve: (line: string) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  createInterface({ input: child.stderr! }).on('line', (line) => output.push({ phase, stream: 'stderr', line }));
  createInterface({ input: child.stdout! }).on('line', (line) => {
    stdout.push(line);
    output.push({ phase, stream: 'stdout', line });
    for (const waiter of waiters.filter((candidate) => candidate.match(line))) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(line);
    }
  });
  const exit = once(child, 'close').then(([code]) => code as number | null);
  const spawned: Child = {
    name,
    child,
    spawnedAt: performance.now(),
    stdout,
    output,
    stderr: () => stderr,
    exit,
    waitForLine(match) {
      const seen = stdout.find(match);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolvePromise, reject) => {
        waiters.push({ match, resolve: resolvePromise });
        void exit.then((code) => reject(new Error(`${name} exited (${code}) before it was ready:\n${stderr.slice(-4000)}`)));
      });
    },
  };
  children.push(spawned);
  return spawned;
}

/** SIGTERM, then SIGKILL after `graceMs`: modelgraph drains, and writes its CPU profile, on SIGTERM. */
async function stopChild(child: Child, graceMs = 15_000): Promise<void> {
  if (child.child.exitCode !== null || child.child.signalCode !== null) return;
  child.child.kill('SIGTERM');
  const timer = setTimeout(() => child.child.kill('SIGKILL'), graceMs);
  await child.exit;
  clearTimeout(timer);
}

// A crash or Ctrl-C must not leave gateways behind on the machine.
process.on('exit', () => {
  for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
process.on('SIGINT', () => {
  void Promise.all(children.map((child) => stopChild(child, 3_000))).then(() => process.exit(130));
});

/** Polls `url` until it answers 200; returns the time since `since` (performance.now()). */
async function waitReady(url: string, since: number, child: Child, timeoutMs = 120_000): Promise<number> {
  while (performance.now() - since < timeoutMs) {
    if (child.child.exitCode !== null) throw new Error(`${child.name} exited (${child.child.exitCode}):\n${child.stderr().slice(-4000)}`);
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.ok) return performance.now() - since;
    } catch {
      // not listening yet
    }
    await sleep(20);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms:\n${child.stderr().slice(-4000)}`);
}

// --- /proc: what else peers.ts reads there (the rest in support.ts) -------------------------------

function commandName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

interface Gateway {
  name: string;
  /** The processes this bench spawned for it; their descendants are found at each reading. */
  roots: number[];
}

interface Reading {
  at: number;
  gatewayMs: number;
  mockMs: number;
  benchMs: number;
  machineMs: number;
}

function read(gateway: Gateway | undefined, mock: Child): Reading {
  const usage = process.cpuUsage();
  return {
    at: performance.now(),
    gatewayMs: gateway ? cpuMs(processTree(gateway.roots)) : 0,
    mockMs: cpuMs(processTree([mock.child.pid!])),
    benchMs: (usage.user + usage.system) / 1000,
    machineMs: machineBusyMs(),
  };
}

/** CPU per unit of work over a window, and how busy the rest of the machine was (in cores). */
function cpuOver(before: Reading, after: Reading, units: number) {
  const wallMs = after.at - before.at;
  const gatewayMs = after.gatewayMs - before.gatewayMs;
  const mockMs = after.mockMs - before.mockMs;
  const benchMs = after.benchMs - before.benchMs;
  return {
    gatewayMsPerUnit: gatewayMs / units,
    mockMsPerUnit: mockMs / units,
    benchCores: benchMs / wallMs,
    gatewayCores: gatewayMs / wallMs,
    otherCores: Math.max(0, after.machineMs - before.machineMs - gatewayMs - mockMs - benchMs) / wallMs,
  };
}

// --- the mock, Portkey and modelgraph ----------------------------------------------------------

interface Mocks {
  child: Child;
  fast: number;
  slow: number;
  /** Sends a stream's first token only after --idle-token-delay-ms: subscriptions on it stay idle. */
  idle: number;
}

async function startMocks(): Promise<Mocks> {
  const child = spawnChild(
    'mock',
    [
      process.execPath,
      '--import',
      'tsx',
      'bench/peer-mock.ts',
      '--delays',
      `${options.tokenDelayMs},${options.slowTokenDelayMs},${options.idleTokenDelayMs}`,
    ],
    {
      ...process.env,
      NODE_ENV: 'production',
    },
  );
  const line = await child.waitForLine((text) => text.startsWith('{"mocks"'));
  const { mocks } = JSON.parse(line) as { mocks: { delayMs: number; port: number }[] };
  return { child, fast: mocks[0]!.port, slow: mocks[1]!.port, idle: mocks[2]!.port };
}

async function mockStats(port: number): Promise<MockStats> {
  return (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as MockStats;
}

/**
 * Loaded into Portkey with --import. Three things, each reported on stdout as a JSON line:
 *
 * 1. Loopback only: Portkey's Node server (@hono/node-server `serve({ fetch, port })`) listens on
 *    every interface; each listen is rewritten to 127.0.0.1 and its address reported.
 * 2. No packet leaves the machine: a connection to any host but loopback is refused and reported
 *    (the upstream is the mock; nothing else should be called).
 * 3. Streamed chats fail on this install (`TypeError: immutable`, "Something went wrong"):
 *    @hono/node-server above 1.14.2 (1.19 here) makes `new Response(body, upstreamResponse)` keep
 *    the upstream fetch Response's immutable Headers, and Portkey then appends its x-portkey-*
 *    headers to them (Portkey-AI/gateway#1389, #1550). Once the server has replaced the global
 *    Response with its lightweight one, a subclass copies such headers first, as node-server did
 *    before; every other construction is unchanged.
 */
const PORTKEY_PRELOAD = `
import net from 'node:net';
const report = (line) => process.stdout.write(JSON.stringify(line) + '\\n');
const NativeResponse = globalThis.Response;

function copyUpstreamHeaders() {
  const Lightweight = globalThis.Response;
  if (Lightweight === NativeResponse || Lightweight.peersCopying) return;
  class CopyingResponse extends Lightweight {
    static peersCopying = true;
    constructor(body, init) {
      const upstream = init instanceof NativeResponse && !(init instanceof Lightweight);
      super(body, upstream ? { status: init.status, statusText: init.statusText, headers: new Headers(init.headers) } : init);
    }
  }
  Object.defineProperty(globalThis, 'Response', { value: CopyingResponse });
  report({ peersCopyingResponse: true });
}

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === 'object') args[0] = { ...args[0], host: '127.0.0.1' };
  else {
    const callback = typeof args.at(-1) === 'function' ? args.pop() : undefined;
    args = [Number(args[0] ?? 0), '127.0.0.1', ...(callback ? [callback] : [])];
  }
  this.once('listening', () => {
    copyUpstreamHeaders();
    report({ peersListening: this.address() });
  });
  return listen.apply(this, args);
};

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  // net.connect passes its normalised [options, callback] as one array.
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  const host =
    first !== null && typeof first === 'object'
      ? first.path === undefined ? String(first.host ?? 'localhost') : undefined
      : typeof args[1] === 'string' ? args[1] : 'localhost';
  if (host !== undefined && !['localhost', '::1', '[::1]'].includes(host) && !host.startsWith('127.')) {
    report({ peersRefused: host });
    process.nextTick(() => this.destroy(new Error('bench/peers.ts: no connection leaves loopback (' + host + ')')));
    return this;
  }
  return connect.apply(this, args);
};
`;

async function startPortkey(workDir: string): Promise<{ child: Child; port: number; readyMs: number; listens: string }> {
  const preload = join(workDir, 'portkey-preload.mjs');
  writeFileSync(preload, PORTKEY_PRELOAD);
  const server = join(root, 'node_modules/@portkey-ai/gateway/build/start-server.js');
  const child = spawnChild('Portkey', [process.execPath, '--import', preload, server, '--port=0', '--headless'], {
    ...process.env,
    NODE_ENV: 'production',
  });
  const line = await child.waitForLine((text) => text.startsWith('{"peersListening"'));
  const { address, port } = (JSON.parse(line) as { peersListening: AddressInfo }).peersListening;
  if (address !== '127.0.0.1') throw new Error(`Portkey listens on ${address}`);
  const readyMs = await waitReady(`http://127.0.0.1:${port}/`, child.spawnedAt, child);
  return { child, port, readyMs, listens: listeningSockets(child.child.pid!) };
}

/** TCP connections (any state) of these processes whose peer is not loopback, as `ss` lists them. */
function foreignConnections(pids: number[]): string[] {
  const lines = execFileSync('ss', ['-tanpH'], { maxBuffer: 256 * 1024 * 1024 })
    .toString()
    .split('\n');
  return lines
    .filter((line) => pids.some((pid) => line.includes(`pid=${pid},`)))
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[0] !== 'LISTEN' && !/^(127\.|\[::1\]|\[::ffff:127\.)/.test(fields[4] ?? ''))
    .map((fields) => `${fields[3]} → ${fields[4]}`);
}

interface Modelgraph {
  processes: Child[];
  url: string;
  readyMs: number;
  routerReadyMs: number;
}

/** As shipped, but with the numbers raised so that the load is counted, not refused. */
function modelgraphConfig(ports: Record<'router' | (typeof SUBGRAPH_NAMES)[number], number>, mocks: Mocks) {
  // Far above the load, yet enforced: every call takes its step in the limiter (Redis or memory).
  const huge = { max: 1_000_000, window: '1m' };
  const model = (id: string, provider: string) => ({
    id,
    provider,
    upstream: UPSTREAM_MODEL,
    version: '1',
    capabilities: ['CHAT'],
    contextWindow: 128_000,
    maxOutputTokens: 4_096,
    tokensPerMinute: 1_000_000_000_000,
    pricing: { inputPerMillionTokens: 0.15, outputPerMillionTokens: 0.6 },
  });
  return {
    router: {
      host: '127.0.0.1',
      port: ports.router,
      rateLimits: { 'Mutation.chat': huge, 'Subscription.chatStream': huge },
      limits: { maxSubscriptionsPerPrincipal: 100_000 },
      // Room for --idle-subscriptions (the shipped cap is 50,000 streams a process).
      admission: { maxStreams: 100_000 },
    },
    subgraphs: Object.fromEntries(SUBGRAPH_NAMES.map((name) => [name, { host: '127.0.0.1', port: ports[name] }])),
    ...(options.layout === 'split' && { agents: { routerUrl: `http://127.0.0.1:${ports.router}/graphql` } }),
    redis: { keyPrefix: REDIS_PREFIX },
    metering: {
      tenants: { [PLATFORM_TENANT]: { tokensPerMinute: 1_000_000_000_000, usdPerDay: 1_000_000_000, usdPerMonth: 1_000_000_000 } },
    },
    log: { level: options.logLevel },
    providers: {
      mock: { type: 'openai-compatible', baseUrl: `http://127.0.0.1:${mocks.fast}/v1` },
      'mock-slow': { type: 'openai-compatible', baseUrl: `http://127.0.0.1:${mocks.slow}/v1` },
      'mock-idle': { type: 'openai-compatible', baseUrl: `http://127.0.0.1:${mocks.idle}/v1` },
    },
    models: [model('bench-model', 'mock'), model('bench-slow', 'mock-slow'), model('bench-idle', 'mock-idle')],
  };
}

async function startModelgraph(mocks: Mocks): Promise<Modelgraph> {
  const ports = Object.fromEntries(await Promise.all(['router', ...SUBGRAPH_NAMES].map(async (name) => [name, await freePort()])));
  const config = modelgraphConfig(ports, mocks);
  const configFile = writeConfig(config);
  cleanup.push(dirname(configFile));
  // As tests/support/process.ts does: none of the developer's Redis or credentials, NODE_ENV=production.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !['REDIS_URL', 'MODELGRAPH_BOOTSTRAP_KEY', 'MODELGRAPH_IDENTITY_SECRET'].includes(name)),
  );
  const env: NodeJS.ProcessEnv = {
    ...inherited,
    NODE_ENV: 'production',
    LOG_LEVEL: options.logLevel,
    MODELGRAPH_BOOTSTRAP_KEY: API_KEY,
    ...(redisUrl && { REDIS_URL: redisUrl }),
    ...(options.layout === 'split' && { MODELGRAPH_IDENTITY_SECRET: randomBytes(32).toString('hex') }),
    ...(values['modelgraph-node-options'] && {
      NODE_OPTIONS: [process.env.NODE_OPTIONS, values['modelgraph-node-options']].filter(Boolean).join(' '),
    }),
  };
  const command = modelgraphCommand();
  const started = performance.now();
  const processes: Child[] = [];
  if (options.layout === 'split') {
    const subgraphs = SUBGRAPH_NAMES.map((name) =>
      spawnChild(`modelgraph ${name}`, [...command, 'subgraph', name, '--config', configFile], env),
    );
    processes.push(...subgraphs);
    await Promise.all(
      subgraphs.map((child, index) => waitReady(`http://127.0.0.1:${ports[SUBGRAPH_NAMES[index]!]}/readyz`, started, child)),
    );
  }
  const role = options.layout === 'split' ? ['router'] : ['all'];
  const router = spawnChild(`modelgraph ${role[0]}`, [...command, ...role, '--config', configFile], env);
  processes.push(router);
  const routerReadyMs = await waitReady(`http://127.0.0.1:${ports.router}/readyz`, router.spawnedAt, router);
  return {
    processes,
    url: `http://127.0.0.1:${ports.router}/graphql`,
    readyMs: performance.now() - started,
    routerReadyMs,
  };
}

/** Removes this run's keys (API keys, limits, meter, usage) from the shared Redis. */
async function deleteRedisKeys(prefix: string): Promise<number> {
  const redis = new Redis(redisUrl!, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  let deleted = 0;
  for await (const keys of redis.scanStream({ match: `${prefix}*`, count: 1000 }) as AsyncIterable<string[]>) {
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  }
  redis.disconnect();
  return deleted;
}

// --- targets -----------------------------------------------------------------------------------

interface StreamTiming {
  firstTokenMs: number;
  totalMs: number;
  content: string;
}

interface Streamer {
  /** One stream on connection (or client) `slot`; rejects when it fails or answers anything but the mock's text. */
  stream(slot: number): Promise<StreamTiming>;
  close(): Promise<void>;
}

interface StreamRoute {
  transport: 'SSE' | 'graphql-ws';
  /** `connections` connections or clients, to the fast mock or (slow) the one that waits per token. */
  open(connections: number, slow: boolean): Promise<Streamer>;
}

interface Target {
  name: string;
  gateway?: Gateway;
  url: string;
  headers: Record<string, string>;
  body: string;
  /** The answer's text from a whole response body, and its total tokens. */
  answer(body: string): { content: string; totalTokens: number };
  streams: StreamRoute[];
}

/** The pieces of text a stream event carries; throws on an event that reports a failure. */
type EventReader = (event: EventSourceMessage) => string | undefined;

const readOpenAiEvent: EventReader = (event) => {
  if (event.data === '[DONE]') return undefined;
  const chunk = JSON.parse(event.data) as { choices?: { delta?: { content?: string } }[]; error?: { message: string } };
  if (chunk.error) throw new Error(chunk.error.message);
  return chunk.choices?.[0]?.delta?.content;
};

type ChatStreamEvent =
  | { __typename: 'ChatDelta'; content: string }
  | { __typename: 'ChatCompleted' }
  | { __typename: 'ChatFailed'; code: string; message: string };

function chatStreamContent(result: {
  data?: { chatStream?: ChatStreamEvent } | null;
  errors?: readonly { message: string }[];
}): string | undefined {
  const event = result.data?.chatStream;
  if (!event) throw new Error(`chatStream failed: ${result.errors?.map((error) => error.message).join('; ') ?? 'no data'}`);
  if (event.__typename === 'ChatFailed') throw new Error(`ChatFailed ${event.code}: ${event.message}`);
  return event.__typename === 'ChatDelta' ? event.content : undefined;
}

const readGraphQLSseEvent: EventReader = (event) =>
  event.event === 'next' ? chatStreamContent(JSON.parse(event.data) as Parameters<typeof chatStreamContent>[0]) : undefined;

/** Longest wait for a response's headers or its next chunk, or for a whole graphql-ws stream. */
const STREAM_TIMEOUT_MS = 30_000;

function checked(timing: StreamTiming): StreamTiming {
  if (timing.content !== ANSWER) throw new Error(`streamed ${JSON.stringify(timing.content.slice(0, 200))}, not the mock's answer`);
  return timing;
}

function sseStreamer(url: string, headers: Record<string, string>, body: string, readEvent: EventReader, connections: number): Streamer {
  const { origin, pathname } = new URL(url);
  const pool = new Pool(origin, { connections });
  return {
    async stream() {
      const started = performance.now();
      const response = await pool.request({
        path: pathname,
        method: 'POST',
        headers: { ...headers, accept: 'text/event-stream' },
        body,
        headersTimeout: STREAM_TIMEOUT_MS,
        bodyTimeout: STREAM_TIMEOUT_MS,
      });
      if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}: ${(await response.body.text()).slice(0, 300)}`);
      let firstTokenMs = Number.NaN;
      let content = '';
      let failure: unknown;
      const parser = createParser({
        onEvent(event) {
          try {
            const piece = readEvent(event);
            if (!piece) return;
            if (content === '') firstTokenMs = performance.now() - started;
            content += piece;
          } catch (error) {
            failure ??= error;
          }
        },
      });
      const decoder = new TextDecoder();
      for await (const chunk of response.body) parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
      if (failure) throw failure;
      return checked({ firstTokenMs, totalMs: performance.now() - started, content });
    },
    close: () => pool.close(),
  };
}

/** `count` graphql-ws clients with the bench's key, each connected and acknowledged. */
async function connectedWsClients(url: string, count: number): Promise<WsClient[]> {
  const clients = Array.from({ length: count }, () =>
    createClient({
      url: url.replace('http', 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      connectionParams: { authorization: `Bearer ${API_KEY}` },
    }),
  );
  await Promise.all(clients.map((client) => new Promise<void>((resolvePromise) => client.on('connected', () => resolvePromise()))));
  return clients;
}

/** graphql-ws clients, each connected (and acknowledged) before the first measured stream. */
async function wsStreamer(url: string, model: string, connections: number): Promise<Streamer> {
  const clients = await connectedWsClients(url, connections);
  return {
    async stream(slot) {
      const started = performance.now();
      let firstTokenMs = Number.NaN;
      let content = '';
      const results = clients[slot % clients.length]!.iterate({ query: CHAT_STREAM, variables: chatInput(model) });
      // A stream that hangs is ended (and then fails the content check) rather than hanging the run.
      const timer = setTimeout(() => void results.return?.(), STREAM_TIMEOUT_MS);
      try {
        for await (const result of results) {
          const piece = chatStreamContent(result as Parameters<typeof chatStreamContent>[0]);
          if (!piece) continue;
          if (content === '') firstTokenMs = performance.now() - started;
          content += piece;
        }
      } finally {
        clearTimeout(timer);
      }
      return checked({ firstTokenMs, totalMs: performance.now() - started, content });
    },
    close: async () => void (await Promise.all(clients.map((client) => client.dispose()))),
  };
}

function openAiAnswer(body: string) {
  const parsed = JSON.parse(body) as { choices?: { message?: { content?: string } }[]; usage?: { total_tokens?: number } };
  return { content: parsed.choices?.[0]?.message?.content ?? '', totalTokens: parsed.usage?.total_tokens ?? 0 };
}

function directTarget(mocks: { fast: number; slow: number }): Target {
  const url = (port: number) => `http://127.0.0.1:${port}/v1/chat/completions`;
  const headers = { 'content-type': 'application/json', authorization: 'Bearer sk-mock' };
  return {
    name: 'direct to the mock',
    url: url(mocks.fast),
    headers,
    body: openAiBody(false),
    answer: openAiAnswer,
    streams: [
      {
        transport: 'SSE',
        open: async (connections, slow) =>
          sseStreamer(url(slow ? mocks.slow : mocks.fast), headers, openAiBody(true), readOpenAiEvent, connections),
      },
    ],
  };
}

function portkeyTarget(port: number, pid: number, mocks: { fast: number; slow: number }): Target {
  const url = `http://127.0.0.1:${port}/v1/chat/completions`;
  // x-portkey-custom-host replaces the provider's base URL (it is checked and 127.0.0.1 is trusted by default).
  const headers = (mock: number) => ({
    'content-type': 'application/json',
    authorization: 'Bearer sk-mock',
    'x-portkey-provider': 'openai',
    'x-portkey-custom-host': `http://127.0.0.1:${mock}/v1`,
  });
  return {
    name: 'Portkey',
    gateway: { name: 'Portkey', roots: [pid] },
    url,
    headers: headers(mocks.fast),
    body: openAiBody(false),
    answer: openAiAnswer,
    streams: [
      {
        transport: 'SSE',
        open: async (connections, slow) =>
          sseStreamer(url, headers(slow ? mocks.slow : mocks.fast), openAiBody(true), readOpenAiEvent, connections),
      },
    ],
  };
}

function modelgraphTarget(modelgraph: Modelgraph): Target {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` };
  const model = (slow: boolean) => (slow ? 'bench-slow' : 'bench-model');
  return {
    name: 'modelgraph',
    gateway: { name: 'modelgraph', roots: modelgraph.processes.map((child) => child.child.pid!) },
    url: modelgraph.url,
    headers,
    body: JSON.stringify({ query: CHAT_MUTATION, variables: chatInput('bench-model') }),
    answer(body) {
      const parsed = JSON.parse(body) as {
        data?: { chat?: { content: string; usage: { totalTokens: number } } };
        errors?: { message: string }[];
      };
      if (!parsed.data?.chat)
        throw new Error(`chat failed: ${parsed.errors?.map((error) => error.message).join('; ') ?? body.slice(0, 300)}`);
      return { content: parsed.data.chat.content, totalTokens: parsed.data.chat.usage.totalTokens };
    },
    streams: [
      {
        transport: 'SSE',
        open: async (connections, slow) =>
          sseStreamer(
            modelgraph.url,
            headers,
            JSON.stringify({ query: CHAT_STREAM, variables: chatInput(model(slow)) }),
            readGraphQLSseEvent,
            connections,
          ),
      },
      { transport: 'graphql-ws', open: (connections, slow) => wsStreamer(modelgraph.url, model(slow), connections) },
    ],
  };
}

/** modelgraph's OpenAI-compatible door on the router's port: the same requests as Portkey's. */
function modelgraphRestTarget(modelgraph: Modelgraph): Target {
  const url = modelgraph.url.replace(/\/graphql$/, '/v1/chat/completions');
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}` };
  return {
    name: 'modelgraph REST',
    gateway: { name: 'modelgraph', roots: modelgraph.processes.map((child) => child.child.pid!) },
    url,
    headers,
    body: openAiBody(false, 'bench-model'),
    answer: openAiAnswer,
    streams: [
      {
        transport: 'SSE',
        open: async (connections, slow) =>
          sseStreamer(url, headers, openAiBody(true, slow ? 'bench-slow' : 'bench-model'), readOpenAiEvent, connections),
      },
    ],
  };
}

// --- measurements ------------------------------------------------------------------------------

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function summary(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

/** One whole chat and one stream, checked, before any load: a misconfigured target fails here. */
async function checkTarget(target: Target, mockPort: number): Promise<void> {
  const before = await mockStats(mockPort);
  const response = await fetch(target.url, { method: 'POST', headers: target.headers, body: target.body });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`${target.name}: HTTP ${response.status}: ${text.slice(0, 500)}`);
  const { content, totalTokens } = target.answer(text);
  if (content !== ANSWER || totalTokens !== TOTAL_TOKENS) {
    throw new Error(`${target.name} answered ${JSON.stringify(content)} with ${totalTokens} tokens, not the mock's ${TOTAL_TOKENS}`);
  }
  for (const route of target.streams) {
    const streamer = await route.open(1, false);
    await streamer.stream(0).finally(() => streamer.close());
  }
  const after = await mockStats(mockPort);
  if (after.chats - before.chats !== 1 + target.streams.length || after.streams - before.streams !== target.streams.length) {
    throw new Error(`${target.name}: the mock saw ${after.chats - before.chats} chats, ${after.streams - before.streams} streamed`);
  }
}

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  errorDetail: string;
}

async function load(target: Target, seconds: number): Promise<LoadResult> {
  const result = await autocannon({
    url: target.url,
    connections: options.connections,
    duration: seconds,
    method: 'POST',
    headers: target.headers,
    body: target.body,
    // A 200 without the mock's text (a GraphQL error, a gateway's own failure JSON) is an error too.
    verifyBody: (body) => body?.includes(ANSWER) === true && !body.includes('"errors"'),
  });
  const errors = result.errors + result.timeouts + result.non2xx + result.mismatches;
  return {
    rps: result.requests.total / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    requests: result.requests.total,
    errors,
    errorDetail: `${result.errors} transport, ${result.timeouts} timeouts, ${result.non2xx} non-2xx, ${result.mismatches} wrong answers`,
  };
}

/** Sequential whole chats on one keep-alive connection, timed with performance.now(). */
async function sequentialLatency(target: Target, count: number) {
  const { origin, pathname } = new URL(target.url);
  const client = new Client(origin, { headersTimeout: STREAM_TIMEOUT_MS, bodyTimeout: STREAM_TIMEOUT_MS });
  const samples: number[] = [];
  let errors = 0;
  try {
    for (let index = 0; index < count + 50; index++) {
      const started = performance.now();
      const response = await client.request({ path: pathname, method: 'POST', headers: target.headers, body: target.body });
      const body = await response.body.text();
      const elapsed = performance.now() - started;
      if (response.statusCode !== 200 || !body.includes(ANSWER) || body.includes('"errors"')) errors++;
      if (index >= 50) samples.push(elapsed); // the first 50 warm the path up
    }
  } finally {
    await client.close();
  }
  return { ...summary(samples), errors };
}

/** Sequential streams on one connection: time to the first token of text. */
async function firstTokens(route: StreamRoute, count: number) {
  const streamer = await route.open(1, false);
  const samples: number[] = [];
  let errors = 0;
  try {
    for (let index = 0; index < count + 10; index++) {
      try {
        const { firstTokenMs } = await streamer.stream(0);
        if (index >= 10) samples.push(firstTokenMs);
      } catch {
        errors++;
      }
    }
  } finally {
    await streamer.close();
  }
  return { ...summary(samples), errors };
}

/**
 * `count` streams at once from the slow mock, in 1 + `rounds` rounds: the first opens the
 * connections, the others are measured (one after the other, their times pooled).
 */
async function concurrentStreams(route: StreamRoute, count: number, rounds: number, gateway: Gateway | undefined, mock: Child) {
  const streamer = await route.open(count, true);
  const round = () => Promise.allSettled(Array.from({ length: count }, (_, slot) => streamer.stream(slot)));
  try {
    await round();
    const before = read(gateway, mock);
    const windowUs = { from: monotonicUs(), to: 0 };
    const settled = [];
    for (let measured = 0; measured < rounds; measured += 1) settled.push(...(await round()));
    windowUs.to = monotonicUs();
    const cpu = cpuOver(before, read(gateway, mock), settled.length);
    const totals = settled.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value.totalMs] : []));
    const failure = settled.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
    return {
      ...summary(totals),
      errors: settled.length - totals.length,
      firstError: failure && String(failure.reason),
      cpuMsPerStream: cpu.gatewayMsPerUnit,
      windowUs,
    };
  } finally {
    await streamer.close();
  }
}

/** The router's default router.limits.maxSubscriptionsPerConnection, kept: a socket carries this many. */
const SUBSCRIPTIONS_PER_CONNECTION = 20;

interface IdleResult {
  count: number;
  connections: number;
  openMs: number;
  /** RSS of each of modelgraph's processes (by role) before opening and with all of them open. */
  before: { role: string; kiB: number }[];
  after: { role: string; kiB: number }[];
  errors: number;
  firstError?: string;
}

/**
 * `count` chatStream subscriptions over graphql-ws on the mock that waits before its first token:
 * open (every upstream stream reached the mock), nothing flowing, they cost only memory. Measured
 * by each process's RSS before and after; then all are unsubscribed.
 */
async function idleSubscriptions(modelgraph: Modelgraph, idleMockPort: number, count: number): Promise<IdleResult> {
  const rss = () => modelgraph.processes.map((child) => ({ role: child.name, kiB: memoryKiB(processTree([child.child.pid!]), 'VmRSS') }));
  const connections = Math.ceil(count / SUBSCRIPTIONS_PER_CONNECTION);
  const before = rss();
  const upstreamBefore = (await mockStats(idleMockPort)).streams;
  const started = performance.now();
  const clients = await connectedWsClients(modelgraph.url, connections);
  let errors = 0;
  let firstError: string | undefined;
  const unsubscribes = Array.from({ length: count }, (_, index) =>
    clients[Math.floor(index / SUBSCRIPTIONS_PER_CONNECTION)]!.subscribe(
      { query: CHAT_STREAM, variables: chatInput('bench-idle') },
      {
        next: () => undefined,
        error: (error) => {
          errors++;
          firstError ??= error instanceof Error ? error.message : JSON.stringify(error);
        },
        complete: () => undefined,
      },
    ),
  );
  try {
    // Open once the mock holds every one of their upstream streams (and before any first token).
    const deadline = started + options.idleTokenDelayMs - 2_000;
    const opened = async () => (await mockStats(idleMockPort)).streams - upstreamBefore;
    while ((await opened()) < count && errors === 0 && performance.now() < deadline) await sleep(100);
    const openMs = performance.now() - started;
    const open = await opened();
    if (open < count && errors === 0) {
      errors = count - open;
      firstError = `only ${open} of ${count} reached the upstream before the first token was due`;
    }
    // What is left of the opening burst's garbage is the same for every run; let a GC cycle pass.
    await sleep(1_000);
    return { count, connections, openMs, before, after: rss(), errors, ...(firstError && { firstError }) };
  } finally {
    for (const unsubscribe of unsubscribes) unsubscribe();
    await Promise.all(clients.map((client) => client.dispose()));
  }
}

function idleTable(result: IdleResult | undefined): string[] {
  if (!result) return [];
  const kib = (entries: { kiB: number }[]) => entries.reduce((sum, entry) => sum + entry.kiB, 0);
  const rows = result.before.map((before, index) => {
    const after = result.after[index]!;
    return `| ${before.role} | ${mib(before.kiB)} | ${mib(after.kiB)} | ${((after.kiB - before.kiB) / result.count).toFixed(1)} |`;
  });
  return [
    `\n### ${result.count} idle chatStream subscriptions over graphql-ws (${result.connections} connections, ${SUBSCRIPTIONS_PER_CONNECTION} each), open in ${(result.openMs / 1000).toFixed(1)} s, ${result.errors} errors${result.firstError ? ` (first: ${result.firstError})` : ''}\n`,
    '| process | RSS before MiB | RSS with all open MiB | KiB per subscription |',
    '|---|---|---|---|',
    ...rows,
    ...(rows.length > 1
      ? [
          `| all | ${mib(kib(result.before))} | ${mib(kib(result.after))} | ${((kib(result.after) - kib(result.before)) / result.count).toFixed(1)} |`,
        ]
      : []),
  ];
}

interface TargetResult {
  target: Target;
  load: LoadResult;
  cpu: ReturnType<typeof cpuOver>;
  latency: Awaited<ReturnType<typeof sequentialLatency>>;
  firstToken: { transport: string; result: Awaited<ReturnType<typeof firstTokens>> }[];
  concurrent: { transport: string; result: Awaited<ReturnType<typeof concurrentStreams>> }[];
  idleRssKiB: number;
  peakRssKiB: number;
  /** The gateway's processes at the end, by command name (/proc/<pid>/comm). */
  processes: string[];
  /** The measured load window on the monotonic clock V8's CPU profiles use (µs). */
  loadWindowUs: { from: number; to: number };
  /** Connections of the gateway to anything but loopback, seen after the load. */
  foreign: string[];
}

const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

async function measure(target: Target, mocks: { fast: number; child: Child }): Promise<TargetResult> {
  const tree = () => (target.gateway ? processTree(target.gateway.roots) : []);
  const idleRssKiB = memoryKiB(tree(), 'VmRSS');
  enterPhase(`${target.name}: check`);
  await checkTarget(target, mocks.fast);
  enterPhase(`${target.name}: warm-up`);
  if (options.warmup > 0) await load(target, options.warmup);
  enterPhase(`${target.name}: load`);
  const before = read(target.gateway, mocks.child);
  const loadWindowUs = { from: monotonicUs(), to: 0 };
  const loaded = await load(target, options.seconds);
  loadWindowUs.to = monotonicUs();
  const cpu = cpuOver(before, read(target.gateway, mocks.child), loaded.requests);
  // Its keep-alive connections to the upstream are still open here: none may leave loopback.
  const foreign = foreignConnections(tree());
  enterPhase(`${target.name}: latency at 1 connection`);
  const latency = await sequentialLatency(target, options.latencyRequests);
  const firstToken = [];
  const concurrent = [];
  for (const route of target.streams) {
    enterPhase(`${target.name}: first tokens over ${route.transport}`);
    firstToken.push({ transport: route.transport, result: await firstTokens(route, options.streams) });
    enterPhase(`${target.name}: concurrent streams over ${route.transport}`);
    const result = await concurrentStreams(route, options.concurrentStreams, options.streamRounds, target.gateway, mocks.child);
    concurrent.push({ transport: route.transport, result });
  }
  return {
    target,
    load: loaded,
    cpu,
    latency,
    firstToken,
    concurrent,
    idleRssKiB,
    peakRssKiB: memoryKiB(tree(), 'VmHWM'),
    processes: tree().map(commandName),
    loadWindowUs,
    foreign,
  };
}

// --- CPU profile summary -----------------------------------------------------------------------

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string } }[];
  /** µs on the monotonic clock, the one process.hrtime reads. */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Who a frame's self time belongs to: an npm package, a top folder of ours, Node, or V8's own entries. */
function owner(functionName: string, url: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native and V8 builtins)';
  if (url.startsWith('wasm://')) return "(wasm: llhttp of Node's undici)";
  const path = url.replace(/^file:\/\//, '').replace(/\?.*$/, '');
  const modules = path.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const [scope, name] = path.slice(modules + '/node_modules/'.length).split('/');
    return scope!.startsWith('@') ? `${scope}/${name}` : scope!;
  }
  if (path.startsWith('node:')) return `${path.split('/').slice(0, 2).join('/')}`;
  if (path.startsWith(`${root}/`)) {
    const [top, ...rest] = path.slice(root.length + 1).split('/');
    return rest.length > 0 ? `modelgraph ${top}/` : `modelgraph ${top}`;
  }
  return path;
}

/**
 * Self time by owner over the samples taken inside `window` (the measured load), from every
 * profile (each process, and each worker thread such as tsx's loader, writes one).
 */
function profileSummary(files: string[], window: { from: number; to: number }, during: string): string[] {
  const selfMs = new Map<string, number>();
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
    const ownerOf = new Map(profile.nodes.map((node) => [node.id, owner(node.callFrame.functionName, node.callFrame.url)]));
    let at = profile.startTime;
    // timeDeltas[i] is the time from sample i-1 to sample i: charged to sample i.
    profile.samples.forEach((id, index) => {
      const delta = profile.timeDeltas[index] ?? 0;
      at += delta;
      if (at < window.from || at > window.to) return;
      const key = ownerOf.get(id) ?? '(unknown)';
      selfMs.set(key, (selfMs.get(key) ?? 0) + delta / 1000);
    });
  }
  const busy = [...selfMs.entries()].reduce((sum, [key, ms]) => (key === '(idle)' ? sum : sum + ms), 0);
  const rows = [...selfMs.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15);
  const seconds = (window.to - window.from) / 1e6;
  return [
    `\n### modelgraph CPU profile during ${during}: top 15 by self time\n`,
    `${files.length} profile(s), ${seconds.toFixed(1)} s window (${window.from}–${window.to} µs on the profiles' clock), ${Math.round(busy)} ms not idle (${(busy / 1000 / seconds).toFixed(2)} cores); the profiler itself slows modelgraph.\n`,
    '| package or folder | self ms | % of not idle |',
    '|---|---|---|',
    ...rows.map(([key, ms]) => `| ${key} | ${Math.round(ms)} | ${key === '(idle)' ? '–' : ((100 * ms) / busy).toFixed(1)} |`),
  ];
}

// --- report ------------------------------------------------------------------------------------

const fixed = (value: number, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : '–');
const mib = (kib: number) => (kib / 1024).toFixed(0);

function gitCommit(): string {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: root }).toString().trim() !== '';
    return dirty ? `${commit}-dirty` : commit;
  } catch {
    return 'unknown';
  }
}

function commandLine(): string {
  const quote = (arg: string) => (/^[\w./:=@,-]+$/.test(arg) ? arg : `"${arg.replace(/"/g, '\\"')}"`);
  return ['npx tsx bench/peers.ts', ...process.argv.slice(2).map(quote)].join(' ');
}

function throughputTable(results: TargetResult[]): string[] {
  const portkey = results.find((result) => result.target.name === 'Portkey');
  const lines = [
    `\n### Whole chats: ${options.connections} connections, ${options.seconds} s after ${options.warmup} s of warm-up\n`,
    '| target | req/s | p50 ms | p99 ms | errors | gateway CPU ms/req | gateway cores | mock CPU ms/req | load generator cores | other load, cores | req/s ÷ Portkey | CPU/req ÷ Portkey |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const { target, load: loaded, cpu } of results) {
    const gateway = target.gateway !== undefined;
    const vsPortkey = portkey && gateway;
    lines.push(
      `| ${target.name} | ${Math.round(loaded.rps)} | ${loaded.p50} | ${loaded.p99} | ${loaded.errors ? `**${loaded.errors}**` : 0} | ${gateway ? fixed(cpu.gatewayMsPerUnit, 3) : '–'} | ${gateway ? fixed(cpu.gatewayCores, 2) : '–'} | ${fixed(cpu.mockMsPerUnit, 3)} | ${fixed(cpu.benchCores, 2)} | ${fixed(cpu.otherCores, 2)} | ${vsPortkey ? fixed(loaded.rps / portkey.load.rps, 2) : '–'} | ${vsPortkey ? fixed(cpu.gatewayMsPerUnit / portkey.cpu.gatewayMsPerUnit, 2) : '–'} |`,
    );
  }
  return lines;
}

function latencyTable(results: TargetResult[]): string[] {
  const direct = results[0]!.latency;
  return [
    `\n### Latency at 1 connection: ${options.latencyRequests} sequential whole chats (after 50 not counted)\n`,
    '| target | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |',
    '|---|---|---|---|---|---|',
    ...results.map(
      ({ target, latency }) =>
        `| ${target.name} | ${fixed(latency.p50, 2)} | ${fixed(latency.p99, 2)} | ${target.gateway ? fixed(latency.p50 - direct.p50, 2) : '–'} | ${target.gateway ? fixed(latency.p99 - direct.p99, 2) : '–'} | ${latency.errors ? `**${latency.errors}**` : 0} |`,
    ),
  ];
}

function firstTokenTable(results: TargetResult[]): string[] {
  const direct = results[0]!.firstToken[0]!.result;
  return [
    `\n### First streamed token: ${options.streams} sequential streams (after 10 not counted), ${options.tokenDelayMs} ms/token\n`,
    '| target | transport | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |',
    '|---|---|---|---|---|---|---|',
    ...results.flatMap(({ target, firstToken }) =>
      firstToken.map(
        ({ transport, result }) =>
          `| ${target.name} | ${transport} | ${fixed(result.p50, 2)} | ${fixed(result.p99, 2)} | ${target.gateway ? fixed(result.p50 - direct.p50, 2) : '–'} | ${target.gateway ? fixed(result.p99 - direct.p99, 2) : '–'} | ${result.errors ? `**${result.errors}**` : 0} |`,
      ),
    ),
  ];
}

function concurrentTable(results: TargetResult[]): string[] {
  const direct = results[0]!.concurrent[0]!.result;
  return [
    `\n### ${options.concurrentStreams} concurrent streams at ${options.slowTokenDelayMs} ms/token (${COMPLETION_TOKENS} tokens), ${options.streamRounds} measured round(s): time per whole stream\n`,
    '| target | transport | p50 ms | p99 ms | p50 ÷ direct | p99 ÷ direct | gateway CPU ms/stream | errors |',
    '|---|---|---|---|---|---|---|---|',
    ...results.flatMap(({ target, concurrent }) =>
      concurrent.map(
        ({ transport, result }) =>
          `| ${target.name} | ${transport} | ${fixed(result.p50)} | ${fixed(result.p99)} | ${fixed(result.p50 / direct.p50, 2)} | ${fixed(result.p99 / direct.p99, 2)} | ${target.gateway ? fixed(result.cpuMsPerStream, 2) : '–'} | ${result.errors ? `**${result.errors}** (${result.firstError})` : 0} |`,
      ),
    ),
  ];
}

function memoryTable(results: TargetResult[]): string[] {
  return [
    '\n### Memory (summed over the gateway’s processes)\n',
    '| gateway | processes | idle RSS MiB | peak RSS (VmHWM) MiB |',
    '|---|---|---|---|',
    ...results
      .filter((result) => result.target.gateway)
      .map(
        (result) =>
          `| ${result.target.name} | ${result.processes.length} (${result.processes.join(', ')}) | ${mib(result.idleRssKiB)} | ${mib(result.peakRssKiB)} |`,
      ),
  ];
}

/**
 * A gateway's warn/error log lines (JSON on stdout, with the error's message) and its standard
 * error, counted by text and by the phase they came in. Other stdout (Portkey's banner, the
 * preload's reports) is left out.
 */
function diagnostics(child: Child): string[] {
  const counts = new Map<string, number>();
  const count = (text: string) => counts.set(text, (counts.get(text) ?? 0) + 1);
  for (const { phase: during, stream, line } of child.output) {
    if (stream === 'stderr') {
      if (line.trim() !== '') count(`${during}: stderr: ${line.trim()}`);
      continue;
    }
    let parsed: {
      level?: number;
      msg?: string;
      subgraph?: string;
      err?: { type?: string; message?: string };
      code?: string;
      status?: number;
      upstreamMessage?: string;
      cause?: { name?: string; code?: string; message?: string };
    };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      continue;
    }
    if ((parsed.level ?? 0) < 40) continue;
    const error = parsed.err
      ? ` (${parsed.err.type ?? 'Error'}: ${parsed.err.message ?? ''})`
      : parsed.code
        ? ` (${parsed.code}${parsed.status ? ` ${parsed.status}` : ''}: ${parsed.upstreamMessage ?? ''}${parsed.cause ? `; ${parsed.cause.name} ${parsed.cause.code ?? ''} ${parsed.cause.message ?? ''}` : ''})`
        : '';
    count(
      `${during}: log ${parsed.level === 40 ? 'warn' : 'error'}${parsed.subgraph ? ` [${parsed.subgraph}]` : ''}: ${parsed.msg}${error}`,
    );
  }
  return [...counts.entries()]
    .slice(0, 40)
    .map(([text, times]) => `- ${child.name}: ${times} × ${text.slice(0, 300).replace(/\|/g, '\\|')}`);
}

function errorsOf(results: TargetResult[]): string[] {
  return results.flatMap(({ target, load: loaded, latency, firstToken, concurrent, foreign }) => [
    ...foreign.map((connection) => `${target.name} has a connection beyond loopback: ${connection}`),
    ...(loaded.errors ? [`${target.name} under load: ${loaded.errors} errors (${loaded.errorDetail})`] : []),
    ...(latency.errors ? [`${target.name} at 1 connection: ${latency.errors} errors`] : []),
    ...firstToken
      .filter(({ result }) => result.errors)
      .map(({ transport, result }) => `${target.name} ${transport} first tokens: ${result.errors} errors`),
    ...concurrent
      .filter(({ result }) => result.errors)
      .map(({ transport, result }) => `${target.name} ${transport} concurrent: ${result.errors} errors: ${result.firstError}`),
  ]);
}

function header(modelgraph: Modelgraph, portkey: { readyMs: number; listens: string }, patched: boolean): string[] {
  const cpu = cpus();
  const command = modelgraphCommand().map((word) => (word === process.execPath ? 'node' : word));
  const roles = options.layout === 'split' ? `router + ${SUBGRAPH_NAMES.length} subgraphs, one process each` : 'all, one process';
  return [
    '## bench/peers.ts: direct vs Portkey vs modelgraph\n',
    `- machine: ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${release()}, Node ${process.version}`,
    `- commit: ${gitCommit()}; command: \`${commandLine()}\``,
    `- upstream: bench/peer-mock.ts in its own process, ${COMPLETION_TOKENS}-token answer, ${options.tokenDelayMs} ms/token (a second mock at ${options.slowTokenDelayMs} ms/token for the concurrent streams)`,
    `- Portkey: @portkey-ai/gateway ${portkeyVersion()} (build/start-server.js --headless) listening on ${portkey.listens} (ss), ready ${Math.round(portkey.readyMs)} ms after spawn; REST with x-portkey-provider: openai and x-portkey-custom-host${patched ? '; streamed responses need the immutable-headers workaround (Portkey-AI/gateway#1389)' : ''}`,
    `- modelgraph: \`${command.join(' ')}\` (${roles}), NODE_ENV=production${values['modelgraph-node-options'] ? `, NODE_OPTIONS +${values['modelgraph-node-options']}` : ''}, log level ${options.logLevel}, ${redisUrl ? `Redis ${redisUrl}` : 'no Redis (memory limiter, meter, usage store)'}; API key on every request; rate limits on (Mutation.chat and Subscription.chatStream at 1e6/min), subscriptions per principal 100000, admission control on (2048 operations, 100000 streams), tenant budgets on (1e12 tokens/min, $1e9/day and /month), response cache on (not hit: no temperature 0)${options.cpuProfDir ? `; **--cpu-prof on** (${options.cpuProfDir})` : ''}`,
    `- modelgraph ready: /readyz answered ${Math.round(modelgraph.readyMs)} ms after the first spawn${options.layout === 'split' ? ` (router ${Math.round(modelgraph.routerReadyMs)} ms after its own)` : ''}`,
  ];
}

function portkeyVersion(): string {
  return (JSON.parse(readFileSync(join(root, 'node_modules/@portkey-ai/gateway/package.json'), 'utf8')) as { version: string }).version;
}

// --- main --------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const workDir = mkdtempSync(join(tmpdir(), 'peers-bench-'));
  cleanup.push(workDir);
  const profilesBefore = new Set<string>();
  if (options.cpuProfDir) {
    mkdirSync(options.cpuProfDir, { recursive: true });
    for (const file of readdirSync(options.cpuProfDir)) profilesBefore.add(file);
  }
  try {
    const mocks = await startMocks();
    // One after the other, so that neither's start-up slows the other's ready time.
    const portkey = await startPortkey(workDir);
    const modelgraph = await startModelgraph(mocks);
    const gatewayProcesses = [portkey.child, ...modelgraph.processes];
    const targets = [
      directTarget(mocks),
      portkeyTarget(portkey.port, portkey.child.child.pid!, mocks),
      modelgraphTarget(modelgraph),
      modelgraphRestTarget(modelgraph),
    ];
    const results: TargetResult[] = [];
    for (const target of targets) results.push(await measure(target, { fast: mocks.fast, child: mocks.child }));
    let idle: IdleResult | undefined;
    if (options.idleSubscriptions > 0) {
      enterPhase('modelgraph: idle subscriptions');
      idle = await idleSubscriptions(modelgraph, mocks.idle, options.idleSubscriptions);
    }
    const refused = portkey.child.stdout.filter((line) => line.startsWith('{"peersRefused"'));
    const patched = portkey.child.stdout.some((line) => line.startsWith('{"peersCopyingResponse"'));
    // Graceful stops (the router drains first in split), so profiles are written before they are read.
    enterPhase('stop');
    for (const child of [...modelgraph.processes].reverse()) await stopChild(child);
    await Promise.all([stopChild(portkey.child), stopChild(mocks.child)]);
    const errors = [
      ...errorsOf(results),
      ...refused.map((line) => `Portkey tried to leave loopback: ${line}`),
      ...(idle?.errors ? [`modelgraph idle subscriptions: ${idle.errors} errors: ${idle.firstError}`] : []),
    ];
    const lines = [
      ...header(modelgraph, portkey, patched),
      ...(errors.length
        ? ['', '**THIS RUN HAD ERRORS; its figures are not comparable:**', ...errors.map((error) => `- **${error}**`)]
        : []),
      ...throughputTable(results),
      ...latencyTable(results),
      ...firstTokenTable(results),
      ...concurrentTable(results),
      ...memoryTable(results),
      ...idleTable(idle),
      '\n### Gateway diagnostics (warn/error log lines, standard error)\n',
      ...(gatewayProcesses.flatMap(diagnostics).length ? gatewayProcesses.flatMap(diagnostics) : ['- none']),
    ];
    if (options.cpuProfDir) {
      const files = readdirSync(options.cpuProfDir).filter((file) => file.endsWith('.cpuprofile') && !profilesBefore.has(file));
      const modelgraph = results.find((result) => result.target.name === 'modelgraph')!;
      const paths = files.map((file) => join(options.cpuProfDir!, file));
      lines.push(...profileSummary(paths, modelgraph.loadWindowUs, 'the measured whole-chat load'));
      for (const { transport, result } of modelgraph.concurrent) {
        lines.push(...profileSummary(paths, result.windowUs, `the measured concurrent streams over ${transport}`));
      }
    }
    console.log(lines.join('\n'));
    return errors.length ? 1 : 0;
  } finally {
    await Promise.all(children.map((child) => stopChild(child, 5_000)));
    if (redisUrl) {
      const deleted = await deleteRedisKeys(REDIS_PREFIX).catch(() => 0);
      process.stderr.write(`deleted ${deleted} Redis keys under ${REDIS_PREFIX}\n`);
    }
    for (const path of cleanup) rmSync(path, { recursive: true, force: true });
  }
}

process.exitCode = await main();
