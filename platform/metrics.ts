/**
 * Metrics registries. Each server owns its own registry (so several stacks can run in one process,
 * as in `npm start` and in the tests) and serves it on its own `/metrics`.
 */
import { Counter, Registry, collectDefaultMetrics } from 'prom-client';
import { droppedLogLines } from './logger.ts';

export function createRegistry(component: string, withProcessMetrics: boolean): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  if (withProcessMetrics) {
    collectDefaultMetrics({ register: registry, prefix: 'modelgraph_' });
    let counted = 0;
    new Counter({
      name: 'modelgraph_log_lines_dropped_total',
      help: 'Log lines dropped because the reader of standard output fell behind',
      registers: [registry],
      collect() {
        const dropped = droppedLogLines();
        this.inc(dropped - counted);
        counted = dropped;
      },
    });
  }
  return registry;
}

/**
 * Operation names become label values, and clients choose them: the first `max` distinct valid
 * names get their own series, the rest share `other`, so no client can grow /metrics unbounded.
 */
export class OperationLabels {
  readonly #seen = new Set<string>();
  constructor(private readonly max = 200) {}

  label(name: string | null | undefined): string {
    if (!name) return 'anonymous';
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name)) return 'invalid';
    if (this.#seen.has(name)) return name;
    if (this.#seen.size >= this.max) return 'other';
    this.#seen.add(name);
    return name;
  }
}
