/**
 * Boots a real modelgraph stack for a test: every subgraph and the router on free loopback ports,
 * backed by the local provider and an OpenAI wire-format emulator. Log lines are captured as parsed
 * JSON so tests can assert on them.
 *
 * Each stack starts with its own platform-admin key (`adminKey`, set through the bootstrap
 * variable). Its clients (`ws()`, `sse()`) and `postGraphQL(stack.url, ...)` send it unless told
 * otherwise, so tests that are not about authentication read as before.
 */
import { Writable } from 'node:stream';
import { createClient as createWsClient, type Client as WsClient } from 'graphql-ws';
import { createClient as createSseClient, type Client as SseClient } from 'graphql-sse';
import WebSocket from 'ws';
import { newKeySecret } from '../../platform/access/access-store.ts';
import { LOCAL_MODELS, parseConfig, type Config, type SubgraphName } from '../../platform/config.ts';
import { createLogger, type Logger } from '../../platform/logger.ts';
import { startStack, type RunningStack } from '../../stack.ts';
import { startOpenAIEmulator, type OpenAIEmulator } from '../emulator/openai.ts';

export interface TestStack {
  url: string;
  wsUrl: string;
  stack: RunningStack;
  emulator: OpenAIEmulator;
  logs: Record<string, unknown>[];
  config: Config;
  /** A platform-admin API key (every scope, every tenant). */
  adminKey: string;
  /** The logger the stack writes to (its lines land in `logs`). */
  log: Logger;
  /** A graphql-ws client; `connectionParams` replace the admin credential when given. */
  ws(connectionParams?: Record<string, unknown>): WsClient;
  sse(headers?: Record<string, string>): SseClient;
  stop(): Promise<void>;
}

/** The models every test stack serves: the local ones and `gpt-test` on the emulator. */
export interface TestStackOptions {
  /** Delay between the local echo model's streamed words. */
  localStreamDelayMs?: number;
  /** An Anthropic emulator's base URL: then `claude-test` is served through the Anthropic adapter. */
  anthropicBaseUrl?: string;
  /** Providers beside the stack's own (local, emulated, backup), for models a test adds. */
  providers?: Record<string, unknown>;
}

/** The model an Anthropic emulator serves when a stack is given one (`anthropicBaseUrl`). */
export const CLAUDE_TEST_MODEL = {
  id: 'claude-test',
  provider: 'claude',
  upstream: 'claude-test-upstream',
  version: '1',
  capabilities: ['CHAT', 'TOOLS', 'VISION', 'JSON_SCHEMA'],
  contextWindow: 8192,
  maxOutputTokens: 256,
  pricing: { inputPerMillionTokens: 3, outputPerMillionTokens: 15 },
};

/** The models every test stack serves unless a test replaces `models`. */
export const TEST_MODELS = [
  { id: 'echo', provider: 'local', version: '1', aliases: ['default'], capabilities: ['CHAT'], contextWindow: 64, maxOutputTokens: 32 },
  {
    id: 'gpt-test',
    provider: 'emulated',
    upstream: 'gpt-test-upstream',
    version: '2024-08-06',
    aliases: ['smart'],
    capabilities: ['CHAT', 'TOOLS', 'VISION', 'JSON_SCHEMA'],
    contextWindow: 4096,
    maxOutputTokens: 256,
    pricing: { inputPerMillionTokens: 2.5, outputPerMillionTokens: 10 },
  },
  // The default config's local embedder, with short vectors.
  { ...LOCAL_MODELS.find((model) => model.id === 'hashing-embed')!, dimensions: 32 },
  {
    id: 'backup',
    provider: 'backup',
    upstream: 'backup-upstream',
    version: '1',
    capabilities: ['CHAT', 'TOOLS'],
    contextWindow: 4096,
    maxOutputTokens: 256,
  },
];

/**
 * An embedding model served by the stack's emulator (8 dimensions, 64-token inputs), for a test to
 * add to `TEST_MODELS`; `extra` adds fields such as `pricing`.
 */
export function emulatedEmbeddingModel(id: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    provider: 'emulated',
    version: '1',
    capabilities: ['EMBEDDINGS'],
    contextWindow: 64,
    maxOutputTokens: 1,
    dimensions: 8,
    ...extra,
  };
}

/**
 * Overrides for a stack whose router calls its subgraphs over HTTP and WebSockets, as it calls
 * remote ones (router.inProcessSubgraphs: false): for tests of the network path, such as a
 * subgraph going down under the router.
 */
export const OVER_THE_NETWORK = { router: { port: 0, shutdownGraceMs: 2_000, inProcessSubgraphs: false } };

