/**
 * Agent runs: each run is a snapshot (its latest `AgentRunRecord`) plus an ordered stream of
 * events that followers can resume from any cursor. In Redis when configured, so a run started by
 * one process can be followed and cancelled through any other; else in process memory. Both
 * implementations pass one contract suite (run-store.test.ts).
 *
 * A cursor is a Redis stream entry id (`<ms>-<seq>`); the memory store uses the same shape.
 */
import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { agentKeys } from '../../platform/redis/keys.ts';
import type { AgentRunEventRecord, AgentRunRecord, StoredRunEvent } from './records.ts';

/** A run's latest snapshot and the cursor of the last event it reflects (null: none yet). */
export interface RunSnapshot {
  run: AgentRunRecord;
  cursor: string | null;
}

export interface RunPage {
  runs: RunSnapshot[];
  /** Pass as `after` for the next page; absent on the last page. */
  next?: string;
}

/** Called while a follower waits in vain, e.g. to finish a run whose process stopped. */
export interface IdleCheck {
  everyMs: number;
  check: () => Promise<void>;
}

export interface RunStore {
  /** Stores a new run and indexes it under its tenant (newest first in `list`). Throws if the id is taken. */
  create(run: AgentRunRecord): Promise<void>;
  /** The run's latest snapshot and the cursor of the last event that snapshot reflects (null: none yet). undefined when unknown/expired. */
  get(runId: string): Promise<RunSnapshot | undefined>;
  /**
   * Appends an event and, when `snapshot` is given, replaces the snapshot and sets its cursor to the
   * new event's, in one atomic step, then notifies followers. After a RUN_FINISHED event the run's
   * keys expire after the retention. Throws RunFinishedError if the run already has its RUN_FINISHED
   * event (nothing follows the end), and an Error if the run does not exist. Returns the new cursor.
   */
  append(runId: string, event: AgentRunEventRecord, snapshot?: AgentRunRecord): Promise<string>;
  /** Events after `after` (exclusive; undefined: from the start), oldest first, at most `count`. */
  read(runId: string, after: string | undefined, count: number): Promise<StoredRunEvent[]>;
  /**
   * Every event after `after`, then each new one as any process appends it. Ends after yielding
   * RUN_FINISHED, at once (yielding nothing) when `after` is at or past it or the run is unknown,
   * and quietly when `signal` aborts or the store closes. Never yields an event twice, never skips one.
   * `idle`: after `everyMs` without a new event, awaits `check()` (which may append a RUN_FINISHED,
   * then yielded like any event; its rejection ends the follow with that error) and reads again, a
   * safety net for a missed notification. Default: every 5 s, no check.
   */
  follow(runId: string, after: string | undefined, signal: AbortSignal, idle?: IdleCheck): AsyncIterable<StoredRunEvent>;
  /** The tenant's runs, newest first (expired ones skipped and dropped from the index lazily). `after` is an opaque cursor from `next`. */
  list(tenantId: string, first: number, after?: string): Promise<RunPage>;
  /** Records a cancellation request (the first reason wins; no-op on a finished or unknown run) and tells every process. */
  requestCancel(runId: string, reason: string): Promise<void>;
  /** The reason of a requested cancellation, if any. */
  cancelRequested(runId: string): Promise<string | undefined>;
  /**
   * Calls `listener` with each run id whose cancellation is requested, by this or any other process;
   * a run may be reported more than once (each request, and again after a reconnect for runs whose
   * lease this process holds). Returns an unsubscribe.
   */
  onCancelRequested(listener: (runId: string) => void): () => void;
  /** Resolves once this process receives other processes' cancellation requests (the subscription is active). */
  listening(): Promise<void>;
  /** Marks the run as held by a live process for `ttlMs`; renew before it lapses. */
  holdLease(runId: string, ttlMs: number): Promise<void>;
  releaseLease(runId: string): Promise<void>;
  /**
   * When the run is not finished and nobody holds its lease (the process running it stopped),
   * appends `event` (a RUN_FINISHED) with `snapshot` atomically and returns true; otherwise false.
   */
  finishIfAbandoned(runId: string, event: AgentRunEventRecord, snapshot: AgentRunRecord): Promise<boolean>;
  /** Ends active follows (they return) and releases connections and listeners. */
  close(): Promise<void>;
}

