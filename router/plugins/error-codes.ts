/**
 * Gives every error the router returns a code from the one enum and the request id, and masks
 * the rest. Codes are set where an error is made, not guessed from its shape afterwards:
 * - edge limits (router/plugins/edge-limits.ts) → OPERATION_LIMIT_EXCEEDED with `limit` and `max`;
 * - parse failures → GRAPHQL_PARSE_FAILED; validation failures → GRAPHQL_VALIDATION_FAILED;
 *   variables that do not coerce → BAD_USER_INPUT (checked here before execution);
 * - Yoga's HTTP-level request errors (they carry `extensions.http`) → BAD_USER_INPUT, or
 *   FORBIDDEN for a 403 (CSRF prevention);
 * - a coded error from a subgraph passes through; an uncoded failure to reach or read one becomes
 *   DOWNSTREAM_SERVICE_ERROR;
 * - anything else becomes "Internal server error" (INTERNAL_SERVER_ERROR), logged with its cause.
 */
import { GraphQLError, getOperationAST, getVariableValues, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { ErrorCode, isErrorCode } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import { REQUEST_ID_HEADER } from '../../platform/serving/request-id.ts';
import { brokenLimitOf } from './edge-limits.ts';
import { requestIdOf } from './request-id.ts';

function rebuild(error: GraphQLError, message: string, extensions: Record<string, unknown>): GraphQLError {
  return new GraphQLError(message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    extensions,
  });
}

/** graphql-js's "Did you mean ...?" hints (fields, enum values, input fields, types). */
const SUGGESTION = /\s*Did you mean [^?]*\?/g;

function withCode(error: GraphQLError, code: ErrorCode, requestId?: string, suggestions = true): GraphQLError {
  const limit = brokenLimitOf(error);
  if (limit)
    return rebuild(error, error.message.replace(/^Syntax Error: /, ''), {
      code: ErrorCode.OPERATION_LIMIT_EXCEEDED,
      ...limit,
      ...(requestId && { requestId }),
    });
  const message = suggestions ? error.message : error.message.replace(SUGGESTION, '');
  if (isErrorCode(error.extensions?.code) && !requestId && message === error.message) return error;
  const current = isErrorCode(error.extensions?.code) ? error.extensions.code : code;
  return rebuild(error, message, { ...error.extensions, code: current, ...(requestId && { requestId }) });
}

const INTERNAL = 'Internal server error';

/** Yoga's `maskedErrors.maskError`. */
export function createErrorMasker(log: Logger) {
  return (error: unknown): Error => {
    if (error instanceof GraphQLError) {
      const code = error.extensions?.code;
      if (isErrorCode(code)) {
        return code === ErrorCode.INTERNAL_SERVER_ERROR && error.message !== INTERNAL
          ? rebuild(error, INTERNAL, { ...error.extensions })
          : error;
      }
      const original = error.originalError;
      if (original instanceof GraphQLError && isErrorCode(original.extensions?.code)) {
        return rebuild(error, original.message, { ...original.extensions });
      }
      // The gateway tags what went wrong talking to a subgraph (unreachable, HTTP error, bad body).
      const serviceName = error.extensions?.serviceName;
      if (typeof serviceName === 'string') {
        log.warn({ serviceName, subgraphError: { message: error.message, code } }, 'subgraph request failed');
        return rebuild(error, `The ${serviceName} service failed to answer.`, { code: ErrorCode.DOWNSTREAM_SERVICE_ERROR, serviceName });
      }
      // Yoga's own errors about the HTTP request (bad JSON, mutation over GET, …) carry a status.
      if (error.extensions?.http !== undefined) {
        const { code: _code, originalError: _original, ...extensions } = error.extensions;
        const status = (extensions.http as { status?: number } | undefined)?.status;
        return rebuild(error, error.message, { ...extensions, code: status === 403 ? ErrorCode.FORBIDDEN : ErrorCode.BAD_USER_INPUT });
      }
    }
    log.error({ err: error }, 'unexpected error');
    return new GraphQLError(INTERNAL, {
      ...(error instanceof GraphQLError && { path: error.path, nodes: error.nodes }),
      extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR },
    });
  };
}

