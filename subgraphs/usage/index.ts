/**
 * The usage subgraph: reports of usage and cost. It aggregates the usage event stream with a
 * consumer group: continuously in the background, and once more before each report so that a
 * report includes every call that ended before it was asked.
 */
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
import { DEFAULT_CONSUMER, type UsageStore } from './usage-store.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import type { UsageContext } from './context.ts';
import { permissions } from './permissions.ts';
import { resolvers } from './resolvers.ts';

export const USAGE_SCHEMA_FILE = new URL('../../schema/usage.graphql', import.meta.url);
const DRAIN_EVERY_MS = 250;

export interface UsageSubgraphOptions {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  store: UsageStore;
  meter: Meter;
}

export async function startUsageSubgraph(
  config: Config,
  log: Logger,
  { withProcessMetrics, identity, store, meter }: UsageSubgraphOptions,
): Promise<RunningSubgraph> {
  // One fixed consumer name per deployment's usage subgraph, so a restart finds its own pending
  // events at once (the store also takes over entries other consumers left for a minute).
  const consumer = DEFAULT_CONSUMER;
  let draining: Promise<unknown> = Promise.resolve();
  /** One drain at a time per process; a report waits for the one in progress and runs its own. */
  const drain = () => {
    draining = draining
      .then(() => store.drain({ consumer }))
      .catch((error: unknown) => log.warn({ err: error }, 'usage events not aggregated yet'));
    return draining;
  };
  const timer = setInterval(() => void drain(), DRAIN_EVERY_MS);
  timer.unref();
  const reporting: UsageStore = {
    emit: (event) => store.emit(event),
    drain: (options) => store.drain(options),
    report: async (filter, groupBy) => {
      await drain();
      return store.report(filter, groupBy);
    },
  };
  const registry = createRegistry('usage', withProcessMetrics);
  const metering = { keyPrefix: config.redis.keyPrefix, tenants: config.metering.tenants };
  return startSubgraphServer<UsageContext>(
    { name: 'usage', config, log, registry, identity },
    {
      schemaFile: USAGE_SCHEMA_FILE,
      resolvers,
      permissions,
      extendContext: (base) => ({ ...base, store: reporting, meter, metering }),
      beforeStop: async () => clearInterval(timer),
      // What arrived while draining is aggregated before the process goes.
      release: () => drain().then(() => undefined),
    },
  );
}
