import { createAzureOpenAIProvider } from '../../providers/azure-openai.ts';
import { startOpenAIEmulator } from '../emulator/openai.ts';
import type { ConformanceTarget } from './target.ts';

/** Azure OpenAI speaks the OpenAI wire format, so the OpenAI emulator serves it. */
export const target: ConformanceTarget = {
  name: 'azure-openai',
  embeddings: true,
  async start() {
    const emulator = await startOpenAIEmulator();
    const endpoint = emulator.baseUrl.replace(/\/v1$/, '');
    return {
      emulator,
      provider: (timeouts, apiKey) =>
        createAzureOpenAIProvider({
          name: 'azure-openai',
          endpoint,
          apiVersion: '2024-10-21',
          credential: { kind: 'api-key', key: apiKey },
          timeouts,
        }),
      chatModelId: 'gpt-4o-deployment',
      embeddingModelId: 'embed-deployment',
    };
  },
};
