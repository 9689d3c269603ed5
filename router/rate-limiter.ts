/**
 * Rate limiting by GCRA (the generic cell rate algorithm): each key keeps one timestamp, the
 * theoretical arrival time (TAT) of its next allowed call. A limit of `max` calls per `windowMs`
 * emits one call every `windowMs / max`, with a burst of up to `max`. Unlike a fixed window it
 * never lets 2 × max through around a window boundary, and it needs one key and one atomic step.
 *
 * In Redis the step is one Lua script that reads the clock of Redis itself (`TIME`), so replicas
 * whose clocks differ still agree; in memory (one process, no Redis) the same arithmetic runs here.
 * Both pass one contract suite (rate-limiter.test.ts).
 */
import type { RedisClient } from '../platform/redis/client.ts';
import { luaScript } from '../platform/redis/scripts.ts';

export interface RateLimit {
  max: number;
  windowMs: number;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  /** Calls still allowed right now. */
  remaining: number;
  /** Until a refused call would be allowed (0 when allowed). */
  retryAfterMs: number;
  /** Until the limit is whole again (all `max` calls available). */
  resetMs: number;
}

export interface RateLimiter {
  /** Counts one call against `key` if the limit allows it; a refused call is not counted. */
  take(key: string, limit: RateLimit): Promise<RateDecision>;
}

/** The GCRA step on a known TAT: the decision and the TAT to store (undefined when refused). */
function step(tat: number | undefined, now: number, { max, windowMs }: RateLimit): { decision: RateDecision; nextTat?: number } {
  const interval = windowMs / max;
  const base = Math.max(tat ?? now, now);
  const nextTat = base + interval;
  const allowAt = nextTat - windowMs;
  if (now < allowAt) {
    const retryAfterMs = Math.ceil(allowAt - now);
    return { decision: { allowed: false, limit: max, remaining: 0, retryAfterMs, resetMs: Math.ceil(base - now) } };
  }
  const remaining = Math.floor((now + windowMs - nextTat) / interval);
  return { decision: { allowed: true, limit: max, remaining, retryAfterMs: 0, resetMs: Math.ceil(nextTat - now) }, nextTat };
}

export class MemoryRateLimiter implements RateLimiter {
  readonly #tats = new Map<string, number>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  async take(key: string, limit: RateLimit): Promise<RateDecision> {
    const now = this.#now();
    const { decision, nextTat } = step(this.#tats.get(key), now, limit);
    if (nextTat !== undefined) this.#tats.set(key, nextTat);
    // Forget keys whose TAT has passed: they are whole again, as if never seen.
    if (this.#tats.size > 100_000) for (const [each, tat] of this.#tats) if (tat <= now) this.#tats.delete(each);
    return decision;
  }
}

/**
 * KEYS[1]: the TAT key. ARGV: interval ms, window ms. Returns {allowed, remaining, retryAfterMs, resetMs}.
 * The TAT is stored with every digit of its double (Lua's `tostring` keeps 14, which at today's
 * epoch in ms leaves one decimal and lets a limit of millions per minute through unchecked), and
 * its expiry is at least 1 ms (an interval below the clock's resolution would ask for `PX 0`).
 */
const GCRA = luaScript(`
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local base = math.max(tat, now)
local next_tat = base + interval
local allow_at = next_tat - window
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(base - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', next_tat), 'PX', math.max(1, math.ceil(next_tat - now)))
return {1, math.floor((now + window - next_tat) / interval), 0, math.ceil(next_tat - now)}`);

/** Keys are whole Redis keys (built with `rateLimitKey`, prefix included). */
export class RedisRateLimiter implements RateLimiter {
  readonly #redis: RedisClient;

  constructor(redis: RedisClient) {
    this.#redis = redis;
  }

  async take(key: string, limit: RateLimit): Promise<RateDecision> {
    const [allowed, remaining, retryAfterMs, resetMs] = (await GCRA.run(
      this.#redis,
      1,
      key,
      limit.windowMs / limit.max,
      limit.windowMs,
    )) as number[];
    return { allowed: allowed === 1, limit: limit.max, remaining: remaining!, retryAfterMs: retryAfterMs!, resetMs: resetMs! };
  }
}

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `30s`, `1m`, `1h`, `1d`, `500ms` → milliseconds; undefined when malformed. */
export function parseWindow(window: string): number | undefined {
  const match = /^(\d+)(ms|s|m|h|d)$/.exec(window.trim());
  if (!match) return undefined;
  const ms = Number(match[1]) * UNITS[match[2]!]!;
  return ms > 0 ? ms : undefined;
}