/** `append` on a run whose stream already ended with RUN_FINISHED. */
export class RunFinishedError extends Error {
  override name = 'RunFinishedError';
  readonly runId: string;

  constructor(runId: string) {
    super(`Run ${runId} has finished: nothing follows its end`);
    this.runId = runId;
  }
}

const MAX_STREAM_ID_PART = 2n ** 64n - 1n;

/** A Redis stream id (`<ms>-<seq>`, each part within 64 bits), as every cursor is. */
export function isCursor(value: string): boolean {
  if (!/^\d{1,20}-\d{1,20}$/.test(value)) return false;
  return value.split('-').every((part) => BigInt(part) <= MAX_STREAM_ID_PART);
}

/** True for a `next` cursor of `list`. */
export function isListCursor(value: string): boolean {
  try {
    decodePosition(value);
    return true;
  } catch {
    return false;
  }
}

const DEFAULT_RETENTION_SECONDS = 7 * 24 * 60 * 60;
const UNFINISHED_GRACE_MS = 24 * 60 * 60 * 1000;
const DEFAULT_MAX_RUNS = 10_000;
const DEFAULT_IDLE: IdleCheck = { everyMs: 5_000, check: async () => undefined };
/** Events read at a time while a follower catches up. */
const PAGE = 200;

function checkCursor(after: string | undefined) {
  if (after !== undefined && !isCursor(after)) throw new Error(`Not a run event cursor: ${after}`);
}

function compareCursors(a: string, b: string): number {
  const [aMs, aSeq] = cursorParts(a);
  const [bMs, bSeq] = cursorParts(b);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  if (aSeq !== bSeq) return aSeq < bSeq ? -1 : 1;
  return 0;
}

function cursorParts(cursor: string): [bigint, bigint] {
  const dash = cursor.indexOf('-');
  return [BigInt(cursor.slice(0, dash)), BigInt(cursor.slice(dash + 1))];
}

/**
 * A run's place in its tenant's list. The list is newest first, and runs created in the same
 * millisecond by id descending, which is how Redis orders equal scores in reverse.
 */
interface ListPosition {
  createdMs: number;
  runId: string;
}

function positionOf(run: AgentRunRecord): ListPosition {
  const createdMs = Date.parse(run.createdAt);
  if (Number.isNaN(createdMs)) throw new Error(`Run ${run.id} has an invalid createdAt: ${run.createdAt}`);
  return { createdMs, runId: run.id };
}

function listsAfter(entry: ListPosition, position: ListPosition): boolean {
  return entry.createdMs < position.createdMs || (entry.createdMs === position.createdMs && entry.runId < position.runId);
}

function encodePosition({ createdMs, runId }: ListPosition): string {
  return Buffer.from(JSON.stringify([createdMs, runId])).toString('base64url');
}

function decodePosition(cursor: string): ListPosition {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString());
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'number' || typeof value[1] !== 'string') {
    throw new Error(`Not a run list cursor: ${cursor}`);
  }
  return { createdMs: value[0], runId: value[1] };
}

function checkFirst(first: number) {
  if (!Number.isInteger(first) || first < 1) throw new RangeError(`A page holds at least one run (first: ${first})`);
}

/**
 * A follower's doorbell: rung on each new event, on abort and on close. A ring that comes while
 * the follower is reading (not waiting) is remembered, so the next wait returns at once.
 */
class Doorbell {
  #rung = false;
  #answer: (() => void) | undefined;

  readonly ring = () => {
    this.#rung = true;
    this.#answer?.();
  };

  /** Forgets earlier rings; call before reading, so only rings during or after the read count. */
  reset() {
    this.#rung = false;
  }

  /** true when rung (at once if it rang since `reset`), false after `ms` without a ring. */
  wait(ms: number): Promise<boolean> {
    if (this.#rung) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#answer = undefined;
        resolve(false);
      }, ms);
      this.#answer = () => {
        clearTimeout(timer);
        this.#answer = undefined;
        resolve(true);
      };
    });
  }
}

