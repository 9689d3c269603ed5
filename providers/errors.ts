/**
 * The typed error every adapter raises for an upstream failure: the HTTP status (when there was a
 * response), whether retrying can help, and how long the provider asked us to wait.
 */
import type { ErrorCode } from '../platform/errors.ts';

export type ProviderErrorCode = Extract<
  ErrorCode,
  | 'UPSTREAM_BAD_REQUEST'
  | 'UPSTREAM_AUTH_FAILED'
  | 'UPSTREAM_RATE_LIMITED'
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'UPSTREAM_BAD_RESPONSE'
  | 'UPSTREAM_STREAM_INTERRUPTED'
>;

export interface ProviderErrorInit {
  code: ProviderErrorCode;
  provider: string;
  status?: number;
  retryable: boolean;
  retryAfterMs?: number;
  /** The provider's own message; logged, never shown to clients (it may echo request content). */
  upstreamMessage?: string;
  cause?: unknown;
}

export class ProviderError extends Error {
  override name = 'ProviderError';
  readonly code: ProviderErrorCode;
  readonly provider: string;
  readonly status: number | undefined;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  readonly upstreamMessage: string | undefined;

  constructor(message: string, init: ProviderErrorInit) {
    super(message, { cause: init.cause });
    this.code = init.code;
    this.provider = init.provider;
    this.status = init.status;
    this.retryable = init.retryable;
    this.retryAfterMs = init.retryAfterMs;
    this.upstreamMessage = init.upstreamMessage;
  }
}

/** Statuses after which the same request may succeed later (or at another target). */
const RETRYABLE_STATUSES = new Set([408, 409, 425, 429, 500, 502, 503, 504, 529]);

function codeForStatus(status: number): ProviderErrorCode {
  if (status === 401 || status === 403) return 'UPSTREAM_AUTH_FAILED';
  if (status === 429) return 'UPSTREAM_RATE_LIMITED';
  if (status === 408 || status === 504) return 'UPSTREAM_TIMEOUT';
  // 3xx: a redirect beyond the ones followed, as much a broken endpoint as a 5xx.
  if (status >= 500 || (status >= 300 && status < 400)) return 'UPSTREAM_UNAVAILABLE';
  return 'UPSTREAM_BAD_REQUEST';
}

/**
 * Reads `retry-after-ms` (OpenAI), then `retry-after` as seconds or as an HTTP date.
 * Returns undefined when absent or unreadable; never negative.
 */
export function parseRetryAfter(headers: Pick<Headers, 'get'>, now = Date.now()): number | undefined {
  const milliseconds = headers.get('retry-after-ms');
  if (milliseconds !== null && /^\d+(\.\d+)?$/.test(milliseconds.trim())) return Math.ceil(Number(milliseconds));
  const value = headers.get('retry-after')?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.ceil(Number(value) * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** `headers` is the response's, from undici or the global fetch alike. */
export function errorFromStatus(provider: string, status: number, headers: Pick<Headers, 'get'>, upstreamMessage?: string): ProviderError {
  const code = codeForStatus(status);
  const retryAfterMs = parseRetryAfter(headers);
  return new ProviderError(`${provider} answered HTTP ${status}`, {
    code,
    provider,
    status,
    retryable: RETRYABLE_STATUSES.has(status),
    ...(retryAfterMs !== undefined && { retryAfterMs }),
    ...(upstreamMessage !== undefined && { upstreamMessage }),
  });
}

/**
 * Maps a thrown fetch/socket/timeout error to a ProviderError. `phase` says how far the call got:
 * `connect` (no response yet) and `body` (reading a whole, non-streamed answer) have delivered
 * nothing to the client, so another attempt is safe; `stream` has, so it is not.
 */
export function errorFromException(provider: string, error: unknown, phase: 'connect' | 'body' | 'stream'): ProviderError {
  if (error instanceof ProviderError) return error;
  const retryable = phase !== 'stream';
  if (isTimeout(error)) {
    return new ProviderError(`${provider} timed out`, { code: 'UPSTREAM_TIMEOUT', provider, retryable, cause: error });
  }
  if (phase === 'stream') {
    return new ProviderError(`${provider} stream was interrupted`, {
      code: 'UPSTREAM_STREAM_INTERRUPTED',
      provider,
      retryable,
      cause: error,
    });
  }
  const message = phase === 'connect' ? `${provider} could not be reached` : `${provider} broke off its answer`;
  return new ProviderError(message, { code: 'UPSTREAM_UNAVAILABLE', provider, retryable, cause: error });
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function isTimeout(error: unknown): boolean {
  const { name, code, cause } = (error ?? {}) as { name?: string; code?: string; cause?: { name?: string; code?: string } };
  return name === 'TimeoutError' || cause?.name === 'TimeoutError' || TIMEOUT_CODES.has(code ?? '') || TIMEOUT_CODES.has(cause?.code ?? '');
}

/** What a client may read about a provider failure: our words, never the upstream's. */
export function publicMessage(error: ProviderError): string {
  switch (error.code) {
    case 'UPSTREAM_RATE_LIMITED':
      return `provider ${error.provider} is rate limiting requests`;
    case 'UPSTREAM_AUTH_FAILED':
      return `provider ${error.provider} refused modelgraph's credentials`;
    case 'UPSTREAM_BAD_REQUEST':
      return `provider ${error.provider} refused the request (HTTP ${error.status ?? 'error'})`;
    case 'UPSTREAM_TIMEOUT':
      return `provider ${error.provider} did not answer in time`;
    case 'UPSTREAM_BAD_RESPONSE':
      return `provider ${error.provider} sent a response modelgraph could not read`;
    case 'UPSTREAM_STREAM_INTERRUPTED':
      return `provider ${error.provider} stopped streaming before the answer finished`;
    case 'UPSTREAM_UNAVAILABLE':
      return `provider ${error.provider} is unavailable`;
  }
}

/** Machine-readable details of a provider failure for `extensions`. */
export function publicDetails(error: ProviderError): Record<string, unknown> {
  return {
    provider: error.provider,
    retryable: error.retryable,
    ...(error.status !== undefined && { upstreamStatus: error.status }),
    ...(error.retryAfterMs !== undefined && { retryAfterMs: error.retryAfterMs }),
  };
}
