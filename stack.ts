/**
 * Starts the pieces of modelgraph in this process: every subgraph and the router (`all`, what
 * `npm start` runs), the router alone, or one subgraph alone. Stopping drains the router first so
 * its streams can still reach the subgraphs behind it.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { createAccessServices, createIdentityTokens, type AccessServices } from './platform/access/access-services.ts';
import type { Config, SubgraphName } from './platform/config.ts';
import { ConfigError, SUBGRAPH_NAMES, subgraphUrl } from './platform/config.ts';
import type { IdentityTokens } from './platform/identity/identity-token.ts';
import type { Logger } from './platform/logger.ts';
import type { RunningSubgraph } from './platform/serving/subgraph-server.ts';
import { bootstrapAccess } from './subgraphs/access/bootstrap.ts';
import { startAccessSubgraph } from './subgraphs/access/index.ts';
import { startAgentsSubgraph } from './subgraphs/agents/index.ts';
import { startEmbeddingsSubgraph } from './subgraphs/embeddings/index.ts';
import { startUsageSubgraph } from './subgraphs/usage/index.ts';
import { MemoryMeter, RedisMeter, type Meter } from './platform/metering/meter.ts';
import type { UsageSink } from './platform/metering/usage-event.ts';
import { createRedis, redisConfigured } from './platform/redis/client.ts';
import { RedisUsageSink } from './platform/metering/usage-stream.ts';
import { UsageOutbox } from './platform/metering/usage-outbox.ts';
import { MemoryUsageStore } from './subgraphs/usage/memory-usage-store.ts';
import { RedisUsageStore } from './subgraphs/usage/redis-usage-store.ts';
import type { UsageStore } from './subgraphs/usage/usage-store.ts';
import { startInferenceSubgraph } from './subgraphs/inference/index.ts';
import { startRouter, type RunningRouter } from './router/server.ts';

/**
 * Metering state: where usage events go and are aggregated (a Redis Stream shared by every replica
 * when Redis is configured), and the meter that holds token and budget reservations. Without Redis
 * both live in this process, which only the subgraphs of the same process (`modelgraph all`) share.
 */
interface UsageServices {
  sink: UsageSink;
  store: UsageStore;
  meter: Meter;
  close(): Promise<void>;
}

function createUsageServices(config: Config, log: Logger, singleProcess: boolean): UsageServices {
  if (!redisConfigured(config.redis)) {
    if (!singleProcess) log.warn('no redis: usage events stay in this process, where no usage subgraph of another process can read them');
    const store = new MemoryUsageStore();
    return { sink: store, store, meter: new MemoryMeter(), close: async () => undefined };
  }
  const redis = createRedis(config.redis, log.child({ component: 'redis' }));
  // Events the stream cannot take wait on disk, in a folder of this stream's own.
  const { outbox } = config.metering;
  const stream = createHash('sha256')
    .update(`${streamPlace(config.redis)} ${config.redis.keyPrefix}`)
    .digest('hex')
    .slice(0, 16);
  const sink = new UsageOutbox(
    new RedisUsageSink(redis, config.redis.keyPrefix),
    { dir: join(outbox.dir, stream), maxEvents: outbox.maxEvents, retryMs: outbox.retryMs },
    log.child({ component: 'usage-outbox' }),
  );
  return {
    sink,
    store: new RedisUsageStore(redis, config.redis.keyPrefix),
    meter: new RedisMeter(redis),
    close: async () => {
      await sink.close();
      redis.disconnect();
    },
  };
}

/**
 * Where the usage stream is, for its outbox folder's name: never the credentials (rotating a
 * password keeps the folder); for one Redis its URL's host, port and path as before Sentinel and
 * Cluster came, so an upgrade finds its folder; for Sentinel and Cluster what stays when their
 * nodes change (a sentinel or a seed node added or replaced): the master's name and database, or
 * the cluster itself (the key prefix tells apart deployments that share one).
 */
function streamPlace({ url, sentinel }: Config['redis']): string {
  if (url) {
    const { hostname, port, pathname } = new URL(url);
    return `${hostname}:${port}${pathname}`;
  }
  return sentinel ? `sentinel ${sentinel.masterName}/${sentinel.db}` : 'cluster';
}

export type Role = { kind: 'all' } | { kind: 'router' } | { kind: 'subgraph'; name: SubgraphName };

export interface RunningStack {
  router?: RunningRouter;
  subgraphs: RunningSubgraph[];
  /** A platform-admin key made by this start (none was configured or stored): print it once. */
  bootstrapKey?: string;
  /** What this process signs or verifies identity tokens with (for starting more pieces beside it). */
  identity: IdentityTokens;
  /** The access store and audit log, when a piece of this process uses them. */
  access?: AccessServices;
  stop(deadline: number): Promise<void>;
}

