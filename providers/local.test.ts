import { describe, expect, it } from 'vitest';
import { createLocalProvider, hashingEmbedding, wordPieces } from './local.ts';
import { countChatTokens, countTextTokens } from './tokens.ts';
import { callOptions, collect } from '../tests/support/provider-calls.ts';

const provider = createLocalProvider('local', { streamDelayMs: 0 });
const options = () => callOptions('test');

describe('local echo model', () => {
  const text = '  Hello,\tworld!  How are\nyou?  ';
  const request = {
    messages: [
      { role: 'system' as const, content: 'be nice' },
      { role: 'user' as const, content: 'first' },
      { role: 'user' as const, content: text },
    ],
  };

  it('answers with the last user message and real token counts', async () => {
    const result = await provider.chatModel('echo').generate(request, options());
    expect(result.content).toBe(text);
    expect(result.finishReason).toBe('stop');
    expect(result.usage).toEqual({
      promptTokens: countChatTokens(request.messages),
      completionTokens: countTextTokens(text),
      totalTokens: countChatTokens(request.messages) + countTextTokens(text),
    });
  });

  it('streams word-sized deltas that concatenate to exactly the answer, then usage', async () => {
    const parts = await collect(provider.chatModel('echo').stream(request, options()));
    const deltas = parts.flatMap((part) => (part.type === 'text-delta' ? [part.text] : []));
    expect(deltas.length).toBeGreaterThan(4);
    expect(deltas.join('')).toBe(text);
    expect(deltas.every((delta) => (delta.trim().match(/\S+/g) ?? []).length <= 1)).toBe(true);
    expect(parts.at(-1)).toEqual({
      type: 'finish',
      finishReason: 'stop',
      usage: (await provider.chatModel('echo').generate(request, options())).usage,
    });
  });

  it('stops at maxTokens with finish reason length', async () => {
    const result = await provider.chatModel('echo').generate({ ...request, maxTokens: 2 }, options());
    expect(result.finishReason).toBe('length');
    expect(result.usage.completionTokens).toBe(2);
    expect(text.startsWith(result.content)).toBe(true);
    expect(result.content.length).toBeLessThan(text.length);
  });

  it('splits text into pieces that join back to it', () => {
    for (const sample of ['', ' ', 'one', 'a  b\n\nc ', '\tlead']) expect(wordPieces(sample).join('')).toBe(sample);
  });

  it('refuses a model it does not have, by name', () => {
    expect(() => provider.chatModel('gpt-4o')).toThrow(/no chat model "gpt-4o"/);
  });
});

describe('local hashing-embed model', () => {
  const norm = (vector: number[]) => Math.hypot(...vector);
  const cosine = (a: number[], b: number[]) => a.reduce((sum, value, index) => sum + value * b[index]!, 0);

  it('returns L2-normalised vectors of fixed dimensions, deterministically, in input order', async () => {
    const model = provider.embeddingModel('hashing-embed', { dimensions: 64, maxBatchSize: 8 });
    const { vectors, usage } = await model.embed(['the cat sat', 'a dog ran', 'the cat sat'], options());
    expect(vectors.map((vector) => vector.length)).toEqual([64, 64, 64]);
    for (const vector of vectors) expect(norm(vector)).toBeCloseTo(1, 10);
    expect(vectors[0]).toEqual(vectors[2]);
    expect(vectors[0]).not.toEqual(vectors[1]);
    expect(usage.promptTokens).toBe(countTextTokens('the cat sat') * 2 + countTextTokens('a dog ran'));
  });

  it('puts texts that share words closer than texts that do not', () => {
    const base = hashingEmbedding('invoice payment overdue customer', 256);
    const similar = hashingEmbedding('customer invoice payment late', 256);
    const different = hashingEmbedding('weather forecast sunny tomorrow', 256);
    expect(cosine(base, similar)).toBeGreaterThan(cosine(base, different));
  });

  it('honours requested dimensions and gives a zero vector for text without words', async () => {
    const model = provider.embeddingModel('hashing-embed', { dimensions: 64, maxBatchSize: 8 });
    const { vectors } = await model.embed(['hello', '...'], { ...options(), dimensions: 16 });
    expect(vectors[0]).toHaveLength(16);
    expect(vectors[1]).toEqual(new Array(16).fill(0));
  });
});

describe('local echo model with tools (an offline stand-in for tool loops)', () => {
  const tools = [{ name: 'list_models', parameters: { type: 'object', properties: {} } }];
  const ask = (content: string) => ({ messages: [{ role: 'user' as const, content }], tools });

  it('calls a tool it was given when asked with /call, whole and streamed', async () => {
    const whole = await provider.chatModel('echo').generate(ask('/call list_models {"x": 1}'), options());
    expect(whole).toMatchObject({
      content: '',
      finishReason: 'tool_calls',
      toolCalls: [{ id: 'call_1', name: 'list_models', arguments: '{"x": 1}' }],
    });
    const parts = await collect(provider.chatModel('echo').stream(ask('/call list_models'), options()));
    expect(parts.filter((part) => part.type !== 'finish')).toEqual([
      { type: 'tool-call-delta', index: 0, id: 'call_1', name: 'list_models', argumentsDelta: '{}' },
    ]);
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: 'tool_calls' });
  });

  it('echoes a /call of a tool it was not given, and echoes tool results after its calls', async () => {
    expect((await provider.chatModel('echo').generate(ask('/call drop_tables'), options())).content).toBe('/call drop_tables');
    const afterTools = {
      tools,
      messages: [
        { role: 'user' as const, content: '/call list_models' },
        {
          role: 'assistant' as const,
          content: '',
          toolCalls: [
            { id: 'a', name: 'list_models', arguments: '{}' },
            { id: 'b', name: 'list_models', arguments: '{}' },
          ],
        },
        { role: 'tool' as const, toolCallId: 'a', content: 'first result' },
        { role: 'tool' as const, toolCallId: 'b', content: 'second result' },
      ],
    };
    expect(await provider.chatModel('echo').generate(afterTools, options())).toMatchObject({
      content: 'first result\nsecond result',
      finishReason: 'stop',
      toolCalls: [],
    });
  });
});
