/**
 * Who may embed: the `embeddings:invoke` scope and a model the key may use (its allow-list, by id,
 * alias or pin). `Model.dimensions` is read like the rest of a model: `models:read` and a model
 * the key may see, however it was reached (`_entities` included).
 */
import { allow, and, forbidden, requireScope, rule, subgraphShield } from '../../platform/authorization.ts';
import { allowsRef, modelReachable } from '../../platform/model-permissions.ts';
import type { EmbeddingsContext } from './context.ts';

const notAllowed = (ref: string) => forbidden(`this key may not use model "${ref}"`);

const inputModel = rule('embeddings-input-model', { cache: 'strict' })((_parent, args: { input: { model: string } }, { principal, catalog }: EmbeddingsContext) =>
  allowsRef(principal, catalog, args.input.model) ? true : notAllowed(args.input.model),
);

const modelVisible = rule('embeddings-model-visible', { cache: 'no_cache' })((model: { id: string }, _args, { principal, catalog }: EmbeddingsContext) =>
  modelReachable(principal, catalog, model.id) ? true : notAllowed(model.id),
);

export const permissions = subgraphShield({
  Query: { embeddings: and(requireScope('embeddings:invoke'), inputModel) },
  Model: { '*': and(requireScope('models:read'), modelVisible) },
  Embeddings: allow,
  EmbeddingsUsage: allow,
});
