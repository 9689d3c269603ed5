import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectSharedCluster } from '../tests/support/shared-redis-cluster.ts';
import { MemoryConcurrencyLimiter, RedisConcurrencyLimiter, type ConcurrencyLimiter } from './concurrency-limiter.ts';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const cluster = await connectSharedCluster();
afterAll(() => {
  redis.disconnect();
  cluster.disconnect();
});

let clock = 1_000_000;
const limiters: [string, () => { limiter: ConcurrencyLimiter; wait: (ms: number) => Promise<void> }][] = [
  [
    'memory',
    () => ({
      limiter: new MemoryConcurrencyLimiter(() => clock),
      wait: async (ms) => {
        clock += ms;
      },
    }),
  ],
  ...[redis, cluster].map((client, i): [string, () => { limiter: ConcurrencyLimiter; wait: (ms: number) => Promise<void> }] => [
    i === 0 ? 'Redis' : 'Redis Cluster',
    () => ({
      limiter: new RedisConcurrencyLimiter(client, () => clock),
      wait: async (ms) => {
        clock += ms;
      },
    }),
  ]),
];

describe.each(limiters)('%s concurrency limiter', (_name, make) => {
  it('holds up to max leases, frees one on release, and lets a lease expire unless it is renewed', async () => {
    const { limiter, wait } = make();
    const key = `mg-test:${randomUUID()}:cc:key:k1`;
    expect(await limiter.acquire(key, 'a', 2, 20_000)).toBe(true);
    expect(await limiter.acquire(key, 'b', 2, 20_000)).toBe(true);
    expect(await limiter.acquire(key, 'c', 2, 20_000)).toBe(false);
    await limiter.release(key, 'a');
    expect(await limiter.acquire(key, 'c', 2, 20_000)).toBe(true);
    // b is renewed, c is not: after its lease, c's place is free again, b's is not.
    await wait(12_000);
    await limiter.renew(key, 'b', 20_000);
    await wait(12_000);
    expect(await limiter.acquire(key, 'd', 2, 20_000)).toBe(true);
    expect(await limiter.acquire(key, 'e', 2, 20_000)).toBe(false);
  });
});
