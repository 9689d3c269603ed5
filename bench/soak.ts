/**
 * Memory over time, as issue 15 asks to see it: modelgraph as shipped (`node dist/cli.js all`,
 * production) on an OpenAI-compatible mock upstream (bench/peer-mock.ts, 20 ms a token, 20 tokens)
 * on loopback, and
 *
 *   1. --subscriptions idle chatStream subscriptions over graphql-ws (20 a socket) opened, held,
 *      then closed: modelgraph's RSS before, with them open (KiB each), and 10 s after closing;
 *   2. --streams concurrent streams, half over GraphQL SSE, half over graphql-ws, each started as
 *      the last ends, for --minutes: RSS at the start and every minute, first-token p50/p99 and
 *      errors per minute.
 *
 *   npm run build && npx tsx bench/soak.ts [--minutes 10] [--streams 500] [--subscriptions 5000] [--layout all|split]
 *
 * --layout split runs the router and each subgraph as its own process (on the Redis at
 * redis://127.0.0.1:6379, under a key prefix of the run's own) and reports each one's RSS. Every
 * modelgraph process runs with the inspector on loopback, through which the subscription phase
 * forces a full garbage collection (HeapProfiler.collectGarbage) before each reading.
 *
 * Results go to standard output as Markdown; record them in bench/results.md.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createParser } from 'eventsource-parser';
import type { Client } from 'graphql-ws';
import { Pool } from 'undici';
import WebSocket from 'ws';
import { newKeySecret } from '../platform/access/access-store.ts';
import { SUBGRAPH_NAMES } from '../platform/config.ts';
import { freePort, writeConfig } from '../tests/support/process.ts';
import { startMockUpstream } from './peer-mock.ts';
import { memoryKiB, wsClients } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    streams: { type: 'string', default: '500' },
    subscriptions: { type: 'string', default: '5000' },
    layout: { type: 'string', default: 'all' },
  },
});
const LAYOUT = values.layout!;
if (LAYOUT !== 'all' && LAYOUT !== 'split') throw new Error('--layout is all or split');
const MINUTES = Number(values.minutes);
const STREAMS = Number(values.streams);
const SUBSCRIPTIONS = Number(values.subscriptions);
const KEY = newKeySecret('soak').secret;
const QUERY = 'subscription S($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatDelta { content } } }';

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

const slow = await startMockUpstream(20);
const idle = await startMockUpstream(600_000);
const ports = Object.fromEntries(await Promise.all(['router', ...SUBGRAPH_NAMES].map(async (name) => [name, await freePort()])));
const model = (id: string, baseProvider: string) => ({
  id,
  provider: baseProvider,
  upstream: 'gpt-4o-mini',
  version: '1',
  capabilities: ['CHAT'],
  contextWindow: 128_000,
  maxOutputTokens: 4_096,
});
const config = writeConfig({
  router: {
    host: '127.0.0.1',
    port: ports.router,
    rateLimits: { 'Subscription.chatStream': { max: 100_000_000, window: '1m' } },
    limits: { maxSubscriptionsPerPrincipal: 100_000 },
    admission: { maxStreams: 100_000 },
  },
  subgraphs: Object.fromEntries(SUBGRAPH_NAMES.map((name) => [name, { host: '127.0.0.1', port: ports[name] }])),
  log: { level: 'warn' },
  ...(LAYOUT === 'split' && {
    redis: { keyPrefix: `mg-soak-${randomUUID()}:` },
    agents: { routerUrl: `http://127.0.0.1:${ports.router}/graphql` },
  }),
  providers: {
    slow: { type: 'openai-compatible', baseUrl: slow.baseUrl },
    idle: { type: 'openai-compatible', baseUrl: idle.baseUrl, timeouts: { idleMs: 900_000, firstByteMs: 900_000, totalMs: 900_000 } },
  },
  routing: { firstTokenMs: 900_000, deadlineMs: 900_000 },
  models: [model('soak-slow', 'slow'), model('soak-idle', 'idle')],
});
const env = {
  ...process.env,
  NODE_ENV: 'production',
  LOG_LEVEL: 'warn',
  MODELGRAPH_BOOTSTRAP_KEY: KEY,
  ...(LAYOUT === 'split'
    ? { REDIS_URL: 'redis://127.0.0.1:6379', MODELGRAPH_IDENTITY_SECRET: randomBytes(32).toString('hex') }
    : { REDIS_URL: '' }),
};
interface Started {
  name: string;
  child: ChildProcess;
  /** The inspector's WebSocket, for forced collections. */
  inspector: Promise<string>;
}
function start(name: string, role: string[]): Started {
  const child = spawn(process.execPath, ['--inspect=127.0.0.1:0', 'dist/cli.js', ...role, '--config', config], {
    cwd: root,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const inspector = new Promise<string>((resolve) => {
    let text = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const found = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(text);
      if (found) resolve(found[1]!);
    });
  });
  return { name, child, inspector };
}
async function ready(port: number, child: ChildProcess) {
  for (;;) {
    const answered = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
    if (answered) return;
    if (child.exitCode !== null) throw new Error('modelgraph exited');
    await sleep(50);
  }
}
const processes: Started[] = [];
if (LAYOUT === 'split') {
  const subgraphs = SUBGRAPH_NAMES.map((name) => start(name, ['subgraph', name]));
  processes.push(...subgraphs);
  await Promise.all(subgraphs.map((started, index) => ready(ports[SUBGRAPH_NAMES[index]!], started.child)));
}
const routerProcess = start(LAYOUT === 'split' ? 'router' : 'all', [LAYOUT === 'split' ? 'router' : 'all']);
processes.unshift(routerProcess);
await ready(ports.router, routerProcess.child);
const url = `http://127.0.0.1:${ports.router}/graphql`;

