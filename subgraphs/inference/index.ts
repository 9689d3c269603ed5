/** The inference subgraph: models, versions, chat and streamed chat. */
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { openRedis } from '../../platform/redis/client.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import { MemoryResponseCache, RedisResponseCache } from '../../platform/redis/response-cache.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
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
  usage.registerMetrics?.(registry);
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
  const redis = await openRedis(config.redis, log);
  const metering = { keyPrefix: config.redis.keyPrefix, tenants: config.metering.tenants };
  const cache = !config.cache.enabled
    ? undefined
    : redis
      ? new RedisResponseCache(redis, config.redis.keyPrefix)
      : new MemoryResponseCache(config.cache.maxEntries);
  const cacheTtlMs = config.cache.ttlSeconds * 1000;
  return startSubgraphServer<InferenceContext>(
    { name: 'inference', config, log, registry, identity },
    {
      schemaFile: INFERENCE_SCHEMA_FILE,
      resolvers,
      permissions,
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
      // A full usage outbox takes it out of rotation: it refuses model calls until delivered.
      ready: () => usage.refusal?.() === undefined,
      release: async () => {
        await Promise.all([catalog.close(), cache?.close()]);
        redis?.disconnect();
      },
    },
  );
}
