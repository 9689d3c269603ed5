/**
 * A provider emulator that speaks the OpenAI Chat Completions and Embeddings wire format (JSON and
 * SSE with the `include_usage` chunk and `[DONE]`), on a free loopback port. Tests script what it
 * answers next; by default it echoes the last user message like a well-behaved upstream. It
 * records every request and tells when a client went away mid-response.
 */
import { once } from 'node:events';
import { createHash } from 'node:crypto';
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
export type OpenAIEmulator = ProviderEmulator;

function lastUserMessage(body: Record<string, unknown>): string {
  const messages = (body.messages ?? []) as { role: string; content: string }[];
  return messages.findLast((message) => message.role === 'user')?.content ?? '';
}

function usageOf(answer: ScriptedChat, body: Record<string, unknown>) {
  if (answer.usage === null) return undefined;
  const prompt = answer.usage?.prompt ?? JSON.stringify(body.messages ?? []).length;
  const completion = answer.usage?.completion ?? wordCount(answer.content);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function sendError(response: ServerResponse, answer: ScriptedError): void {
  const body = answer.body ?? { error: { message: `emulated error ${answer.status}`, type: 'server_error', code: null } };
  response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
  response.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function sendCompletion(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  if (answer.malformedBody) {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end('{"id": "chatcmpl-broken", "choices": [');
    return;
  }
  if (answer.stallBody) {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write('{"id": "chatcmpl-slow", ');
    return;
  }
  const toolCalls = answer.toolCalls?.map((call) => ({
    id: call.id,
    type: 'function',
    function: { name: call.name, arguments: call.arguments },
  }));
  const payload = {
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
    ...(usageOf(answer, body) && { usage: usageOf(answer, body) }),
  };
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end(JSON.stringify(payload));
}

async function streamCompletion(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  const base = { id: 'chatcmpl-emulated', object: 'chat.completion.chunk', created: Math.floor(Date.now() / 1000), model: body.model };
  const send = (chunk: object | string) =>
    response.write(`data: ${typeof chunk === 'string' ? chunk : JSON.stringify({ ...base, ...chunk })}\n\n`);
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  send({ choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
  let sent = 0;
  for (const piece of contentPieces(answer.content, answer.chunkChars)) {
    if (sent === answer.cutAfterChunks) {
      response.socket?.end(); // flushes what was written, then closes mid-body
      return;
    }
    if (sent === answer.malformedAfterChunks) {
      send('{"choices": [{"delta": {"content": "bro');
      response.end();
      return;
    }
    if (sent === answer.stallAfterChunks) return; // keep the socket open and silent
    if (sent === answer.errorAfterChunks) {
      send({ error: { message: 'The server had an error while processing your request.', type: 'server_error' } });
      response.end();
      return;
    }
    if (answer.chunkDelayMs) await new Promise((resolve) => setTimeout(resolve, answer.chunkDelayMs));
    if (response.destroyed) return;
    send({ choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] });
    sent++;
  }
  answer.toolCalls?.forEach((call, index) => {
    const half = Math.ceil(call.arguments.length / 2);
    send({
      choices: [
        {
          index: 0,
          delta: {
            tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments.slice(0, half) } }],
          },
          finish_reason: null,
        },
      ],
    });
    send({
      choices: [{ index: 0, delta: { tool_calls: [{ index, function: { arguments: call.arguments.slice(half) } }] }, finish_reason: null }],
    });
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
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end(JSON.stringify({ object: 'list', data, model: body.model, usage: { prompt_tokens: tokens, total_tokens: tokens } }));
}

export async function startOpenAIEmulator(): Promise<OpenAIEmulator> {
  const log = new EmulatorLog<Scripted, RecordedRequest>();
  const { queue, requests } = log;

  const server: Server = createServer((request, response) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      const recorded: RecordedRequest = { path: request.url ?? '/', headers: request.headers, body };
      const pathname = new URL(recorded.path, 'http://emulator').pathname;
      log.record(recorded, response);
      const answer: Scripted = queue.shift() ?? { kind: 'chat', content: lastUserMessage(body) };
      if (answer.kind === 'error') return sendError(response, answer);
      if (pathname.endsWith('/embeddings')) return sendEmbeddings(response, body);
      if (!pathname.endsWith('/chat/completions')) {
        return sendError(response, { kind: 'error', status: 404, body: { error: { message: 'not found' } } });
      }
      if (body.stream === true) return streamCompletion(response, answer, body);
      return sendCompletion(response, answer, body);
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    script: log.script,
    nextAbort: log.nextAbort,
    nextRequest: log.nextRequest,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
