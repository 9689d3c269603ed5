/**
 * Concurrency limits across replicas: how many operations a key or a tenant has running at once.
 * Each running operation holds a lease — a member of the holder's sorted set, scored by when it
 * expires — taken atomically only while fewer than `max` unexpired leases exist, dropped when the
 * operation ends, and renewed while a long stream runs. A replica that crashes leaves leases that
 * simply expire, so a limit is never held forever by operations nobody serves.
 */
import type { RedisClient } from '../platform/redis/client.ts';
import { luaScript } from '../platform/redis/scripts.ts';

export interface ConcurrencyLimiter {
  /** True (and the lease held until `ttlMs` from now) when fewer than `max` leases were held. */
  acquire(key: string, lease: string, max: number, ttlMs: number): Promise<boolean>;
  /** Extends a lease that is still held. */
  renew(key: string, lease: string, ttlMs: number): Promise<void>;
  release(key: string, lease: string): Promise<void>;
}

/**
 * KEYS[1] the holder's leases; ARGV: lease, max, now (ms), ttl (ms). Expired leases are dropped
 * first; the set itself expires with its last lease.
 */
const ACQUIRE = luaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`);

/** KEYS[1] the holder's leases; ARGV: lease, now (ms), ttl (ms). Only a lease still held is renewed. */
const RENEW = luaScript(`
if redis.call('ZADD', KEYS[1], 'XX', 'CH', tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
`);

export class RedisConcurrencyLimiter implements ConcurrencyLimiter {
  constructor(
    private readonly redis: RedisClient,
    private readonly now: () => number = Date.now,
  ) {}

  async acquire(key: string, lease: string, max: number, ttlMs: number): Promise<boolean> {
    return (await ACQUIRE.run(this.redis, 1, key, lease, max, this.now(), ttlMs)) === 1;
  }

  async renew(key: string, lease: string, ttlMs: number): Promise<void> {
    await RENEW.run(this.redis, 1, key, lease, this.now(), ttlMs);
  }

  async release(key: string, lease: string): Promise<void> {
    await this.redis.zrem(key, lease);
  }
}

/** The same, in this process (no Redis): leases by holder, with their expiry. */
export class MemoryConcurrencyLimiter implements ConcurrencyLimiter {
  readonly #leases = new Map<string, Map<string, number>>();

  constructor(private readonly now: () => number = Date.now) {}

  #held(key: string): Map<string, number> {
    let leases = this.#leases.get(key);
    if (!leases) {
      leases = new Map();
      this.#leases.set(key, leases);
    }
    const now = this.now();
    for (const [lease, expiresAt] of leases) if (expiresAt <= now) leases.delete(lease);
    return leases;
  }

  async acquire(key: string, lease: string, max: number, ttlMs: number): Promise<boolean> {
    const leases = this.#held(key);
    if (leases.size >= max) return false;
    leases.set(lease, this.now() + ttlMs);
    return true;
  }

  async renew(key: string, lease: string, ttlMs: number): Promise<void> {
    const leases = this.#held(key);
    if (leases.has(lease)) leases.set(lease, this.now() + ttlMs);
  }

  async release(key: string, lease: string): Promise<void> {
    const leases = this.#leases.get(key);
    leases?.delete(lease);
    if (leases?.size === 0) this.#leases.delete(key);
  }
}
