/** The inference subgraph: models, versions, chat and streamed chat. */
import { readFileSync } from 'node:fs';
import { parse } from 'graphql';
import type { Config } from '../../platform/config.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/subgraph-server.ts';
import { ModelCatalog } from '../../providers/catalog.ts';
import { Router } from '../../providers/routing.ts';
import type { InferenceContext } from './context.ts';
import { createProviderMetrics } from './metrics.ts';
import { resolvers } from './resolvers.ts';

export const INFERENCE_SCHEMA_FILE = new URL('../../schema/inference.graphql', import.meta.url);

export async function startInferenceSubgraph(config: Config, log: Logger, { withProcessMetrics = true } = {}): Promise<RunningSubgraph> {
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
  const settings = config.subgraphs.inference;
  const running = await startSubgraphServer<InferenceContext>({
    name: 'inference',
    typeDefs: parse(readFileSync(INFERENCE_SCHEMA_FILE, 'utf8')),
    resolvers,
    host: settings.host,
    port: settings.port,
    log,
    registry,
    maxBodyBytes: config.router.maxBodyBytes,
    wsMaxPayloadBytes: config.router.wsMaxPayloadBytes,
    extendContext: (base) => ({ ...base, catalog, metrics, router }),
  });
  let stopped: Promise<void> | undefined;
  return {
    ...running,
    stop(deadline) {
      stopped ??= running.stop(deadline).then(() => catalog.close());
      return stopped;
    },
  };
}
