import type { RequestContext } from '../../platform/serving/subgraph-server.ts';
import type { UsageStore } from './usage-store.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import type { MeteringSettings } from '../../platform/metering/buckets.ts';

export interface UsageContext extends RequestContext {
  store: UsageStore;
  /** Budgets: the shared meter and the tenants' limits. */
  meter: Meter;
  metering: MeteringSettings;
}
