/**
 * The provider contract: what a model adapter implements and the only thing the rest of modelgraph
 * knows about providers. Adapters translate wire formats to and from these types and nothing else.
 *
 * Errors from `generate` are thrown as `ProviderError`. Errors from `stream` travel inside the
 * stream as an `error` part, after which the stream ends; the iterator never throws for upstream
 * failures, so a consumer handles every outcome in one `for await` loop.
 */
import type { TokenUsage } from '../platform/metering/spend.ts';
import type { ProviderError } from './errors.ts';

export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ToolCall {
  /** Provider-assigned id that a `tool` message answers. */
  id: string;
  name: string;
  /** JSON text exactly as the model produced it; it may not parse. */
  arguments: string;
}

/** An image for the model to see: a URL the provider fetches, or the bytes themselves (base64). */
export type ImageSource = { url: string } | { mediaType: ImageMediaType; data: string };

export type ImageMediaType = 'image/png' | 'image/jpeg' | 'image/gif' | 'image/webp';

export type ContentPart =
  | { type: 'text'; text: string }
  /** `detail` is OpenAI's resolution hint; other providers have none and ignore it. */
  | { type: 'image'; image: ImageSource; detail?: 'auto' | 'low' | 'high' };

export type ChatMessage =
  | { role: 'system'; content: string }
  /**
   * `content` is the message's text (its text parts, joined); `parts`, when set, is the whole
   * message in order with its images, and adapters send it instead of `content`.
   */
  | { role: 'user'; content: string; parts?: ContentPart[] }
  | { role: 'assistant'; content: string; toolCalls?: ToolCall[] }
  | { role: 'tool'; content: string; toolCallId: string };

export interface ToolDefinition {
  name: string;
  description?: string;
  /** JSON Schema of the arguments object. */
  parameters: Record<string, unknown>;
}

export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

export interface ChatRequest {
  messages: ChatMessage[];
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  stop?: string[];
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  /** JSON instead of text; adapters whose provider cannot are not given models with JSON_SCHEMA. */
  responseFormat?: ResponseFormat;
}

export type ResponseFormat =
  | { type: 'json_object' }
  | { type: 'json_schema'; name: string; schema: Record<string, unknown>; strict: boolean };

export type FinishReason = 'stop' | 'length' | 'tool_calls' | 'content_filter' | 'other';

export type { TokenUsage };

export interface ChatResult {
  /** The provider's response id, when it gives one. */
  id?: string;
  content: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  usage: TokenUsage;
}

export type ChatStreamPart =
  | { type: 'text-delta'; text: string }
  /** A fragment of a tool call; fragments with the same `index` concatenate. */
  | { type: 'tool-call-delta'; index: number; id?: string; name?: string; argumentsDelta: string }
  | { type: 'finish'; finishReason: FinishReason; usage: TokenUsage }
  | { type: 'error'; error: ProviderError };

export interface CallOptions {
  /** Aborting it cancels the upstream request at once. */
  signal: AbortSignal;
  /** Sent upstream where the provider accepts one, and logged. */
  requestId: string;
}

export interface ChatModel {
  readonly provider: string;
  /** The provider's name for the model. */
  readonly modelId: string;
  /** Whether the provider fetches an image given by URL; without it, images go as their bytes only. */
  readonly imageUrls?: boolean;
  generate(request: ChatRequest, options: CallOptions): Promise<ChatResult>;
  stream(request: ChatRequest, options: CallOptions): AsyncIterable<ChatStreamPart>;
}

export interface EmbeddingResult {
  /** One vector per input, in input order. */
  vectors: number[][];
  usage: { promptTokens: number; totalTokens: number };
}

export interface EmbeddingModel {
  readonly provider: string;
  readonly modelId: string;
  /** Most inputs one `embed` call accepts. */
  readonly maxBatchSize: number;
  embed(inputs: string[], options: CallOptions & { dimensions?: number }): Promise<EmbeddingResult>;
}

/** A provider builds models by their upstream name. */
export interface Provider {
  readonly name: string;
  chatModel(modelId: string): ChatModel;
  embeddingModel(modelId: string, defaults: { dimensions: number; maxBatchSize: number }): EmbeddingModel;
  /** Releases pooled connections. */
  close(): Promise<void>;
}
