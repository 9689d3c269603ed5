/**
 * Usage end to end: every model call emits exactly one usage event, the usage subgraph aggregates
 * the stream, and Query.usage adds up to exactly what the calls reported.
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { TokenUsage as Usage } from '../codegen/inference.resolvers.ts';
import { TEST_MODELS, collectSubscription, emulatedEmbeddingModel, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const EMBED = emulatedEmbeddingModel('embed-test', { pricing: { inputPerMillionTokens: 0.02, outputPerMillionTokens: 0 } });

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const USAGE_FIELDS = 'promptTokens completionTokens totalTokens costUsd';
const range = () => ({ from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() });

const chat = (target: TestStack, content: string, extra: Record<string, unknown> = {}) =>
  postGraphQL<{ chat: { usage: Usage } }>(
    target.url,
    `mutation($input: ChatInput!) { chat(input: $input) { usage { ${USAGE_FIELDS} } } }`,
    {
      input: { model: 'gpt-test', messages: [{ role: 'USER', content }], ...extra },
    },
  );

async function stream(target: TestStack, content: string): Promise<Usage> {
  const { results } = await collectSubscription<{ chatStream: { __typename: string; usage?: Usage } }>(target.ws(), {
    query: `subscription($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatCompleted { usage { ${USAGE_FIELDS} } } ... on ChatFailed { usage { ${USAGE_FIELDS} } } } }`,
    variables: { input: { model: 'gpt-test', messages: [{ role: 'USER', content }], tags: ['stream'] } },
  });
  return results.at(-1)!.data!.chatStream.usage!;
}

interface Report {
  usage: {
    totals: Usage & { calls: number; cachedCalls: number; failedCalls: number };
    rows: { model: string | null; totals: { calls: number } }[];
  };
}
const report = (target: TestStack, filter: Record<string, unknown> = {}, groupBy: string[] = [], headers?: Record<string, string>) =>
  postGraphQL<Report>(
    target.url,
    `query($filter: UsageFilter!, $groupBy: [UsageGroup!]!) { usage(filter: $filter, groupBy: $groupBy) { totals { calls cachedCalls failedCalls ${USAGE_FIELDS} } rows { model totals { calls } } } }`,
    { filter: { ...range(), ...filter }, groupBy },
    headers,
  );

const sum = (usages: Usage[]) =>
  usages.reduce((total, usage) => ({
    promptTokens: total.promptTokens + usage.promptTokens,
    completionTokens: total.completionTokens + usage.completionTokens,
    totalTokens: total.totalTokens + usage.totalTokens,
    costUsd: total.costUsd + usage.costUsd,
  }));

describe('usage', () => {
  it('adds up exactly what M mixed calls reported: whole, streamed, failed mid-stream, failed, cached, embeddings', async () => {
    stack = await startTestStack({
      redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` },
      models: [...TEST_MODELS, EMBED],
      embeddings: { batchWindowMs: 0 },
    });
    const target = stack;
    target.emulator.script(
      { kind: 'chat', content: 'whole answer', usage: { prompt: 31, completion: 7 } },
      { kind: 'chat', content: 'deterministic', usage: { prompt: 12, completion: 3 } },
      { kind: 'chat', content: 'streamed answer', usage: { prompt: 20, completion: 9 } },
      { kind: 'chat', content: 'cut off after two words of this', cutAfterChunks: 2 },
      { kind: 'error', status: 500 },
    );
    const usages: Usage[] = [];
    usages.push((await chat(target, 'first', { tags: ['whole', 'team-a'] })).body.data!.chat.usage);
    usages.push((await chat(target, 'cache me', { temperature: 0 })).body.data!.chat.usage);
    const cached = await chat(target, 'cache me', { temperature: 0 });
    expect(cached.body.data?.chat.usage.costUsd).toBe(0);
    // A cached answer reached no provider: it adds a call, and no tokens or cost.
    usages.push({ promptTokens: 0, completionTokens: 0, totalTokens: 0, costUsd: 0 });
    usages.push(await stream(target, 'stream it'));
    const cut = await stream(target, 'cut it');
    expect(cut.completionTokens).toBeGreaterThan(0);
    usages.push(cut);
    expect((await chat(target, 'fails')).body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_UNAVAILABLE');
    const embedded = await postGraphQL<{ embeddings: { usage: { promptTokens: number; totalTokens: number; costUsd: number } } }>(
      target.url,
      '{ embeddings(input: {model: "embed-test", inputs: ["alpha beta", "gamma"]}) { usage { promptTokens totalTokens costUsd } } }',
    );
    usages.push({ ...embedded.body.data!.embeddings.usage, completionTokens: 0 });
    const M = 7;
    const expected = sum(usages);
    await expect.poll(async () => (await report(target)).body.data?.usage.totals.calls, { timeout: 5_000 }).toBe(M);
    const { body } = await report(target, {}, ['MODEL']);
    const totals = body.data!.usage.totals;
    expect(totals).toMatchObject({
      calls: M,
      cachedCalls: 1,
      failedCalls: 2,
      promptTokens: expected.promptTokens,
      completionTokens: expected.completionTokens,
      totalTokens: expected.totalTokens,
    });
    expect(totals.costUsd).toBeCloseTo(expected.costUsd, 9);
    expect(Object.fromEntries(body.data!.usage.rows.map((row) => [row.model, row.totals.calls]))).toEqual({
      'gpt-test': 6,
      'embed-test': 1,
    });
    // Tags select the calls that carried them.
    const tagged = await report(target, { tags: ['team-a'] });
    expect(tagged.body.data?.usage.totals).toMatchObject({ calls: 1, promptTokens: 31, completionTokens: 7 });
  });

  it('shows a tenant its own usage only, through Query.usage and the entity fields', async () => {
    stack = await startTestStack();
    const target = stack;
    await postGraphQL(target.url, 'mutation { createTenant(input: {id: "acme", name: "Acme"}) { tenant { id } } }');
    const { body: created } = await postGraphQL<{ createApiKey: { secret: string } }>(
      target.url,
      'mutation { createApiKey(input: {tenantId: "acme", name: "reader", scopes: [USAGE_READ, CHAT_INVOKE, MODELS_READ]}) { secret } }',
    );
    const acme = { authorization: `Bearer ${created.data!.createApiKey.secret}` };
    await postGraphQL(
      target.url,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "platform call"}]}) { content } }',
    );
    await postGraphQL(
      target.url,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "acme call"}]}) { content } }',
      undefined,
      acme,
    );
    await expect.poll(async () => (await report(target)).body.data?.usage.totals.calls).toBe(2);
    expect((await report(target, {}, [], acme)).body.data?.usage.totals.calls).toBe(1);
    expect((await report(target, { tenant: 'platform' }, [], acme)).body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const { from, to } = range();
    const entity = await postGraphQL<{ me: { tenant: { id: string; usage: { calls: number } } } }>(
      target.url,
      'query($from: String!, $to: String!) { me { tenant { id usage(from: $from, to: $to) { calls } } } }',
      { from, to },
      acme,
    );
    expect(entity.body.data?.me.tenant).toEqual({ id: 'acme', usage: { calls: 1 } });
    // Per key and per model, through the entity fields; the tenant's own only.
    const perKey = await postGraphQL<{ me: { apiKey: { usage: { calls: number } } }; model: { usage: { calls: number } } }>(
      target.url,
      'query($from: String!, $to: String!) { me { apiKey { usage(from: $from, to: $to) { calls } } } model(id: "echo") { usage(from: $from, to: $to) { calls } } }',
      { from, to },
      { authorization: acme.authorization },
    );
    expect(perKey.body.data).toEqual({ me: { apiKey: { usage: { calls: 1 } } }, model: { usage: { calls: 1 } } });
    const all = await postGraphQL<{ model: { usage: { calls: number } } }>(
      target.url,
      'query($from: String!, $to: String!) { model(id: "echo") { usage(from: $from, to: $to) { calls } } }',
      { from, to },
    );
    expect(all.body.data?.model.usage.calls).toBe(2);
  });
});
