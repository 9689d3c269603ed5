import { createBedrockProvider } from '../../providers/bedrock.ts';
import { startBedrockEmulator } from '../emulator/bedrock.ts';
import type { ConformanceTarget } from './target.ts';

/** The suite's API key is the secret access key; the emulator verifies every signature made with it. */
const ACCESS_KEY_ID = 'AKIACONFORMANCETEST1';
const REGION = 'us-east-1';

export const target: ConformanceTarget = {
  name: 'bedrock',
  embeddings: false,
  async start() {
    const emulator = await startBedrockEmulator({ region: REGION });
    return {
      emulator,
      provider: (timeouts, apiKey) => {
        const credentials = { accessKeyId: ACCESS_KEY_ID, secretAccessKey: apiKey };
        emulator.trust(credentials);
        return createBedrockProvider({ name: 'bedrock', endpoint: emulator.baseUrl, region: REGION, credentials, timeouts });
      },
      // A real id with a ':' in it, so every case also exercises path escaping under the signature.
      chatModelId: 'anthropic.claude-3-5-haiku-20241022-v1:0',
    };
  },
};
