/**
 * The storage side of the usage pipeline. Every model call emits one `UsageEvent`; with Redis it is
 * appended to a Redis Stream (cheap for the caller, shared by every replica) and the usage subgraph
 * later drains the stream through a consumer group into hourly aggregate rows. Without Redis the
 * same happens in process memory. Both stores pass one contract suite (usage-store.test.ts).
 *
 * Aggregation is idempotent by event id: a stream delivers at least once (an entry read but not
 * acknowledged before a crash is read again), so each event is counted by one Lua script that first
 * adds its id to a per-day set and only adds to the sums if the id was new. Reading, counting and
 * acknowledging can therefore fail at any point without losing or double-counting an event.
 *
 * Aggregates are one hash per (UTC hour, row key), the row key naming tenant, key, model, provider
 * and tags, plus a per-hour index of row keys, so a report reads only the hours it covers. Money is
 * counted in micro-dollars (integers), so sums are exact.
 */
import type { ChainableCommander, Redis } from 'ioredis';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import { usageKeys } from '../../platform/redis/keys.ts';
import type { UsageEvent, UsageSink } from '../../platform/metering/usage-event.ts';

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

export const DEFAULT_STREAM_MAX_LENGTH = 10_000_000;
/**
 * A fixed name, so a restarted process re-reads at once what it read and did not acknowledge
 * (under another name it waits CLAIM_IDLE_MS to take them over). Replicas sharing the name may
 * read the same pending entries; counting is idempotent, so that costs reads, not accuracy.
 */
export const DEFAULT_CONSUMER = 'aggregator';
const DEFAULT_BATCH = 500;
/**
 * Entries another consumer read and left unacknowledged this long are taken over: it has probably
 * crashed, and a restarted process may read under another name. Taking over from a consumer that
 * is merely slow costs a second read, never a second count.
 */
const CLAIM_IDLE_MS = 60_000;
/** Longer than the aggregator plausibly stays down with entries pending; a redelivery after that would count again. */
const COUNTED_TTL_SECONDS = 8 * 86_400;
/** How long hourly rows are kept (refreshed while the hour is still being written). */
const ROW_TTL_SECONDS = 400 * 86_400;
const MAX_RANGE_MS = 366 * 86_400_000;
const HOUR_MS = 3_600_000;
/** Year 10000: later times have no four-digit year, so no `YYYY-MM-DDTHH` hour. */
const END_OF_TIME_MS = Date.UTC(10_000, 0, 1);
/** Commands per pipeline when a report reads many hours or rows. */
const PIPELINE_CHUNK = 1_000;

/** The part of an event that aggregation reads. */
type CountedEvent = Pick<
  UsageEvent,
  | 'id'
  | 'time'
  | 'tenant'
  | 'key'
  | 'model'
  | 'provider'
  | 'promptTokens'
  | 'completionTokens'
  | 'totalTokens'
  | 'costUsd'
  | 'outcome'
  | 'tags'
>;

/** What a row key names. */
interface Dimensions {
  tenant: string;
  key: string;
  model: string;
  provider: string;
  tags: string[];
}

/** A row hash's numbers, all integers. */
interface Sums {
  calls: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  costMicro: number;
  cachedCalls: number;
  failedCalls: number;
}

/** One hourly aggregate; `hour` is `YYYY-MM-DDTHH` (UTC). */
interface StoredRow {
  hour: string;
  dims: Dimensions;
  sums: Sums;
}

/**
 * Cost is summed as an integer number of nano-dollars (the precision answers are priced at), so
 * totals of many calls equal the sum of their costs exactly. (The field keeps its first name.)
 */
const COST_UNITS_PER_USD = 1e9;

const SUM_FIELDS = ['calls', 'promptTokens', 'completionTokens', 'totalTokens', 'costMicro', 'cachedCalls', 'failedCalls'] as const;
const TOKEN_FIELDS = ['promptTokens', 'completionTokens', 'totalTokens'] as const;
const zeroSums = (): Sums => ({
  calls: 0,
  promptTokens: 0,
  completionTokens: 0,
  totalTokens: 0,
  costMicro: 0,
  cachedCalls: 0,
  failedCalls: 0,
});

function addInto(target: Sums, sums: Sums): void {
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
    costMicro: Math.round(event.costUsd * COST_UNITS_PER_USD),
    cachedCalls: Number(cached),
    failedCalls: Number(failed),
  };
}

