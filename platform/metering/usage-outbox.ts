/**
 * The usage outbox: where a usage event goes when the usage stream cannot take it, so that an
 * answer served and charged for is always recorded. It wraps the stream's sink:
 *
 * - an event the stream refuses or does not answer within `STREAM_TIMEOUT_MS` (Redis down, a
 *   failover, a hung connection) is appended to a segment file in `dir` — JSON lines, one per
 *   event — and the call that emitted it is told it was kept;
 * - from then until a delivery succeeds, new events go to the outbox too, without knocking on a
 *   Redis that is down for each of them; once one does, they go to the stream again;
 * - every `retryMs` the held segments are delivered, oldest first, and deleted; a segment
 *   delivered in part is delivered again whole, which the usage aggregation's idempotency by event
 *   id (for 8 days) makes exactly-once in the totals; a line that is not a valid event is dropped
 *   (logged), so one bad segment cannot hold back the rest;
 * - at `maxEvents`, or while the outbox cannot be written, it refuses new model calls
 *   (`refusal()`, a coded 503) rather than serve what it could not meter.
 *
 * Segments survive the process: a restarted one, or another process with the same `dir` (one per
 * Redis stream), delivers what a stopped one left. Each outbox names its segments with an instance
 * id and touches `<instance>.owner` while it runs; segments whose owner file is gone or stale are
 * taken over by rename. The folder and files are private to the user (0700, 0600).
 *
 * Its file operations are synchronous, and only run while the stream is unreachable: an event is
 * in the kernel's hands when `emit` resolves, and no file operation waits behind libuv's thread
 * pool (in a Redis-outage test, an asynchronous append queued behind it never completed).
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

/** `<ms of its first event>-<owner instance>-<uuid>.jsonl`. */
const SEGMENT = /^(\d+)-([0-9a-f]{16})-([0-9a-f-]+)\.jsonl$/;
/** How long a stream write may take before its event is kept instead (a late success is deduped). */
const STREAM_TIMEOUT_MS = 2_000;
/** How often an outbox touches its owner file, and when another takes its segments over. */
const OWNER_TOUCH_MS = 10_000;
const OWNER_STALE_MS = 60_000;
/** Stream writes in flight at once while a segment is delivered (ioredis pipelines them). */
const DELIVERY_BATCH = 200;
/** How long a caller refused for a full outbox is told to wait. */
const FULL_RETRY_AFTER_MS = 5_000;

