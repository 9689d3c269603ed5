import type { RequestContext } from '../../platform/subgraph-server.ts';
import type { UsageStore } from '../../platform/usage-store.ts';
import type { Meter } from '../../platform/metering.ts';
import type { MeteringSettings } from '../../platform/meter-buckets.ts';

export interface UsageContext extends RequestContext {
  store: UsageStore;
  /** Budgets: the shared meter and the tenants' limits. */
  meter: Meter;
  metering: MeteringSettings;
}
