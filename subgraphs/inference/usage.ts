/**
 * The usage event of each chat, whole or streamed: exactly one per call, emitted when the call
 * ends (answered, cached, failed, or left by the caller), never blocking the answer.
 */
import { emitUsage, type MeteredCallRecord } from '../../platform/metering/usage-event.ts';
import type { InferenceContext } from './context.ts';

export type ChatOutcome = Omit<MeteredCallRecord, 'principal' | 'kind'> & { kind: 'chat' | 'chat_stream' };

export function emitChatUsage(context: InferenceContext, call: ChatOutcome): void {
  const event = emitUsage(context.usage, context.log, { ...call, principal: context.principal });
  const labels = { tenant: event.tenant, model: `${event.model}@${event.version}` };
  context.metrics.tokens.inc({ ...labels, kind: 'prompt' }, event.promptTokens);
  context.metrics.tokens.inc({ ...labels, kind: 'completion' }, event.completionTokens);
  context.metrics.costUsd.inc(labels, event.costUsd);
}
