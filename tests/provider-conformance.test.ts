/**
 * One conformance suite for every provider adapter: the same cases, each through the provider's
 * own emulator speaking its real wire format. An adapter passes when text, streaming, tool calls,
 * usage, error mapping, cut and malformed streams, timeouts and aborts behave identically.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatRequest, ChatStreamPart, Provider } from '../providers/contract.ts';
import type { ProviderError } from '../providers/errors.ts';
import { countTextTokens } from '../providers/tokens.ts';
import { CONFORMANCE_TARGETS } from './conformance/targets.ts';
import type { ConformanceSubject } from './conformance/target.ts';
import { callOptions, collect, providerError } from './support/provider-calls.ts';

const API_KEY = 'sk-conformance-secret';
const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 400, totalMs: 10_000 };
const hello: ChatRequest = {
  messages: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello there' },
  ],
};
const options = () => callOptions('req-conformance');

const text = (parts: ChatStreamPart[]) => parts.flatMap((part) => (part.type === 'text-delta' ? [part.text] : [])).join('');

it('runs against every adapter', () => {
  expect(CONFORMANCE_TARGETS.map((target) => target.name)).toEqual(['anthropic', 'azure-openai', 'bedrock', 'gemini', 'openai-compatible']);
});

describe.each(CONFORMANCE_TARGETS.map((target) => [target.name, target] as const))('%s adapter conformance', (_name, target) => {
  let subject: ConformanceSubject;
  let provider: Provider;
  beforeAll(async () => {
    subject = await target.start();
    provider = subject.provider(timeouts, API_KEY);
  });
  afterAll(async () => {
    await provider?.close();
    await subject?.emulator.close();
  });
  const chat = () => provider.chatModel(subject.chatModelId);

  it('answers a chat with its text, finish reason and usage', async () => {
    subject.emulator.script({ kind: 'chat', content: 'Hi! How can I help?', usage: { prompt: 9, completion: 6 } });
    const result = await chat().generate({ ...hello, maxTokens: 50, temperature: 0 }, options());
    expect(result).toMatchObject({
      content: 'Hi! How can I help?',
      finishReason: 'stop',
      toolCalls: [],
      usage: { promptTokens: 9, completionTokens: 6, totalTokens: 15 },
    });
  });

  it('streams deltas in order that join to the answer, then finish with usage', async () => {
    subject.emulator.script({ kind: 'chat', content: 'one two three four', usage: { prompt: 7, completion: 4 } });
    const parts = await collect(chat().stream(hello, options()));
    expect(parts.filter((part) => part.type === 'text-delta').length).toBeGreaterThanOrEqual(2);
    expect(text(parts)).toBe('one two three four');
    expect(parts.at(-1)).toEqual({
      type: 'finish',
      finishReason: 'stop',
      usage: { promptTokens: 7, completionTokens: 4, totalTokens: 11 },
    });
  });

  it('sends tools, and returns the tool calls the model asks for, whole and streamed', async () => {
    const request: ChatRequest = {
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: [
        {
          name: 'weather',
          description: 'Current weather',
          parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
        },
      ],
    };
    const call = { id: 'call_1', name: 'weather', arguments: '{"city":"Paris"}' };
    subject.emulator.script({ kind: 'chat', content: '', toolCalls: [call] }, { kind: 'chat', content: '', toolCalls: [call] });
    const whole = await chat().generate(request, options());
    expect(whole.finishReason).toBe('tool_calls');
    expect(whole.toolCalls).toHaveLength(1);
    expect(whole.toolCalls[0]).toMatchObject({ name: 'weather' });
    expect(JSON.parse(whole.toolCalls[0]!.arguments)).toEqual({ city: 'Paris' });
    const parts = await collect(chat().stream(request, options()));
    const fragments = parts.filter((part) => part.type === 'tool-call-delta');
    expect(fragments.length).toBeGreaterThan(0);
    expect(fragments.find((part) => part.name)?.name).toBe('weather');
    expect(JSON.parse(fragments.map((part) => part.argumentsDelta).join(''))).toEqual({ city: 'Paris' });
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: 'tool_calls' });
  });

  it('sends the conversation with a tool result back to the provider', async () => {
    subject.emulator.script({ kind: 'chat', content: 'It is sunny.' });
    const result = await chat().generate(
      {
        messages: [
          { role: 'user', content: 'Weather in Paris?' },
          { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'weather', arguments: '{"city":"Paris"}' }] },
          { role: 'tool', content: '{"sky":"sunny"}', toolCallId: 'call_1' },
        ],
        tools: [{ name: 'weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } }],
      },
      options(),
    );
    expect(result.content).toBe('It is sunny.');
    expect(JSON.stringify(subject.emulator.requests.at(-1)!.body)).toContain('sunny');
  });

  it.each([
    [400, 'UPSTREAM_BAD_REQUEST', false],
    [401, 'UPSTREAM_AUTH_FAILED', false],
    [403, 'UPSTREAM_AUTH_FAILED', false],
    [404, 'UPSTREAM_BAD_REQUEST', false],
    [408, 'UPSTREAM_TIMEOUT', true],
    [413, 'UPSTREAM_BAD_REQUEST', false],
    [429, 'UPSTREAM_RATE_LIMITED', true],
    [500, 'UPSTREAM_UNAVAILABLE', true],
    [503, 'UPSTREAM_UNAVAILABLE', true],
    [529, 'UPSTREAM_UNAVAILABLE', true],
  ])('maps HTTP %i to %s (retryable %s), whole and streamed, without the API key', async (status, code, retryable) => {
    subject.emulator.script({ kind: 'error', status }, { kind: 'error', status });
    const error = await providerError(chat().generate(hello, options()));
    expect(error).toMatchObject({ status, code, retryable });
    expect(JSON.stringify({ message: error.message, upstream: error.upstreamMessage })).not.toContain(API_KEY);
    const parts = await collect(chat().stream(hello, options()));
    expect(parts).toHaveLength(1);
    expect(parts[0]).toMatchObject({ type: 'error', error: { status, code, retryable } });
  });

  it('reads Retry-After on 429, in seconds, and leaves it unset when absent', async () => {
    subject.emulator.script({ kind: 'error', status: 429, headers: { 'retry-after': '7' } }, { kind: 'error', status: 429 });
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({ code: 'UPSTREAM_RATE_LIMITED', retryAfterMs: 7000 });
    expect((await providerError(chat().generate(hello, options()))).retryAfterMs).toBeUndefined();
  });

  it('reports a stream cut mid-way as interrupted, after the deltas that arrived', async () => {
    subject.emulator.script({ kind: 'chat', content: 'a b c d e', cutAfterChunks: 2 });
    const parts = await collect(chat().stream(hello, options()));
    expect(text(parts)).toBe('a b ');
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_STREAM_INTERRUPTED', retryable: false } });
  });

  it('reports an error event inside the stream, after the deltas that arrived', async () => {
    subject.emulator.script({ kind: 'chat', content: 'a b c d e', errorAfterChunks: 2 });
    const parts = await collect(chat().stream(hello, options()));
    expect(text(parts)).toBe('a b ');
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_UNAVAILABLE', retryable: false } });
  });

  it('never repeats the API key from an error event inside the stream', async () => {
    subject.emulator.script({ kind: 'chat', content: 'a b c', errorAfterChunks: 1, errorMessage: `quota exceeded for key ${API_KEY}` });
    const failure = (await collect(chat().stream(hello, options()))).at(-1);
    expect(failure).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_UNAVAILABLE' } });
    const error = (failure as { error: ProviderError }).error;
    expect(error.upstreamMessage).toContain('[redacted]');
    expect(JSON.stringify({ ...error, message: error.message })).not.toContain(API_KEY);
  });

  it('reports malformed upstream data as a bad response, streamed and whole', async () => {
    subject.emulator.script(
      { kind: 'chat', content: 'a b c', malformedAfterChunks: 1 },
      { kind: 'chat', content: 'x', malformedBody: true },
    );
    const parts = await collect(chat().stream(hello, options()));
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_BAD_RESPONSE' } });
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({ code: 'UPSTREAM_BAD_RESPONSE' });
  });

  it('times out a stream that goes silent, and a whole answer that stalls, as UPSTREAM_TIMEOUT', async () => {
    subject.emulator.script({ kind: 'chat', content: 'a b c', stallAfterChunks: 1 }, { kind: 'chat', content: 'x', stallBody: true });
    const parts = await collect(chat().stream(hello, options()));
    expect(text(parts)).toBe('a ');
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_TIMEOUT', retryable: false } });
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({ code: 'UPSTREAM_TIMEOUT', retryable: true });
  });

  it('aborts the upstream request as soon as the caller aborts', async () => {
    const patient = subject.provider({ ...timeouts, idleMs: 120_000, totalMs: 120_000 }, API_KEY);
    subject.emulator.script({ kind: 'chat', content: 'a b c d', stallAfterChunks: 1 });
    const caller = new AbortController();
    const aborted = subject.emulator.nextAbort();
    const parts: ChatStreamPart[] = [];
    for await (const part of patient.chatModel(subject.chatModelId).stream(hello, { signal: caller.signal, requestId: 'r' })) {
      parts.push(part);
      caller.abort();
    }
    await aborted;
    expect(parts).toEqual([{ type: 'text-delta', text: 'a ' }]);
    await patient.close();
  });

  it('counts usage with the tokenizer when the provider reports none', async () => {
    subject.emulator.script({ kind: 'chat', content: 'counted here', usage: null });
    const parts = await collect(chat().stream(hello, options()));
    const finish = parts.at(-1);
    expect(finish?.type).toBe('finish');
    if (finish?.type === 'finish') expect(finish.usage.completionTokens).toBe(countTextTokens('counted here'));
  });

  // Only providers with an embeddings API get this case (Anthropic and Bedrock have none here).
  if (target.embeddings)
    it('embeds a batch in input order', async () => {
      const result = await provider
        .embeddingModel(subject.embeddingModelId!, { dimensions: 4, maxBatchSize: 16 })
        .embed(['a', 'bbb', 'cc'], { ...options(), dimensions: 4 });
      expect(result.vectors).toHaveLength(3);
      expect(result.vectors.every((vector) => vector.length === 4)).toBe(true);
      expect(result.vectors[0]).not.toEqual(result.vectors[1]);
      expect(result.usage.promptTokens).toBeGreaterThan(0);
    });
});
