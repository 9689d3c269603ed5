/**
 * A key/value cache of whole responses with a time to live: Redis when configured (shared by every
 * replica), else in process memory (one laptop process). Both implement one interface and pass
 * one contract suite (response-cache.test.ts).
 */
import type { RedisClient } from './client.ts';
import { responseCacheKey } from './keys.ts';

/** Entries are named by `cacheEntryNames` (platform/redis/keys.ts). */
export interface ResponseCache {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string, ttlMs: number): Promise<void>;
  close(): Promise<void>;
}

export class RedisResponseCache implements ResponseCache {
  constructor(
    private readonly redis: RedisClient,
    /** The deployment's key prefix, so deployments and tests can share one Redis. */
    private readonly prefix: string,
  ) {}

  async get(key: string): Promise<string | undefined> {
    return (await this.redis.get(responseCacheKey(this.prefix, key))) ?? undefined;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.redis.set(responseCacheKey(this.prefix, key), value, 'PX', ttlMs);
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}

/** Bounded in-memory cache: expired entries are dropped on read; the oldest go first when full. */
export class MemoryResponseCache implements ResponseCache {
  readonly #entries = new Map<string, { value: string; expiresAt: number }>();

  constructor(
    private readonly maxEntries = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  async get(key: string): Promise<string | undefined> {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    this.#entries.delete(key);
    this.#entries.set(key, { value, expiresAt: this.now() + ttlMs });
    while (this.#entries.size > this.maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
  }

  async close(): Promise<void> {
    this.#entries.clear();
  }
}
