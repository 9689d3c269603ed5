/**
 * The upstream that bench/peers.ts puts behind every gateway: an OpenAI Chat Completions server on
 * loopback that answers every chat with the same 20-token answer, whole (JSON) or streamed (SSE:
 * one `chat.completion.chunk` per token, the finish chunk, the `include_usage` chunk when asked
 * for, then `[DONE]`), in the shape api.openai.com sends. It does as little work as it can, so
 * the direct-to-mock figures are the floor the gateways are compared against.
 *
 *   node --import tsx bench/peer-mock.ts [--delays 0,20]
 *
 * Run as a script it serves one mock per per-token delay (ms; 0 writes the whole stream at once)
 * on free 127.0.0.1 ports and prints them as one JSON line: {"mocks":[{"delayMs":0,"port":…}]}.
 * It runs in its own process so its CPU is not counted with the load generator's or a gateway's.
 * `GET /stats` answers how many chats (and how many of them streamed) it has served.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

/** The answer, 20 tokens of one word each: the first bare, the others with their leading space. */
export const ANSWER =
  'Benchmarks measure what a gateway adds between a caller and the model upstream when every policy stays switched on today';
const TOKENS = ANSWER.split(' ').map((word, index) => (index === 0 ? word : ` ${word}`));
export const COMPLETION_TOKENS = TOKENS.length;

export interface MockStats {
  chats: number;
  streams: number;
}

/** Prompt tokens as the mock counts them: the words of every message (a tokenizer is not the point). */
export function promptTokens(messages: readonly { content?: unknown }[]): number {
  return messages.reduce((sum, message) => sum + (typeof message.content === 'string' ? message.content.split(/\s+/).length : 0), 0);
}

function usage(prompt: number) {
  return {
    prompt_tokens: prompt,
    completion_tokens: COMPLETION_TOKENS,
    total_tokens: prompt + COMPLETION_TOKENS,
    prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

interface ChatBody {
  model?: string;
  messages?: { content?: unknown }[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
}

function sendCompletion(response: ServerResponse, body: ChatBody, id: string): void {
  sendJson(response, 200, {
    id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [
      { index: 0, message: { role: 'assistant', content: ANSWER, refusal: null, annotations: [] }, logprobs: null, finish_reason: 'stop' },
    ],
    usage: usage(promptTokens(body.messages ?? [])),
    service_tier: 'default',
    system_fingerprint: 'fp_peers_mock',
  });
}

/** One SSE chunk per token, each `tokenDelayMs` after the previous (the first too). */
async function streamCompletion(response: ServerResponse, body: ChatBody, id: string, tokenDelayMs: number): Promise<void> {
  const withUsage = body.stream_options?.include_usage === true;
  // Every chunk carries the same envelope; OpenAI adds `usage: null` to each when usage was asked for.
  const head = `{"id":"${id}","object":"chat.completion.chunk","created":${Math.floor(Date.now() / 1000)},"model":${JSON.stringify(body.model ?? null)},"system_fingerprint":"fp_peers_mock",`;
  const tail = withUsage ? ',"usage":null}' : '}';
  const chunk = (choice: object) => `data: ${head}"choices":[${JSON.stringify(choice)}]${tail}\n\n`;
  response.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
  response.write(chunk({ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }));
  for (const token of TOKENS) {
    if (tokenDelayMs > 0) await sleep(tokenDelayMs);
    if (response.destroyed) return;
    response.write(chunk({ index: 0, delta: { content: token }, logprobs: null, finish_reason: null }));
  }
  response.write(chunk({ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }));
  if (withUsage) response.write(`data: ${head}"choices":[],"usage":${JSON.stringify(usage(promptTokens(body.messages ?? [])))}}\n\n`);
  response.end('data: [DONE]\n\n');
}

async function readJson(request: IncomingMessage): Promise<ChatBody | undefined> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as ChatBody;
  } catch {
    return undefined;
  }
}

export interface MockUpstream {
  port: number;
  /** The OpenAI base URL: http://127.0.0.1:<port>/v1. */
  baseUrl: string;
  stats: MockStats;
  close(): Promise<void>;
}

/** Serves the mock on a free 127.0.0.1 port (or `port`). */
export async function startMockUpstream(tokenDelayMs: number, port = 0): Promise<MockUpstream> {
  const stats: MockStats = { chats: 0, streams: 0 };
  let served = 0;
  const server = createServer((request, response) => {
    const path = request.url ?? '/';
    if (request.method === 'GET' && path === '/stats') return sendJson(response, 200, stats);
    if (request.method !== 'POST' || path !== '/v1/chat/completions') {
      return sendJson(response, 404, {
        error: { message: `no route ${request.method} ${path}`, type: 'invalid_request_error', code: null },
      });
    }
    void readJson(request).then((body) => {
      if (!body || !Array.isArray(body.messages)) {
        return sendJson(response, 400, { error: { message: 'expected a JSON chat body', type: 'invalid_request_error', code: null } });
      }
      stats.chats++;
      const id = `chatcmpl-mock${++served}`;
      if (body.stream !== true) return sendCompletion(response, body, id);
      stats.streams++;
      return streamCompletion(response, body, id, tokenDelayMs);
    });
  });
  // Load generators keep their connections between phases; do not drop them after 5 s idle.
  server.keepAliveTimeout = 60_000;
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const bound = (server.address() as AddressInfo).port;
  return {
    port: bound,
    baseUrl: `http://127.0.0.1:${bound}/v1`,
    stats,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { delays: { type: 'string', default: '0' } } });
  const delays = values.delays.split(',').map(Number);
  const mocks = await Promise.all(delays.map((delayMs) => startMockUpstream(delayMs)));
  console.log(JSON.stringify({ mocks: mocks.map((mock, index) => ({ delayMs: delays[index], port: mock.port })) }));
  const stop = () => void Promise.all(mocks.map((mock) => mock.close())).then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
