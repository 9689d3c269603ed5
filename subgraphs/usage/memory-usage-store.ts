/** The usage pipeline in process memory (no Redis): emit queues, drain aggregates the queue, nothing expires. */
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

export class MemoryUsageStore implements UsageStore {
  #queue: CountedEvent[] = [];
  readonly #counted = new Set<string>();
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
    // Idempotency is per (event day, id), as in Redis's per-day counted sets.
    const id = `${hour.slice(0, 10)} ${event.id}`;
    if (this.#counted.has(id)) return false;
    this.#counted.add(id);
    const rows = this.#hours.get(hour) ?? new Map<string, Sums>();
    this.#hours.set(hour, rows);
    const sums = rows.get(rowKey) ?? zeroSums();
    rows.set(rowKey, sums);
    addInto(sums, added);
    return true;
  }
}
