import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { codeOf } from '../../platform/errors.ts';
import { usageKeys } from '../../platform/redis/keys.ts';
import type { UsageEvent, UsageSink } from '../../platform/metering/usage-event.ts';
import { RedisUsageSink } from '../../platform/metering/usage-stream.ts';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';
import { MemoryUsageStore } from './memory-usage-store.ts';
import { RedisUsageStore } from './redis-usage-store.ts';
import type { UsageFilter, UsageGroup, UsageReport, UsageRow, UsageStore, UsageTotals } from './usage-store.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
// The run's Redis Cluster goes with the run: nothing to clean up there.
const cluster = await connectSharedCluster();
const prefixes: string[] = [];
afterAll(async () => {
  cluster.disconnect();
  for (const prefix of prefixes) {
    const keys = await scanKeys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  redis.disconnect();
});

async function scanKeys(match: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const batch of redis.scanStream({ match, count: 1_000 })) keys.push(...(batch as string[]));
  return keys;
}

function redisPrefix(): string {
  const prefix = `mg-test:${randomUUID()}:`;
  prefixes.push(prefix);
  return prefix;
}

const implementations: [string, () => UsageStore][] = [
  ['Redis', () => new RedisUsageStore(redis, redisPrefix())],
  ['Redis Cluster', () => new RedisUsageStore(cluster, `mg-test:${randomUUID()}:`)],
  ['memory', () => new MemoryUsageStore()],
];

function usageEvent(overrides: Partial<UsageEvent> = {}): UsageEvent {
  return {
    id: randomUUID(),
    time: '2024-05-01T10:15:00.000Z',
    tenant: 'acme',
    key: 'key-1',
    model: 'gpt-4o',
    version: '2024-08-06',
    provider: 'openai',
    kind: 'chat',
    promptTokens: 10,
    completionTokens: 5,
    totalTokens: 15,
    costUsd: 0.000125,
    latencyMs: 320,
    timeToFirstTokenMs: null,
    outcome: 'ok',
    tags: [],
    ...overrides,
  };
}

/** Covers every event below: 2024-05-01 and 2024-05-02, UTC. */
const TWO_DAYS = { from: new Date('2024-05-01T00:00:00.000Z'), to: new Date('2024-05-02T23:59:59.999Z') };

async function emitAll(store: UsageSink, events: UsageEvent[]): Promise<void> {
  for (const event of events) await store.emit(event);
}

/** Cost in the store's unit, nano-dollars. */
const micros = (usd: number) => Math.round(usd * 1e9);

/** Totals of events, computed independently of the store; cost in nano-dollars so comparisons are exact. */
function expectedTotals(events: UsageEvent[]) {
  const sum = (of: (event: UsageEvent) => number) => events.reduce((total, event) => total + of(event), 0);
  return {
    calls: events.length,
    promptTokens: sum((event) => event.promptTokens),
    completionTokens: sum((event) => event.completionTokens),
    totalTokens: sum((event) => event.totalTokens),
    costMicro: sum((event) => micros(event.costUsd)),
    cachedCalls: sum((event) => Number(event.outcome === 'cached')),
    failedCalls: sum((event) => Number(event.outcome !== 'ok' && event.outcome !== 'cached')),
  };
}

/** A report's totals or row with costUsd in whole nano-dollars (it must be exact to 1e-9). */
function inMicros<T extends UsageTotals>({ costUsd, ...rest }: T) {
  expect(Math.abs(costUsd * 1e9 - micros(costUsd))).toBeLessThan(1e-3);
  return { ...rest, costMicro: micros(costUsd) };
}

type Dimensions = Partial<Pick<UsageRow, 'tenant' | 'key' | 'model' | 'provider' | 'day' | 'hour'>>;
const NO_DIMENSIONS = { tenant: null, key: null, model: null, provider: null, day: null, hour: null };
const expectedRow = (dims: Dimensions, events: UsageEvent[]) => ({ ...NO_DIMENSIONS, ...dims, ...expectedTotals(events) });

async function report(store: UsageStore, filter: Partial<UsageFilter> = {}, groupBy: UsageGroup[] = []): Promise<UsageReport> {
  return store.report({ ...TWO_DAYS, ...filter }, groupBy);
}

async function rejectionCode(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return codeOf(error);
  }
  throw new Error('expected a rejection');
}

