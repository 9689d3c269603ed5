import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  MAX_SCANNED_PER_LIST,
  MemoryAuditLog,
  RedisAuditLog,
  type AuditEvent,
  type AuditFilter,
  type AuditLog,
  type AuditPage,
  type NewAuditEvent,
} from './audit-log.ts';
import { codeOf } from '../errors.ts';
import { auditStreamKey } from '../redis/keys.ts';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
const cluster = await connectSharedCluster();
const streams: string[] = [];
afterAll(async () => {
  if (streams.length > 0) await redis.del(...streams);
  redis.disconnect();
  cluster.disconnect();
});

function redisPrefix(): string {
  const prefix = `mg-test:${randomUUID()}:`;
  streams.push(auditStreamKey(prefix));
  return prefix;
}

async function redisMs(): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1_000 + Math.floor(Number(micros) / 1_000);
}

/** Returns once the Redis clock has passed every id handed out so far (no sleep: polls TIME). */
async function passRedisMillisecond(): Promise<void> {
  const start = await redisMs();
  while ((await redisMs()) <= start);
}

interface Fixture {
  log: AuditLog;
  /** Makes the next event's id (and time) later, by whole milliseconds, than every earlier one. */
  advanceClock(): Promise<void>;
  /** How many entries beyond maxLength trimming may keep. */
  trimSlack: number;
}

let clock = 1_700_000_000_000;
const implementations: [string, (maxLength?: number) => Fixture][] = [
  [
    'Redis',
    (maxLength = 1_000) => ({
      log: new RedisAuditLog(redis, redisPrefix(), maxLength),
      advanceClock: passRedisMillisecond,
      // Approximate trimming removes whole stream nodes (stream-node-max-entries is 100 by default).
      trimSlack: 100,
    }),
  ],
  [
    'Redis Cluster',
    (maxLength = 1_000) => ({
      log: new RedisAuditLog(cluster, `mg-test:${randomUUID()}:`, maxLength),
      // The nodes share this machine's clock.
      advanceClock: passRedisMillisecond,
      trimSlack: 100,
    }),
  ],
  [
    'memory',
    (maxLength = 1_000) => ({
      log: new MemoryAuditLog(maxLength, () => clock),
      advanceClock: async () => {
        clock += 1_000;
      },
      trimSlack: 0,
    }),
  ],
];

function newEvent(overrides: Partial<NewAuditEvent> = {}): NewAuditEvent {
  return {
    actor: 'key-1',
    actorTenant: 'acme',
    action: 'apiKey.create',
    target: 'key-2',
    tenant: 'acme',
    sourceAddress: '203.0.113.7',
    outcome: 'SUCCESS',
    reason: null,
    ...overrides,
  };
}

async function recordAll(log: AuditLog, events: NewAuditEvent[]): Promise<AuditEvent[]> {
  const recorded: AuditEvent[] = [];
  for (const event of events) recorded.push(await log.record(event));
  return recorded;
}

/** Every page of a listing, following endCursor while hasNextPage. */
async function allPages(log: AuditLog, filter: AuditFilter, first: number): Promise<AuditPage[]> {
  const pages = [await log.list(filter, first)];
  while (pages.at(-1)!.hasNextPage) pages.push(await log.list(filter, first, pages.at(-1)!.endCursor!));
  return pages;
}

const ids = (events: AuditEvent[]) => events.map((event) => event.id);
const newestFirst = (events: AuditEvent[]) => ids(events).reverse();
const idParts = (id: string) => id.split('-').map(BigInt) as [bigint, bigint];

async function rejectionCode(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return codeOf(error);
  }
  throw new Error('expected a rejection');
}

