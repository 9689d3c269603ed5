/**
 * OpenAI-compatible servers, as configuration: each preset is the base URL and the usual API-key
 * variable of a server that speaks the OpenAI wire format, and whether it fetches image URLs itself
 * (OpenAI does, from its own network). They all use the one adapter.
 */
export const OPENAI_COMPATIBLE_PRESETS = {
  openai: { baseUrl: 'https://api.openai.com/v1', apiKeyEnv: 'OPENAI_API_KEY', imageUrls: true },
  groq: { baseUrl: 'https://api.groq.com/openai/v1', apiKeyEnv: 'GROQ_API_KEY' },
  mistral: { baseUrl: 'https://api.mistral.ai/v1', apiKeyEnv: 'MISTRAL_API_KEY' },
  deepseek: { baseUrl: 'https://api.deepseek.com/v1', apiKeyEnv: 'DEEPSEEK_API_KEY' },
  vllm: { baseUrl: 'http://127.0.0.1:8000/v1', apiKeyEnv: undefined },
  ollama: { baseUrl: 'http://127.0.0.1:11434/v1', apiKeyEnv: undefined },
  tgi: { baseUrl: 'http://127.0.0.1:8080/v1', apiKeyEnv: undefined },
  lmstudio: { baseUrl: 'http://127.0.0.1:1234/v1', apiKeyEnv: undefined },
} as const satisfies Record<string, { baseUrl: string; apiKeyEnv: string | undefined; imageUrls?: boolean }>;

export type OpenAICompatiblePreset = keyof typeof OPENAI_COMPATIBLE_PRESETS;
export const PRESET_NAMES = Object.keys(OPENAI_COMPATIBLE_PRESETS) as [OpenAICompatiblePreset, ...OpenAICompatiblePreset[]];
