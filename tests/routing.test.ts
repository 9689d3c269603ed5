/**
 * Routing through the whole stack, against the provider emulator: fallbacks that name who served,
 * circuit breakers visible in Model.health, canary weights, version pins and retired versions.
 */
import { print } from 'graphql';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ChatDocument, ChatStreamDocument, type ChatMutation, type ChatStreamSubscription } from '../codegen/operations.ts';
import { collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack | undefined;
afterEach(async () => {
  vi.useRealTimers();
  await stack?.stop();
  stack = undefined;
});

const chat = (model: string) =>
  postGraphQL<ChatMutation>(stack!.url, print(ChatDocument), { input: { model, messages: [{ role: 'USER', content: 'route me' }] } });
const stream = (model: string, content: string) =>
  collectSubscription<ChatStreamSubscription>(stack!.ws(), {
    query: print(ChatStreamDocument),
    variables: { input: { model, messages: [{ role: 'USER', content }] } },
  });
const upstreamModels = () => stack!.emulator.requests.map((request) => request.body.model);
const health = async (ref: string) =>
  (
    await postGraphQL<{ model: { health: { circuit: string } } }>(
      stack!.url,
      'query($id: String!) { model(id: $id) { health { circuit } } }',
      { id: ref },
    )
  ).body.data?.model.health.circuit;

/** A version of a chat model on the local provider (4096-token context, 32 out); `extra` adds status fields. */
const localVersion = (id: string, version: string, extra: Record<string, unknown> = {}) => ({
  id,
  provider: 'local',
  version,
  capabilities: ['CHAT'],
  contextWindow: 4096,
  maxOutputTokens: 32,
  ...extra,
});

const resilient = {
  routes: { resilient: { targets: [{ model: 'gpt-test@2024-08-06' }], fallbacks: ['backup@1'] } },
  routing: { attemptsPerTarget: 2, initialDelayMs: 1, maxDelayMs: 2, breaker: { failures: 2, halfOpenAfterMs: 60_000 } },
};

describe('routing through the stack', () => {
  it('falls back when the primary answers 429, and the response names the fallback and the attempts', async () => {
    stack = await startTestStack(resilient);
    stack.emulator.script({ kind: 'error', status: 429 }, { kind: 'error', status: 429 });
    const { body } = await chat('resilient');
    expect(body.errors).toBeUndefined();
    expect(body.data?.chat.content).toBe('route me');
    expect(body.data?.chat.servedBy).toEqual({ provider: 'backup', version: '1', attempts: 3, model: { id: 'backup' } });
    expect(upstreamModels()).toEqual(['gpt-test-upstream', 'gpt-test-upstream', 'backup-upstream']);
    const metrics = await (await fetch(`http://127.0.0.1:${stack.stack.subgraphs[0]!.port}/metrics`)).text();
    expect(metrics).toMatch(/modelgraph_provider_fallbacks_total\{from="gpt-test@2024-08-06",to="backup@1",component="inference"\} 1/);
    expect(metrics).toMatch(/modelgraph_provider_extra_attempts_total\{model="gpt-test",component="inference"\} 2/);
  });

  it('falls back before the first token of a stream', async () => {
    stack = await startTestStack(resilient);
    stack.emulator.script({ kind: 'error', status: 503 }, { kind: 'error', status: 503 });
    const { results } = await stream('resilient', 'stream me');
    const last = results.at(-1)?.data?.chatStream;
    expect(last).toMatchObject({ __typename: 'ChatCompleted', servedBy: { provider: 'backup', attempts: 3 } });
  });

  it.each([
    ['an error event', { errorAfterChunks: 0 }],
    ['a cut connection', { cutAfterChunks: 0 }],
  ])('falls back when the primary stream fails with %s before its first token', async (_name, failure) => {
    stack = await startTestStack({ ...resilient, routing: { ...resilient.routing, attemptsPerTarget: 1 } });
    stack.emulator.script({ kind: 'chat', content: 'never delivered', ...failure });
    const { results } = await stream('resilient', 'stream me');
    expect(results.at(-1)?.data?.chatStream).toMatchObject({ __typename: 'ChatCompleted', servedBy: { provider: 'backup', attempts: 2 } });
    expect(upstreamModels()).toEqual(['gpt-test-upstream', 'backup-upstream']);
  });

  it('never serves a pinned version from a cache entry a fallback produced', async () => {
    stack = await startTestStack({ ...resilient, routing: { ...resilient.routing, breaker: { failures: 10, halfOpenAfterMs: 60_000 } } });
    stack.emulator.script({ kind: 'error', status: 503 }, { kind: 'error', status: 503 }, { kind: 'chat', content: 'from backup' });
    const routed = await postGraphQL<ChatMutation>(stack.url, print(ChatDocument), {
      input: { model: 'resilient', temperature: 0, messages: [{ role: 'USER', content: 'same' }] },
    });
    expect(routed.body.data?.chat.servedBy.provider).toBe('backup');
    for (const model of ['resilient', 'gpt-test@2024-08-06', 'gpt-test']) {
      const { body } = await postGraphQL<ChatMutation>(stack.url, print(ChatDocument), {
        input: { model, temperature: 0, messages: [{ role: 'USER', content: 'same' }] },
      });
      expect(body.data?.chat.cached).toBe(false);
    }
  });

  it('opens the circuit after N failures, stops calling the target, shows it in Model.health, and probes after the pause', async () => {
    stack = await startTestStack({ ...resilient, routing: { ...resilient.routing, attemptsPerTarget: 1 } });
    vi.useFakeTimers({ toFake: ['Date'] });
    // One emulator serves both providers, in request order: primary fails, backup answers, twice.
    const backupAnswers = { kind: 'chat' as const, content: 'route me' };
    stack.emulator.script({ kind: 'error', status: 500 }, backupAnswers, { kind: 'error', status: 500 }, backupAnswers);
    await chat('resilient');
    await chat('resilient');
    expect(await health('gpt-test@2024-08-06')).toBe('OPEN');
    const before = upstreamModels().filter((model) => model === 'gpt-test-upstream').length;
    const { body } = await chat('resilient');
    expect(body.data?.chat.servedBy.provider).toBe('backup');
    expect(upstreamModels().filter((model) => model === 'gpt-test-upstream').length).toBe(before);
    const metrics = await (await fetch(`http://127.0.0.1:${stack.stack.subgraphs[0]!.port}/metrics`)).text();
    expect(metrics).toMatch(/modelgraph_provider_circuit_state\{target="gpt-test@2024-08-06",component="inference"\} 2/);
    vi.setSystemTime(Date.now() + 60_001);
    const probe = await chat('resilient');
    expect(probe.body.data?.chat.servedBy.provider).toBe('emulated');
    expect(await health('gpt-test@2024-08-06')).toBe('CLOSED');
  });

  it('does not fall back on a request the provider refused as bad', async () => {
    stack = await startTestStack(resilient);
    stack.emulator.script({ kind: 'error', status: 400 });
    const { body } = await chat('resilient');
    expect(body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_BAD_REQUEST');
    expect(upstreamModels()).toEqual(['gpt-test-upstream']);
  });

  it('splits traffic 90/10 by canary weight within a few percent over 1,000 calls', async () => {
    stack = await startTestStack({
      routes: {
        canary: {
          targets: [
            { model: 'gpt-test@2024-08-06', weight: 90 },
            { model: 'backup@1', weight: 10 },
          ],
        },
      },
    });
    for (let batch = 0; batch < 10; batch++) await Promise.all(Array.from({ length: 100 }, () => chat('canary')));
    const canary = upstreamModels().filter((model) => model === 'backup-upstream').length;
    expect(upstreamModels()).toHaveLength(1_000);
    // 10 % of 1,000 = 100; the binomial sd is 9.5, so ±50 is a 5-sigma band: a test that fails
    // about once in three million runs by chance, and still fails for any wrong weighting.
    expect(canary).toBeGreaterThanOrEqual(50);
    expect(canary).toBeLessThanOrEqual(150);
  });

  it('refuses a deprecated version once its sunset date has come, and warns when a deprecated fallback answers', async () => {
    stack = await startTestStack({
      models: [
        localVersion('echo', '1', { status: 'DEPRECATED', sunset: '2000-01-01', replacement: 'echo@2' }),
        localVersion('echo', '2', { default: true }),
        localVersion('old', '1', { upstream: 'echo', status: 'DEPRECATED', sunset: '2999-01-01' }),
        { id: 'gpt-test', provider: 'emulated', version: '1', capabilities: ['CHAT'], contextWindow: 4096, maxOutputTokens: 32 },
      ],
      routes: { guarded: { targets: [{ model: 'gpt-test@1' }], fallbacks: ['old@1'] } },
      routing: { attemptsPerTarget: 1 },
    });
    expect((await chat('echo@1')).body.errors?.[0]?.extensions).toMatchObject({ code: 'MODEL_RETIRED', replacement: 'echo@2' });
    const status = await postGraphQL<{ model: { status: string } }>(stack.url, '{ model(id: "echo@1") { status } }');
    expect(status.body.data?.model.status).toBe('RETIRED');
    stack.emulator.script({ kind: 'error', status: 503 });
    const { body } = await chat('guarded');
    expect(body.data?.chat.servedBy.model.id).toBe('old');
    expect(body.extensions?.warnings).toEqual([expect.objectContaining({ code: 'MODEL_DEPRECATED', model: 'old@1' })]);
  });

  it('serves a bare id by its default version and a pin by exactly that version, warns about a deprecated one, and refuses a retired one by name', async () => {
    stack = await startTestStack({
      models: [
        localVersion('echo', '1', { status: 'RETIRED', replacement: 'echo@2' }),
        localVersion('echo', '2', { default: true }),
        localVersion('echo', '3', { status: 'DEPRECATED', sunset: '2027-01-31', replacement: 'echo@2' }),
      ],
    });
    expect((await chat('echo')).body.data?.chat.servedBy.version).toBe('2');
    expect((await chat('echo@3')).body.data?.chat.servedBy.version).toBe('3');
    const retired = await chat('echo@1');
    expect(retired.body.errors?.[0]?.extensions).toMatchObject({ code: 'MODEL_RETIRED', replacement: 'echo@2' });
    const deprecated = await chat('echo@3');
    expect(deprecated.body.data?.chat.content).toBe('route me');
    expect((deprecated.body as { extensions?: { warnings?: unknown[] } }).extensions?.warnings).toEqual([
      expect.objectContaining({ code: 'MODEL_DEPRECATED', model: 'echo@3', sunset: '2027-01-31', replacement: 'echo@2' }),
    ]);
    expect(((await chat('echo')).body as { extensions?: { warnings?: unknown[] } }).extensions?.warnings).toBeUndefined();
    const streamed = await stream('echo@3', 'hi');
    const streamedWarnings = streamed.results.flatMap(
      (result) => (result as { extensions?: { warnings?: unknown[] } }).extensions?.warnings ?? [],
    );
    expect(streamedWarnings).toEqual([expect.objectContaining({ code: 'MODEL_DEPRECATED', model: 'echo@3' })]);
    const listed = await postGraphQL<{ models: { id: string; version: string }[] }>(stack.url, '{ models { id version } }');
    expect(listed.body.data?.models).toEqual([{ id: 'echo', version: '2' }]);
    const { body } = await postGraphQL<{ model: { versions: { version: string; status: string; sunset: string | null }[] } }>(
      stack.url,
      '{ model(id: "echo") { versions { version status sunset } } }',
    );
    expect(body.data?.model.versions).toEqual([
      { version: '1', status: 'RETIRED', sunset: null },
      { version: '2', status: 'ACTIVE', sunset: null },
      { version: '3', status: 'DEPRECATED', sunset: '2027-01-31' },
    ]);
  });
});
