import { createAnthropicProvider } from '../../providers/anthropic.ts';
import { startAnthropicEmulator } from '../emulator/anthropic.ts';
import type { ConformanceTarget } from './target.ts';

export const target: ConformanceTarget = {
  name: 'anthropic',
  embeddings: false,
  async start() {
    const emulator = await startAnthropicEmulator();
    return {
      emulator,
      provider: (timeouts, apiKey) => createAnthropicProvider({ name: 'anthropic', baseUrl: emulator.baseUrl, apiKey, timeouts }),
      chatModelId: 'claude-test',
    };
  },
};
