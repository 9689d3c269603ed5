import type { ModelCatalog } from '../../providers/catalog.ts';
import type { Router } from '../../providers/routing.ts';
import type { ResponseCache } from '../../platform/redis/response-cache.ts';
import type { RequestContext } from '../../platform/serving/subgraph-server.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import type { MeteringSettings } from '../../platform/metering/buckets.ts';
import type { ProviderMetrics } from './metrics.ts';

export interface InferenceContext extends RequestContext {
  catalog: ModelCatalog;
  metrics: ProviderMetrics;
  router: Router;
  /** Absent when caching is disabled. */
  cache: ResponseCache | undefined;
  cacheTtlMs: number;
  /** Token limits and budgets: where reservations are made, and the tenants' limits. */
  meter: Meter;
  /** Where each call's usage event goes. */
  usage: UsageSink;
  metering: MeteringSettings;
  /** One cache scope for every tenant (`cache.shareAcrossTenants`). */
  cacheShared: boolean;
}
