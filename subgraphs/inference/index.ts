/** The inference subgraph: models, versions, chat and streamed chat. */
import { readFileSync } from 'node:fs';
import { parse } from 'graphql';
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { createRedis, redisAnswers } from '../../platform/redis/client.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import { MemoryResponseCache, RedisResponseCache } from '../../platform/redis/response-cache.ts';
import { listenSettings, startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
import { ModelCatalog } from '../../providers/catalog.ts';
import { Router } from '../../providers/routing.ts';
import type { InferenceContext } from './context.ts';
import { createProviderMetrics } from './metrics.ts';
import { permissions } from './permissions.ts';
import { recordingSpend } from '../../platform/metering/spend.ts';
import { resolvers } from './resolvers.ts';

export const INFERENCE_SCHEMA_FILE = new URL('../../schema/inference.graphql', import.meta.url);

export interface InferenceSubgraphOptions {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  /** Where each call's usage event goes. */
  usage: UsageSink;
  /** Where token and budget reservations are held (shared with the other subgraphs). */
  meter: Meter;
}

export async function startInferenceSubgraph(
  config: Config,
  log: Logger,
  { withProcessMetrics, identity, usage, meter }: InferenceSubgraphOptions,
): Promise<RunningSubgraph> {
  const catalog = new ModelCatalog(config);
  const registry = createRegistry('inference', withProcessMetrics);
  const metrics = createProviderMetrics(registry);
  const { routing } = config;
  const router = new Router(
    {
      attemptsPerTarget: routing.attemptsPerTarget,
      initialDelayMs: routing.initialDelayMs,
      maxDelayMs: routing.maxDelayMs,
      deadlineMs: routing.deadlineMs,
      firstTokenMs: routing.firstTokenMs,
      breakerFailures: routing.breaker.failures,
      breakerHalfOpenAfterMs: routing.breaker.halfOpenAfterMs,
    },
    (target, status) => {
      metrics.circuit.set({ target }, { CLOSED: 0, HALF_OPEN: 1, OPEN: 2 }[status]);
      log.warn({ target, circuit: status }, 'circuit changed');
    },
  );
  const redis = config.redis.url ? createRedis(config.redis.url, log.child({ component: 'redis' })) : undefined;
  // Give Redis a moment to connect so the first requests can use the cache; never block the start.
  if (redis) await redisAnswers(redis, 1_000);
  const metering = { keyPrefix: config.redis.keyPrefix, tenants: config.metering.tenants };
  const cache = !config.cache.enabled
    ? undefined
    : redis
      ? new RedisResponseCache(redis, config.redis.keyPrefix)
      : new MemoryResponseCache(config.cache.maxEntries);
  const cacheTtlMs = config.cache.ttlSeconds * 1000;
  const running = await startSubgraphServer<InferenceContext>({
    name: 'inference',
    typeDefs: parse(readFileSync(INFERENCE_SCHEMA_FILE, 'utf8')),
    resolvers,
    permissions,
    identity,
    ...listenSettings(config, 'inference'),
    log,
    registry,
    extendContext: (base) => ({
      ...base,
      catalog,
      metrics,
      router,
      cache,
      cacheTtlMs,
      cacheShared: config.cache.shareAcrossTenants,
      meter,
      metering,
      usage: recordingSpend(usage, base.spend),
    }),
  });
  let stopped: Promise<void> | undefined;
  return {
    ...running,
    stop(deadline) {
      stopped ??= running
        .stop(deadline)
        .then(() => Promise.all([catalog.close(), cache?.close()]))
        .then(() => redis?.disconnect());
      return stopped;
    },
  };
}
