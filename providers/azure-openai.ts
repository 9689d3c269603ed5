/**
 * Azure OpenAI: the OpenAI wire format with Azure's addressing. A model's upstream name is the
 * deployment; calls go to {endpoint}/openai/deployments/{deployment}/…?api-version=…, and the
 * credential is an `api-key` header or a Microsoft Entra ID bearer token.
 */
import type { Provider } from './contract.ts';
import type { Timeouts } from './http-client.ts';
import { createOpenAICompatibleProvider } from './openai-compatible.ts';

export interface AzureOpenAISettings {
  name: string;
  /** e.g. https://my-resource.openai.azure.com */
  endpoint: string;
  apiVersion: string;
  credential: { kind: 'api-key'; key: string } | { kind: 'entra'; token: string };
  headers?: Record<string, string>;
  timeouts: Timeouts;
}

export function createAzureOpenAIProvider(settings: AzureOpenAISettings): Provider {
  const base = settings.endpoint.replace(/\/+$/, '');
  const { credential } = settings;
  return createOpenAICompatibleProvider({
    name: settings.name,
    baseUrl: base,
    apiKey: credential.kind === 'api-key' ? credential.key : credential.token,
    timeouts: settings.timeouts,
    // Azure fetches image URLs from its own network, as OpenAI does.
    imageUrls: true,
    ...(settings.headers && { headers: settings.headers }),
    url: (path, deployment) =>
      `${base}/openai/deployments/${encodeURIComponent(deployment)}${path}?api-version=${encodeURIComponent(settings.apiVersion)}`,
    authHeaders: credential.kind === 'api-key' ? { 'api-key': credential.key } : { authorization: `Bearer ${credential.token}` },
  });
}