/** One consistent look at a run: events after a cursor, and whether more can come (false: finished or unknown). */
interface Look {
  events: StoredRunEvent[];
  open: boolean;
}

interface FollowSource {
  look(after: string | undefined, count: number): Promise<Look>;
  bell: Doorbell;
  closed(): boolean;
}

/**
 * The follow loop both stores share. The bell is reset before each read and the source's look is
 * atomic, so an event appended after a read rings the bell and one appended before it is read:
 * none is missed, and the cursor only moves forward, so none is yielded twice.
 */
async function* followRun(
  source: FollowSource,
  after: string | undefined,
  signal: AbortSignal,
  idle: IdleCheck,
): AsyncGenerator<StoredRunEvent> {
  const stopped = () => signal.aborted || source.closed();
  let cursor = after;
  while (!stopped()) {
    source.bell.reset();
    const { events, open } = await source.look(cursor, PAGE);
    for (const stored of events) {
      if (stopped()) return;
      yield stored;
      cursor = stored.cursor;
      if (stored.event.type === 'RUN_FINISHED') return;
    }
    if (events.length === PAGE) continue;
    // Everything there was is read and it held no end: a closed run ended at or before `after`.
    if (!open) return;
    const rung = await source.bell.wait(idle.everyMs);
    if (!rung && !stopped()) await idle.check();
  }
}

/** Rings `bell` when `signal` aborts; returns the detach. */
function ringOnAbort(signal: AbortSignal, bell: Doorbell): () => void {
  signal.addEventListener('abort', bell.ring, { once: true });
  return () => signal.removeEventListener('abort', bell.ring);
}

interface MemoryRun {
  run: AgentRunRecord;
  cursor: string | null;
  position: ListPosition;
  events: StoredRunEvent[];
  finished: boolean;
  cancel: string | undefined;
  expiresAt: number;
}

/** Runs in this process only. Finished runs are dropped after the retention (lazily, when next touched). */
export class MemoryRunStore implements RunStore {
  readonly #runs = new Map<string, MemoryRun>();
  readonly #bells = new Map<string, Set<Doorbell>>();
  readonly #cancels = new EventEmitter();
  /** Run id → when its lease lapses; kept apart from the runs, as in Redis, so a lease may come before its run. */
  readonly #leases = new Map<string, number>();
  readonly #retentionMs: number;
  readonly #maxRuns: number;
  #closed = false;

  constructor({
    retentionSeconds = DEFAULT_RETENTION_SECONDS,
    maxRuns = DEFAULT_MAX_RUNS,
  }: { retentionSeconds?: number; maxRuns?: number } = {}) {
    this.#retentionMs = retentionSeconds * 1000;
    this.#maxRuns = maxRuns;
  }

