/**
 * Edge limits on the operation document, checked before anything executes: lexical tokens (while
 * parsing), depth, aliases and directives (validation rules), and no "Did you mean ...?" field
 * suggestions unless enabled — all from GraphQL Armor. Their refusals are recorded here so the
 * error-codes plugin can code them OPERATION_LIMIT_EXCEEDED with the limit's name and maximum.
 */
import { blockFieldSuggestionsPlugin } from '@escape.tech/graphql-armor-block-field-suggestions';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import type { GraphQLError } from 'graphql';
import type { Config } from '../../platform/config.ts';

export interface BrokenLimit {
  limit: 'tokens' | 'depth' | 'aliases' | 'directives';
  max: number;
}

const broken = new WeakMap<GraphQLError, BrokenLimit>();

/** The edge limit an error reports, if it is one of these refusals. */
export const brokenLimitOf = (error: GraphQLError): BrokenLimit | undefined => broken.get(error);

function recordAs(limit: BrokenLimit['limit'], max: number) {
  return {
    n: max,
    exposeLimits: true,
    propagateOnRejection: true,
    onReject: [(_context: unknown, error: GraphQLError) => void broken.set(error, { limit, max })],
  };
}

export function useEdgeLimits(limits: Config['router']['limits']): GatewayPlugin[] {
  return [
    maxTokensPlugin(recordAs('tokens', limits.maxTokens)),
    // Fragments count at the depth they are spread at, so nesting through fragments is no way round.
    maxDepthPlugin({ ...recordAs('depth', limits.maxDepth), flattenFragments: true, ignoreIntrospection: false }),
    maxAliasesPlugin({ ...recordAs('aliases', limits.maxAliases), allowList: [] }),
    maxDirectivesPlugin(recordAs('directives', limits.maxDirectives)),
    ...(limits.fieldSuggestions ? [] : [blockFieldSuggestionsPlugin()]),
  ] as GatewayPlugin[];
}
