/**
 * Embedding requests, served together. Each input of each request becomes one load on a
 * DataLoader per (model version, dimensions): loads from every caller that arrive within
 * `embeddings.batchWindowMs` share one provider call, and a call goes as soon as it holds the
 * model's `maxBatchSize` inputs. DataLoader hands each caller exactly its own vectors, in its own
 * order; a failed call fails the loads in it, and only those.
 *
 * Before loading, inputs are looked up in the vector cache (Redis, or memory), keyed by model
 * version, dimensions and the SHA-256 of the text: only misses go upstream, and hits cost nothing.
 * Vectors are cached as the provider returned them; `normalize` scales copies.
 */
import { createHash, randomUUID } from 'node:crypto';
import DataLoader from 'dataloader';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { ResponseCache } from '../../platform/response-cache.ts';
import { isRetired, targetKey, type CatalogModel, type ModelCatalog } from '../../providers/catalog.ts';
import { ProviderError, publicDetails, publicMessage } from '../../providers/errors.ts';
import { countTextTokens } from '../../providers/tokens.ts';

export interface EmbeddingsRequest {
  model: string;
  inputs: readonly string[];
  dimensions?: number | null;
  normalize?: boolean | null;
}

export interface EmbeddingsAnswer {
  model: CatalogModel;
  vectors: number[][];
  dimensions: number;
  usage: { promptTokens: number; totalTokens: number; cachedInputs: number };
}

export interface EmbedderSettings {
  maxInputs: number;
  batchWindowMs: number;
  cacheTtlMs: number;
}

/** What the embedder reports about provider calls (metrics). */
export interface EmbedderObserver {
  call(model: CatalogModel, inputs: number, outcome: string): void;
  cache(model: CatalogModel, hits: number, misses: number): void;
}

const badInput = (field: string, message: string, details: Record<string, unknown> = {}) => codedError(ErrorCode.BAD_USER_INPUT, message, { field, ...details });

