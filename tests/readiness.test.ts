import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { newKeySecret } from '../platform/access/access-store.ts';
import { ConfigError } from '../platform/config.ts';
import { createLogger } from '../platform/logger.ts';
import { startStack } from '../stack.ts';
import { postGraphQL, startTestStack, testConfig, type TestStack } from './support/stack.ts';
import { startTcpProxy } from './support/tcp-proxy.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

let stack: TestStack | undefined;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
  await Promise.all(cleanups.splice(0).map((cleanup) => cleanup()));
});

const readyz = async (url: string) => {
  const response = await fetch(url.replace('/graphql', '/readyz'));
  return { status: response.status, body: await response.json() };
};

/** A Redis config of its own per test, so tests never see each other's keys. */
const redisAt = (url: string) => ({ redis: { url, keyPrefix: `mg-test:${randomUUID()}:` } });

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** A proxy to Redis that a test can cut as a network fault would (new connections refused too). */
async function startRedisProxy(redisUrl: string) {
  const upstream = new URL(redisUrl);
  const proxy = await startTcpProxy(Number(upstream.port || 6379), upstream.hostname);
  const proxied = new URL(redisUrl);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(proxy.port);
  return { url: proxied.toString(), cut: () => proxy.close(), connections: proxy.connections };
}

describe('readiness with Redis', () => {
  it('is ready when the configured Redis answers', async () => {
    stack = await startTestStack(redisAt(REDIS_URL));
    expect(await readyz(stack.url)).toEqual({ status: 200, body: { status: 'ready' } });
  });

  it('refuses to start while the configured Redis is unreachable, naming its address and no secret', async () => {
    const port = await closedPort();
    const password = `redis-password-${randomUUID()}`;
    const bootstrapKey = newKeySecret('unreachable').secret;
    const logs: string[] = [];
    const log = createLogger({
      level: 'info',
      name: 'test',
      destination: new Writable({
        write(chunk: Buffer, _encoding, done) {
          logs.push(chunk.toString('utf8'));
          done();
        },
      }),
    });
    // Never contacted: the stack must stop before any provider is used.
    const config = testConfig('http://127.0.0.1:9/v1', redisAt(`redis://:${password}@127.0.0.1:${port}`));
    const started = startStack(config, log, { kind: 'all' }, { MODELGRAPH_BOOTSTRAP_KEY: bootstrapKey });
    // If it started after all, stop it again so the failure below is the only effect.
    cleanups.push(() =>
      started.then(
        (running) => running.stop(Date.now()),
        () => undefined,
      ),
    );
    const error = await started.then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toContain(`127.0.0.1:${port}`);
    for (const secret of [password, bootstrapKey]) {
      expect(message).not.toContain(secret);
      expect(logs.join('')).not.toContain(secret);
    }
  });

  it('is not ready once Redis becomes unreachable, stays alive, and still serves a key it already checked', async () => {
    const proxy = await startRedisProxy(REDIS_URL);
    cleanups.push(proxy.cut);
    stack = await startTestStack(redisAt(proxy.url));
    expect(proxy.connections()).toBeGreaterThan(0);
    expect(await readyz(stack.url)).toEqual({ status: 200, body: { status: 'ready' } });
    // The first request looks the admin key up in Redis; the router caches it.
    const before = await postGraphQL<{ models: { id: string }[] }>(stack.url, '{ models { id } }');
    expect(before.body.data?.models.length).toBeGreaterThan(0);

    await proxy.cut();

    expect(await readyz(stack.url)).toEqual({ status: 503, body: { status: 'not ready' } });
    expect(await (await fetch(stack.url.replace('/graphql', '/healthz'))).json()).toEqual({ status: 'ok' });
    const { status, body } = await postGraphQL<{ models: { id: string }[] }>(stack.url, '{ models { id } }');
    expect(body.errors).toBeUndefined();
    expect(status).toBe(200);
    expect(body.data?.models.length).toBeGreaterThan(0);
    // A key the router has not seen cannot be checked without Redis: it is not let in.
    const unknown = await postGraphQL(stack.url, '{ models { id } }', undefined, {
      authorization: `Bearer ${newKeySecret('never-stored').secret}`,
    });
    expect(unknown.status).not.toBe(200);
    expect(unknown.body.data ?? null).toBeNull();
  });

  it('needs no Redis when none is configured', async () => {
    stack = await startTestStack();
    expect(stack.config.redis.url).toBeUndefined();
    expect((await readyz(stack.url)).status).toBe(200);
  });
});
