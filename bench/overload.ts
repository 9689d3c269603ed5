/**
 * Admission control under overload, as the reliability issue asks to see it: modelgraph as shipped
 * (`node dist/cli.js all`, production, log level warn, no Redis) with `router.admission.maxStreams`
 * and `maxOperations` set to --capacity, on the mock upstream (bench/peer-mock.ts, 20 ms a token,
 * 20 tokens) on loopback, rate limits raised out of the way. Closed-loop clients, each starting its
 * next call as the last ends:
 *
 *   A. --capacity clients streaming chatStream (half GraphQL over SSE, half graphql-ws) for
 *      --seconds: first-token p50/p90/p99, whole-stream p50, streams, errors by code, and
 *      modelgraph's CPU ms per stream (utime + stime of its processes, from /proc);
 *   B. 2 × --capacity clients doing the same: a refused client (OVERLOADED) records how long the
 *      refusal took and retries after --retry-delay-ms (not the Retry-After, so the pressure stays
 *      at 2×); admitted streams' latency beside A's, refusals (count, latency, how each transport
 *      showed them: status, Retry-After, extensions), any other error by code (there should be none);
 *   C. whole chats (`mutation { chat }` over HTTP POST), capped by maxOperations, at 1× and at 2×:
 *      the upstream answers each after --chat-ms (a loopback proxy in front of the mock delays it,
 *      as a model would take to write the answer), so a chat holds its slot as a real one does.
 *
 * The queue stays at the product's defaults (maxQueued, queueTimeoutMs) unless --max-queued or
 * --queue-timeout-ms say otherwise; an admitted call's latency includes its wait in the queue.
 *
 *   npm run build && npx tsx bench/overload.ts [--capacity 100] [--seconds 20] [--retry-delay-ms 50]
 *     [--chat-ms 400] [--max-streams <capacity>] [--max-operations <capacity>] [--max-queued N]
 *     [--queue-timeout-ms N]
 *
 * Everything listens on 127.0.0.1 (checked with `ss`). Results go to standard output as Markdown;
 * record them in bench/results.md.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createParser } from 'eventsource-parser';
import type { Client } from 'graphql-ws';
import { Pool } from 'undici';
import { newKeySecret } from '../platform/access/access-store.ts';
import { parseConfig, SUBGRAPH_NAMES } from '../platform/config.ts';
import { freePort, writeConfig } from '../tests/support/process.ts';
import { startMockUpstream } from './peer-mock.ts';
import { cpuMs, listeningSockets, processTree, wsClients } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    capacity: { type: 'string', default: '100' },
    seconds: { type: 'string', default: '20' },
    'retry-delay-ms': { type: 'string', default: '50' },
    'chat-ms': { type: 'string', default: '400' },
    'max-streams': { type: 'string' },
    'max-operations': { type: 'string' },
    'max-queued': { type: 'string' },
    'queue-timeout-ms': { type: 'string' },
  },
});
const CAPACITY = Number(values.capacity);
const SECONDS = Number(values.seconds);
const RETRY_DELAY_MS = Number(values['retry-delay-ms']);
const CHAT_MS = Number(values['chat-ms']);
const admission = {
  maxStreams: Number(values['max-streams'] ?? CAPACITY),
  // Subscriptions take stream slots only; this caps the whole chats of phase C.
  maxOperations: Number(values['max-operations'] ?? CAPACITY),
  ...(values['max-queued'] !== undefined && { maxQueued: Number(values['max-queued']) }),
  ...(values['queue-timeout-ms'] !== undefined && { queueTimeoutMs: Number(values['queue-timeout-ms']) }),
};
const KEY = newKeySecret('overload').secret;
const STREAM =
  'subscription S($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatDelta { content } ... on ChatFailed { code } } }';
const CHAT = 'mutation C($input: ChatInput!) { chat(input: $input) { content } }';

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
const ms = (value: number) => (Number.isNaN(value) ? '–' : value.toFixed(1));

// --- upstreams: the mock, and a proxy that makes whole chats take CHAT_MS -----------------------

const mock = await startMockUpstream(20);
const slowChats = { served: 0 };
const proxy = createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on('data', (chunk: Buffer) => chunks.push(chunk));
  request.on('end', async () => {
    slowChats.served++;
    await sleep(CHAT_MS);
    try {
      const answer = await fetch(`http://127.0.0.1:${mock.port}${request.url}`, {
        method: request.method ?? 'POST',
        headers: { 'content-type': 'application/json' },
        body: Buffer.concat(chunks),
      });
      response.writeHead(answer.status, { 'content-type': answer.headers.get('content-type') ?? 'application/json' });
      response.end(Buffer.from(await answer.arrayBuffer()));
    } catch {
      response.destroy();
    }
  });
});
proxy.keepAliveTimeout = 60_000;
proxy.listen(0, '127.0.0.1');
await once(proxy, 'listening');
const proxyPort = (proxy.address() as AddressInfo).port;

// --- modelgraph ----------------------------------------------------------------------------------

const ports = Object.fromEntries(await Promise.all(['router', ...SUBGRAPH_NAMES].map(async (name) => [name, await freePort()])));
const huge = { max: 100_000_000, window: '1m' };
const model = (id: string, provider: string) => ({
  id,
  provider,
  upstream: 'gpt-4o-mini',
  version: '1',
  capabilities: ['CHAT'],
  contextWindow: 128_000,
  maxOutputTokens: 4_096,
});
const router = {
  host: '127.0.0.1',
  port: ports.router,
  rateLimits: { 'Subscription.chatStream': huge, 'Mutation.chat': huge },
  limits: { maxSubscriptionsPerPrincipal: 100_000 },
  admission,
};
const document = {
  router,
  subgraphs: Object.fromEntries(SUBGRAPH_NAMES.map((name) => [name, { host: '127.0.0.1', port: ports[name] }])),
  log: { level: 'warn' },
  providers: {
    mock: { type: 'openai-compatible', baseUrl: mock.baseUrl },
    'slow-chats': { type: 'openai-compatible', baseUrl: `http://127.0.0.1:${proxyPort}/v1` },
  },
  models: [model('overload-stream', 'mock'), model('overload-chat', 'slow-chats')],
};
const config = writeConfig(document);
/** What modelgraph will run with, the product's defaults filled in (maxQueued, queueTimeoutMs). */
const effective = parseConfig(document).router.admission;
// As tests/support/process.ts does: none of the developer's Redis or credentials.
const inherited = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => !['REDIS_URL', 'MODELGRAPH_BOOTSTRAP_KEY', 'MODELGRAPH_IDENTITY_SECRET'].includes(name)),
);
const child = spawn(process.execPath, ['dist/cli.js', 'all', '--config', config], {
  cwd: root,
  env: { ...inherited, NODE_ENV: 'production', LOG_LEVEL: 'warn', MODELGRAPH_BOOTSTRAP_KEY: KEY },
  stdio: ['ignore', 'pipe', 'pipe'],
});
// Its log (warn and above): counted by message, in case overload makes it talk.
const logged = new Map<string, number>();
createInterface({ input: child.stdout! }).on('line', (line) => {
  let message = line.slice(0, 120);
  try {
    message = String((JSON.parse(line) as { msg?: unknown }).msg ?? message);
  } catch {}
  logged.set(message, (logged.get(message) ?? 0) + 1);
});
let stderr = '';
child.stderr!.on('data', (chunk: Buffer) => {
  stderr = (stderr + chunk.toString('utf8')).slice(-4_000);
});
const url = `http://127.0.0.1:${ports.router}/graphql`;
for (;;) {
  const ready = await fetch(url.replace('/graphql', '/readyz')).then(
    (response) => response.ok,
    () => false,
  );
  if (ready) break;
  if (child.exitCode !== null) throw new Error(`modelgraph exited:\n${stderr}`);
  await sleep(50);
}
const pid = child.pid!;
const listening = listeningSockets(pid);

