/**
 * The usage outbox: where a usage event goes when the usage stream cannot take it, so that an
 * answer served and charged for is always recorded. It wraps the stream's sink:
 *
 * - an event the stream refuses (Redis down, a failover, a timeout) is appended to a segment file
 *   in `dir` — JSON lines, one per event — and the call that emitted it is told it was kept;
 * - while the outbox holds anything, new events go to it too (in order, and without knocking on a
 *   Redis that is down for every event);
 * - every `retryMs` the oldest closed segment is delivered to the stream and deleted; a segment
 *   delivered in part is delivered again whole, which the usage aggregation's idempotency by event
 *   id makes exactly-once in the totals;
 * - at `maxEvents` it refuses new model calls (`refusal()`, a coded 503) rather than serve what it
 *   could not meter; events of calls already under way are still kept.
 *
 * Segments survive the process: a restarted one (or another process with the same `dir` and
 * stream) delivers what a process that is gone left behind. Segment names carry the owner's pid;
 * a process takes over segments whose owner is no longer running.
 *
 * Its file operations are synchronous, and only run while the stream is unreachable: an event is
 * in the kernel's hands when `emit` resolves, and no file operation waits behind libuv's thread
 * pool (in a Redis-outage test, an asynchronous append queued behind it never completed).
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Gauge, type Registry } from 'prom-client';
import { ErrorCode, codedError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { UsageEvent, UsageSink } from './usage-event.ts';
import { checkEvent } from './usage-stream.ts';

export interface OutboxSettings {
  /** This stream's folder (one per Redis stream: segments must reach the stream they were meant for). */
  dir: string;
  /** Held events at which new model calls are refused. */
  maxEvents: number;
  /** How often delivery is tried while the outbox holds events. */
  retryMs: number;
  /** Events per segment file. */
  segmentEvents?: number;
}

interface Segment {
  file: string;
  events: number;
  /** When its first event was kept (ms since the epoch). */
  since: number;
}