  async create(run: AgentRunRecord) {
    if (this.#find(run.id)) throw new Error(`Run ${run.id} exists already`);
    const position = positionOf(run);
    this.#runs.set(run.id, {
      run: structuredClone(run),
      cursor: null,
      position,
      events: [],
      finished: false,
      cancel: undefined,
      expiresAt: Infinity,
    });
    this.#bound();
  }

  async get(runId: string) {
    const stored = this.#find(runId);
    return stored && { run: structuredClone(stored.run), cursor: stored.cursor };
  }

  async append(runId: string, event: AgentRunEventRecord, snapshot?: AgentRunRecord) {
    const stored = this.#find(runId);
    if (!stored) throw new Error(`No run ${runId}`);
    if (stored.finished) throw new RunFinishedError(runId);
    return this.#append(runId, stored, event, snapshot);
  }

  async read(runId: string, after: string | undefined, count: number) {
    checkCursor(after);
    return this.#look(runId, after, count).events;
  }

  async *follow(runId: string, after: string | undefined, signal: AbortSignal, idle: IdleCheck = DEFAULT_IDLE) {
    checkCursor(after);
    const bell = new Doorbell();
    const bells = this.#bells.get(runId) ?? new Set();
    this.#bells.set(runId, bells.add(bell));
    const detach = ringOnAbort(signal, bell);
    try {
      const source = {
        look: async (cursor: string | undefined, count: number) => this.#look(runId, cursor, count),
        bell,
        closed: () => this.#closed,
      };
      yield* followRun(source, after, signal, idle);
    } finally {
      detach();
      bells.delete(bell);
      if (bells.size === 0 && this.#bells.get(runId) === bells) this.#bells.delete(runId);
    }
  }

  async list(tenantId: string, first: number, after?: string) {
    checkFirst(first);
    const from = after === undefined ? undefined : decodePosition(after);
    const matching = [...this.#runs.keys()]
      .map((runId) => this.#find(runId))
      .filter((stored): stored is MemoryRun => stored?.run.tenantId === tenantId && (!from || listsAfter(stored.position, from)))
      .sort((a, b) => (listsAfter(a.position, b.position) ? 1 : -1));
    const page = matching.slice(0, first);
    const last = page.at(-1);
    const runs = page.map((stored) => ({ run: structuredClone(stored.run), cursor: stored.cursor }));
    return matching.length > first && last ? { runs, next: encodePosition(last.position) } : { runs };
  }

  async requestCancel(runId: string, reason: string) {
    const stored = this.#find(runId);
    if (!stored || stored.finished) return;
    stored.cancel ??= reason;
    this.#cancels.emit('cancel', runId);
  }

  async cancelRequested(runId: string) {
    return this.#find(runId)?.cancel;
  }

  onCancelRequested(listener: (runId: string) => void) {
    this.#cancels.on('cancel', listener);
    return () => void this.#cancels.off('cancel', listener);
  }

  async listening() {}

  async holdLease(runId: string, ttlMs: number) {
    this.#leases.set(runId, Date.now() + ttlMs);
  }

  async releaseLease(runId: string) {
    this.#leases.delete(runId);
  }

  async finishIfAbandoned(runId: string, event: AgentRunEventRecord, snapshot: AgentRunRecord) {
    const stored = this.#find(runId);
    if (!stored || stored.finished || (this.#leases.get(runId) ?? 0) > Date.now()) return false;
    this.#leases.delete(runId);
    this.#append(runId, stored, event, snapshot);
    return true;
  }

  async close() {
    this.#closed = true;
    for (const runId of this.#bells.keys()) this.#ring(runId);
    this.#cancels.removeAllListeners();
  }

  #append(runId: string, stored: MemoryRun, event: AgentRunEventRecord, snapshot: AgentRunRecord | undefined) {
    const cursor = `${stored.events.length + 1}-0`;
    stored.events.push({ cursor, event: structuredClone(event) });
    if (snapshot) {
      stored.run = structuredClone(snapshot);
      stored.cursor = cursor;
    }
    if (event.type === 'RUN_FINISHED') {
      stored.finished = true;
      stored.expiresAt = Date.now() + this.#retentionMs;
    }
    this.#ring(runId);
    return cursor;
  }

  #look(runId: string, after: string | undefined, count: number): Look {
    const stored = this.#find(runId);
    if (!stored) return { events: [], open: false };
    const start = after === undefined ? 0 : stored.events.findIndex((event) => compareCursors(event.cursor, after) > 0);
    const events = start === -1 ? [] : stored.events.slice(start, start + Math.max(count, 0));
    return { events: structuredClone(events), open: !stored.finished };
  }

  /** The run, unless it is unknown or its retention lapsed (then it is dropped). */
  #find(runId: string): MemoryRun | undefined {
    const stored = this.#runs.get(runId);
    if (stored && stored.expiresAt <= Date.now()) {
      this.#drop(runId);
      return undefined;
    }
    return stored;
  }

  /** Keeps at most `maxRuns`, dropping the oldest finished run first, else the oldest. */
  #bound() {
    while (this.#runs.size > this.#maxRuns) {
      let victim: string | undefined;
      for (const [runId, stored] of this.#runs) {
        if (stored.finished) {
          victim = runId;
          break;
        }
      }
      victim ??= this.#runs.keys().next().value;
      if (victim === undefined) return;
      this.#drop(victim);
    }
  }

  #drop(runId: string) {
    this.#runs.delete(runId);
    this.#ring(runId); // its followers find it gone and end
  }

  #ring(runId: string) {
    for (const bell of this.#bells.get(runId) ?? []) bell.ring();
  }
}

