/**
 * Metrics registries. Each server owns its own registry (so several stacks can run in one process,
 * as in `npm start` and in the tests) and serves it on its own `/metrics`.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';

export function createRegistry(component: string, withProcessMetrics: boolean): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  if (withProcessMetrics) collectDefaultMetrics({ register: registry, prefix: 'modelgraph_' });
  return registry;
}

/** Operation names become label values; refuse anything that could blow up the label space. */
export function operationLabel(name: string | null | undefined): string {
  if (!name) return 'anonymous';
  return /^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name) ? name : 'invalid';
}
