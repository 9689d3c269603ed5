/**
 * The model catalog: configured model versions, how a client's model reference resolves, and the
 * adapters that serve them. A reference is
 * - a pin (`gpt-4o@2024-08-06`): exactly that version, nothing else;
 * - a route name (`routes:` in the config): its weighted targets, then its fallbacks;
 * - an alias (`default`): the version that declares it;
 * - an id (`gpt-4o`): its default version (`default: true`, else the first configured).
 */
import type { Config, ModelConfig, ProviderConfig, RouteConfig } from '../platform/config.ts';
import { ConfigError } from '../platform/config.ts';
import type { ChatModel, EmbeddingModel, Provider } from './contract.ts';
import { createLocalProvider } from './local.ts';
import { createAnthropicProvider } from './anthropic.ts';
import { createAzureOpenAIProvider } from './azure-openai.ts';
import { createBedrockProvider } from './bedrock.ts';
import { createGeminiProvider } from './gemini.ts';
import { createOpenAICompatibleProvider } from './openai-compatible.ts';
import { OPENAI_COMPATIBLE_PRESETS } from '../platform/provider-presets.ts';
import { weightedOrder, type Target } from './routing.ts';

export type CatalogModel = ModelConfig & { upstream: string };

/** The models a reference is served by, in the order to try them. */
export interface ServingPlan {
  /** The model the reference names (a route's heaviest target): what limits are checked against. */
  model: CatalogModel;
  targets: Target<CatalogModel>[];
}

export const targetKey = (model: CatalogModel) => `${model.id}@${model.version}`;

/** Retired by status, or by a sunset date that has come (ISO dates compare as strings). */
export function isRetired(model: CatalogModel, now = new Date()): boolean {
  return model.status === 'RETIRED' || (model.sunset !== undefined && model.sunset <= now.toISOString().slice(0, 10));
}

/** Reads a secret named by an env-var field, or fails the start naming the field. */
function secret(env: NodeJS.ProcessEnv, provider: string, field: string, variable: string | undefined): string | undefined {
  if (variable === undefined) return undefined;
  const value = env[variable];
  if (!value) throw new ConfigError(`providers.${provider}.${field}: environment variable ${variable} is not set`);
  return value;
}

function buildProvider(name: string, config: ProviderConfig, env: NodeJS.ProcessEnv): Provider {
  switch (config.type) {
    case 'local':
      return createLocalProvider(name, config);
    case 'openai-compatible': {
      const preset = config.preset ? OPENAI_COMPATIBLE_PRESETS[config.preset] : undefined;
      const apiKeyEnv = config.apiKeyEnv ?? preset?.apiKeyEnv;
      return createOpenAICompatibleProvider({
        name,
        baseUrl: (config.baseUrl ?? preset?.baseUrl)!,
        imageUrls: config.imageUrls ?? (preset && 'imageUrls' in preset ? preset.imageUrls : false),
        apiKey: secret(env, name, 'apiKeyEnv', apiKeyEnv),
        headers: config.headers,
        timeouts: config.timeouts,
      });
    }
    case 'azure-openai': {
      const key = secret(env, name, 'apiKeyEnv', config.apiKeyEnv);
      const token = secret(env, name, 'entraTokenEnv', config.entraTokenEnv);
      return createAzureOpenAIProvider({
        name,
        endpoint: config.endpoint,
        apiVersion: config.apiVersion,
        credential: key ? { kind: 'api-key', key } : { kind: 'entra', token: token! },
        headers: config.headers,
        timeouts: config.timeouts,
      });
    }
    case 'gemini':
      return createGeminiProvider({
        name,
        baseUrl: config.baseUrl,
        apiKey: secret(env, name, 'apiKeyEnv', config.apiKeyEnv),
        headers: config.headers,
        timeouts: config.timeouts,
      });
    case 'bedrock': {
      const sessionToken = secret(env, name, 'sessionTokenEnv', config.sessionTokenEnv);
      return createBedrockProvider({
        name,
        region: config.region,
        endpoint: config.endpoint ?? `https://bedrock-runtime.${config.region}.amazonaws.com`,
        credentials: {
          accessKeyId: secret(env, name, 'accessKeyIdEnv', config.accessKeyIdEnv)!,
          secretAccessKey: secret(env, name, 'secretAccessKeyEnv', config.secretAccessKeyEnv)!,
          ...(sessionToken && { sessionToken }),
        },
        timeouts: config.timeouts,
      });
    }
    case 'anthropic':
      return createAnthropicProvider({
        name,
        baseUrl: config.baseUrl,
        apiKey: secret(env, name, 'apiKeyEnv', config.apiKeyEnv),
        headers: config.headers,
        timeouts: config.timeouts,
        defaultMaxTokens: config.defaultMaxTokens,
        version: config.version,
      });
  }
}

