/**
 * The small node:http layer every modelgraph server shares: health, readiness and metrics
 * endpoints, bounded body reading, a listen helper that reports the bound port, and a drain that
 * stops accepting and waits for in-flight requests up to a deadline.
 */
import { once } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { WebSocketServer } from 'ws';
import { ErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';

export const HEALTH_PATH = '/healthz';
export const READY_PATH = '/readyz';
export const METRICS_PATH = '/metrics';

export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  response.end(text);
}

/**
 * Answers /healthz (the process is up), /readyz (it can serve: `isReady()`) and /metrics.
 * Returns false for any other path so the caller handles it.
 */
export async function serveOperationalEndpoints(
  request: IncomingMessage,
  response: ServerResponse,
  { registry, isReady }: { registry: Registry; isReady: () => boolean | Promise<boolean> },
): Promise<boolean> {
  const path = (request.url ?? '/').split('?')[0];
  if (request.method !== 'GET' && request.method !== 'HEAD') return false;
  switch (path) {
    case HEALTH_PATH:
      sendJson(response, 200, { status: 'ok' });
      return true;
    case READY_PATH: {
      const ready = await isReady();
      sendJson(response, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready' });
      return true;
    }
    case METRICS_PATH: {
      const text = await registry.metrics();
      response.writeHead(200, { 'content-type': registry.contentType });
      response.end(text);
      return true;
    }
    default:
      return false;
  }
}

export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
}

/** Reads a request body, refusing (without buffering the rest) beyond `limit` bytes. */
export function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limit) return Promise.reject(new BodyTooLargeError(`request body over ${limit} bytes`));
  // Events rather than `for await`: the async iterator costs a promise per chunk and a tick more
  // at the end, on every request's way to its first byte.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (error?: Error) => {
      request.off('data', onData).off('end', onEnd).off('error', done).off('close', onClose);
      if (error) reject(error);
      else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else {
        // Stop reading; what the caller does next (a 413 and a closed connection) ends it.
        request.pause();
        done(new BodyTooLargeError(`request body over ${limit} bytes`));
      }
    };
    const onEnd = () => done();
    // The client went away before the body was whole.
    const onClose = () => done(new Error('the request was aborted before its body was read'));
    request.on('data', onData).on('end', onEnd).on('error', done).on('close', onClose);
  });
}

/**
 * Answers a request whose handling threw: 413 for an oversized body, else a masked 500 (or a
 * dropped connection when the response had already started). The error itself goes to the log.
 */
export function sendRequestFailure(response: ServerResponse, error: unknown, log: Logger): void {
  if (error instanceof BodyTooLargeError) {
    sendJson(
      response,
      413,
      { errors: [{ message: error.message, extensions: { code: ErrorCode.BAD_USER_INPUT } }] },
      { connection: 'close' },
    );
    return;
  }
  log.error({ err: error }, 'request failed');
  if (!response.headersSent) {
    sendJson(response, 500, { errors: [{ message: 'Internal server error', extensions: { code: ErrorCode.INTERNAL_SERVER_ERROR } }] });
  } else {
    response.destroy();
  }
}

export type UpgradeVerdict = { accept: true } | { accept: false; status: number; reason: string };

/**
 * The WebSocket server for GraphQL on `path`, sharing the HTTP server's port. `verify` decides
 * each upgrade (e.g. 503 while draining, so clients go to another replica).
 */
export function createWebSocketServer(
  server: Server,
  path: string,
  maxPayload: number,
  verify: (request: IncomingMessage) => UpgradeVerdict,
): WebSocketServer {
  return new WebSocketServer({
    server,
    path,
    maxPayload,
    verifyClient: (info, accept) => {
      const verdict = verify(info.req);
      if (verdict.accept) accept(true);
      else accept(false, verdict.status, verdict.reason);
    },
  });
}

/**
 * Closes every WebSocket: `dispose` sends each a close frame (1001); peers that have not closed
 * within `waitMs` are terminated, so one silent peer cannot hold shutdown for ws' 30 s timeout.
 */
export async function closeWebSockets(wsServer: WebSocketServer, dispose: () => void | Promise<void>, waitMs = 1_000): Promise<void> {
  const disposed = Promise.resolve(dispose());
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), waitMs);
  });
  const outcome = await Promise.race([disposed.then(() => 'closed' as const), late]);
  clearTimeout(timer);
  if (outcome === 'late') {
    for (const client of wsServer.clients) client.terminate();
    await disposed;
  }
}

export async function listen(server: Server, host: string, port: number): Promise<number> {
  server.listen(port, host);
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/**
 * Stops accepting connections and closes idle keep-alive sockets (upgraded WebSockets are not
 * affected). The returned `closed` resolves once every connection is gone; `closeAll` ends the
 * ones still open, for when the grace period is over.
 */
export function stopAccepting(server: Server): { closed: Promise<void>; closeAll(): Promise<void> } {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  return {
    closed,
    async closeAll() {
      server.closeAllConnections();
      await closed;
    },
  };
}
