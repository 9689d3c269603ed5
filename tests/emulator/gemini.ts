/**
 * A provider emulator that speaks the Gemini API wire format on a free loopback port:
 * `models/{model}:generateContent` (JSON), `:streamGenerateContent` (SSE with `alt=sse`, one JSON
 * array without), `:batchEmbedContents` and `:embedContent`, with Google's error bodies
 * (`{error: {code, message, status}}`). Tests script what it answers next; by default it echoes the
 * last user text like a well-behaved upstream. It records every request and tells when a client
 * went away mid-response.
 */
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import {
  contentPieces,
  wordCount,
  type ProviderEmulator,
  type RecordedRequest,
  type Scripted,
  type ScriptedChat,
  type ScriptedError,
  EmulatorLog,
} from './script.ts';

export type { RecordedRequest, Scripted, ScriptedChat, ScriptedError };

/** Answers exactly as given: GenerateContentResponse objects, for what the neutral script cannot say. */
export interface ScriptedNative {
  kind: 'native';
  /** JSON: the first is the body. Streamed: one SSE event each, then the body ends. */
  responses: object[];
}

export interface GeminiEmulator extends ProviderEmulator {
  /** Queues Gemini-native answers (thought parts, thought signatures, prompt feedback) in line with `script`. */
  scriptNative(...responses: object[][]): void;
}

type Part = Record<string, unknown>;
interface Content {
  role?: string;
  parts?: { text?: unknown }[];
}

/** Google's canonical status for each HTTP status (google.rpc.Code), and a message in its words. */
const STATUSES: Record<number, [status: string, message: string]> = {
  400: ['INVALID_ARGUMENT', 'Request contains an invalid argument.'],
  401: ['UNAUTHENTICATED', 'Request had invalid authentication credentials.'],
  403: ['PERMISSION_DENIED', 'The caller does not have permission.'],
  404: ['NOT_FOUND', 'Requested entity was not found.'],
  408: ['DEADLINE_EXCEEDED', 'The request timed out.'],
  409: ['ABORTED', 'The operation was aborted.'],
  413: ['INVALID_ARGUMENT', 'The request is too large.'],
  429: ['RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).'],
  500: [
    'INTERNAL',
    'An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting',
  ],
  503: ['UNAVAILABLE', 'The model is overloaded. Please try again later.'],
  504: ['DEADLINE_EXCEEDED', 'The request timed out. Please try again.'],
  // Gemini never answers 529 (Anthropic's "overloaded"); it says that with 503 UNAVAILABLE.
  529: ['UNAVAILABLE', 'The model is overloaded. Please try again later.'],
};

const googleError = (code: number) => {
  const [status, message] = STATUSES[code] ?? ['UNKNOWN', `emulated error ${code}`];
  return { error: { code, message, status } };
};

function lastUserMessage(body: Record<string, unknown>): string {
  const contents = (body.contents ?? []) as Content[];
  const texts = (content: Content) => (content.parts ?? []).flatMap((part) => (typeof part.text === 'string' ? [part.text] : []));
  const last = contents.findLast((content) => content.role === 'user' && texts(content).length > 0);
  return last ? texts(last).join('') : '';
}

function usageOf(answer: ScriptedChat, body: Record<string, unknown>) {
  if (answer.usage === null) return undefined;
  const prompt = answer.usage?.prompt ?? JSON.stringify(body.contents ?? []).length;
  const completion = answer.usage?.completion ?? wordCount(answer.content);
  return { promptTokenCount: prompt, candidatesTokenCount: completion, totalTokenCount: prompt + completion };
}

function functionCallParts(answer: ScriptedChat): Part[] {
  return (answer.toolCalls ?? []).map((call) => {
    let args: unknown = {};
    try {
      args = JSON.parse(call.arguments);
    } catch {
      // a script with unparseable arguments gets none: Gemini's args are always an object
    }
    return { functionCall: { name: call.name, args } };
  });
}

