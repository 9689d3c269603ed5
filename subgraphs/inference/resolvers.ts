import type { Resolvers } from '../../codegen/inference.resolvers.ts';
import { isRetired, targetKey } from '../../providers/catalog.ts';
import { cacheEntryNames } from '../../platform/redis/keys.ts';
import { asPayloads } from '../../platform/serving/subscription-payloads.ts';
import { prepareChat, runChat, streamChat, warnIfDeprecated, withCache, type PreparedChat } from './chat.ts';
import type { InferenceContext } from './context.ts';
import { modelReachable } from '../../providers/model-permissions.ts';
import { mayUseModel } from '../../platform/identity/principal.ts';

const cacheScope = (context: InferenceContext) => cacheEntryNames.scope(context.cacheShared, context.principal.tenantId);

/** Prepares a chat and warns when the version it names is deprecated (the one that answers warns too). */
function prepare(input: Parameters<typeof prepareChat>[1], context: InferenceContext): PreparedChat {
  const prepared = prepareChat(context.catalog, input);
  warnIfDeprecated(context, prepared.model);
  return prepared;
}

export const resolvers: Resolvers = {
  Query: {
    // Only the models this caller may use (its key's allow-list).
    models: (_parent, _args, { catalog, principal }) => catalog.defaults().filter((model) => modelReachable(principal, catalog, model.id)),
    model: (_parent, { id }, { catalog }) => catalog.resolve(id) ?? null,
  },
  Mutation: {
    chat: (_parent, { input }, context) =>
      runChat(withCache(prepare(input, context), input, context.cacheTtlMs, cacheScope(context)), context),
  },
  Subscription: {
    chatStream: {
      // Validation throws before the first event, so a bad input fails the subscription itself.
      // No `resolve`: events travel as `{ chatStream }` payloads, so the shield rule guards
      // `subscribe` itself, before any provider is called (see subgraph-server.ts).
      subscribe: async (_parent, { input }, context) => asPayloads('chatStream', await streamChat(prepare(input, context), context)),
    },
  },
  Model: {
    __resolveReference: (reference, { catalog }) => catalog.resolve(reference.id) ?? null,
    pricing: (model) => model.pricing,
    routes: (model, _args, { catalog, principal }) => catalog.routesThrough(model.id).filter((route) => mayUseModel(principal, [route])),
    versions: (model, _args, { catalog }) => catalog.versions(model.id),
    health: (model, _args, { router }) => ({ circuit: router.circuit(targetKey(model)) }),
    status: (model) => (isRetired(model) ? 'RETIRED' : model.status),
    sunset: (model) => model.sunset ?? null,
    replacement: (model) => model.replacement ?? null,
  },
  ChatStreamEvent: {
    __resolveType: (event) => event.__typename,
  },
};