describe.each(implementations)('%s audit log', (_name, create) => {
  it('returns events newest first with every field, nulls preserved', async () => {
    const { log } = create();
    const full = newEvent({ outcome: 'DENIED', reason: 'not_admin', sourceAddress: '' });
    const bare = newEvent({
      actor: 'anonymous',
      actorTenant: null,
      action: 'auth.failure',
      target: null,
      tenant: null,
      sourceAddress: null,
      outcome: 'FAILED',
      reason: 'unknown_key',
    });
    const recorded = await recordAll(log, [full, bare]);
    expect(recorded).toEqual([expect.objectContaining(full), expect.objectContaining(bare)]);
    const page = await log.list({}, 10);
    expect(page).toEqual({ events: [...recorded].reverse(), endCursor: recorded[0]!.id, hasNextPage: false });
  });

  it('assigns stream-shaped ids that increase within one millisecond and carry the time', async () => {
    const { log } = create();
    const recorded = await recordAll(
      log,
      Array.from({ length: 5 }, () => newEvent()),
    );
    for (const event of recorded) {
      expect(event.id).toMatch(/^\d+-\d+$/);
      expect(event.time).toBe(new Date(Number(idParts(event.id)[0])).toISOString());
    }
    for (let i = 1; i < recorded.length; i++) {
      const [ms, seq] = idParts(recorded[i]!.id);
      const [previousMs, previousSeq] = idParts(recorded[i - 1]!.id);
      expect(ms > previousMs || (ms === previousMs && seq > previousSeq)).toBe(true);
    }
  });

  it.each([
    [7, 3, [3, 3, 1]],
    [6, 3, [3, 3]],
    [2, 5, [2]],
  ])('walks %i events exactly once in pages of %i', async (count, first, sizes) => {
    const { log } = create();
    const recorded = await recordAll(
      log,
      Array.from({ length: count }, (_, i) => newEvent({ target: `key-${i}` })),
    );
    const pages = await allPages(log, {}, first);
    expect(pages.map((page) => page.events.length)).toEqual(sizes);
    expect(pages.map((page) => page.hasNextPage)).toEqual(sizes.map((_, i) => i < sizes.length - 1));
    for (const page of pages) expect(page.endCursor).toBe(page.events.at(-1)!.id);
    expect(pages.flatMap((page) => ids(page.events))).toEqual(newestFirst(recorded));
  });

  it('returns an empty page for an empty log', async () => {
    expect(await create().log.list({}, 10)).toEqual({ events: [], endCursor: null, hasNextPage: false });
  });

  describe('filters', () => {
    const dataset = [
      newEvent({ actor: 'k1', actorTenant: 't1', tenant: 't1', action: 'apiKey.create' }),
      newEvent({ actor: 'k2', actorTenant: 't2', tenant: 't2', action: 'apiKey.revoke', outcome: 'DENIED', reason: 'not_admin' }),
      newEvent({ actor: 'anonymous', actorTenant: null, tenant: null, action: 'auth.failure', outcome: 'FAILED', reason: 'unknown_key' }),
      // A platform admin of t1 acting on t2's key: it belongs to t2's log, not t1's.
      newEvent({ actor: 'k1', actorTenant: 't1', tenant: 't2', action: 'apiKey.revoke' }),
    ];
    it.each<[string, AuditFilter, number[]]>([
      ['tenant', { tenant: 't2' }, [3, 1]],
      ['tenant (target tenant, not actor tenant)', { tenant: 't1' }, [0]],
      ['actor', { actor: 'k1' }, [3, 0]],
      ['action', { action: 'apiKey.revoke' }, [3, 1]],
      ['outcome', { outcome: 'FAILED' }, [2]],
      ['several fields at once', { actor: 'k1', tenant: 't2' }, [3]],
      ['a value nothing has', { tenant: 't3' }, []],
    ])('by %s', async (_label, filter, expected) => {
      const { log } = create();
      const recorded = await recordAll(log, dataset);
      const page = await log.list(filter, 10);
      expect(ids(page.events)).toEqual(expected.map((i) => recorded[i]!.id));
      expect(page.hasNextPage).toBe(false);
    });

    it('pages through filtered events, skipping the others', async () => {
      const { log } = create();
      const recorded = await recordAll(
        log,
        Array.from({ length: 11 }, (_, i) => newEvent({ tenant: i % 2 === 0 ? 'even' : 'odd' })),
      );
      const pages = await allPages(log, { tenant: 'even' }, 2);
      expect(pages.map((page) => page.events.length)).toEqual([2, 2, 2]);
      expect(pages.flatMap((page) => ids(page.events))).toEqual(newestFirst(recorded.filter((_, i) => i % 2 === 0)));
    });
  });

  describe('time range', () => {
    /** a | b, c | d, with a clock step at each bar. */
    async function timeline(fixture: Fixture) {
      const a = await fixture.log.record(newEvent({ target: 'a' }));
      await fixture.advanceClock();
      const [b, c] = await recordAll(fixture.log, [newEvent({ target: 'b' }), newEvent({ target: 'c' })]);
      await fixture.advanceClock();
      const d = await fixture.log.record(newEvent({ target: 'd' }));
      return { a, b: b!, c: c!, d };
    }
    const at = (event: AuditEvent) => new Date(event.time);

    it('includes both ends of from/to, at millisecond resolution', async () => {
      const fixture = create();
      const { a, b, c, d } = await timeline(fixture);
      const { log } = fixture;
      expect(ids((await log.list({ from: at(b), to: at(c) }, 10)).events)).toEqual([c.id, b.id]);
      expect(ids((await log.list({ from: at(b) }, 10)).events)).toEqual([d.id, c.id, b.id]);
      expect(ids((await log.list({ to: at(c) }, 10)).events)).toEqual([c.id, b.id, a.id]);
      expect((await log.list({ from: at(d), to: at(a) }, 10)).events).toEqual([]);
    });

    it('combines a time range with a cursor', async () => {
      const fixture = create();
      const { a, b, c, d } = await timeline(fixture);
      const first = await fixture.log.list({ from: at(b) }, 1);
      expect(first).toEqual({ events: [d], endCursor: d.id, hasNextPage: true });
      const rest = await fixture.log.list({ from: at(b) }, 5, d.id);
      expect(rest).toEqual({ events: [c, b], endCursor: b.id, hasNextPage: false });
      // The tighter of `to` and the cursor wins, whichever it is.
      expect(ids((await fixture.log.list({ to: at(d) }, 5, c.id)).events)).toEqual([b.id, a.id]);
      expect(ids((await fixture.log.list({ to: at(a) }, 5, d.id)).events)).toEqual([a.id]);
    });
  });

  it.each(['abc', '', '12', '1-', '-1', '1-2-3', '1.5-0', ' 1-0', '99999999999999999999999-0', '18446744073709551616-0'])(
    'rejects the malformed cursor %j as BAD_USER_INPUT',
    async (cursor) => {
      const { log } = create();
      await log.record(newEvent());
      expect(await rejectionCode(log.list({}, 10, cursor))).toBe('BAD_USER_INPUT');
    },
  );

  it.each([0, -1, 501, 1.5, Number.NaN])('rejects first = %s as BAD_USER_INPUT', async (first) => {
    expect(await rejectionCode(create().log.list({}, first))).toBe('BAD_USER_INPUT');
  });

  it('treats a well-formed cursor that names no event as a position', async () => {
    const { log } = create();
    const recorded = await recordAll(log, [newEvent(), newEvent()]);
    expect((await log.list({}, 10, '0-0')).events).toEqual([]);
    expect(ids((await log.list({}, 10, '18446744073709551615-0')).events)).toEqual(newestFirst(recorded));
  });

  it('keeps about maxLength of the newest events', async () => {
    const maxLength = 10;
    const { log, trimSlack } = create(maxLength);
    const recorded = await recordAll(
      log,
      Array.from({ length: 350 }, (_, i) => newEvent({ target: `key-${i}` })),
    );
    const kept = (await log.list({}, 500)).events;
    expect(kept.length).toBeGreaterThanOrEqual(maxLength);
    expect(kept.length).toBeLessThanOrEqual(maxLength + trimSlack);
    expect(ids(kept)).toEqual(newestFirst(recorded).slice(0, kept.length));
  });

  it('stops scanning at the budget and hands back a cursor to continue from', async () => {
    const { log } = create(MAX_SCANNED_PER_LIST * 2);
    const needle = await log.record(newEvent({ tenant: 'needle' }));
    const hay = await Promise.all(Array.from({ length: MAX_SCANNED_PER_LIST + 50 }, () => log.record(newEvent({ tenant: 'hay' }))));
    const lastScanned = [...hay].sort(byId).reverse()[MAX_SCANNED_PER_LIST - 1]!;
    const first = await log.list({ tenant: 'needle' }, 5);
    expect(first).toEqual({ events: [], endCursor: lastScanned.id, hasNextPage: true });
    const next = await log.list({ tenant: 'needle' }, 5, first.endCursor!);
    expect(next).toEqual({ events: [needle], endCursor: needle.id, hasNextPage: false });
  });

  it('hands out copies, so callers cannot rewrite the log', async () => {
    const { log } = create();
    const recorded = await log.record(newEvent());
    recorded.actor = 'someone-else';
    (await log.list({}, 1)).events[0]!.outcome = 'DENIED';
    expect((await log.list({}, 1)).events[0]).toMatchObject({ actor: 'key-1', outcome: 'SUCCESS' });
  });
});