export class ModelCatalog {
  readonly models: readonly CatalogModel[];
  readonly #byRef = new Map<string, CatalogModel>();
  readonly #routes: Record<string, RouteConfig>;
  readonly #providers = new Map<string, Provider>();
  readonly #chatModels = new Map<CatalogModel, ChatModel>();
  readonly #embeddingModels = new Map<CatalogModel, EmbeddingModel>();

  constructor(config: Pick<Config, 'models' | 'providers'> & Partial<Pick<Config, 'routes'>>, env: NodeJS.ProcessEnv = process.env) {
    this.#routes = config.routes ?? {};
    for (const [name, provider] of Object.entries(config.providers)) {
      this.#providers.set(name, buildProvider(name, provider, env));
    }
    this.models = config.models.map((model) => ({ ...model, upstream: model.upstream ?? model.id }));
    // Pins and aliases are unique (the config schema checks); a bare id names its default version.
    for (const model of this.models) {
      this.#byRef.set(targetKey(model), model);
      for (const alias of model.aliases) this.#byRef.set(alias, model);
      if (!this.#byRef.has(model.id) || model.default) this.#byRef.set(model.id, model);
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

  /** The model a client reference names (for a route: its heaviest target), or undefined. */
  resolve(ref: string): CatalogModel | undefined {
    const route = ref.includes('@') ? undefined : this.#routes[ref];
    if (route) {
      const heaviest = [...route.targets].sort((a, b) => b.weight - a.weight)[0]!;
      return this.#byRef.get(heaviest.model);
    }
    return this.#byRef.get(ref);
  }

  /** One model per id, its default version, in configuration order. */
  defaults(): CatalogModel[] {
    return [...new Set(this.models.map((model) => model.id))].map((id) => this.#byRef.get(id)!);
  }

  /** Whether a reference names a route (served by its targets) rather than one version. */
  isRoute(ref: string): boolean {
    return !ref.includes('@') && ref in this.#routes;
  }

  /** The routes that may serve a model id (as a target or a fallback). */
  routesThrough(id: string): string[] {
    return Object.entries(this.#routes)
      .filter(([, route]) =>
        [...route.targets.map((target) => target.model), ...route.fallbacks].some((ref) => this.#byRef.get(ref)?.id === id),
      )
      .map(([name]) => name);
  }

  /** Every configured version of a model id, in configuration order. */
  versions(id: string): CatalogModel[] {
    return this.models.filter((model) => model.id === id);
  }

  /**
   * The targets that serve a reference, in the order to try them; undefined when it names
   * nothing. A route's weighted pick comes first, then its other targets, then its fallbacks.
   */
  plan(ref: string, random = Math.random): ServingPlan | undefined {
    const model = this.resolve(ref);
    if (!model) return undefined;
    const route = ref.includes('@') ? undefined : this.#routes[ref];
    const refs = route ? [...weightedOrder(route.targets, random).map((target) => target.model), ...route.fallbacks] : [targetKey(model)];
    const ordered = [...new Set(refs.map((each) => this.#byRef.get(each)!))].filter((each) => each.capabilities.includes('CHAT'));
    return { model, targets: ordered.map((each) => ({ key: targetKey(each), chat: this.chatModel(each), info: each })) };
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
