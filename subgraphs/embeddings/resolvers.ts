import type { Resolvers } from '../../codegen/embeddings.resolvers.ts';

export const resolvers: Resolvers = {
  Query: {
    embeddings: (_parent, { input }, { embedder }) => embedder.embed(input),
  },
  Model: {
    __resolveReference: (reference, { catalog }) => catalog.resolve(reference.id) ?? null,
    dimensions: (model) => (model.capabilities.includes('EMBEDDINGS') ? (model.dimensions ?? null) : null),
  },
};
