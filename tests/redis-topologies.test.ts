/**
 * modelgraph on Redis as it runs in production: a three-master Redis Cluster and a Sentinel-managed
 * master with a replica, all on loopback, configured as an operator would (`redis.cluster`,
 * `redis.sentinel`). The stores' own contract suites run against the run's shared cluster too
 * (the `Redis Cluster` cases in platform/, router/ and subgraphs/); here the whole stack does:
 * keys, limits, budgets and usage, and then a master is killed under load — a replica takes over,
 * every refusal meanwhile is coded, and every chat that was served is counted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { countChatTokens } from '../providers/tokens.ts';
import { PLATFORM_TENANT } from '../platform/identity/principal.ts';
import { meterKeys, usageKeys } from '../platform/redis/keys.ts';
import { startRedisCluster, startRedisSentinel, until } from './support/redis-cluster.ts';
import { sharedClusterNodes } from './support/shared-redis-cluster.ts';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function stackOn(redis: Record<string, unknown>, keyPrefix = `mg-test:${randomUUID()}:`): Promise<TestStack> {
  const outboxDir = mkdtempSync(join(tmpdir(), 'mg-topology-outbox-'));
  cleanups.push(async () => rmSync(outboxDir, { recursive: true, force: true }));
  const stack = await startTestStack({
    redis: { ...redis, keyPrefix },
    // A token limit on the admin key's tenant, so every chat reserves in Redis (and is refused, closed, while it cannot).
    metering: { outbox: { dir: outboxDir, retryMs: 100 }, tenants: { [PLATFORM_TENANT]: { tokensPerMinute: 1_000_000_000 } } },
    cache: { enabled: false },
  });
  cleanups.push(() => stack.stop());
  return stack;
}

const CHAT = 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "count me"}]}) { content } }';

async function usageCalls(stack: TestStack, from: string): Promise<number | undefined> {
  const { body } = await postGraphQL<{ usage: { totals: { calls: number } } }>(
    stack.url,
    'query($filter: UsageFilter!) { usage(filter: $filter) { totals { calls } } }',
    { filter: { from, to: new Date(Date.now() + 60_000).toISOString() } },
  );
  return body.data?.usage.totals.calls;
}

interface Refusal {
  code: unknown;
  retryAfterMs: unknown;
}

/** 10 clients chat while `fault` runs and for a moment after; what was served and what was refused. */
async function chatThrough(stack: TestStack, fault: () => Promise<void>) {
  let running = true;
  let served = 0;
  const refusals: Refusal[] = [];
  const client = async () => {
    while (running) {
      const { body } = await postGraphQL<{ chat: { content: string } }>(stack.url, CHAT);
      if (body.data?.chat) served += 1;
      else refusals.push({ code: body.errors?.[0]?.extensions?.code, retryAfterMs: body.errors?.[0]?.extensions?.retryAfterMs });
    }
  };
  const clients = Array.from({ length: 10 }, client);
  try {
    await until(async () => (served >= 20 ? true : undefined), 'chats served before the fault');
    await fault();
    const after = served;
    await until(async () => (served >= after + 50 ? true : undefined), 'chats served after the fault');
  } finally {
    running = false;
    await Promise.all(clients);
  }
  return { served, refusals };
}

/** A refusal while Redis could not be asked: coded, and retryable in a second. */
const UNAVAILABLE: Refusal = { code: 'SERVICE_UNAVAILABLE', retryAfterMs: 1_000 };

