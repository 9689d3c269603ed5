/**
 * A provider emulator that speaks the OpenAI Chat Completions and Embeddings wire format (JSON and
 * SSE with the `include_usage` chunk and `[DONE]`), on a free loopback port. Tests script what it
 * answers next; by default it echoes the last user message like a well-behaved upstream. It
 * records every request and tells when a client went away mid-response.
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';

import { playChunks, readRequest, sendBrokenBody, sendJson, serve, sseEvent, startEventStream } from './http.ts';
import {
  contentPieces,
  halves,
  scriptedUsage,
  wordCount,
  type ProviderEmulator,
  type RecordedRequest,
  type Scripted,
  type ScriptedChat,
  type ScriptedError,
  EmulatorLog,
} from './script.ts';

export type { RecordedRequest, Scripted, ScriptedChat, ScriptedError };
export type OpenAIEmulator = ProviderEmulator;

/** The last user turn's text; content given as parts (text and images) echoes its text parts. */
function lastUserMessage(body: Record<string, unknown>): string {
  const messages = (body.messages ?? []) as { role: string; content: string | { type: string; text?: string }[] }[];
  const content = messages.findLast((message) => message.role === 'user')?.content ?? '';
  return typeof content === 'string' ? content : content.flatMap((part) => (part.type === 'text' ? [part.text ?? ''] : [])).join('');
}

function usageOf(answer: ScriptedChat, body: Record<string, unknown>) {
  const usage = scriptedUsage(answer, body.messages);
  return usage && { prompt_tokens: usage.prompt, completion_tokens: usage.completion, total_tokens: usage.prompt + usage.completion };
}

function sendError(response: ServerResponse, answer: ScriptedError): void {
  const body = answer.body ?? { error: { message: `emulated error ${answer.status}`, type: 'server_error', code: null } };
  sendJson(response, answer.status, body, answer.headers);
}

function sendCompletion(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const broken = { malformed: '{"id": "chatcmpl-broken", "choices": [', stalled: '{"id": "chatcmpl-slow", ' };
  if (sendBrokenBody(response, answer, { 'content-type': 'application/json' }, broken)) return;
  const toolCalls = answer.toolCalls?.map((call) => ({
    id: call.id,
    type: 'function',
    function: { name: call.name, arguments: call.arguments },
  }));
  const usage = usageOf(answer, body);
  sendJson(response, 200, {
    id: 'chatcmpl-emulated',
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: toolCalls ? null : answer.content, ...(toolCalls && { tool_calls: toolCalls }) },
        finish_reason: answer.finishReason ?? (toolCalls ? 'tool_calls' : 'stop'),
      },
    ],
    ...(usage && { usage }),
  });
}

async function streamCompletion(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  const base = { id: 'chatcmpl-emulated', object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: body.model };
  const event = (chunk: object | string) => sseEvent(typeof chunk === 'string' ? chunk : { ...base, ...chunk });
  const send = (chunk: object | string) => response.write(event(chunk));
  startEventStream(response);
  send({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
  const pieces = contentPieces(answer.content, answer.chunkChars);
  const whole = await playChunks(
    response,
    answer,
    pieces,
    (piece) => send({ choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] }),
    {
      malformed: () => event('{"choices": [{"delta": {"content": "bro'),
      error: () =>
        event({
          error: { message: answer.errorMessage ?? 'The server had an error while processing your request.', type: 'server_error' },
        }),
    },
  );
  if (!whole) return;
  answer.toolCalls?.forEach((call, index) => {
    const [first, rest] = halves(call.arguments);
    send({
      choices: [
        {
          index: 0,
          delta: { tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: first } }] },
          finish_reason: null,
        },
      ],
    });
    send({ choices: [{ index: 0, delta: { tool_calls: [{ index, function: { arguments: rest } }] }, finish_reason: null }] });
  });
  send({ choices: [{ index: 0, delta: {}, finish_reason: answer.finishReason ?? (answer.toolCalls ? 'tool_calls' : 'stop') }] });
  const usage = usageOf(answer, body);
  const options = body.stream_options as { include_usage?: boolean } | undefined;
  if (usage && options?.include_usage) send({ choices: [], usage });
  send('[DONE]');
  response.end();
}

/**
 * The emulator's vector for a text: a deterministic function of the text itself (not its length),
 * so a test can tell every caller's vector apart and check each got its own.
 */
export function emulatedEmbedding(input: string, dimensions: number): number[] {
  const digest = createHash('sha256').update(input).digest();
  return Array.from({ length: dimensions }, (_, position) => (digest[position % digest.length]! - 128) / 128);
}

function sendEmbeddings(response: ServerResponse, body: Record<string, unknown>): void {
  const inputs = (Array.isArray(body.input) ? body.input : [body.input]) as string[];
  const dimensions = typeof body.dimensions === 'number' ? body.dimensions : 8;
  const data = inputs.map((input, index) => ({
    object: 'embedding',
    index,
    embedding: emulatedEmbedding(input, dimensions),
  }));
  const tokens = inputs.reduce((sum, input) => sum + wordCount(input), 0);
  sendJson(response, 200, { object: 'list', data, model: body.model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
}

export async function startOpenAIEmulator(): Promise<OpenAIEmulator> {
  const log = new EmulatorLog<Scripted, RecordedRequest>();
  return serve(log, '/v1', async (request, response) => {
    const { recorded } = await readRequest(request);
    const { body } = recorded;
    const pathname = new URL(recorded.path, 'http://emulator').pathname;
    log.record(recorded, response);
    const answer: Scripted = log.queue.shift() ?? { kind: 'chat', content: lastUserMessage(body) };
    if (answer.kind === 'error') return sendError(response, answer);
    if (pathname.endsWith('/embeddings')) return sendEmbeddings(response, body);
    if (!pathname.endsWith('/chat/completions')) {
      return sendError(response, { kind: 'error', status: 404, body: { error: { message: 'not found' } } });
    }
    if (body.stream === true) return streamCompletion(response, answer, body);
    return sendCompletion(response, answer, body);
  });
}
