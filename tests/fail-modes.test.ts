/**
 * Failure modes made explicit: with the stack's Redis gone, a rate limit lets calls through
 * (`router.rateLimitFailMode: open`, the default) or refuses them with a coded 503 (`closed`), and
 * every such decision is counted in `modelgraph_router_degraded_decisions_total`.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { startRedisServer, type TestRedisServer } from './support/redis-server.ts';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let redis: TestRedisServer | undefined;
let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  await redis?.stop();
  stack = undefined;
  redis = undefined;
});

const CHAT = 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "limited"}]}) { content } }';

async function stackWithout(failMode: 'open' | 'closed') {
  redis = await startRedisServer();
  stack = await startTestStack({
    redis: { url: redis.url, keyPrefix: `mg-test:${randomUUID()}:` },
    router: { port: 0, shutdownGraceMs: 2_000, rateLimitFailMode: failMode, rateLimits: { 'Mutation.chat': { max: 1000, window: '1m' } } },
  });
  // Served while Redis answers, so the router holds the key; then Redis goes.
  expect((await postGraphQL(stack.url, CHAT)).body.data).toMatchObject({ chat: { content: 'limited' } });
  await redis.kill();
  return stack;
}

const degraded = async (url: string, decision: string) => {
  const metrics = await (await fetch(url.replace('/graphql', '/metrics'))).text();
  return Number(
    new RegExp(`modelgraph_router_degraded_decisions_total\\{limit="rate",decision="${decision}"[^}]*\\} (\\d+)`).exec(metrics)?.[1] ?? 0,
  );
};

describe('a rate limit without Redis', () => {
  it('lets calls through when it fails open, and counts each one', async () => {
    const open = await stackWithout('open');
    for (let index = 0; index < 3; index++) {
      expect((await postGraphQL(open.url, CHAT)).body.data).toMatchObject({ chat: { content: 'limited' } });
    }
    expect(await degraded(open.url, 'allowed')).toBe(3);
  });

  it('refuses calls with a coded 503 and Retry-After when it fails closed, and counts each one', async () => {
    const closed = await stackWithout('closed');
    const refused = await postGraphQL(closed.url, CHAT);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'SERVICE_UNAVAILABLE', field: 'Mutation.chat' });
    expect(await degraded(closed.url, 'refused')).toBe(1);
  });
});

describe('a concurrency limit without Redis', () => {
  it.each([
    ['open', 'allowed'],
    ['closed', 'refused'],
  ] as const)('decides by router.concurrencyFailMode (%s), and counts each decision', async (failMode, decision) => {
    redis = await startRedisServer();
    stack = await startTestStack({
      redis: { url: redis.url, keyPrefix: `mg-test:${randomUUID()}:` },
      router: { port: 0, shutdownGraceMs: 2_000, concurrencyFailMode: failMode },
    });
    const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      'mutation { createApiKey(input: {name: "one", scopes: [CHAT_INVOKE], limits: {maxConcurrentRequests: 5}}) { secret } }',
    );
    const key = { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    // Served while Redis answers (the key is cached from then on); then Redis goes.
    expect((await postGraphQL(stack.url, CHAT, undefined, key)).body.data).toMatchObject({ chat: { content: 'limited' } });
    await redis.kill();
    const { status, body: answer } = await postGraphQL(stack.url, CHAT, undefined, key);
    if (failMode === 'open') expect(answer.data).toMatchObject({ chat: { content: 'limited' } });
    else {
      expect(status).toBe(503);
      expect(answer.errors?.[0]?.extensions).toMatchObject({ code: 'SERVICE_UNAVAILABLE', limit: 'maxConcurrentRequests' });
    }
    const metrics = await (await fetch(stack.url.replace('/graphql', '/metrics'))).text();
    expect(metrics).toMatch(
      new RegExp(`modelgraph_router_degraded_decisions_total\\{limit="concurrency",decision="${decision}"[^}]*\\} 1`),
    );
  });
});

describe('a credential the router has not cached, without Redis', () => {
  it('is neither let in nor called bad: a coded 503 that says when to retry, over GraphQL and REST', async () => {
    const down = await stackWithout('open');
    // A key the router never looked up: only the store, gone with Redis, could say what it is.
    const stranger = { authorization: `Bearer mg_${randomUUID().slice(0, 8)}_${'x'.repeat(43)}` };
    const refused = await postGraphQL(down.url, CHAT, undefined, stranger);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'SERVICE_UNAVAILABLE', retryAfterMs: 1_000 });
    const rest = await fetch(down.url.replace(/\/graphql$/, '/v1/models'), { headers: stranger });
    expect(rest.status).toBe(503);
    expect(((await rest.json()) as { error: { code: string } }).error.code).toBe('SERVICE_UNAVAILABLE');
  });
});
