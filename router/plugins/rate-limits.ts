/**
 * `@rateLimit(max, window, per)` from the supergraph, enforced in the router before any subgraph
 * is called. Every field of the operation that carries the directive counts one call (an alias
 * counts again) against its key: the field's coordinate and the caller's API key, tenant or
 * address. The first limit that refuses stops the operation with RATE_LIMITED, the retry time in
 * `extensions.retryAfterMs`, and over HTTP a 429 with `Retry-After` and `RateLimit-*` headers;
 * allowed HTTP calls carry `RateLimit-*` headers for the tightest limit they touched.
 */
import { degradedReporter, uncheckedRefusal, type FailMode } from './degraded.ts';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import {
  TypeInfo,
  getDirectiveValues,
  isObjectType,
  visit,
  visitWithTypeInfo,
  type DocumentNode,
  type GraphQLField,
  type GraphQLSchema,
} from 'graphql';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import { parseWindow, type RateDecision, type RateLimit, type RateLimiter } from '../rate-limiter.ts';
import { holderOf } from '../../platform/identity/principal.ts';
import { rateLimitKey } from '../../platform/redis/keys.ts';
import { callerOf, type CallerContext } from './identity.ts';

type Scope = 'API_KEY' | 'TENANT' | 'IP';
interface FieldLimit extends RateLimit {
  coordinate: string;
  per: Scope;
}

export type RateLimitOverrides = Record<string, { max: number; window: string; per: Scope }>;

/** Every field with `@rateLimit` (or a configured override), by coordinate, read once per schema. */
function limitsOf(schema: GraphQLSchema, overrides: RateLimitOverrides, log: Logger): Map<string, FieldLimit> {
  const directive = schema.getDirective('rateLimit');
  const limits = new Map<string, FieldLimit>();
  for (const [coordinate, values] of Object.entries(overrides)) {
    const [typeName, fieldName] = coordinate.split('.') as [string, string];
    const type = schema.getType(typeName);
    if (!isObjectType(type) || !type.getFields()[fieldName]) {
      log.error({ coordinate }, 'router.rateLimits names no field of the supergraph; ignored');
      continue;
    }
    limits.set(coordinate, { coordinate, max: values.max, windowMs: parseWindow(values.window)!, per: values.per });
  }
  if (!directive) return limits;
  for (const type of Object.values(schema.getTypeMap())) {
    if (!isObjectType(type) || type.name.startsWith('__')) continue;
    for (const field of Object.values(type.getFields()) as GraphQLField<unknown, unknown>[]) {
      if (!field.astNode) continue;
      const values = getDirectiveValues(directive, field.astNode) as { max: number; window: string; per: Scope } | undefined;
      if (!values) continue;
      const coordinate = `${type.name}.${field.name}`;
      if (limits.has(coordinate)) continue; // configured: the override wins
      const windowMs = parseWindow(values.window);
      if (!windowMs || values.max < 1) {
        log.error({ coordinate, ...values }, '@rateLimit ignored: max must be 1 or more and window like 30s, 1m, 1h');
        continue;
      }
      limits.set(coordinate, { coordinate, max: values.max, windowMs, per: values.per });
    }
  }
  return limits;
}

/** The limited fields an operation selects, once per occurrence (fragments included). */
function limitedSelections(schema: GraphQLSchema, document: DocumentNode, limits: Map<string, FieldLimit>): FieldLimit[] {
  const found: FieldLimit[] = [];
  const typeInfo = new TypeInfo(schema);
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      Field() {
        const parent = typeInfo.getParentType();
        const field = typeInfo.getFieldDef();
        const limit = parent && field ? limits.get(`${parent.name}.${field.name}`) : undefined;
        if (limit) found.push(limit);
      },
    }),
  );
  return found;
}

function holder(per: Scope, caller: CallerContext): string | undefined {
  const { principal, clientAddress } = caller;
  if (per === 'IP') return clientAddress ?? undefined;
  if (!principal) return undefined;
  if (per === 'TENANT') return principal.tenantId;
  return holderOf(principal);
}

/** Where a key's `limits.requestsPerMinute` counts, as a limit on every operation. */
export const KEY_REQUESTS_COORDINATE = 'ApiKey.requestsPerMinute';

/** The caller's key limit of requests a minute, as a limit of its own (none for other callers). */
function requestsPerMinuteOf({ principal }: CallerContext): FieldLimit | undefined {
  const max = principal?.requestsPerMinute;
  if (!max || !principal.keyId) return undefined;
  return { coordinate: KEY_REQUESTS_COORDINATE, max, windowMs: 60_000, per: 'API_KEY' };
}

