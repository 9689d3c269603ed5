/**
 * The usage event of each chat, whole or streamed: exactly one per call, emitted when the call
 * ends (answered, cached, failed, or left by the caller), never blocking the answer.
 */
import { randomUUID } from 'node:crypto';
import { holderOf } from '../../platform/identity/principal.ts';
import type { UsageEvent } from '../../platform/metering/usage-event.ts';
import type { CatalogModel } from '../../providers/catalog.ts';
import type { PricedUsage } from './chat.ts';
import type { InferenceContext } from './context.ts';

export interface ChatOutcome {
  kind: 'chat' | 'chat_stream';
  model: CatalogModel;
  usage: PricedUsage;
  startedAt: number;
  timeToFirstTokenMs: number | null;
  outcome: string;
  tags: string[];
}

export function emitChatUsage(context: InferenceContext, call: ChatOutcome): void {
  const event: UsageEvent = {
    id: randomUUID(),
    time: new Date().toISOString(),
    tenant: context.principal.tenantId,
    key: holderOf(context.principal),
    model: call.model.id,
    version: call.model.version,
    provider: call.model.provider,
    kind: call.kind,
    promptTokens: call.usage.promptTokens,
    completionTokens: call.usage.completionTokens,
    totalTokens: call.usage.totalTokens,
    costUsd: call.usage.costUsd,
    latencyMs: Math.round(performance.now() - call.startedAt),
    timeToFirstTokenMs: call.timeToFirstTokenMs,
    outcome: call.outcome,
    tags: call.tags,
  };
  const labels = { tenant: event.tenant, model: `${event.model}@${event.version}` };
  context.metrics.tokens.inc({ ...labels, kind: 'prompt' }, event.promptTokens);
  context.metrics.tokens.inc({ ...labels, kind: 'completion' }, event.completionTokens);
  context.metrics.costUsd.inc(labels, event.costUsd);
  context.usage.emit(event).catch((error: unknown) => context.log.error({ err: error, usageEvent: event }, 'usage event lost'));
}
