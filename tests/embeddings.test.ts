/**
 * The embeddings subgraph through the router: cross-request batching (DataLoader), the vector
 * cache, limits and authorization, against the OpenAI wire-format emulator.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { emulatedEmbedding } from './emulator/openai.ts';
import { TEST_MODELS, postGraphQL, startTestStack, type GraphQLResponse, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const BATCH = 16;
const DIMENSIONS = 8;
const EMBED_MODEL = {
  id: 'embed-test',
  provider: 'emulated',
  upstream: 'embed-test-upstream',
  version: '3',
  capabilities: ['EMBEDDINGS'],
  contextWindow: 64,
  maxOutputTokens: 1,
  dimensions: DIMENSIONS,
  maxBatchSize: BATCH,
};

const EMBEDDINGS = `query Embed($input: EmbeddingsInput!) {
  embeddings(input: $input) { vectors dimensions model { id version dimensions } usage { promptTokens totalTokens cachedInputs } }
}`;

interface EmbeddingsData {
  embeddings: {
    vectors: number[][];
    dimensions: number;
    model: { id: string; version: string; dimensions: number | null };
    usage: { promptTokens: number; totalTokens: number; cachedInputs: number };
  };
}

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** A stack with the emulated embedding model; a long batch window so that concurrent requests surely meet. */
function startEmbeddingStack(embeddings: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  return startTestStack({ models: [...TEST_MODELS, EMBED_MODEL], embeddings: { batchWindowMs: 250, ...embeddings }, ...extra });
}

const embed = (target: TestStack, input: Record<string, unknown>, headers?: Record<string, string>) =>
  postGraphQL<EmbeddingsData>(target.url, EMBEDDINGS, { input: { model: 'embed-test', ...input } }, headers);

const upstreamCalls = (target: TestStack) => target.emulator.requests.filter((request) => request.path.endsWith('/embeddings'));

