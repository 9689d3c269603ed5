import { print } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { MemoryMeter } from '../platform/metering/meter.ts';
import { startRouter } from '../router/server.ts';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatStreamDocument, type ChatStreamSubscription } from '../codegen/operations.ts';
import { startInferenceSubgraph } from '../subgraphs/inference/index.ts';
import { OVER_THE_NETWORK, collectSubscription, postGraphQL, startTestStack, subgraphUrlsOf, type TestStack } from './support/stack.ts';
import { startTcpProxy } from './support/tcp-proxy.ts';

let stack: TestStack | undefined;
const extra: { stop(deadline: number): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
  await Promise.all(extra.splice(0).map((subgraph) => subgraph.stop(Date.now())));
  await stack?.stack.router?.stop(Date.now());
  await Promise.all(stack?.stack.subgraphs.map((subgraph) => subgraph.stop(Date.now())) ?? []);
  await stack?.emulator.close();
  stack = undefined;
});

const cleanups: (() => Promise<void>)[] = [];
const CHAT_STREAM = print(ChatStreamDocument);

const streamInput = (content: string) => ({ input: { model: 'echo', messages: [{ role: 'USER', content }] } });

/** Streams a 15-word echo answer; calls `afterThird` once the third delta arrived. */
async function streamFifteenWords(client: { subscribe: ReturnType<typeof createClient>['subscribe'] }, afterThird: () => void) {
  const deltas: string[] = [];
  const errors: { extensions?: Record<string, unknown> }[] = [];
  const words = Array.from({ length: 15 }, (_, index) => `w${index}`).join(' ');
  await new Promise<void>((resolve) => {
    client.subscribe<ChatStreamSubscription>(
      { query: CHAT_STREAM, variables: streamInput(words) },
      {
        next: (result) => {
          errors.push(...(result.errors ?? []));
          const event = result.data?.chatStream;
          if (event?.__typename === 'ChatDelta' && deltas.push(event.content) === 3) afterThird();
        },
        error: () => resolve(),
        complete: () => resolve(),
      },
    );
  });
  return { deltas, errors };
}

function errorsOf(outcome: { results: { errors?: readonly { extensions?: Record<string, unknown> }[] }[]; error?: unknown }) {
  return [...outcome.results.flatMap((result) => result.errors ?? []), ...(Array.isArray(outcome.error) ? outcome.error : [])] as {
    message: string;
    extensions?: Record<string, unknown>;
  }[];
}

describe('router with its subgraph down', () => {
  it('answers queries and mutations with DOWNSTREAM_SERVICE_ERROR naming the service, without its address', async () => {
    stack = await startTestStack(OVER_THE_NETWORK);
    await stack.stack.subgraphs[0]!.stop(Date.now());
    for (const query of [
      '{ models { id } }',
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { content } }',
    ]) {
      const { status, body } = await postGraphQL(stack.url, query);
      expect(status).toBe(200);
      expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'DOWNSTREAM_SERVICE_ERROR', serviceName: 'inference' });
      expect(JSON.stringify(body)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    }
    expect((await fetch(stack.url.replace('/graphql', '/healthz'))).status).toBe(200);
  });

  it('fails subscriptions over WebSocket and SSE with DOWNSTREAM_SERVICE_ERROR, without its address', async () => {
    stack = await startTestStack(OVER_THE_NETWORK);
    await stack.stack.subgraphs[0]!.stop(Date.now());
    for (const client of [stack.ws(), stack.sse()]) {
      const outcome = await collectSubscription(client, { query: CHAT_STREAM, variables: streamInput('x') });
      const errors = errorsOf(outcome);
      expect(errors[0]?.extensions).toMatchObject({ code: 'DOWNSTREAM_SERVICE_ERROR', serviceName: 'inference' });
      expect(JSON.stringify(errors)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    }
  });
});

describe('a subgraph restarting under an open stream', () => {
  it('ends the stream with a coded error and never replays it from the start on the new instance', async () => {
    stack = await startTestStack(OVER_THE_NETWORK, { localStreamDelayMs: 20 });
    const old = stack.stack.subgraphs[0]!;
    let restarted: Promise<void> | undefined;
    const { deltas, errors } = await streamFifteenWords(stack.ws(), () => {
      // Stop the subgraph at once and start a new one on the same port.
      restarted = old.stop(Date.now()).then(async () => {
        const config = {
          ...stack!.config,
          subgraphs: { ...stack!.config.subgraphs, inference: { ...stack!.config.subgraphs.inference, port: old.port } },
        };
        extra.push(
          await startInferenceSubgraph(config, stack!.log, {
            withProcessMetrics: false,
            identity: stack!.stack.identity,
            usage: { emit: async () => undefined },
            meter: new MemoryMeter(),
          }),
        );
      });
    });
    await restarted;
    expect(new Set(deltas).size).toBe(deltas.length);
    expect(deltas.length).toBeLessThan(15);
    expect(['SHUTTING_DOWN', 'DOWNSTREAM_SERVICE_ERROR']).toContain(errors[0]?.extensions?.code);
    // The new instance serves new requests.
    const { body } = await postGraphQL<{ chat: { content: string } }>(
      stack.url,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "back"}]}) { content } }',
    );
    expect(body.data?.chat.content).toBe('back');
  });
});

describe('a subgraph connection lost mid-stream', () => {
  it('ends the stream with DOWNSTREAM_SERVICE_ERROR and never re-subscribes (which would replay the answer)', async () => {
    stack = await startTestStack({}, { localStreamDelayMs: 20 });
    const proxy = await startTcpProxy(stack.stack.subgraphs[0]!.port);
    const router = await startRouter({
      config: { ...stack.config, router: { ...stack.config.router, port: 0 } },
      log: stack.log,
      subgraphUrls: { ...subgraphUrlsOf(stack), inference: `http://127.0.0.1:${proxy.port}/graphql` },
      identity: stack.stack.identity,
      access: stack.stack.access!,
      withProcessMetrics: false,
    });
    cleanups.push(
      () => router.stop(Date.now()),
      () => proxy.close(),
    );
    const client = createClient({
      url: router.url.replace('http', 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${stack.adminKey}` },
    });
    cleanups.push(async () => client.dispose());
    const { deltas, errors } = await streamFifteenWords(client, () => void proxy.cut());
    expect(new Set(deltas).size).toBe(deltas.length);
    expect(deltas.length).toBeLessThan(15);
    expect(errors[0]?.extensions).toMatchObject({ code: 'DOWNSTREAM_SERVICE_ERROR', serviceName: 'inference' });
  });
});
