/**
 * The model catalog: configured models, how a client's model reference resolves to one, and the
 * adapters that serve them. A reference is an id (`"gpt-4o"`, served by its first configured
 * version), an alias (`"default"`), or a pin (`"gpt-4o@2024-08-06"`).
 */
import type { Config, ModelConfig, ProviderConfig } from '../platform/config.ts';
import { ConfigError } from '../platform/config.ts';
import type { ChatModel, EmbeddingModel, Provider } from './contract.ts';
import { createLocalProvider } from './local.ts';
import { createOpenAICompatibleProvider } from './openai-compatible.ts';

export type CatalogModel = ModelConfig & { upstream: string };

function buildProvider(name: string, config: ProviderConfig, env: NodeJS.ProcessEnv): Provider {
  switch (config.type) {
    case 'local':
      return createLocalProvider(name, config);
    case 'openai-compatible': {
      const apiKey = config.apiKeyEnv === undefined ? undefined : env[config.apiKeyEnv];
      if (config.apiKeyEnv !== undefined && !apiKey) {
        throw new ConfigError(`providers.${name}.apiKeyEnv: environment variable ${config.apiKeyEnv} is not set`);
      }
      return createOpenAICompatibleProvider({ name, baseUrl: config.baseUrl, apiKey, headers: config.headers, timeouts: config.timeouts });
    }
  }
}

export class ModelCatalog {
  readonly models: readonly CatalogModel[];
  readonly #byRef = new Map<string, CatalogModel>();
  readonly #providers = new Map<string, Provider>();
  readonly #chatModels = new Map<CatalogModel, ChatModel>();
  readonly #embeddingModels = new Map<CatalogModel, EmbeddingModel>();

  constructor(config: Pick<Config, 'models' | 'providers'>, env: NodeJS.ProcessEnv = process.env) {
    for (const [name, provider] of Object.entries(config.providers)) {
      this.#providers.set(name, buildProvider(name, provider, env));
    }
    this.models = config.models.map((model) => ({ ...model, upstream: model.upstream ?? model.id }));
    // Pins and aliases are unique (the config schema checks); a bare id names its first version.
    for (const model of this.models) {
      this.#byRef.set(`${model.id}@${model.version}`, model);
      for (const alias of model.aliases) this.#byRef.set(alias, model);
      if (!this.#byRef.has(model.id)) this.#byRef.set(model.id, model);
    }
    // Fail at start, not at the first request, when a model names something its provider lacks.
    this.models.forEach((model, index) => {
      try {
        if (model.capabilities.includes('CHAT')) this.chatModel(model);
        if (model.capabilities.includes('EMBEDDINGS')) this.embeddingModel(model);
      } catch (error) {
        throw new ConfigError(`models[${index}].upstream: ${(error as Error).message}`);
      }
    });
  }

  /** The model a client reference names, or undefined. */
  resolve(ref: string): CatalogModel | undefined {
    return this.#byRef.get(ref);
  }

  chatModel(model: CatalogModel): ChatModel {
    let chat = this.#chatModels.get(model);
    if (!chat) {
      chat = this.#provider(model).chatModel(model.upstream);
      this.#chatModels.set(model, chat);
    }
    return chat;
  }

  embeddingModel(model: CatalogModel): EmbeddingModel {
    let embedding = this.#embeddingModels.get(model);
    if (!embedding) {
      embedding = this.#provider(model).embeddingModel(model.upstream, {
        dimensions: model.dimensions ?? 0,
        maxBatchSize: model.maxBatchSize ?? 128,
      });
      this.#embeddingModels.set(model, embedding);
    }
    return embedding;
  }

  async close(): Promise<void> {
    await Promise.all([...this.#providers.values()].map((provider) => provider.close()));
  }

  #provider(model: CatalogModel): Provider {
    const provider = this.#providers.get(model.provider);
    if (!provider) throw new ConfigError(`unknown provider "${model.provider}"`);
    return provider;
  }
}
