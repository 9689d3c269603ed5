/**
 * Metering state: where usage events go and are aggregated (a Redis Stream shared by every replica
 * when Redis is configured), and the meter that holds token and budget reservations. Without Redis
 * both live in this process, which only the subgraphs of the same process (`modelgraph all`) share.
 */
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import { MemoryMeter, RedisMeter, type Meter } from './metering.ts';
import { createRedis } from './redis.ts';
import type { UsageSink } from './usage-event.ts';
import { MemoryUsageStore, RedisUsageSink, RedisUsageStore, type UsageStore } from './usage-store.ts';

export interface UsageServices {
  sink: UsageSink;
  store: UsageStore;
  meter: Meter;
  close(): void;
}

export function createUsageServices(config: Config, log: Logger, singleProcess: boolean): UsageServices {
  if (!config.redis.url) {
    if (!singleProcess)
      log.warn('no redis.url: usage events stay in this process, where no usage subgraph of another process can read them');
    const store = new MemoryUsageStore();
    return { sink: store, store, meter: new MemoryMeter(), close: () => undefined };
  }
  const redis = createRedis(config.redis.url, log.child({ component: 'redis' }));
  return {
    sink: new RedisUsageSink(redis, config.redis.keyPrefix),
    store: new RedisUsageStore(redis, config.redis.keyPrefix),
    meter: new RedisMeter(redis),
    close: () => redis.disconnect(),
  };
}
