/**
 * No usage lost when Redis goes away: 20 clients chat while the stack's Redis is killed and
 * started again; every chat that was served is counted in Query.usage once Redis is back (the
 * events it could not take waited in the outbox), and every chat that was not served got a coded
 * refusal.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedisServer, type TestRedisServer } from './support/redis-server.ts';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let redis: TestRedisServer;
let stack: TestStack;
let outboxDir: string;

beforeAll(async () => {
  redis = await startRedisServer();
  outboxDir = mkdtempSync(join(tmpdir(), 'mg-outbox-test-'));
  stack = await startTestStack({
    redis: { url: redis.url, keyPrefix: `mg-test:${randomUUID()}:` },
    metering: { outbox: { dir: outboxDir, retryMs: 100 } },
  });
});
afterAll(async () => {
  await stack?.stop();
  await redis?.stop();
  rmSync(outboxDir, { recursive: true, force: true });
});

const CHAT = 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "count me"}]}) { content } }';

it('counts every chat served while Redis was down, once it is back, and refuses the rest with coded errors', async () => {
  const from = new Date(Date.now() - 60_000).toISOString();
  let running = true;
  let served = 0;
  let servedWhileDown = 0;
  let down = false;
  const refusals: (string | undefined)[] = [];
  const client = async () => {
    while (running) {
      const { body } = await postGraphQL<{ chat: { content: string } }>(stack.url, CHAT);
      if (body.data?.chat) {
        served += 1;
        if (down) servedWhileDown += 1;
      } else refusals.push(body.errors?.[0]?.extensions?.code as string | undefined);
    }
  };
  const clients = Array.from({ length: 20 }, client);
  await sleep(400);
  await redis.kill();
  down = true;
  await sleep(1_000);
  await redis.start();
  down = false;
  await sleep(800);
  running = false;
  await Promise.all(clients);

  expect(served).toBeGreaterThan(0);
  // The router's cached key kept chats going: their events could only go to the outbox.
  expect(servedWhileDown).toBeGreaterThan(0);
  // Refused only while a check could not be made, as a coded 503.
  expect(refusals.filter((code) => code !== 'SERVICE_UNAVAILABLE')).toEqual([]);
  const calls = async () => {
    const { body } = await postGraphQL<{ usage: { totals: { calls: number } } }>(
      stack.url,
      'query($filter: UsageFilter!) { usage(filter: $filter) { totals { calls } } }',
      { filter: { from, to: new Date(Date.now() + 60_000).toISOString() } },
    );
    return body.data?.usage.totals.calls;
  };
  await expect.poll(calls, { timeout: 20_000, interval: 200 }).toBe(served);
  // And stays there: nothing counted twice once the outbox has been delivered.
  await sleep(500);
  expect(await calls()).toBe(served);
  expect(stack.logs.some((line) => line.msg === 'the usage outbox is delivered')).toBe(true);
  expect(stack.logs.some((line) => line.msg === 'usage event lost')).toBe(false);
});

describe('a full outbox', () => {
  let small: TestStack;
  let smallRedis: TestRedisServer;
  let dir: string;
  beforeAll(async () => {
    smallRedis = await startRedisServer();
    dir = mkdtempSync(join(tmpdir(), 'mg-outbox-full-'));
    small = await startTestStack({
      redis: { url: smallRedis.url, keyPrefix: `mg-test:${randomUUID()}:` },
      metering: { outbox: { dir, maxEvents: 3, retryMs: 100 } },
    });
  });
  afterAll(async () => {
    await small?.stop();
    await smallRedis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses new model calls with a coded 503 and takes the process out of rotation until it is delivered', async () => {
    const inference = small.stack.subgraphs.find((subgraph) => subgraph.name === 'inference')!;
    const inferenceReady = async () => (await fetch(inference.url.replace('/graphql', '/readyz'))).status;
    // Served while Redis answers: the router has the key cached from then on.
    expect((await postGraphQL(small.url, CHAT)).body.data).toMatchObject({ chat: { content: 'count me' } });
    // …and its usage event is in Redis before Redis goes.
    const usage = 'query($filter: UsageFilter!) { usage(filter: $filter) { totals { calls } } }';
    const window = { from: new Date(Date.now() - 60_000).toISOString(), to: new Date(Date.now() + 60_000).toISOString() };
    await expect
      .poll(
        async () =>
          (await postGraphQL<{ usage: { totals: { calls: number } } }>(small.url, usage, { filter: window })).body.data?.usage.totals.calls,
      )
      .toBe(1);
    await smallRedis.kill();
    const served: boolean[] = [];
    for (let index = 0; index < 3; index++) served.push((await postGraphQL(small.url, CHAT)).body.data !== null);
    expect(served).toEqual([true, true, true]);
    // Once their events are in the outbox (each waits for Redis to fail it first).
    const held = async () =>
      Number(
        /modelgraph_usage_outbox_events\{[^}]*\} (\d+)/.exec(
          await (await fetch(inference.url.replace('/graphql', '/metrics'))).text(),
        )?.[1],
      );
    await expect.poll(held, { timeout: 10_000, interval: 50 }).toBe(3);
    const refused = await postGraphQL(small.url, CHAT);
    expect(refused.body.errors?.[0]?.extensions).toMatchObject({ code: 'SERVICE_UNAVAILABLE', retryAfterMs: 5_000 });
    expect(await inferenceReady()).toBe(503);
    await smallRedis.start();
    await expect.poll(inferenceReady, { timeout: 10_000, interval: 100 }).toBe(200);
    expect((await postGraphQL(small.url, CHAT)).body.data).toMatchObject({ chat: { content: 'count me' } });
  });
});