/** Four calls over two tenants, three models, two days, with tags and every kind of outcome. */
const dataset = [
  usageEvent({
    tenant: 'acme',
    key: 'k1',
    model: 'gpt-4o',
    provider: 'openai',
    time: '2024-05-01T10:15:00.000Z',
    costUsd: 0.5,
    promptTokens: 100,
    completionTokens: 20,
    totalTokens: 120,
    tags: ['prod'],
  }),
  usageEvent({
    tenant: 'acme',
    key: 'k2',
    model: 'claude',
    provider: 'anthropic',
    time: '2024-05-01T11:00:00.000Z',
    costUsd: 0.25,
    promptTokens: 7,
    completionTokens: 3,
    totalTokens: 10,
    tags: ['prod', 'team-a'],
    outcome: 'cached',
  }),
  usageEvent({
    tenant: 'globex',
    key: 'k3',
    model: 'gpt-4o',
    provider: 'azure',
    time: '2024-05-02T09:30:00.000Z',
    costUsd: 0.125,
    promptTokens: 40,
    completionTokens: 0,
    totalTokens: 40,
    tags: ['team-a'],
    outcome: 'UPSTREAM_TIMEOUT',
  }),
  usageEvent({
    tenant: 'acme',
    key: 'k1',
    model: 'gpt-4o',
    provider: 'openai',
    time: '2024-05-01T10:45:00.000Z',
    costUsd: 0.000001,
    promptTokens: 1,
    completionTokens: 1,
    totalTokens: 2,
    tags: ['prod'],
  }),
];
const pick = (indexes: number[]) => indexes.map((i) => dataset[i]!);

async function drainedDataset(create: () => UsageStore): Promise<UsageStore> {
  const store = create();
  await emitAll(store, dataset);
  expect(await store.drain()).toBe(dataset.length);
  return store;
}