describe('modelgraph on a Redis Cluster', () => {
  it('keeps keys, request limits, budgets and usage on the cluster without a CROSSSLOT error', async () => {
    const stack = await stackOn({ cluster: { nodes: sharedClusterNodes() } });
    const from = new Date(Date.now() - 60_000).toISOString();
    await postGraphQL(stack.url, 'mutation { createTenant(input: {id: "acme", name: "Acme"}) { tenant { id } } }');
    const K = 3;
    const prompt = 'how much will this cost';
    const promptTokens = countChatTokens([{ role: 'user', content: prompt }]);
    // gpt-test: 2.5 USD per million input tokens, 10 per million output; a budget of exactly K worst-case calls.
    const worstUsd = (promptTokens * 2.5 + 100 * 10) / 1_000_000;
    const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      `mutation { createApiKey(input: {tenantId: "acme", name: "clustered", scopes: [CHAT_INVOKE], limits: {usdPerDay: ${K * worstUsd}, requestsPerMinute: 20}}) { secret } }`,
    );
    const auth = { authorization: `Bearer ${body.data!.createApiKey.secret}` };
    stack.emulator.script(
      ...Array.from({ length: K }, () => ({ kind: 'chat' as const, content: 'priced', usage: { prompt: promptTokens, completion: 100 } })),
    );
    const chat = `mutation { chat(input: {model: "gpt-test", maxTokens: 100, messages: [{role: USER, content: "${prompt}"}]}) { content } }`;
    const answers = await Promise.all(Array.from({ length: 20 }, () => postGraphQL(stack.url, chat, undefined, auth)));
    expect(answers.filter((answer) => answer.body.data?.chat)).toHaveLength(K);
    expect(answers.map((answer) => answer.body.errors?.[0]?.extensions?.code).filter(Boolean)).toEqual(
      Array(20 - K).fill('BUDGET_EXCEEDED'),
    );
    // The key's 20 requests a minute are spent (one comes back every 3 s).
    expect((await postGraphQL(stack.url, chat, undefined, auth)).body.errors?.[0]?.extensions).toMatchObject({ code: 'RATE_LIMITED' });
    await expect.poll(() => usageCalls(stack, from), { timeout: 10_000, interval: 100 }).toBe(K);
    expect(stack.logs.filter((line) => /CROSSSLOT|same slot/i.test(JSON.stringify(line)))).toEqual([]);
  });

  it('loses no usage when the master holding the usage stream dies under load and its replica takes over', {
    timeout: 90_000,
  }, async () => {
    const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    cleanups.push(() => cluster.stop());
    // A prefix whose usage stream and meter live on different masters: chats go on being served
    // (and metered) while the stream's slot has no master, so their events must wait in the outbox.
    let keyPrefix: string;
    let streamMaster: Awaited<ReturnType<typeof cluster.masterOf>>;
    do {
      keyPrefix = `mg-test:${randomUUID()}:`;
      streamMaster = await cluster.masterOf(usageKeys(keyPrefix).stream());
    } while (streamMaster === (await cluster.masterOf(meterKeys(keyPrefix).tokensPerMinute('tenant', PLATFORM_TENANT, '0'))));
    const stack = await stackOn({ cluster: { nodes: cluster.masters.map(({ url }) => url) } }, keyPrefix);
    const from = new Date(Date.now() - 60_000).toISOString();
    const { served, refusals } = await chatThrough(stack, async () => {
      await streamMaster.kill();
      await cluster.healthy();
    });
    // The meter's master answered throughout: nothing needed refusing.
    expect(refusals).toEqual([]);
    await expect.poll(() => usageCalls(stack, from), { timeout: 20_000, interval: 200 }).toBe(served);
    await sleep(300);
    expect(await usageCalls(stack, from)).toBe(served);
    // The events the stream could not take while its slot had no master waited in the outbox.
    expect(stack.logs.some((line) => line.msg === 'the usage outbox is delivered')).toBe(true);
    expect(stack.logs.some((line) => line.msg === 'usage event lost')).toBe(false);
  });
});

describe('modelgraph on a Sentinel-managed Redis', () => {
  it('follows the master through a failover under load, losing no usage and refusing only with coded errors', {
    timeout: 90_000,
  }, async () => {
    const sentinel = await startRedisSentinel();
    cleanups.push(() => sentinel.stop());
    const stack = await stackOn({ sentinel: { masterName: sentinel.masterName, sentinels: [sentinel.sentinel.url] } });
    const from = new Date(Date.now() - 60_000).toISOString();
    const { served, refusals } = await chatThrough(stack, async () => {
      await sentinel.master.kill();
      await until(async () => ((await sentinel.currentMasterPort()) === sentinel.replica.port ? true : undefined), 'the replica promoted');
    });
    // While no master answered, chats that could not reserve their tokens were refused, coded.
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.filter((refusal) => JSON.stringify(refusal) !== JSON.stringify(UNAVAILABLE))).toEqual([]);
    await expect.poll(() => usageCalls(stack, from), { timeout: 20_000, interval: 200 }).toBe(served);
    await sleep(300);
    expect(await usageCalls(stack, from)).toBe(served);
  });
});
