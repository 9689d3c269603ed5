import { afterEach, describe, expect, it } from 'vitest';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const readyz = async (url: string) => {
  const response = await fetch(url.replace('/graphql', '/readyz'));
  return { status: response.status, body: await response.json() };
};

describe('readiness with Redis', () => {
  it('is ready when the configured Redis answers', async () => {
    stack = await startTestStack({ redis: { url: REDIS_URL } });
    expect(await readyz(stack.url)).toEqual({ status: 200, body: { status: 'ready' } });
  });

  it('is not ready while the configured Redis is unreachable, and still serves GraphQL', async () => {
    stack = await startTestStack({ redis: { url: 'redis://127.0.0.1:1' } });
    expect(await readyz(stack.url)).toEqual({ status: 503, body: { status: 'not ready' } });
    const { body } = await postGraphQL<{ models: { id: string }[] }>(stack.url, '{ models { id } }');
    expect(body.data?.models.length).toBeGreaterThan(0);
    expect(await (await fetch(stack.url.replace('/graphql', '/healthz'))).json()).toEqual({ status: 'ok' });
  });

  it('needs no Redis when none is configured', async () => {
    stack = await startTestStack();
    expect(stack.config.redis.url).toBeUndefined();
    expect((await readyz(stack.url)).status).toBe(200);
  });
});
