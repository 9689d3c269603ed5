/**
 * The usage pipeline on Redis: events go to the usage stream (platform/metering/usage-stream.ts),
 * and `drain` reads it through a consumer group into one hash of sums per (hour, row key) and one
 * set of row keys per hour; see usage-store.ts for why counting is idempotent.
 */
import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from '../../platform/redis/client.ts';
import type { UsageEvent } from '../../platform/metering/usage-event.ts';
import { RedisUsageSink, fromStreamFields, type CountedEvent } from '../../platform/metering/usage-stream.ts';
import { usageKeys } from '../../platform/redis/keys.ts';
import { luaScript } from '../../platform/redis/scripts.ts';
import {
  DEFAULT_CONSUMER,
  SUM_FIELDS,
  checkDrainOptions,
  countingOf,
  dimensionsMatching,
  hoursIn,
  summarize,
  zeroSums,
  type DrainOptions,
  type StoredRow,
  type Sums,
  type UsageFilter,
  type UsageGroup,
  type UsageReport,
  type UsageStore,
} from './usage-store.ts';

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
/** Commands per pipeline when a report reads many hours or rows. */
const PIPELINE_CHUNK = 1_000;

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
const COUNT_EVENT = luaScript(`
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local dimensions = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], unpack(ARGV, 6, 5 + dimensions))
for i = 6 + dimensions, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1`);

/** Rows live in one hash per (hour, row key) and one set of row keys per hour; see the module comment. */
export class RedisUsageStore implements UsageStore {
  readonly #redis: RedisClient;
  readonly #keys: ReturnType<typeof usageKeys>;
  readonly #sink: RedisUsageSink;

  constructor(redis: RedisClient, keyPrefix: string) {
    this.#redis = redis;
    this.#keys = usageKeys(keyPrefix);
    this.#sink = new RedisUsageSink(redis, keyPrefix);
  }

  emit(event: UsageEvent): Promise<void> {
    return this.#sink.emit(event);
  }

  async drain(options: DrainOptions = {}): Promise<number> {
    const { batch, maxEvents } = checkDrainOptions(options);
    const consumer = options.consumer ?? DEFAULT_CONSUMER;
    await this.#ensureGroup();
    const read = (start: string, budget: number) => this.#drainFrom({ consumer, batch, start, budget });
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
      await this.#redis.xgroup('CREATE', this.#keys.stream(), this.#keys.group, '0', 'MKSTREAM');
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('BUSYGROUP'))) throw error;
    }
  }

  /** Moves entries other consumers left pending for CLAIM_IDLE_MS into this consumer's pending list. */
  async #claimAbandoned(consumer: string, batch: number): Promise<void> {
    let cursor = '0-0';
    do {
      const reply = await this.#redis.xautoclaim(
        this.#keys.stream(),
        this.#keys.group,
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
  async #drainFrom(read: { consumer: string; batch: number; start: string; budget: number }) {
    let cursor = read.start;
    let total = 0;
    let counted = 0;
    while (total < read.budget) {
      const count = Math.min(read.batch, read.budget - total);
      const reply = await this.#redis.xreadgroup(
        'GROUP',
        this.#keys.group,
        read.consumer,
        'COUNT',
        count,
        'STREAMS',
        this.#keys.stream(),
        cursor,
      );
      const entries = entriesOf(reply as ReadReply);
      if (entries.length === 0) break;
      counted += await this.#count(entries);
      // Malformed and trimmed entries are acknowledged too: re-reading them could never count them.
      await this.#redis.xack(this.#keys.stream(), this.#keys.group, ...entries.map((entry) => entry.id));
      total += entries.length;
      if (cursor !== '>') cursor = entries.at(-1)!.id;
    }
    return { read: total, counted };
  }

  /**
   * Runs the counting script for each event; rejects (acknowledging nothing) if any failed. Issued
   * together, they leave in one auto-pipelined write.
   */
  async #count(entries: StreamEntry[]): Promise<number> {
    const events = entries.flatMap((entry) => (entry.event ? [entry.event] : []));
    const results = await Promise.all(events.map((event) => COUNT_EVENT.run(this.#redis, 3, ...this.#countArguments(event))));
    return results.filter((result) => result === 1).length;
  }

  #countArguments(event: CountedEvent): (string | number)[] {
    const { hour, dims, rowKey, sums } = countingOf(event);
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
    const increments = Object.entries(sums).flat();
    const keys = [this.#keys.counted(hour.slice(0, 10)), this.#keys.row(hour, rowKey), this.#keys.hourIndex(hour)];
    return [...keys, event.id, COUNTED_TTL_SECONDS, ROW_TTL_SECONDS, rowKey, dimensionFields.length, ...dimensionFields, ...increments];
  }

  /**
   * The rows of the hours that match the filter. Dimensions are read from the row keys in the hour
   * indexes, so rows the filter excludes (other tenants' usually) are never fetched.
   */
  async #rows(hours: string[], filter: UsageFilter): Promise<StoredRow[]> {
    const members = await this.#pipelined(hours.map(this.#keys.hourIndex), (pipeline, key) => pipeline.smembers(key));
    const wanted = hours.flatMap((hour, i) =>
      (members[i] as string[]).flatMap((rowKey) => {
        const dims = dimensionsMatching(filter, rowKey);
        return dims ? [{ hour, rowKey, dims }] : [];
      }),
    );
    const hashes = await this.#pipelined(
      wanted.map(({ hour, rowKey }) => this.#keys.row(hour, rowKey)),
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
      const pipeline = this.#redis.pipeline();
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
