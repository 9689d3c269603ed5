/**
 * One usage event per model call — whole or streamed, successful, failed or cached — written to a
 * Redis Stream (or, without Redis, handed to the in-process aggregator). The usage subgraph
 * consumes the stream with a consumer group and aggregates idempotently by event `id`. Events are
 * built by `usageEvent` and nowhere else.
 */
import { randomUUID } from 'node:crypto';
import { holderOf, type Principal } from '../identity/principal.ts';
import type { Registry } from 'prom-client';
import type { Logger } from '../logger.ts';
import type { Spend } from './spend.ts';

export interface UsageEvent {
  /** Unique per call: the idempotency key of aggregation. */
  id: string;
  /** ISO-8601 time the call ended. */
  time: string;
  tenant: string;
  /** The API key id, or `jwt:<subject>` / `anonymous`. */
  key: string;
  /** Model id and version that served (or would have served) the call. */
  model: string;
  version: string;
  provider: string;
  kind: 'chat' | 'chat_stream' | 'embeddings';
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  costUsd: number;
  latencyMs: number;
  /** Streams only. */
  timeToFirstTokenMs: number | null;
  /** `ok`, `cached`, or the error code. */
  outcome: string;
  /** The caller's request tags (sorted, unique). */
  tags: string[];
}

/** Where usage events go. */
export interface UsageSink {
  /** Appends an event; rejects if it could not be stored (the caller logs it). */
  emit(event: UsageEvent): Promise<void>;
  /** Why no model call may start now (the sink could not keep its event), or undefined. */
  refusal?(): Error | undefined;
  /** Adds the sink's own metrics to a server's registry. */
  registerMetrics?(registry: Registry): void;
}

/** What a model call was, as its usage event tells it. */
export interface MeteredCallRecord {
  principal: Principal;
  /** The version that served the call (or would have). */
  model: { id: string; version: string; provider: string };
  kind: UsageEvent['kind'];
  usage: Spend;
  /** `performance.now()` when the call started. */
  startedAt: number;
  timeToFirstTokenMs: number | null;
  /** `ok`, `cached`, or the error code. */
  outcome: string;
  tags: string[];
}

/** The usage event of a call that ends now. */
export function usageEvent(call: MeteredCallRecord): UsageEvent {
  const { principal, model, usage } = call;
  return {
    id: randomUUID(),
    time: new Date().toISOString(),
    tenant: principal.tenantId,
    key: holderOf(principal),
    model: model.id,
    version: model.version,
    provider: model.provider,
    kind: call.kind,
    promptTokens: usage.promptTokens,
    completionTokens: usage.completionTokens,
    totalTokens: usage.totalTokens,
    costUsd: usage.costUsd,
    latencyMs: Math.round(performance.now() - call.startedAt),
    timeToFirstTokenMs: call.timeToFirstTokenMs,
    outcome: call.outcome,
    tags: call.tags,
  };
}

/**
 * Builds and emits a call's usage event without making the caller wait: an event that could not be
 * stored is logged with its content, never thrown. Returns the event.
 */
export function emitUsage(sink: UsageSink, log: Logger, call: MeteredCallRecord): UsageEvent {
  const event = usageEvent(call);
  sink.emit(event).catch((error: unknown) => log.error({ err: error, usageEvent: event }, 'usage event lost'));
  return event;
}
