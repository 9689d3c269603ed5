import { createOpenAICompatibleProvider } from '../../providers/openai-compatible.ts';
import { startOpenAIEmulator } from '../emulator/openai.ts';
import type { ConformanceTarget } from './target.ts';

export const target: ConformanceTarget = {
  name: 'openai-compatible',
  embeddings: true,
  async start() {
    const emulator = await startOpenAIEmulator();
    return {
      emulator,
      provider: (timeouts, apiKey) =>
        // As the openai preset: OpenAI fetches image URLs itself.
        createOpenAICompatibleProvider({ name: 'openai-compatible', baseUrl: emulator.baseUrl, apiKey, timeouts, imageUrls: true }),
      chatModelId: 'gpt-test',
      embeddingModelId: 'embed-test',
    };
  },
};
