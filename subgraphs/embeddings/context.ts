import type { RequestContext } from '../../platform/subgraph-server.ts';
import type { ModelCatalog } from '../../providers/catalog.ts';
import type { Embedder } from './embedder.ts';

export interface EmbeddingsContext extends RequestContext {
  catalog: ModelCatalog;
  embedder: Embedder;
}