export function testConfig(emulatorBaseUrl: string, overrides: Record<string, unknown> = {}, options: TestStackOptions = {}): Config {
  return parseConfig({
    router: { port: 0, shutdownGraceMs: 2_000 },
    subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
    log: { level: 'info' },
    // One attempt per target: these stacks test error mapping; routing tests configure their own.
    routing: { attemptsPerTarget: 1 },
    providers: {
      local: { type: 'local', streamDelayMs: options.localStreamDelayMs ?? 0 },
      // Long idle timeout: a test that needs an abort to reach the emulator must not get it from a timeout.
      // As OpenAI: it fetches images by URL (the backup, like a self-hosted server, takes bytes only).
      emulated: { type: 'openai-compatible', baseUrl: emulatorBaseUrl, imageUrls: true, timeouts: { idleMs: 60_000 } },
      // A second provider on the same emulator, told apart by its upstream model name.
      backup: { type: 'openai-compatible', baseUrl: emulatorBaseUrl, timeouts: { idleMs: 60_000 } },
      ...(options.anthropicBaseUrl && {
        claude: { type: 'anthropic', baseUrl: options.anthropicBaseUrl, headers: { 'x-api-key': 'sk-ant-test' } },
      }),
      ...options.providers,
    },
    models: options.anthropicBaseUrl ? [...TEST_MODELS, CLAUDE_TEST_MODEL] : TEST_MODELS,
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

  const adminKey = newKeySecret('test-admin').secret;
  const stack = await startStack(config, log, { kind: 'all' }, { MODELGRAPH_BOOTSTRAP_KEY: adminKey });
  const url = stack.router!.url;
  stackCredentials.set(url, adminKey);
  const wsUrl = url.replace(/^http/, 'ws');
  const clients: { dispose(): unknown }[] = [];
  return {
    url,
    wsUrl,
    stack,
    emulator,
    logs,
    config,
    adminKey,
    log,
    ws(connectionParams = { authorization: `Bearer ${adminKey}` }) {
      const client = createWsClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, connectionParams });
      clients.push(client);
      return client;
    },
    sse(headers = { authorization: `Bearer ${adminKey}` }) {
      const client = createSseClient({ url, singleConnection: false, retryAttempts: 0, headers });
      clients.push(client);
      return client;
    },
    async stop() {
      stackCredentials.delete(url);
      await Promise.all(clients.map((client) => client.dispose()));
      await stack.stop(Date.now() + 1_000);
      await emulator.close();
    },
  };
}

export interface GraphQLResponse<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: {
    data?: T | null;
    errors?: { message: string; path?: string[]; extensions?: Record<string, unknown> }[];
    extensions?: Record<string, unknown>;
  };
}

/** Where each subgraph of a test stack listens, as the router's `subgraphUrls`. */
export function subgraphUrlsOf(stack: TestStack): Record<SubgraphName, string> {
  return Object.fromEntries(stack.stack.subgraphs.map((subgraph) => [subgraph.name, subgraph.url])) as Record<SubgraphName, string>;
}

/** The admin key of each running test stack, by its URL. */
const stackCredentials = new Map<string, string>();

/** Authorization for a test stack's admin, or nothing for other URLs. */
export function adminHeaders(url: string): Record<string, string> {
  const key = stackCredentials.get(url);
  return key ? { authorization: `Bearer ${key}` } : {};
}

/**
 * POSTs an operation. To a test stack it sends the stack's admin key unless `headers` has its own
 * `authorization` (an empty one sends none).
 */
export async function postGraphQL<T = Record<string, unknown>>(
  url: string,
  query: string,
  variables?: Record<string, unknown>,
  headers: Record<string, string> = {},
): Promise<GraphQLResponse<T>> {
  const merged: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/graphql-response+json, application/json',
    ...adminHeaders(url),
    ...headers,
  };
  if (merged.authorization === '') delete merged.authorization;
  const response = await fetch(url, {
    method: 'POST',
    headers: merged,
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as GraphQLResponse<T>['body'] };
}

/** Collects every result of a subscription until it completes (or errors). */
export function collectSubscription<T>(
  client: WsClient | SseClient,
  payload: { query: string; variables?: Record<string, unknown> },
): Promise<{
  results: { data?: T | null; errors?: readonly { message: string; extensions?: Record<string, unknown> }[] }[];
  error?: unknown;
}> {
  return new Promise((resolve) => {
    const results: { data?: T | null; errors?: readonly { message: string; extensions?: Record<string, unknown> }[] }[] = [];
    (client as WsClient).subscribe<T>(payload, {
      next: (value) => results.push(value as (typeof results)[number]),
      error: (error) => resolve({ results, error }),
      complete: () => resolve({ results }),
    });
  });
}
