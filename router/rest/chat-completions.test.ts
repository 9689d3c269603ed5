import { describe, expect, it } from 'vitest';
import { ChunkWriter } from './chat-completions.ts';

const parse = (event: string) => JSON.parse(event.replace(/^data: /, '').trimEnd()) as Record<string, unknown>;

describe('ChunkWriter', () => {
  it.each(['echo', 'a"b', '"content":""', 'x\\"'])('writes each token as the chunk OpenAI sends, for the model %j', (model) => {
    for (const withUsage of [false, true]) {
      const writer = new ChunkWriter(model, withUsage);
      const start = parse(writer.start());
      const delta = parse(writer.delta('he said "hi"\n'));
      expect(delta).toEqual({
        id: start.id,
        object: 'chat.completion.chunk',
        created: start.created,
        model,
        system_fingerprint: null,
        choices: [{ index: 0, delta: { content: 'he said "hi"\n' }, logprobs: null, finish_reason: null }],
        ...(withUsage && { usage: null }),
      });
      expect(writer.delta('x').endsWith('\n\n')).toBe(true);
    }
  });
});
