/**
 * The buckets a model call reserves in (platform/metering/meter.ts): tokens per minute of the caller's key,
 * its tenant and the model version; USD per UTC day and month of the key and the tenant. A call
 * that cannot fit is refused before any provider is called, with the limit, what remains and when
 * the window resets in `extensions`.
 */
import type { Config } from '../config.ts';
import { ErrorCode, codedError } from '../errors.ts';
import { toMicroUsd, type Bucket, type Meter, type Reservation } from './meter.ts';
import type { TokenUsage } from './spend.ts';
import { holderOf, type Principal } from '../identity/principal.ts';

/** A model version as metering sees it: its own tokens-per-minute limit, if any. */
export interface MeteredModel {
  id: string;
  version: string;
  tokensPerMinute?: number | undefined;
}

/** `id@version`: how a model version is named in bucket names and keys (as providers/catalog.ts names targets). */
const versionKey = (model: MeteredModel) => `${model.id}@${model.version}`;

export interface ChatDemand {
  tokens: number;
  usd: number;
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
  const key = (...parts: string[]) => `${settings.keyPrefix}{meter}:${parts.join(':')}`;
  return {
    tokensThisMinute: key('tpm', 'tenant', tenantId, minute.id),
    usdToday: { key: key('usd', 'tenant', tenantId, day.id), resetAt: day.resetAt },
    usdThisMonth: { key: key('usd', 'tenant', tenantId, month.id), resetAt: month.resetAt },
  };
}

/** The buckets a call by `principal` on `model` reserves in, for `demand`. */
export function bucketsFor(
  principal: Principal,
  models: MeteredModel | readonly MeteredModel[],
  demand: ChatDemand,
  settings: MeteringSettings,
  now = new Date(),
): Bucket[] {
  // Every version that may serve the call (a route's targets and fallbacks) reserves in its own limit.
  const targets = [...new Set(Array.isArray(models) ? models : [models as MeteredModel])];
  const { minute, day, month } = windows(now);
  const key = (...parts: string[]) => `${settings.keyPrefix}{meter}:${parts.join(':')}`;
  const micro = toMicroUsd(demand.usd);
  const tenant = settings.tenants[principal.tenantId];
  const holder = holderOf(principal);
  const candidates: (Bucket | undefined)[] = [
    limited('tokensPerMinute:key', key('tpm', 'key', holder, minute.id), principal.limits?.tokensPerMinute, demand.tokens, minute.resetAt),
    limited(
      'tokensPerMinute:tenant',
      key('tpm', 'tenant', principal.tenantId, minute.id),
      tenant?.tokensPerMinute,
      demand.tokens,
      minute.resetAt,
    ),
    ...targets.map((model) =>
      limited(
        `tokensPerMinute:model:${versionKey(model)}`,
        key('tpm', 'model', versionKey(model), minute.id),
        model.tokensPerMinute,
        demand.tokens,
        minute.resetAt,
      ),
    ),
    limited('usdPerDay:key', key('usd', 'key', holder, day.id), micro$(principal.limits?.usdPerDay), micro, day.resetAt),
    limited('usdPerMonth:key', key('usd', 'key', holder, month.id), micro$(principal.limits?.usdPerMonth), micro, month.resetAt),
    limited('usdPerDay:tenant', key('usd', 'tenant', principal.tenantId, day.id), micro$(tenant?.usdPerDay), micro, day.resetAt),
    limited('usdPerMonth:tenant', key('usd', 'tenant', principal.tenantId, month.id), micro$(tenant?.usdPerMonth), micro, month.resetAt),
  ];
  return candidates.filter((bucket): bucket is Bucket => bucket !== undefined);
}

const micro$ = (usd: number | null | undefined) => (usd === null || usd === undefined ? undefined : Math.floor(usd * 1_000_000));

function limited(name: string, key: string, limit: number | null | undefined, amount: number, resetAt: number): Bucket | undefined {
  return limit === null || limit === undefined ? undefined : { name, key, limit, amount, resetAt };
}

/** The coded refusal of a reservation that did not fit. */
export function overLimit(reservation: Extract<Reservation, { ok: false }>): Error {
  const { bucket, used } = reservation;
  const isMoney = bucket.name.startsWith('usd');
  const scale = (value: number) => (isMoney ? value / 1_000_000 : value);
  const [limitName, scope] = bucket.name.split(':') as [string, string];
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

/** Reserves the worst case of a call, or throws the coded refusal. */
export async function reserve(meter: Meter, buckets: Bucket[]): Promise<Bucket[]> {
  if (buckets.length === 0) return buckets;
  const reservation = await meter.reserve(buckets);
  if (!reservation.ok) throw overLimit(reservation);
  return reservation.buckets;
}

/**
 * Settles reserved buckets to what the call really used (nothing, for a call that delivered
 * nothing); a model's bucket keeps the tokens only if that version served the call.
 */
export function settle(meter: Meter, buckets: Bucket[], usage: TokenUsage, costUsd: number, servedBy?: string): Promise<void> {
  if (buckets.length === 0) return Promise.resolve();
  return meter.settle(buckets, (bucket) => {
    if (bucket.name.startsWith('usd')) return toMicroUsd(costUsd);
    if (bucket.name.startsWith('tokensPerMinute:model:'))
      return bucket.name === `tokensPerMinute:model:${servedBy}` ? usage.totalTokens : 0;
    return usage.totalTokens;
  });
}