function byId(x: AuditEvent, y: AuditEvent): number {
  const [xMs, xSeq] = idParts(x.id);
  const [yMs, ySeq] = idParts(y.id);
  if (xMs !== yMs) return xMs < yMs ? -1 : 1;
  return xSeq < ySeq ? -1 : xSeq > ySeq ? 1 : 0;
}

describe('Redis audit log storage', () => {
  it('stores flat fields in one stream and leaves null fields out', async () => {
    const prefix = redisPrefix();
    const event = await new RedisAuditLog(redis, prefix, 100).record(newEvent({ target: null, reason: null }));
    const entries = await redis.xrange(auditStreamKey(prefix), '-', '+');
    expect(entries).toEqual([
      [
        event.id,
        [
          'actor',
          'key-1',
          'action',
          'apiKey.create',
          'outcome',
          'SUCCESS',
          'actorTenant',
          'acme',
          'tenant',
          'acme',
          'sourceAddress',
          '203.0.113.7',
        ],
      ],
    ]);
  });

  it('trims the stream itself, not just what list returns', async () => {
    const prefix = redisPrefix();
    const log = new RedisAuditLog(redis, prefix, 10);
    await Promise.all(Array.from({ length: 500 }, () => log.record(newEvent())));
    expect(await redis.xlen(auditStreamKey(prefix))).toBeLessThanOrEqual(110);
  });

  it('rejects when the event cannot be stored', async () => {
    const offline = new Redis(REDIS_URL, { lazyConnect: true, enableOfflineQueue: false });
    try {
      await expect(new RedisAuditLog(offline, redisPrefix(), 10).record(newEvent())).rejects.toThrow();
    } finally {
      offline.disconnect();
    }
  });
});

describe('memory audit log clock', () => {
  it('takes the time from the injected clock and keeps ids increasing when it goes back', async () => {
    let now = 5_000;
    const log = new MemoryAuditLog(10, () => now);
    const first = await log.record(newEvent());
    now = 4_000;
    const second = await log.record(newEvent());
    expect([first.id, first.time]).toEqual(['5000-0', new Date(5_000).toISOString()]);
    expect(second.id).toBe('5000-1');
  });
});
