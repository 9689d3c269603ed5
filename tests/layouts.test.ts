/**
 * Every policy applies the same whether the router calls its subgraphs in its own process
 * (`router.inProcessSubgraphs`, the default for `modelgraph all`: a planned call or a whole
 * operation executed on the subgraph's schema) or over HTTP and WebSockets as it calls remote
 * ones. The same cases run against both layouts.
 */
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { OVER_THE_NETWORK, collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const CHAT = 'mutation Chat($input: ChatInput!) { chat(input: $input) { content usage { totalTokens } } }';
const CHAT_STREAM = 'subscription ChatStream($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatDelta { content } } }';
const CREATE_KEY = 'mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }';
const user = (content: string) => [{ role: 'USER', content }];
const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const range = () => ({ from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() });

const LAYOUTS = [
  { layout: 'in process', router: {}, transports: ['in-process', 'in-process'] },
  { layout: 'over HTTP and WebSockets', router: { inProcessSubgraphs: false }, transports: ['http', 'ws'] },
];

describe.each(LAYOUTS)('policies with subgraphs called $layout', ({ router, transports }) => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack({
      router: { ...OVER_THE_NETWORK.router, inProcessSubgraphs: true, ...router, rateLimits: { 'Query.models': { max: 2, window: '1m' } } },
    });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  async function createKey(input: Record<string, unknown>): Promise<{ id: string; secret: string }> {
    const { body } = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(stack.url, CREATE_KEY, { input });
    expect(body.errors).toBeUndefined();
    return { id: body.data!.createApiKey.apiKey.id, secret: body.data!.createApiKey.secret };
  }

  it('refuses a request without a valid credential before any subgraph runs', async () => {
    const missing = await postGraphQL(stack.url, '{ models { id } }', undefined, { authorization: '' });
    expect(missing.status).toBe(401);
    expect(missing.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const forged = await postGraphQL(stack.url, '{ models { id } }', undefined, bearer('mg_nope_0000'));
    expect(forged.status).toBe(401);
  });

  it('denies a field the shield rules refuse with FORBIDDEN and still answers the rest', async () => {
    const { secret } = await createKey({ name: 'echo only', scopes: ['MODELS_READ'], allowedModels: ['echo'] });
    const { body } = await postGraphQL<{ echo: { id: string } | null; other: { id: string } | null }>(
      stack.url,
      '{ echo: model(id: "echo") { id } other: model(id: "gpt-test") { id } }',
      undefined,
      bearer(secret),
    );
    expect(body.data).toEqual({ echo: { id: 'echo' }, other: null });
    expect(body.errors).toHaveLength(1);
    expect(body.errors?.[0]).toMatchObject({ path: ['other'], extensions: { code: 'FORBIDDEN' } });
    // A chat the key has no scope for is refused by the same rules.
    const chat = await postGraphQL(stack.url, CHAT, { input: { model: 'echo', messages: user('hi') } }, bearer(secret));
    expect(chat.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('applies @rateLimit per key', async () => {
    const { secret } = await createKey({ name: 'limited', scopes: ['MODELS_READ'] });
    const codes: unknown[] = [];
    for (let call = 0; call < 3; call++) {
      const { body } = await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(secret));
      codes.push(body.errors?.[0]?.extensions?.code ?? 'ok');
    }
    expect(codes).toEqual(['ok', 'ok', 'RATE_LIMITED']);
  });

  it('holds a key to its tokens per minute and records the usage of what it was charged', async () => {
    const { id, secret } = await createKey({
      name: 'metered',
      scopes: ['CHAT_INVOKE', 'MODELS_READ', 'USAGE_READ'],
      limits: { tokensPerMinute: 60 },
    });
    stack.emulator.script({ kind: 'chat', content: 'short answer', usage: { prompt: 10, completion: 2 } });
    const first = await postGraphQL<{ chat: { usage: { totalTokens: number } } }>(
      stack.url,
      CHAT,
      { input: { model: 'gpt-test', messages: user('hi'), maxTokens: 40 } },
      bearer(secret),
    );
    expect(first.body.errors).toBeUndefined();
    expect(first.body.data?.chat.usage.totalTokens).toBe(12);
    // 12 settled of 60: a call that may need 10 + 40 more no longer fits.
    const refused = await postGraphQL(
      stack.url,
      CHAT,
      { input: { model: 'gpt-test', messages: user('hi'), maxTokens: 50 } },
      bearer(secret),
    );
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'TOKEN_LIMIT_EXCEEDED', scope: 'key' });
    // The charged call's usage event reached the usage subgraph (an entity field of another subgraph).
    await expect
      .poll(async () => {
        const { body } = await postGraphQL<{ me: { apiKey: { id: string; usage: { calls: number } } } }>(
          stack.url,
          'query($from: String!, $to: String!) { me { apiKey { id usage(from: $from, to: $to) { calls } } } }',
          range(),
          bearer(secret),
        );
        return body.data?.me.apiKey;
      })
      .toEqual({ id, usage: { calls: 1 } });
  });

  it('aborts the upstream request when the client unsubscribes from a stream', async () => {
    stack.emulator.script({ kind: 'chat', content: 'first second third', stallAfterChunks: 1 });
    const aborted = stack.emulator.nextAbort();
    const client = stack.ws();
    const unsubscribe = await new Promise<() => void>((resolve) => {
      const stop = client.subscribe(
        { query: CHAT_STREAM, variables: { input: { model: 'gpt-test', messages: user('stream please') } } },
        { next: () => resolve(stop), error: () => undefined, complete: () => undefined },
      );
    });
    unsubscribe();
    expect((await aborted).body).toMatchObject({ model: 'gpt-test-upstream', stream: true });
  });

  it('tags the subgraph log of a stream and of a mutation over the same socket with the request id', async () => {
    class TracedWebSocket extends WebSocket {
      constructor(address: string, protocols?: string | string[]) {
        super(address, protocols, { headers: { 'x-request-id': 'layout-req-7' } });
      }
    }
    const client = createClient({
      url: stack.wsUrl,
      webSocketImpl: TracedWebSocket,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${stack.adminKey}` },
    });
    await collectSubscription(client, { query: CHAT_STREAM, variables: { input: { model: 'echo', messages: user('hi') } } });
    await collectSubscription(client, { query: CHAT, variables: { input: { model: 'echo', messages: user('hi') } } });
    await client.dispose();
    const traced = stack.logs.filter(
      (line) => line.subgraph === 'inference' && line.requestId === 'layout-req-7' && line.msg === 'operation completed',
    );
    expect(traced.map((line) => line.transport ?? 'http').sort()).toEqual(transports);
  });
});
