import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatRequest, Provider } from '../providers/contract.ts';
import { createGeminiProvider } from '../providers/gemini.ts';
import { countTextTokens } from '../providers/tokens.ts';
import { startGeminiEmulator, type GeminiEmulator } from './emulator/gemini.ts';
import { callOptions, collect, providerError } from './support/provider-calls.ts';

let emulator: GeminiEmulator;
let provider: Provider;
const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 300, totalMs: 10_000 };

beforeAll(async () => {
  emulator = await startGeminiEmulator();
  provider = createGeminiProvider({ name: 'emulated', baseUrl: emulator.baseUrl, apiKey: 'AIza-test-secret', timeouts });
});
afterAll(async () => {
  await provider.close();
  await emulator.close();
});

const options = () => callOptions('req-1');
const hello: ChatRequest = { messages: [{ role: 'user', content: 'Hello there' }] };
const chat = () => provider.chatModel('gemini-test');
const weather = {
  name: 'weather',
  description: 'Current weather',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

/** The Gemini wire format itself; behaviour shared by every adapter is in provider-conformance.test.ts. */
describe('Gemini adapter: wire format', () => {
  it('sends generateContent with the key in x-goog-api-key, the system instruction and the generation config', async () => {
    emulator.script({ kind: 'chat', content: 'Hi!', usage: { prompt: 9, completion: 2 } });
    const result = await chat().generate(
      { messages: [{ role: 'system', content: 'Be brief.' }, ...hello.messages], maxTokens: 50, temperature: 0, topP: 0.9, stop: ['END'] },
      options(),
    );
    expect(result).toEqual({
      id: 'gemini-emulated-response',
      content: 'Hi!',
      toolCalls: [],
      finishReason: 'stop',
      usage: { promptTokens: 9, completionTokens: 2, totalTokens: 11 },
    });
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/v1beta/models/gemini-test:generateContent');
    expect(sent.headers['x-goog-api-key']).toBe('AIza-test-secret');
    expect(sent.headers.authorization).toBeUndefined();
    expect(sent.body).toEqual({
      contents: [{ role: 'user', parts: [{ text: 'Hello there' }] }],
      systemInstruction: { parts: [{ text: 'Be brief.' }] },
      generationConfig: { maxOutputTokens: 50, temperature: 0, topP: 0.9, stopSequences: ['END'] },
    });
  });

  it('streams from streamGenerateContent?alt=sse and takes the usage of the last chunk', async () => {
    emulator.script({ kind: 'chat', content: 'one two three', usage: { prompt: 7, completion: 3 } });
    const parts = await collect(chat().stream(hello, options()));
    expect(emulator.requests.at(-1)!.path).toBe('/v1beta/models/gemini-test:streamGenerateContent?alt=sse');
    expect(parts).toEqual([
      { type: 'text-delta', text: 'one ' },
      { type: 'text-delta', text: 'two ' },
      { type: 'text-delta', text: 'three' },
      { type: 'finish', finishReason: 'stop', usage: { promptTokens: 7, completionTokens: 3, totalTokens: 10 } },
    ]);
  });

  it('declares tools and maps every tool choice to a function-calling mode', async () => {
    const choices = [
      ['auto', { mode: 'AUTO' }],
      ['none', { mode: 'NONE' }],
      ['required', { mode: 'ANY' }],
      [{ name: 'weather' }, { mode: 'ANY', allowedFunctionNames: ['weather'] }],
    ] as const;
    for (const [toolChoice, config] of choices) {
      await chat().generate(
        { ...hello, tools: [weather, { name: 'now', parameters: { type: 'object', properties: {} } }], toolChoice },
        options(),
      );
      const sent = emulator.requests.at(-1)!.body;
      // A function without parameters declares none: Gemini refuses an OBJECT without properties.
      expect(sent.tools).toEqual([
        {
          functionDeclarations: [
            { name: 'weather', description: 'Current weather', parametersJsonSchema: weather.parameters },
            { name: 'now' },
          ],
        },
      ]);
      expect(sent.toolConfig).toEqual({ functionCallingConfig: config });
    }
  });

  it('numbers the function calls of an answer as tool-call ids and finishes STOP with calls as tool_calls', async () => {
    const calls = [
      { id: 'ignored', name: 'weather', arguments: '{"city":"Paris"}' },
      { id: 'ignored', name: 'weather', arguments: '{"city":"Rome"}' },
    ];
    emulator.script({ kind: 'chat', content: 'Checking.', toolCalls: calls }, { kind: 'chat', content: '', toolCalls: calls });
    const whole = await chat().generate({ ...hello, tools: [weather] }, options());
    expect(whole).toMatchObject({
      content: 'Checking.',
      finishReason: 'tool_calls',
      toolCalls: [
        { id: 'call_0', name: 'weather', arguments: '{"city":"Paris"}' },
        { id: 'call_1', name: 'weather', arguments: '{"city":"Rome"}' },
      ],
    });
    const parts = await collect(chat().stream({ ...hello, tools: [weather] }, options()));
    expect(parts.filter((part) => part.type === 'tool-call-delta')).toEqual([
      { type: 'tool-call-delta', index: 0, id: 'call_0', name: 'weather', argumentsDelta: '{"city":"Paris"}' },
      { type: 'tool-call-delta', index: 1, id: 'call_1', name: 'weather', argumentsDelta: '{"city":"Rome"}' },
    ]);
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: 'tool_calls' });
  });

  it('sends tool calls as model functionCall parts and their results, by name, in one user turn', async () => {
    await chat().generate(
      {
        messages: [
          { role: 'user', content: 'Weather in Paris and Rome?' },
          {
            role: 'assistant',
            content: '',
            toolCalls: [
              { id: 'call_0', name: 'weather', arguments: '{"city":"Paris"}' },
              { id: 'call_1', name: 'forecast', arguments: '{"city":"Rome"}' },
            ],
          },
          { role: 'tool', content: '{"sky":"sunny"}', toolCallId: 'call_0' },
          { role: 'tool', content: 'rain', toolCallId: 'call_1' },
        ],
      },
      options(),
    );
    expect(emulator.requests.at(-1)!.body.contents).toEqual([
      { role: 'user', parts: [{ text: 'Weather in Paris and Rome?' }] },
      {
        role: 'model',
        parts: [
          { functionCall: { name: 'weather', args: { city: 'Paris' } } },
          { functionCall: { name: 'forecast', args: { city: 'Rome' } } },
        ],
      },
      {
        role: 'user',
        parts: [
          { functionResponse: { name: 'weather', response: { sky: 'sunny' } } },
          // A result that is not a JSON object is wrapped: the wire wants a Struct.
          { functionResponse: { name: 'forecast', response: { result: 'rain' } } },
        ],
      },
    ]);
  });

  it('names each result after the latest call with its id, since ids restart in every answer', async () => {
    await chat().generate(
      {
        messages: [
          { role: 'user', content: 'go' },
          { role: 'assistant', content: '', toolCalls: [{ id: 'call_0', name: 'first', arguments: '{}' }] },
          { role: 'tool', content: '1', toolCallId: 'call_0' },
          { role: 'assistant', content: '', toolCalls: [{ id: 'call_0', name: 'second', arguments: '{}' }] },
          { role: 'tool', content: '2', toolCallId: 'call_0' },
        ],
      },
      options(),
    );
    const contents = emulator.requests.at(-1)!.body.contents as { parts: { functionResponse?: { name: string } }[] }[];
    expect(
      contents.flatMap((content) => content.parts.flatMap((part) => (part.functionResponse ? [part.functionResponse.name] : []))),
    ).toEqual(['first', 'second']);
  });

  it('refuses, without calling Gemini, a tool result that answers no earlier call', async () => {
    const before = emulator.requests.length;
    const request: ChatRequest = { messages: [hello.messages[0]!, { role: 'tool', content: 'x', toolCallId: 'call_9' }] };
    expect(await providerError(chat().generate(request, options()))).toMatchObject({ code: 'UPSTREAM_BAD_REQUEST', retryable: false });
    const parts = await collect(chat().stream(request, options()));
    expect(parts).toMatchObject([{ type: 'error', error: { code: 'UPSTREAM_BAD_REQUEST' } }]);
    expect(emulator.requests.length).toBe(before);
  });

  it('carries a Gemini 3 thought signature in the tool-call id and hands it back on the functionCall', async () => {
    const answer = {
      candidates: [
        {
          content: {
            role: 'model',
            parts: [
              { text: 'Weighing the cities…', thought: true },
              { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'c2lnbmF0dXJl+/==' },
              { functionCall: { name: 'weather', args: { city: 'Rome' } } },
            ],
          },
          finishReason: 'STOP',
        },
      ],
      usageMetadata: { promptTokenCount: 10, candidatesTokenCount: 8, thoughtsTokenCount: 30, totalTokenCount: 48 },
    };
    emulator.scriptNative([answer], [answer]);
    const whole = await chat().generate({ ...hello, tools: [weather] }, options());
    // The thought summary is not answer text; thinking tokens are billed as output.
    expect(whole).toMatchObject({
      content: '',
      finishReason: 'tool_calls',
      usage: { promptTokens: 10, completionTokens: 38, totalTokens: 48 },
    });
    expect(whole.toolCalls.map((call) => call.id)).toEqual(['call_0~c2lnbmF0dXJl+/==', 'call_1']);
    const streamed = await collect(chat().stream({ ...hello, tools: [weather] }, options()));
    expect(streamed.flatMap((part) => (part.type === 'tool-call-delta' ? [part.id] : []))).toEqual(['call_0~c2lnbmF0dXJl+/==', 'call_1']);
    expect(streamed.some((part) => part.type === 'text-delta')).toBe(false);

    await chat().generate(
      {
        messages: [
          hello.messages[0]!,
          { role: 'assistant', content: '', toolCalls: whole.toolCalls },
          { role: 'tool', content: '{"sky":"sunny"}', toolCallId: whole.toolCalls[0]!.id },
          { role: 'tool', content: '{"sky":"rain"}', toolCallId: whole.toolCalls[1]!.id },
        ],
      },
      options(),
    );
    const contents = emulator.requests.at(-1)!.body.contents as { parts: unknown[] }[];
    expect(contents[1]!.parts).toEqual([
      { functionCall: { name: 'weather', args: { city: 'Paris' } }, thoughtSignature: 'c2lnbmF0dXJl+/==' },
      { functionCall: { name: 'weather', args: { city: 'Rome' } } },
    ]);
  });

  it.each([
    ['MAX_TOKENS', 'length'],
    ['SAFETY', 'content_filter'],
    ['RECITATION', 'content_filter'],
    ['BLOCKLIST', 'content_filter'],
    ['PROHIBITED_CONTENT', 'content_filter'],
    ['SPII', 'content_filter'],
    ['MALFORMED_FUNCTION_CALL', 'other'],
    ['OTHER', 'other'],
  ])('maps finish reason %s to %s, whole and streamed', async (native, reason) => {
    emulator.script({ kind: 'chat', content: 'cut', finishReason: native }, { kind: 'chat', content: 'cut', finishReason: native });
    expect((await chat().generate(hello, options())).finishReason).toBe(reason);
    expect((await collect(chat().stream(hello, options()))).at(-1)).toMatchObject({ type: 'finish', finishReason: reason });
  });

  it('finishes a blocked prompt, which has no candidates, as content_filter', async () => {
    const blocked = { promptFeedback: { blockReason: 'PROHIBITED_CONTENT' }, usageMetadata: { promptTokenCount: 5, totalTokenCount: 5 } };
    emulator.scriptNative([blocked], [blocked]);
    expect(await chat().generate(hello, options())).toMatchObject({
      content: '',
      finishReason: 'content_filter',
      usage: { promptTokens: 5, completionTokens: 0 },
    });
    expect(await collect(chat().stream(hello, options()))).toEqual([
      { type: 'finish', finishReason: 'content_filter', usage: { promptTokens: 5, completionTokens: 0, totalTokens: 5 } },
    ]);
  });

  it('reports an answer with neither candidates nor a block reason as malformed', async () => {
    emulator.scriptNative([{ usageMetadata: { promptTokenCount: 5 } }]);
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({ code: 'UPSTREAM_BAD_RESPONSE' });
  });

  it('reports Gemini’s in-stream error object with its message', async () => {
    emulator.script({ kind: 'chat', content: 'a b c', errorAfterChunks: 1 });
    const parts = await collect(chat().stream(hello, options()));
    expect(parts).toMatchObject([
      { type: 'text-delta', text: 'a ' },
      {
        type: 'error',
        error: { code: 'UPSTREAM_UNAVAILABLE', retryable: false, upstreamMessage: expect.stringContaining('internal error') },
      },
    ]);
  });

  it('maps Gemini’s 400 API_KEY_INVALID to an auth failure, never carrying the key', async () => {
    const body = {
      error: {
        code: 400,
        message: 'API key not valid: AIza-test-secret. Please pass a valid API key.',
        status: 'INVALID_ARGUMENT',
        details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' }],
      },
    };
    emulator.script({ kind: 'error', status: 400, body }, { kind: 'error', status: 400 });
    const error = await providerError(chat().generate(hello, options()));
    expect(error).toMatchObject({
      code: 'UPSTREAM_AUTH_FAILED',
      status: 400,
      retryable: false,
      upstreamMessage: 'API key not valid: [redacted]. Please pass a valid API key.',
    });
    expect(JSON.stringify({ ...error, message: error.message })).not.toContain('AIza-test-secret');
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_BAD_REQUEST',
      upstreamMessage: 'Request contains an invalid argument.',
    });
  });

  it('reads the wait of a 429 from RetryInfo in the body, and prefers a Retry-After header', async () => {
    const body = {
      error: {
        code: 429,
        message: 'You exceeded your current quota.',
        status: 'RESOURCE_EXHAUSTED',
        details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '22.5s' }],
      },
    };
    emulator.script({ kind: 'error', status: 429, body }, { kind: 'error', status: 429, body, headers: { 'retry-after': '3' } });
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_RATE_LIMITED',
      retryable: true,
      retryAfterMs: 22_500,
    });
    expect(await providerError(chat().generate(hello, options()))).toMatchObject({ retryAfterMs: 3_000 });
  });

  it('reports an unreachable server as unavailable and retryable', async () => {
    const dead = createGeminiProvider({ name: 'dead', baseUrl: 'http://127.0.0.1:1/v1beta', timeouts });
    expect(await providerError(dead.chatModel('x').generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_UNAVAILABLE',
      retryable: true,
    });
    await dead.close();
  });

  it('embeds with batchEmbedContents, counting usage with the tokenizer, at most 100 a batch', async () => {
    const model = provider.embeddingModel('embedding-test', { dimensions: 4, maxBatchSize: 128 });
    expect(model.maxBatchSize).toBe(100);
    const result = await model.embed(['a', 'bbb'], { ...options(), dimensions: 4 });
    expect(result.vectors).toHaveLength(2);
    expect(result.vectors[0]).toHaveLength(4);
    expect(result.vectors[0]).not.toEqual(result.vectors[1]);
    expect(result.usage).toEqual({
      promptTokens: countTextTokens('a') + countTextTokens('bbb'),
      totalTokens: countTextTokens('a') + countTextTokens('bbb'),
    });
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/v1beta/models/embedding-test:batchEmbedContents');
    expect(sent.body).toEqual({
      requests: [
        { model: 'models/embedding-test', content: { parts: [{ text: 'a' }] }, outputDimensionality: 4 },
        { model: 'models/embedding-test', content: { parts: [{ text: 'bbb' }] }, outputDimensionality: 4 },
      ],
    });
  });
});
