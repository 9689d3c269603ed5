import type { Resolvers } from '../../codegen/embeddings.resolvers.ts';
import { embedWithUsage } from './usage.ts';

export const resolvers: Resolvers = {
  Query: {
    embeddings: (_parent, { input }, context) => embedWithUsage(context, input),
  },
  Model: {
    __resolveReference: (reference, { catalog }) => catalog.resolve(reference.id) ?? null,
    dimensions: (model) => (model.capabilities.includes('EMBEDDINGS') ? (model.dimensions ?? null) : null),
  },
};