function resolveModel(catalog: ModelCatalog, ref: string): CatalogModel {
  const model = catalog.isRoute(ref) ? undefined : catalog.resolve(ref);
  if (!model) throw codedError(ErrorCode.MODEL_NOT_FOUND, `no embedding model, alias or version pin "${ref}"`, { model: ref });
  if (!model.capabilities.includes('EMBEDDINGS')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not embed`, { model: model.id, capability: 'EMBEDDINGS' });
  }
  if (isRetired(model)) {
    throw codedError(ErrorCode.MODEL_RETIRED, `model "${targetKey(model)}" is retired${model.replacement ? `; use "${model.replacement}"` : ''}`, {
      model: targetKey(model),
      ...(model.replacement && { replacement: model.replacement }),
    });
  }
  return model;
}

function l2Normalized(vector: readonly number[]): number[] {
  const norm = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0));
  return norm === 0 ? [...vector] : vector.map((value) => value / norm);
}

const encodeVector = (vector: readonly number[]) => Buffer.from(new Float32Array(vector).buffer).toString('base64');
function decodeVector(text: string): number[] {
  const bytes = Buffer.from(text, 'base64');
  return Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
}

export class Embedder {
  readonly #catalog: ModelCatalog;
  readonly #cache: ResponseCache | undefined;
  readonly #settings: EmbedderSettings;
  readonly #log: Logger;
  readonly #observer: EmbedderObserver;
  readonly #loaders = new Map<string, DataLoader<string, number[]>>();

  constructor(catalog: ModelCatalog, cache: ResponseCache | undefined, settings: EmbedderSettings, log: Logger, observer: EmbedderObserver) {
    this.#catalog = catalog;
    this.#cache = cache;
    this.#settings = settings;
    this.#log = log;
    this.#observer = observer;
  }

  async embed(request: EmbeddingsRequest): Promise<EmbeddingsAnswer> {
    const model = resolveModel(this.#catalog, request.model);
    const dimensions = this.#dimensions(model, request.dimensions);
    const tokens = this.#checkInputs(model, request.inputs);
    const cacheKeys = request.inputs.map((text) => `emb:${targetKey(model)}:${dimensions}:${createHash('sha256').update(text).digest('hex')}`);
    const cached = await this.#fromCache(cacheKeys);
    const loader = this.#loader(model, dimensions);
    const vectors = await Promise.all(request.inputs.map((text, index) => cached[index] ?? loader.load(text)));
    const misses = request.inputs.map((_text, index) => index).filter((index) => !cached[index]);
    this.#observer.cache(model, request.inputs.length - misses.length, misses.length);
    this.#store(misses.map((index) => [cacheKeys[index]!, vectors[index]!]));
    const promptTokens = misses.reduce((sum, index) => sum + tokens[index]!, 0);
    return {
      model,
      dimensions,
      vectors: request.normalize ? vectors.map(l2Normalized) : vectors,
      usage: { promptTokens, totalTokens: promptTokens, cachedInputs: request.inputs.length - misses.length },
    };
  }

  #dimensions(model: CatalogModel, requested: number | null | undefined): number {
    const full = model.dimensions ?? 0;
    if (requested === null || requested === undefined) return full;
    if (!Number.isInteger(requested) || requested < 1 || requested > full) {
      throw badInput('dimensions', `dimensions must be 1 to ${full} for model "${model.id}"`, { max: full });
    }
    return requested;
  }

  /** Token counts per input, after refusing empty, oversized or too many inputs. */
  #checkInputs(model: CatalogModel, inputs: readonly string[]): number[] {
    if (inputs.length === 0) throw badInput('inputs', 'inputs must hold at least one text');
    if (inputs.length > this.#settings.maxInputs) throw badInput('inputs', `at most ${this.#settings.maxInputs} inputs per request`, { max: this.#settings.maxInputs });
    return inputs.map((text, index) => {
      if (text.trim().length === 0) throw badInput(`inputs[${index}]`, `inputs[${index}] is empty`);
      const count = countTextTokens(text);
      if (count > model.contextWindow) {
        throw codedError(ErrorCode.CONTEXT_WINDOW_EXCEEDED, `inputs[${index}] has ${count} tokens; model "${model.id}" takes at most ${model.contextWindow}`, {
          field: `inputs[${index}]`,
          promptTokens: count,
          contextWindow: model.contextWindow,
        });
      }
      return count;
    });
  }

  async #fromCache(keys: string[]): Promise<(number[] | undefined)[]> {
    const cache = this.#cache;
    if (!cache || this.#settings.cacheTtlMs === 0) return keys.map(() => undefined);
    try {
      const found = await Promise.all(keys.map((key) => cache.get(key)));
      return found.map((text) => (text === undefined ? undefined : decodeVector(text)));
    } catch (error) {
      this.#log.warn({ err: error }, 'vector cache unavailable; calling the provider');
      return keys.map(() => undefined);
    }
  }

  #store(entries: [string, number[]][]): void {
    const cache = this.#cache;
    if (!cache || this.#settings.cacheTtlMs === 0) return;
    for (const [key, vector] of entries) {
      cache.set(key, encodeVector(vector), this.#settings.cacheTtlMs).catch((error: unknown) => this.#log.warn({ err: error }, 'could not cache a vector'));
    }
  }

  #loader(model: CatalogModel, dimensions: number): DataLoader<string, number[]> {
    const key = `${targetKey(model)}:${dimensions}`;
    let loader = this.#loaders.get(key);
    if (!loader) {
      const window = this.#settings.batchWindowMs;
      loader = new DataLoader<string, number[]>((texts) => this.#call(model, dimensions, texts), {
        // No memo between requests: the vector cache is the cache; this only batches.
        cache: false,
        maxBatchSize: window === 0 ? 1 : this.#catalog.embeddingModel(model).maxBatchSize,
        batchScheduleFn: (dispatch) => setTimeout(dispatch, window),
      });
      this.#loaders.set(key, loader);
    }
    return loader;
  }

  /** One provider call for a batch; a failure becomes the same coded error for every input in it. */
  async #call(model: CatalogModel, dimensions: number, texts: readonly string[]): Promise<(number[] | Error)[]> {
    const embedding = this.#catalog.embeddingModel(model);
    const requestId = randomUUID();
    try {
      // A batch serves many callers, so no one caller's disconnect cancels it; provider timeouts bound it.
      const result = await embedding.embed([...texts], { signal: new AbortController().signal, requestId, ...(dimensions !== model.dimensions && { dimensions }) });
      if (result.vectors.length !== texts.length) throw new Error(`provider returned ${result.vectors.length} vectors for ${texts.length} inputs`);
      if (result.vectors.some((vector) => vector.length !== dimensions)) throw new Error(`provider returned vectors that are not ${dimensions} long`);
      this.#observer.call(model, texts.length, 'ok');
      return result.vectors;
    } catch (error) {
      const coded =
        error instanceof ProviderError
          ? codedError(error.code, publicMessage(error), publicDetails(error))
          : codedError(ErrorCode.UPSTREAM_BAD_RESPONSE, `provider ${model.provider} answered the embeddings call in a way modelgraph could not read`, { provider: model.provider });
      this.#observer.call(model, texts.length, String(coded.extensions.code));
      this.#log.warn({ provider: model.provider, model: targetKey(model), inputs: texts.length, requestId, code: coded.extensions.code, err: error instanceof ProviderError ? { message: error.upstreamMessage } : error }, 'embeddings call failed');
      return texts.map(() => coded);
    }
  }
}
