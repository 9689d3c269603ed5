/**
 * One usage event per model call — whole or streamed, successful, failed or cached — written to a
 * Redis Stream (or, without Redis, handed to the in-process aggregator). The usage subgraph
 * consumes the stream with a consumer group and aggregates idempotently by event `id`.
 */
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
}
