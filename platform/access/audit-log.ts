/**
 * The audit log of security-relevant events (admin actions, authentication failures): a Redis
 * Stream when Redis is configured (shared by every replica, trimmed to a bounded length), else
 * process memory (one laptop process). Both implement one interface and pass one contract suite
 * (audit-log.test.ts). Event ids are stream ids (`<ms>-<seq>`), so they order events, carry their
 * time, and serve as pagination cursors without a second index.
 */
import type { RedisClient } from '../redis/client.ts';
import { ErrorCode, codedError } from '../errors.ts';
import { holderOf, type Principal } from '../identity/principal.ts';
import { auditStreamKey } from '../redis/keys.ts';

export type AuditOutcome = 'SUCCESS' | 'DENIED' | 'FAILED';

export interface AuditEvent {
  /** Assigned by the log: the Redis stream entry id (for memory: same shape, `<ms>-<seq>`), usable as a cursor. */
  id: string;
  /** ISO-8601 time the event was recorded. */
  time: string;
  /** Who acted: an API key id, a JWT subject, or 'anonymous'. */
  actor: string;
  actorTenant: string | null;
  /** e.g. 'tenant.create', 'apiKey.create', 'apiKey.update', 'apiKey.revoke', 'auth.failure' */
  action: string;
  /** What was acted on, e.g. a key id or tenant id. */
  target: string | null;
  /** The tenant the target belongs to. */
  tenant: string | null;
  sourceAddress: string | null;
  outcome: AuditOutcome;
  /** Short machine-readable reason for DENIED/FAILED outcomes (e.g. 'unknown_key', 'revoked'). */
  reason: string | null;
}

export type NewAuditEvent = Omit<AuditEvent, 'id' | 'time'>;

/**
 * Every given criterion must hold. `tenant` matches the event's `tenant` (the target's tenant), not
 * `actorTenant`. `from` and `to` are both inclusive, at millisecond resolution.
 */
const MAX_AUDIT_FIELD = 200;
const clip = (value: string | null) => (value === null ? null : value.slice(0, MAX_AUDIT_FIELD));

/** The event of an action by a caller: who (as `holderOf` names them), from where, and `fields`. */
export function callerAuditEvent(
  caller: { principal: Principal; clientAddress: string | null },
  action: string,
  fields: Partial<NewAuditEvent>,
): NewAuditEvent {
  const { principal } = caller;
  const event: NewAuditEvent = {
    // An agent run acting for its owner is named with the owner, so a person and an agent differ.
    actor: principal.actor ? `${holderOf(principal)} via ${principal.actor}` : holderOf(principal),
    actorTenant: principal.tenantId,
    action,
    target: null,
    tenant: null,
    sourceAddress: caller.clientAddress,
    outcome: 'SUCCESS',
    reason: null,
    ...fields,
  };
  // Ids come from callers (refused ones unvalidated): bounded, so events cannot be used to fill Redis.
  return { ...event, actor: clip(event.actor)!, target: clip(event.target), tenant: clip(event.tenant), reason: clip(event.reason) };
}

export interface AuditFilter {
  tenant?: string;
  actor?: string;
  action?: string;
  outcome?: AuditOutcome;
  from?: Date;
  to?: Date;
}

export interface AuditPage {
  events: AuditEvent[];
  endCursor: string | null;
  hasNextPage: boolean;
}

export interface AuditLog {
  /** Appends one event; rejects if it could not be stored. */
  record(event: NewAuditEvent): Promise<AuditEvent>;
  /** Newest first. `after` is the `id`/endCursor of the last event of the previous page (exclusive). `first` is 1..500. */
  list(filter: AuditFilter, first: number, after?: string): Promise<AuditPage>;
}

export const MAX_PAGE_SIZE = 500;
/**
 * Entries one `list` call reads at most. A rare filter over a long stream would otherwise read the
 * whole stream in one request; past this the call returns what it found and a cursor to go on.
 */
export const MAX_SCANNED_PER_LIST = 10_000;
const BATCH_SIZE = 200;
const MAX_U64 = 2n ** 64n - 1n;

/** A stream id as numbers, so ids compare without string tricks; Redis allows 64 bits for each part. */
interface StreamId {
  ms: bigint;
  seq: bigint;
}

/** The part of the stream one read covers, newest end first as XREVRANGE takes it; null is unbounded. */
interface Range {
  upper: { id: StreamId; inclusive: boolean } | null;
  /** Inclusive. */
  lower: StreamId | null;
}

/** Reads up to `count` entries of `range`, newest first. */
type ReadNewestFirst = (range: Range, count: number) => Promise<AuditEvent[]>;

