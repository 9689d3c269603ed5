import type { RequestContext } from '../../platform/subgraph-server.ts';
import type { UsageSink } from '../../platform/usage-event.ts';
import type { Meter } from '../../platform/metering.ts';
import type { MeteringSettings } from '../../platform/meter-buckets.ts';
import type { ModelCatalog } from '../../providers/catalog.ts';
import type { Embedder } from './embedder.ts';

export interface EmbeddingsContext extends RequestContext {
  catalog: ModelCatalog;
  embedder: Embedder;
  /** One vector cache for every tenant (`cache.shareAcrossTenants`). */
  cacheShared: boolean;
  /** Where each request's usage event goes. */
  usage: UsageSink;
  /** Token and budget reservations (shared with the inference subgraph). */
  meter: Meter;
  metering: MeteringSettings;
  /** Inputs asked for so far by this operation, across all its embeddings fields. */
  inputBudget: { inputs: number };
}
