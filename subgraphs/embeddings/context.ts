import type { RequestContext } from '../../platform/serving/subgraph-server.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import type { Meter } from '../../platform/metering/meter.ts';
import type { MeteringSettings } from '../../platform/metering/buckets.ts';
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
