import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Provider } from '../providers/contract.ts';
import { createOpenAICompatibleProvider } from '../providers/openai-compatible.ts';
import { startOpenAIEmulator, type OpenAIEmulator } from './emulator/openai.ts';
import { callOptions, collect, providerError } from './support/provider-calls.ts';

let emulator: OpenAIEmulator;
let provider: Provider;
const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 300, totalMs: 10_000 };

beforeAll(async () => {
  emulator = await startOpenAIEmulator();
  provider = createOpenAICompatibleProvider({ name: 'emulated', baseUrl: emulator.baseUrl, apiKey: 'sk-test-secret', timeouts });
});
afterAll(async () => {
  await provider.close();
  await emulator.close();
});

const options = () => callOptions('req-1');
const hello = { messages: [{ role: 'user' as const, content: 'Hello there' }] };

/** The OpenAI wire format itself; behaviour shared by every adapter is in provider-conformance.test.ts. */
describe('OpenAI-compatible adapter: wire format', () => {
  it('sends a chat completion request in the OpenAI wire format and reads the answer with usage', async () => {
    emulator.script({ kind: 'chat', content: 'Hi!', usage: { prompt: 9, completion: 2 } });
    const result = await provider.chatModel('gpt-test').generate({ ...hello, maxTokens: 50, temperature: 0 }, options());
    expect(result).toMatchObject({
      content: 'Hi!',
      finishReason: 'stop',
      usage: { promptTokens: 9, completionTokens: 2, totalTokens: 11 },
    });
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/v1/chat/completions');
    expect(sent.headers.authorization).toBe('Bearer sk-test-secret');
    expect(sent.headers['x-client-request-id']).toBe('req-1');
    expect(sent.body).toMatchObject({
      model: 'gpt-test',
      max_tokens: 50,
      temperature: 0,
      messages: [{ role: 'user', content: 'Hello there' }],
    });
    expect(sent.body.stream).toBeUndefined();
  });

  it('sends tools and tool results, and reads tool calls from the answer', async () => {
    emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'call_1', name: 'lookup', arguments: '{"q":"x"}' }] });
    const result = await provider.chatModel('gpt-test').generate(
      {
        messages: [
          { role: 'user', content: 'find x' },
          { role: 'assistant', content: '', toolCalls: [{ id: 'call_0', name: 'lookup', arguments: '{}' }] },
          { role: 'tool', content: 'nothing', toolCallId: 'call_0' },
        ],
        tools: [{ name: 'lookup', description: 'Looks up', parameters: { type: 'object', properties: { q: { type: 'string' } } } }],
        toolChoice: 'auto',
      },
      options(),
    );
    expect(result.finishReason).toBe('tool_calls');
    expect(result.toolCalls).toEqual([{ id: 'call_1', name: 'lookup', arguments: '{"q":"x"}' }]);
    const sent = emulator.requests.at(-1)!.body;
    expect(sent.tools).toEqual([
      {
        type: 'function',
        function: { name: 'lookup', description: 'Looks up', parameters: { type: 'object', properties: { q: { type: 'string' } } } },
      },
    ]);
    expect(sent.tool_choice).toBe('auto');
    expect(sent.messages).toEqual([
      { role: 'user', content: 'find x' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'call_0', type: 'function', function: { name: 'lookup', arguments: '{}' } }] },
      { role: 'tool', tool_call_id: 'call_0', content: 'nothing' },
    ]);
  });

  it('streams deltas in order and ends with the usage chunk it asked for', async () => {
    emulator.script({ kind: 'chat', content: 'one two three', usage: { prompt: 7, completion: 3 } });
    const parts = await collect(provider.chatModel('gpt-test').stream(hello, options()));
    expect(emulator.requests.at(-1)!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    const text = parts.flatMap((part) => (part.type === 'text-delta' ? [part.text] : []));
    expect(text).toEqual(['one ', 'two ', 'three']);
    expect(parts.at(-1)).toEqual({
      type: 'finish',
      finishReason: 'stop',
      usage: { promptTokens: 7, completionTokens: 3, totalTokens: 10 },
    });
  });

  it('never carries the API key in an error, even when the upstream echoes it', async () => {
    emulator.script({ kind: 'error', status: 401, body: { error: { message: 'Incorrect API key provided: sk-test-secret.' } } });
    const error = await providerError(provider.chatModel('gpt-test').generate(hello, options()));
    expect(error.upstreamMessage).toBe('Incorrect API key provided: [redacted].');
    expect(JSON.stringify({ ...error, message: error.message })).not.toContain('sk-test-secret');
  });

  it('maps 429 with Retry-After (seconds, and OpenAI retry-after-ms) and without', async () => {
    emulator.script(
      { kind: 'error', status: 429, headers: { 'retry-after': '7' } },
      { kind: 'error', status: 429, headers: { 'retry-after-ms': '1500', 'retry-after': '2' } },
      { kind: 'error', status: 429 },
    );
    const model = provider.chatModel('gpt-test');
    expect(await providerError(model.generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_RATE_LIMITED',
      retryable: true,
      retryAfterMs: 7000,
    });
    expect(await providerError(model.generate(hello, options()))).toMatchObject({ retryAfterMs: 1500 });
    const bare = await providerError(model.generate(hello, options()));
    expect(bare.code).toBe('UPSTREAM_RATE_LIMITED');
    expect(bare.retryAfterMs).toBeUndefined();
  });

  it('reports an unreachable server as unavailable and retryable', async () => {
    const dead = createOpenAICompatibleProvider({ name: 'dead', baseUrl: 'http://127.0.0.1:1/v1', timeouts });
    const error = await providerError(dead.chatModel('x').generate(hello, options()));
    expect(error).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', retryable: true });
    await dead.close();
  });

  it('embeds a batch in input order', async () => {
    const result = await provider
      .embeddingModel('embed-test', { dimensions: 4, maxBatchSize: 16 })
      .embed(['a', 'bbb'], { ...options(), dimensions: 4 });
    expect(result.vectors).toHaveLength(2);
    expect(result.vectors[0]).toHaveLength(4);
    expect(result.vectors[0]).not.toEqual(result.vectors[1]);
    expect(emulator.requests.at(-1)!.body).toMatchObject({ model: 'embed-test', input: ['a', 'bbb'], dimensions: 4 });
  });
});