function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  return {
    'ratelimit-limit': String(decision.limit),
    'ratelimit-remaining': String(decision.remaining),
    'ratelimit-reset': String(Math.ceil(decision.resetMs / 1000)),
  };
}

export function rateLimited(limit: FieldLimit, decision: RateDecision) {
  return codedError(
    ErrorCode.RATE_LIMITED,
    `rate limit of ${limit.max} calls per ${limit.windowMs / 1000} s for ${limit.coordinate} reached; retry in ${Math.ceil(decision.retryAfterMs / 1000)} s`,
    {
      field: limit.coordinate,
      per: limit.per,
      limit: limit.max,
      remaining: 0,
      retryAfterMs: decision.retryAfterMs,
      resetMs: decision.resetMs,
      http: { status: 429, headers: { 'retry-after': String(Math.ceil(decision.retryAfterMs / 1000)), ...rateLimitHeaders(decision) } },
    },
  );
}

/** How the rate limits are enforced, and who is told of what they decide. */
export interface RateLimitSettings {
  keyPrefix: string;
  overrides: RateLimitOverrides;
  /** What a limit that cannot be checked does (`router.rateLimitFailMode`). */
  failMode: FailMode;
  log: Logger;
  onRefused?: (field: string) => void;
  /** Each decision taken without the limiter, as its fail mode took it. */
  onDegraded?: (decision: 'allowed' | 'refused') => void;
}

/** The refusal of a call whose rate limit could not be checked, under `failMode: closed`. */
const unchecked = (limit: FieldLimit) =>
  uncheckedRefusal(`the rate limit of ${limit.coordinate} cannot be checked right now; retry`, { field: limit.coordinate });

export function useRateLimits(limiter: RateLimiter, settings: RateLimitSettings): GatewayPlugin {
  const { keyPrefix, overrides, failMode, log, onRefused = () => undefined } = settings;
  const degraded = degradedReporter(log, 'rate limits', failMode, settings.onDegraded);
  const bySchema = new WeakMap<GraphQLSchema, Map<string, FieldLimit>>();
  /** The limited selections of a document (parsed documents are cached and reused by the runtime). */
  const byDocument = new WeakMap<DocumentNode, FieldLimit[]>();
  /** The tightest allowed decision of an HTTP request, for its response headers. */
  const tightest = new WeakMap<object, RateDecision>();

  async function check(schema: GraphQLSchema, document: DocumentNode, context: unknown): Promise<Error | undefined> {
    let limits = bySchema.get(schema);
    if (!limits) {
      limits = limitsOf(schema, overrides, log);
      bySchema.set(schema, limits);
    }
    const caller = callerOf(context);
    const keyLimit = requestsPerMinuteOf(caller);
    if (limits.size === 0 && !keyLimit) return undefined;
    let selected = byDocument.get(document);
    if (!selected) {
      selected = limitedSelections(schema, document, limits);
      byDocument.set(document, selected);
    }
    // The key's own limit first: every operation (and REST call) is one request of it.
    for (const limit of keyLimit ? [keyLimit, ...selected] : selected) {
      const who = holder(limit.per, caller);
      if (who === undefined) continue;
      let decision: RateDecision;
      try {
        decision = await limiter.take(rateLimitKey(keyPrefix, limit.coordinate, limit.per, who), limit);
      } catch (error) {
        // The fail mode decides; a warning says so at most every few seconds (with how many calls).
        degraded.note(error, { coordinate: limit.coordinate });
        if (failMode === 'open') continue;
        return unchecked(limit);
      }
      if (!decision.allowed) {
        onRefused(limit.coordinate);
        return rateLimited(limit, decision);
      }
      const request = (context as { request?: object }).request;
      const previous = request && tightest.get(request);
      if (request && (!previous || decision.remaining < previous.remaining)) tightest.set(request, decision);
    }
    return undefined;
  }

  return {
    async onExecute({ args, setResultAndStopExecution }) {
      const refused = await check(args.schema, args.document, args.contextValue);
      if (refused) setResultAndStopExecution({ errors: [refused as never] });
    },
    async onSubscribe({ args, setResultAndStopExecution }) {
      const refused = await check(args.schema, args.document, args.contextValue);
      if (refused) setResultAndStopExecution({ errors: [refused as never] });
    },
    onResponse({ request, response }) {
      const decision = tightest.get(request);
      if (!decision) return;
      for (const [name, value] of Object.entries(rateLimitHeaders(decision))) response.headers.set(name, value);
    },
  };
}
