/**
 * Who may do what in the inference subgraph. Reading models needs `models:read`, chatting needs
 * `chat:invoke`, and a key with a model allow-list reaches only those models (by id, alias or
 * pin; a route only when the route itself is listed) — on root fields and on `Model` itself,
 * which other subgraphs reach through `_entities`.
 */
import { allow, and, requireScope, subgraphShield } from '../../platform/identity/authorization.ts';
import { modelArgumentRule, modelVisibleRule } from '../../providers/model-permissions.ts';

const modelArgument = modelArgumentRule('model-argument', (args: { id: string }) => args.id);
const chatInputModel = modelArgumentRule('chat-input-model', (args: { input: { model: string } }) => args.input.model);
const modelVisible = modelVisibleRule('model-visible');

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
