import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAzureOpenAIProvider } from '../providers/azure-openai.ts';
import { startOpenAIEmulator, type OpenAIEmulator } from './emulator/openai.ts';

let emulator: OpenAIEmulator;
beforeAll(async () => {
  emulator = await startOpenAIEmulator();
});
afterAll(async () => {
  await emulator.close();
});

const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 2_000, totalMs: 10_000 };
const hello = { messages: [{ role: 'user' as const, content: 'Hello' }] };
const options = () => ({ signal: new AbortController().signal, requestId: 'r' });

describe('Azure OpenAI addressing and credentials', () => {
  it('calls the deployment path with api-version and the api-key header', async () => {
    const endpoint = emulator.baseUrl.replace(/\/v1$/, '');
    const provider = createAzureOpenAIProvider({
      name: 'azure',
      endpoint,
      apiVersion: '2024-10-21',
      credential: { kind: 'api-key', key: 'azure-key-1' },
      timeouts,
    });
    const result = await provider.chatModel('my gpt deployment').generate(hello, options());
    expect(result.content).toBe('Hello');
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/openai/deployments/my%20gpt%20deployment/chat/completions?api-version=2024-10-21');
    expect(sent.headers['api-key']).toBe('azure-key-1');
    expect(sent.headers.authorization).toBeUndefined();
    await provider.close();
  });

  it('sends a Microsoft Entra ID token as a bearer token instead', async () => {
    const endpoint = emulator.baseUrl.replace(/\/v1$/, '');
    const provider = createAzureOpenAIProvider({
      name: 'azure',
      endpoint,
      apiVersion: '2024-10-21',
      credential: { kind: 'entra', token: 'entra-token-1' },
      timeouts,
    });
    await provider.chatModel('dep').generate(hello, options());
    const sent = emulator.requests.at(-1)!;
    expect(sent.headers.authorization).toBe('Bearer entra-token-1');
    expect(sent.headers['api-key']).toBeUndefined();
    await provider.close();
  });
});