/** Why the event cannot be aggregated, or undefined. Checked before storing, so no entry poisons the stream. */
function problemWith(event: CountedEvent): string | undefined {
  const ms = Date.parse(event.time);
  if (!(ms >= 0 && ms < END_OF_TIME_MS)) return `time ${JSON.stringify(event.time)} is not a time between 1970 and 9999`;
  for (const field of TOKEN_FIELDS) {
    if (!Number.isSafeInteger(event[field]) || event[field] < 0) return `${field} is not a non-negative integer`;
  }
  if (!Number.isFinite(event.costUsd) || event.costUsd < 0) return 'costUsd is not a non-negative number';
  return undefined;
}

function checkEvent(event: CountedEvent): void {
  const problem = problemWith(event);
  if (problem) throw new Error(`usage event ${event.id} cannot be stored: ${problem}`);
}

const hourOf = (time: string) => new Date(time).toISOString().slice(0, 13);
const dayOf = (time: string) => hourOf(time).slice(0, 10);
/** Idempotency is per (event day, id), as in Redis's per-day counted sets. */
const countedId = (event: CountedEvent) => `${dayOf(event.time)} ${event.id}`;

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

function msOf(date: Date, field: 'from' | 'to'): number {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw codedError(ErrorCode.BAD_USER_INPUT, `${field} is not a valid time`, { field });
  return ms;
}

/** Every `YYYY-MM-DDTHH` hour overlapping [from, to]; none when from is after to. */
function hoursIn(filter: UsageFilter): string[] {
  const from = msOf(filter.from, 'from');
  const to = msOf(filter.to, 'to');
  if (to - from > MAX_RANGE_MS) throw codedError(ErrorCode.BAD_USER_INPUT, 'the time range is longer than 366 days', { field: 'to' });
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
  return { ...rest, costUsd: costMicro / COST_UNITS_PER_USD };
}

interface Group {
  dims: GroupDimensions;
  sums: Sums;
}

