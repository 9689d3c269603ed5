/**
 * The HTTP side that every provider emulator shares: a loopback server on a free port, reading a
 * request whole, writing JSON and SSE, and playing a scripted stream with the ways a script can
 * break it (cut, malformed, stalled, in-stream error). Each emulator keeps only its wire format.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EmulatorLog, RecordedRequest, ScriptedChat } from './script.ts';

/** What `serve` gives every emulator: its address, its log's script and waiters, and `close`. */
export interface Served<A, R extends RecordedRequest> {
  baseUrl: string;
  requests: R[];
  script: (...answers: A[]) => void;
  nextAbort: () => Promise<RecordedRequest>;
  nextRequest: () => Promise<RecordedRequest>;
  close(): Promise<void>;
}

/**
 * Serves `handle` on a free loopback port; the base URL is the origin plus `basePath`. `close`
 * drops open connections first, since a stalled stream would hold the server open forever.
 */
export async function serve<A, R extends RecordedRequest>(
  log: EmulatorLog<A, R>,
  basePath: string,
  handle: (request: IncomingMessage, response: ServerResponse) => Promise<void>,
): Promise<Served<A, R>> {
  const server = createServer((request, response) => void handle(request, response));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}${basePath}`,
    requests: log.requests,
    script: log.script,
    nextAbort: log.nextAbort,
    nextRequest: log.nextRequest,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Reads a request whole: what a log records of it, and the body as received. The recorded body is
 * the parsed JSON, or {} when the body is empty or not JSON (`isJson` tells those apart).
 */
export async function readRequest(request: IncomingMessage): Promise<{ recorded: RecordedRequest; raw: Buffer; isJson: boolean }> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  let body: Record<string, unknown> = {};
  let isJson = true;
  try {
    body = JSON.parse(raw.toString('utf8') || '{}') as Record<string, unknown>;
  } catch {
    isJson = false;
  }
  return { recorded: { path: request.url ?? '/', headers: request.headers, body }, raw, isJson };
}

/** Answers with `body` as JSON, or as given when it is a string (a test's own malformed body). */
export function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(typeof body === 'string' ? body : JSON.stringify(body));
}

/**
 * Plays a script's broken whole answers and says whether it did: `malformedBody` ends the body
 * after `malformed` (JSON cut short), `stallBody` sends `stalled` and goes silent.
 */
export function sendBrokenBody(
  response: ServerResponse,
  answer: ScriptedChat,
  headers: Record<string, string>,
  start: { malformed: string; stalled: string },
): boolean {
  if (!answer.malformedBody && !answer.stallBody) return false;
  response.writeHead(200, headers);
  if (answer.malformedBody) response.end(start.malformed);
  else response.write(start.stalled);
  return true;
}

/** Starts a 200 event stream; `headers` adds the provider's own (a request id). */
export function startEventStream(response: ServerResponse, headers: Record<string, string> = {}): void {
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', ...headers });
}

/** One SSE event: `data` as JSON, or as given when it is a string; named when `event` is set. */
export function sseEvent(data: object | string, { event, eol = '\n' }: { event?: string; eol?: '\n' | '\r\n' } = {}): string {
  const text = typeof data === 'string' ? data : JSON.stringify(data);
  return `${event === undefined ? '' : `event: ${event}${eol}`}data: ${text}${eol}${eol}`;
}

/** What a stream sends in place of the chunk at which its script breaks it. */
export interface StreamBreaks<T> {
  /** Bytes that do not parse: a JSON event cut short, a frame with a bad CRC. The body ends after them. */
  malformed: (chunk: T) => string | Uint8Array;
  /** The provider's in-stream error. The body ends after it. */
  error: (chunk: T) => string | Uint8Array;
  /** What is written before the connection is cut, if anything (part of a frame). */
  cut?: (chunk: T) => Uint8Array;
}

/**
 * Sends `chunks` through `send` as the script says: each after `chunkDelayMs`, until the script
 * breaks the stream before a content chunk (`isContent` says which chunks count; the script's
 * `…AfterChunks` numbers count only those). Resolves true when every chunk went out, for the
 * caller to finish the stream; false when the stream was broken off or the client went away.
 */
export async function playChunks<T>(
  response: ServerResponse,
  answer: ScriptedChat,
  chunks: readonly T[],
  send: (chunk: T, index: number) => void,
  breaks: StreamBreaks<T>,
  isContent: (chunk: T) => boolean = () => true,
): Promise<boolean> {
  let sent = 0;
  for (const [index, chunk] of chunks.entries()) {
    const content = isContent(chunk);
    if (content) {
      if (sent === answer.cutAfterChunks) {
        const head = breaks.cut?.(chunk);
        if (head) response.write(head);
        response.socket?.end(); // flushes what was written, then closes mid-body
        return false;
      }
      if (sent === answer.malformedAfterChunks) {
        response.end(breaks.malformed(chunk));
        return false;
      }
      if (sent === answer.stallAfterChunks) return false; // keep the socket open and silent
      if (sent === answer.errorAfterChunks) {
        response.end(breaks.error(chunk));
        return false;
      }
    }
    if (answer.chunkDelayMs) await sleep(answer.chunkDelayMs);
    if (response.destroyed) return false;
    send(chunk, index);
    if (content) sent++;
  }
  return true;
}
