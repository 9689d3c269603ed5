/**
 * Admission control through the whole stack: past `router.admission.maxOperations` (and a short
 * queue) an operation is refused at once with OVERLOADED, 503 and Retry-After — over GraphQL and
 * the REST doors — and past `maxStreams` a subscription is; slots come back when operations end,
 * also when their caller leaves.
 */
import { randomUUID } from 'node:crypto';
import { print } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatStreamDocument, type ChatStreamSubscription } from '../codegen/operations.ts';
import { collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const chat = (model: string, signal?: AbortSignal) =>
  fetch(stack!.url, {
    method: 'POST',
    headers: { authorization: `Bearer ${stack!.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ query: `mutation { chat(input: {model: "${model}", messages: [{role: USER, content: "in"}]}) { content } }` }),
    ...(signal && { signal }),
  });

describe('admission control', () => {
  it('refuses an operation past maxOperations and its queue with 503 OVERLOADED, and admits again once slots free', async () => {
    stack = await startTestStack({
      router: { port: 0, shutdownGraceMs: 2_000, admission: { maxOperations: 2, maxQueued: 1, queueTimeoutMs: 200 } },
    });
    // Two chats that hang upstream hold both slots.
    stack.emulator.script({ kind: 'chat', content: 'never', stallBody: true }, { kind: 'chat', content: 'never', stallBody: true });
    const leaving = new AbortController();
    const holding = [chat('gpt-test', leaving.signal), chat('gpt-test', leaving.signal)].map((call) => call.catch(() => undefined));
    await stack.emulator.nextRequest();
    await stack.emulator.nextRequest();
    // The third waits its 200 ms in the queue, then is refused; REST is refused the same way.
    const refused = await chat('echo');
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { errors: { extensions: Record<string, unknown> }[] };
    expect(body.errors[0]!.extensions).toMatchObject({ code: 'OVERLOADED', limit: 'maxOperations', max: 2 });
    const rest = await fetch(stack.url.replace('/graphql', '/v1/models'), { headers: { authorization: `Bearer ${stack.adminKey}` } });
    expect(rest.status).toBe(503);
    expect(((await rest.json()) as { error: { code: string } }).error.code).toBe('OVERLOADED');
    // Their callers leave: the slots come back.
    leaving.abort();
    await Promise.all(holding);
    await expect
      .poll(async () => ((await (await chat('echo')).json()) as { data?: { chat?: { content: string } } }).data?.chat?.content, {
        timeout: 10_000,
        interval: 100,
      })
      .toBe('in');
  });

  it('refuses a subscription past maxStreams, and admits another once the open one ends', async () => {
    stack = await startTestStack({ router: { port: 0, shutdownGraceMs: 2_000, admission: { maxStreams: 1, maxQueued: 0 } } });
    const stream = (content: string) =>
      collectSubscription<ChatStreamSubscription>(stack!.ws(), {
        query: print(ChatStreamDocument),
        variables: { input: { model: 'echo', messages: [{ role: 'USER', content }] } },
      });
    // The first stays open upstream (the emulator stalls it after its first word) until it is stopped.
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    let opened!: () => void;
    const firstWord = new Promise<void>((resolve) => {
      opened = resolve;
    });
    const stop = stack
      .ws()
      .subscribe(
        { query: print(ChatStreamDocument), variables: { input: { model: 'gpt-test', messages: [{ role: 'USER', content: 'x' }] } } },
        { next: () => opened(), error: () => undefined, complete: () => undefined },
      );
    await firstWord;
    const refused = await stream('two');
    const refusal = refused.error ?? refused.results[0]?.errors?.[0];
    expect(refusal).toMatchObject({ extensions: { code: 'OVERLOADED', limit: 'maxStreams', retryAfterMs: 1_000 } });
    // The HTTP layer's status hint is not part of a WebSocket message.
    expect((refusal as { extensions: Record<string, unknown> }).extensions.http).toBeUndefined();
    stop();
    await expect
      .poll(async () => (await stream('three')).results.at(-1)?.data?.chatStream?.__typename, { timeout: 10_000, interval: 100 })
      .toBe('ChatCompleted');
  });
});

describe('concurrency limits per key and per tenant', () => {
  const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

  async function keyWith(tenant: string, limits: Record<string, number>) {
    await postGraphQL(stack!.url, `mutation { createTenant(input: {id: "${tenant}", name: "${tenant}"}) { tenant { id } } }`);
    const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack!.url,
      'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }',
      { input: { tenantId: tenant, name: 'k', scopes: ['CHAT_INVOKE', 'MODELS_READ'], limits } },
    );
    return body.data!.createApiKey.secret;
  }

  /** A stream held open upstream until `release` (the emulator stalls it after its first word). */
  async function openStream(secret: string) {
    stack!.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const client = stack!.ws({ authorization: `Bearer ${secret}` });
    let firstWord!: () => void;
    const started = new Promise<void>((resolve) => {
      firstWord = resolve;
    });
    const unsubscribe = client.subscribe(
      { query: print(ChatStreamDocument), variables: { input: { model: 'gpt-test', messages: [{ role: 'USER', content: 'x' }] } } },
      { next: () => firstWord(), error: () => undefined, complete: () => undefined },
    );
    await started;
    return unsubscribe;
  }

  const chatAs = (secret: string) =>
    postGraphQL<{ chat: { content: string } }>(
      stack!.url,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "in"}]}) { content } }',
      undefined,
      { authorization: `Bearer ${secret}` },
    );

  it('refuses a key its next model call while maxConcurrentRequests are running, across doors, until one ends', async () => {
    stack = await startTestStack({ redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` } });
    const secret = await keyWith('busy', { maxConcurrentRequests: 1 });
    const stop = await openStream(secret);
    const refused = await chatAs(secret);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({
      code: 'RATE_LIMITED',
      limit: 'maxConcurrentRequests',
      scope: 'key',
      max: 1,
    });
    const rest = await fetch(stack.url.replace('/graphql', '/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo', messages: [{ role: 'user', content: 'in' }] }),
    });
    expect(rest.status).toBe(429);
    // What calls no model is not counted, and other keys are not held back.
    expect((await fetch(stack.url.replace('/graphql', '/v1/models'), { headers: { authorization: `Bearer ${secret}` } })).status).toBe(200);
    expect((await chatAs(stack.adminKey)).body.data?.chat.content).toBe('in');
    stop();
    await expect.poll(async () => (await chatAs(secret)).body.data?.chat.content).toBe('in');
  });

  it("counts a tenant's keys together against metering.tenants.<id>.maxConcurrentRequests", async () => {
    stack = await startTestStack({
      redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` },
      metering: { tenants: { crowd: { maxConcurrentRequests: 1 } } },
    });
    const first = await keyWith('crowd', {});
    const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      'mutation { createApiKey(input: {tenantId: "crowd", name: "second", scopes: [CHAT_INVOKE]}) { secret } }',
    );
    const stop = await openStream(first);
    const refused = await chatAs(body.data!.createApiKey.secret);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', limit: 'maxConcurrentRequests', scope: 'tenant' });
    stop();
    await expect.poll(async () => (await chatAs(body.data!.createApiKey.secret)).body.data?.chat.content).toBe('in');
  });
});
