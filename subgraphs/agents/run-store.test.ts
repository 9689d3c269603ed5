import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { duplicateRedis, type RedisClient } from '../../platform/redis/client.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { agentKeys } from '../../platform/redis/keys.ts';
import { NO_SPEND as NO_USAGE } from '../../platform/metering/spend.ts';
import { RECORDED_AT, runningRun } from '../../tests/support/agent-records.ts';
import type { AgentRunEventRecord, AgentRunStatus, StoredRunEvent } from './records.ts';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';
import { MemoryRunStore } from './memory-run-store.ts';
import { RedisRunStore } from './redis-run-store.ts';
import { RunFinishedError, isCursor, type RunPage, type RunStore } from './run-store.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
const cluster = await connectSharedCluster();
const connections: RedisClient[] = [redis, cluster];
const stores: RunStore[] = [];
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  for (const connection of connections) connection.disconnect();
});

function track<T extends RunStore>(store: T): T {
  stores.push(store);
  return store;
}

function connect(options: { connectionName?: string } = {}): Redis {
  const connection = new Redis(REDIS_URL, options);
  connections.push(connection);
  return connection;
}

/** Two handles on the same runs, as two processes have: in Redis, stores on separate connections. */
interface Pair {
  a: RunStore;
  b: RunStore;
}

const implementations: [string, () => Pair][] = [
  [
    'Redis',
    () => {
      const prefix = `mg-test:${randomUUID()}:`;
      return { a: track(new RedisRunStore(redis, prefix)), b: track(new RedisRunStore(connect(), prefix)) };
    },
  ],
  [
    'Redis Cluster',
    () => {
      const prefix = `mg-test:${randomUUID()}:`;
      const other = duplicateRedis(cluster);
      connections.push(other);
      return { a: track(new RedisRunStore(cluster, prefix)), b: track(new RedisRunStore(other, prefix)) };
    },
  ],
  [
    'memory',
    () => {
      const store = track(new MemoryRunStore());
      return { a: store, b: store };
    },
  ],
];

const AT = RECORDED_AT;

const delta = (content: string): AgentRunEventRecord => ({ type: 'TEXT_DELTA', at: AT, step: 1, content });

const finish = (status: AgentRunStatus = 'SUCCEEDED'): AgentRunEventRecord => ({
  type: 'RUN_FINISHED',
  at: AT,
  status,
  output: 'done',
  error: null,
  usage: NO_USAGE,
});

/** What each event says: a delta's text, else its type. */
function contents(events: StoredRunEvent[]): string[] {
  return events.map(({ event }) => (event.type === 'TEXT_DELTA' ? event.content : event.type));
}

/**
 * Consumes a follow in the background. `reached(n)` resolves once n events arrived (and rejects if
 * the follow ended before); `onEvent` runs inside the consuming loop, before the next read.
 */
function consume(events: AsyncIterable<StoredRunEvent>, onEvent?: (seen: StoredRunEvent[]) => void) {
  const seen: StoredRunEvent[] = [];
  let waiting: { count: number; resolve: () => void }[] = [];
  const done = (async () => {
    for await (const stored of events) {
      seen.push(stored);
      onEvent?.(seen);
      for (const waiter of waiting) if (seen.length >= waiter.count) waiter.resolve();
      waiting = waiting.filter((waiter) => seen.length < waiter.count);
    }
  })();
  const reached = (count: number) =>
    Promise.race([
      new Promise<void>((resolve) => (seen.length >= count ? resolve() : waiting.push({ count, resolve }))),
      done.then(() => {
        if (seen.length < count) throw new Error(`the follow ended after ${seen.length} of ${count} events`);
      }),
    ]);
  return { seen, done, reached };
}

const live = () => new AbortController().signal;