/** A full collection in every modelgraph process, through its inspector. */
async function collectGarbage(): Promise<void> {
  await Promise.all(
    processes.map(async ({ inspector }) => {
      const socket = new WebSocket(await inspector);
      await once(socket, 'open');
      const answered = new Promise<void>((resolve) => socket.on('message', () => resolve()));
      socket.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
      await answered;
      socket.close();
    }),
  );
}
const rssOfEach = () => processes.map(({ child }) => memoryKiB([child.pid!], 'VmRSS') / 1024);
const variables = (id: string) => ({ input: { model: id, messages: [{ role: 'USER', content: 'soak' }] } });
const sockets = (count: number): Client[] => wsClients(url, KEY, count);

const out: string[] = [];
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim();
out.push(
  '## soak.ts',
  '',
  `- machine: ${cpus().length} × ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}; commit ${commit}`,
);
out.push(
  `- command: \`npx tsx bench/soak.ts --minutes ${MINUTES} --streams ${STREAMS} --subscriptions ${SUBSCRIPTIONS} --layout ${LAYOUT}\`; modelgraph ${LAYOUT === 'split' ? `\`node dist/cli.js router\` and \`subgraph <name>\` for each of ${SUBGRAPH_NAMES.join(', ')}, on Redis 127.0.0.1:6379` : '`node dist/cli.js all`, no Redis'}, production, inspector on loopback (for forced collections)`,
);

// Warm: the first chat loads the tokenizer (~66 MB) and compiles the hot path; not the subscriptions' memory.
{
  const [warm] = sockets(1);
  for (let index = 0; index < 50; index++) for await (const _ of warm!.iterate({ query: QUERY, variables: variables('soak-slow') }));
  await warm!.dispose();
  await sleep(2_000);
}

// 1. Idle subscriptions, opened and closed; each reading after a full collection in every process.
{
  await collectGarbage();
  const before = rssOfEach();
  const clients = sockets(Math.ceil(SUBSCRIPTIONS / 20));
  const stops: (() => void)[] = [];
  let opened = 0;
  for (let index = 0; index < SUBSCRIPTIONS; index++) {
    const client = clients[Math.floor(index / 20)]!;
    stops.push(
      client.subscribe(
        { query: QUERY, variables: variables('soak-idle') },
        { next: () => undefined, error: () => undefined, complete: () => undefined },
      ),
    );
  }
  while (idle.stats.streams < SUBSCRIPTIONS) await sleep(100);
  opened = idle.stats.streams;
  await sleep(2_000);
  await collectGarbage();
  const open = rssOfEach();
  for (const stop of stops) stop();
  await Promise.all(clients.map((client) => client.dispose()));
  await sleep(10_000);
  const afterNoGc = rssOfEach();
  await collectGarbage();
  const after = rssOfEach();
  // The inference subgraph keeps idle keep-alive connections to the upstream in its pool until
  // the upstream's keep-alive (the mock's: 60 s) lets them go.
  await sleep(62_000);
  await collectGarbage();
  const afterKeepAlive = rssOfEach();
  out.push('', `### ${SUBSCRIPTIONS} idle subscriptions, opened (${opened} reached the upstream) and closed`, '');
  out.push(
    '| process | RSS before MiB | with all open MiB | KiB each | 10 s after closing MiB | then after a full GC MiB | after GC ÷ before | 72 s after closing, after a GC, MiB | ÷ before |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  processes.forEach(({ name }, index) => {
    out.push(
      `| ${name} | ${before[index]!.toFixed(0)} | ${open[index]!.toFixed(0)} | ${(((open[index]! - before[index]!) * 1024) / SUBSCRIPTIONS).toFixed(1)} | ${afterNoGc[index]!.toFixed(0)} | ${after[index]!.toFixed(0)} | ${(after[index]! / before[index]!).toFixed(2)} | ${afterKeepAlive[index]!.toFixed(0)} | ${(afterKeepAlive[index]! / before[index]!).toFixed(2)} |`,
    );
  });
}

