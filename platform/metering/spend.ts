/**
 * What an operation's model calls cost, for an agent run that made it through a tool. Subgraphs
 * add up the usage events of an operation made for a run (`principal.actor`) and report the sum in
 * `extensions.spend`; the router sums its subgraphs' reports into the client's response; the run
 * counts it against its own token and USD limits.
 */
import { nanosToUsd, priceNanos, usdToNanos, type Pricing } from './money.ts';
import type { UsageEvent, UsageSink } from './usage-event.ts';

/** Tokens a model call used (or, before it runs, is expected to use). */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

/**
 * Tokens and what they cost: one model call's (priced at the version that served it), an
 * operation's or an agent run's. `costUsd` is a whole number of nano-dollars (money.ts), in USD.
 */
export interface Spend extends TokenUsage {
  costUsd: number;
}

export const SPEND_EXTENSION = 'spend';

/** Nothing spent: a call that used nothing, or a total before its first call. */
export const NO_SPEND: Readonly<Spend> = { promptTokens: 0, completionTokens: 0, totalTokens: 0, costUsd: 0 };

/** `usage` priced at a version's prices (to the nearest nano-dollar). */
export function priced(usage: TokenUsage, pricing: Pricing): Spend {
  return { ...usage, costUsd: nanosToUsd(priceNanos(pricing, usage)) };
}

export function addSpend(total: Spend, more: Spend): Spend {
  return {
    promptTokens: total.promptTokens + more.promptTokens,
    completionTokens: total.completionTokens + more.completionTokens,
    totalTokens: total.totalTokens + more.totalTokens,
    costUsd: nanosToUsd(usdToNanos(total.costUsd) + usdToNanos(more.costUsd)),
  };
}

export const spent = (spend: Spend) => spend.totalTokens > 0 || spend.costUsd > 0;

/** The spend a response reports, if it is a well-formed one. */
export function spendOf(extensions: Record<string, unknown> | undefined | null): Spend | undefined {
  const value = extensions?.[SPEND_EXTENSION] as Record<string, unknown> | undefined;
  const fields = ['promptTokens', 'completionTokens', 'totalTokens', 'costUsd'] as const;
  if (
    !value ||
    !fields.every((field) => typeof value[field] === 'number' && Number.isFinite(value[field]) && (value[field] as number) >= 0)
  )
    return undefined;
  return Object.fromEntries(fields.map((field) => [field, value[field]])) as unknown as Spend;
}

/** A sink that also adds each event of an operation to its `spend` (the request context's, changed in place). */
export function recordingSpend(sink: UsageSink, spend: Spend): UsageSink {
  return {
    emit(event: UsageEvent) {
      Object.assign(spend, addSpend(spend, event));
      return sink.emit(event);
    },
    refusal: () => sink.refusal?.(),
  };
}
