/**
 * Token limits and budgets, reserve then reconcile, against the real Redis: concurrent calls never
 * overshoot, refusals come before any provider call, and what is kept equals what the provider
 * reported.
 */
import OpenAI, { RateLimitError } from 'openai';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { nanosToUsd } from '../platform/metering/money.ts';
import { countChatTokens } from '../providers/tokens.ts';
import { TEST_MODELS, collectSubscription, emulatedEmbeddingModel, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
afterAll(() => redis.disconnect());

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const MAX_TOKENS = 100;
const PROMPT = 'how much will this cost';
const PROMPT_TOKENS = countChatTokens([{ role: 'user', content: PROMPT }]);
const CHAT = `mutation { chat(input: {model: "gpt-test", maxTokens: ${MAX_TOKENS}, messages: [{role: USER, content: "${PROMPT}"}]}) { usage { totalTokens costUsd } } }`;
// gpt-test: 2.5 USD per million input tokens, 10 per million output tokens.
const usdOf = (prompt: number, completion: number) => (prompt * 2.5 + completion * 10) / 1_000_000;
const WORST_MICRO = Math.ceil(usdOf(PROMPT_TOKENS, MAX_TOKENS) * 1_000_000);
const today = () => new Date().toISOString().slice(0, 10);
const minute = () => String(Math.floor(Date.now() / 60_000));

async function meteredStack(metering: Record<string, unknown>) {
  const prefix = `mg-test:${randomUUID()}:`;
  const started = await startTestStack({ redis: { url: REDIS_URL, keyPrefix: prefix }, metering, cache: { enabled: false } });
  await postGraphQL(started.url, 'mutation { createTenant(input: {id: "acme", name: "Acme"}) { tenant { id } } }');
  const { body } = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    started.url,
    'mutation { createApiKey(input: {tenantId: "acme", name: "metered", scopes: [CHAT_INVOKE, MODELS_READ]}) { secret apiKey { id } } }',
  );
  return {
    stack: started,
    prefix,
    auth: { authorization: `Bearer ${body.data!.createApiKey.secret}` },
    keyId: body.data!.createApiKey.apiKey.id,
  };
}

/**
 * A stack whose tenant's daily budget fits exactly K worst-case calls, and K scripted answers that
 * each use their whole reservation, so settling frees nothing while the others race.
 */
async function budgetFor(K: number) {
  const setup = await meteredStack({ tenants: { acme: { usdPerDay: (K * WORST_MICRO) / 1_000_000 } } });
  setup.stack.emulator.script(
    ...Array.from({ length: K }, () => ({
      kind: 'chat' as const,
      content: 'priced',
      usage: { prompt: PROMPT_TOKENS, completion: MAX_TOKENS },
    })),
  );
  return setup;
}

const chatCalls = (target: TestStack) => target.emulator.requests.filter((request) => request.path.endsWith('/chat/completions')).length;

