/**
 * A provider emulator that speaks the Anthropic Messages API (JSON, and SSE with named events from
 * message_start to message_stop), on a free loopback port. Tests script what it answers next; by
 * default it echoes the last user text like a well-behaved upstream. Like the real API it refuses
 * requests without `x-api-key`, `anthropic-version` or `max_tokens`, with a `system` role in
 * `messages`, or with a tool_use that the next user turn does not answer. It records every request
 * and tells when a client went away mid-response.
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
export type AnthropicEmulator = ProviderEmulator;

interface Block {
  type: string;
  text?: string;
  id?: string;
  tool_use_id?: string;
}
interface Message {
  role: string;
  content: string | Block[];
}

const blocksOf = (message: Message): Block[] =>
  typeof message.content === 'string' ? [{ type: 'text', text: message.content }] : message.content;

function lastUserText(body: Record<string, unknown>): string {
  const messages = (body.messages ?? []) as Message[];
  const last = messages.findLast((message) => message.role === 'user');
  return last
    ? blocksOf(last)
        .flatMap((block) => (block.type === 'text' ? [block.text ?? ''] : []))
        .join('')
    : '';
}

/** The error type Anthropic's documentation gives for a status. */
function errorType(status: number): string {
  const types: Record<number, string> = {
    401: 'authentication_error',
    402: 'billing_error',
    403: 'permission_error',
    404: 'not_found_error',
    413: 'request_too_large',
    429: 'rate_limit_error',
    529: 'overloaded_error',
  };
  return types[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

/** What the real API would refuse with 400/401 before answering, or undefined. */
function refusal(headers: RecordedRequest['headers'], body: Record<string, unknown>): ScriptedError | undefined {
  const refuse = (status: number, message: string): ScriptedError => ({
    kind: 'error',
    status,
    body: { type: 'error', error: { type: errorType(status), message } },
  });
  if (!headers['x-api-key']) return refuse(401, 'x-api-key header is required');
  if (!headers['anthropic-version']) return refuse(400, 'anthropic-version: header is required');
  if (typeof body.max_tokens !== 'number') return refuse(400, 'max_tokens: Field required');
  const messages = (body.messages ?? []) as Message[];
  for (const [index, message] of messages.entries()) {
    if (message.role !== 'user' && message.role !== 'assistant')
      return refuse(400, `messages.${index}.role: Input should be 'user' or 'assistant'`);
    const calls = message.role === 'assistant' ? blocksOf(message).filter((block) => block.type === 'tool_use') : [];
    const answered = new Set(blocksOf(messages[index + 1] ?? { role: '', content: [] }).map((block) => block.tool_use_id));
    if (calls.some((call) => !answered.has(call.id))) {
      return refuse(400, `messages.${index + 1}: tool_use ids were found without tool_result blocks immediately after`);
    }
  }
  return undefined;
}

function usageOf(answer: ScriptedChat, body: Record<string, unknown>) {
  if (answer.usage === null) return undefined;
  return {
    input_tokens: answer.usage?.prompt ?? JSON.stringify(body.messages ?? []).length,
    output_tokens: answer.usage?.completion ?? wordCount(answer.content),
  };
}

const stopReason = (answer: ScriptedChat) => answer.finishReason ?? (answer.toolCalls?.length ? 'tool_use' : 'end_turn');

function sendError(response: ServerResponse, answer: ScriptedError): void {
  const body = answer.body ?? {
    type: 'error',
    error: { type: errorType(answer.status), message: `emulated error ${answer.status}` },
    request_id: 'req_emulated',
  };
  response.writeHead(answer.status, { 'content-type': 'application/json', 'request-id': 'req_emulated', ...answer.headers });
  response.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function sendMessage(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  response.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_emulated' });
  if (answer.malformedBody) return void response.end('{"id": "msg_broken", "content": [');
  if (answer.stallBody) return void response.write('{"id": "msg_slow", ');
  const content = [
    ...(answer.content ? [{ type: 'text', text: answer.content }] : []),
    ...(answer.toolCalls ?? []).map((call) => ({
      type: 'tool_use',
      id: call.id,
      name: call.name,
      input: JSON.parse(call.arguments || '{}') as unknown,
    })),
  ];
  const usage = usageOf(answer, body);
  const message = {
    id: 'msg_emulated',
    type: 'message',
    role: 'assistant',
    model: body.model,
    content,
    stop_reason: stopReason(answer),
    stop_sequence: null,
    ...(usage && { usage }),
  };
  response.end(JSON.stringify(message));
}

async function streamMessage(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  const send = (data: { type: string } & Record<string, unknown>) =>
    response.write(`event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`);
  const usage = usageOf(answer, body);
  response.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'request-id': 'req_emulated',
  });
  const start = {
    id: 'msg_emulated',
    type: 'message',
    role: 'assistant',
    model: body.model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
  };
  send({ type: 'message_start', message: { ...start, ...(usage && { usage: { input_tokens: usage.input_tokens, output_tokens: 1 } }) } });
  let index = 0;
  if (answer.content) {
    send({ type: 'content_block_start', index, content_block: { type: 'text', text: '' } });
    send({ type: 'ping' });
    let sent = 0;
    for (const piece of contentPieces(answer.content, answer.chunkChars)) {
      if (sent === answer.cutAfterChunks) {
        response.socket?.end(); // flushes what was written, then closes mid-body
        return;
      }
      if (sent === answer.malformedAfterChunks) {
        response.end(
          `event: content_block_delta\ndata: {"type": "content_block_delta", "index": ${index}, "delta": {"type": "text_delta", "text": "bro\n\n`,
        );
        return;
      }
      if (sent === answer.stallAfterChunks) return; // keep the socket open and silent
      if (sent === answer.errorAfterChunks) {
        send({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } });
        response.end();
        return;
      }
      if (answer.chunkDelayMs) await new Promise((resolve) => setTimeout(resolve, answer.chunkDelayMs));
      if (response.destroyed) return;
      send({ type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece } });
      sent++;
    }
    send({ type: 'content_block_stop', index: index++ });
  }
  for (const call of answer.toolCalls ?? []) {
    const half = Math.ceil(call.arguments.length / 2);
    send({ type: 'content_block_start', index, content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} } });
    for (const partial_json of ['', call.arguments.slice(0, half), call.arguments.slice(half)]) {
      send({ type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json } });
    }
    send({ type: 'content_block_stop', index: index++ });
  }
  send({
    type: 'message_delta',
    delta: { stop_reason: stopReason(answer), stop_sequence: null },
    ...(usage && { usage: { output_tokens: usage.output_tokens } }),
  });
  send({ type: 'message_stop' });
  response.end();
}

export async function startAnthropicEmulator(): Promise<AnthropicEmulator> {
  const log = new EmulatorLog<Scripted, RecordedRequest>();
  const { queue, requests } = log;

  const server: Server = createServer((request, response) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      const recorded: RecordedRequest = { path: request.url ?? '/', headers: request.headers, body };
      log.record(recorded, response);
      if (recorded.path !== '/v1/messages') {
        return sendError(response, {
          kind: 'error',
          status: 404,
          body: { type: 'error', error: { type: 'not_found_error', message: 'Not Found' } },
        });
      }
      const refused = refusal(recorded.headers, body);
      if (refused) return sendError(response, refused);
      const answer: Scripted = queue.shift() ?? { kind: 'chat', content: lastUserText(body) };
      if (answer.kind === 'error') return sendError(response, answer);
      if (body.stream === true) return streamMessage(response, answer, body);
      return sendMessage(response, answer, body);
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  return {
    baseUrl: `http://127.0.0.1:${port}`,
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