const formatId = (id: StreamId) => `${id.ms}-${id.seq}`;
const timeOf = (id: StreamId) => new Date(Number(id.ms)).toISOString();

function compareIds(a: StreamId, b: StreamId): number {
  if (a.ms !== b.ms) return a.ms < b.ms ? -1 : 1;
  return a.seq === b.seq ? 0 : a.seq < b.seq ? -1 : 1;
}

function parseId(id: string): StreamId | undefined {
  const match = /^(\d{1,20})-(\d{1,20})$/.exec(id);
  if (!match) return undefined;
  const parsed = { ms: BigInt(match[1]!), seq: BigInt(match[2]!) };
  return parsed.ms <= MAX_U64 && parsed.seq <= MAX_U64 ? parsed : undefined;
}

function parseCursor(after: string): StreamId {
  const id = parseId(after);
  if (!id) throw codedError(ErrorCode.BAD_USER_INPUT, 'after is not a cursor returned by the audit log', { field: 'after' });
  return id;
}

/** Milliseconds since the epoch, clamped at 0 because stream ids cannot be negative. */
function msOf(date: Date, field: 'from' | 'to'): bigint {
  const ms = date.getTime();
  if (Number.isNaN(ms)) throw codedError(ErrorCode.BAD_USER_INPUT, `${field} is not a valid time`, { field });
  return BigInt(Math.max(0, ms));
}

/** The time filters and the cursor as stream id bounds, so Redis skips what they exclude. */
function initialRange(filter: AuditFilter, after: string | undefined): Range {
  const cursor = after === undefined ? null : { id: parseCursor(after), inclusive: false };
  const to = filter.to ? { id: { ms: msOf(filter.to, 'to'), seq: MAX_U64 }, inclusive: true } : null;
  const upper = cursor && to ? (compareIds(cursor.id, to.id) <= 0 ? cursor : to) : (cursor ?? to);
  return { upper, lower: filter.from ? { ms: msOf(filter.from, 'from'), seq: 0n } : null };
}

/** Nothing precedes 0-0, and Redis rejects `(0-0` as a range end instead of returning nothing. */
const isEmpty = ({ upper }: Range) => upper !== null && !upper.inclusive && compareIds(upper.id, { ms: 0n, seq: 0n }) === 0;

const FIELD_FILTERS = ['tenant', 'actor', 'action', 'outcome'] as const;
const filtersFields = (filter: AuditFilter) => FIELD_FILTERS.some((field) => filter[field] !== undefined);
const matches = (filter: AuditFilter, event: AuditEvent) =>
  FIELD_FILTERS.every((field) => filter[field] === undefined || filter[field] === event[field]);

function checkFirst(first: number): void {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE_SIZE) {
    throw codedError(ErrorCode.BAD_USER_INPUT, `first must be an integer from 1 to ${MAX_PAGE_SIZE}`, { field: 'first' });
  }
}

/**
 * One page, read in batches: filters other than time cannot be expressed as id bounds, so entries
 * are read until `first` + 1 match (the extra one only proves there is a next page), the range
 * ends, or the scan budget is spent.
 */
async function readPage(read: ReadNewestFirst, filter: AuditFilter, first: number, after?: string): Promise<AuditPage> {
  checkFirst(first);
  let range = initialRange(filter, after);
  if (isEmpty(range)) return { events: [], endCursor: null, hasNextPage: false };
  const found: AuditEvent[] = [];
  for (let scanned = 0; scanned < MAX_SCANNED_PER_LIST; ) {
    // Without field filters every entry matches, so read no more than the page needs.
    const wanted = filtersFields(filter) ? BATCH_SIZE : first + 1 - found.length;
    const count = Math.min(BATCH_SIZE, wanted, MAX_SCANNED_PER_LIST - scanned);
    const batch = await read(range, count);
    found.push(...batch.filter((event) => matches(filter, event)));
    if (found.length > first) return fullPage(found.slice(0, first));
    const last = batch.at(-1);
    if (batch.length < count || !last) return { events: found, endCursor: found.at(-1)?.id ?? null, hasNextPage: false };
    scanned += batch.length;
    range = { ...range, upper: { id: parseId(last.id)!, inclusive: false } };
  }
  // Budget spent: continue after the last entry read, even when it did not match.
  return { events: found, endCursor: formatId(range.upper!.id), hasNextPage: true };
}

const fullPage = (events: AuditEvent[]): AuditPage => ({ events, endCursor: events.at(-1)!.id, hasNextPage: true });

const NULLABLE_FIELDS = ['actorTenant', 'target', 'tenant', 'sourceAddress', 'reason'] as const;
const OUTCOMES: readonly string[] = ['SUCCESS', 'DENIED', 'FAILED'] satisfies AuditOutcome[];
const isOutcome = (value: string | undefined): value is AuditOutcome => value !== undefined && OUTCOMES.includes(value);

