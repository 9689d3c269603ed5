import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectSharedCluster } from '../tests/support/shared-redis-cluster.ts';
import { MemoryRateLimiter, RedisRateLimiter, parseWindow, type RateLimiter } from './rate-limiter.ts';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const cluster = await connectSharedCluster();
afterAll(() => {
  redis.disconnect();
  cluster.disconnect();
});

let clock = 1_000_000;
const implementations: [string, () => RateLimiter][] = [
  ['Redis', () => new RedisRateLimiter(redis)],
  ['Redis Cluster', () => new RedisRateLimiter(cluster)],
  ['memory', () => new MemoryRateLimiter(() => clock)],
];
const key = () => `mg-test:${randomUUID()}:rl`;

describe.each(implementations)('%s rate limiter (GCRA)', (_name, create) => {
  it('allows a burst of max calls, counting down, then refuses with the time to the next one', async () => {
    const limiter = create();
    const id = key();
    const limit = { max: 3, windowMs: 60_000 };
    const remaining = [];
    for (let call = 0; call < 3; call += 1) {
      const decision = await limiter.take(id, limit);
      expect(decision.allowed).toBe(true);
      remaining.push(decision.remaining);
    }
    expect(remaining).toEqual([2, 1, 0]);
    const refused = await limiter.take(id, limit);
    expect(refused).toMatchObject({ allowed: false, limit: 3, remaining: 0 });
    // One call is emitted every window / max = 20 s.
    expect(refused.retryAfterMs).toBeGreaterThan(19_000);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(20_000);
  });

  it('keeps keys apart', async () => {
    const limiter = create();
    const limit = { max: 1, windowMs: 60_000 };
    expect((await limiter.take(key(), limit)).allowed).toBe(true);
    expect((await limiter.take(key(), limit)).allowed).toBe(true);
  });

  it('takes a limit far above any traffic without failing', async () => {
    const decision = await create().take(key(), { max: 1e12, windowMs: 1_000 });
    expect(decision.allowed).toBe(true);
  });

  it('lets exactly max of many concurrent calls through', async () => {
    const limiter = create();
    const id = key();
    const decisions = await Promise.all(Array.from({ length: 50 }, () => limiter.take(id, { max: 10, windowMs: 60_000 })));
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(10);
  });
});

describe('rate limiter refill', () => {
  it('allows one more call per interval as time passes (memory clock)', async () => {
    const limiter = new MemoryRateLimiter(() => clock);
    const id = key();
    const limit = { max: 2, windowMs: 1_000 };
    await limiter.take(id, limit);
    await limiter.take(id, limit);
    expect((await limiter.take(id, limit)).allowed).toBe(false);
    clock += 500;
    expect((await limiter.take(id, limit)).allowed).toBe(true);
    expect((await limiter.take(id, limit)).allowed).toBe(false);
  });

  it('expires the Redis key once the limit is whole again', async () => {
    const id = key();
    await new RedisRateLimiter(redis).take(id, { max: 4, windowMs: 60_000 });
    const ttl = await redis.pttl(id);
    expect(ttl).toBeGreaterThan(10_000);
    expect(ttl).toBeLessThanOrEqual(15_000);
  });

  it('stores the Redis TAT with every digit (an interval of a third of a second stays a third)', async () => {
    const id = key();
    const limiter = new RedisRateLimiter(redis);
    const limit = { max: 3, windowMs: 1_000 };
    await limiter.take(id, limit);
    const first = Number(await redis.get(id));
    await limiter.take(id, limit);
    const second = Number(await redis.get(id));
    expect(second - first).toBeCloseTo(1_000 / 3, 3);
  });

  it.each([
    ['30s', 30_000],
    ['1m', 60_000],
    ['2h', 7_200_000],
    ['500ms', 500],
    ['1d', 86_400_000],
    ['0s', undefined],
    ['1 minute', undefined],
    ['m', undefined],
  ])('reads the window %s', (text, ms) => {
    expect(parseWindow(text)).toBe(ms);
  });
});