// --- one call of each kind, and what came of it --------------------------------------------------

type Outcome =
  | { kind: 'admitted'; first: number; whole: number }
  | { kind: 'refused'; ms: number; shape: string }
  | { kind: 'error'; code: string };
interface GraphQLError {
  message?: string;
  extensions?: Record<string, unknown>;
}
interface StreamResult {
  data?: { chatStream?: { __typename: string; code?: string } } | null;
  errors?: GraphQLError[];
}

const pool = new Pool(url.replace('/graphql', ''), { connections: 4 * CAPACITY });
const headers = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const input = (id: string) => ({ input: { model: id, messages: [{ role: 'USER', content: 'overload' }] } });
const body = (query: string, id: string) => JSON.stringify({ query, variables: input(id) });

/**
 * A GraphQL error: a refusal when coded OVERLOADED, recorded with how it arrived (the HTTP status
 * and Retry-After where there are any, and the extensions but the ones that differ every time).
 */
function classify(transport: string, started: number, error: GraphQLError | undefined, status?: number, retryAfter?: string): Outcome {
  const extensions = error?.extensions ?? {};
  const code = typeof extensions.code === 'string' ? extensions.code : status ? `HTTP ${status}` : 'no code';
  if (code !== 'OVERLOADED') return { kind: 'error', code: `${transport}: ${code}` };
  const shown = Object.fromEntries(Object.entries(extensions).filter(([name]) => name !== 'requestId'));
  const http = status === undefined ? '' : `HTTP ${status}, Retry-After ${retryAfter ?? 'absent'}, `;
  return { kind: 'refused', ms: performance.now() - started, shape: `${transport}: ${http}extensions ${JSON.stringify(shown)}` };
}

