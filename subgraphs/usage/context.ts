import type { RequestContext } from '../../platform/subgraph-server.ts';
import type { UsageStore } from '../../platform/usage-store.ts';

export interface UsageContext extends RequestContext {
  store: UsageStore;
}
