// TEMPORARY (not committed): first-token comparison REST vs GraphQL SSE vs ws against a running modelgraph.
import { createParser } from 'eventsource-parser';
import { createClient } from 'graphql-ws';
import { Pool } from 'undici';
import WebSocket from 'ws';

const [url, key, mode, countText] = process.argv.slice(2);
const count = Number(countText ?? 500);
const origin = new URL(url!).origin;
const pool = new Pool(origin, { connections: 1 });
const MESSAGES = [{ role: 'user', content: 'The quick brown fox jumps over the lazy dog.' }];
const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}`, accept: 'text/event-stream' };

async function sse(path: string, body: string, read: (data: string, event?: string) => string | undefined) {
  const started = performance.now();
  const response = await pool.request({ path, method: 'POST', headers, body });
  const headersAt = performance.now() - started;
  let first = Number.NaN;
  const parser = createParser({
    onEvent(event) {
      const piece = read(event.data, event.event);
      if (piece && Number.isNaN(first)) {
        first = performance.now() - started;
        abs.push([performance.timeOrigin + started, performance.timeOrigin + started + first, headersAt]);
      }
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of response.body) parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
  return first;
}

const restBody = JSON.stringify({ model: 'bench-model', messages: MESSAGES, stream: true, stream_options: { include_usage: true } });
const rest = () =>
  sse('/v1/chat/completions', restBody, (data) =>
    data === '[DONE]' ? undefined : (JSON.parse(data) as { choices: { delta?: { content?: string } }[] }).choices[0]?.delta?.content,
  );
const QUERY = 'subscription S($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatDelta { content } } }';
const gqlBody = JSON.stringify({
  query: QUERY,
  variables: { input: { model: 'bench-model', messages: [{ role: 'USER', content: MESSAGES[0]!.content }] } },
});
const gqlSse = () =>
  sse('/graphql', gqlBody, (data, event) =>
    event === 'next' ? (JSON.parse(data) as { data?: { chatStream?: { content?: string } } }).data?.chatStream?.content : undefined,
  );
const client = createClient({
  url: url!.replace('http', 'ws'),
  webSocketImpl: WebSocket,
  lazy: false,
  connectionParams: { authorization: `Bearer ${key}` },
});
async function ws() {
  const started = performance.now();
  let first = Number.NaN;
  for await (const result of client.iterate({ query: QUERY, variables: JSON.parse(gqlBody).variables })) {
    const content = (result.data as { chatStream?: { content?: string } } | undefined)?.chatStream?.content;
    if (content && Number.isNaN(first)) first = performance.now() - started;
  }
  return first;
}

const abs: number[][] = [];
const mockPool = new Pool(`http://127.0.0.1:${process.env.MOCK_PORT}`, { connections: 1 });
async function direct() {
  const started = performance.now();
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: MESSAGES, stream: true, stream_options: { include_usage: true } });
  const response = await mockPool.request({ path: '/v1/chat/completions', method: 'POST', headers, body });
  let first = Number.NaN;
  const parser = createParser({
    onEvent(event) {
      if (
        event.data !== '[DONE]' &&
        (JSON.parse(event.data) as { choices: { delta?: { content?: string } }[] }).choices[0]?.delta?.content &&
        Number.isNaN(first)
      )
        first = performance.now() - started;
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of response.body) parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
  return first;
}
const runners: Record<string, () => Promise<number>> = { rest, sse: gqlSse, ws, direct };
const modes = mode === 'all' ? Object.keys(runners) : mode!.split(',');
const samples: Record<string, number[]> = Object.fromEntries(modes.map((name) => [name, []]));
for (let round = 0; round < count / 50; round++) {
  for (const name of modes) {
    for (let index = 0; index < 50; index++) {
      const value = await runners[name]!();
      if (process.env.GAP) await new Promise((r) => setTimeout(r, Number(process.env.GAP)));
      if (round > 0) samples[name]!.push(value);
    }
  }
}
for (const name of modes) {
  const sorted = samples[name]!.sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.floor(q * (sorted.length - 1))]!.toFixed(3);
  console.log(`${name}: p50 ${at(0.5)} p90 ${at(0.9)} n ${sorted.length}`);
}
(await import('node:fs')).writeFileSync('/tmp/ft/client-abs.json', JSON.stringify(abs));
await client.dispose();
await pool.close();
await mockPool.close();
