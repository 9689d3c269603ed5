/**
 * The storage side of the usage pipeline. Every model call emits one `UsageEvent`; with Redis it is
 * appended to a Redis Stream (platform/metering/usage-stream.ts: cheap for the caller, shared by
 * every replica) and the usage subgraph later drains the stream through a consumer group into
 * hourly aggregate rows (redis-usage-store.ts). Without Redis the same happens in process memory
 * (memory-usage-store.ts). Both stores pass one contract suite (usage-store.test.ts); this module
 * holds their contract and the arithmetic they share.
 *
 * Aggregation is idempotent by event id: a stream delivers at least once (an entry read but not
 * acknowledged before a crash is read again), so each event is counted by one Lua script that first
 * adds its id to a per-day set and only adds to the sums if the id was new. Reading, counting and
 * acknowledging can therefore fail at any point without losing or double-counting an event.
 *
 * Aggregates are one hash per (UTC hour, row key), the row key naming tenant, key, model, provider
 * and tags, plus a per-hour index of row keys, so a report reads only the hours it covers. Money is
 * counted in nano-dollars (integers, platform/metering/money.ts), so sums are exact.
 */
import { badInput } from '../../platform/errors.ts';
import { nanosToUsd, usdToNanos } from '../../platform/metering/money.ts';
import type { UsageSink } from '../../platform/metering/usage-event.ts';
import { END_OF_TIME_MS, type CountedEvent } from '../../platform/metering/usage-stream.ts';

/** Every given criterion must hold. `from` and `to` are inclusive at hour resolution: an hour counts when it overlaps them. */
export interface UsageFilter {
  tenant?: string;
  key?: string;
  model?: string;
  provider?: string;
  from: Date;
  to: Date;
  /** Rows whose tags include every one of these. */
  tags?: string[];
}

export type UsageGroup = 'TENANT' | 'KEY' | 'MODEL' | 'PROVIDER' | 'DAY' | 'HOUR';

export interface UsageTotals {
  calls: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  costUsd: number;
  /** Calls answered from the response cache (outcome `cached`). */
  cachedCalls: number;
  /** Calls whose outcome is an error code (neither `ok` nor `cached`). */
  failedCalls: number;
}

/** Dimensions not grouped by are null. `day` is `YYYY-MM-DD`, `hour` the ISO time the hour starts (both UTC). */
export interface UsageRow extends UsageTotals {
  tenant: string | null;
  key: string | null;
  model: string | null;
  provider: string | null;
  day: string | null;
  hour: string | null;
}

export interface UsageReport {
  totals: UsageTotals;
  /** By cost, highest first, then by dimension values. */
  rows: UsageRow[];
}

export interface DrainOptions {
  /** The consumer-group member to read as; defaults to one name shared by every replica (see DEFAULT_CONSUMER). */
  consumer?: string;
  /** Entries per read (default 500). */
  batch?: number;
  /** Stop after reading this many entries, counted or not (default: until nothing is left). */
  maxEvents?: number;
}

export interface UsageStore extends UsageSink {
  /**
   * Aggregates what has been emitted and not yet counted; returns how many events it counted
   * (redeliveries and already-counted ids not included).
   */
  drain(options?: DrainOptions): Promise<number>;
  /**
   * Sums and rows for the filter, grouped by the given dimensions: an empty groupBy gives one row
   * with all dimensions null, or no rows when nothing matched. Rejects ranges over 366 days.
   */
  report(filter: UsageFilter, groupBy: UsageGroup[]): Promise<UsageReport>;
}

/**
 * A fixed name, so a restarted process re-reads at once what it read and did not acknowledge
 * (under another name it waits CLAIM_IDLE_MS to take them over). Replicas sharing the name may
 * read the same pending entries; counting is idempotent, so that costs reads, not accuracy.
 */
export const DEFAULT_CONSUMER = 'aggregator';
const DEFAULT_BATCH = 500;
const MAX_RANGE_MS = 366 * 86_400_000;
const HOUR_MS = 3_600_000;

/** What a row key names. */
export interface Dimensions {
  tenant: string;
  key: string;
  model: string;
  provider: string;
  tags: string[];
}

/** A row hash's numbers, all integers; cost in nano-dollars (the field keeps its first name). */
export interface Sums {
  calls: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Nano-dollars; the name is the stored hash field's, kept so rows written before stay readable. */
  costMicro: number;
  cachedCalls: number;
  failedCalls: number;
}

/** One hourly aggregate; `hour` is `YYYY-MM-DDTHH` (UTC). */
export interface StoredRow {
  hour: string;
  dims: Dimensions;
  sums: Sums;
}

export const SUM_FIELDS = [
  'calls',
  'promptTokens',
  'completionTokens',
  'totalTokens',
  'costMicro',
  'cachedCalls',
  'failedCalls',
] as const satisfies (keyof Sums)[];
export const zeroSums = (): Sums => ({
  calls: 0,
  promptTokens: 0,
  completionTokens: 0,
  totalTokens: 0,
  costMicro: 0,
  cachedCalls: 0,
  failedCalls: 0,
});

export function addInto(target: Sums, sums: Sums): void {
  for (const field of SUM_FIELDS) target[field] += sums[field];
}

function sumsOfEvent(event: CountedEvent): Sums {
  const { promptTokens, completionTokens, totalTokens, outcome } = event;
  const cached = outcome === 'cached';
  const failed = outcome !== 'ok' && !cached;
  return {
    calls: 1,
    promptTokens,
    completionTokens,
    totalTokens,
    costMicro: usdToNanos(event.costUsd),
    cachedCalls: Number(cached),
    failedCalls: Number(failed),
  };
}

const hourOf = (time: string) => new Date(time).toISOString().slice(0, 13);

