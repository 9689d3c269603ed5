/**
 * The run store in Redis, so a run started by one process can be followed and cancelled through
 * any other.
 */
import { EventEmitter } from 'node:events';
import { duplicateRedis, onSubscriberGap, type RedisClient } from '../../platform/redis/client.ts';
import { agentKeys } from '../../platform/redis/keys.ts';
import { luaScript } from '../../platform/redis/scripts.ts';
import type { AgentRunEventRecord, AgentRunRecord, StoredRunEvent } from './records.ts';
import { DEFAULT_RETENTION_SECONDS, RunFinishedError, checkCursor, type IdleCheck, type RunSnapshot, type RunStore } from './run-store.ts';
import { followRun, type Doorbell, type Look } from './run-store-follow.ts';
import { listFrom, listsAfter, pageOf, positionOf, type ListPosition } from './run-store-list.ts';

const UNFINISHED_GRACE_MS = 24 * 60 * 60 * 1000;

/**
 * KEYS: state, events, lease. ARGV: event JSON, snapshot JSON ('' keeps the snapshot), '1' when
 * the event is RUN_FINISHED, retention ms, the run's channel, '1' to append only while no lease is
 * held. Returns the new cursor, -1 for an unknown run, -2 for a finished one, -3 when a lease is held.
 * The lease is left alone: it always carries its own (short) expiry.
 */
const APPEND = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return -2 end
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -3 end
local cursor = redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('PTTL', KEYS[2]) == -1 then redis.call('PEXPIRE', KEYS[2], ttl) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2], 'cursor', cursor) end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'finished', cursor)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], cursor)
return cursor`);

/** KEYS: state. ARGV: reason, cancellations channel, run id. Records the first reason and announces every request. */
const REQUEST_CANCEL = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return 0 end
redis.call('HSETNX', KEYS[1], 'cancel', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`);

type ExecReplies = [error: Error | null, result: unknown][] | null;

function resultsOf(replies: ExecReplies): unknown[] {
  if (!replies) throw new Error('Redis discarded the transaction');
  return replies.map(([error, result]) => {
    if (error) throw error;
    return result;
  });
}

function eventsOf(entries: [id: string, fields: string[]][]): StoredRunEvent[] {
  return entries.map(([cursor, fields]) => ({ cursor, event: JSON.parse(fields[1] ?? 'null') as AgentRunEventRecord }));
}

/** Followers of one run's channel in this process; the channel is subscribed while there are any. */
interface Watch {
  bells: Set<Doorbell>;
  subscribed: Promise<unknown>;
}

/**
 * Runs in Redis (see `agentKeys`): a state hash, an event stream whose entry ids are the cursors,
 * and a lease, all under the run's hash tag; a sorted set per tenant indexes runs by creation time.
 * One subscriber connection per store carries every follow's run channel and the cancellations.
 */
export class RedisRunStore implements RunStore {
  readonly #redis: RedisClient;
  readonly #keys: ReturnType<typeof agentKeys>;
  readonly #retentionMs: number;
  readonly #watches = new Map<string, Watch>();
  readonly #cancels = new EventEmitter();
  /** Runs whose lease this process holds: their cancellations are re-announced after a reconnect. */
  readonly #held = new Set<string>();
  #feed: RedisClient | undefined;
  #cancelsSubscribed: Promise<void> | undefined;
  #closed = false;

  constructor(redis: RedisClient, keyPrefix: string, { retentionSeconds = DEFAULT_RETENTION_SECONDS }: { retentionSeconds?: number } = {}) {
    this.#redis = redis;
    this.#keys = agentKeys(keyPrefix);
    this.#retentionMs = retentionSeconds * 1000;
  }

  async create(run: AgentRunRecord) {
    const { createdMs } = positionOf(run);
    const key = this.#keys.run(run.id);
    const created = await this.#redis.hsetnx(key, 'state', JSON.stringify(run));
    if (created === 0) throw new Error(`Run ${run.id} exists already`);
    // A run that never finishes (its replica died and nobody looked) still goes, after its wall
    // time, a day of waiting in a queue and the retention; finishing shortens this to the retention.
    await this.#redis.pexpire(key, this.#retentionMs + run.agent.maxWallTimeSeconds * 1000 + UNFINISHED_GRACE_MS);
    // Another slot, so not in the same step; a run is stored before it is listed.
    await this.#redis.zadd(this.#keys.tenantRuns(run.tenantId), createdMs, run.id);
  }