interface Shared {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  access: () => Promise<AccessServices>;
  usage: () => UsageServices;
  /** Where agent runs reach the router: this process's router once it listens, else the configured one. */
  routerUrl: () => string;
}

const SUBGRAPH_STARTERS: Record<SubgraphName, (config: Config, log: Logger, shared: Shared) => Promise<RunningSubgraph>> = {
  inference: (config, log, { withProcessMetrics, identity, usage }) =>
    startInferenceSubgraph(config, log, { withProcessMetrics, identity, usage: usage().sink, meter: usage().meter }),
  embeddings: (config, log, { withProcessMetrics, identity, usage }) =>
    startEmbeddingsSubgraph(config, log, { withProcessMetrics, identity, usage: usage().sink, meter: usage().meter }),
  usage: (config, log, { withProcessMetrics, identity, usage }) =>
    startUsageSubgraph(config, log, { withProcessMetrics, identity, store: usage().store, meter: usage().meter }),
  access: async (config, log, { withProcessMetrics, identity, access }) =>
    startAccessSubgraph(config, log, { withProcessMetrics, identity, access: await access() }),
  agents: async (config, log, { withProcessMetrics, identity, access, routerUrl }) =>
    startAgentsSubgraph(config, log, { withProcessMetrics, identity, access: await access(), routerUrl }),
};

export async function startStack(config: Config, log: Logger, role: Role, env: NodeJS.ProcessEnv = process.env): Promise<RunningStack> {
  const singleProcess = role.kind === 'all';
  const identity = createIdentityTokens(config, env, singleProcess);
  let access: AccessServices | undefined;
  let usage: UsageServices | undefined;
  let accessStarting: Promise<AccessServices> | undefined;
  const shared: Shared = {
    // In one process, process metrics are registered once (by the router, or the lone subgraph).
    withProcessMetrics: role.kind === 'subgraph',
    identity,
    access: () =>
      (accessStarting ??= createAccessServices(config, log, singleProcess).then((services) => {
        access = services;
        return services;
      })),
    usage: () => (usage ??= createUsageServices(config, log, singleProcess)),
    routerUrl: () => config.agents.routerUrl ?? router?.url ?? `http://${config.router.host}:${config.router.port}/graphql`,
  };
  const subgraphs: RunningSubgraph[] = [];
  let router: RunningRouter | undefined;
  let bootstrapKey: string | undefined;
  const stop = async (deadline: number) => {
    // Agent runs call the router: they end (or are ended at the deadline) while it still serves.
    // They get half the grace period, so the router still has time to drain its own streams.
    const agents = subgraphs.find((subgraph) => subgraph.name === 'agents');
    await agents?.stop(Date.now() + Math.max(0, deadline - Date.now()) / 2);
    await router?.stop(deadline);
    await Promise.all(subgraphs.map((subgraph) => subgraph.stop(deadline)));
    await access?.close();
    await usage?.close();
  };
  if (role.kind === 'subgraph' && role.name === 'agents' && !config.agents.routerUrl) {
    throw new ConfigError('agents.routerUrl is required when the agents subgraph runs apart: its runs call the router there');
  }
  try {
    const names = role.kind === 'all' ? SUBGRAPH_NAMES : role.kind === 'subgraph' ? [role.name] : [];
    if (names.includes('access')) {
      const envName = config.access.bootstrapKeyEnv;
      const { store, audit } = await shared.access();
      bootstrapKey = await bootstrapAccess(store, audit, env[envName], envName);
    }
    for (const name of names) {
      subgraphs.push(await SUBGRAPH_STARTERS[name](config, log.child({ subgraph: name }), shared));
    }
    if (role.kind !== 'subgraph') {
      const urls = Object.fromEntries(
        SUBGRAPH_NAMES.map((name) => [name, subgraphs.find((subgraph) => subgraph.name === name)?.url ?? subgraphUrl(config, name)]),
      ) as Record<SubgraphName, string>;
      router = await startRouter({
        config,
        log: log.child({ component: 'router' }),
        subgraphUrls: urls,
        ...(config.router.inProcessSubgraphs && { localSubgraphs: subgraphs.map((subgraph) => subgraph.local) }),
        identity,
        access: await shared.access(),
        // In one process, the router is ready only while its subgraphs may take model calls.
        ...(usage && { ready: () => usage!.sink.refusal?.() === undefined }),
      });
    }
  } catch (error) {
    await stop(Date.now());
    throw error;
  }
  return { ...(router && { router }), subgraphs, ...(bootstrapKey && { bootstrapKey }), identity, ...(access && { access }), stop };
}
