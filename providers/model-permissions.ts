/**
 * Which models a principal may use, judged against the catalog: a key's allow-list names model ids
 * or route ids; a model is reachable directly or through an allowed route. Every subgraph that
 * serves or shows models uses these in its shield rules and listings.
 */
import type { ModelCatalog } from './catalog.ts';
import { forbidden, rule } from '../platform/identity/authorization.ts';
import { mayUseModel, type Principal } from '../platform/identity/principal.ts';

/** True when the principal may use what `ref` names (a model id, alias, pin or route). */
export function allowsRef(principal: Principal, catalog: ModelCatalog, ref: string): boolean {
  if (principal.allowedModels === null) return true;
  if (catalog.isRoute(ref)) return mayUseModel(principal, [ref]);
  const model = catalog.resolve(ref);
  return model !== undefined && mayUseModel(principal, [model.id]);
}

/** True when the principal may see model `id`: allowed itself, or served by an allowed route. */
export const modelReachable = (principal: Principal, catalog: ModelCatalog, id: string) =>
  mayUseModel(principal, [id, ...catalog.routesThrough(id)]);

/** What a subgraph's context must carry for the model rules. */
interface ModelRuleContext {
  principal: Principal;
  catalog: ModelCatalog;
}

const notAllowed = (ref: string) => forbidden(`this key may not use model "${ref}"`);

/**
 * A rule allowing the field when the key may use the model reference `refOf(args)` names. Judged
 * once per request and reference: the cache key is the reference, not a hash of every argument
 * (shield's 'strict' would hash a chat's whole prompt on every call).
 */
export const modelArgumentRule = <Args>(name: string, refOf: (args: Args) => string) =>
  rule(name, { cache: (_parent: unknown, args: Args) => refOf(args) })((_parent, args: Args, { principal, catalog }: ModelRuleContext) => {
    const ref = refOf(args);
    return allowsRef(principal, catalog, ref) ? true : notAllowed(ref);
  });

/**
 * A rule on `Model` fields: the model being read is reachable by the key, whoever reached it
 * (`_entities` included; a routed answer names the model that served it).
 */
export const modelVisibleRule = (name: string) =>
  rule(name, { cache: 'no_cache' })((model: { id: string }, _args, { principal, catalog }: ModelRuleContext) =>
    modelReachable(principal, catalog, model.id) ? true : notAllowed(model.id),
  );
