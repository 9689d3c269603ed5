import { createGeminiProvider } from '../../providers/gemini.ts';
import { startGeminiEmulator } from '../emulator/gemini.ts';
import type { ConformanceTarget } from './target.ts';

export const target: ConformanceTarget = {
  name: 'gemini',
  embeddings: true,
  async start() {
    const emulator = await startGeminiEmulator();
    return {
      emulator,
      provider: (timeouts, apiKey) => createGeminiProvider({ name: 'gemini', baseUrl: emulator.baseUrl, apiKey, timeouts }),
      chatModelId: 'gemini-test',
      embeddingModelId: 'embedding-test',
    };
  },
};