/** Cost (exact, in micro-dollars) descending, then dimension values ascending (nulls, always in the same places, tie). */
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
function summarize(rows: StoredRow[], groupBy: UsageGroup[]): UsageReport {
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

function checkDrainOptions({ batch = DEFAULT_BATCH, maxEvents = Number.POSITIVE_INFINITY }: DrainOptions) {
  if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError('batch must be a positive integer');
  if (!(maxEvents >= 0) || (Number.isFinite(maxEvents) && !Number.isInteger(maxEvents)))
    throw new RangeError('maxEvents must be a non-negative integer');
  return { batch, maxEvents };
}

// --- Redis -------------------------------------------------------------------------------------

const STREAM_FIELDS = [
  'id',
  'time',
  'tenant',
  'key',
  'model',
  'version',
  'provider',
  'kind',
  'promptTokens',
  'completionTokens',
  'totalTokens',
  'costUsd',
  'latencyMs',
  'timeToFirstTokenMs',
  'outcome',
  'tags',
] as const satisfies (keyof UsageEvent)[];

/** Flat stream fields: tags as JSON, numbers as decimal strings, null as ''. */
function toStreamFields(event: UsageEvent): string[] {
  return STREAM_FIELDS.flatMap((field) => {
    const value = event[field];
    return [field, value === null ? '' : Array.isArray(value) ? JSON.stringify(value) : String(value)];
  });
}

function parseTags(json: string | undefined): string[] | undefined {
  try {
    const tags: unknown = JSON.parse(json ?? '');
    return Array.isArray(tags) && tags.every((tag) => typeof tag === 'string') ? tags : undefined;
  } catch {
    return undefined;
  }
}

const TEXT_FIELDS = ['id', 'time', 'tenant', 'key', 'model', 'provider', 'outcome'] as const;

/** The counted part of a stream entry, or undefined when the entry is not a valid usage event. */
function fromStreamFields(flat: string[]): CountedEvent | undefined {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
  const tags = parseTags(fields.get('tags'));
  if (!tags || TEXT_FIELDS.some((name) => !fields.has(name))) return undefined;
  const text = (name: (typeof TEXT_FIELDS)[number]) => fields.get(name)!;
  const number = (name: string) => Number(fields.get(name) || Number.NaN);
  const event: CountedEvent = {
    id: text('id'),
    time: text('time'),
    tenant: text('tenant'),
    key: text('key'),
    model: text('model'),
    provider: text('provider'),
    promptTokens: number('promptTokens'),
    completionTokens: number('completionTokens'),
    totalTokens: number('totalTokens'),
    costUsd: number('costUsd'),
    outcome: text('outcome'),
    tags,
  };
  return problemWith(event) ? undefined : event;
}

/** A stream entry as read; `event` is undefined for entries trimmed away while pending, or malformed. */
interface StreamEntry {
  id: string;
  event: CountedEvent | undefined;
}

/** XREADGROUP's reply: per stream, its entries; a pending entry deleted from the stream has null fields. */
type ReadReply = [stream: string, entries: [id: string, fields: string[] | null][]][] | null;

function entriesOf(reply: ReadReply): StreamEntry[] {
  const entries = reply?.[0]?.[1] ?? [];
  return entries.map(([id, fields]) => ({ id, event: fields ? fromStreamFields(fields) : undefined }));
}

/**
 * Counts one event, atomically. KEYS: counted set of the event's day, row hash, hour index.
 * ARGV: event id, counted TTL, row TTL, row key, n, n values for HSET (the dimensions), then
 * field/increment pairs for HINCRBY. Returns 1 if counted, 0 if the id was counted before.
 */
const COUNT_EVENT = `
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local dimensions = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], unpack(ARGV, 6, 5 + dimensions))
for i = 6 + dimensions, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1`;

/** Writes events to the usage stream (the sink the subgraphs use). */
export class RedisUsageSink implements UsageSink {
  protected readonly keys: ReturnType<typeof usageKeys>;

  constructor(
    protected readonly redis: Redis,
    keyPrefix: string,
    /**
     * Approximate (Redis trims whole stream nodes). Entries trimmed before the aggregator read
     * them are lost, so this bounds memory only for an aggregator that keeps up.
     */
    private readonly maxLength: number = DEFAULT_STREAM_MAX_LENGTH,
  ) {
    this.keys = usageKeys(keyPrefix);
  }

  async emit(event: UsageEvent): Promise<void> {
    checkEvent(event);
    const id = await this.redis.xadd(this.keys.stream(), 'MAXLEN', '~', this.maxLength, '*', ...toStreamFields(event));
    if (id === null) throw new Error('Redis did not store the usage event');
  }
}

/** Rows live in one hash per (hour, row key) and one set of row keys per hour; see the module comment. */
export class RedisUsageStore extends RedisUsageSink implements UsageStore {
  constructor(redis: Redis, keyPrefix: string) {
    super(redis, keyPrefix);
  }

  async drain(options: DrainOptions = {}): Promise<number> {
    const { batch, maxEvents } = checkDrainOptions(options);
    const consumer = options.consumer ?? DEFAULT_CONSUMER;
    // Loaded per drain: a restarted or failed-over Redis has forgotten scripts.
    const [sha] = await Promise.all([this.redis.script('LOAD', COUNT_EVENT) as Promise<string>, this.#ensureGroup()]);
    const read = (start: string, budget: number) => this.#drainFrom({ sha, consumer, batch, start, budget });
    // First what this consumer (or an abandoned one) read and never acknowledged, then new entries.
    await this.#claimAbandoned(consumer, batch);
    const pending = await read('0', maxEvents);
    const fresh = await read('>', maxEvents - pending.read);
    return pending.counted + fresh.counted;
  }

  async report(filter: UsageFilter, groupBy: UsageGroup[]): Promise<UsageReport> {
    return summarize(await this.#rows(hoursIn(filter), filter), groupBy);
  }

  async #ensureGroup(): Promise<void> {
    try {
      await this.redis.xgroup('CREATE', this.keys.stream(), this.keys.group, '0', 'MKSTREAM');
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error;
    }
  }

  /** Moves entries other consumers left pending for CLAIM_IDLE_MS into this consumer's pending list. */
  async #claimAbandoned(consumer: string, batch: number): Promise<void> {
    let cursor = '0-0';
    do {
      const reply = await this.redis.xautoclaim(
        this.keys.stream(),
        this.keys.group,
        consumer,
        CLAIM_IDLE_MS,
        cursor,
        'COUNT',
        batch,
        'JUSTID',
      );
      cursor = String(reply[0]);
    } while (cursor !== '0-0');
  }

  /** Reads from `start` ('0': own pending entries; '>': new ones) until none are left or `budget` entries were read. */
  async #drainFrom(read: { sha: string; consumer: string; batch: number; start: string; budget: number }) {
    let cursor = read.start;
    let total = 0;
    let counted = 0;
    while (total < read.budget) {
      const count = Math.min(read.batch, read.budget - total);
      const reply = await this.redis.xreadgroup(
        'GROUP',
        this.keys.group,
        read.consumer,
        'COUNT',
        count,
        'STREAMS',
        this.keys.stream(),
        cursor,
      );
      const entries = entriesOf(reply as ReadReply);
      if (entries.length === 0) break;
      counted += await this.#count(read.sha, entries);
      // Malformed and trimmed entries are acknowledged too: re-reading them could never count them.
      await this.redis.xack(this.keys.stream(), this.keys.group, ...entries.map((entry) => entry.id));
      total += entries.length;
      if (cursor !== '>') cursor = entries.at(-1)!.id;
    }
    return { read: total, counted };
  }

  /** Runs the counting script for each event in one pipeline; rejects (acknowledging nothing) if any failed. */
  async #count(sha: string, entries: StreamEntry[]): Promise<number> {
    const events = entries.flatMap((entry) => (entry.event ? [entry.event] : []));
    if (events.length === 0) return 0;
    const pipeline = this.redis.pipeline();
    for (const event of events) pipeline.evalsha(sha, 3, ...this.#countArguments(event));
    const results = (await pipeline.exec()) ?? [];
    for (const [error] of results) if (error) throw error;
    if (results.length !== events.length) throw new Error('Redis did not answer every counting script');
    return results.filter(([, result]) => result === 1).length;
  }

  #countArguments(event: CountedEvent): (string | number)[] {
    const hour = hourOf(event.time);
    const dims = dimensionsOfEvent(event);
    const rowKey = rowKeyOf(dims);
    const dimensionFields = [
      'tenant',
      dims.tenant,
      'key',
      dims.key,
      'model',
      dims.model,
      'provider',
      dims.provider,
      'tags',
      JSON.stringify(dims.tags),
    ];
    const increments = Object.entries(sumsOfEvent(event)).flat();
    const keys = [this.keys.counted(hour.slice(0, 10)), this.keys.row(hour, rowKey), this.keys.hourIndex(hour)];
    return [...keys, event.id, COUNTED_TTL_SECONDS, ROW_TTL_SECONDS, rowKey, dimensionFields.length, ...dimensionFields, ...increments];
  }

  /**
   * The rows of the hours that match the filter. Dimensions are read from the row keys in the hour
   * indexes, so rows the filter excludes (other tenants' usually) are never fetched.
   */
  async #rows(hours: string[], filter: UsageFilter): Promise<StoredRow[]> {
    const members = await this.#pipelined(hours.map(this.keys.hourIndex), (pipeline, key) => pipeline.smembers(key));
    const wanted = hours.flatMap((hour, i) =>
      (members[i] as string[]).flatMap((rowKey) => {
        const dims = dimensionsOf(rowKey);
        return dims && matches(filter, dims) ? [{ hour, rowKey, dims }] : [];
      }),
    );
    const hashes = await this.#pipelined(
      wanted.map(({ hour, rowKey }) => this.keys.row(hour, rowKey)),
      (pipeline, key) => pipeline.hgetall(key),
    );
    return wanted.flatMap(({ hour, dims }, i) => {
      const sums = sumsOfHash(hashes[i] as Record<string, string>);
      return sums ? [{ hour, dims, sums }] : [];
    });
  }

  /** One command per key, in pipelines of PIPELINE_CHUNK; the replies in key order. */
  async #pipelined(keys: string[], command: (pipeline: ChainableCommander, key: string) => void): Promise<unknown[]> {
    const replies: unknown[] = [];
    for (let start = 0; start < keys.length; start += PIPELINE_CHUNK) {
      const pipeline = this.redis.pipeline();
      for (const key of keys.slice(start, start + PIPELINE_CHUNK)) command(pipeline, key);
      for (const [error, reply] of (await pipeline.exec()) ?? []) {
        if (error) throw error;
        replies.push(reply);
      }
    }
    return replies;
  }
}

