import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAnthropicProvider } from '../providers/anthropic.ts';
import type { ChatRequest, Provider } from '../providers/contract.ts';
import { startAnthropicEmulator, type AnthropicEmulator } from './emulator/anthropic.ts';
import { callOptions, collect, providerError } from './support/provider-calls.ts';

let emulator: AnthropicEmulator;
let provider: Provider;
const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 300, totalMs: 10_000 };

beforeAll(async () => {
  emulator = await startAnthropicEmulator();
  provider = createAnthropicProvider({ name: 'emulated', baseUrl: emulator.baseUrl, apiKey: 'sk-ant-test-secret', timeouts });
});
afterAll(async () => {
  await provider.close();
  await emulator.close();
});

const options = () => callOptions('req-1');
const hello: ChatRequest = { messages: [{ role: 'user', content: 'Hello there' }] };
const model = () => provider.chatModel('claude-test');

/** Serves one fixed body for every request, for wire details the emulator's script cannot express. */
async function withRawServer<T>(contentType: string, body: string, use: (raw: Provider) => Promise<T>): Promise<T> {
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': contentType });
    response.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const raw = createAnthropicProvider({
    name: 'raw',
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    apiKey: 'k',
    timeouts,
  });
  try {
    return await use(raw);
  } finally {
    await raw.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

const sse = (...events: object[]) =>
  events.map((event) => `event: ${(event as { type: string }).type}\ndata: ${JSON.stringify(event)}\n\n`).join('');

/** The Anthropic wire format itself; behaviour shared by every adapter is in provider-conformance.test.ts. */
describe('Anthropic adapter: wire format', () => {
  it('sends a Messages request with the key, version, top-level system prompt and sampling options', async () => {
    emulator.script({ kind: 'chat', content: 'Hi!', usage: { prompt: 9, completion: 2 } });
    const request: ChatRequest = {
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'system', content: 'Be kind.' }, ...hello.messages],
      maxTokens: 50,
      temperature: 0,
      topP: 0.9,
      stop: ['END'],
    };
    const result = await model().generate(request, options());
    expect(result).toMatchObject({
      id: 'msg_emulated',
      content: 'Hi!',
      finishReason: 'stop',
      usage: { promptTokens: 9, completionTokens: 2, totalTokens: 11 },
    });
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/v1/messages');
    expect(sent.headers['x-api-key']).toBe('sk-ant-test-secret');
    expect(sent.headers['anthropic-version']).toBe('2023-06-01');
    expect(sent.headers.authorization).toBeUndefined();
    expect(sent.body).toEqual({
      model: 'claude-test',
      max_tokens: 50,
      system: 'Be brief.\n\nBe kind.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello there' }] }],
      temperature: 0,
      top_p: 0.9,
      stop_sequences: ['END'],
    });
  });

  it('always sends max_tokens, which Anthropic requires: the configured default, else 4096', async () => {
    await model().generate(hello, options());
    expect(emulator.requests.at(-1)!.body.max_tokens).toBe(4096);
    const configured = createAnthropicProvider({
      name: 'c',
      baseUrl: emulator.baseUrl,
      apiKey: 'k',
      timeouts,
      defaultMaxTokens: 1024,
      version: '2024-01-01',
    });
    await configured.chatModel('claude-test').generate(hello, options());
    expect(emulator.requests.at(-1)!.body.max_tokens).toBe(1024);
    expect(emulator.requests.at(-1)!.headers['anthropic-version']).toBe('2024-01-01');
    await configured.close();
  });

  it('sends tools, tool_use blocks with parsed input, and parallel tool results in one user turn', async () => {
    emulator.script({ kind: 'chat', content: 'Let me look.', toolCalls: [{ id: 'toolu_2', name: 'lookup', arguments: '{"q":"y"}' }] });
    const result = await model().generate(
      {
        messages: [
          { role: 'system', content: 'Use tools.' },
          { role: 'user', content: 'find x and z' },
          {
            role: 'assistant',
            content: '',
            toolCalls: [
              { id: 'toolu_0', name: 'lookup', arguments: '{"q":"x"}' },
              { id: 'toolu_1', name: 'lookup', arguments: '{"q":"z"}' },
            ],
          },
          { role: 'tool', content: 'nothing', toolCallId: 'toolu_0' },
          { role: 'tool', content: 'zeta', toolCallId: 'toolu_1' },
        ],
        tools: [{ name: 'lookup', description: 'Looks up', parameters: { type: 'object', properties: { q: { type: 'string' } } } }],
        toolChoice: 'required',
      },
      options(),
    );
    expect(result).toMatchObject({
      content: 'Let me look.',
      finishReason: 'tool_calls',
      toolCalls: [{ id: 'toolu_2', name: 'lookup', arguments: '{"q":"y"}' }],
    });
    const sent = emulator.requests.at(-1)!.body;
    expect(sent.system).toBe('Use tools.');
    expect(sent.tools).toEqual([
      { name: 'lookup', description: 'Looks up', input_schema: { type: 'object', properties: { q: { type: 'string' } } } },
    ]);
    expect(sent.tool_choice).toEqual({ type: 'any' });
    expect(sent.messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'find x and z' }] },
      {
        role: 'assistant',
        content: [
          { type: 'tool_use', id: 'toolu_0', name: 'lookup', input: { q: 'x' } },
          { type: 'tool_use', id: 'toolu_1', name: 'lookup', input: { q: 'z' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_0', content: 'nothing' },
          { type: 'tool_result', tool_use_id: 'toolu_1', content: 'zeta' },
        ],
      },
    ]);
  });

  it.each([
    ['auto', { type: 'auto' }],
    ['none', { type: 'none' }],
    ['required', { type: 'any' }],
    [{ name: 'lookup' }, { type: 'tool', name: 'lookup' }],
  ] as const)('maps tool choice %j to %j', async (toolChoice, wire) => {
    await model().generate({ ...hello, tools: [{ name: 'lookup', parameters: { type: 'object' } }], toolChoice }, options());
    expect(emulator.requests.at(-1)!.body.tool_choice).toEqual(wire);
  });

  it.each([
    ['end_turn', 'stop'],
    ['stop_sequence', 'stop'],
    ['max_tokens', 'length'],
    ['tool_use', 'tool_calls'],
    ['refusal', 'content_filter'],
    ['pause_turn', 'other'],
  ])('maps stop_reason %s to %s, whole and streamed', async (stopReason, finishReason) => {
    emulator.script({ kind: 'chat', content: 'a b', finishReason: stopReason }, { kind: 'chat', content: 'a b', finishReason: stopReason });
    expect((await model().generate(hello, options())).finishReason).toBe(finishReason);
    expect((await collect(model().stream(hello, options()))).at(-1)).toMatchObject({ type: 'finish', finishReason });
  });

  it('streams text deltas, then tool calls indexed by content block with id and name first', async () => {
    emulator.script({
      kind: 'chat',
      content: 'one two',
      toolCalls: [{ id: 'toolu_9', name: 'lookup', arguments: '{"q":"x"}' }],
      usage: { prompt: 7, completion: 5 },
    });
    const parts = await collect(model().stream(hello, options()));
    expect(emulator.requests.at(-1)!.body.stream).toBe(true);
    expect(parts.filter((part) => part.type === 'text-delta')).toEqual([
      { type: 'text-delta', text: 'one ' },
      { type: 'text-delta', text: 'two' },
    ]);
    const calls = parts.filter((part) => part.type === 'tool-call-delta');
    expect(calls[0]).toEqual({ type: 'tool-call-delta', index: 1, id: 'toolu_9', name: 'lookup', argumentsDelta: '' });
    expect(calls.every((part) => part.index === 1)).toBe(true);
    expect(calls.map((part) => part.argumentsDelta).join('')).toBe('{"q":"x"}');
    expect(parts.at(-1)).toEqual({
      type: 'finish',
      finishReason: 'tool_calls',
      usage: { promptTokens: 7, completionTokens: 5, totalTokens: 12 },
    });
  });

  it('counts cached prompt tokens, skips thinking blocks, and reads a tool call without arguments as {}', async () => {
    const message = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'hmm', signature: 'sig' },
        { type: 'text', text: 'Sure.' },
        { type: 'tool_use', id: 'toolu_1', name: 'now', input: {} },
      ],
      stop_reason: 'tool_use',
      usage: { input_tokens: 10, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000, output_tokens: 5 },
    };
    const result = await withRawServer('application/json', JSON.stringify(message), (raw) => raw.chatModel('m').generate(hello, options()));
    expect(result).toEqual({
      id: 'msg_1',
      content: 'Sure.',
      toolCalls: [{ id: 'toolu_1', name: 'now', arguments: '{}' }],
      finishReason: 'tool_calls',
      usage: { promptTokens: 1110, completionTokens: 5, totalTokens: 1115 },
    });
  });

  it('streams as documented: pings, thinking and unknown events skipped, cumulative usage, empty tool input as {}', async () => {
    const body = sse(
      {
        type: 'message_start',
        message: { id: 'msg_1', content: [], usage: { input_tokens: 25, cache_read_input_tokens: 5, output_tokens: 1 } },
      },
      { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'hmm' } },
      { type: 'content_block_stop', index: 0 },
      { type: 'ping' },
      { type: 'some_future_event', detail: 1 },
      { type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } },
      { type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Hi' } },
      { type: 'content_block_stop', index: 1 },
      { type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'toolu_1', name: 'now', input: {} } },
      { type: 'content_block_delta', index: 2, delta: { type: 'input_json_delta', partial_json: '' } },
      { type: 'content_block_stop', index: 2 },
      { type: 'message_delta', delta: { stop_reason: 'tool_use', stop_sequence: null }, usage: { output_tokens: 15 } },
      { type: 'message_stop' },
    );
    const parts = await withRawServer('text/event-stream', body, (raw) => collect(raw.chatModel('m').stream(hello, options())));
    expect(parts).toEqual([
      { type: 'text-delta', text: 'Hi' },
      { type: 'tool-call-delta', index: 2, id: 'toolu_1', name: 'now', argumentsDelta: '' },
      { type: 'tool-call-delta', index: 2, argumentsDelta: '{}' },
      { type: 'finish', finishReason: 'tool_calls', usage: { promptTokens: 30, completionTokens: 15, totalTokens: 45 } },
    ]);
  });

  it('treats a stream that ends after message_delta but before message_stop as interrupted', async () => {
    const body = sse(
      { type: 'message_start', message: { usage: { input_tokens: 2, output_tokens: 1 } } },
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi' } },
      { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 2 } },
    );
    const parts = await withRawServer('text/event-stream', body, (raw) => collect(raw.chatModel('m').stream(hello, options())));
    expect(parts).toEqual([
      { type: 'text-delta', text: 'Hi' },
      { type: 'error', error: expect.objectContaining({ code: 'UPSTREAM_STREAM_INTERRUPTED', retryable: false }) },
    ]);
  });

  it('reports an error event mid-stream as unavailable and not retryable, with its type and message', async () => {
    emulator.script({ kind: 'chat', content: 'a b c', errorAfterChunks: 1 });
    const parts = await collect(model().stream(hello, options()));
    expect(parts[0]).toEqual({ type: 'text-delta', text: 'a ' });
    expect(parts.at(-1)).toMatchObject({
      type: 'error',
      error: { code: 'UPSTREAM_UNAVAILABLE', retryable: false, upstreamMessage: 'overloaded_error: Overloaded' },
    });
  });

  it('reads the error type and message of an HTTP error, and never carries the API key', async () => {
    emulator.script(
      { kind: 'error', status: 529 },
      {
        kind: 'error',
        status: 401,
        body: { type: 'error', error: { type: 'authentication_error', message: 'invalid x-api-key: sk-ant-test-secret' } },
      },
    );
    expect(await providerError(model().generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_UNAVAILABLE',
      status: 529,
      retryable: true,
      upstreamMessage: 'overloaded_error: emulated error 529',
    });
    const refused = await providerError(model().generate(hello, options()));
    expect(refused.upstreamMessage).toBe('authentication_error: invalid x-api-key: [redacted]');
    expect(JSON.stringify({ ...refused, message: refused.message })).not.toContain('sk-ant-test-secret');
  });

  it('has no embeddings, and says so when asked for a model', () => {
    expect(() => provider.embeddingModel('claude-test', { dimensions: 4, maxBatchSize: 16 })).toThrow(/no embeddings API/);
  });
});
