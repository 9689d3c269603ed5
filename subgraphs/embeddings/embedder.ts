/**
 * Embedding requests, served together. Each input of each request becomes one load on a
 * DataLoader per (model version, dimensions): loads from every caller that arrive within
 * `embeddings.batchWindowMs` share one provider call, and a call goes as soon as it holds the
 * model's `maxBatchSize` inputs. DataLoader hands each caller exactly its own vectors, in its own
 * order; a failed call fails the loads in it, and only those.
 *
 * Before loading, inputs are looked up in the vector cache (Redis, or memory), keyed by the
 * caller's tenant (unless `cache.shareAcrossTenants`), model version, dimensions and the SHA-256
 * of the text: only misses go upstream, and hits cost nothing. Identical texts in flight at once
 * share one load. Vectors are returned and cached as float32 (what providers compute), so a
 * cached answer equals a fresh one; `normalize` scales copies.
 *
 * A batch the provider refuses as malformed (one caller's text too long for its tokenizer, the
 * batch over a token cap) is split in halves and retried, so only the offending input fails.
 */
import { createHash, randomUUID } from 'node:crypto';
import DataLoader from 'dataloader';
import { ErrorCode, badInput, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import { priced, type Spend } from '../../platform/metering/spend.ts';
import { cacheEntryNames } from '../../platform/redis/keys.ts';
import type { ResponseCache } from '../../platform/redis/response-cache.ts';
import { isRetired, targetKey, type CatalogModel, type ModelCatalog } from '../../providers/catalog.ts';
import { ProviderError, publicDetails, publicMessage } from '../../providers/errors.ts';
import { countTextTokens } from '../../providers/tokens.ts';

export interface EmbeddingsRequest {
  model: string;
  inputs: readonly string[];
  dimensions?: number | null;
  normalize?: boolean | null;
  tags?: readonly string[] | null;
}

/** Who asks, for the cache scope and the per-operation input budget. */
export interface EmbeddingsCaller {
  /** Cache scope: `tenant:<id>`, or `shared` when the deployment shares one cache. */
  cacheScope: string;
  /** Inputs already asked for by this operation (aliases share the budget). */
  budget: { inputs: number };
}

export interface EmbeddingsAnswer {
  model: CatalogModel;
  vectors: number[][];
  dimensions: number;
  /** What went upstream (prompt tokens only) and its price; `cachedInputs` cost nothing. */
  usage: Spend & { cachedInputs: number };
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

function resolveModel(catalog: ModelCatalog, ref: string): CatalogModel {
  const model = catalog.isRoute(ref) ? undefined : catalog.resolve(ref);
  if (!model) throw codedError(ErrorCode.MODEL_NOT_FOUND, `no embedding model, alias or version pin "${ref}"`, { model: ref });
  if (!model.capabilities.includes('EMBEDDINGS')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not embed`, {
      model: model.id,
      capability: 'EMBEDDINGS',
    });
  }
  if (isRetired(model)) {
    throw codedError(
      ErrorCode.MODEL_RETIRED,
      `model "${targetKey(model)}" is retired${model.replacement ? `; use "${model.replacement}"` : ''}`,
      {
        model: targetKey(model),
        ...(model.replacement && { replacement: model.replacement }),
      },
    );
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
  readonly #loaders = new Map<string, Batcher>();
  /** Loads in flight by cache key: identical texts asked for at once go upstream once. */
  readonly #inFlight = new Map<string, Promise<number[]>>();

  constructor(
    catalog: ModelCatalog,
    cache: ResponseCache | undefined,
    settings: EmbedderSettings,
    log: Logger,
    observer: EmbedderObserver,
  ) {
    this.#catalog = catalog;
    this.#cache = cache;
    this.#settings = settings;
    this.#log = log;
    this.#observer = observer;
  }

  async embed(request: EmbeddingsRequest, caller: EmbeddingsCaller): Promise<EmbeddingsAnswer> {
    const model = resolveModel(this.#catalog, request.model);
    const dimensions = this.#dimensions(model, request.dimensions);
    const tokens = this.#checkInputs(model, request.inputs, caller);
    const cacheKeys = request.inputs.map((text) =>
      cacheEntryNames.vector(caller.cacheScope, targetKey(model), dimensions, createHash('sha256').update(text).digest('hex')),
    );
    const cached = await this.#fromCache(cacheKeys);
    const batcher = this.#batcher(model, dimensions);
    // Inputs this request loads itself are what it pays for; joined loads and cache hits cost nothing.
    const own = new Set<number>();
    const settled = await Promise.allSettled(
      request.inputs.map((text, index) => {
        if (cached[index]) return Promise.resolve(cached[index]);
        const { load, joined } = this.#load(batcher, cacheKeys[index]!, text);
        if (!joined) own.add(index);
        return load;
      }),
    );
    const paidTokens = [...own].filter((index) => settled[index]!.status === 'fulfilled').reduce((sum, index) => sum + tokens[index]!, 0);
    const spent = priced({ promptTokens: paidTokens, completionTokens: 0, totalTokens: paidTokens }, model.pricing);
    const failure = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failure) {
      // What went upstream and succeeded was billed (and cached): the caller pays for it even so.
      throw Object.assign(failure.reason as Error, { spent });
    }
    const vectors = settled.map((result) => (result as PromiseFulfilledResult<number[]>).value);
    this.#observer.cache(model, request.inputs.length - own.size, own.size);
    return {
      model,
      dimensions,
      vectors: request.normalize ? vectors.map(l2Normalized) : vectors,
      usage: { ...spent, cachedInputs: request.inputs.length - own.size },
    };
  }

  /** One input: joins an identical load in flight (`joined`), else loads it and caches the vector as soon as it comes. */
  #load(batcher: Batcher, cacheKey: string, text: string): { load: Promise<number[]>; joined: boolean } {
    const pending = this.#inFlight.get(cacheKey);
    if (pending) return { load: pending, joined: true };
    const load = batcher.load(text).then((vector) => {
      this.#store(cacheKey, vector);
      return vector;
    });
    this.#inFlight.set(cacheKey, load);
    const forget = () => this.#inFlight.delete(cacheKey);
    load.then(forget, forget);
    return { load, joined: false };
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
  #checkInputs(model: CatalogModel, inputs: readonly string[], caller: EmbeddingsCaller): number[] {
    if (inputs.length === 0) throw badInput('inputs', 'inputs must hold at least one text');
    // Per operation, not per field: aliases cannot multiply the limit.
    caller.budget.inputs += inputs.length;
    if (caller.budget.inputs > this.#settings.maxInputs) {
      throw badInput('inputs', `at most ${this.#settings.maxInputs} inputs per operation (all embeddings fields together)`, {
        max: this.#settings.maxInputs,
      });
    }
    return inputs.map((text, index) => {
      if (text.trim().length === 0) throw badInput(`inputs[${index}]`, `inputs[${index}] is empty`);
      const count = countTextTokens(text);
      if (count > model.contextWindow) {
        throw codedError(
          ErrorCode.CONTEXT_WINDOW_EXCEEDED,
          `inputs[${index}] has ${count} tokens; model "${model.id}" takes at most ${model.contextWindow}`,
          {
            field: `inputs[${index}]`,
            promptTokens: count,
            contextWindow: model.contextWindow,
          },
        );
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

  #store(key: string, vector: number[]): void {
    const cache = this.#cache;
    if (!cache || this.#settings.cacheTtlMs === 0) return;
    cache
      .set(key, encodeVector(vector), this.#settings.cacheTtlMs)
      .catch((error: unknown) => this.#log.warn({ err: error }, 'could not cache a vector'));
  }

  #batcher(model: CatalogModel, dimensions: number): Batcher {
    const key = `${targetKey(model)}:${dimensions}`;
    let batcher = this.#loaders.get(key);
    if (!batcher) {
      batcher = new Batcher(
        (texts) => this.#call(model, dimensions, texts),
        this.#catalog.embeddingModel(model).maxBatchSize,
        this.#settings.batchWindowMs,
      );
      this.#loaders.set(key, batcher);
    }
    return batcher;
  }

  /**
   * One provider call for a batch. A batch refused as malformed is split and retried, so the
   * input at fault fails alone; any other failure becomes the same coded error for every input.
   */
  async #call(model: CatalogModel, dimensions: number, texts: readonly string[]): Promise<(number[] | Error)[]> {
    const embedding = this.#catalog.embeddingModel(model);
    const requestId = randomUUID();
    try {
      // A batch serves many callers, so no one caller's disconnect cancels it; provider timeouts bound it.
      const result = await embedding.embed([...texts], {
        signal: new AbortController().signal,
        requestId,
        ...(dimensions !== model.dimensions && { dimensions }),
      });
      if (result.vectors.length !== texts.length)
        throw new Error(`provider returned ${result.vectors.length} vectors for ${texts.length} inputs`);
      if (result.vectors.some((vector) => vector.length !== dimensions))
        throw new Error(`provider returned vectors that are not ${dimensions} long`);
      this.#observer.call(model, texts.length, 'ok');
      return result.vectors.map(asFloat32);
    } catch (error) {
      if (error instanceof ProviderError && error.code === 'UPSTREAM_BAD_REQUEST' && texts.length > 1) {
        this.#observer.call(model, texts.length, 'split');
        const half = Math.ceil(texts.length / 2);
        const [first, second] = await Promise.all([
          this.#call(model, dimensions, texts.slice(0, half)),
          this.#call(model, dimensions, texts.slice(half)),
        ]);
        return [...first, ...second];
      }
      const coded =
        error instanceof ProviderError
          ? codedError(error.code, publicMessage(error), publicDetails(error))
          : codedError(
              ErrorCode.UPSTREAM_BAD_RESPONSE,
              `provider ${model.provider} answered the embeddings call in a way modelgraph could not read`,
              { provider: model.provider },
            );
      this.#observer.call(model, texts.length, String(coded.extensions.code));
      this.#log.warn(
        {
          provider: model.provider,
          model: targetKey(model),
          inputs: texts.length,
          requestId,
          code: coded.extensions.code,
          err: error instanceof ProviderError ? { message: error.upstreamMessage } : error,
        },
        'embeddings call failed',
      );
      return texts.map(() => coded);
    }
  }
}

/** Float32, as providers compute and as the cache stores: a fresh answer equals a cached one. */
const asFloat32 = (vector: readonly number[]) => Array.from(new Float32Array(vector));

/**
 * DataLoader with a time window that ends early when the batch is full. DataLoader starts a new
 * batch once one holds `maxBatchSize` keys, but still dispatches the full one only when its
 * schedule fires; here a full batch goes at once. With a window of 0, one request's inputs still
 * share calls (DataLoader's default tick), without waiting for other requests.
 */
class Batcher {
  readonly #loader: DataLoader<string, number[]>;
  readonly #maxBatchSize: number;
  #current: { dispatch: () => void; size: number; timer: NodeJS.Timeout } | undefined;

  constructor(call: (texts: readonly string[]) => Promise<(number[] | Error)[]>, maxBatchSize: number, windowMs: number) {
    this.#maxBatchSize = maxBatchSize;
    this.#loader = new DataLoader<string, number[]>(call, {
      // No memo between requests: the vector cache is the cache; this only batches.
      cache: false,
      maxBatchSize,
      ...(windowMs > 0 && {
        batchScheduleFn: (dispatch: () => void) => {
          let sent = false;
          const once = () => {
            if (!sent) dispatch();
            sent = true;
          };
          this.#current = { dispatch: once, size: 0, timer: setTimeout(once, windowMs) };
        },
      }),
    });
  }

  load(text: string): Promise<number[]> {
    const loading = this.#loader.load(text);
    const batch = this.#current;
    if (batch && ++batch.size >= this.#maxBatchSize) {
      clearTimeout(batch.timer);
      batch.dispatch();
      this.#current = undefined;
    }
    return loading;
  }
}
