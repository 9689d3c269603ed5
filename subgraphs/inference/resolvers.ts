import type { Resolvers } from '../../codegen/inference.resolvers.ts';
import { targetKey } from '../../providers/catalog.ts';
import { prepareChat, runChat, streamChat, type ChatStreamEventResult } from './chat.ts';

export const resolvers: Resolvers = {
  Query: {
    models: (_parent, _args, { catalog }) => [...catalog.models],
    model: (_parent, { id }, { catalog }) => catalog.resolve(id) ?? null,
  },
  Mutation: {
    chat: (_parent, { input }, context) => runChat(prepareChat(context.catalog, input), context),
  },
  Subscription: {
    chatStream: {
      // Validation throws before the first event, so a bad input fails the subscription itself.
      subscribe: (_parent, { input }, context) => streamChat(prepareChat(context.catalog, input), context),
      resolve: (event: ChatStreamEventResult) => event,
    },
  },
  Model: {
    __resolveReference: (reference, { catalog }) => catalog.resolve(reference.id) ?? null,
    pricing: (model) => model.pricing,
    versions: (model, _args, { catalog }) => catalog.versions(model.id),
    health: (model, _args, { router }) => ({ circuit: router.circuit(targetKey(model)) }),
    sunset: (model) => model.sunset ?? null,
    replacement: (model) => model.replacement ?? null,
  },
  ChatStreamEvent: {
    __resolveType: (event) => event.__typename,
  },
};