const header = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

/** After the stream's last event: admitted when a token came and nothing failed. */
function ended(transport: string, started: number, first: number, outcome: Outcome | undefined): Outcome {
  if (outcome) return outcome;
  if (Number.isNaN(first)) return { kind: 'error', code: `${transport}: ended without a token` };
  return { kind: 'admitted', first, whole: performance.now() - started };
}

async function sseStream(): Promise<Outcome> {
  const started = performance.now();
  const response = await pool.request({
    path: '/graphql',
    method: 'POST',
    headers: { ...headers, accept: 'text/event-stream' },
    body: body(STREAM, 'overload-stream'),
  });
  const retryAfter = header(response.headers['retry-after']);
  if (!String(response.headers['content-type']).includes('text/event-stream')) {
    const answer = (await response.body.json().catch(() => ({}))) as { errors?: GraphQLError[] };
    return classify('SSE', started, answer.errors?.[0], response.statusCode, retryAfter);
  }
  let first = Number.NaN;
  let outcome: Outcome | undefined;
  const parser = createParser({
    onEvent(event) {
      if (event.event !== 'next' || outcome) return;
      const result = JSON.parse(event.data) as StreamResult;
      const payload = result.data?.chatStream;
      if (result.errors?.length) outcome = classify('SSE', started, result.errors[0], response.statusCode, retryAfter);
      else if (payload?.__typename === 'ChatFailed') outcome = { kind: 'error', code: `SSE: ChatFailed ${payload.code}` };
      else if (payload?.__typename === 'ChatDelta' && Number.isNaN(first)) first = performance.now() - started;
    },
  });
  for await (const chunk of response.body) parser.feed(Buffer.from(chunk as Buffer).toString());
  return ended('SSE', started, first, outcome);
}

async function wsStream(client: Client): Promise<Outcome> {
  const started = performance.now();
  let first = Number.NaN;
  let outcome: Outcome | undefined;
  try {
    for await (const result of client.iterate({ query: STREAM, variables: input('overload-stream') }) as AsyncIterable<StreamResult>) {
      if (outcome) continue;
      const payload = result.data?.chatStream;
      if (result.errors?.length) outcome = classify('graphql-ws next', started, result.errors[0]);
      else if (payload?.__typename === 'ChatFailed') outcome = { kind: 'error', code: `graphql-ws: ChatFailed ${payload.code}` };
      else if (payload?.__typename === 'ChatDelta' && Number.isNaN(first)) first = performance.now() - started;
    }
  } catch (error) {
    // A graphql-ws `error` message arrives as the array of its GraphQL errors; else the socket failed.
    if (Array.isArray(error)) return classify('graphql-ws error', started, error[0] as GraphQLError);
    return { kind: 'error', code: `graphql-ws: ${error instanceof Error ? error.message : `closed ${(error as { code?: number }).code}`}` };
  }
  return ended('graphql-ws', started, first, outcome);
}

async function chat(): Promise<Outcome> {
  const started = performance.now();
  const response = await pool.request({
    path: '/graphql',
    method: 'POST',
    headers: { ...headers, accept: 'application/graphql-response+json, application/json' },
    body: body(CHAT, 'overload-chat'),
  });
  const answer = (await response.body.json().catch(() => ({}))) as { data?: { chat?: { content?: string } }; errors?: GraphQLError[] };
  if (answer.errors?.length || response.statusCode !== 200) {
    return classify('HTTP', started, answer.errors?.[0], response.statusCode, header(response.headers['retry-after']));
  }
  if (!answer.data?.chat?.content) return { kind: 'error', code: 'HTTP: no content' };
  const whole = performance.now() - started;
  return { kind: 'admitted', first: whole, whole };
}

/** graphql-ws clients for `loops` streams at once, 20 a socket (the router's default cap per connection). */
const streamSockets = (loops: number): Client[] => wsClients(url, KEY, Math.ceil(loops / 20));

