/** The embeddings subgraph: vectors for texts, batched across requests and cached. */
import { Counter, type Registry } from 'prom-client';
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { openRedis } from '../../platform/redis/client.ts';
import { MemoryResponseCache, RedisResponseCache } from '../../platform/redis/response-cache.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
import { ModelCatalog, targetKey } from '../../providers/catalog.ts';
import type { EmbeddingsContext } from './context.ts';
import { Embedder, type EmbedderObserver } from './embedder.ts';
import { permissions } from './permissions.ts';
import { resolvers } from './resolvers.ts';
import { recordingSpend } from '../../platform/metering/spend.ts';

export const EMBEDDINGS_SCHEMA_FILE = new URL('../../schema/embeddings.graphql', import.meta.url);

export interface EmbeddingsSubgraphOptions {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  usage: UsageSink;
  meter: Meter;
}

function embeddingMetrics(registry: Registry): EmbedderObserver {
  const calls = new Counter({
    name: 'modelgraph_embeddings_provider_calls_total',
    help: 'Embedding calls to providers (each serves a batch of inputs from any callers), by model version and outcome.',
    labelNames: ['model', 'outcome'],
    registers: [registry],
  });
  const inputs = new Counter({
    name: 'modelgraph_embeddings_inputs_total',
    help: 'Inputs embedded, by model version and source: provider or cache.',
    labelNames: ['model', 'source'],
    registers: [registry],
  });
  return {
    call: (model, _count, outcome) => calls.inc({ model: targetKey(model), outcome }),
    cache: (model, hits, misses) => {
      if (hits) inputs.inc({ model: targetKey(model), source: 'cache' }, hits);
      if (misses) inputs.inc({ model: targetKey(model), source: 'provider' }, misses);
    },
  };
}

export async function startEmbeddingsSubgraph(
  config: Config,
  log: Logger,
  { withProcessMetrics, identity, usage, meter }: EmbeddingsSubgraphOptions,
): Promise<RunningSubgraph> {
  const settings = config.embeddings;
  const catalog = new ModelCatalog(config);
  const registry = createRegistry('embeddings', withProcessMetrics);
  usage.registerMetrics?.(registry);
  const redis = await openRedis(config.redis, log);
  const cache = redis ? new RedisResponseCache(redis, config.redis.keyPrefix) : new MemoryResponseCache(settings.cacheMaxEntries);
  const embedder = new Embedder(
    catalog,
    cache,
    { maxInputs: settings.maxInputs, batchWindowMs: settings.batchWindowMs, cacheTtlMs: settings.cacheTtlSeconds * 1000 },
    log,
    embeddingMetrics(registry),
  );
  return startSubgraphServer<EmbeddingsContext>(
    { name: 'embeddings', config, log, registry, identity },
    {
      schemaFile: EMBEDDINGS_SCHEMA_FILE,
      resolvers,
      permissions,
      extendContext: (base) => ({
        ...base,
        catalog,
        embedder,
        cacheShared: config.cache.shareAcrossTenants,
        inputBudget: { inputs: 0 },
        usage: recordingSpend(usage, base.spend),
        meter,
        metering: { keyPrefix: config.redis.keyPrefix, tenants: config.metering.tenants },
      }),
      // A full usage outbox takes it out of rotation: it refuses model calls until delivered.
      ready: () => usage.refusal?.() === undefined,
      release: async () => {
        await Promise.all([catalog.close(), cache.close()]);
        redis?.disconnect();
      },
    },
  );
}