describe('budgets and token limits', () => {
  it('admits exactly the K of 50 concurrent OpenAI-API calls that fit the budget, refusing the rest with 429 BUDGET_EXCEEDED', async () => {
    const K = 4;
    const setup = await budgetFor(K);
    stack = setup.stack;
    const client = new OpenAI({
      apiKey: setup.auth.authorization.slice('Bearer '.length),
      baseURL: stack.url.replace(/\/graphql$/, '/v1'),
      maxRetries: 0,
    });
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () =>
        client.chat.completions.create({ model: 'gpt-test', max_tokens: MAX_TOKENS, messages: [{ role: 'user', content: PROMPT }] }).then(
          (answer) => answer,
          (error: unknown) => error,
        ),
      ),
    );
    expect(outcomes.filter((outcome) => !(outcome instanceof Error))).toHaveLength(K);
    expect(chatCalls(stack)).toBe(K);
    const refused = outcomes.filter((outcome): outcome is RateLimitError => outcome instanceof RateLimitError);
    expect(refused).toHaveLength(50 - K);
    expect(refused.map((error) => error.code)).toEqual(Array(50 - K).fill('BUDGET_EXCEEDED'));
    // When the budget comes back (tomorrow), and that the SDKs should not retry before then.
    expect(Number(refused[0]!.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused[0]!.headers.get('x-should-retry')).toBe('false');
  });

  it('lets exactly the K of 50 concurrent calls that fit the tenant’s budget reach the provider, and keeps what they really cost', async () => {
    const K = 5;
    const setup = await budgetFor(K);
    stack = setup.stack;
    const answers = await Promise.all(
      Array.from({ length: 50 }, () => postGraphQL<{ chat: { usage: { costUsd: number } } }>(stack!.url, CHAT, undefined, setup.auth)),
    );
    const served = answers.filter((answer) => answer.body.data?.chat);
    expect(served).toHaveLength(K);
    expect(chatCalls(stack)).toBe(K);
    const refused = answers.filter((answer) => answer.body.errors);
    expect(refused).toHaveLength(50 - K);
    expect(refused[0]?.body.errors?.[0]?.extensions).toMatchObject({
      code: 'BUDGET_EXCEEDED',
      limit: 'usdPerDay',
      scope: 'tenant',
      max: (K * WORST_MICRO) / 1_000_000,
    });
    // The spend kept equals what the provider reported, to the cent (here to the micro-dollar).
    const reported = served.reduce((sum, answer) => sum + answer.body.data!.chat.usage.costUsd, 0);
    const kept = Number(await redis.get(`${setup.prefix}{meter}:usdn:tenant:acme:${today()}`));
    expect(nanosToUsd(kept)).toBeCloseTo(reported, 6);
    expect(reported).toBeCloseTo(K * usdOf(PROMPT_TOKENS, MAX_TOKENS), 9);
    // Metrics: the refusals by limit, and the tokens and cost by tenant and model.
    const inference = stack.stack.subgraphs.find((subgraph) => subgraph.name === 'inference')!;
    const metrics = await (await fetch(`http://127.0.0.1:${inference.port}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`modelgraph_meter_rejections_total\\{limit="usdPerDay",scope="tenant"[^}]*\\} ${50 - K}`));
    expect(metrics).toMatch(
      new RegExp(`modelgraph_tokens_total\\{tenant="acme",model="gpt-test@2024-08-06",kind="completion"[^}]*\\} ${K * MAX_TOKENS}`),
    );
    expect(metrics).toMatch(/modelgraph_cost_usd_total\{tenant="acme",model="gpt-test@2024-08-06"/);
    // Admins (and the tenant) read the budget and what remains of it.
    const budget = await postGraphQL<{ tenant: { budget: { usdPerDay: number; usdSpentToday: number; usdRemainingToday: number } } }>(
      stack.url,
      '{ tenant(id: "acme") { budget { usdPerDay usdSpentToday usdRemainingToday } } }',
    );
    expect(budget.body.data?.tenant.budget.usdPerDay).toBe((K * WORST_MICRO) / 1_000_000);
    expect(budget.body.data?.tenant.budget.usdSpentToday).toBeCloseTo(nanosToUsd(kept), 9);
    expect(budget.body.data?.tenant.budget.usdRemainingToday).toBeCloseTo((K * WORST_MICRO) / 1_000_000 - nanosToUsd(kept), 9);
  });

  it('holds a key to its tokens per minute, settling each call to its real usage', async () => {
    const setup = await meteredStack({});
    stack = setup.stack;
    const perCall = PROMPT_TOKENS + MAX_TOKENS;
    await postGraphQL(
      stack.url,
      `mutation { updateApiKey(input: {id: "${setup.keyId}", limits: {tokensPerMinute: ${perCall * 2}}}) { apiKey { id } } }`,
    );
    // The first call reports fewer tokens than reserved: the difference goes back.
    stack.emulator.script({ kind: 'chat', content: 'short', usage: { prompt: PROMPT_TOKENS, completion: 10 } });
    expect((await postGraphQL(stack.url, CHAT, undefined, setup.auth)).body.errors).toBeUndefined();
    const bucket = `${setup.prefix}{meter}:tpm:key:${setup.keyId}:${minute()}`;
    expect(Number(await redis.get(bucket))).toBe(PROMPT_TOKENS + 10);
    // The second uses all it reserved; a third no longer fits.
    stack.emulator.script({ kind: 'chat', content: 'long', usage: { prompt: PROMPT_TOKENS, completion: MAX_TOKENS } });
    expect((await postGraphQL(stack.url, CHAT, undefined, setup.auth)).body.errors).toBeUndefined();
    const before = chatCalls(stack);
    const refused = await postGraphQL(stack.url, CHAT, undefined, setup.auth);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({
      code: 'TOKEN_LIMIT_EXCEEDED',
      limit: 'tokensPerMinute',
      scope: 'key',
      max: perCall * 2,
    });
    expect(refused.body.errors?.[0]?.extensions?.resetAt).toMatch(/^\d{4}-/);
    expect(chatCalls(stack)).toBe(before);
  });

  it('refunds a failed call, and settles a stream to the usage it reported', async () => {
    const setup = await meteredStack({ tenants: { acme: { tokensPerMinute: 100_000 } } });
    stack = setup.stack;
    const bucket = `${setup.prefix}{meter}:tpm:tenant:acme:${minute()}`;
    stack.emulator.script({ kind: 'error', status: 500 });
    expect((await postGraphQL(stack.url, CHAT, undefined, setup.auth)).body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_UNAVAILABLE');
    expect(Number(await redis.get(bucket))).toBe(0);
    stack.emulator.script({ kind: 'chat', content: 'streamed words', usage: { prompt: 9, completion: 4 } });
    const { results } = await collectSubscription<{ chatStream: { __typename: string } }>(
      stack.ws({ authorization: setup.auth.authorization }),
      {
        query: `subscription { chatStream(input: {model: "gpt-test", maxTokens: ${MAX_TOKENS}, messages: [{role: USER, content: "${PROMPT}"}]}) { __typename } }`,
      },
    );
    expect(results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
    await expect.poll(async () => Number(await redis.get(bucket))).toBe(13);
  });
});

describe('embeddings under budgets', () => {
  it('refuses an embeddings request over the key’s tokens per minute before any provider call, and settles cached inputs to nothing', async () => {
    const embed = emulatedEmbeddingModel('embed-metered');
    const prefix = `mg-test:${randomUUID()}:`;
    stack = await startTestStack({
      redis: { url: REDIS_URL, keyPrefix: prefix },
      models: [...TEST_MODELS, embed],
      embeddings: { batchWindowMs: 0 },
    });
    const target = stack;
    const { body } = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
      target.url,
      'mutation { createApiKey(input: {name: "e", scopes: [EMBEDDINGS_INVOKE], limits: {tokensPerMinute: 6}}) { secret apiKey { id } } }',
    );
    const auth = { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    const ask = (inputs: string[]) =>
      postGraphQL(
        target.url,
        'query($inputs: [String!]!) { embeddings(input: {model: "embed-metered", inputs: $inputs}) { dimensions } }',
        { inputs },
        auth,
      );
    expect((await ask(['one two three'])).body.errors).toBeUndefined();
    // Cached now: the second ask reserves its tokens and settles to nothing.
    expect((await ask(['one two three'])).body.errors).toBeUndefined();
    const bucket = `${prefix}{meter}:tpm:key:${body.data!.createApiKey.apiKey.id}:${minute()}`;
    expect(Number(await redis.get(bucket))).toBe(3);
    const calls = target.emulator.requests.length;
    const refused = await ask(['four five six seven']);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'TOKEN_LIMIT_EXCEEDED', scope: 'key' });
    expect(target.emulator.requests.length).toBe(calls);
  });
});

describe('what a reservation counts', () => {
  it('counts tool definitions as prompt tokens, so a huge tool schema cannot slip past a token limit', async () => {
    const setup = await meteredStack({ tenants: { acme: { tokensPerMinute: 2_000 } } });
    stack = setup.stack;
    const parameters = JSON.stringify({
      type: 'object',
      properties: Object.fromEntries(
        Array.from({ length: 150 }, (_, index) => [`field_${index}`, { type: 'string', description: `the value number ${index}` }]),
      ),
    });
    const { body } = await postGraphQL(
      stack.url,
      'mutation($input: ChatInput!) { chat(input: $input) { content } }',
      { input: { model: 'gpt-test', maxTokens: 10, messages: [{ role: 'USER', content: 'hi' }], tools: [{ name: 'wide', parameters }] } },
      setup.auth,
    );
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'TOKEN_LIMIT_EXCEEDED', scope: 'tenant' });
    expect(chatCalls(stack)).toBe(0);
  });
});