/** One GenerateContentResponse; `finishReason` only on the last, as Gemini does. */
function responseOf(parts: Part[], finishReason: string | undefined, usage: object | undefined): object {
  return {
    candidates: [{ content: { parts, role: 'model' }, ...(finishReason && { finishReason }), index: 0 }],
    ...(usage && { usageMetadata: usage }),
    modelVersion: 'gemini-emulated',
    responseId: 'gemini-emulated-response',
  };
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', ...headers });
  response.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function sendError(response: ServerResponse, answer: ScriptedError): void {
  sendJson(response, answer.status, answer.body ?? googleError(answer.status), answer.headers);
}

function sendContent(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  if (answer.malformedBody) {
    sendJson(response, 200, '{"candidates": [{"content": {"parts": [');
    return;
  }
  if (answer.stallBody) {
    response.writeHead(200, { 'content-type': 'application/json; charset=UTF-8' });
    response.write('{"candidates": [');
    return;
  }
  const calls = functionCallParts(answer);
  const parts = [...(answer.content || !calls.length ? [{ text: answer.content }] : []), ...calls];
  sendJson(response, 200, responseOf(parts, answer.finishReason ?? 'STOP', usageOf(answer, body)));
}

/** The frames of a streamed answer: a text part each, then every function call in one part list. */
function streamFrames(answer: ScriptedChat): { parts: Part[]; content: boolean }[] {
  const frames = contentPieces(answer.content, answer.chunkChars).map((text) => ({ parts: [{ text }] as Part[], content: true }));
  const calls = functionCallParts(answer);
  if (calls.length) frames.push({ parts: calls, content: false });
  if (!frames.length) frames.push({ parts: [{ text: '' }], content: false });
  return frames;
}

async function streamContent(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  // Google frames its events with CRLF.
  const send = (data: object | string) => response.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\r\n\r\n`);
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const usage = usageOf(answer, body);
  // Every chunk carries the usage so far; the last one the final count.
  const running = usage && { promptTokenCount: usage.promptTokenCount, totalTokenCount: usage.promptTokenCount };
  const frames = streamFrames(answer);
  let sent = 0;
  for (const [index, frame] of frames.entries()) {
    if (frame.content) {
      if (sent === answer.cutAfterChunks) {
        response.socket?.end(); // flushes what was written, then closes mid-body
        return;
      }
      if (sent === answer.malformedAfterChunks) {
        send('{"candidates": [{"content": {"parts": [{"text": "bro');
        response.end();
        return;
      }
      if (sent === answer.stallAfterChunks) return; // keep the socket open and silent
      if (sent === answer.errorAfterChunks) {
        send(googleError(500));
        response.end();
        return;
      }
    }
    if (answer.chunkDelayMs) await new Promise((resolve) => setTimeout(resolve, answer.chunkDelayMs));
    if (response.destroyed) return;
    const last = index === frames.length - 1;
    send(responseOf(frame.parts, last ? (answer.finishReason ?? 'STOP') : undefined, last ? usage : running));
    if (frame.content) sent++;
  }
  response.end();
}

function sendNative(response: ServerResponse, responses: object[], streamed: boolean): void {
  if (!streamed) {
    sendJson(response, 200, responses[0] ?? {});
    return;
  }
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  for (const data of responses) response.write(`data: ${JSON.stringify(data)}\r\n\r\n`);
  response.end();
}

/** streamGenerateContent without `alt=sse` answers every chunk at once, as one JSON array. */
function sendArray(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const frames = streamFrames(answer);
  const usage = usageOf(answer, body);
  const last = frames.length - 1;
  sendJson(
    response,
    200,
    frames.map((frame, index) =>
      responseOf(frame.parts, index === last ? (answer.finishReason ?? 'STOP') : undefined, index === last ? usage : undefined),
    ),
  );
}

function embedding(request: Record<string, unknown>): { values: number[] } {
  const parts = ((request.content as Content | undefined)?.parts ?? []) as { text?: unknown }[];
  const text = parts.map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
  const dimensions = typeof request.outputDimensionality === 'number' ? request.outputDimensionality : 8;
  return { values: Array.from({ length: dimensions }, (_, position) => ((text.length + position) % 7) / 7) };
}

function sendEmbeddings(response: ServerResponse, method: string, body: Record<string, unknown>): void {
  if (method === 'embedContent') {
    sendJson(response, 200, { embedding: embedding(body) });
    return;
  }
  const requests = (body.requests ?? []) as Record<string, unknown>[];
  if (requests.length > 100) {
    const error = {
      error: {
        code: 400,
        message: '* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n',
        status: 'INVALID_ARGUMENT',
      },
    };
    sendJson(response, 400, error);
    return;
  }
  sendJson(response, 200, { embeddings: requests.map(embedding) });
}

type Answer = Scripted | ScriptedNative;

export async function startGeminiEmulator(): Promise<GeminiEmulator> {
  const log = new EmulatorLog<Answer, RecordedRequest>();
  const { queue, requests } = log;

  const server: Server = createServer((request, response) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      const recorded: RecordedRequest = { path: request.url ?? '/', headers: request.headers, body };
      log.record(recorded, response);
      const answer: Answer = queue.shift() ?? { kind: 'chat', content: lastUserMessage(body) };
      if (answer.kind === 'error') return sendError(response, answer);
      const url = new URL(recorded.path, 'http://emulator');
      const method = /\/models\/[^/:]+:(\w+)$/.exec(url.pathname)?.[1];
      const streamed = method === 'streamGenerateContent';
      if (method === 'batchEmbedContents' || method === 'embedContent') return sendEmbeddings(response, method, body);
      if (method !== 'generateContent' && !streamed) {
        return sendJson(response, 404, { error: { code: 404, message: `${url.pathname} is not found.`, status: 'NOT_FOUND' } });
      }
      if (answer.kind === 'native') return sendNative(response, answer.responses, streamed);
      if (!streamed) return sendContent(response, answer, body);
      if (url.searchParams.get('alt') !== 'sse') return sendArray(response, answer, body);
      return streamContent(response, answer, body);
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}/v1beta`,
    requests,
    script: log.script,
    scriptNative: (...answers) => queue.push(...answers.map((responses): ScriptedNative => ({ kind: 'native', responses }))),
    nextAbort: log.nextAbort,
    nextRequest: log.nextRequest,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
