/**
 * `@rateLimit` through the router: refused before any subgraph is called, per key, tenant or
 * address, counted atomically in Redis across concurrent calls, with HTTP 429 and RateLimit headers.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CHAT = 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "counted"}]}) { content } }';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** How many operations the inference subgraph has served (its log lines). */
const servedByInference = (target: TestStack) =>
  target.logs.filter((line) => line.subgraph === 'inference' && line.msg === 'operation completed').length;

async function keyIn(target: TestStack, tenant: string, scopes = '[CHAT_INVOKE, MODELS_READ]') {
  await postGraphQL(target.url, `mutation { createTenant(input: {id: "${tenant}", name: "${tenant}"}) { tenant { id } } }`);
  const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
    target.url,
    `mutation { createApiKey(input: {tenantId: "${tenant}", name: "k", scopes: ${scopes}}) { secret } }`,
  );
  return { authorization: `Bearer ${body.data!.createApiKey.secret}` };
}

describe("a key's requestsPerMinute", () => {
  it('counts every operation and REST call of the key, refusing the one over with 429 RATE_LIMITED before any subgraph', async () => {
    stack = await startTestStack({ redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` } });
    await postGraphQL(stack.url, 'mutation { createTenant(input: {id: "rpm", name: "rpm"}) { tenant { id } } }');
    const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      'mutation { createApiKey(input: {tenantId: "rpm", name: "k", scopes: [CHAT_INVOKE, MODELS_READ], limits: {requestsPerMinute: 3}}) { secret } }',
    );
    const key = { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    // Two GraphQL operations of any kind, and a REST call: three requests.
    expect((await postGraphQL(stack.url, '{ models { id } }', undefined, key)).body.errors).toBeUndefined();
    expect((await postGraphQL(stack.url, CHAT, undefined, key)).body.data).toMatchObject({ chat: { content: 'counted' } });
    const rest = await fetch(stack.url.replace('/graphql', '/v1/models'), { headers: key });
    expect(rest.status).toBe(200);
    const before = servedByInference(stack);
    const refused = await postGraphQL(stack.url, CHAT, undefined, key);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', field: 'ApiKey.requestsPerMinute', limit: 3 });
    const restRefused = await fetch(stack.url.replace('/graphql', '/v1/models'), { headers: key });
    expect(restRefused.status).toBe(429);
    expect(servedByInference(stack)).toBe(before);
    // Another key is not affected.
    expect((await postGraphQL(stack.url, CHAT)).body.data).toMatchObject({ chat: { content: 'counted' } });
  });
});

describe('@rateLimit', () => {
  it('refuses the call over the limit with 429 RATE_LIMITED before any subgraph is called, per key', async () => {
    stack = await startTestStack({ router: { port: 0, rateLimits: { 'Mutation.chat': { max: 3, window: '1m' } } } });
    const alice = await keyIn(stack, 'acme');
    const remaining: (string | null)[] = [];
    for (let call = 0; call < 3; call += 1) {
      const { status, headers, body } = await postGraphQL<{ chat: { content: string } }>(stack.url, CHAT, undefined, alice);
      expect(status).toBe(200);
      expect(body.data?.chat.content).toBe('counted');
      remaining.push(headers.get('ratelimit-remaining'));
    }
    expect(remaining).toEqual(['2', '1', '0']);
    const served = servedByInference(stack);
    const refused = await postGraphQL(stack.url, CHAT, undefined, alice);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(19);
    expect(refused.headers.get('ratelimit-limit')).toBe('3');
    expect(refused.body.data ?? null).toBeNull();
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({
      code: 'RATE_LIMITED',
      field: 'Mutation.chat',
      per: 'API_KEY',
      limit: 3,
      remaining: 0,
    });
    expect(refused.body.errors?.[0]?.extensions?.retryAfterMs).toBeGreaterThan(19_000);
    expect(servedByInference(stack)).toBe(served);
    const metrics = await (await fetch(stack.url.replace('/graphql', '/metrics'))).text();
    expect(metrics).toMatch(/modelgraph_router_rejections_total\{reason="rate_limited",field="Mutation.chat"[^}]*\} 1/);
    // Another key has its own allowance; fields without a limit are not affected.
    expect((await postGraphQL(stack.url, CHAT)).status).toBe(200);
    expect((await postGraphQL(stack.url, '{ models { id } }', undefined, alice)).status).toBe(200);
  });

  it('counts every alias of a limited field, and counts per tenant when told to', async () => {
    stack = await startTestStack({ router: { port: 0, rateLimits: { 'Mutation.chat': { max: 2, window: '1h', per: 'TENANT' } } } });
    const first = await keyIn(stack, 'acme');
    const { body } = await postGraphQL(
      stack.url,
      'mutation { a: chat(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { content } b: chat(input: {model: "echo", messages: [{role: USER, content: "y"}]}) { content } }',
      undefined,
      first,
    );
    expect(body.errors).toBeUndefined();
    // A second key of the same tenant finds the tenant's allowance spent.
    const { body: createdBody } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      'mutation { createApiKey(input: {tenantId: "acme", name: "k2", scopes: [CHAT_INVOKE]}) { secret } }',
    );
    const refused = await postGraphQL(stack.url, CHAT, undefined, { authorization: `Bearer ${createdBody.data!.createApiKey.secret}` });
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED', per: 'TENANT' });
  });

  it('limits subscriptions too, over WebSockets', async () => {
    stack = await startTestStack({ router: { port: 0, rateLimits: { 'Subscription.chatStream': { max: 1, window: '1m' } } } });
    const stream = { query: 'subscription { chatStream(input: {model: "echo", messages: [{role: USER, content: "hi"}]}) { __typename } }' };
    const client = stack.ws();
    const first = await collectSubscription<{ chatStream: { __typename: string } }>(client, stream);
    expect(first.results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
    const second = await collectSubscription(client, stream);
    const errors = second.results
      .flatMap((result) => result.errors ?? [])
      .concat(((second.error as unknown[] | undefined) ?? []) as never[]);
    expect(JSON.stringify(errors)).toContain('RATE_LIMITED');
  });

  it('lets exactly the limit through when 30 calls race, counted atomically in Redis', async () => {
    stack = await startTestStack({
      redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` },
      router: { port: 0, rateLimits: { 'Mutation.chat': { max: 7, window: '1h' } } },
    });
    const answers = await Promise.all(Array.from({ length: 30 }, () => postGraphQL(stack!.url, CHAT)));
    expect(answers.filter((answer) => answer.status === 200)).toHaveLength(7);
    expect(answers.filter((answer) => answer.status === 429)).toHaveLength(23);
  });
});
