/** The response cache through the whole stack, in Redis and in memory. */
import { randomUUID } from 'node:crypto';
import { print } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatDocument, ChatStreamDocument, type ChatMutation } from '../codegen/operations.ts';
import { collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const chat = (input: Record<string, unknown>) =>
  postGraphQL<ChatMutation>(stack!.url, print(ChatDocument), {
    input: { model: 'gpt-test', messages: [{ role: 'USER', content: 'cache me' }], ...input },
  });
const upstreamCalls = () => stack!.emulator.requests.length;

describe.each([
  ['Redis', () => ({ redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` } })],
  ['memory', () => ({})],
])('response cache in %s', (_name, overrides) => {
  it('answers a repeated deterministic chat from the cache, marked cached, without calling the provider', async () => {
    stack = await startTestStack(overrides());
    const first = await chat({ temperature: 0 });
    const second = await chat({ temperature: 0 });
    expect(first.body.data?.chat).toMatchObject({ cached: false, servedBy: { attempts: 1 } });
    expect(second.body.data?.chat).toMatchObject({
      cached: true,
      content: first.body.data?.chat.content,
      usage: first.body.data?.chat.usage,
      servedBy: { attempts: 0, version: '2024-08-06' },
    });
    expect(upstreamCalls()).toBe(1);
  });

  it('does not cache sampled chats unless asked to, and never when told to bypass', async () => {
    stack = await startTestStack(overrides());
    await chat({ temperature: 0.7 });
    expect((await chat({ temperature: 0.7 })).body.data?.chat.cached).toBe(false);
    expect(upstreamCalls()).toBe(2);
    await chat({ temperature: 0.7, cache: { policy: 'ALWAYS' } });
    expect((await chat({ temperature: 0.7, cache: { policy: 'ALWAYS' } })).body.data?.chat.cached).toBe(true);
    expect(upstreamCalls()).toBe(3);
    expect((await chat({ temperature: 0, cache: { policy: 'BYPASS' } })).body.data?.chat.cached).toBe(false);
    expect(upstreamCalls()).toBe(4);
  });

  it('keys on the model version and the whole request', async () => {
    stack = await startTestStack(overrides());
    await chat({ temperature: 0 });
    expect((await chat({ temperature: 0, model: 'backup' })).body.data?.chat.cached).toBe(false);
    expect((await chat({ temperature: 0, maxTokens: 10 })).body.data?.chat.cached).toBe(false);
    expect(upstreamCalls()).toBe(3);
  });

  it('never caches streams', async () => {
    stack = await startTestStack(overrides());
    for (let index = 0; index < 2; index++) {
      await collectSubscription(stack.ws(), {
        query: print(ChatStreamDocument),
        variables: { input: { model: 'gpt-test', temperature: 0, messages: [{ role: 'USER', content: 'cache me' }] } },
      });
    }
    expect(upstreamCalls()).toBe(2);
  });

  it('refuses a cache ttl out of range with BAD_USER_INPUT', async () => {
    stack = await startTestStack(overrides());
    for (const temperature of [0, 0.7]) {
      const { body } = await chat({ temperature, cache: { policy: 'AUTO', ttlSeconds: 0 } });
      expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'cache.ttlSeconds' });
    }
  });
});