/** The stream's write, or a rejection once it has taken `ms` (its late success is harmless). */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the usage stream did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
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
  /** Set when the stream failed an event; cleared when a delivery succeeds. */
  #streamDown = false;
  /** Set when an append failed; cleared by the next one that does not. */
  #writeFailed = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #touching: NodeJS.Timeout;
  #closed = false;
  readonly #instance = randomUUID().replaceAll('-', '').slice(0, 16);

  constructor(stream: UsageSink, settings: OutboxSettings, log: Logger) {
    this.#stream = stream;
    this.#settings = { segmentEvents: 1_000, ...settings };
    this.#log = log;
    mkdirSync(settings.dir, { recursive: true, mode: 0o700 });
    this.#touch();
    this.#touching = setInterval(() => this.#touch(), OWNER_TOUCH_MS);
    this.#touching.unref();
    this.#adopt();
  }

  get #ownerFile(): string {
    return join(this.#settings.dir, `${this.#instance}.owner`);
  }

  #touch(): void {
    try {
      writeFileSync(this.#ownerFile, String(process.pid), { mode: 0o600 });
    } catch (error) {
      this.#log.error({ err: error, dir: this.#settings.dir }, 'cannot write the usage outbox owner file');
    }
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
    if (this.#held < this.#settings.maxEvents && !this.#writeFailed) return undefined;
    return codedError(
      ErrorCode.SERVICE_UNAVAILABLE,
      this.#writeFailed
        ? 'usage cannot be recorded right now (the usage stream is unreachable and the outbox cannot be written); retry later'
        : 'usage cannot be recorded right now (the usage stream is unreachable and the outbox is full); retry later',
      { retryAfterMs: FULL_RETRY_AFTER_MS, http: { status: 503, headers: { 'retry-after': String(FULL_RETRY_AFTER_MS / 1000) } } },
    );
  }

  async emit(event: UsageEvent): Promise<void> {
    checkEvent(event);
    if (!this.#streamDown && !this.#closed) {
      try {
        await within(this.#stream.emit(event), STREAM_TIMEOUT_MS);
        return;
      } catch (error) {
        if (!this.#streamDown) this.#log.warn({ err: error }, 'the usage stream failed an event; events are kept in the outbox');
        this.#streamDown = true;
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
    clearInterval(this.#touching);
    if (this.#held > 0) await this.deliver();
    // What is still held is the next process's to deliver, at once.
    rmSync(this.#ownerFile, { force: true });
  }

  /**
   * Delivers held segments to the stream, oldest first, until one fails; the open segment is
   * closed first, so everything held so far is delivered. Resolves with how many are still held.
   */
  async deliver(): Promise<number> {
    if (this.#delivering) return this.#held;
    this.#delivering = true;
    try {
      this.#adopt();
      // Closed and delivered until none is left: once the stream takes events again, new ones go
      // to it, so the segments stop growing.
      while (this.#segments.length > 0) {
        this.#closeOpen();
        const segment = this.#segments[0]!;
        if (!(await this.#deliverSegment(segment))) {
          this.#streamDown = true;
          break;
        }
        this.#streamDown = false;
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
        const event = JSON.parse(line) as UsageEvent;
        checkEvent(event);
        events.push(event);
      } catch {
        // A line cut by a crash mid-write, or edited: dropped, so it cannot hold back the rest.
        this.#log.error({ file: segment.file }, 'usage event lost: a segment line is not a usage event');
      }
    }
    for (let start = 0; start < events.length; start += DELIVERY_BATCH) {
      const batch = events.slice(start, start + DELIVERY_BATCH);
      const results = await Promise.allSettled(batch.map((event) => within(this.#stream.emit(event), STREAM_TIMEOUT_MS)));
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
      appendFileSync(segment.file, `${JSON.stringify(event)}\n`, { mode: 0o600 });
    } catch (error) {
      // New model calls are refused until an append works again; a part-written line stays in
      // this segment alone (the next append starts a new one), where delivery drops it.
      this.#writeFailed = true;
      this.#closeOpen();
      this.#log.error({ err: error, usageEvent: event }, 'usage event lost: the outbox cannot be written');
      throw error;
    }
    this.#writeFailed = false;
    segment.events += 1;
    this.#held += 1;
    this.#schedule();
  }

  #segmentForAppend(): Segment {
    if (this.#open && this.#open.events < this.#settings.segmentEvents) return this.#open;
    this.#closeOpen();
    const now = Date.now();
    const segment = { file: join(this.#settings.dir, `${now}-${this.#instance}-${randomUUID()}.jsonl`), events: 0, since: now };
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

  /** Whether an owner's file says it still runs. */
  #ownerAlive(instance: string): boolean {
    try {
      return Date.now() - statSync(join(this.#settings.dir, `${instance}.owner`)).mtimeMs < OWNER_STALE_MS;
    } catch {
      return false;
    }
  }

  /** Takes over the segments of this stream whose owner stopped (its owner file gone or stale). */
  #adopt(): void {
    const found: Segment[] = [];
    const orphans = new Set<string>();
    for (const name of readdirSync(this.#settings.dir).sort()) {
      const match = SEGMENT.exec(name);
      if (!match || match[2] === this.#instance || this.#ownerAlive(match[2]!)) continue;
      const file = join(this.#settings.dir, `${match[1]}-${this.#instance}-${match[3]}.jsonl`);
      try {
        renameSync(join(this.#settings.dir, name), file);
      } catch {
        // Another process took it first.
        continue;
      }
      orphans.add(match[2]!);
      const events = readFileSync(file, 'utf8').split('\n').filter(Boolean).length;
      found.push({ file, events, since: Number(match[1]) });
    }
    for (const instance of orphans) rmSync(join(this.#settings.dir, `${instance}.owner`), { force: true });
    // Older than anything this outbox holds: delivered first.
    this.#segments.unshift(...found);
    for (const segment of found) this.#held += segment.events;
    if (found.length > 0) {
      this.#log.warn({ segments: found.length }, 'usage events left in the outbox by a stopped process; delivering them');
      this.#schedule();
    }
  }
}