/**
 * KEYS: state, events, lease. ARGV: event JSON, snapshot JSON ('' keeps the snapshot), '1' when
 * the event is RUN_FINISHED, retention ms, the run's channel, '1' to append only while no lease is
 * held. Returns the new cursor, -1 for an unknown run, -2 for a finished one, -3 when a lease is held.
 * The lease is left alone: it always carries its own (short) expiry.
 */
const APPEND = `
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
return cursor`;

/** KEYS: state. ARGV: reason, cancellations channel, run id. Records the first reason and announces every request. */
const REQUEST_CANCEL = `
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished') == 1 then return 0 end
redis.call('HSETNX', KEYS[1], 'cancel', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

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
  readonly #redis: Redis;
  readonly #keys: ReturnType<typeof agentKeys>;
  readonly #retentionMs: number;
  readonly #watches = new Map<string, Watch>();
  readonly #cancels = new EventEmitter();
  /** Runs whose lease this process holds: their cancellations are re-announced after a reconnect. */
  readonly #held = new Set<string>();
  #feed: Redis | undefined;
  #cancelsSubscribed: Promise<void> | undefined;
  #closed = false;

  constructor(redis: Redis, keyPrefix: string, { retentionSeconds = DEFAULT_RETENTION_SECONDS }: { retentionSeconds?: number } = {}) {
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

  async *follow(runId: string, after: string | undefined, signal: AbortSignal, idle: IdleCheck = DEFAULT_IDLE) {
    checkCursor(after);
    if (this.#closed || signal.aborted) return;
    const channel = this.#keys.runChannel(runId);
    const bell = new Doorbell();
    const detach = ringOnAbort(signal, bell);
    try {
      // Subscribed before the first read: whatever is appended after that read rings the bell.
      try {
        await this.#watch(channel, bell);
      } catch (error) {
        if (this.#closed) return;
        throw error;
      }
      const source = {
        look: (cursor: string | undefined, count: number) => this.#look(runId, cursor, count),
        bell,
        closed: () => this.#closed,
      };
      yield* followRun(source, after, signal, idle);
    } finally {
      detach();
      await this.#unwatch(channel, bell);
    }
  }

  async list(tenantId: string, first: number, after?: string) {
    checkFirst(first);
    const index = this.#keys.tenantRuns(tenantId);
    const found: { snapshot: RunSnapshot; position: ListPosition }[] = [];
    let from = after === undefined ? undefined : decodePosition(after);
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
    const page = found.slice(0, first);
    const last = page.at(-1);
    const runs = page.map((entry) => entry.snapshot);
    return found.length > first && last ? { runs, next: encodePosition(last.position) } : { runs };
  }

  async requestCancel(runId: string, reason: string) {
    await this.#redis.eval(REQUEST_CANCEL, 1, this.#keys.run(runId), reason, this.#keys.cancellations(), runId);
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
    return this.#redis.eval(
      APPEND,
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
    const pipeline = this.#redis.pipeline();
    for (const runId of runIds) pipeline.hmget(this.#keys.run(runId), 'state', 'cursor');
    return (resultsOf(await pipeline.exec()) as [string | null, string | null][]).map(([state, cursor]) =>
      state ? { run: JSON.parse(state) as AgentRunRecord, cursor } : undefined,
    );
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

  #subscriber(): Redis {
    if (this.#feed) return this.#feed;
    // A subscribed connection can do nothing else. It queues SUBSCRIBEs until connected and
    // re-subscribes after a reconnect (ioredis does both).
    const feed = this.#redis.duplicate({ enableOfflineQueue: true });
    feed.on('error', () => undefined);
    feed.on('message', (channel: string, message: string) => this.#delivered(channel, message));
    let connectedBefore = false;
    feed.on('ready', () => {
      // ioredis re-subscribes right after emitting 'ready'; wait for that before catching up.
      if (connectedBefore) queueMicrotask(() => void this.#reconnected(feed));
      connectedBefore = true;
    });
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
  async #reconnected(feed: Redis) {
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
