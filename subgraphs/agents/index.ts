/**
 * The agents subgraph: agent definitions, runs executed on this replica, and every run's events
 * (Redis Streams, shared by all replicas; memory in one process without Redis). Runs call the model
 * and their tools through the router as their owner (router-client.ts).
 */
import { readFileSync } from 'node:fs';
import { buildSchema } from 'graphql';
import type { AccessServices } from '../../platform/access/access-services.ts';
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { openRedis } from '../../platform/redis/client.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
import { ModelCatalog } from '../../providers/catalog.ts';
import { MemoryAgentStore, RedisAgentStore } from './agent-store.ts';
import type { AgentsContext } from './context.ts';
import { AgentDirectory } from './definitions.ts';
import { createAgentMetrics } from './metrics.ts';
import { permissions } from './permissions.ts';
import { resolvers } from './resolvers.ts';
import { RouterClient } from './router-client.ts';
import { MemoryRunStore } from './memory-run-store.ts';
import { RedisRunStore } from './redis-run-store.ts';
import { Runner } from './runner.ts';

export const AGENTS_SCHEMA_FILE = new URL('../../schema/agents.graphql', import.meta.url);
/** What tools are checked against: the public API, as clients see it. */
export const API_SCHEMA_FILE = new URL('../../schema/api.graphql', import.meta.url);

export interface AgentsSubgraphOptions {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  /** Key changes (revocations cancel runs) and the audit log of definition changes. */
  access: AccessServices;
  /** Where runs reach the router; read per call, since in one process the router starts last. */
  routerUrl: () => string;
}

export async function startAgentsSubgraph(
  config: Config,
  log: Logger,
  { withProcessMetrics, identity, access, routerUrl }: AgentsSubgraphOptions,
): Promise<RunningSubgraph> {
  const settings = config.agents;
  const catalog = new ModelCatalog(config);
  const redis = await openRedis(config.redis, log);
  const { keyPrefix } = config.redis;
  const runs = redis
    ? new RedisRunStore(redis, keyPrefix, { retentionSeconds: settings.retentionSeconds })
    : new MemoryRunStore({ retentionSeconds: settings.retentionSeconds });
  const router = new RouterClient(routerUrl, identity);
  const registry = createRegistry('agents', withProcessMetrics);
  const runner = new Runner(
    { runs, router, catalog, settings, log: log.child({ component: 'runs' }), metrics: createAgentMetrics(registry) },
    access.store,
  );
  /** Ends the runs (at once if they are still going) and closes what they used. */
  const release = async (deadline: number) => {
    await runner.stop(deadline);
    await Promise.all([runs.close(), router.close(), catalog.close()]);
    redis?.disconnect();
  };
  try {
    const store = redis ? new RedisAgentStore(redis, keyPrefix) : new MemoryAgentStore();
    const directory = new AgentDirectory(store, catalog, buildSchema(readFileSync(API_SCHEMA_FILE, 'utf8')), settings);
    await runner.listening();
    return await startSubgraphServer<AgentsContext>(
      { name: 'agents', config, log, registry, identity },
      {
        schemaFile: AGENTS_SCHEMA_FILE,
        resolvers,
        permissions,
        extendContext: (base) => ({
          ...base,
          directory,
          runs,
          runner,
          settings,
          catalog,
          audit: access.audit,
          tenantExists: async (id) => (await access.store.tenant(id)) !== undefined,
        }),
        // Runs first: they call the router and the other subgraphs, which are still up.
        beforeStop: (deadline) => runner.stop(deadline),
        release: () => release(Date.now()),
      },
    );
  } catch (error) {
    // A bad configured agent (or a taken port) must not leave connections behind.
    await release(Date.now());
    throw error;
  }
}