describe.each(implementations)('%s run store', (_name, pair) => {
  it('stores a run, refuses its id again, and knows nothing of other runs', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    expect(await b.get(run.id)).toEqual({ run, cursor: null });
    await expect(a.create(run)).rejects.toThrow(/exists/);
    expect(await a.get('unknown')).toBeUndefined();
  });

  it('moves the snapshot and its cursor together, and keeps both when an event comes without a snapshot', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    const first = await a.append(run.id, delta('one'), { ...run, output: 'one' });
    expect(isCursor(first)).toBe(true);
    expect(await b.get(run.id)).toEqual({ run: { ...run, output: 'one' }, cursor: first });

    const second = await a.append(run.id, delta('two'));
    expect(second).not.toBe(first);
    expect(await b.get(run.id)).toEqual({ run: { ...run, output: 'one' }, cursor: first });

    const third = await a.append(run.id, delta('three'), { ...run, output: 'one two three' });
    expect(await b.get(run.id)).toEqual({ run: { ...run, output: 'one two three' }, cursor: third });
    expect((await b.read(run.id, undefined, 10)).map((stored) => stored.cursor)).toEqual([first, second, third]);
  });

  it('reads after a cursor (exclusive), oldest first, at most count', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    const cursors: string[] = [];
    for (const text of ['e1', 'e2', 'e3', 'e4', 'e5']) cursors.push(await a.append(run.id, delta(text)));
    expect(contents(await b.read(run.id, undefined, 10))).toEqual(['e1', 'e2', 'e3', 'e4', 'e5']);
    expect(contents(await b.read(run.id, undefined, 2))).toEqual(['e1', 'e2']);
    expect(await b.read(run.id, cursors[1], 2)).toEqual([
      { cursor: cursors[2], event: delta('e3') },
      { cursor: cursors[3], event: delta('e4') },
    ]);
    expect(await b.read(run.id, cursors[4], 10)).toEqual([]);
    expect(await b.read('unknown', undefined, 10)).toEqual([]);
    await expect(b.read(run.id, 'not-a-cursor', 10)).rejects.toThrow(/cursor/);
  });

  it('refuses events after RUN_FINISHED and for unknown runs', async () => {
    const { a } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, finish(), { ...run, status: 'SUCCEEDED' });
    await expect(a.append(run.id, delta('late'))).rejects.toBeInstanceOf(RunFinishedError);
    expect(contents(await a.read(run.id, undefined, 10))).toEqual(['RUN_FINISHED']);

    const unknown = a.append('unknown', delta('lost'));
    await expect(unknown).rejects.toThrow(/No run unknown/);
    await expect(unknown).rejects.not.toBeInstanceOf(RunFinishedError);
  });

  it('follows from the start what another process appends, live, and ends after RUN_FINISHED', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, delta('before'));
    const follower = consume(b.follow(run.id, undefined, live()));
    await follower.reached(1);
    await a.append(run.id, delta('live'));
    await follower.reached(2);
    await a.append(run.id, finish(), { ...run, status: 'SUCCEEDED' });
    await follower.done;
    expect(contents(follower.seen)).toEqual(['before', 'live', 'RUN_FINISHED']);
    expect(follower.seen).toEqual(await a.read(run.id, undefined, 10));
  });

  it('follows from a middle cursor', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    const first = await a.append(run.id, delta('e1'));
    await a.append(run.id, delta('e2'));
    await a.append(run.id, delta('e3'));
    const follower = consume(b.follow(run.id, first, live()));
    await follower.reached(2);
    await a.append(run.id, finish());
    await follower.done;
    expect(contents(follower.seen)).toEqual(['e2', 'e3', 'RUN_FINISHED']);
  });

  it('ends at once, with nothing, when following from the final cursor or an unknown run', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, delta('e1'));
    const last = await a.append(run.id, finish());
    const fromEnd = consume(b.follow(run.id, last, live()));
    await fromEnd.done;
    expect(fromEnd.seen).toEqual([]);

    const unknown = consume(b.follow('unknown', undefined, live()));
    await unknown.done;
    expect(unknown.seen).toEqual([]);
  });

  it('gives a follower that stopped midway and one resuming from its cursor every event exactly once, while appends go on', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    for (const text of ['e1', 'e2', 'e3']) await a.append(run.id, delta(text));

    const stop = new AbortController();
    const stopped = consume(b.follow(run.id, undefined, stop.signal), (seen) => {
      if (seen.length === 2) stop.abort();
    });
    await stopped.done;
    expect(contents(stopped.seen)).toEqual(['e1', 'e2']);

    await a.append(run.id, delta('e4'));
    const resumed = consume(b.follow(run.id, stopped.seen.at(-1)!.cursor, live()));
    for (let n = 5; n <= 12; n += 1) {
      await a.append(run.id, delta(`e${n}`));
      if (n % 3 === 0) await resumed.reached(n - 2);
    }
    await a.append(run.id, finish());
    await resumed.done;

    const expected = ['e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'e7', 'e8', 'e9', 'e10', 'e11', 'e12', 'RUN_FINISHED'];
    expect(contents([...stopped.seen, ...resumed.seen])).toEqual(expected);
    expect([...stopped.seen, ...resumed.seen]).toEqual(await a.read(run.id, undefined, 100));
  });

  it('stops quietly when aborted while waiting, and when the store closes', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, delta('e1'));

    const abort = new AbortController();
    const aborted = consume(a.follow(run.id, undefined, abort.signal));
    await aborted.reached(1);
    abort.abort();
    await aborted.done;
    expect(contents(aborted.seen)).toEqual(['e1']);

    const closing = consume(b.follow(run.id, undefined, live()));
    await closing.reached(1);
    await b.close();
    await closing.done;
    expect(contents(closing.seen)).toEqual(['e1']);
    const afterClose = consume(b.follow(run.id, undefined, live()));
    await afterClose.done;
    expect(afterClose.seen).toEqual([]);
  });

  it('calls the idle check while nothing arrives, and yields the RUN_FINISHED it appends', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, delta('e1'));
    let checks = 0;
    const check = async () => {
      checks += 1;
      await a.finishIfAbandoned(run.id, finish('FAILED'), { ...run, status: 'FAILED' });
    };
    const follower = consume(b.follow(run.id, undefined, live(), { everyMs: 50, check }));
    await follower.done;
    expect(contents(follower.seen)).toEqual(['e1', 'RUN_FINISHED']);
    expect(checks).toBe(1);
  });

  it('finishes an abandoned run only when no process holds its lease, and only once', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    await a.append(run.id, delta('e1'));
    const follower = consume(b.follow(run.id, undefined, live()));
    await follower.reached(1);
    const failed = { ...run, status: 'FAILED' as const };

    await a.holdLease(run.id, 60_000);
    expect(await b.finishIfAbandoned(run.id, finish('FAILED'), failed)).toBe(false);
    expect((await b.get(run.id))?.run.status).toBe('RUNNING');

    await a.releaseLease(run.id);
    expect(await b.finishIfAbandoned(run.id, finish('FAILED'), failed)).toBe(true);
    await follower.done;
    expect(contents(follower.seen)).toEqual(['e1', 'RUN_FINISHED']);
    expect(await a.get(run.id)).toEqual({ run: failed, cursor: follower.seen.at(-1)!.cursor });

    expect(await b.finishIfAbandoned(run.id, finish('CANCELLED'), { ...run, status: 'CANCELLED' })).toBe(false);
    expect(await b.finishIfAbandoned('unknown', finish('FAILED'), failed)).toBe(false);
  });

  it('counts a lease taken before its run was stored (so a new run is never taken for an abandoned one)', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.holdLease(run.id, 60_000);
    await a.create(run);
    expect(await b.finishIfAbandoned(run.id, finish('FAILED'), { ...run, status: 'FAILED' })).toBe(false);
    expect((await b.get(run.id))?.run.status).toBe(run.status);
  });

  it('lists a tenant’s runs newest first, page by page, unshaken by a newer run', async () => {
    const { a, b } = pair();
    const tag = randomUUID().slice(0, 8);
    const at = (minute: number) => `2026-03-01T12:0${minute}:00.000Z`;
    const runs = [
      runningRun({ id: `${tag}-1`, createdAt: at(1) }),
      runningRun({ id: `${tag}-2`, createdAt: at(2) }),
      runningRun({ id: `${tag}-3a`, createdAt: at(3) }),
      runningRun({ id: `${tag}-3b`, createdAt: at(3) }),
      runningRun({ id: `${tag}-4`, createdAt: at(4) }),
    ];
    for (const run of runs) await a.create(run);
    await a.create(runningRun({ id: `${tag}-other`, tenantId: 'globex', createdAt: at(5) }));
    const ids = (page: RunPage) => page.runs.map(({ run }) => run.id.slice(tag.length + 1));

    const first = await b.list('acme', 2);
    expect(ids(first)).toEqual(['4', '3b']);
    expect(first.runs[0]).toEqual({ run: runs[4], cursor: null });
    const second = await b.list('acme', 2, first.next);
    expect(ids(second)).toEqual(['3a', '2']);
    await a.create(runningRun({ id: `${tag}-5`, createdAt: at(5) }));
    const third = await b.list('acme', 2, second.next);
    expect(ids(third)).toEqual(['1']);
    expect(third.next).toBeUndefined();

    const all = await b.list('acme', 6);
    expect(ids(all)).toEqual(['5', '4', '3b', '3a', '2', '1']);
    expect(all.next).toBeUndefined();
    expect(ids(await b.list('globex', 10))).toEqual(['other']);
    expect(await b.list('initech', 10)).toEqual({ runs: [] });
    // Each listed run comes with the cursor its snapshot reflects, as `get` gives it.
    const cursor = await a.append(runs[0]!.id, delta('e1'), runs[0]);
    expect((await b.list('acme', 6)).runs.at(-1)).toEqual({ run: runs[0], cursor });
    await expect(b.list('acme', 2, 'garbage')).rejects.toThrow(/cursor/);
  });

  it('tells every process about a cancellation; the first reason wins, and a finished run ignores it', async () => {
    const { a, b } = pair();
    const run = runningRun();
    await a.create(run);
    expect(await a.cancelRequested(run.id)).toBeUndefined();
    const requested = new Promise<string>((resolve) => {
      const off = b.onCancelRequested((runId) => {
        off();
        resolve(runId);
      });
    });
    await b.listening();
    await a.requestCancel(run.id, 'the user asked');
    expect(await requested).toBe(run.id);
    await a.requestCancel(run.id, 'the key was revoked');
    expect(await a.cancelRequested(run.id)).toBe('the user asked');
    expect(await b.cancelRequested(run.id)).toBe('the user asked');

    const done = runningRun();
    await a.create(done);
    await a.append(done.id, finish());
    await a.requestCancel(done.id, 'too late');
    expect(await b.cancelRequested(done.id)).toBeUndefined();
  });
});

