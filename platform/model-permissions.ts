/**
 * Which models a principal may use, judged against the catalog: a key's allow-list names model ids
 * or route ids; a model is reachable directly or through an allowed route. Every subgraph that
 * serves or shows models uses these in its shield rules and listings.
 */
import type { ModelCatalog } from '../providers/catalog.ts';
import { mayUseModel, type Principal } from './principal.ts';

/** True when the principal may use what `ref` names (a model id, alias, pin or route). */
export function allowsRef(principal: Principal, catalog: ModelCatalog, ref: string): boolean {
  if (principal.allowedModels === null) return true;
  if (catalog.isRoute(ref)) return mayUseModel(principal, [ref]);
  const model = catalog.resolve(ref);
  return model !== undefined && mayUseModel(principal, [model.id]);
}

/** True when the principal may see model `id`: allowed itself, or served by an allowed route. */
export const modelReachable = (principal: Principal, catalog: ModelCatalog, id: string) => mayUseModel(principal, [id, ...catalog.routesThrough(id)]);
