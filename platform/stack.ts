/**
 * Starts the pieces of modelgraph in this process: every subgraph and the router (`all`, what
 * `npm start` runs), the router alone, or one subgraph alone. Stopping drains the router first so
 * its streams can still reach the subgraphs behind it.
 */
import type { Config, SubgraphName } from './config.ts';
import { SUBGRAPH_NAMES, subgraphUrl } from './config.ts';
import type { Logger } from './logger.ts';
import type { RunningSubgraph } from './subgraph-server.ts';
import { startInferenceSubgraph } from '../subgraphs/inference/index.ts';
import { startRouter, type RunningRouter } from '../router/server.ts';

export type Role = { kind: 'all' } | { kind: 'router' } | { kind: 'subgraph'; name: SubgraphName };

export interface RunningStack {
  router?: RunningRouter;
  subgraphs: RunningSubgraph[];
  stop(deadline: number): Promise<void>;
}

const SUBGRAPH_STARTERS: Record<SubgraphName, typeof startInferenceSubgraph> = {
  inference: startInferenceSubgraph,
};

export async function startStack(config: Config, log: Logger, role: Role): Promise<RunningStack> {
  const subgraphs: RunningSubgraph[] = [];
  let router: RunningRouter | undefined;
  const stop = async (deadline: number) => {
    await router?.stop(deadline);
    await Promise.all(subgraphs.map((subgraph) => subgraph.stop(deadline)));
  };
  try {
    const names = role.kind === 'all' ? SUBGRAPH_NAMES : role.kind === 'subgraph' ? [role.name] : [];
    // In one process, processes metrics are registered once (by the router, or the lone subgraph).
    const withProcessMetrics = role.kind === 'subgraph';
    for (const name of names) {
      subgraphs.push(await SUBGRAPH_STARTERS[name](config, log.child({ subgraph: name }), { withProcessMetrics }));
    }
    if (role.kind !== 'subgraph') {
      const urls = Object.fromEntries(
        SUBGRAPH_NAMES.map((name) => [name, subgraphs.find((subgraph) => subgraph.name === name)?.url ?? subgraphUrl(config, name)]),
      ) as Record<SubgraphName, string>;
      router = await startRouter({ config, log: log.child({ component: 'router' }), subgraphUrls: urls });
    }
  } catch (error) {
    await stop(Date.now());
    throw error;
  }
  return { ...(router && { router }), subgraphs, stop };
}
