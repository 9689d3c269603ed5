import type { Resolvers } from '../../codegen/usage.resolvers.ts';
import { ErrorCode, badInput, codedError } from '../../platform/errors.ts';
import { isPlatformAdmin, type Principal } from '../../platform/identity/principal.ts';
import type { UsageFilter, UsageTotals } from './usage-store.ts';
import { tenantBucketKeys } from '../../platform/metering/buckets.ts';
import { nanosToUsd, usdToNanos } from '../../platform/metering/money.ts';
import type { UsageContext } from './context.ts';

function time(field: string, value: string): Date {
  const parsed = new Date(value);
  if (Number.isNaN(parsed.getTime())) throw badInput(field, `${field} must be an ISO-8601 time`);
  return parsed;
}

/** A tenant reads its own usage only; platform admins read any. */
function scoped(principal: Principal, filter: Omit<UsageFilter, 'tenant'> & { tenant?: string | null }): UsageFilter {
  const { tenant, ...rest } = filter;
  if (isPlatformAdmin(principal)) return { ...rest, ...(tenant && { tenant }) };
  if (tenant && tenant !== principal.tenantId) throw codedError(ErrorCode.FORBIDDEN, 'a tenant reads only its own usage');
  return { ...rest, tenant: principal.tenantId };
}

async function totalsFor(context: UsageContext, from: string, to: string, filter: Partial<UsageFilter>): Promise<UsageTotals> {
  const report = await context.store.report(scoped(context.principal, { ...filter, from: time('from', from), to: time('to', to) }), []);
  return report.totals;
}

export const resolvers: Resolvers = {
  Query: {
    usage: async (_parent, { filter, groupBy }, context) => {
      const { tenant, key, model, provider, tags } = filter;
      const request = scoped(context.principal, {
        tenant,
        ...(key && { key }),
        ...(model && { model }),
        ...(provider && { provider }),
        ...(tags?.length && { tags }),
        from: time('filter.from', filter.from),
        to: time('filter.to', filter.to),
      });
      const report = await context.store.report(request, groupBy);
      return {
        totals: report.totals,
        rows: report.rows.map(({ tenant: t, key: k, model: m, provider: p, day, hour, ...totals }) => ({
          tenant: t,
          key: k,
          model: m,
          provider: p,
          day,
          hour,
          totals,
        })),
      };
    },
  },
  Tenant: {
    __resolveReference: (reference) => reference,
    usage: (tenant, { from, to }, context) => totalsFor(context, from, to, { tenant: tenant.id }),
    budget: async (tenant, _args, context) => {
      if (!isPlatformAdmin(context.principal) && tenant.id !== context.principal.tenantId)
        throw codedError(ErrorCode.FORBIDDEN, 'a tenant reads only its own budget');
      const limits = context.metering.tenants[tenant.id] ?? {};
      const keys = tenantBucketKeys(context.metering, tenant.id);
      // Buckets hold nano-dollars: reservations in flight and what calls settled to.
      const [tokens, today, thisMonth] = await context.meter.used([keys.tokensThisMinute, keys.usdToday.key, keys.usdThisMonth.key]);
      const remaining = (limitUsd: number | undefined, spentNanos: number) =>
        limitUsd === undefined ? null : nanosToUsd(Math.max(usdToNanos(limitUsd) - spentNanos, 0));
      return {
        tokensPerMinute: limits.tokensPerMinute ?? null,
        tokensUsedThisMinute: tokens!,
        usdPerDay: limits.usdPerDay ?? null,
        usdSpentToday: nanosToUsd(today!),
        usdRemainingToday: remaining(limits.usdPerDay, today!),
        usdPerMonth: limits.usdPerMonth ?? null,
        usdSpentThisMonth: nanosToUsd(thisMonth!),
        usdRemainingThisMonth: remaining(limits.usdPerMonth, thisMonth!),
        dayResetsAt: new Date(keys.usdToday.resetAt).toISOString(),
        monthResetsAt: new Date(keys.usdThisMonth.resetAt).toISOString(),
      };
    },
  },
  ApiKey: {
    __resolveReference: (reference) => reference,
    usage: (key, { from, to }, context) => totalsFor(context, from, to, { key: key.id }),
  },
  Model: {
    __resolveReference: (reference) => reference,
    usage: (model, { from, to }, context) => totalsFor(context, from, to, { model: model.id }),
  },
};
