/**
 * Errors of the REST doors in each API's own format, coded with our ErrorCode. OpenAI:
 * `{ error: { message, type, param, code } }` with the status its SDK maps to an error class
 * (400 BadRequest, 401 Authentication, 403 PermissionDenied, 404 NotFound, 429 RateLimit, 5xx).
 */
import type { ServerResponse } from 'node:http';
import { ErrorCode } from '../../platform/errors.ts';
import { REQUEST_ID_HEADER } from '../../platform/serving/request-id.ts';

interface Mapped {
  status: number;
  type: string;
}

const INVALID = { status: 400, type: 'invalid_request_error' };
const UPSTREAM = { status: 502, type: 'api_error' };

const BY_CODE: Partial<Record<ErrorCode, Mapped>> = {
  [ErrorCode.UNAUTHENTICATED]: { status: 401, type: 'authentication_error' },
  [ErrorCode.FORBIDDEN]: { status: 403, type: 'permission_error' },
  [ErrorCode.NOT_FOUND]: { status: 404, type: 'invalid_request_error' },
  [ErrorCode.MODEL_NOT_FOUND]: { status: 404, type: 'invalid_request_error' },
  [ErrorCode.MODEL_RETIRED]: { status: 404, type: 'invalid_request_error' },
  [ErrorCode.RATE_LIMITED]: { status: 429, type: 'rate_limit_error' },
  [ErrorCode.TOKEN_LIMIT_EXCEEDED]: { status: 429, type: 'rate_limit_error' },
  [ErrorCode.BUDGET_EXCEEDED]: { status: 429, type: 'insufficient_quota' },
  [ErrorCode.UPSTREAM_RATE_LIMITED]: { status: 429, type: 'rate_limit_error' },
  [ErrorCode.UPSTREAM_BAD_REQUEST]: INVALID,
  [ErrorCode.UPSTREAM_TIMEOUT]: { status: 504, type: 'api_error' },
  [ErrorCode.UPSTREAM_UNAVAILABLE]: UPSTREAM,
  [ErrorCode.UPSTREAM_AUTH_FAILED]: UPSTREAM,
  [ErrorCode.UPSTREAM_BAD_RESPONSE]: UPSTREAM,
  [ErrorCode.UPSTREAM_STREAM_INTERRUPTED]: UPSTREAM,
  [ErrorCode.DOWNSTREAM_SERVICE_ERROR]: UPSTREAM,
  [ErrorCode.SERVICE_UNAVAILABLE]: { status: 503, type: 'api_error' },
  [ErrorCode.SHUTTING_DOWN]: { status: 503, type: 'api_error' },
  [ErrorCode.CANCELLED]: { status: 499, type: 'api_error' },
  [ErrorCode.INTERNAL_SERVER_ERROR]: { status: 500, type: 'api_error' },
};

export interface RestError {
  code: ErrorCode;
  message: string;
  /** The request field at fault, when one is. */
  param?: string;
  retryAfterMs?: number;
}

/** The OpenAI error object (also what a stream carries in its `error` event). */
export function openAiErrorBody({ code, message, param }: RestError) {
  return { error: { message, type: (BY_CODE[code] ?? INVALID).type, param: param ?? null, code } };
}

export function sendOpenAiError(response: ServerResponse, error: RestError, requestId: string): void {
  const { status } = BY_CODE[error.code] ?? INVALID;
  const text = JSON.stringify(openAiErrorBody(error));
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    [REQUEST_ID_HEADER]: requestId,
    ...(error.retryAfterMs !== undefined && { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))) }),
  });
  response.end(text);
}