describe('Redis run store', () => {
  it('lets an unfinished run’s keys expire after its wall time, a day and the retention, and a finished one’s after the retention', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const store = track(new RedisRunStore(redis, prefix, { retentionSeconds: 60 }));
    const keys = agentKeys(prefix);
    const run = runningRun();
    await store.create(run);
    await store.append(run.id, delta('e1'));
    const unfinished = 60_000 + run.agent.maxWallTimeSeconds * 1000 + 86_400_000;
    for (const key of [keys.run(run.id), keys.runEvents(run.id)]) {
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(unfinished - 10_000);
      expect(ttl).toBeLessThanOrEqual(unfinished);
    }
    await store.append(run.id, finish());
    for (const key of [keys.run(run.id), keys.runEvents(run.id)]) {
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_000);
    }
  });

  it('subscribes a run’s channel once per process while it is followed, and unsubscribes after', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const store = track(new RedisRunStore(redis, prefix));
    const channel = agentKeys(prefix).runChannel;
    const run = runningRun();
    await store.create(run);
    await store.append(run.id, delta('e1'));
    const followers = [consume(store.follow(run.id, undefined, live())), consume(store.follow(run.id, undefined, live()))];
    await Promise.all(followers.map((follower) => follower.reached(1)));
    expect(await redis.pubsub('NUMSUB', channel(run.id))).toEqual([channel(run.id), 1]);
    await store.append(run.id, finish());
    await Promise.all(followers.map((follower) => follower.done));
    expect(await redis.pubsub('NUMSUB', channel(run.id))).toEqual([channel(run.id), 0]);
  });

  it('drops runs whose keys expired from the tenant index as it lists', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const store = track(new RedisRunStore(redis, prefix));
    const keys = agentKeys(prefix);
    const kept = runningRun({ createdAt: '2026-03-01T12:00:00.000Z' });
    const expired = runningRun({ createdAt: '2026-03-01T12:01:00.000Z' });
    await store.create(kept);
    await store.create(expired);
    await redis.del(keys.run(expired.id));
    expect(await store.list('acme', 1)).toEqual({ runs: [{ run: kept, cursor: null }] });
    expect(await redis.zscore(keys.tenantRuns('acme'), expired.id)).toBeNull();
  });

  it('catches up after its subscriber connection drops: followers read again, held runs hear their cancellation', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const name = `mg-test-${randomUUID().slice(0, 8)}`;
    const writer = track(new RedisRunStore(redis, prefix));
    const runner = track(new RedisRunStore(connect({ connectionName: name }), prefix));
    const run = runningRun();
    await writer.create(run);
    await writer.append(run.id, delta('e1'));
    await runner.holdLease(run.id, 60_000);
    const cancelled = new Promise<string>((resolve) => runner.onCancelRequested(resolve));
    await runner.listening();
    // A long idle interval: only the reconnect can bring the next event soon.
    const follower = consume(runner.follow(run.id, undefined, live(), { everyMs: 60_000, check: async () => undefined }));
    await follower.reached(1);

    const clients = (await redis.client('LIST')) as string;
    const feed = clients.split('\n').find((line) => line.includes(` name=${name} `) && !line.includes(' sub=0 '));
    const id = /^id=(\d+) /.exec(feed ?? '')?.[1];
    expect(id).toBeDefined();
    await redis.call('CLIENT', 'KILL', 'ID', id!);
    await writer.append(run.id, delta('e2'));
    await writer.requestCancel(run.id, 'the user asked');

    await follower.reached(2);
    expect(await cancelled).toBe(run.id);
    await writer.append(run.id, finish());
    await follower.done;
    expect(contents(follower.seen)).toEqual(['e1', 'e2', 'RUN_FINISHED']);
  });
});

