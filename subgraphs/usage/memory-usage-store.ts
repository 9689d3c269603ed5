/** The usage pipeline in process memory (no Redis): emit queues, drain aggregates the queue; hourly rows are kept, recent event ids are remembered to count each once. */
import { LRUCache } from 'lru-cache';
import type { UsageEvent } from '../../platform/metering/usage-event.ts';
import { checkEvent, type CountedEvent } from '../../platform/metering/usage-stream.ts';
import {
  addInto,
  checkDrainOptions,
  countingOf,
  dimensionsMatching,
  hoursIn,
  summarize,
  zeroSums,
  type DrainOptions,
  type Sums,
  type UsageFilter,
  type UsageGroup,
  type UsageReport,
  type UsageStore,
} from './usage-store.ts';

/** How many recent event ids the in-process store remembers to count each once. */
export const COUNTED_IDS = 10_000;

export class MemoryUsageStore implements UsageStore {
  #queue: CountedEvent[] = [];
  /**
   * Ids counted lately, for idempotency. In one process an event only comes again right after
   * it came (no stream redelivers it hours later), so the newest COUNTED_IDS are enough, and the
   * set stays bounded however long the process serves (it held every id ever counted before).
   */
  readonly #counted = new LRUCache<string, true>({ max: COUNTED_IDS });
  /** Hour → row key → sums. */
  readonly #hours = new Map<string, Map<string, Sums>>();

  async emit(event: UsageEvent): Promise<void> {
    checkEvent(event);
    this.#queue.push({ ...event, tags: [...event.tags] });
  }

  async drain(options: DrainOptions = {}): Promise<number> {
    const { maxEvents } = checkDrainOptions(options);
    const events = this.#queue.splice(0, maxEvents);
    return events.filter((event) => this.#count(event)).length;
  }

  async report(filter: UsageFilter, groupBy: UsageGroup[]): Promise<UsageReport> {
    const rows = hoursIn(filter).flatMap((hour) =>
      [...(this.#hours.get(hour) ?? [])].flatMap(([rowKey, sums]) => {
        const dims = dimensionsMatching(filter, rowKey);
        return dims ? [{ hour, dims, sums }] : [];
      }),
    );
    return summarize(rows, groupBy);
  }

  /** Adds the event to its row unless its id was counted; true when counted. */
  #count(event: CountedEvent): boolean {
    const { hour, rowKey, sums: added } = countingOf(event);
    if (this.#counted.has(event.id)) return false;
    // Kept flat: a UUID is built as a rope of a dozen pieces, each its own heap object.
    this.#counted.set(JSON.parse(JSON.stringify(event.id)) as string, true);
    const rows = this.#hours.get(hour) ?? new Map<string, Sums>();
    this.#hours.set(hour, rows);
    const sums = rows.get(rowKey) ?? zeroSums();
    rows.set(rowKey, sums);
    addInto(sums, added);
    return true;
  }
}