describe('embeddings', () => {
  it('coalesces 208 concurrent single-text requests into 208 / batch size provider calls, each caller getting its own vector', async () => {
    // A window far longer than the test: every call goes because its batch is full, never because
    // time ran out, so the count does not depend on how fast the requests arrive.
    stack = await startEmbeddingStack({ batchWindowMs: 60_000 });
    const texts = Array.from({ length: 13 * BATCH }, (_, index) => `document number ${index}`);
    const answers = await Promise.all(texts.map((text) => embed(stack!, { inputs: [text] })));
    for (const [index, answer] of answers.entries()) {
      expect(answer.body.errors).toBeUndefined();
      expect(answer.body.data?.embeddings.vectors).toEqual([emulatedEmbedding(texts[index]!, DIMENSIONS)]);
    }
    const calls = upstreamCalls(stack);
    expect(calls).toHaveLength(13);
    expect(calls.every((call) => (call.body.input as string[]).length <= BATCH)).toBe(true);
    expect(calls.flatMap((call) => call.body.input as string[]).sort()).toEqual([...texts].sort());
  });

  it('returns several inputs of one request in their order, with the model, its dimensions and usage', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    const inputs = ['zebra crossing', 'apple pie', 'zebra crossing'];
    const { body } = await embed(stack, { inputs });
    expect(body.data?.embeddings).toMatchObject({
      dimensions: DIMENSIONS,
      model: { id: 'embed-test', version: '3', dimensions: DIMENSIONS },
      // The repeated text shares the first one's load: it costs nothing, like a cache hit.
      usage: { cachedInputs: 1 },
    });
    expect(body.data?.embeddings.vectors).toEqual(inputs.map((text) => emulatedEmbedding(text, DIMENSIONS)));
    expect(body.data?.embeddings.usage.promptTokens).toBeGreaterThan(0);
  });

  it('serves a repeated text from the cache: no provider call, marked cached, no tokens', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 }, { redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` } });
    const first = await embed(stack, { inputs: ['cache me'] });
    expect(first.body.data?.embeddings.usage.cachedInputs).toBe(0);
    const before = upstreamCalls(stack).length;
    const again = await embed(stack, { inputs: ['cache me', 'and not me'] });
    expect(again.body.data?.embeddings.vectors).toEqual([
      emulatedEmbedding('cache me', DIMENSIONS),
      emulatedEmbedding('and not me', DIMENSIONS),
    ]);
    expect(again.body.data?.embeddings.usage).toMatchObject({ cachedInputs: 1 });
    expect(again.body.data?.embeddings.usage.promptTokens).toBeLessThan(first.body.data!.embeddings.usage.promptTokens + 10);
    const calls = upstreamCalls(stack).slice(before);
    expect(calls.map((call) => call.body.input)).toEqual([['and not me']]);
    const cachedOnly = await embed(stack, { inputs: ['cache me'] });
    expect(cachedOnly.body.data?.embeddings.usage).toEqual({ promptTokens: 0, totalTokens: 0, cachedInputs: 1 });
  });

  it('keys the cache on dimensions: shorter vectors are not served from full-length ones', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    await embed(stack, { inputs: ['short or long'] });
    const short = await embed(stack, { inputs: ['short or long'], dimensions: 4 });
    expect(short.body.data?.embeddings).toMatchObject({ dimensions: 4, usage: { cachedInputs: 0 } });
    expect(short.body.data?.embeddings.vectors[0]).toEqual(emulatedEmbedding('short or long', 4));
    expect(upstreamCalls(stack).at(-1)?.body.dimensions).toBe(4);
  });

  it('normalizes to unit length when asked', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    const { body } = await embed(stack, { inputs: ['unit please'], normalize: true });
    const vector = body.data!.embeddings.vectors[0]!;
    expect(Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0))).toBeCloseTo(1, 6);
  });

  it('fails only the callers whose batch failed, with a coded error', async () => {
    stack = await startEmbeddingStack();
    stack.emulator.script({ kind: 'error', status: 500 });
    const answers = await Promise.all(Array.from({ length: 40 }, (_, index) => embed(stack!, { inputs: [`text ${index}`] })));
    const failed = answers.filter((answer) => answer.body.errors);
    expect(failed).toHaveLength(BATCH);
    for (const answer of failed) {
      expect(answer.body.data).toEqual({ embeddings: null });
      expect(answer.body.errors?.[0]?.extensions).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE', provider: 'emulated' });
    }
    expect(answers.filter((answer) => answer.body.data?.embeddings)).toHaveLength(40 - BATCH);
    expect(upstreamCalls(stack)).toHaveLength(Math.ceil(40 / BATCH));
  });

  it('sends a full batch at once, without waiting out the window', async () => {
    // A one-minute window: only dispatch-when-full lets these finish within the test's timeout.
    stack = await startEmbeddingStack({ batchWindowMs: 60_000 });
    const answers = await Promise.all(Array.from({ length: BATCH }, (_, index) => embed(stack!, { inputs: [`full ${index}`] })));
    expect(answers.every((answer) => answer.body.data?.embeddings.vectors.length === 1)).toBe(true);
    expect(upstreamCalls(stack)).toHaveLength(1);
  });

  it('sends one request’s inputs together even with batching across requests off, and identical texts once', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    const inputs = ['dup', 'one', 'dup', 'two', 'dup'];
    const { body } = await embed(stack, { inputs });
    expect(body.data?.embeddings.vectors).toEqual(inputs.map((text) => emulatedEmbedding(text, DIMENSIONS)));
    expect(upstreamCalls(stack).map((call) => call.body.input)).toEqual([['dup', 'one', 'two']]);
  });

  it('retries a batch the provider refused as malformed in halves, so one bad input does not fail the others', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    stack.emulator.script({ kind: 'error', status: 400 });
    const { body } = await embed(stack, { inputs: ['a', 'b', 'c', 'd'] });
    expect(body.errors).toBeUndefined();
    expect(body.data?.embeddings.vectors).toHaveLength(4);
    expect(upstreamCalls(stack).map((call) => call.body.input)).toEqual([
      ['a', 'b', 'c', 'd'],
      ['a', 'b'],
      ['c', 'd'],
    ]);
  });

  it('keeps each tenant’s vector cache apart (a hit would tell one tenant what another embedded)', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    const keyFor = async (tenant: string) => {
      await postGraphQL(stack!.url, `mutation { createTenant(input: {id: "${tenant}", name: "${tenant}"}) { tenant { id } } }`);
      const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
        stack!.url,
        `mutation { createApiKey(input: {tenantId: "${tenant}", name: "e", scopes: [EMBEDDINGS_INVOKE]}) { secret } }`,
      );
      return { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    };
    const [alpha, beta] = [await keyFor('alpha'), await keyFor('beta')];
    const query = 'query($input: EmbeddingsInput!) { embeddings(input: $input) { usage { cachedInputs } } }';
    const ask = (headers: Record<string, string>) =>
      postGraphQL<{ embeddings: { usage: { cachedInputs: number } } }>(
        stack!.url,
        query,
        { input: { model: 'embed-test', inputs: ['the merger'] } },
        headers,
      );
    expect((await ask(alpha)).body.data?.embeddings.usage.cachedInputs).toBe(0);
    expect((await ask(alpha)).body.data?.embeddings.usage.cachedInputs).toBe(1);
    expect((await ask(beta)).body.data?.embeddings.usage.cachedInputs).toBe(0);
  });

  it('counts the input limit per operation, so aliases cannot multiply it', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0, maxInputs: 3 });
    const { body } = await postGraphQL<Record<string, unknown>>(
      stack.url,
      '{ a: embeddings(input: {model: "embed-test", inputs: ["1", "2"]}) { dimensions } b: embeddings(input: {model: "embed-test", inputs: ["3", "4"]}) { dimensions } }',
    );
    expect(body.errors?.map((error) => [error.path, error.extensions?.code])).toEqual([[['b'], 'BAD_USER_INPUT']]);
    expect(body.data).toEqual({ a: { dimensions: DIMENSIONS }, b: null });
    expect(upstreamCalls(stack).flatMap((call) => call.body.input as string[])).toHaveLength(2);
  });

  it('answers a cached text exactly as it answered it fresh (vectors are float32 either way)', async () => {
    stack = await startTestStack();
    const query = '{ embeddings(input: {model: "hashing-embed", inputs: ["same answer twice"]}) { vectors usage { cachedInputs } } }';
    const fresh = await postGraphQL<{ embeddings: { vectors: number[][]; usage: { cachedInputs: number } } }>(stack.url, query);
    const cached = await postGraphQL<{ embeddings: { vectors: number[][]; usage: { cachedInputs: number } } }>(stack.url, query);
    expect(cached.body.data?.embeddings.usage.cachedInputs).toBe(1);
    expect(cached.body.data?.embeddings.vectors).toEqual(fresh.body.data?.embeddings.vectors);
  });

  it.each([
    ['no inputs', { inputs: [] as string[] }, 'BAD_USER_INPUT'],
    ['an empty input', { inputs: ['fine', '  '] }, 'BAD_USER_INPUT'],
    ['too many inputs', { inputs: ['a', 'b', 'c', 'd'] }, 'BAD_USER_INPUT'],
    ['an input over the context window', { inputs: ['word '.repeat(100)] }, 'CONTEXT_WINDOW_EXCEEDED'],
    ['dimensions above the model’s', { inputs: ['x'], dimensions: 9 }, 'BAD_USER_INPUT'],
    ['a chat model', { model: 'echo', inputs: ['x'] }, 'MODEL_CAPABILITY_UNSUPPORTED'],
    ['an unknown model', { model: 'nope', inputs: ['x'] }, 'MODEL_NOT_FOUND'],
  ])('refuses %s with a coded error, before any provider call', async (_name, input, code) => {
    stack = await startEmbeddingStack({ batchWindowMs: 0, maxInputs: 3 });
    const { body } = await embed(stack, input);
    expect(body.data).toEqual({ embeddings: null });
    expect(body.errors?.[0]?.extensions?.code).toBe(code);
    expect(upstreamCalls(stack)).toHaveLength(0);
  });

  it('needs the embeddings:invoke scope and a model the key may use', async () => {
    stack = await startEmbeddingStack({ batchWindowMs: 0 });
    const create = async (scopes: string[], allowedModels?: string[]) => {
      const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
        stack!.url,
        'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }',
        { input: { name: 'embedder', scopes, ...(allowedModels && { allowedModels }) } },
      );
      return { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    };
    const refused: GraphQLResponse<EmbeddingsData>[] = [
      await embed(stack, { inputs: ['x'] }, await create(['CHAT_INVOKE', 'MODELS_READ'])),
      await embed(stack, { inputs: ['x'] }, await create(['EMBEDDINGS_INVOKE', 'MODELS_READ'], ['hashing-embed'])),
    ];
    for (const { body } of refused) expect(body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(upstreamCalls(stack)).toHaveLength(0);
    const allowed = await embed(stack, { inputs: ['x'] }, await create(['EMBEDDINGS_INVOKE', 'MODELS_READ'], ['embed-test']));
    expect(allowed.body.data?.embeddings.vectors).toHaveLength(1);
  });

  it('embeds with the offline hashing model, and reports Model.dimensions beside the inference fields', async () => {
    stack = await startTestStack();
    const { body } = await postGraphQL<{
      embeddings: { vectors: number[][] };
      models: { id: string; dimensions: number | null; contextWindow: number }[];
    }>(
      stack.url,
      '{ embeddings(input: {model: "hashing-embed", inputs: ["offline"]}) { vectors } models { id dimensions contextWindow } }',
    );
    expect(body.errors).toBeUndefined();
    expect(body.data?.embeddings.vectors[0]).toHaveLength(32);
    expect(body.data?.models.find((model) => model.id === 'hashing-embed')).toEqual({
      id: 'hashing-embed',
      dimensions: 32,
      contextWindow: 8192,
    });
    expect(body.data?.models.find((model) => model.id === 'echo')?.dimensions).toBeNull();
  });
});
