/**
 * Gives every error the router returns a code from the one enum, and masks the rest.
 * - parse failures → GRAPHQL_PARSE_FAILED; validation failures → GRAPHQL_VALIDATION_FAILED;
 *   variable coercion failures (no path, no data) → BAD_USER_INPUT;
 * - a coded error from a subgraph passes through as it is; an uncoded failure to reach or read a
 *   subgraph becomes DOWNSTREAM_SERVICE_ERROR;
 * - anything else becomes "Internal server error" (INTERNAL_SERVER_ERROR), logged with its cause.
 * Every error also carries the request id, so a user can quote it and an operator can find it.
 */
import { GraphQLError, type ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { ErrorCode, isErrorCode } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import { REQUEST_ID_HEADER } from '../../platform/request-id.ts';

function withCode(error: GraphQLError, code: ErrorCode): GraphQLError {
  if (isErrorCode(error.extensions?.code)) return error;
  return new GraphQLError(error.message, {
    nodes: error.nodes,
    source: error.source,
    positions: error.positions,
    path: error.path,
    originalError: error.originalError,
    extensions: { ...error.extensions, code },
  });
}

/**
 * Yoga's `maskedErrors.maskError`: keep coded errors; keep errors about the request itself (made by
 * Yoga or by graphql-js before execution) with their HTTP status, coded
 * BAD_USER_INPUT; mask everything else.
 */
export function createErrorMasker(log: Logger) {
  return (error: unknown): Error => {
    if (error instanceof GraphQLError) {
      if (isErrorCode(error.extensions?.code)) return error;
      const original = error.originalError;
      if (original instanceof GraphQLError && isErrorCode(original.extensions?.code)) {
        return new GraphQLError(original.message, { path: error.path, nodes: error.nodes, extensions: original.extensions });
      }
      // The gateway tags what went wrong talking to a subgraph (unreachable, HTTP error, bad body).
      const serviceName = error.extensions?.serviceName;
      if (typeof serviceName === 'string') {
        log.warn({ serviceName, subgraphError: { message: error.message, code: error.extensions?.code } }, 'subgraph request failed');
        return new GraphQLError(`The ${serviceName} service failed to answer.`, {
          path: error.path,
          nodes: error.nodes,
          extensions: { code: ErrorCode.DOWNSTREAM_SERVICE_ERROR, serviceName },
        });
      }
      // Variable coercion fails inside graphql-js with a GraphQLError of its own and no path.
      const aboutTheRequest = !original || (original instanceof GraphQLError && !error.path);
      if (aboutTheRequest) {
        const { code: _code, originalError: _original, ...extensions } = error.extensions ?? {};
        return new GraphQLError(error.message, {
          nodes: error.nodes,
          source: error.source,
          positions: error.positions,
          path: error.path,
          extensions: { ...extensions, code: ErrorCode.BAD_USER_INPUT },
        });
      }
    }
    log.error({ err: error }, 'unexpected error');
    return new GraphQLError('Internal server error', {
      ...(error instanceof GraphQLError && { path: error.path, nodes: error.nodes }),
      extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR },
    });
  };
}

function addRequestId(result: ExecutionResult, requestId: string | null): ExecutionResult {
  if (!result.errors?.length || !requestId) return result;
  return {
    ...result,
    errors: result.errors.map(
      (error) =>
        new GraphQLError(error.message, {
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

export function useErrorCodes(): GatewayPlugin {
  return {
    onParse() {
      return ({ result, replaceParseResult }) => {
        if (result instanceof GraphQLError) replaceParseResult(withCode(result, ErrorCode.GRAPHQL_PARSE_FAILED));
      };
    },
    onValidate() {
      return ({ result, setResult }) => {
        if (result.length) setResult(result.map((error) => withCode(error, ErrorCode.GRAPHQL_VALIDATION_FAILED)));
      };
    },
    onResultProcess({ request, result, setResult }) {
      const requestId = request.headers.get(REQUEST_ID_HEADER);
      if (Array.isArray(result)) {
        setResult(result.map((item) => addRequestId(item as ExecutionResult, requestId)));
      } else if (result && typeof result === 'object' && 'errors' in result) {
        setResult(addRequestId(result as ExecutionResult, requestId));
      }
    },
  };
}