// --- a phase: closed-loop clients for SECONDS ---------------------------------------------------

interface Tally {
  first: number[];
  whole: number[];
  refusals: number[];
  shapes: Map<string, number>;
  errors: Map<string, number>;
}
const tally = (): Tally => ({ first: [], whole: [], refusals: [], shapes: new Map(), errors: new Map() });
const count = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);

interface Phase {
  name: string;
  clients: number;
  byTransport: Record<string, Tally>;
  all: Tally;
  cpuMs: number;
  wallMs: number;
  upstream: number;
}

/** `clients` loops; loop i runs `call(i)` back to back, after a refusal or error waiting RETRY_DELAY_MS. */
async function phase(
  name: string,
  clients: number,
  transport: (index: number) => string,
  call: (index: number) => Promise<Outcome>,
  upstreamCalls: () => number,
): Promise<Phase> {
  const byTransport: Record<string, Tally> = {};
  const all = tally();
  const upstreamBefore = upstreamCalls();
  const cpuBefore = cpuMs(processTree([pid]));
  const started = performance.now();
  let running = true;
  const loops = Array.from({ length: clients }, async (_, index) => {
    const own = byTransport[transport(index)] ?? tally();
    byTransport[transport(index)] = own;
    while (running) {
      const outcome = await call(index).catch(
        (error: unknown): Outcome => ({
          kind: 'error',
          code: `${transport(index)}: ${error instanceof Error ? error.message : String(error)}`,
        }),
      );
      for (const into of [own, all]) {
        if (outcome.kind === 'admitted') {
          into.first.push(outcome.first);
          into.whole.push(outcome.whole);
        } else if (outcome.kind === 'refused') {
          into.refusals.push(outcome.ms);
          count(into.shapes, outcome.shape);
        } else count(into.errors, outcome.code);
      }
      if (outcome.kind !== 'admitted') await sleep(RETRY_DELAY_MS);
    }
  });
  await sleep(SECONDS * 1000);
  running = false;
  await Promise.all(loops);
  const wallMs = performance.now() - started;
  for (const each of [all, ...Object.values(byTransport)]) {
    for (const list of [each.first, each.whole, each.refusals]) list.sort((a, b) => a - b);
  }
  return {
    name,
    clients,
    byTransport,
    all,
    cpuMs: cpuMs(processTree([pid])) - cpuBefore,
    wallMs,
    upstream: upstreamCalls() - upstreamBefore,
  };
}

/** Streams: even loops over SSE, odd ones over graphql-ws (20 a socket), as soak.ts does. */
async function streamPhase(name: string, clients: number): Promise<Phase> {
  const sockets = streamSockets(Math.ceil(clients / 2));
  const result = await phase(
    name,
    clients,
    (index) => (index % 2 ? 'graphql-ws' : 'SSE'),
    (index) => (index % 2 ? wsStream(sockets[Math.floor(index / 40)]!) : sseStream()),
    () => mock.stats.streams,
  );
  await Promise.all(sockets.map((socket) => socket.dispose()));
  return result;
}

const chatPhase = (name: string, clients: number) =>
  phase(
    name,
    clients,
    () => 'HTTP',
    () => chat(),
    () => slowChats.served,
  );

// Warm: the first chat loads the tokenizer and compiles the hot path; not counted.
{
  const [socket] = streamSockets(1);
  for (let index = 0; index < 10; index++) await Promise.all([wsStream(socket!), sseStream(), chat()]);
  await socket!.dispose();
  await sleep(1_000);
}

const a = await streamPhase('A: streams at capacity', CAPACITY);
const b = await streamPhase('B: streams at 2× capacity', 2 * CAPACITY);
const c1 = await chatPhase('C1: whole chats at capacity', CAPACITY);
const c2 = await chatPhase('C2: whole chats at 2× capacity', 2 * CAPACITY);

child.kill('SIGTERM');
await once(child, 'exit');
await pool.close();
await mock.close();
proxy.closeAllConnections();
await new Promise((done) => proxy.close(done));

// --- Markdown --------------------------------------------------------------------------------

const out: string[] = [];
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root }).toString().trim();
const flags = Object.entries(values)
  .filter(([, value]) => value !== undefined)
  .map(([name, value]) => ` --${name} ${value}`)
  .join('');
