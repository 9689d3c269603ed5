/** Every answer carries what it cost at the serving version's configured prices. */
import { afterEach, describe, expect, it } from 'vitest';
import type { TokenUsage as Usage } from '../codegen/inference.resolvers.ts';
import { collectSubscription, emulatedEmbeddingModel, postGraphQL, startTestStack, TEST_MODELS, type TestStack } from './support/stack.ts';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

// gpt-test costs 2.5 USD per million input tokens and 10 per million output tokens.
const costOf = (usage: Usage) => (usage.promptTokens * 2.5 + usage.completionTokens * 10) / 1_000_000;
const CHAT = 'mutation($input: ChatInput!) { chat(input: $input) { cached usage { promptTokens completionTokens totalTokens costUsd } } }';
const input = { model: 'gpt-test', temperature: 0, messages: [{ role: 'USER', content: 'price this answer please' }] };

describe('usage cost', () => {
  it('prices a whole chat at the serving version’s prices, and a cached answer at nothing', async () => {
    stack = await startTestStack();
    stack.emulator.script({ kind: 'chat', content: 'an answer of several words', usage: { prompt: 1200, completion: 300 } });
    const fresh = await postGraphQL<{ chat: { cached: boolean; usage: Usage } }>(stack.url, CHAT, { input });
    expect(fresh.body.data?.chat.usage).toMatchObject({ promptTokens: 1200, completionTokens: 300 });
    expect(fresh.body.data?.chat.usage.costUsd).toBeCloseTo(costOf(fresh.body.data!.chat.usage), 12);
    expect(fresh.body.data?.chat.usage.costUsd).toBeCloseTo(0.006, 12);
    const cached = await postGraphQL<{ chat: { cached: boolean; usage: Usage } }>(stack.url, CHAT, { input });
    expect(cached.body.data?.chat).toMatchObject({ cached: true, usage: { costUsd: 0 } });
  });

  it('prices a streamed chat in its ChatCompleted event', async () => {
    stack = await startTestStack();
    stack.emulator.script({ kind: 'chat', content: 'streamed and priced', usage: { prompt: 40, completion: 7 } });
    const { results } = await collectSubscription<{ chatStream: { __typename: string; usage?: Usage } }>(stack.ws(), {
      query:
        'subscription($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatCompleted { usage { promptTokens completionTokens totalTokens costUsd } } } }',
      variables: { input: { ...input, temperature: 0.5 } },
    });
    const completed = results.at(-1)?.data?.chatStream;
    expect(completed?.__typename).toBe('ChatCompleted');
    expect(completed?.usage?.costUsd).toBeCloseTo((40 * 2.5 + 7 * 10) / 1_000_000, 12);
  });

  it('prices embeddings by their input tokens, and cached inputs at nothing', async () => {
    const priced = emulatedEmbeddingModel('embed-priced', { pricing: { inputPerMillionTokens: 0.02, outputPerMillionTokens: 0 } });
    stack = await startTestStack({ models: [...TEST_MODELS, priced], embeddings: { batchWindowMs: 0 } });
    const query =
      '{ embeddings(input: {model: "embed-priced", inputs: ["one two three"]}) { usage { promptTokens costUsd cachedInputs } } }';
    const fresh = await postGraphQL<{ embeddings: { usage: { promptTokens: number; costUsd: number } } }>(stack.url, query);
    const { promptTokens, costUsd } = fresh.body.data!.embeddings.usage;
    expect(promptTokens).toBeGreaterThan(0);
    expect(costUsd).toBeCloseTo((promptTokens * 0.02) / 1_000_000, 12);
    const cached = await postGraphQL<{ embeddings: { usage: { costUsd: number; cachedInputs: number } } }>(stack.url, query);
    expect(cached.body.data?.embeddings.usage).toMatchObject({ costUsd: 0, cachedInputs: 1 });
  });
});