const SEGMENT = /^(\d+)-(\d+)-([0-9a-f-]+)\.jsonl$/;
/** Stream writes in flight at once while a segment is delivered (ioredis pipelines them). */
const DELIVERY_BATCH = 200;
/** How long a caller refused for a full outbox is told to wait. */
const FULL_RETRY_AFTER_MS = 5_000;

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class UsageOutbox implements UsageSink {
  readonly #stream: UsageSink;
  readonly #settings: Required<OutboxSettings>;
  readonly #log: Logger;
  /** Closed segments, oldest first, then the one being appended to (`#open`). */
  readonly #segments: Segment[] = [];
  #open: Segment | undefined;
  #held = 0;
  #delivering = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(stream: UsageSink, settings: OutboxSettings, log: Logger) {
    this.#stream = stream;
    this.#settings = { segmentEvents: 1_000, ...settings };
    this.#log = log;
    mkdirSync(settings.dir, { recursive: true });
    this.#adopt();
  }

  /** Events held, not yet in the stream. */
  get held(): number {
    return this.#held;
  }

  /** How long the oldest held event has waited, in ms (0 when none is held). */
  oldestAgeMs(now = Date.now()): number {
    const oldest = this.#segments[0];
    return oldest ? Math.max(0, now - oldest.since) : 0;
  }

  /** The refusal of a new model call while the outbox is full, or undefined. */
  refusal(): Error | undefined {
    if (this.#held < this.#settings.maxEvents) return undefined;
    return codedError(
      ErrorCode.SERVICE_UNAVAILABLE,
      'usage cannot be recorded right now (the usage stream is unreachable and the outbox is full); retry later',
      { retryAfterMs: FULL_RETRY_AFTER_MS, http: { status: 503, headers: { 'retry-after': String(FULL_RETRY_AFTER_MS / 1000) } } },
    );
  }

  async emit(event: UsageEvent): Promise<void> {
    checkEvent(event);
    if (this.#held === 0 && !this.#closed) {
      try {
        await this.#stream.emit(event);
        return;
      } catch (error) {
        this.#log.warn({ err: error }, 'the usage stream refused an event; it is kept in the outbox');
      }
    }
    this.#keep(event);
  }

  /** Gauges of what the outbox holds, on a server's registry. */
  registerMetrics(registry: Registry): void {
    const outbox = this;
    registry.registerMetric(
      new Gauge({
        name: 'modelgraph_usage_outbox_events',
        help: 'Usage events kept in the local outbox, not yet in the usage stream',
        registers: [],
        collect() {
          this.set(outbox.held);
        },
      }),
    );
    registry.registerMetric(
      new Gauge({
        name: 'modelgraph_usage_outbox_oldest_age_seconds',
        help: 'How long the oldest event in the usage outbox has waited',
        registers: [],
        collect() {
          this.set(outbox.oldestAgeMs() / 1000);
        },
      }),
    );
  }

  /** Delivers what it can now, then stops trying; what is held stays on disk for the next start. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    if (this.#held > 0) await this.deliver();
  }

  /**
   * Delivers held segments to the stream, oldest first, until one fails; the open segment is
   * closed first, so everything held so far is delivered. Resolves with how many are still held.
   */
  async deliver(): Promise<number> {
    if (this.#delivering) return this.#held;
    this.#delivering = true;
    try {
      this.#closeOpen();
      while (this.#segments.length > 0 && this.#segments[0] !== this.#open) {
        const segment = this.#segments[0]!;
        if (!(await this.#deliverSegment(segment))) break;
        this.#segments.shift();
        this.#held -= segment.events;
        try {
          rmSync(segment.file, { force: true });
        } catch (error) {
          this.#log.error({ err: error, file: segment.file }, 'cannot delete a delivered usage segment');
        }
      }
    } finally {
      this.#delivering = false;
    }
    if (this.#held === 0) this.#log.info('the usage outbox is delivered');
    return this.#held;
  }

  async #deliverSegment(segment: Segment): Promise<boolean> {
    const events: UsageEvent[] = [];
    let text: string;
    try {
      text = readFileSync(segment.file, 'utf8');
    } catch (error) {
      // Never written (its first append failed, and was reported then): nothing to deliver.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
      this.#log.error({ err: error, file: segment.file }, 'cannot read a usage segment; trying again later');
      return false;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        events.push(JSON.parse(line) as UsageEvent);
      } catch {
        // A line cut by a crash mid-write: its call's event is the one thing that may be lost.
        this.#log.error({ file: segment.file }, 'usage event lost: a segment line is not JSON');
      }
    }
    for (let start = 0; start < events.length; start += DELIVERY_BATCH) {
      const batch = events.slice(start, start + DELIVERY_BATCH);
      const results = await Promise.allSettled(batch.map((event) => this.#stream.emit(event)));
      const failed = results.find((result) => result.status === 'rejected');
      if (failed) {
        this.#log.warn({ err: (failed as PromiseRejectedResult).reason, held: this.#held }, 'the usage stream is still unreachable');
        return false;
      }
    }
    return true;
  }

  #keep(event: UsageEvent): void {
    const segment = this.#segmentForAppend();
    try {
      appendFileSync(segment.file, `${JSON.stringify(event)}\n`);
    } catch (error) {
      this.#log.error({ err: error, usageEvent: event }, 'usage event lost: the outbox cannot be written');
      throw error;
    }
    segment.events += 1;
    this.#held += 1;
    this.#schedule();
  }

  #segmentForAppend(): Segment {
    if (this.#open && this.#open.events < this.#settings.segmentEvents) return this.#open;
    this.#closeOpen();
    const now = Date.now();
    const segment = { file: join(this.#settings.dir, `${now}-${process.pid}-${randomUUID()}.jsonl`), events: 0, since: now };
    this.#segments.push(segment);
    this.#open = segment;
    return segment;
  }

  #closeOpen(): void {
    this.#open = undefined;
  }

  #schedule(): void {
    if (this.#timer || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.deliver().then((held) => {
        if (held > 0) this.#schedule();
      });
    }, this.#settings.retryMs);
    this.#timer.unref();
  }

  /** Takes the segments of this stream whose owner is gone (or is this process's pid, restarted). */
  #adopt(): void {
    const found: Segment[] = [];
    for (const name of readdirSync(this.#settings.dir).sort()) {
      const match = SEGMENT.exec(name);
      if (!match) continue;
      const pid = Number(match[2]);
      if (pid !== process.pid && isRunning(pid)) continue;
      const file = join(this.#settings.dir, `${match[1]}-${process.pid}-${match[3]}.jsonl`);
      try {
        if (file !== join(this.#settings.dir, name)) renameSync(join(this.#settings.dir, name), file);
      } catch {
        // Another process took it first.
        continue;
      }
      const events = readFileSync(file, 'utf8').split('\n').filter(Boolean).length;
      found.push({ file, events, since: Number(match[1]) });
    }
    for (const segment of found) {
      this.#segments.push(segment);
      this.#held += segment.events;
    }
    if (found.length > 0) {
      this.#log.warn({ segments: found.length }, 'usage events left in the outbox by an earlier process; delivering them');
      this.#schedule();
    }
  }
}
