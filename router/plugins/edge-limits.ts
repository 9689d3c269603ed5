/**
 * Edge limits on the operation document, checked before anything executes: lexical tokens (while
 * parsing), depth, aliases, directives and cost (validation rules), and no "Did you mean ...?"
 * field suggestions unless enabled — all from GraphQL Armor. Their refusals are recorded here so
 * the error-codes plugin can code them OPERATION_LIMIT_EXCEEDED with the limit's name and maximum.
 *
 * The cost limit is what stops fragment explosions (fragments that each spread the next twice):
 * small documents under every other limit whose expansion doubles per level, which the gateway's
 * query planner would otherwise expand on the event loop. Armor's cost walk memoises fragments, so
 * it stays linear while the cost it computes grows as the expansion would.
 */
import { blockFieldSuggestionsPlugin } from '@escape.tech/graphql-armor-block-field-suggestions';
import { costLimitPlugin } from '@escape.tech/graphql-armor-cost-limit';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import type { GraphQLError, ValidationContext } from 'graphql';
import type { Config } from '../../platform/config.ts';

export interface BrokenLimit {
  limit: 'tokens' | 'depth' | 'aliases' | 'directives' | 'cost';
  max: number;
}

const broken = new WeakMap<GraphQLError, BrokenLimit>();

/** The edge limit an error reports, if it is one of these refusals. */
export const brokenLimitOf = (error: GraphQLError): BrokenLimit | undefined => broken.get(error);

/**
 * Options that record a refusal. A validation rule reports it as a validation error (thrown, it
 * would escape graphql-js's validate() as an unexpected error); the token limit runs in the parser,
 * where there is no validation context, so it throws as a parse error.
 */
function recordAs(limit: BrokenLimit['limit'], max: number) {
  const inParser = limit === 'tokens';
  return {
    n: max,
    exposeLimits: true,
    propagateOnRejection: inParser,
    onReject: [
      (context: ValidationContext | null, error: GraphQLError) => {
        broken.set(error, { limit, max });
        if (!inParser) context?.reportError(error);
      },
    ],
  };
}

export function useEdgeLimits(limits: Config['router']['limits']): GatewayPlugin[] {
  return [
    maxTokensPlugin(recordAs('tokens', limits.maxTokens)),
    // Fragments count at the depth they are spread at, so nesting through fragments is no way round.
    maxDepthPlugin({ ...recordAs('depth', limits.maxDepth), flattenFragments: true, ignoreIntrospection: false }),
    maxAliasesPlugin({ ...recordAs('aliases', limits.maxAliases), allowList: [] }),
    maxDirectivesPlugin(recordAs('directives', limits.maxDirectives)),
    costLimitPlugin({ ...recordAs('cost', limits.maxCost), maxCost: limits.maxCost, flattenFragments: true, ignoreIntrospection: false }),
    ...(limits.fieldSuggestions ? [] : [blockFieldSuggestionsPlugin()]),
  ] as GatewayPlugin[];
}
