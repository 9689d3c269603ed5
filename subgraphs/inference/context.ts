import type { ModelCatalog } from '../../providers/catalog.ts';
import type { Router } from '../../providers/routing.ts';
import type { ResponseCache } from '../../platform/response-cache.ts';
import type { RequestContext } from '../../platform/subgraph-server.ts';
import type { Meter } from '../../platform/metering.ts';
import type { UsageSink } from '../../platform/usage-event.ts';
import type { MeteringSettings } from '../../platform/meter-buckets.ts';
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