describe.each(implementations)('%s usage store', (_name, create) => {
  it('reports nothing until drained, then every event', async () => {
    const store = create();
    await emitAll(store, dataset);
    expect(await report(store)).toEqual({ totals: inMicrosToTotals(expectedTotals([])), rows: [] });
    expect(await store.drain()).toBe(dataset.length);
    const after = await report(store);
    expect(inMicros(after.totals)).toEqual(expectedTotals(dataset));
    expect(await store.drain()).toBe(0);
  });

  it('sums every field exactly: tokens as integers, cost to the micro-dollar', async () => {
    const store = create();
    const events = Array.from({ length: 50 }, (_, i) =>
      usageEvent({
        promptTokens: 1_000 + i,
        completionTokens: 3 * i,
        totalTokens: 1_000 + 4 * i,
        costUsd: 0.000001 * (i + 1) + 0.1,
        outcome: ['ok', 'cached', 'RATE_LIMITED'][i % 3]!,
        time: `2024-05-01T${String(i % 24).padStart(2, '0')}:30:00.000Z`,
      }),
    );
    await emitAll(store, events);
    await store.drain();
    const { totals, rows } = await report(store);
    expect(inMicros(totals)).toEqual(expectedTotals(events));
    expect(rows.map(inMicros)).toEqual([expectedRow({}, events)]);
    expect(totals.costUsd).toBeCloseTo(
      events.reduce((sum, event) => sum + event.costUsd, 0),
      6,
    );
  });

  it.each<[string, UsageGroup[], [Dimensions, number[]][]]>([
    [
      'TENANT',
      ['TENANT'],
      [
        [{ tenant: 'acme' }, [0, 1, 3]],
        [{ tenant: 'globex' }, [2]],
      ],
    ],
    [
      'KEY',
      ['KEY'],
      [
        [{ key: 'k1' }, [0, 3]],
        [{ key: 'k2' }, [1]],
        [{ key: 'k3' }, [2]],
      ],
    ],
    [
      'MODEL',
      ['MODEL'],
      [
        [{ model: 'gpt-4o' }, [0, 2, 3]],
        [{ model: 'claude' }, [1]],
      ],
    ],
    [
      'PROVIDER',
      ['PROVIDER'],
      [
        [{ provider: 'openai' }, [0, 3]],
        [{ provider: 'anthropic' }, [1]],
        [{ provider: 'azure' }, [2]],
      ],
    ],
    [
      'DAY',
      ['DAY'],
      [
        [{ day: '2024-05-01' }, [0, 1, 3]],
        [{ day: '2024-05-02' }, [2]],
      ],
    ],
    [
      'HOUR',
      ['HOUR'],
      [
        [{ hour: '2024-05-01T10:00:00.000Z' }, [0, 3]],
        [{ hour: '2024-05-01T11:00:00.000Z' }, [1]],
        [{ hour: '2024-05-02T09:00:00.000Z' }, [2]],
      ],
    ],
    [
      'TENANT and MODEL',
      ['TENANT', 'MODEL'],
      [
        [{ tenant: 'acme', model: 'gpt-4o' }, [0, 3]],
        [{ tenant: 'acme', model: 'claude' }, [1]],
        [{ tenant: 'globex', model: 'gpt-4o' }, [2]],
      ],
    ],
    [
      'DAY, PROVIDER and KEY',
      ['DAY', 'PROVIDER', 'KEY'],
      [
        [{ day: '2024-05-01', provider: 'openai', key: 'k1' }, [0, 3]],
        [{ day: '2024-05-01', provider: 'anthropic', key: 'k2' }, [1]],
        [{ day: '2024-05-02', provider: 'azure', key: 'k3' }, [2]],
      ],
    ],
    ['nothing', [], [[{}, [0, 1, 2, 3]]]],
  ])('groups by %s', async (_label, groupBy, expected) => {
    const store = await drainedDataset(create);
    const { totals, rows } = await report(store, {}, groupBy);
    expect(inMicros(totals)).toEqual(expectedTotals(dataset));
    expect(rows.map(inMicros)).toEqual(expected.map(([dims, indexes]) => expectedRow(dims, pick(indexes))));
  });

  it('sorts rows by cost, highest first, then by dimension values', async () => {
    const store = create();
    const cheap = (tenant: string, model: string) => usageEvent({ tenant, model, costUsd: 0.001 });
    const events = [
      cheap('b', 'm2'),
      cheap('a', 'm2'),
      usageEvent({ tenant: 'c', costUsd: 0.002 }),
      cheap('b', 'm1'),
      usageEvent({ tenant: 'z', costUsd: 0 }),
    ];
    await emitAll(store, events);
    await store.drain();
    const { rows } = await report(store, {}, ['TENANT', 'MODEL']);
    expect(rows.map((row) => [row.tenant, row.model])).toEqual([
      ['c', 'gpt-4o'],
      ['a', 'm2'],
      ['b', 'm1'],
      ['b', 'm2'],
      ['z', 'gpt-4o'],
    ]);
  });

  it.each<[string, Partial<UsageFilter>, number[]]>([
    ['tenant', { tenant: 'acme' }, [0, 1, 3]],
    ['key', { key: 'k1' }, [0, 3]],
    ['model', { model: 'claude' }, [1]],
    ['provider', { provider: 'azure' }, [2]],
    ['one tag', { tags: ['team-a'] }, [1, 2]],
    ['every tag given', { tags: ['team-a', 'prod'] }, [1]],
    ['no tags (no constraint)', { tags: [] }, [0, 1, 2, 3]],
    ['several fields at once', { tenant: 'acme', model: 'gpt-4o', tags: ['prod'] }, [0, 3]],
    ['a value nothing has', { tenant: 'initech' }, []],
    ['a tag nothing has', { tags: ['prod', 'staging'] }, []],
    [
      'time range (hours overlapping it)',
      { from: new Date('2024-05-01T10:59:00.000Z'), to: new Date('2024-05-01T11:00:00.000Z') },
      [0, 1, 3],
    ],
    ['time range (one hour)', { from: new Date('2024-05-02T09:00:00.000Z'), to: new Date('2024-05-02T09:00:00.000Z') }, [2]],
    ['time range (nothing in it)', { from: new Date('2024-05-01T12:00:00.000Z'), to: new Date('2024-05-02T08:59:59.999Z') }, []],
  ])('filters by %s', async (_label, filter, expected) => {
    const store = await drainedDataset(create);
    const { totals, rows } = await report(store, filter, ['KEY']);
    const matched = pick(expected);
    expect(inMicros(totals)).toEqual(expectedTotals(matched));
    expect(rows.map((row) => row.key).sort()).toEqual([...new Set(matched.map((event) => event.key))].sort());
  });

  it('answers an empty report for an empty store, a range after the events and from after to', async () => {
    const empty = { totals: inMicrosToTotals(expectedTotals([])), rows: [] };
    expect(await report(create(), {}, ['TENANT'])).toEqual(empty);
    const store = await drainedDataset(create);
    expect(await report(store, { from: new Date('2025-01-01T00:00:00.000Z'), to: new Date('2025-01-02T00:00:00.000Z') })).toEqual(empty);
    expect(await report(store, { from: TWO_DAYS.to, to: TWO_DAYS.from })).toEqual(empty);
  });

  it('counts an event emitted twice once, in one drain or across drains', async () => {
    const store = create();
    const [first, second] = [usageEvent({ promptTokens: 3 }), usageEvent({ promptTokens: 4 })];
    await emitAll(store, [first!, first!]);
    expect(await store.drain()).toBe(1);
    await emitAll(store, [first!, second!, second!]);
    expect(await store.drain()).toBe(1);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals([first!, second!]));
  });

  it('drains at most maxEvents at a time, leaving the rest for later', async () => {
    const store = create();
    const events = Array.from({ length: 7 }, () => usageEvent());
    await emitAll(store, events);
    expect(await store.drain({ maxEvents: 3, batch: 2 })).toBe(3);
    expect((await report(store)).totals.calls).toBe(3);
    expect(await store.drain({ batch: 2 })).toBe(4);
    expect((await report(store)).totals.calls).toBe(7);
  });

  it('keeps dimension values with separators, escapes and braces intact', async () => {
    const store = create();
    const odd = usageEvent({ tenant: 'a|b', key: 'k:1{x}', model: 'm%20/ü', provider: '', tags: ['a,b', '', '{t}'] });
    const plain = usageEvent({ tags: [] });
    await emitAll(store, [odd, plain]);
    await store.drain();
    const { rows } = await report(store, { tenant: 'a|b' }, ['TENANT', 'KEY', 'MODEL', 'PROVIDER']);
    expect(rows.map((row) => [row.tenant, row.key, row.model, row.provider])).toEqual([['a|b', 'k:1{x}', 'm%20/ü', '']]);
    // An empty tag is a tag: [''] and [] are different tag sets.
    expect((await report(store, { tags: [''] })).totals.calls).toBe(1);
    expect((await report(store, { tags: ['a,b', '{t}'] })).totals.calls).toBe(1);
  });

  it('treats tags as a set: order and repetition do not make another row', async () => {
    const store = create();
    await emitAll(store, [usageEvent({ tags: ['b', 'a', 'b'] }), usageEvent({ tags: ['a', 'b'] })]);
    await store.drain();
    expect((await report(store, { tags: ['a', 'b'] })).totals.calls).toBe(2);
  });

  it('refuses time ranges over 366 days and invalid times as BAD_USER_INPUT', async () => {
    const store = create();
    const from = new Date('2024-01-01T00:00:00.000Z');
    const days = (n: number) => new Date(from.getTime() + n * 86_400_000);
    expect(await rejectionCode(store.report({ from, to: new Date(days(366).getTime() + 1) }, []))).toBe('BAD_USER_INPUT');
    expect(await rejectionCode(store.report({ from: new Date(Number.NaN), to: from }, []))).toBe('BAD_USER_INPUT');
    expect((await store.report({ from, to: days(366) }, [])).rows).toEqual([]);
  });

  it.each<[string, Partial<UsageEvent>]>([
    ['an invalid time', { time: 'yesterday' }],
    ['fractional tokens', { promptTokens: 1.5 }],
    ['negative tokens', { totalTokens: -1 }],
    ['a cost that is not a number', { costUsd: Number.NaN }],
    ['a negative cost', { costUsd: -0.01 }],
  ])('rejects an event with %s and stores nothing', async (_label, overrides) => {
    const store = create();
    await expect(store.emit(usageEvent(overrides))).rejects.toThrow(/cannot be stored/);
    expect(await store.drain()).toBe(0);
  });

  it.each([{ batch: 0 }, { batch: 1.5 }, { maxEvents: -1 }, { maxEvents: 2.5 }])('rejects drain options %j', async (options) => {
    await expect(create().drain(options)).rejects.toThrow(RangeError);
  });
});