// 2. Concurrent streams for MINUTES.
{
  const pool = new Pool(url.replace('/graphql', ''), { connections: STREAMS });
  const clients = sockets(Math.ceil(STREAMS / 2 / 20));
  let minute: { first: number[]; errors: number; done: number } = { first: [], errors: 0, done: 0 };
  const rows: string[] = [];
  const sse = async () => {
    const started = performance.now();
    let first = Number.NaN;
    const response = await pool.request({
      path: '/graphql',
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: QUERY, variables: variables('soak-slow') }),
    });
    const parser = createParser({
      onEvent(event) {
        if (event.event === 'next' && Number.isNaN(first) && event.data.includes('ChatDelta')) first = performance.now() - started;
      },
    });
    for await (const chunk of response.body) parser.feed(Buffer.from(chunk as Buffer).toString());
    return first;
  };
  const ws = async (client: Client) => {
    const started = performance.now();
    let first = Number.NaN;
    for await (const result of client.iterate({ query: QUERY, variables: variables('soak-slow') })) {
      if (Number.isNaN(first) && JSON.stringify(result).includes('ChatDelta')) first = performance.now() - started;
    }
    return first;
  };
  let running = true;
  const loops = Array.from({ length: STREAMS }, async (_, index) => {
    while (running) {
      try {
        const first = await (index % 2 ? ws(clients[Math.floor(index / 40)]!) : sse());
        if (Number.isNaN(first)) minute.errors++;
        else minute.first.push(first);
        minute.done++;
      } catch {
        minute.errors++;
      }
    }
  });
  const rssSum = () => rssOfEach().reduce((sum, rss) => sum + rss, 0);
  const start = rssSum();
  rows.push(`| 0 | ${start.toFixed(0)} | – | – | – | – |`);
  for (let at = 1; at <= MINUTES; at++) {
    await sleep(60_000);
    const sorted = minute.first.sort((a, b) => a - b);
    rows.push(
      `| ${at} | ${rssSum().toFixed(0)} | ${minute.done} | ${quantile(sorted, 0.5).toFixed(1)} | ${quantile(sorted, 0.99).toFixed(1)} | ${minute.errors} |`,
    );
    minute = { first: [], errors: 0, done: 0 };
  }
  running = false;
  await Promise.all(loops);
  out.push('', `### ${STREAMS} concurrent streams (20 tokens, 20 ms apart; half SSE, half graphql-ws) for ${MINUTES} min`, '');
  out.push('| minute | RSS MiB | streams that minute | first token p50 ms | p99 ms | errors |', '|---|---|---|---|---|---|', ...rows);
  await Promise.all(clients.map((client) => client.dispose()));
  await pool.close();
}

for (const { child } of processes) {
  child.kill('SIGTERM');
  await once(child, 'exit');
}
await Promise.all([slow.close(), idle.close()]);
console.log(out.join('\n'));
// Whatever handle a closed client or mock leaves behind, the run is over.
process.exit(0);
