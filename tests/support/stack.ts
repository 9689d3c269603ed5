/**
 * Boots a real modelgraph stack for a test: the inference subgraph and the router on free loopback
 * ports, backed by the local provider and an OpenAI wire-format emulator. Log lines are captured
 * as parsed JSON so tests can assert on them.
 */
import { Writable } from 'node:stream';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import { createClient as createSseClient, type Client as SseClient } from 'graphql-sse';
import WebSocket from 'ws';
import { parseConfig, type Config } from '../../platform/config.ts';
import { createLogger, type Logger } from '../../platform/logger.ts';
import { startStack, type RunningStack } from '../../platform/stack.ts';
import { startOpenAIEmulator, type OpenAIEmulator } from '../emulator/openai.ts';

export interface TestStack {
  url: string;
  wsUrl: string;
  stack: RunningStack;
  emulator: OpenAIEmulator;
  logs: Record<string, unknown>[];
  config: Config;
  /** The logger the stack writes to (its lines land in `logs`). */
  log: Logger;
  ws(connectionParams?: Record<string, unknown>): WsClient;
  sse(): SseClient;
  stop(): Promise<void>;
}

/** The models every test stack serves: the local ones and `gpt-test` on the emulator. */
export interface TestStackOptions {
  /** Delay between the local echo model's streamed words. */
  localStreamDelayMs?: number;
}

export function testConfig(emulatorBaseUrl: string, overrides: Record<string, unknown> = {}, options: TestStackOptions = {}): Config {
  return parseConfig({
    router: { port: 0, shutdownGraceMs: 2_000 },
    subgraphs: { inference: { port: 0 } },
    log: { level: 'info' },
    // One attempt per target: these stacks test error mapping; routing tests configure their own.
    routing: { attemptsPerTarget: 1 },
    providers: {
      local: { type: 'local', streamDelayMs: options.localStreamDelayMs ?? 0 },
      // Long idle timeout: a test that needs an abort to reach the emulator must not get it from a timeout.
      emulated: { type: 'openai-compatible', baseUrl: emulatorBaseUrl, timeouts: { idleMs: 60_000 } },
      // A second provider on the same emulator, told apart by its upstream model name.
      backup: { type: 'openai-compatible', baseUrl: emulatorBaseUrl, timeouts: { idleMs: 60_000 } },
    },
    models: [
      { id: 'echo', provider: 'local', version: '1', aliases: ['default'], capabilities: ['CHAT'], contextWindow: 64, maxOutputTokens: 32 },
      {
        id: 'gpt-test',
        provider: 'emulated',
        upstream: 'gpt-test-upstream',
        version: '2024-08-06',
        aliases: ['smart'],
        capabilities: ['CHAT', 'TOOLS'],
        contextWindow: 4096,
        maxOutputTokens: 256,
        pricing: { inputPerMillionTokens: 2.5, outputPerMillionTokens: 10 },
      },
      { id: 'hashing-embed', provider: 'local', version: '1', capabilities: ['EMBEDDINGS'], contextWindow: 8192, maxOutputTokens: 1, dimensions: 32 },
      { id: 'backup', provider: 'backup', upstream: 'backup-upstream', version: '1', capabilities: ['CHAT', 'TOOLS'], contextWindow: 4096, maxOutputTokens: 256 },
    ],
    ...overrides,
  });
}

export async function startTestStack(overrides: Record<string, unknown> = {}, options: TestStackOptions = {}): Promise<TestStack> {
  const emulator = await startOpenAIEmulator();
  const config = testConfig(emulator.baseUrl, overrides, options);
  const logs: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger({ level: config.log.level, name: 'test', destination });

  const stack = await startStack(config, log, { kind: 'all' });
  const url = stack.router!.url;
  const wsUrl = url.replace(/^http/, 'ws');
  const clients: { dispose(): unknown }[] = [];
  return {
    url,
    wsUrl,
    stack,
    emulator,
    logs,
    config,
    log,
    ws(connectionParams) {
      const client = createWsClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, ...(connectionParams && { connectionParams }) });
      clients.push(client);
      return client;
    },
    sse() {
      const client = createSseClient({ url, singleConnection: false, retryAttempts: 0 });
      clients.push(client);
      return client;
    },
    async stop() {
      await Promise.all(clients.map((client) => client.dispose()));
      await stack.stop(Date.now() + 1_000);
      await emulator.close();
    },
  };
}

export interface GraphQLResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: { data?: T | null; errors?: { message: string; path?: string[]; extensions?: Record<string, unknown> }[]; extensions?: Record<string, unknown> };
}

export async function postGraphQL<T = Record<string, unknown>>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<GraphQLResponse<T>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as GraphQLResponse<T>['body'] };
}

/** Collects every result of a subscription until it completes (or errors). */
export function collectSubscription<T>(
  client: WsClient | SseClient,
  payload: { query: string; variables?: Record<string, unknown> },
): Promise<{ results: { data?: T | null; errors?: readonly { message: string; extensions?: Record<string, unknown> }[] }[]; error?: unknown }> {
  return new Promise((resolve) => {
    const results: { data?: T | null; errors?: readonly { message: string; extensions?: Record<string, unknown> }[] }[] = [];
    (client as WsClient).subscribe<T>(payload, {
      next: (value) => results.push(value as (typeof results)[number]),
      error: (error) => resolve({ results, error }),
      complete: () => resolve({ results }),
    });
  });
}
