/**
 * A provider emulator that speaks the Anthropic Messages API (JSON, and SSE with named events from
 * message_start to message_stop), on a free loopback port. Tests script what it answers next; by
 * default it echoes the last user text like a well-behaved upstream. Like the real API it refuses
 * requests without `x-api-key`, `anthropic-version` or `max_tokens`, with a `system` role in
 * `messages`, or with a tool_use that the next user turn does not answer. It records every request
 * and tells when a client went away mid-response.
 */
import type { ServerResponse } from 'node:http';

import { playChunks, readRequest, sendBrokenBody, sendJson, serve, sseEvent, startEventStream } from './http.ts';
import {
  contentPieces,
  halves,
  scriptedUsage,
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
  const usage = scriptedUsage(answer, body.messages);
  return usage && { input_tokens: usage.prompt, output_tokens: usage.completion };
}

const REQUEST_ID = { 'request-id': 'req_emulated' };

const stopReason = (answer: ScriptedChat) => answer.finishReason ?? (answer.toolCalls?.length ? 'tool_use' : 'end_turn');

function sendError(response: ServerResponse, answer: ScriptedError): void {
  const body = answer.body ?? {
    type: 'error',
    error: { type: errorType(answer.status), message: `emulated error ${answer.status}` },
    request_id: 'req_emulated',
  };
  sendJson(response, answer.status, body, { ...REQUEST_ID, ...answer.headers });
}

function sendMessage(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): void {
  const broken = { malformed: '{"id": "msg_broken", "content": [', stalled: '{"id": "msg_slow", ' };
  if (sendBrokenBody(response, answer, { 'content-type': 'application/json', ...REQUEST_ID }, broken)) return;
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
  sendJson(response, 200, message, REQUEST_ID);
}

async function streamMessage(response: ServerResponse, answer: ScriptedChat, body: Record<string, unknown>): Promise<void> {
  const event = (data: { type: string } & Record<string, unknown>) => sseEvent(data, { event: data.type });
  const send = (data: { type: string } & Record<string, unknown>) => response.write(event(data));
  const usage = usageOf(answer, body);
  startEventStream(response, REQUEST_ID);
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
    const pieces = contentPieces(answer.content, answer.chunkChars);
    const sendPiece = (text: string) => send({ type: 'content_block_delta', index, delta: { type: 'text_delta', text } });
    const whole = await playChunks(response, answer, pieces, sendPiece, {
      malformed: () =>
        sseEvent(`{"type": "content_block_delta", "index": ${index}, "delta": {"type": "text_delta", "text": "bro`, {
          event: 'content_block_delta',
        }),
      error: () => event({ type: 'error', error: { type: 'overloaded_error', message: answer.errorMessage ?? 'Overloaded' } }),
    });
    if (!whole) return;
    send({ type: 'content_block_stop', index: index++ });
  }
  for (const call of answer.toolCalls ?? []) {
    send({ type: 'content_block_start', index, content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} } });
    for (const partial_json of ['', ...halves(call.arguments)]) {
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
  return serve(log, '', async (request, response) => {
    const { recorded } = await readRequest(request);
    const { body } = recorded;
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
    const answer: Scripted = log.queue.shift() ?? { kind: 'chat', content: lastUserText(body) };
    if (answer.kind === 'error') return sendError(response, answer);
    if (body.stream === true) return streamMessage(response, answer, body);
    return sendMessage(response, answer, body);
  });
}
