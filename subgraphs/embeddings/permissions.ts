/**
 * Who may embed: the `embeddings:invoke` scope and a model the key may use (its allow-list, by id,
 * alias or pin). `Model.dimensions` is read like the rest of a model: `models:read` and a model
 * the key may see, however it was reached (`_entities` included).
 */
import { allow, and, requireScope, subgraphShield } from '../../platform/identity/authorization.ts';
import { modelArgumentRule, modelVisibleRule } from '../../providers/model-permissions.ts';

const inputModel = modelArgumentRule('embeddings-input-model', (args: { input: { model: string } }) => args.input.model);
const modelVisible = modelVisibleRule('embeddings-model-visible');

export const permissions = subgraphShield({
  Query: { embeddings: and(requireScope('embeddings:invoke'), inputModel) },
  Model: { '*': and(requireScope('models:read'), modelVisible) },
  Embeddings: allow,
  EmbeddingsUsage: allow,
});
