/**
 * The meter's contract, the same for one Redis, a Redis Cluster (the run's shared one) and
 * memory: reservations are all or nothing across a call's buckets, never overshoot under
 * concurrency, and settle to what was used.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';
import { meterKeys } from '../redis/keys.ts';
import { type Bucket, MemoryMeter, type Meter, RedisMeter } from './meter.ts';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const cluster = await connectSharedCluster();
afterAll(() => {
  redis.disconnect();
  cluster.disconnect();
});

const implementations: [string, () => Meter][] = [
  ['Redis', () => new RedisMeter(redis)],
  ['Redis Cluster', () => new RedisMeter(cluster)],
  ['memory', () => new MemoryMeter()],
];

/** A key's and its tenant's tokens-per-minute buckets, as one call reserves them (one `{meter}` slot). */
function buckets(limits: { key: number; tenant: number }, amount: number): Bucket[] {
  const keys = meterKeys(`mg-test:${randomUUID()}:`);
  const resetAt = Date.now() + 60_000;
  return [
    { name: 'tokensPerMinute:key', key: keys.tokensPerMinute('key', 'k1', '1'), limit: limits.key, amount, resetAt },
    { name: 'tokensPerMinute:tenant', key: keys.tokensPerMinute('tenant', 'acme', '1'), limit: limits.tenant, amount, resetAt },
  ];
}
const withAmount = (of: Bucket[], amount: number) => of.map((bucket) => ({ ...bucket, amount }));

describe.each(implementations)('%s meter', (_name, create) => {
  it('reserves in every bucket of a call, or in none when one has no room, naming it', async () => {
    const meter = create();
    const call = buckets({ key: 100, tenant: 50 }, 30);
    expect(await meter.reserve(call)).toEqual({ ok: true, buckets: call });
    const refused = await meter.reserve(call);
    expect(refused).toEqual({ ok: false, bucket: call[1], used: 30 });
    // Nothing of the refused call was kept, in the bucket that had room either.
    expect(await meter.used(call.map((bucket) => bucket.key))).toEqual([30, 30]);
  });

  it('admits exactly as many of 40 concurrent reservations as fit', async () => {
    const meter = create();
    const call = buckets({ key: 1_000, tenant: 250 }, 10);
    const outcomes = await Promise.all(Array.from({ length: 40 }, () => meter.reserve(call)));
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(25);
    expect(await meter.used(call.map((bucket) => bucket.key))).toEqual([250, 250]);
  });

  it('settles a reservation to what the call used, refunding the rest (or all of it)', async () => {
    const meter = create();
    const call = buckets({ key: 100, tenant: 100 }, 60);
    await meter.reserve(call);
    await meter.settle(call, (bucket) => (bucket.name === 'tokensPerMinute:key' ? 25 : 0));
    expect(await meter.used(call.map((bucket) => bucket.key))).toEqual([25, 0]);
    expect((await meter.reserve(withAmount(call, 75))).ok).toBe(true);
    expect(await meter.used(call.map((bucket) => bucket.key))).toEqual([100, 75]);
  });

  it('reads nothing for a bucket never used', async () => {
    expect(await create().used([meterKeys(`mg-test:${randomUUID()}:`).usd('tenant', 'acme', '2026-12-04')])).toEqual([0]);
  });
});
