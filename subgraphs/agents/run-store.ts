/**
 * Agent runs: each run is a snapshot (its latest `AgentRunRecord`) plus an ordered stream of
 * events that followers can resume from any cursor. This module is the store's contract; it is
 * kept in Redis when configured (redis-run-store.ts), else in process memory (memory-run-store.ts).
 * Both implementations pass one contract suite (run-store.test.ts).
 *
 * A cursor is a Redis stream entry id (`<ms>-<seq>`); the memory store uses the same shape.
 */
import type { AgentRunEventRecord, AgentRunRecord, StoredRunEvent } from './records.ts';
import { decodePosition } from './run-store-list.ts';

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

export const DEFAULT_RETENTION_SECONDS = 7 * 24 * 60 * 60;

export function checkCursor(after: string | undefined) {
  if (after !== undefined && !isCursor(after)) throw new Error(`Not a run event cursor: ${after}`);
}
