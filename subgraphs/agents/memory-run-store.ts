/**
 * The run store in process memory, for a single process without Redis. Its cursors have the
 * Redis stream id shape (`<n>-0`), so they pass the same checks.
 */
import { EventEmitter } from 'node:events';
import type { AgentRunEventRecord, AgentRunRecord, StoredRunEvent } from './records.ts';
import { DEFAULT_RETENTION_SECONDS, RunFinishedError, checkCursor, type IdleCheck, type RunStore } from './run-store.ts';
import { followRun, type Doorbell, type Look } from './run-store-follow.ts';
import { listFrom, listsAfter, pageOf, positionOf, type ListPosition } from './run-store-list.ts';

const DEFAULT_MAX_RUNS = 10_000;

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

  follow(runId: string, after: string | undefined, signal: AbortSignal, idle?: IdleCheck) {
    const source = {
      look: async (cursor: string | undefined, count: number) => this.#look(runId, cursor, count),
      watch: async (bell: Doorbell) => {
        const bells = this.#bells.get(runId) ?? new Set();
        this.#bells.set(runId, bells.add(bell));
      },
      unwatch: async (bell: Doorbell) => {
        const bells = this.#bells.get(runId);
        if (bells?.delete(bell) && bells.size === 0) this.#bells.delete(runId);
      },
      closed: () => this.#closed,
    };
    return followRun(source, after, signal, idle);
  }

  async list(tenantId: string, first: number, after?: string) {
    const from = listFrom(first, after);
    const matching = [...this.#runs.keys()]
      .map((runId) => this.#find(runId))
      .filter((stored): stored is MemoryRun => stored?.run.tenantId === tenantId && (!from || listsAfter(stored.position, from)))
      .sort((a, b) => (listsAfter(a.position, b.position) ? 1 : -1));
    return pageOf(matching, first, (stored) => ({ run: structuredClone(stored.run), cursor: stored.cursor }));
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
