/**
 * Which browser origins may use the API. Browsers send `Origin` on cross-origin requests and on
 * every WebSocket; without this check any web page a user visits could drive the router (and
 * spend its provider keys) from their browser. Requests without `Origin` come from non-browser
 * clients and are allowed; a page served from the router's own host is same-origin.
 */
import type { IncomingMessage } from 'node:http';

export function originAllowed(request: IncomingMessage, allowedOrigins: readonly string[]): boolean {
  const origin = request.headers.origin;
  if (origin === undefined) return true;
  if (allowedOrigins.includes('*') || allowedOrigins.includes(origin)) return true;
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    return false; // "null" (sandboxed frames, file://) and garbage
  }
}

/** The gateway runtime's CORS setting: none unless origins are configured. */
export function corsOptions(allowedOrigins: readonly string[], csrfHeaders: readonly string[] = []) {
  if (allowedOrigins.length === 0) return false as const;
  return {
    origin: allowedOrigins.includes('*') ? '*' : [...allowedOrigins],
    credentials: !allowedOrigins.includes('*'),
    methods: ['GET', 'POST'],
    // The CSRF-prevention headers too: a browser app sends one with every GET.
    allowedHeaders: ['content-type', 'authorization', 'x-api-key', 'x-request-id', 'accept', ...csrfHeaders],
    exposedHeaders: ['x-request-id'],
  };
}

/** Headers a browser app sends to the REST doors (the SDKs' own among them). */
const REST_REQUEST_HEADERS = [
  'content-type',
  'authorization',
  'x-api-key',
  'x-request-id',
  'x-modelgraph-tags',
  'anthropic-version',
  'anthropic-beta',
  'anthropic-dangerous-direct-browser-access',
  'openai-beta',
  'openai-organization',
  'openai-project',
  'idempotency-key',
  'x-stainless-arch',
  'x-stainless-async',
  'x-stainless-helper',
  'x-stainless-helper-method',
  'x-stainless-lang',
  'x-stainless-os',
  'x-stainless-package-version',
  'x-stainless-retry-count',
  'x-stainless-runtime',
  'x-stainless-runtime-version',
  'x-stainless-timeout',
];

/**
 * CORS headers for a REST door's answer to a cross-origin browser request from a configured
 * origin (the origin check has already refused others); none for same-origin and non-browser
 * callers. `preflight` adds what an OPTIONS request asks about.
 */
export function restCorsHeaders(request: IncomingMessage, allowedOrigins: readonly string[], preflight: boolean): Record<string, string> {
  const origin = request.headers.origin;
  if (origin === undefined || allowedOrigins.length === 0) return {};
  if (!allowedOrigins.includes('*') && !allowedOrigins.includes(origin)) return {};
  const wildcard = allowedOrigins.includes('*');
  return {
    'access-control-allow-origin': wildcard ? '*' : origin,
    ...(!wildcard && { vary: 'Origin', 'access-control-allow-credentials': 'true' }),
    'access-control-expose-headers': 'x-request-id, retry-after',
    ...(preflight && {
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': REST_REQUEST_HEADERS.join(', '),
      'access-control-max-age': '600',
    }),
  };
}
