/**
 * Who may do what in the inference subgraph. Reading models needs `models:read`, chatting needs
 * `chat:invoke`, and a key with a model allow-list reaches only those models (by id, alias or
 * pin; a route only when the route itself is listed) — on root fields and on `Model` itself,
 * which other subgraphs reach through `_entities`.
 */
import { allow, and, forbidden, requireScope, rule, subgraphShield } from '../../platform/authorization.ts';
import { allowsRef, modelReachable } from '../../platform/model-permissions.ts';
import type { InferenceContext } from './context.ts';

const notAllowed = (ref: string) => forbidden(`this key may not use model "${ref}"`);

const modelArgument = rule('model-argument', { cache: 'strict' })((_parent, args: { id: string }, { principal, catalog }: InferenceContext) =>
  allowsRef(principal, catalog, args.id) ? true : notAllowed(args.id),
);

const chatInputModel = rule('chat-input-model', { cache: 'strict' })((_parent, args: { input: { model: string } }, { principal, catalog }: InferenceContext) =>
  allowsRef(principal, catalog, args.input.model) ? true : notAllowed(args.input.model),
);

/** The model being read is reachable (whoever reached it, `_entities` included; a routed chat's answer names the model that served it). */
const modelVisible = rule('model-visible', { cache: 'no_cache' })((model: { id: string }, _args, { principal, catalog }: InferenceContext) =>
  modelReachable(principal, catalog, model.id) ? true : notAllowed(model.id),
);

const readModels = requireScope('models:read');
const invokeChat = requireScope('chat:invoke');

export const permissions = subgraphShield({
  Query: { models: readModels, model: and(readModels, modelArgument) },
  Mutation: { chat: and(invokeChat, chatInputModel) },
  Subscription: { chatStream: and(invokeChat, chatInputModel) },
  Model: { '*': and(readModels, modelVisible) },
  // Values inside answers the root rules already allowed.
  ModelHealth: allow,
  ModelPricing: allow,
  ServedBy: allow,
  ChatCompletion: allow,
  ToolCall: allow,
  TokenUsage: allow,
  ChatDelta: allow,
  ChatCompleted: allow,
  ChatFailed: allow,
});
