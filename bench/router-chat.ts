/**
 * Router benchmark: throughput and latency of a non-streaming chat (local echo model) through the
 * router versus straight to the inference subgraph (the difference is what the federation layer
 * adds), and time to first delta of a streamed chat over graphql-ws.
 *
 *   npx tsx bench/router-chat.ts [--connections 50] [--seconds 10] [--streams 200]
 *
 * modelgraph runs as its own process (`cli.ts all`), the load comes from this one; both on
 * loopback. Calls through the router carry an API key (authenticated, from the router's key
 * cache after the first); direct calls carry an identity token, as the router would send.
 * Results go to standard output as Markdown; record them in bench/results.md.
 */
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { newKeySecret } from '../platform/access/access-store.ts';
import { IDENTITY_HEADER, IdentityTokens, randomIdentitySecret } from '../platform/identity/identity-token.ts';
import { spawnModelgraph, writeConfig } from '../tests/support/process.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '10' },
    streams: { type: 'string', default: '200' },
  },
});
const connections = Number(values.connections);
const duration = Number(values.seconds);

const CHAT = JSON.stringify({
  query: 'mutation Chat($input: ChatInput!) { chat(input: $input) { id content finishReason usage { totalTokens } } }',
  variables: { input: { model: 'echo', messages: [{ role: 'USER', content: 'The quick brown fox jumps over the lazy dog.' }] } },
});

const ADMIN_KEY = newKeySecret('bench').secret;
const IDENTITY_SECRET = randomIdentitySecret();

async function load(url: string, headers: Record<string, string>) {
  const result = await autocannon({
    url,
    connections,
    duration,
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: CHAT,
  });
  return {
    rps: Math.round(result.requests.average),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function timeToFirstDelta(wsUrl: string, count: number) {
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    connectionParams: { authorization: `Bearer ${ADMIN_KEY}` },
  });
  const query =
    'subscription { chatStream(input: {model: "echo", messages: [{role: USER, content: "one two three four five"}]}) { __typename } }';
  const samples: number[] = [];
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    let first: number | undefined;
    for await (const _result of client.iterate({ query })) first ??= performance.now() - started;
    samples.push(first!);
  }
  await client.dispose();
  samples.sort((a, b) => a - b);
  return { p50: percentile(samples, 50), p99: percentile(samples, 99) };
}

const config = writeConfig({
  router: { port: 0, rateLimits: { 'Mutation.chat': { max: 10_000_000, window: '1m' } } },
  subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
  log: { level: 'warn' },
});
const process_ = spawnModelgraph(['all', '--config', config], {
  LOG_LEVEL: 'info',
  MODELGRAPH_BOOTSTRAP_KEY: ADMIN_KEY,
  MODELGRAPH_IDENTITY_SECRET: IDENTITY_SECRET,
});
const subgraphLine = await process_.waitForLine((line) => line.msg === 'subgraph inference listening');
const ready = await process_.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
const routerUrl = ready.url as string;
const subgraphUrl = `http://127.0.0.1:${subgraphLine.port as number}/graphql`;

const viaRouter = { authorization: `Bearer ${ADMIN_KEY}` };
const principal = {
  kind: 'API_KEY' as const,
  subject: 'bootstrap',
  tenantId: 'platform',
  keyId: 'bootstrap',
  scopes: ['chat:invoke' as const],
  allowedModels: null,
};
const identity = { [IDENTITY_HEADER]: await new IdentityTokens(IDENTITY_SECRET).sign(principal, 'inference') };
await load(routerUrl, viaRouter); // warm-up
const direct = await load(subgraphUrl, identity);
const routed = await load(routerUrl, viaRouter);
const stream = await timeToFirstDelta(routerUrl.replace('http', 'ws'), Number(values.streams));
process_.child.kill('SIGTERM');
await process_.exit;

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(`load: ${connections} connections, ${duration} s each, chat mutation on the local echo model\n`);
console.log('| target | req/s | p50 ms | p99 ms | errors |');
console.log('|---|---|---|---|---|');
console.log(`| inference subgraph, direct | ${direct.rps} | ${direct.p50} | ${direct.p99} | ${direct.errors} |`);
console.log(`| router → subgraph | ${routed.rps} | ${routed.p50} | ${routed.p99} | ${routed.errors} |`);
console.log(`\nstreamed chat over graphql-ws through the router, ${values.streams} sequential subscriptions:`);
console.log(`time to first delta p50 ${stream.p50.toFixed(1)} ms, p99 ${stream.p99.toFixed(1)} ms`);
