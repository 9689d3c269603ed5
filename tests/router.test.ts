import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ChatDocument,
  ChatStreamDocument,
  ModelByRefDocument,
  ModelsDocument,
  type ChatMutation,
  type ChatStreamSubscription,
  type ModelByRefQuery,
  type ModelsQuery,
} from '../codegen/operations.ts';
import { TEST_MODELS, adminHeaders, collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';
import { countTextTokens } from '../providers/tokens.ts';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack();
});
afterAll(async () => {
  await stack?.stop();
});

const CHAT = print(ChatDocument);
const CHAT_STREAM = print(ChatStreamDocument);
const user = (content: string) => [{ role: 'USER', content }];
const chat = (input: Record<string, unknown>, headers?: Record<string, string>) =>
  postGraphQL<ChatMutation>(stack.url, CHAT, { input }, headers);

/** Asserts a GraphQL error response with a code and no internals, then that the router still serves. */
async function expectCodedError(response: Awaited<ReturnType<typeof chat>>, code: string) {
  expect(response.status).toBeLessThan(500);
  expect(response.body.errors?.[0]?.extensions?.code).toBe(code);
  expect(response.body.data ?? null).toBeNull();
  const text = JSON.stringify(response.body);
  expect(text).not.toMatch(/stacktrace|\bat .*\.ts:\d+|127\.0\.0\.1/);
  const healthy = await chat({ model: 'echo', messages: user('still here') });
  expect(healthy.body.data?.chat.content).toBe('still here');
  return response.body.errors![0]!;
}

