/**
 * Errors of the REST doors in each API's own format, coded with our ErrorCode. OpenAI:
 * `{ error: { message, type, param, code } }`; Anthropic: `{ type: "error", error: { type,
 * message, code } }`; each with the status its SDK maps to an error class (400 BadRequest, 401
 * Authentication, 403 PermissionDenied, 404 NotFound, 413, 429 RateLimit with Retry-After, 5xx).
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
  [ErrorCode.OPERATION_LIMIT_EXCEEDED]: { status: 429, type: 'rate_limit_error' },
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
  [ErrorCode.OVERLOADED]: { status: 503, type: 'api_error' },
  [ErrorCode.CANCELLED]: { status: 499, type: 'api_error' },
  [ErrorCode.INTERNAL_SERVER_ERROR]: { status: 500, type: 'api_error' },
};

export interface RestError {
  code: ErrorCode;
  message: string;
  /** The request field at fault, when one is. */
  param?: string;
  retryAfterMs?: number;
  /** The error's own HTTP status and headers, when it carries them (else the code's). */
  status?: number;
  headers?: Record<string, string>;
}

export type RestFormat = 'openai' | 'anthropic';

/** The API a path belongs to: Anthropic's Messages API, else OpenAI's. */
export const restFormatOf = (path: string): RestFormat =>
  path === '/v1/messages' || path.startsWith('/v1/messages/') ? 'anthropic' : 'openai';

const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  503: 'overloaded_error',
};

const statusOf = (code: ErrorCode) => (BY_CODE[code] ?? INVALID).status;

/** The Anthropic error object (also what a stream carries in its `error` event). */
export function anthropicErrorBody({ code, message }: RestError) {
  return { type: 'error', error: { type: ANTHROPIC_TYPES[statusOf(code)] ?? 'api_error', message, code } };
}

export function restErrorBody(format: RestFormat, error: RestError) {
  return format === 'anthropic' ? anthropicErrorBody(error) : openAiErrorBody(error);
}

/** The OpenAI error object (also what a stream carries in its `error` event). */
export function openAiErrorBody({ code, message, param }: RestError) {
  return { error: { message, type: (BY_CODE[code] ?? INVALID).type, param: param ?? null, code } };
}

export function sendRestError(
  response: ServerResponse,
  format: RestFormat,
  error: RestError,
  requestId: string,
  status = error.status ?? statusOf(error.code),
  headers: Record<string, string> = {},
): void {
  if (response.headersSent) return;
  const text = JSON.stringify(restErrorBody(format, error));
  response.writeHead(status, {
    ...error.headers,
    ...headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    [REQUEST_ID_HEADER]: requestId,
    ...(error.retryAfterMs !== undefined && { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterMs / 1000))) }),
  });
  response.end(text);
}

export const sendOpenAiError = (response: ServerResponse, error: RestError, requestId: string) =>
  sendRestError(response, 'openai', error, requestId);