/** Flat stream fields; null fields are left out, so an empty string stays distinct from null. */
function toFields(event: NewAuditEvent): string[] {
  const fields = ['actor', event.actor, 'action', event.action, 'outcome', event.outcome];
  for (const name of NULLABLE_FIELDS) {
    const value = event[name];
    if (value !== null) fields.push(name, value);
  }
  return fields;
}

function fromEntry(id: string, flat: string[]): AuditEvent {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
  const outcome = fields.get('outcome');
  if (!isOutcome(outcome)) throw new Error(`audit stream entry ${id} has no valid outcome`);
  const nullable = (name: (typeof NULLABLE_FIELDS)[number]) => fields.get(name) ?? null;
  return {
    id,
    time: timeOf(parseId(id)!),
    actor: fields.get('actor') ?? '',
    actorTenant: nullable('actorTenant'),
    action: fields.get('action') ?? '',
    target: nullable('target'),
    tenant: nullable('tenant'),
    sourceAddress: nullable('sourceAddress'),
    outcome,
    reason: nullable('reason'),
  };
}

/** Redis range syntax: `(` makes a bound exclusive; `+` and `-` are the stream's ends. */
function redisBounds(range: Range): [end: string, start: string] {
  const end = range.upper ? `${range.upper.inclusive ? '' : '('}${formatId(range.upper.id)}` : '+';
  return [end, range.lower ? formatId(range.lower) : '-'];
}

export class RedisAuditLog implements AuditLog {
  readonly #key: string;

  constructor(
    private readonly redis: RedisClient,
    keyPrefix: string,
    /** Approximate: Redis trims whole internal nodes, so the stream may hold somewhat more. */
    private readonly maxLength: number,
  ) {
    this.#key = auditStreamKey(keyPrefix);
  }

  async record(event: NewAuditEvent): Promise<AuditEvent> {
    const id = await this.redis.xadd(this.#key, 'MAXLEN', '~', this.maxLength, '*', ...toFields(event));
    if (id === null) throw new Error('Redis did not store the audit event');
    return { ...event, id, time: timeOf(parseId(id)!) };
  }

  list(filter: AuditFilter, first: number, after?: string): Promise<AuditPage> {
    return readPage((range, count) => this.#read(range, count), filter, first, after);
  }

  async #read(range: Range, count: number): Promise<AuditEvent[]> {
    const entries = await this.redis.xrevrange(this.#key, ...redisBounds(range), 'COUNT', count);
    return entries.map(([id, fields]) => fromEntry(id, fields));
  }
}

/** The same log in process memory; ids follow Redis's rules, so cursors behave identically. */
export class MemoryAuditLog implements AuditLog {
  /** Oldest first. */
  readonly #entries: { id: StreamId; event: AuditEvent }[] = [];

  constructor(
    private readonly maxLength: number,
    private readonly now: () => number = Date.now,
  ) {}

  async record(event: NewAuditEvent): Promise<AuditEvent> {
    const id = this.#nextId();
    const stored = { ...event, id: formatId(id), time: timeOf(id) };
    this.#entries.push({ id, event: stored });
    if (this.#entries.length > this.maxLength) this.#entries.splice(0, this.#entries.length - this.maxLength);
    return { ...stored };
  }

  async list(filter: AuditFilter, first: number, after?: string): Promise<AuditPage> {
    return readPage(async (range, count) => this.#read(range, count), filter, first, after);
  }

  /** Like Redis: the clock's ms, or the last id's ms when the clock has not moved past it (then seq + 1). */
  #nextId(): StreamId {
    const ms = BigInt(Math.max(0, Math.floor(this.now())));
    const last = this.#entries.at(-1)?.id;
    return last && last.ms >= ms ? { ms: last.ms, seq: last.seq + 1n } : { ms, seq: 0n };
  }

  #read(range: Range, count: number): AuditEvent[] {
    const events: AuditEvent[] = [];
    for (let i = this.#countUpTo(range.upper) - 1; i >= 0 && events.length < count; i--) {
      const entry = this.#entries[i]!;
      if (range.lower && compareIds(entry.id, range.lower) < 0) break;
      events.push({ ...entry.event });
    }
    return events;
  }

  /** How many entries lie at or below `upper` (binary search; entries are sorted by id). */
  #countUpTo(upper: Range['upper']): number {
    if (!upper) return this.#entries.length;
    let low = 0;
    let high = this.#entries.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const order = compareIds(this.#entries[middle]!.id, upper.id);
      if (order < 0 || (order === 0 && upper.inclusive)) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}
