/**
 * What an operation's model calls cost, for an agent run that made it through a tool. Subgraphs
 * add up the usage events of an operation made for a run (`principal.actor`) and report the sum in
 * `extensions.spend`; the router sums its subgraphs' reports into the client's response; the run
 * counts it against its own token and USD limits.
 */
import type { UsageEvent, UsageSink } from './usage-event.ts';

/** Tokens a model call used (or, before it runs, is expected to use). */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface Spend extends TokenUsage {
  costUsd: number;
}

export const SPEND_EXTENSION = 'spend';

export const noSpend = (): Spend => ({ promptTokens: 0, completionTokens: 0, totalTokens: 0, costUsd: 0 });

export function addSpend(total: Spend, more: Spend): Spend {
  return {
    promptTokens: total.promptTokens + more.promptTokens,
    completionTokens: total.completionTokens + more.completionTokens,
    totalTokens: total.totalTokens + more.totalTokens,
    costUsd: Math.round((total.costUsd + more.costUsd) * 1e9) / 1e9,
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
  };
}
