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
