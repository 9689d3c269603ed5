/**
 * The one error vocabulary of modelgraph. Every error a client sees carries `extensions.code` from
 * `ErrorCode`; the same enum is published in the schema (`enum ErrorCode`, checked by a test), so
 * clients can switch on it with generated types.
 */
import { GraphQLError } from 'graphql';

export const ErrorCode = {
  /** The request is malformed or an argument is out of range; `extensions.field` names it. */
  BAD_USER_INPUT: 'BAD_USER_INPUT',
  /** The document is not valid GraphQL syntax. */
  GRAPHQL_PARSE_FAILED: 'GRAPHQL_PARSE_FAILED',
  /** The document does not validate against the schema (unknown field, bad enum value, ...). */
  GRAPHQL_VALIDATION_FAILED: 'GRAPHQL_VALIDATION_FAILED',
  /** No credential, or one that is unknown, malformed, expired or revoked (HTTP 401, WS close 4403). */
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /**
   * The caller is authenticated but may not do this: a missing scope, another tenant's data, a
   * model outside the key's allow-list, or a browser origin not in `router.allowedOrigins`.
   */
  FORBIDDEN: 'FORBIDDEN',
  /**
   * The operation breaks an edge limit (depth, aliases, tokens, directives, open subscriptions);
   * `extensions.limit` names it and `extensions.max` gives the configured maximum.
   */
  OPERATION_LIMIT_EXCEEDED: 'OPERATION_LIMIT_EXCEEDED',
  /**
   * A `@rateLimit` on a field refused the call; `extensions.retryAfterMs`, `limit`, `remaining`,
   * `resetMs` and `field` say which and when (HTTP 429 with Retry-After and RateLimit-* headers).
   */
  RATE_LIMITED: 'RATE_LIMITED',
  /** The operation's estimated cost (`@cost`, `@listSize`) is over the tenant's maximum; `extensions.cost`, `maxCost`. */
  COST_ESTIMATED_TOO_EXPENSIVE: 'COST_ESTIMATED_TOO_EXPENSIVE',
  /**
   * A tokens-per-minute limit (of the key, the tenant or the model) has no room for this call's
   * prompt plus maximum output; `extensions.limit`, `scope`, `max`, `remaining`, `needed`, `resetAt`.
   */
  TOKEN_LIMIT_EXCEEDED: 'TOKEN_LIMIT_EXCEEDED',
  /** A USD budget (per day or month, of the key or the tenant) has no room for this call's worst case; same extensions. */
  BUDGET_EXCEEDED: 'BUDGET_EXCEEDED',
  /** The tenant, key or other object named by id does not exist (or is not the caller's to see). */
  NOT_FOUND: 'NOT_FOUND',
  /** No model, alias or `id@version` pin matches the requested model. */
  MODEL_NOT_FOUND: 'MODEL_NOT_FOUND',
  /** The version is retired; `extensions.replacement` names what to use instead. */
  MODEL_RETIRED: 'MODEL_RETIRED',
  /** The model exists but cannot do what was asked (e.g. chat with an embedding model). */
  MODEL_CAPABILITY_UNSUPPORTED: 'MODEL_CAPABILITY_UNSUPPORTED',
  /** A chat request without messages. */
  EMPTY_MESSAGES: 'EMPTY_MESSAGES',
  /** Prompt tokens plus requested output exceed the model's context window. */
  CONTEXT_WINDOW_EXCEEDED: 'CONTEXT_WINDOW_EXCEEDED',
  /** The provider refused the request as malformed (HTTP 400, 404, 413, 422). */
  UPSTREAM_BAD_REQUEST: 'UPSTREAM_BAD_REQUEST',
  /** The provider refused our credentials (HTTP 401, 403). */
  UPSTREAM_AUTH_FAILED: 'UPSTREAM_AUTH_FAILED',
  /** The provider rate limited us (HTTP 429); `extensions.retryAfterMs` when it said. */
  UPSTREAM_RATE_LIMITED: 'UPSTREAM_RATE_LIMITED',
  /** The provider failed or is overloaded (HTTP 5xx, 529) or could not be reached. */
  UPSTREAM_UNAVAILABLE: 'UPSTREAM_UNAVAILABLE',
  /** The provider did not answer, or went silent, within the configured timeouts. */
  UPSTREAM_TIMEOUT: 'UPSTREAM_TIMEOUT',
  /** The provider answered with something that is not its documented wire format. */
  UPSTREAM_BAD_RESPONSE: 'UPSTREAM_BAD_RESPONSE',
  /** The provider's stream ended before it finished the answer. */
  UPSTREAM_STREAM_INTERRUPTED: 'UPSTREAM_STREAM_INTERRUPTED',
  /** An agent run needed more model calls than its agent's `maxSteps`. */
  STEP_LIMIT_EXCEEDED: 'STEP_LIMIT_EXCEEDED',
  /** An agent run ran longer than its agent's `maxWallTimeSeconds`. */
  TIME_LIMIT_EXCEEDED: 'TIME_LIMIT_EXCEEDED',
  /** A tool's result was larger than `agents.maxToolResultBytes`; the model is told instead of getting it. */
  TOOL_RESULT_TOO_LARGE: 'TOOL_RESULT_TOO_LARGE',
  /** The model asked for a tool that is not in its agent's list; nothing ran. */
  TOOL_NOT_ALLOWED: 'TOOL_NOT_ALLOWED',
  /**
   * The agent run was cancelled: by a caller, or because its owner's key was revoked or expired; or
   * an operation's caller left before it finished (closed its connection or unsubscribed).
   */
  CANCELLED: 'CANCELLED',
  /** A dependency the request needs (the key store in Redis) is unreachable; retry shortly (HTTP 503). */
  SERVICE_UNAVAILABLE: 'SERVICE_UNAVAILABLE',
  /** The server is shutting down; retry against another replica. */
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  /**
   * This replica is at its limit of concurrent operations or streams (router.admission); retry
   * after `extensions.retryAfterMs`, here or on another replica (HTTP 503 with Retry-After).
   */
  OVERLOADED: 'OVERLOADED',
  /** A subgraph could not be reached or failed; the router masks its details. */
  DOWNSTREAM_SERVICE_ERROR: 'DOWNSTREAM_SERVICE_ERROR',
  /** Anything unexpected; details are in the server log under `extensions.requestId`. */
  INTERNAL_SERVER_ERROR: 'INTERNAL_SERVER_ERROR',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const CODES = new Set<string>(Object.values(ErrorCode));
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODES.has(value);
}

/** A GraphQL error with a code from the enum and optional machine-readable details. */
export function codedError(code: ErrorCode, message: string, details: Record<string, unknown> = {}): GraphQLError {
  return new GraphQLError(message, { extensions: { ...details, code } });
}

/** A BAD_USER_INPUT error naming the argument at fault in `extensions.field`, with any other details beside it. */
export function badInput(field: string, message: string, details: Record<string, unknown> = {}): GraphQLError {
  return codedError(ErrorCode.BAD_USER_INPUT, message, { field, ...details });
}

/** The code an error carries, or undefined. Never throws. */
export function codeOf(error: unknown): ErrorCode | undefined {
  if (error instanceof GraphQLError) {
    const code = error.extensions?.code;
    if (isErrorCode(code)) return code;
    if (error.originalError) return codeOf(error.originalError);
    return undefined;
  }
  if (error && typeof error === 'object' && 'code' in error && isErrorCode((error as { code: unknown }).code)) {
    return (error as { code: ErrorCode }).code;
  }
  return undefined;
}
