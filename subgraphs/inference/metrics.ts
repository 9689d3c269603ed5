/** Provider-side metrics of the inference subgraph. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface ProviderMetrics {
  /** Whole provider calls, by provider, model and outcome (ok or an error code). */
  calls: Counter<'provider' | 'model' | 'mode' | 'outcome'>;
  duration: Histogram<'provider' | 'model' | 'mode'>;
  timeToFirstToken: Histogram<'provider' | 'model'>;
  /** Circuit breaker per target (`id@version`): 0 closed, 1 half-open, 2 open. */
  circuit: Gauge<'target'>;
  /** Provider calls beyond the first for one request (retries and fallbacks). */
  extraAttempts: Counter<'model'>;
  /** Requests served by another target than the first one tried. */
  fallbacks: Counter<'from' | 'to'>;
  /** Tokens and USD used, by tenant and model (from each call's usage event). */
  tokens: Counter<'tenant' | 'model' | 'kind'>;
  costUsd: Counter<'tenant' | 'model'>;
  /** Calls refused by a token limit or budget, by the limit and its scope. */
  meterRejections: Counter<'limit' | 'scope'>;
}

export function createProviderMetrics(registry: Registry): ProviderMetrics {
  return {
    calls: new Counter({
      name: 'modelgraph_provider_calls_total',
      help: 'Model calls to providers, by outcome (ok or an error code).',
      labelNames: ['provider', 'model', 'mode', 'outcome'],
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'modelgraph_provider_call_duration_seconds',
      help: 'Duration of model calls to providers, to the last byte.',
      labelNames: ['provider', 'model', 'mode'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    timeToFirstToken: new Histogram({
      name: 'modelgraph_provider_time_to_first_token_seconds',
      help: 'Time from the start of a streamed model call to its first token.',
      labelNames: ['provider', 'model'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
      registers: [registry],
    }),
    extraAttempts: new Counter({
      name: 'modelgraph_provider_extra_attempts_total',
      help: 'Provider calls beyond the first for one request: retries and fallbacks.',
      labelNames: ['model'],
      registers: [registry],
    }),
    fallbacks: new Counter({
      name: 'modelgraph_provider_fallbacks_total',
      help: 'Requests served by another target (id@version) than the first one tried.',
      labelNames: ['from', 'to'],
      registers: [registry],
    }),
    tokens: new Counter({
      name: 'modelgraph_tokens_total',
      help: 'Tokens used by model calls, by tenant, model and kind (prompt or completion).',
      labelNames: ['tenant', 'model', 'kind'],
      registers: [registry],
    }),
    costUsd: new Counter({
      name: 'modelgraph_cost_usd_total',
      help: 'What model calls cost at the configured prices, in USD, by tenant and model.',
      labelNames: ['tenant', 'model'],
      registers: [registry],
    }),
    meterRejections: new Counter({
      name: 'modelgraph_meter_rejections_total',
      help: 'Calls refused before any provider call by a token limit or budget, by limit and scope.',
      labelNames: ['limit', 'scope'],
      registers: [registry],
    }),
    circuit: new Gauge({
      name: 'modelgraph_provider_circuit_state',
      help: 'Circuit breaker state per model version: 0 closed, 1 half-open, 2 open.',
      labelNames: ['target'],
      registers: [registry],
    }),
  };
}
