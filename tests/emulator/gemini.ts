/**
 * A provider emulator that speaks the Gemini API wire format on a free loopback port:
 * `models/{model}:generateContent` (JSON), `:streamGenerateContent` (SSE with `alt=sse`, one JSON
 * array without), `:batchEmbedContents` and `:embedContent`, with Google's error bodies
 * (`{error: {code, message, status}}`). Tests script what it answers next; by default it echoes the
 * last user text like a well-behaved upstream. It records every request and tells when a client
 * went away mid-response.
 */
import type { ServerResponse } from 'node:http';

import { playChunks, readRequest, sendBrokenBody, sendJson, serve, sseEvent, startEventStream } from './http.ts';
import {
  contentPieces,
  scriptedUsage,
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
  const usage = scriptedUsage(answer, body.contents);
  return (
    usage && { promptTokenCount: usage.prompt, candidatesTokenCount: usage.completion, totalTokenCount: usage.prompt + usage.completion }
  );
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

const JSON_TYPE = { 'content-type': 'application/json; charset=UTF-8' };

/** Google's JSON carries its charset. */
function sendGoogleJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendJson(response, status, body, { ...JSON_TYPE, ...headers });
}

/** Google frames its events with CRLF. */
const googleEvent = (data: object | string) => sseEvent(data, { eol: '\r\n' });

function sendError(response: ServerResponse, answer: ScriptedError): void {
  sendGoogleJson(response, answer.status, answer.body ?? googleError(answer.status), answer.headers);
}

function sendContent(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const broken = { malformed: '{"candidates": [{"content": {"parts": [', stalled: '{"candidates": [' };
  if (sendBrokenBody(response, answer, JSON_TYPE, broken)) return;
  const calls = functionCallParts(answer);
  const parts = [...(answer.content || !calls.length ? [{ text: answer.content }] : []), ...calls];
  sendGoogleJson(response, 200, responseOf(parts, answer.finishReason ?? 'STOP', usageOf(answer, body)));
}

interface Frame {
  parts: Part[];
  /** Whether the frame is a piece of the content, which the script's `…AfterChunks` count. */
  content: boolean;
}

/** The frames of a streamed answer: a text part each, then every function call in one part list. */
function streamFrames(answer: ScriptedChat): Frame[] {
  const frames = contentPieces(answer.content, answer.chunkChars).map((text) => ({ parts: [{ text }] as Part[], content: true }));
  const calls = functionCallParts(answer);
  if (calls.length) frames.push({ parts: calls, content: false });
  if (!frames.length) frames.push({ parts: [{ text: '' }], content: false });
  return frames;
}

async function streamContent(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  startEventStream(response);
  const usage = usageOf(answer, body);
  // Every chunk carries the usage so far; the last one the final count.
  const running = usage && { promptTokenCount: usage.promptTokenCount, totalTokenCount: usage.promptTokenCount };
  const frames = streamFrames(answer);
  const send = (frame: Frame, index: number) => {
    const last = index === frames.length - 1;
    response.write(googleEvent(responseOf(frame.parts, last ? (answer.finishReason ?? 'STOP') : undefined, last ? usage : running)));
  };
  const breaks = {
    malformed: () => googleEvent('{"candidates": [{"content": {"parts": [{"text": "bro'),
    error: () => {
      const failure = googleError(500);
      return googleEvent(answer.errorMessage ? { error: { ...failure.error, message: answer.errorMessage } } : failure);
    },
  };
  if (await playChunks(response, answer, frames, send, breaks, (frame) => frame.content)) response.end();
}

function sendNative(response: ServerResponse, responses: object[], streamed: boolean): void {
  if (!streamed) {
    sendGoogleJson(response, 200, responses[0] ?? {});
    return;
  }
  startEventStream(response);
  for (const data of responses) response.write(googleEvent(data));
  response.end();
}

/** streamGenerateContent without `alt=sse` answers every chunk at once, as one JSON array. */
function sendArray(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const frames = streamFrames(answer);
  const usage = usageOf(answer, body);
  const last = frames.length - 1;
  sendGoogleJson(
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
    sendGoogleJson(response, 200, { embedding: embedding(body) });
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
    sendGoogleJson(response, 400, error);
    return;
  }
  sendGoogleJson(response, 200, { embeddings: requests.map(embedding) });
}

type Answer = Scripted | ScriptedNative;

export async function startGeminiEmulator(): Promise<GeminiEmulator> {
  const log = new EmulatorLog<Answer, RecordedRequest>();
  const served = await serve(log, '/v1beta', async (request, response) => {
    const { recorded } = await readRequest(request);
    const { body } = recorded;
    log.record(recorded, response);
    const answer: Answer = log.queue.shift() ?? { kind: 'chat', content: lastUserMessage(body) };
    if (answer.kind === 'error') return sendError(response, answer);
    const url = new URL(recorded.path, 'http://emulator');
    const method = /\/models\/[^/:]+:(\w+)$/.exec(url.pathname)?.[1];
    const streamed = method === 'streamGenerateContent';
    if (method === 'batchEmbedContents' || method === 'embedContent') return sendEmbeddings(response, method, body);
    if (method !== 'generateContent' && !streamed) {
      return sendGoogleJson(response, 404, { error: { code: 404, message: `${url.pathname} is not found.`, status: 'NOT_FOUND' } });
    }
    if (answer.kind === 'native') return sendNative(response, answer.responses, streamed);
    if (!streamed) return sendContent(response, answer, body);
    if (url.searchParams.get('alt') !== 'sse') return sendArray(response, answer, body);
    return streamContent(response, answer, body);
  });
  return {
    ...served,
    scriptNative: (...answers) => log.queue.push(...answers.map((responses): ScriptedNative => ({ kind: 'native', responses }))),
  };
}
