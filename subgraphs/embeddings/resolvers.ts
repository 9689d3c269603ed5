import type { Resolvers } from '../../codegen/embeddings.resolvers.ts';

export const resolvers: Resolvers = {
  Query: {
    embeddings: (_parent, { input }, { embedder, principal, cacheShared, inputBudget }) =>
      embedder.embed(input, { cacheScope: cacheShared ? 'shared' : `tenant:${principal.tenantId}`, budget: inputBudget }),
  },
  Model: {
    __resolveReference: (reference, { catalog }) => catalog.resolve(reference.id) ?? null,
    dimensions: (model) => (model.capabilities.includes('EMBEDDINGS') ? (model.dimensions ?? null) : null),
  },
};