function addRequestId(result: ExecutionResult, requestId: string | null | undefined): ExecutionResult {
  if (!result.errors?.length || !requestId || result.errors.every((error) => error.extensions?.requestId)) return result;
  return {
    ...result,
    errors: result.errors.map((error) =>
      error.extensions?.requestId
        ? error
        : new GraphQLError(error.message, {
            nodes: error.nodes,
            source: error.source,
            positions: error.positions,
            path: error.path,
            originalError: error.originalError,
            extensions: { ...error.extensions, requestId },
          }),
    ),
  };
}

/** Variables that do not coerce to the operation's types, as coded errors; undefined if they do. */
function variableErrors(args: ExecutionArgs, requestId: string | undefined, suggestions: boolean): ExecutionResult | undefined {
  const operation = getOperationAST(args.document, args.operationName);
  if (!operation?.variableDefinitions?.length) return undefined;
  const coerced = getVariableValues(args.schema, operation.variableDefinitions, (args.variableValues ?? {}) as Record<string, unknown>);
  if (!coerced.errors) return undefined;
  return {
    errors: coerced.errors.map((error) => {
      const coded = withCode(error, ErrorCode.BAD_USER_INPUT, requestId, suggestions);
      // A request error, as the GraphQL over HTTP spec words it: 400 under
      // application/graphql-response+json, and (`spec`) still 200 under application/json.
      return rebuild(coded, coded.message, { ...coded.extensions, http: { spec: true, status: 400 } });
    }),
  };
}

const REFUSED = Symbol('refused');

/** Stops an operation whose variables do not coerce; otherwise returns its request id. */
function refuseBadVariables(
  args: ExecutionArgs,
  stop: (result: ExecutionResult) => void,
  suggestions: boolean,
): string | undefined | typeof REFUSED {
  const requestId = requestIdOf(args.contextValue);
  const invalid = variableErrors(args, requestId, suggestions);
  if (!invalid) return requestId;
  stop(invalid);
  return REFUSED;
}

/** `suggestions: false` strips "Did you mean ...?" from every message (they map the schema for a caller). */
export function useErrorCodes({ suggestions = true }: { suggestions?: boolean } = {}): GatewayPlugin {
  return {
    onParse({ context }) {
      return ({ result, replaceParseResult }) => {
        if (result instanceof GraphQLError)
          replaceParseResult(withCode(result, ErrorCode.GRAPHQL_PARSE_FAILED, requestIdOf(context), suggestions));
      };
    },
    onValidate({ context }) {
      return ({ result, setResult }) => {
        if (result.length)
          setResult(result.map((error) => withCode(error, ErrorCode.GRAPHQL_VALIDATION_FAILED, requestIdOf(context), suggestions)));
      };
    },
    onExecute({ args, setResultAndStopExecution }) {
      const requestId = refuseBadVariables(args, setResultAndStopExecution, suggestions);
      if (requestId === REFUSED) return;
      return {
        onExecuteDone({ result, setResult }) {
          if (!(Symbol.asyncIterator in result)) setResult(addRequestId(result, requestId));
        },
      };
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const requestId = refuseBadVariables(args, setResultAndStopExecution, suggestions);
      if (requestId === REFUSED) return;
      return {
        onSubscribeResult({ result, setResult }) {
          if (!(Symbol.asyncIterator in result)) {
            setResult(addRequestId(result, requestId));
            return;
          }
          return { onNext: ({ result: next, setResult: setNext }) => setNext(addRequestId(next, requestId)) };
        },
      };
    },
    // Errors made before envelop runs (Yoga's HTTP-level ones) only pass through here.
    onResultProcess({ request, result, setResult }) {
      const requestId = request.headers.get(REQUEST_ID_HEADER);
      if (Array.isArray(result)) setResult(result.map((item) => addRequestId(item as ExecutionResult, requestId)));
      else if (result && typeof result === 'object' && 'errors' in result) setResult(addRequestId(result as ExecutionResult, requestId));
    },
  };
}