/** A row hash's sums; undefined when the hash is gone (expired after the index was read). */
function sumsOfHash(hash: Record<string, string>): Sums | undefined {
  if (hash.calls === undefined) return undefined;
  const sums = zeroSums();
  for (const field of SUM_FIELDS) sums[field] = Number(hash[field] ?? 0);
  return sums;
}

// --- memory ------------------------------------------------------------------------------------

/** The same pipeline in process memory: emit queues, drain aggregates the queue, nothing expires. */
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
        const dims = dimensionsOf(rowKey)!;
        return matches(filter, dims) ? [{ hour, dims, sums }] : [];
      }),
    );
    return summarize(rows, groupBy);
  }

  /** Adds the event to its row unless its id was counted; true when counted. */
  #count(event: CountedEvent): boolean {
    const id = countedId(event);
    if (this.#counted.has(id)) return false;
    this.#counted.add(id);
    const hour = hourOf(event.time);
    const rows = this.#hours.get(hour) ?? new Map<string, Sums>();
    this.#hours.set(hour, rows);
    const rowKey = rowKeyOf(dimensionsOfEvent(event));
    const sums = rows.get(rowKey) ?? zeroSums();
    rows.set(rowKey, sums);
    addInto(sums, sumsOfEvent(event));
    return true;
  }
}
