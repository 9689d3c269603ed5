/**
 * The usage stream: a Redis Stream every model call's usage event is appended to (by the
 * subgraphs that make the calls, through `RedisUsageSink`), and that the usage subgraph drains with
 * a consumer group. The entry format lives here, once, for both sides: flat fields written by
 * `toStreamFields`, read back by `fromStreamFields`, and checked by the same rule before an event
 * is stored and after an entry is read, so no entry poisons the stream.
 */
import type { RedisClient } from '../redis/client.ts';
import { usageKeys } from '../redis/keys.ts';
import type { UsageEvent, UsageSink } from './usage-event.ts';

export const DEFAULT_STREAM_MAX_LENGTH = 10_000_000;

/** Year 10000: later times have no four-digit year, so no `YYYY-MM-DDTHH` hour. */
export const END_OF_TIME_MS = Date.UTC(10_000, 0, 1);

/** The part of an event that aggregation reads (all a stream entry must hold to be counted). */
export type CountedEvent = Pick<
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

const TOKEN_FIELDS = ['promptTokens', 'completionTokens', 'totalTokens'] as const;

/** Why the event cannot be aggregated, or undefined. */
function problemWith(event: CountedEvent): string | undefined {
  const ms = Date.parse(event.time);
  if (!(ms >= 0 && ms < END_OF_TIME_MS)) return `time ${JSON.stringify(event.time)} is not a time between 1970 and 9999`;
  for (const field of TOKEN_FIELDS) {
    if (!Number.isSafeInteger(event[field]) || event[field] < 0) return `${field} is not a non-negative integer`;
  }
  if (!Number.isFinite(event.costUsd) || event.costUsd < 0) return 'costUsd is not a non-negative number';
  return undefined;
}

/** Throws when the event could not be aggregated: checked before an event is stored, by every sink. */
export function checkEvent(event: CountedEvent): void {
  const problem = problemWith(event);
  if (problem) throw new Error(`usage event ${event.id} cannot be stored: ${problem}`);
}

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
export function toStreamFields(event: UsageEvent): string[] {
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
export function fromStreamFields(flat: string[]): CountedEvent | undefined {
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

/** Writes events to the usage stream (the sink the subgraphs that call models use). */
export class RedisUsageSink implements UsageSink {
  readonly #redis: RedisClient;
  readonly #stream: string;
  readonly #maxLength: number;

  constructor(
    redis: RedisClient,
    keyPrefix: string,
    /**
     * Approximate (Redis trims whole stream nodes). Entries trimmed before the aggregator read
     * them are lost, so this bounds memory only for an aggregator that keeps up.
     */
    maxLength: number = DEFAULT_STREAM_MAX_LENGTH,
  ) {
    this.#redis = redis;
    this.#stream = usageKeys(keyPrefix).stream();
    this.#maxLength = maxLength;
  }

  async emit(event: UsageEvent): Promise<void> {
    checkEvent(event);
    const id = await this.#redis.xadd(this.#stream, 'MAXLEN', '~', this.#maxLength, '*', ...toStreamFields(event));
    if (id === null) throw new Error('Redis did not store the usage event');
  }
}