  async get(runId: string) {
    const [state, cursor] = await this.#redis.hmget(this.#keys.run(runId), 'state', 'cursor');
    if (!state) return undefined;
    return { run: JSON.parse(state) as AgentRunRecord, cursor: cursor ?? null };
  }

  async append(runId: string, event: AgentRunEventRecord, snapshot?: AgentRunRecord) {
    const outcome = await this.#append(runId, event, snapshot, false);
    if (outcome === -1) throw new Error(`No run ${runId}`);
    if (outcome === -2) throw new RunFinishedError(runId);
    return String(outcome);
  }

  async read(runId: string, after: string | undefined, count: number) {
    checkCursor(after);
    return (await this.#look(runId, after, count)).events;
  }

  follow(runId: string, after: string | undefined, signal: AbortSignal, idle?: IdleCheck) {
    const channel = this.#keys.runChannel(runId);
    const source = {
      look: (cursor: string | undefined, count: number) => this.#look(runId, cursor, count),
      watch: (bell: Doorbell) => this.#watch(channel, bell),
      unwatch: (bell: Doorbell) => this.#unwatch(channel, bell),
      closed: () => this.#closed,
    };
    return followRun(source, after, signal, idle);
  }

  async list(tenantId: string, first: number, after?: string) {
    let from = listFrom(first, after);
    const index = this.#keys.tenantRuns(tenantId);
    const found: { snapshot: RunSnapshot; position: ListPosition }[] = [];
    // One run more than asked tells whether there is a next page.
    while (found.length <= first) {
      const wanted = first + 1 - found.length;
      const entries = await this.#indexAfter(index, from, wanted);
      const states = await this.#states(entries.map((entry) => entry.runId));
      const expired = entries.filter((_, at) => !states[at]).map((entry) => entry.runId);
      if (expired.length > 0) await this.#redis.zrem(index, ...expired);
      entries.forEach((position, at) => {
        const snapshot = states[at];
        if (snapshot) found.push({ snapshot, position });
      });
      if (entries.length < wanted) break;
      from = entries.at(-1);
    }
    return pageOf(found, first, (entry) => entry.snapshot);
  }

  async requestCancel(runId: string, reason: string) {
    await REQUEST_CANCEL.run(this.#redis, 1, this.#keys.run(runId), reason, this.#keys.cancellations(), runId);
  }

  async cancelRequested(runId: string) {
    return (await this.#redis.hget(this.#keys.run(runId), 'cancel')) ?? undefined;
  }

  onCancelRequested(listener: (runId: string) => void) {
    void this.listening();
    this.#cancels.on('cancel', listener);
    return () => void this.#cancels.off('cancel', listener);
  }

  listening() {
    if (this.#closed) return Promise.resolve();
    this.#cancelsSubscribed ??= this.#subscriber()
      .subscribe(this.#keys.cancellations())
      .then(
        () => undefined,
        () => undefined,
      );
    return this.#cancelsSubscribed;
  }

  async holdLease(runId: string, ttlMs: number) {
    this.#held.add(runId);
    await this.#redis.set(this.#keys.runLease(runId), '1', 'PX', ttlMs);
  }

  async releaseLease(runId: string) {
    this.#held.delete(runId);
    await this.#redis.del(this.#keys.runLease(runId));
  }

  async finishIfAbandoned(runId: string, event: AgentRunEventRecord, snapshot: AgentRunRecord) {
    return typeof (await this.#append(runId, event, snapshot, true)) === 'string';
  }

  async close() {
    this.#closed = true;
    for (const watch of this.#watches.values()) for (const bell of watch.bells) bell.ring();
    this.#cancels.removeAllListeners();
    this.#feed?.disconnect();
  }

  #append(runId: string, event: AgentRunEventRecord, snapshot: AgentRunRecord | undefined, onlyIfAbandoned: boolean) {
    const k = this.#keys;
    return APPEND.run(
      this.#redis,
      3,
      k.run(runId),
      k.runEvents(runId),
      k.runLease(runId),
      JSON.stringify(event),
      snapshot ? JSON.stringify(snapshot) : '',
      event.type === 'RUN_FINISHED' ? '1' : '0',
      this.#retentionMs,
      k.runChannel(runId),
      onlyIfAbandoned ? '1' : '0',
    );
  }

  /** Events after `after` and whether the run can have more, in one transaction (the keys share a slot). */
  async #look(runId: string, after: string | undefined, count: number): Promise<Look> {
    if (count <= 0) return { events: [], open: true };
    const state = this.#keys.run(runId);
    const [entries, finished, exists] = resultsOf(
      await this.#redis
        .multi()
        .xrange(this.#keys.runEvents(runId), after === undefined ? '-' : `(${after}`, '+', 'COUNT', count)
        .hexists(state, 'finished')
        .exists(state)
        .exec(),
    );
    return { events: eventsOf(entries as [string, string[]][]), open: exists === 1 && finished === 0 };
  }

  /**
   * Up to `count` index entries listed after `from`. Keyset paging (not offsets), so runs added or
   * dropped meanwhile shift nothing; runs created in `from`'s millisecond are skipped by id, and the
   * read widens in the rare case that those fill it.
   */
  async #indexAfter(index: string, from: ListPosition | undefined, count: number): Promise<ListPosition[]> {
    for (let limit = count + 8; ; limit *= 2) {
      const reply = await this.#redis.zrevrangebyscore(index, from ? from.createdMs : '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, limit);
      const entries: ListPosition[] = [];
      for (let at = 0; at + 1 < reply.length; at += 2) entries.push({ runId: reply[at]!, createdMs: Number(reply[at + 1]) });
      const after = from ? entries.filter((entry) => listsAfter(entry, from)) : entries;
      if (after.length >= count || entries.length < limit) return after.slice(0, count);
    }
  }

  /** The snapshots of these runs, each with its cursor (undefined for a run gone). */
  async #states(runIds: string[]): Promise<(RunSnapshot | undefined)[]> {
    if (runIds.length === 0) return [];
    // Each run has its own hash tag, so on a Cluster these live on several nodes: not one explicit
    // pipeline (which must stay in one slot) but commands issued together, which auto-pipelining
    // sends in one write per node.
    const states = await Promise.all(runIds.map((runId) => this.#redis.hmget(this.#keys.run(runId), 'state', 'cursor')));
    return states.map(([state, cursor]) => (state ? { run: JSON.parse(state) as AgentRunRecord, cursor: cursor ?? null } : undefined));
  }

  async #watch(channel: string, bell: Doorbell) {
    let watch = this.#watches.get(channel);
    if (!watch) {
      watch = { bells: new Set(), subscribed: this.#subscriber().subscribe(channel) };
      this.#watches.set(channel, watch);
    }
    watch.bells.add(bell);
    await watch.subscribed;
  }

  /** The last local follower of a channel unsubscribes it (commands on one connection keep their order, so a new SUBSCRIBE after it wins). */
  async #unwatch(channel: string, bell: Doorbell) {
    const watch = this.#watches.get(channel);
    if (!watch?.bells.delete(bell) || watch.bells.size > 0) return;
    this.#watches.delete(channel);
    watch.subscribed.catch(() => undefined);
    if (!this.#closed)
      await this.#subscriber()
        .unsubscribe(channel)
        .catch(() => undefined);
  }

  #subscriber(): RedisClient {
    if (this.#feed) return this.#feed;
    // A subscribed connection can do nothing else. It queues SUBSCRIBEs until connected and
    // re-subscribes after a reconnect (ioredis does both).
    const feed = duplicateRedis(this.#redis);
    feed.on('error', () => undefined);
    feed.on('message', (channel: string, message: string) => this.#delivered(channel, message));
    // ioredis re-subscribes right after emitting 'ready'; wait for that before catching up.
    onSubscriberGap(feed, () => queueMicrotask(() => void this.#reconnected(feed)));
    this.#feed = feed;
    return feed;
  }

  #delivered(channel: string, message: string) {
    if (channel === this.#keys.cancellations()) this.#cancels.emit('cancel', message);
    else for (const bell of this.#watches.get(channel)?.bells ?? []) bell.ring();
  }

  /**
   * Messages published while the feed was down are lost. Once the re-subscription is answered (a
   * PING behind it), every follower reads again and held runs' cancellations are announced again.
   */
  async #reconnected(feed: RedisClient) {
    try {
      await feed.ping();
    } catch {
      return; // down again: the next 'ready' catches up
    }
    if (this.#closed) return;
    for (const watch of this.#watches.values()) for (const bell of watch.bells) bell.ring();
    if (this.#cancels.listenerCount('cancel') === 0) return;
    for (const runId of this.#held) {
      if ((await this.cancelRequested(runId).catch(() => undefined)) !== undefined) this.#cancels.emit('cancel', runId);
    }
  }
}