function inMicrosToTotals({ costMicro, ...rest }: ReturnType<typeof expectedTotals>): UsageTotals {
  return { ...rest, costUsd: costMicro / 1e9 };
}

describe('Redis usage pipeline', () => {
  const keysOf = (prefix: string) => usageKeys(prefix);
  const pendingCount = async (prefix: string) =>
    Number(((await redis.xpending(keysOf(prefix).stream(), keysOf(prefix).group)) as [number])[0]);
  const createGroup = (prefix: string) => redis.xgroup('CREATE', keysOf(prefix).stream(), keysOf(prefix).group, '0', 'MKSTREAM');

  async function emitted(count: number, overrides: (i: number) => Partial<UsageEvent> = () => ({})) {
    const prefix = redisPrefix();
    const store = new RedisUsageStore(redis, prefix);
    const events = Array.from({ length: count }, (_, i) => usageEvent({ promptTokens: i + 1, ...overrides(i) }));
    await emitAll(store, events);
    return { prefix, store, events };
  }

  it('writes flat stream fields: tags as JSON, numbers as strings, null as empty', async () => {
    const prefix = redisPrefix();
    const event = usageEvent({ tags: ['a', 'b'], costUsd: 0.1, timeToFirstTokenMs: null, kind: 'chat_stream' });
    await new RedisUsageSink(redis, prefix).emit(event);
    const [[, fields]] = (await redis.xrange(keysOf(prefix).stream(), '-', '+')) as [[string, string[]]];
    expect(fields).toEqual([
      'id',
      event.id,
      'time',
      event.time,
      'tenant',
      'acme',
      'key',
      'key-1',
      'model',
      'gpt-4o',
      'version',
      '2024-08-06',
      'provider',
      'openai',
      'kind',
      'chat_stream',
      'promptTokens',
      '10',
      'completionTokens',
      '5',
      'totalTokens',
      '15',
      'costUsd',
      '0.1',
      'latencyMs',
      '320',
      'timeToFirstTokenMs',
      '',
      'outcome',
      'ok',
      'tags',
      '["a","b"]',
    ]);
  });

  it('counts what a separate sink wrote, creating the consumer group when missing', async () => {
    const prefix = redisPrefix();
    const store = new RedisUsageStore(redis, prefix);
    expect(await store.drain()).toBe(0);
    expect(await redis.xinfo('GROUPS', keysOf(prefix).stream())).toHaveLength(1);
    await new RedisUsageSink(redis, prefix).emit(usageEvent());
    expect(await store.drain()).toBe(1);
  });

  it('counts entries a crashed consumer read but never acknowledged, exactly once', async () => {
    const { prefix, store, events } = await emitted(5);
    await createGroup(prefix);
    await redis.xreadgroup('GROUP', keysOf(prefix).group, 'c1', 'COUNT', 2, 'STREAMS', keysOf(prefix).stream(), '>');
    expect(await pendingCount(prefix)).toBe(2);
    expect(await store.drain({ consumer: 'c1' })).toBe(5);
    expect(await pendingCount(prefix)).toBe(0);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals(events));
  });

  it('takes over entries another consumer left pending for a minute, but not fresher ones', async () => {
    const { prefix, store, events } = await emitted(6);
    const { stream, group } = { stream: keysOf(prefix).stream(), group: keysOf(prefix).group };
    await createGroup(prefix);
    const read = (consumer: string) =>
      redis.xreadgroup('GROUP', group, consumer, 'COUNT', 2, 'STREAMS', stream, '>') as Promise<[[string, [string][]]]>;
    const [[, abandoned]] = await read('crashed');
    await read('alive');
    // Backdates the crashed consumer's entries (XCLAIM to itself with IDLE), so no test has to wait a minute.
    await redis.xclaim(stream, group, 'crashed', 0, ...abandoned.map(([id]) => id), 'IDLE', 61_000, 'JUSTID');
    expect(await store.drain({ consumer: 'c2' })).toBe(4);
    expect(await pendingCount(prefix)).toBe(2);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals([...events.slice(0, 2), ...events.slice(4)]));
  });

  it('never counts twice what was counted just before a crash (before XACK)', async () => {
    const { prefix, store, events } = await emitted(8);
    const crashing = redis.duplicate();
    try {
      vi.spyOn(crashing, 'xack').mockRejectedValue(new Error('crashed before XACK'));
      await expect(new RedisUsageStore(crashing, prefix).drain({ consumer: 'c1', batch: 3 })).rejects.toThrow('crashed before XACK');
    } finally {
      crashing.disconnect();
    }
    expect(await pendingCount(prefix)).toBe(3);
    expect((await report(store)).totals.calls).toBe(3);
    expect(await store.drain({ consumer: 'c1', batch: 3 })).toBe(5);
    expect(await pendingCount(prefix)).toBe(0);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals(events));
  });

  it('skips an event whose id is already in its counted set', async () => {
    const { prefix, store, events } = await emitted(3);
    await redis.sadd(keysOf(prefix).counted('2024-05-01'), events[1]!.id);
    expect(await store.drain()).toBe(2);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals([events[0]!, events[2]!]));
  });

  it('counts every event exactly once when two consumers drain concurrently', async () => {
    const { prefix, events } = await emitted(120, (i) => ({ tenant: `t${i % 4}` }));
    // Every event a second time: duplicates may be read by different consumers at the same moment.
    await emitAll(new RedisUsageSink(redis, prefix), events);
    const connections = [redis.duplicate(), redis.duplicate()];
    try {
      const counts = await Promise.all(
        connections.map((connection, i) => new RedisUsageStore(connection, prefix).drain({ consumer: `c${i}`, batch: 5 + i })),
      );
      expect(counts[0]! + counts[1]!).toBe(events.length);
    } finally {
      for (const connection of connections) connection.disconnect();
    }
    const { totals, rows } = await report(new RedisUsageStore(redis, prefix), {}, ['TENANT']);
    expect(inMicros(totals)).toEqual(expectedTotals(events));
    expect(rows.map((row) => row.calls)).toEqual([30, 30, 30, 30]);
    expect(await pendingCount(prefix)).toBe(0);
  });

  it('acknowledges malformed entries and pending entries trimmed from the stream without counting them', async () => {
    const { prefix, store, events } = await emitted(3);
    const stream = keysOf(prefix).stream();
    await redis.xadd(stream, '*', 'id', 'bad', 'time', 'not a time', 'tags', '[]');
    await redis.xadd(stream, '*', 'garbage', 'yes');
    await createGroup(prefix);
    const [[, [[firstId]]]] = (await redis.xreadgroup('GROUP', keysOf(prefix).group, 'c1', 'COUNT', 1, 'STREAMS', stream, '>')) as [
      [string, [[string]]],
    ];
    await redis.xdel(stream, firstId);
    expect(await store.drain({ consumer: 'c1' })).toBe(2);
    expect(await pendingCount(prefix)).toBe(0);
    expect(inMicros((await report(store)).totals)).toEqual(expectedTotals(events.slice(1)));
  });

  it('expires counted ids after about 8 days and rows and hour indexes after about 400', async () => {
    const { prefix, store, events } = await emitted(1);
    await store.drain();
    const keys = keysOf(prefix);
    const [rowKey] = await redis.smembers(keys.hourIndex('2024-05-01T10'));
    const day = 86_400;
    expect(await redis.ttl(keys.counted('2024-05-01'))).toBeGreaterThan(7 * day);
    expect(await redis.ttl(keys.counted('2024-05-01'))).toBeLessThanOrEqual(8 * day);
    for (const key of [keys.hourIndex('2024-05-01T10'), keys.row('2024-05-01T10', rowKey!)]) {
      expect(await redis.ttl(key)).toBeGreaterThan(399 * day);
      expect(await redis.ttl(key)).toBeLessThanOrEqual(400 * day);
    }
    expect(await redis.hgetall(keys.row('2024-05-01T10', rowKey!))).toMatchObject({
      tenant: 'acme',
      key: 'key-1',
      model: 'gpt-4o',
      provider: 'openai',
      tags: '[]',
      calls: '1',
      costMicro: String(micros(events[0]!.costUsd)),
    });
  });

  it('trims the stream to about maxLength', async () => {
    const prefix = redisPrefix();
    const sink = new RedisUsageSink(redis, prefix, 10);
    await Promise.all(Array.from({ length: 500 }, () => sink.emit(usageEvent())));
    const length = await redis.xlen(keysOf(prefix).stream());
    expect(length).toBeGreaterThanOrEqual(10);
    // Approximate trimming removes whole stream nodes (stream-node-max-entries is 100 by default).
    expect(length).toBeLessThanOrEqual(110);
  });

  it('rejects when the event cannot be stored', async () => {
    const offline = new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false });
    try {
      await expect(new RedisUsageSink(offline, redisPrefix()).emit(usageEvent())).rejects.toThrow();
    } finally {
      offline.disconnect();
    }
  });
});