describe('memory run store', () => {
  it('drops finished runs after the retention', async () => {
    const store = track(new MemoryRunStore({ retentionSeconds: 0 }));
    const run = runningRun();
    await store.create(run);
    await store.append(run.id, finish());
    expect(await store.get(run.id)).toBeUndefined();
    expect(await store.list('acme', 10)).toEqual({ runs: [] });
  });

  it('keeps at most maxRuns, dropping the oldest finished run first', async () => {
    const store = track(new MemoryRunStore({ maxRuns: 2 }));
    const [first, second, third, fourth] = [runningRun(), runningRun(), runningRun(), runningRun()];
    await store.create(first!);
    await store.create(second!);
    await store.append(second!.id, finish());
    await store.create(third!);
    expect(await store.get(second!.id)).toBeUndefined();
    expect(await store.get(first!.id)).toBeDefined();
    await store.create(fourth!);
    expect(await store.get(first!.id)).toBeUndefined();
    expect((await store.list('acme', 10)).runs.map(({ run }) => run.id).sort()).toEqual([third!.id, fourth!.id].sort());
  });

  it('uses cursors shaped like Redis stream ids', async () => {
    const store = track(new MemoryRunStore());
    const run = runningRun();
    await store.create(run);
    expect([await store.append(run.id, delta('e1')), await store.append(run.id, delta('e2'))]).toEqual(['1-0', '2-0']);
    expect(isCursor('1712345678901-0')).toBe(true);
    expect(isCursor('1-')).toBe(false);
    expect(isCursor('$')).toBe(false);
  });
});