describe('router over GraphQL over HTTP', () => {
  it('lists the configured models through the supergraph', async () => {
    const { status, body } = await postGraphQL<ModelsQuery>(stack.url, print(ModelsDocument));
    expect(status).toBe(200);
    expect(body.data?.models.map((model) => model.id)).toEqual(['echo', 'gpt-test', 'hashing-embed', 'backup']);
    // Every field the document asks for, exactly as the stack's config has it.
    expect(body.data?.models[1]).toEqual(TEST_MODELS.find((model) => model.id === 'gpt-test'));
  });

  it('serves queries over GET and refuses mutations over GET', async () => {
    const headers = { ...adminHeaders(stack.url), 'apollo-require-preflight': 'true' };
    const query = await fetch(`${stack.url}?query=${encodeURIComponent('{ models { id } }')}`, {
      headers: { ...headers, accept: 'application/graphql-response+json' },
    });
    expect(query.status).toBe(200);
    expect(((await query.json()) as { data: ModelsQuery }).data.models).toHaveLength(4);
    const mutation = await fetch(
      `${stack.url}?query=${encodeURIComponent('mutation { chat(input: {model: "echo", messages: []}) { id } }')}`,
      { headers },
    );
    expect(mutation.status).toBe(405);
  });

  it.each([
    ['gpt-test', 'gpt-test'],
    ['smart', 'gpt-test'],
    ['gpt-test@2024-08-06', 'gpt-test'],
    ['default', 'echo'],
  ])('resolves the model reference %s', async (ref, id) => {
    const { body } = await postGraphQL<ModelByRefQuery>(stack.url, print(ModelByRefDocument), { id: ref });
    expect(body.data?.model?.id).toBe(id);
  });

  it('answers null for a reference that matches nothing, including a wrong version pin', async () => {
    for (const ref of ['nope', 'gpt-test@1999-01-01']) {
      const { body } = await postGraphQL<ModelByRefQuery>(stack.url, print(ModelByRefDocument), { id: ref });
      expect(body.data?.model).toBeNull();
    }
  });

  it("returns the upstream's answer with its usage and the model that served it", async () => {
    stack.emulator.script({ kind: 'chat', content: 'Upstream says hi.', usage: { prompt: 11, completion: 4 } });
    const { body } = await chat({
      model: 'smart',
      messages: [{ role: 'SYSTEM', content: 'Be brief.' }, ...user('Hi')],
      maxTokens: 20,
      temperature: 0,
    });
    expect(body.errors).toBeUndefined();
    expect(body.data?.chat).toMatchObject({
      content: 'Upstream says hi.',
      finishReason: 'STOP',
      model: { id: 'gpt-test', version: '2024-08-06', provider: 'emulated' },
      usage: { promptTokens: 11, completionTokens: 4, totalTokens: 15 },
      toolCalls: [],
      servedBy: { provider: 'emulated', version: '2024-08-06', attempts: 1, model: { id: 'gpt-test' } },
    });
    expect(stack.emulator.requests.at(-1)!.body).toMatchObject({
      model: 'gpt-test-upstream',
      max_tokens: 20,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ],
    });
  });

  it('passes tools to the model and returns its tool calls', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'call_1', name: 'weather', arguments: '{"city":"Paris"}' }] });
    const { body } = await chat({
      model: 'gpt-test',
      messages: user('Weather in Paris?'),
      tools: [{ name: 'weather', description: 'Current weather', parameters: '{"type":"object","properties":{"city":{"type":"string"}}}' }],
    });
    expect(body.data?.chat).toMatchObject({
      finishReason: 'TOOL_CALLS',
      toolCalls: [{ id: 'call_1', name: 'weather', arguments: '{"city":"Paris"}' }],
    });
  });

  describe('refuses bad input with a documented code, and keeps serving', () => {
    it('unknown model → MODEL_NOT_FOUND', async () => {
      const error = await expectCodedError(await chat({ model: 'gpt-5-nope', messages: user('x') }), 'MODEL_NOT_FOUND');
      expect(error.extensions?.model).toBe('gpt-5-nope');
    });

    it('empty messages → EMPTY_MESSAGES', async () => {
      await expectCodedError(await chat({ model: 'echo', messages: [] }), 'EMPTY_MESSAGES');
    });

    it('bad role in variables → BAD_USER_INPUT; as a literal → GRAPHQL_VALIDATION_FAILED', async () => {
      await expectCodedError(await chat({ model: 'echo', messages: [{ role: 'WIZARD', content: 'x' }] }), 'BAD_USER_INPUT');
      const literal = await postGraphQL(
        stack.url,
        'mutation { chat(input: {model: "echo", messages: [{role: WIZARD, content: "x"}]}) { id } }',
      );
      await expectCodedError(literal as Awaited<ReturnType<typeof chat>>, 'GRAPHQL_VALIDATION_FAILED');
    });

    it('input over the context window → CONTEXT_WINDOW_EXCEEDED with the figures', async () => {
      const error = await expectCodedError(await chat({ model: 'echo', messages: user('word '.repeat(200)) }), 'CONTEXT_WINDOW_EXCEEDED');
      expect(error.extensions).toMatchObject({ contextWindow: 64 });
      expect(error.extensions?.promptTokens).toBeGreaterThan(64);
    });

    it('maxTokens over the model maximum → BAD_USER_INPUT naming the field', async () => {
      const error = await expectCodedError(await chat({ model: 'echo', messages: user('x'), maxTokens: 33 }), 'BAD_USER_INPUT');
      expect(error.extensions?.field).toBe('maxTokens');
    });

    it('chat with an embedding model → MODEL_CAPABILITY_UNSUPPORTED', async () => {
      await expectCodedError(await chat({ model: 'hashing-embed', messages: user('x') }), 'MODEL_CAPABILITY_UNSUPPORTED');
    });

    it('a TOOL message without toolCallId → BAD_USER_INPUT', async () => {
      await expectCodedError(await chat({ model: 'echo', messages: [{ role: 'TOOL', content: 'x' }] }), 'BAD_USER_INPUT');
    });

    it('syntax error → GRAPHQL_PARSE_FAILED', async () => {
      await expectCodedError((await postGraphQL(stack.url, '{ models { ')) as Awaited<ReturnType<typeof chat>>, 'GRAPHQL_PARSE_FAILED');
    });

    it('upstream 429 → UPSTREAM_RATE_LIMITED with retryAfterMs and none of the upstream text', async () => {
      stack.emulator.script({
        kind: 'error',
        status: 429,
        headers: { 'retry-after': '3' },
        body: { error: { message: 'org-secret-id over quota' } },
      });
      const error = await expectCodedError(await chat({ model: 'gpt-test', messages: user('x') }), 'UPSTREAM_RATE_LIMITED');
      expect(error.extensions).toMatchObject({ retryAfterMs: 3000, retryable: true, provider: 'emulated', upstreamStatus: 429 });
      expect(JSON.stringify(error)).not.toContain('org-secret-id');
    });

    it('upstream 500 → UPSTREAM_UNAVAILABLE', async () => {
      stack.emulator.script({ kind: 'error', status: 500 });
      await expectCodedError(await chat({ model: 'gpt-test', messages: user('x') }), 'UPSTREAM_UNAVAILABLE');
    });

    it('a body that is not JSON → 400 with a code', async () => {
      const response = await fetch(stack.url, {
        method: 'POST',
        headers: { ...adminHeaders(stack.url), 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: '{"query": ',
      });
      expect(response.status).toBe(400);
      const body = (await response.json()) as { errors: { extensions?: { code?: string } }[] };
      expect(body.errors[0]?.extensions?.code).toBe('BAD_USER_INPUT');
      expect(JSON.stringify(body)).not.toContain('SyntaxError');
    });

    it('a body over the size limit → 413 before it is read', async () => {
      const huge = JSON.stringify({ query: `{ models { id } } # ${'x'.repeat(stack.config.router.maxBodyBytes)}` });
      const response = await fetch(stack.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: huge });
      expect(response.status).toBe(413);
      expect(((await response.json()) as { errors: { extensions: { code: string } }[] }).errors[0]?.extensions.code).toBe('BAD_USER_INPUT');
    });
  });

  it('carries the request id from the client through the router to the subgraph log and back', async () => {
    const { headers } = await chat({ model: 'echo', messages: user('trace me') }, { 'x-request-id': 'test-req-123' });
    expect(headers.get('x-request-id')).toBe('test-req-123');
    const subgraphLines = stack.logs.filter((line) => line.subgraph === 'inference' && line.requestId === 'test-req-123');
    expect(subgraphLines.some((line) => line.msg === 'operation completed' && line.operation === 'Chat')).toBe(true);
  });

  it('replaces an unsafe client request id with its own', async () => {
    const { headers } = await chat({ model: 'echo', messages: user('x') }, { 'x-request-id': 'bad id\twith spaces' });
    expect(headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('serves health, readiness and Prometheus metrics by operation and outcome', async () => {
    const base = stack.url.replace('/graphql', '');
    expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
    expect(await (await fetch(`${base}/readyz`)).json()).toEqual({ status: 'ready' });
    await chat({ model: 'echo', messages: user('count me') });
    await chat({ model: 'nope', messages: user('count me') });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/modelgraph_router_operations_total\{operation="Chat",type="mutation",outcome="ok",component="router"\} [1-9]/);
    expect(metrics).toMatch(
      /modelgraph_router_operations_total\{operation="Chat",type="mutation",outcome="error",component="router"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /modelgraph_router_operation_duration_seconds_count\{component="router",operation="Chat",type="mutation"\} [1-9]/,
    );
    expect(metrics).toContain('modelgraph_router_open_subscriptions');
  });
});

type StreamEvent = ChatStreamSubscription['chatStream'];

function eventsOf(results: { data?: ChatStreamSubscription | null }[]): StreamEvent[] {
  return results.map((result) => result.data!.chatStream);
}

describe('router streaming', () => {
  const streamInput = { model: 'gpt-test', messages: user('stream please') };

  /** Streams `streamInput` over `transport` to its end, asserting the subscription itself did not fail. */
  async function streamEvents(transport: 'graphql-ws' | 'SSE'): Promise<StreamEvent[]> {
    const client = transport === 'SSE' ? stack.sse() : stack.ws();
    const { results, error } = await collectSubscription<ChatStreamSubscription>(client, {
      query: CHAT_STREAM,
      variables: { input: streamInput },
    });
    expect(error).toBeUndefined();
    return eventsOf(results);
  }

  for (const transport of ['graphql-ws', 'SSE'] as const) {
    it(`streams every delta in order and ends with usage over ${transport}`, async () => {
      const content = 'The quick brown fox jumps over the lazy dog, twice over.';
      stack.emulator.script({ kind: 'chat', content, usage: { prompt: 6, completion: 13 }, chunkDelayMs: 2 });
      const events = await streamEvents(transport);
      const deltas = events.filter((event) => event.__typename === 'ChatDelta');
      expect(deltas.length).toBe(content.split(' ').length);
      expect(deltas.map((event) => (event.__typename === 'ChatDelta' ? event.content : '')).join('')).toBe(content);
      expect(events.at(-1)).toEqual({
        __typename: 'ChatCompleted',
        finishReason: 'STOP',
        toolCalls: [],
        usage: { promptTokens: 6, completionTokens: 13, totalTokens: 19 },
        servedBy: { provider: 'emulated', version: '2024-08-06', attempts: 1 },
      });
      expect(events.slice(0, -1).every((event) => event.__typename === 'ChatDelta')).toBe(true);
    });

    it(`ends a stream the upstream cuts with ChatFailed, then completes, over ${transport}`, async () => {
      stack.emulator.script({ kind: 'chat', content: 'one two three four five', cutAfterChunks: 2 });
      const events = await streamEvents(transport);
      expect(events.slice(0, 2)).toEqual([
        { __typename: 'ChatDelta', content: 'one ' },
        { __typename: 'ChatDelta', content: 'two ' },
      ]);
      expect(events[2]).toMatchObject({
        __typename: 'ChatFailed',
        code: 'UPSTREAM_STREAM_INTERRUPTED',
        servedBy: { provider: 'emulated', attempts: 1 },
      });
      // The usage of what was delivered ("one two ") is still reported.
      const failed = events[2] as { usage: { completionTokens: number; promptTokens: number } };
      expect(failed.usage.completionTokens).toBe(countTextTokens('one two '));
      expect(failed.usage.promptTokens).toBeGreaterThan(0);
      expect(events).toHaveLength(3);
    });
  }

  it('streams the local echo model word by word', async () => {
    const { results } = await collectSubscription<ChatStreamSubscription>(stack.ws(), {
      query: CHAT_STREAM,
      variables: { input: { model: 'echo', messages: user('Hello from the local model') } },
    });
    const events = eventsOf(results);
    expect(events.filter((event) => event.__typename === 'ChatDelta').map((event) => (event as { content: string }).content)).toEqual([
      'Hello ',
      'from ',
      'the ',
      'local ',
      'model',
    ]);
    expect(events.at(-1)).toMatchObject({ __typename: 'ChatCompleted', finishReason: 'STOP' });
  });

  it('fails a subscription with bad input before any event, with a code', async () => {
    const { results, error } = await collectSubscription<ChatStreamSubscription>(stack.ws(), {
      query: CHAT_STREAM,
      variables: { input: { model: 'nope', messages: user('x') } },
    });
    const errors = results.flatMap((result) => result.errors ?? []);
    const codes = [
      ...errors.map((item) => item.extensions?.code),
      ...(Array.isArray(error) ? error.map((item: { extensions?: { code?: string } }) => item.extensions?.code) : []),
    ];
    expect(codes).toContain('MODEL_NOT_FOUND');
    expect(results.every((result) => !result.data?.chatStream)).toBe(true);
  });

  it('aborts the upstream request at once when the client unsubscribes, and counts the open stream meanwhile', async () => {
    stack.emulator.script({ kind: 'chat', content: 'first second third', stallAfterChunks: 1 });
    const aborted = stack.emulator.nextAbort();
    const client = stack.ws();
    const firstDelta = new Promise<() => void>((resolve) => {
      const unsubscribe = client.subscribe(
        { query: CHAT_STREAM, variables: { input: streamInput } },
        { next: () => resolve(unsubscribe), error: () => undefined, complete: () => undefined },
      );
    });
    const unsubscribe = await firstDelta;
    const metrics = await (await fetch(stack.url.replace('/graphql', '/metrics'))).text();
    expect(metrics).toMatch(/modelgraph_router_open_subscriptions\{component="router"\} 1/);
    unsubscribe();
    const request = await aborted;
    expect(request.body).toMatchObject({ model: 'gpt-test-upstream', stream: true });
  });
});
