import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';
import { MemoryResponseCache, RedisResponseCache, type ResponseCache } from './response-cache.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
const cluster = await connectSharedCluster();
afterAll(() => {
  redis.disconnect();
  cluster.disconnect();
});

let clock = 1_000_000;
const implementations: [string, () => ResponseCache][] = [
  ['Redis', () => new RedisResponseCache(redis, `mg-test:${randomUUID()}:`)],
  ['Redis Cluster', () => new RedisResponseCache(cluster, `mg-test:${randomUUID()}:`)],
  ['memory', () => new MemoryResponseCache(3, () => clock)],
];

describe.each(implementations)('%s response cache', (_name, create) => {
  it('returns what was stored and nothing for other keys', async () => {
    const cache = create();
    await cache.set('a', '{"x":1}', 60_000);
    expect(await cache.get('a')).toBe('{"x":1}');
    expect(await cache.get('b')).toBeUndefined();
  });

  it('replaces a value stored again under the same key', async () => {
    const cache = create();
    await cache.set('a', 'one', 60_000);
    await cache.set('a', 'two', 60_000);
    expect(await cache.get('a')).toBe('two');
  });
});

describe('response cache expiry', () => {
  it('sets the time to live in Redis', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    await new RedisResponseCache(redis, prefix).set('k', 'v', 30_000);
    const ttl = await redis.pttl(`${prefix}k`);
    expect(ttl).toBeGreaterThan(25_000);
    expect(ttl).toBeLessThanOrEqual(30_000);
  });

  it('forgets expired entries in memory, and the oldest when full', async () => {
    const cache = new MemoryResponseCache(2, () => clock);
    await cache.set('old', '1', 1_000);
    clock += 1_001;
    expect(await cache.get('old')).toBeUndefined();
    await cache.set('a', '1', 60_000);
    await cache.set('b', '2', 60_000);
    await cache.set('c', '3', 60_000);
    expect(await cache.get('a')).toBeUndefined();
    expect(await cache.get('c')).toBe('3');
  });
});