out.push(
  '## overload.ts',
  '',
  `- machine: ${cpus().length} × ${cpus()[0]?.model}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}; commit ${commit}`,
  `- command: \`npx tsx bench/overload.ts${flags}\`; modelgraph \`node dist/cli.js all\`, production, log level warn, no Redis; listening on ${listening}`,
  `- config: \`router.admission: ${JSON.stringify(effective)}\` (set: ${Object.keys(admission).join(', ')}; the rest the product's defaults), rate limits of chat and chatStream at ${huge.max} a minute, maxSubscriptionsPerPrincipal 100000`,
  `- upstream: mock, 20 tokens 20 ms apart when streamed; whole chats answered after ${CHAT_MS} ms; refused clients retry after ${RETRY_DELAY_MS} ms; ${SECONDS} s a phase`,
);

const perSecond = (phase: Phase, done: number) => (done / (phase.wallMs / 1000)).toFixed(0);
const errorList = (errors: Map<string, number>) =>
  errors.size === 0
    ? '0'
    : `**${[...errors.values()].reduce((sum, value) => sum + value, 0)}** (${[...errors].map(([code, n]) => `${code} × ${n}`).join('; ')})`;

function streamTable(phase: Phase): void {
  out.push('', `### ${phase.name}: ${phase.clients} clients`, '');
  out.push(
    '| transport | admitted streams | per s | first token p50 ms | p90 | p99 | whole stream p50 ms | refusals | refusal p50 ms | p99 | other errors |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  );
  for (const [transport, t] of [...Object.entries(phase.byTransport).sort(), ['all', phase.all] as const]) {
    out.push(
      `| ${transport} | ${t.first.length} | ${perSecond(phase, t.first.length)} | ${ms(quantile(t.first, 0.5))} | ${ms(quantile(t.first, 0.9))} | ${ms(quantile(t.first, 0.99))} | ${ms(quantile(t.whole, 0.5))} | ${t.refusals.length} | ${ms(quantile(t.refusals, 0.5))} | ${ms(quantile(t.refusals, 0.99))} | ${errorList(t.errors)} |`,
    );
  }
  footer(phase, 'stream', 'streams the upstream served');
}

function chatTable(phase: Phase): void {
  const t = phase.all;
  out.push('', `### ${phase.name}: ${phase.clients} clients`, '');
  out.push(
    '| admitted chats | per s | latency p50 ms | p90 | p99 | refusals | refusal p50 ms | p99 | other errors |',
    '|---|---|---|---|---|---|---|---|---|',
  );
  out.push(
    `| ${t.whole.length} | ${perSecond(phase, t.whole.length)} | ${ms(quantile(t.whole, 0.5))} | ${ms(quantile(t.whole, 0.9))} | ${ms(quantile(t.whole, 0.99))} | ${t.refusals.length} | ${ms(quantile(t.refusals, 0.5))} | ${ms(quantile(t.refusals, 0.99))} | ${errorList(t.errors)} |`,
  );
  footer(phase, 'chat', 'chats the upstream served');
}

function footer(phase: Phase, unit: string, upstream: string): void {
  const admitted = phase.all.first.length;
  out.push(
    '',
    `modelgraph CPU: ${phase.cpuMs.toFixed(0)} ms over ${(phase.wallMs / 1000).toFixed(1)} s (${(phase.cpuMs / phase.wallMs).toFixed(2)} cores), ` +
      `${admitted ? (phase.cpuMs / admitted).toFixed(2) : '–'} ms per admitted ${unit}; ${upstream}: ${phase.upstream} (admitted: ${admitted}).`,
  );
  for (const [shape, n] of phase.all.shapes) out.push(`- refused × ${n}: ${shape}`);
}

streamTable(a);
streamTable(b);
chatTable(c1);
chatTable(c2);

const ratio = (at2: number[], at1: number[], q: number) => (quantile(at2, q) / quantile(at1, q)).toFixed(2);
out.push(
  '',
  '### 2× ÷ 1×',
  '',
  '| | p50 | p99 |',
  '|---|---|---|',
  `| admitted stream, first token | ${ratio(b.all.first, a.all.first, 0.5)} | ${ratio(b.all.first, a.all.first, 0.99)} |`,
  `| admitted stream, whole | ${ratio(b.all.whole, a.all.whole, 0.5)} | ${ratio(b.all.whole, a.all.whole, 0.99)} |`,
  `| admitted whole chat | ${ratio(c2.all.whole, c1.all.whole, 0.5)} | ${ratio(c2.all.whole, c1.all.whole, 0.99)} |`,
);
if (logged.size > 0) out.push('', `modelgraph logged: ${[...logged].map(([message, n]) => `"${message}" × ${n}`).join('; ')}`);
console.log(out.join('\n'));
