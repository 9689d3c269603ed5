/**
 * The buckets a model call reserves in (platform/metering/meter.ts): tokens per minute of the caller's key,
 * its tenant and the model version; USD per UTC day and month of the key and the tenant, held in
 * nano-dollars (money.ts). A call that cannot fit is refused before any provider is called, with
 * the limit, what remains and when the window resets (in tokens or USD) in `extensions`.
 */
import type { Config } from '../config.ts';
import { ErrorCode, codedError } from '../errors.ts';
import { meterKeys } from '../redis/keys.ts';
import type { Bucket, Meter, Reservation } from './meter.ts';
import { nanosToUsd, usdToNanos, type Nanos } from './money.ts';
import type { Spend } from './spend.ts';
import { holderOf, type Principal } from '../identity/principal.ts';

/** A model version as metering sees it: its own tokens-per-minute limit, if any. */
export interface MeteredModel {
  id: string;
  version: string;
  tokensPerMinute?: number | undefined;
}

/** `id@version`: how a model version is named in bucket names and keys (as providers/catalog.ts names targets). */
const versionKey = (model: MeteredModel) => `${model.id}@${model.version}`;

/** The worst case of a call: the most tokens it may use, and their price rounded up (a reservation). */
export interface Demand {
  tokens: number;
  costNanos: Nanos;
}

export interface MeteringSettings {
  keyPrefix: string;
  tenants: Config['metering']['tenants'];
}

interface Windows {
  minute: { id: string; resetAt: number };
  day: { id: string; resetAt: number };
  month: { id: string; resetAt: number };
}

function windows(now: Date): Windows {
  const minute = Math.floor(now.getTime() / 60_000);
  const day = now.toISOString().slice(0, 10);
  const month = now.toISOString().slice(0, 7);
  const nextDay = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  const nextMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  return {
    minute: { id: String(minute), resetAt: (minute + 1) * 60_000 },
    day: { id: day, resetAt: nextDay },
    month: { id: month, resetAt: nextMonth },
  };
}

/** The keys of a tenant's own buckets for the current windows (for budget reports). */
export function tenantBucketKeys(settings: MeteringSettings, tenantId: string, now = new Date()) {
  const { minute, day, month } = windows(now);
  const keys = meterKeys(settings.keyPrefix);
  return {
    tokensThisMinute: keys.tokensPerMinute('tenant', tenantId, minute.id),
    usdToday: { key: keys.usd('tenant', tenantId, day.id), resetAt: day.resetAt },
    usdThisMonth: { key: keys.usd('tenant', tenantId, month.id), resetAt: month.resetAt },
  };
}

/** The buckets a call by `principal` on `model` reserves in, for `demand`. */
export function bucketsFor(
  principal: Principal,
  models: MeteredModel | readonly MeteredModel[],
  demand: Demand,
  settings: MeteringSettings,
  now = new Date(),
): Bucket[] {
  // Every version that may serve the call (a route's targets and fallbacks) reserves in its own limit.
  const targets = [...new Set(Array.isArray(models) ? models : [models as MeteredModel])];
  const { minute, day, month } = windows(now);
  const keys = meterKeys(settings.keyPrefix);
  const cost = demand.costNanos;
  const tenant = settings.tenants[principal.tenantId];
  const holder = holderOf(principal);
  const candidates: (Bucket | undefined)[] = [
    limited(
      'tokensPerMinute:key',
      keys.tokensPerMinute('key', holder, minute.id),
      principal.limits?.tokensPerMinute,
      demand.tokens,
      minute.resetAt,
    ),
    limited(
      'tokensPerMinute:tenant',
      keys.tokensPerMinute('tenant', principal.tenantId, minute.id),
      tenant?.tokensPerMinute,
      demand.tokens,
      minute.resetAt,
    ),
    ...targets.map((model) =>
      limited(
        `tokensPerMinute:model:${versionKey(model)}`,
        keys.tokensPerMinute('model', versionKey(model), minute.id),
        model.tokensPerMinute,
        demand.tokens,
        minute.resetAt,
      ),
    ),
    limited('usdPerDay:key', keys.usd('key', holder, day.id), limitNanos(principal.limits?.usdPerDay), cost, day.resetAt),
    limited('usdPerMonth:key', keys.usd('key', holder, month.id), limitNanos(principal.limits?.usdPerMonth), cost, month.resetAt),
    limited('usdPerDay:tenant', keys.usd('tenant', principal.tenantId, day.id), limitNanos(tenant?.usdPerDay), cost, day.resetAt),
    limited('usdPerMonth:tenant', keys.usd('tenant', principal.tenantId, month.id), limitNanos(tenant?.usdPerMonth), cost, month.resetAt),
  ];
  return candidates.filter((bucket): bucket is Bucket => bucket !== undefined);
}

/** A configured USD limit in nano-dollars (exactly, money.ts); undefined for none. */
const limitNanos = (usd: number | null | undefined) => (usd === null || usd === undefined ? undefined : usdToNanos(usd));

function limited(name: string, key: string, limit: number | null | undefined, amount: number, resetAt: number): Bucket | undefined {
  return limit === null || limit === undefined ? undefined : { name, key, limit, amount, resetAt };
}

/** The limit a bucket enforces (`usdPerDay`, `tokensPerMinute`, ...) and whose it is (`tenant`, `key`, `model`). */
export function limitOf(bucket: Bucket): { limit: string; scope: string } {
  const [limit, scope] = bucket.name.split(':') as [string, string];
  return { limit, scope };
}

/** The coded refusal of a reservation that did not fit. */
export function overLimit(reservation: Extract<Reservation, { ok: false }>): Error {
  const { bucket, used } = reservation;
  const isMoney = bucket.name.startsWith('usd');
  const scale = (value: number) => (isMoney ? nanosToUsd(value) : value);
  const { limit: limitName, scope } = limitOf(bucket);
  return codedError(
    isMoney ? ErrorCode.BUDGET_EXCEEDED : ErrorCode.TOKEN_LIMIT_EXCEEDED,
    `this call needs ${scale(bucket.amount)} ${isMoney ? 'USD' : 'tokens'} of the ${scope}'s ${limitName} (${scale(bucket.limit)}); ${scale(Math.max(bucket.limit - used, 0))} remain until ${new Date(bucket.resetAt).toISOString()}`,
    {
      limit: limitName,
      scope,
      max: scale(bucket.limit),
      remaining: scale(Math.max(bucket.limit - used, 0)),
      needed: scale(bucket.amount),
      resetAt: new Date(bucket.resetAt).toISOString(),
    },
  );
}

/**
 * Settles reserved buckets to what the call really used (nothing, for a call that delivered
 * nothing); a model's bucket keeps the tokens only if that version served the call.
 */
export function settle(meter: Meter, buckets: Bucket[], spend: Spend, servedBy?: MeteredModel): Promise<void> {
  if (buckets.length === 0) return Promise.resolve();
  const served = servedBy && `tokensPerMinute:model:${versionKey(servedBy)}`;
  return meter.settle(buckets, (bucket) => {
    if (bucket.name.startsWith('usd')) return usdToNanos(spend.costUsd);
    if (bucket.name.startsWith('tokensPerMinute:model:')) return bucket.name === served ? spend.totalTokens : 0;
    return spend.totalTokens;
  });
}