function dimensionsOfEvent({ tenant, key, model, provider, tags }: CountedEvent): Dimensions {
  return { tenant, key, model, provider, tags: [...new Set(tags)].sort() };
}

/**
 * Tenant, key, model, provider, then the sorted unique tags, each URI-encoded and joined by `|`:
 * readable in key names, unambiguous (no part contains `|`; tags [] and [''] differ by a part), and
 * free of `{`/`}`, so a tenant name never becomes a Redis Cluster hash tag.
 */
function rowKeyOf({ tenant, key, model, provider, tags }: Dimensions): string {
  return [tenant, key, model, provider, ...tags].map(encodeURIComponent).join('|');
}

function dimensionsOf(rowKey: string): Dimensions | undefined {
  try {
    const [tenant, key, model, provider, ...tags] = rowKey.split('|').map(decodeURIComponent);
    if (provider === undefined) return undefined;
    return { tenant: tenant!, key: key!, model: model!, provider, tags };
  } catch {
    return undefined; // not written by rowKeyOf
  }
}

const DIMENSION_FILTERS = ['tenant', 'key', 'model', 'provider'] as const;

function matches(filter: UsageFilter, dims: Dimensions): boolean {
  if (!DIMENSION_FILTERS.every((field) => filter[field] === undefined || filter[field] === dims[field])) return false;
  return (filter.tags ?? []).every((tag) => dims.tags.includes(tag));
}

/** What a row key names, when the filter wants the row (undefined too for a key rowKeyOf did not write). */
export function dimensionsMatching(filter: UsageFilter, rowKey: string): Dimensions | undefined {
  const dims = dimensionsOf(rowKey);
  return dims && matches(filter, dims) ? dims : undefined;
}

/** Where an event is counted: its `YYYY-MM-DDTHH` hour, its row (dimensions and key), and what it adds to the row. */
export function countingOf(event: CountedEvent): { hour: string; dims: Dimensions; rowKey: string; sums: Sums } {
  const dims = dimensionsOfEvent(event);
  return { hour: hourOf(event.time), dims, rowKey: rowKeyOf(dims), sums: sumsOfEvent(event) };
}

function msOf(date: Date, field: 'from' | 'to'): number {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw badInput(field, `${field} is not a valid time`);
  return ms;
}

/** Every `YYYY-MM-DDTHH` hour overlapping [from, to]; none when from is after to. */
export function hoursIn(filter: UsageFilter): string[] {
  const from = msOf(filter.from, 'from');
  const to = msOf(filter.to, 'to');
  if (to - from > MAX_RANGE_MS) throw badInput('to', 'the time range is longer than 366 days');
  const hours: string[] = [];
  const last = Math.min(to, END_OF_TIME_MS - 1);
  for (let ms = Math.floor(Math.max(from, 0) / HOUR_MS) * HOUR_MS; ms <= last; ms += HOUR_MS) {
    hours.push(new Date(ms).toISOString().slice(0, 13));
  }
  return hours;
}

type GroupDimensions = Pick<UsageRow, 'tenant' | 'key' | 'model' | 'provider' | 'day' | 'hour'>;
const DIMENSION_ORDER = ['tenant', 'key', 'model', 'provider', 'day', 'hour'] as const satisfies (keyof GroupDimensions)[];

function groupDimensionsOf(row: StoredRow, groupBy: ReadonlySet<UsageGroup>): GroupDimensions {
  const value = (group: UsageGroup, of: () => string) => (groupBy.has(group) ? of() : null);
  return {
    tenant: value('TENANT', () => row.dims.tenant),
    key: value('KEY', () => row.dims.key),
    model: value('MODEL', () => row.dims.model),
    provider: value('PROVIDER', () => row.dims.provider),
    day: value('DAY', () => row.hour.slice(0, 10)),
    hour: value('HOUR', () => `${row.hour}:00:00.000Z`),
  };
}

function totalsOf({ costMicro, ...rest }: Sums): UsageTotals {
  return { ...rest, costUsd: nanosToUsd(costMicro) };
}

interface Group {
  dims: GroupDimensions;
  sums: Sums;
}

/** Cost (exact, in nano-dollars) descending, then dimension values ascending (nulls, always in the same places, tie). */
function compareGroups(a: Group, b: Group): number {
  if (a.sums.costMicro !== b.sums.costMicro) return b.sums.costMicro - a.sums.costMicro;
  for (const field of DIMENSION_ORDER) {
    const x = a.dims[field] ?? '';
    const y = b.dims[field] ?? '';
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Groups rows that already matched the filter. */
export function summarize(rows: StoredRow[], groupBy: UsageGroup[]): UsageReport {
  const groups = new Map<string, Group>();
  const total = zeroSums();
  const by = new Set(groupBy);
  for (const row of rows) {
    addInto(total, row.sums);
    const dims = groupDimensionsOf(row, by);
    const id = JSON.stringify(DIMENSION_ORDER.map((field) => dims[field]));
    const group = groups.get(id) ?? { dims, sums: zeroSums() };
    groups.set(id, group);
    addInto(group.sums, row.sums);
  }
  const sorted = [...groups.values()].sort(compareGroups);
  return { totals: totalsOf(total), rows: sorted.map(({ dims, sums }) => ({ ...dims, ...totalsOf(sums) })) };
}

export function checkDrainOptions({ batch = DEFAULT_BATCH, maxEvents = Number.POSITIVE_INFINITY }: DrainOptions) {
  if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError('batch must be a positive integer');
  if (!(maxEvents >= 0) || (Number.isFinite(maxEvents) && !Number.isInteger(maxEvents)))
    throw new RangeError('maxEvents must be a non-negative integer');
  return { batch, maxEvents };
}
