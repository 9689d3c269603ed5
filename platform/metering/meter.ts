/**
 * Token limits and USD budgets, reserve then reconcile. Before a provider is called, the call's
 * worst case (prompt tokens counted with the tokenizer plus the maximum output, and their price) is
 * reserved in every bucket that applies — tokens per minute per key, tenant and model; USD per day
 * and month per tenant and key — in one atomic step that either fits all of them or takes nothing.
 * After the call each bucket is settled to the real usage (a failed call settles to what it
 * delivered, usually nothing). So concurrent calls can never overshoot a limit: the 51st of 50
 * that fit waits for no one and is refused before any provider is called.
 *
 * Buckets are fixed windows (the minute, the UTC day, the UTC month). In Redis the reservation is
 * one Lua script over all buckets (one `{meter}` hash tag, so it works on a cluster); in memory the
 * same arithmetic. Amounts are integers: tokens, or nano-dollars (money.ts).
 */
import { ErrorCode, codedError } from '../errors.ts';
import { ReplyError } from 'ioredis';
import type { RedisClient } from '../redis/client.ts';
import { luaScript } from '../redis/scripts.ts';

export interface Bucket {
  /** Names the bucket for errors: `tokensPerMinute:key`, `usdPerDay:tenant`, ... */
  name: string;
  key: string;
  limit: number;
  amount: number;
  /** When the window ends (epoch ms). */
  resetAt: number;
}

export type Reservation = { ok: true; buckets: Bucket[] } | { ok: false; bucket: Bucket; used: number };

export interface Meter {
  /** Reserves `amount` in every bucket, or nothing when one would go over its limit. */
  reserve(buckets: Bucket[]): Promise<Reservation>;
  /** Moves each reserved bucket from its reserved amount to the real one (0 refunds it). */
  settle(buckets: Bucket[], actual: (bucket: Bucket) => number): Promise<void>;
  /** What each bucket holds now (settled use plus open reservations), 0 for none. */
  used(keys: string[]): Promise<number[]>;
}

export class MemoryMeter implements Meter {
  readonly #used = new Map<string, { value: number; resetAt: number }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  #value(bucket: Bucket): number {
    const entry = this.#used.get(bucket.key);
    return entry && entry.resetAt > this.#now() ? entry.value : 0;
  }

  async reserve(buckets: Bucket[]): Promise<Reservation> {
    for (const bucket of buckets) {
      const used = this.#value(bucket);
      if (used + bucket.amount > bucket.limit) return { ok: false, bucket, used };
    }
    for (const bucket of buckets) this.#used.set(bucket.key, { value: this.#value(bucket) + bucket.amount, resetAt: bucket.resetAt });
    return { ok: true, buckets };
  }

  async settle(buckets: Bucket[], actual: (bucket: Bucket) => number): Promise<void> {
    for (const bucket of buckets) {
      const entry = this.#used.get(bucket.key);
      if (entry) entry.value += actual(bucket) - bucket.amount;
    }
  }

  async used(keys: string[]): Promise<number[]> {
    const now = this.#now();
    return keys.map((key) => {
      const entry = this.#used.get(key);
      return entry && entry.resetAt > now ? entry.value : 0;
    });
  }
}

/** KEYS: buckets. ARGV: per bucket, limit, amount, ttl ms. Returns {0} or {index (1-based), used}. */
const RESERVE = luaScript(`
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  local limit = tonumber(ARGV[(i - 1) * 3 + 1])
  local amount = tonumber(ARGV[(i - 1) * 3 + 2])
  if used + amount > limit then return {i, used} end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[(i - 1) * 3 + 2])
  redis.call('PEXPIRE', key, ARGV[(i - 1) * 3 + 3])
end
return {0}`);

/**
 * KEYS: buckets. ARGV: per bucket, delta, ttl ms. One command for what were two per bucket (the
 * client's cost of a command is most of a settlement's).
 */
const SETTLE = luaScript(`
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[(i - 1) * 2 + 1])
  redis.call('PEXPIRE', key, ARGV[(i - 1) * 2 + 2])
end
return 0`);

/**
 * Limits and budgets fail closed: while Redis does not answer (down, failing over, no master for
 * the slot) a call cannot be checked, so it is refused: SERVICE_UNAVAILABLE with `retryAfterMs`
 * (a field error over GraphQL; 503 with `Retry-After` through the REST doors).
 */
function unchecked(error: unknown): never {
  // Redis answered, with an error that is not about its availability (a script or a key gone
  // wrong): a bug to see, not an outage to wait out.
  if (error instanceof ReplyError && !TRANSIENT.test((error as Error).message)) throw error;
  // Not Redis's own message: it names addresses a caller has no business seeing.
  throw codedError(ErrorCode.SERVICE_UNAVAILABLE, 'token limits and budgets cannot be checked right now; retry shortly', {
    retryAfterMs: 1_000,
  });
}

/** Replies of a Redis that cannot serve for now: loading, failing over, a read-only replica. */
const TRANSIENT = /^(LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|READONLY|BUSY|NOREPLICAS)\b/;

export class RedisMeter implements Meter {
  readonly #redis: RedisClient;

  constructor(redis: RedisClient) {
    this.#redis = redis;
  }

  async reserve(buckets: Bucket[]): Promise<Reservation> {
    if (buckets.length === 0) return { ok: true, buckets };
    const now = Date.now();
    const args = buckets.flatMap((bucket) => [bucket.limit, bucket.amount, Math.max(bucket.resetAt - now, 1_000) + 60_000]);
    const [index, used] = (await RESERVE.run(this.#redis, buckets.length, ...buckets.map((bucket) => bucket.key), ...args).catch(
      unchecked,
    )) as number[];
    return index === 0 ? { ok: true, buckets } : { ok: false, bucket: buckets[index! - 1]!, used: used! };
  }

  async settle(buckets: Bucket[], actual: (bucket: Bucket) => number): Promise<void> {
    const now = Date.now();
    const keys: string[] = [];
    const args: number[] = [];
    for (const bucket of buckets) {
      const delta = actual(bucket) - bucket.amount;
      if (delta === 0) continue;
      keys.push(bucket.key);
      // A call that outlived its window's key must not leave one without an expiry behind.
      args.push(delta, Math.max(bucket.resetAt - now, 1_000) + 60_000);
    }
    if (keys.length > 0) await SETTLE.run(this.#redis, keys.length, ...keys, ...args);
  }

  async used(keys: string[]): Promise<number[]> {
    if (keys.length === 0) return [];
    return (await this.#redis.mget(...keys).catch(unchecked)).map((value) => Number(value ?? 0));
  }
}
