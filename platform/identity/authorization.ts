/**
 * What every subgraph's graphql-shield rules share: the fallback (deny, with a coded error), the
 * federation fields that must stay reachable (`_service` for composition, `_entities` for the
 * router's entity fetches, whose types carry their own rules), and scope rules.
 *
 * Rules sit on type fields, not only on root fields, because `_entities` reaches entity types
 * without passing any root field. A denied field is null with a FORBIDDEN error; the rest of the
 * response survives.
 */
import { allow, deny, rule, shield, type IRules } from 'graphql-shield';
import { ErrorCode, codedError } from '../errors.ts';
import { hasScope, type Scope } from './principal.ts';
import type { RequestContext } from '../serving/subgraph-server.ts';

export const forbidden = (message: string) => codedError(ErrorCode.FORBIDDEN, message);

/** Allowed when the caller holds `scope`; judged once per request. */
export const requireScope = (scope: Scope) =>
  rule(`scope:${scope}`, { cache: 'contextual' })((_parent, _args, { principal }: RequestContext) =>
    hasScope(principal, scope) ? true : forbidden(`this needs the ${scope} scope`),
  );

/** Shields a subgraph: its rules, federation's fields, and deny for every field without a rule. */
export function subgraphShield(rules: Record<string, Record<string, IRules> | IRules>) {
  const { Query = {}, ...types } = rules as Record<string, Record<string, IRules>>;
  return shield(
    {
      ...types,
      Query: { ...Query, _service: allow, _entities: allow },
      _Service: allow,
    } as IRules,
    {
      fallbackRule: deny,
      fallbackError: () => forbidden('no rule allows this field'),
      // Resolvers' own (coded) errors pass through unchanged.
      allowExternalErrors: true,
      debug: false,
    },
  );
}

export { allow, and, or, rule } from 'graphql-shield';
