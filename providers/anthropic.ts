/**
 * The Anthropic Messages API adapter (JSON and SSE). It translates wire formats and nothing else;
 * retries, fallbacks and limits live above the contract. Anthropic has no embeddings API.
 */
import { z } from 'zod';
import type {
  CallOptions,
  ChatMessage,
  ChatModel,
  ChatRequest,
  ChatResult,
  ChatStreamPart,
  ContentPart,
  FinishReason,
  Provider,
  TokenUsage,
  ToolChoice,
} from './contract.ts';
import { type ProviderError, errorFromStatus } from './errors.ts';
import { HttpClient, type Timeouts, type UpstreamResponse } from './http-client.ts';
import { tokenUsage } from './tokens.ts';
import {
  badResponse,
  countedUsage,
  finishOfStopReason,
  isRecord,
  jsonInstruction,
  midStreamError,
  parseJson,
  parseJsonEventStream,
  readErrorMessage,
  readJson,
  redact,
  streamInterrupted,
  streamParts,
  strictSchema,
} from './wire.ts';

export interface AnthropicSettings {
  name: string;
  baseUrl: string;
  apiKey?: string | undefined;
  headers?: Record<string, string>;
  timeouts: Timeouts;
  /** Sent when a request sets no `maxTokens`; Anthropic requires `max_tokens` on every request. */
  defaultMaxTokens?: number;
  /** The `anthropic-version` header. */
  version?: string;
}

/** The contract leaves `maxTokens` optional but Anthropic refuses a request without `max_tokens`. */
const DEFAULT_MAX_TOKENS = 4096;
const DEFAULT_VERSION = '2023-06-01';

// --- wire format: requests ---------------------------------------------------------------------

type WireBlock =
  | { type: 'text'; text: string }
  | { type: 'image'; source: { type: 'url'; url: string } | { type: 'base64'; media_type: string; data: string } }
  | { type: 'tool_use'; id: string; name: string; input: unknown }
  | { type: 'tool_result'; tool_use_id: string; content: string };

interface WireMessage {
  role: 'user' | 'assistant';
  content: WireBlock[];
}

/** Anthropic wants `input` as an object; arguments that do not parse to one are sent as `{}`. */
function toolInput(args: string): unknown {
  const json = parseJson(args);
  return json.ok && isRecord(json.value) ? json.value : {};
}

function toWireBlocks(message: Exclude<ChatMessage, { role: 'system' }>): WireBlock[] {
  // Anthropic rejects empty text blocks, which an assistant turn with only tool calls would carry.
  const text: WireBlock[] = message.content ? [{ type: 'text', text: message.content }] : [];
  switch (message.role) {
    case 'assistant':
      return [
        ...text,
        ...(message.toolCalls ?? []).map(
          (call): WireBlock => ({ type: 'tool_use', id: call.id, name: call.name, input: toolInput(call.arguments) }),
        ),
      ];
    case 'tool':
      return [{ type: 'tool_result', tool_use_id: message.toolCallId, content: message.content }];
    default:
      return message.parts ? message.parts.flatMap(toWirePart) : text;
  }
}

function toWirePart(part: ContentPart): WireBlock[] {
  if (part.type === 'text') return part.text ? [{ type: 'text', text: part.text }] : [];
  const { image } = part;
  return [
    {
      type: 'image',
      source: 'url' in image ? { type: 'url', url: image.url } : { type: 'base64', media_type: image.mediaType, data: image.data },
    },
  ];
}

/**
 * System messages become the top-level `system`; tool results are user turns. Adjacent turns of
 * one role are merged, because every tool_result answering one assistant turn must arrive in the
 * single user turn right after it.
 */
function toWireMessages(messages: readonly ChatMessage[]): { system: string; messages: WireMessage[] } {
  const system: string[] = [];
  const out: WireMessage[] = [];
  for (const message of messages) {
    if (message.role === 'system') {
      system.push(message.content);
      continue;
    }
    const role = message.role === 'assistant' ? 'assistant' : 'user';
    const last = out.at(-1);
    if (last?.role === role) last.content.push(...toWireBlocks(message));
    else out.push({ role, content: toWireBlocks(message) });
  }
  return { system: system.join('\n\n'), messages: out };
}

function toWireToolChoice(choice: ToolChoice): Record<string, string> {
  if (typeof choice === 'object') return { type: 'tool', name: choice.name };
  return { type: choice === 'required' ? 'any' : choice };
}

function toWireRequest(modelId: string, request: ChatRequest, defaultMaxTokens: number, stream: boolean): Record<string, unknown> {
  const { messages, ...rest } = toWireMessages(request.messages);
  // Anthropic's JSON to a schema (`output_config.format`) is strict; the rest is asked for in words.
  const instruction = jsonInstruction(request.responseFormat);
  const system = instruction ? [rest.system, instruction].filter(Boolean).join('\n\n') : rest.system;
  const schema = strictSchema(request.responseFormat);
  return {
    model: modelId,
    max_tokens: request.maxTokens ?? defaultMaxTokens,
    ...(system && { system }),
    ...(schema && { output_config: { format: { type: 'json_schema', schema: schema.schema } } }),
    messages,
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...(request.topP !== undefined && { top_p: request.topP }),
    ...(request.stop?.length && { stop_sequences: request.stop }),
    ...(request.tools?.length && {
      tools: request.tools.map((tool) => ({ name: tool.name, description: tool.description, input_schema: tool.parameters })),
    }),
    ...(request.toolChoice !== undefined && { tool_choice: toWireToolChoice(request.toolChoice) }),
    ...(stream && { stream: true }),
  };
}

// --- wire format: responses --------------------------------------------------------------------

const count = z.number().int().min(0);

/** Every field is optional: message_start and message_delta each carry a part of it. */
const wireUsage = z.object({
  input_tokens: count.nullish(),
  output_tokens: count.nullish(),
  cache_creation_input_tokens: count.nullish(),
  cache_read_input_tokens: count.nullish(),
});
type WireUsage = z.infer<typeof wireUsage>;

const wireToolUse = z.object({ type: z.literal('tool_use'), id: z.string(), name: z.string(), input: z.unknown() });

/** Other block types (thinking, server tools) carry nothing the contract has; they are skipped. */
const wireBlock = z.union([
  z.object({ type: z.literal('text'), text: z.string() }),
  wireToolUse,
  z.object({ type: z.string().refine((type) => type !== 'text' && type !== 'tool_use') }).transform(() => ({ type: 'skipped' as const })),
]);

const wireMessage = z.object({
  id: z.string().optional(),
  content: z.array(wireBlock),
  stop_reason: z.string().nullish(),
  usage: wireUsage.nullish(),
});

const wireError = z.object({ type: z.string().optional(), message: z.string().optional() });

const wireEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('message_start'), message: z.object({ usage: wireUsage.nullish() }) }),
  z.object({
    type: z.literal('content_block_start'),
    index: count,
    content_block: z.object({ type: z.string(), text: z.string().optional(), id: z.string().optional(), name: z.string().optional() }),
  }),
  z.object({
    type: z.literal('content_block_delta'),
    index: count,
    delta: z.object({ type: z.string(), text: z.string().optional(), partial_json: z.string().optional() }),
  }),
  z.object({ type: z.literal('content_block_stop'), index: count }),
  z.object({ type: z.literal('message_delta'), delta: z.object({ stop_reason: z.string().nullish() }), usage: wireUsage.nullish() }),
  z.object({ type: z.literal('message_stop') }),
  z.object({ type: z.literal('ping') }),
  z.object({ type: z.literal('error'), error: wireError }),
]);
type WireEvent = z.infer<typeof wireEvent>;

/** Anthropic may add event types; a client must skip those it does not know. */
const KNOWN_EVENTS = new Set<string>(wireEvent.options.map((option) => option.shape.type.value));
const typedEvent = z.object({ type: z.string() });
/** Only for JSON the event schema refused: an event of a type we do not know, rather than a broken one. */
const isUnknownEvent = (json: unknown): boolean => {
  const event = typedEvent.safeParse(json);
  return event.success && !KNOWN_EVENTS.has(event.data.type);
};

function toFinishReason(reason: string | null | undefined): FinishReason {
  return reason === 'refusal' ? 'content_filter' : (finishOfStopReason(reason) ?? 'other');
}

/** Anthropic's `input_tokens` leaves out the prompt tokens written to or read from its cache. */
function toUsage(usage: WireUsage | null | undefined): TokenUsage | undefined {
  if (usage?.input_tokens == null || usage.output_tokens == null) return undefined;
  const promptTokens = usage.input_tokens + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0);
  return tokenUsage(promptTokens, usage.output_tokens);
}

/** `{type, message}` read as "overloaded_error: Overloaded"; empty when it says neither. */
const describeError = (error: z.infer<typeof wireError>): string => [error.type, error.message].filter(Boolean).join(': ');

const errorBody = z.object({ error: wireError });

/** `{type: 'error', error: {type, message}}`; anything else is logged as the raw text. */
function errorMessageOf(json: unknown): string | undefined {
  const body = errorBody.safeParse(json);
  return (body.success && describeError(body.data.error)) || undefined;
}

// --- the adapter -------------------------------------------------------------------------------

/** What a stream has told so far; the answer is whole only once `message_stop` arrived. */
interface StreamState {
  text: string;
  usage: WireUsage;
  finishReason: FinishReason | undefined;
  /** Tool-use blocks by index, and whether any of their input JSON arrived yet. */
  toolInputSeen: Map<number, boolean>;
  stopped: boolean;
}

class AnthropicChatModel implements ChatModel {
  readonly imageUrls = true;

  constructor(
    readonly provider: string,
    readonly modelId: string,
    private readonly transport: AnthropicTransport,
  ) {}

  async generate(request: ChatRequest, options: CallOptions): Promise<ChatResult> {
    const response = await this.transport.post(toWireRequest(this.modelId, request, this.transport.defaultMaxTokens, false), options);
    const parsed = wireMessage.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success) throw badResponse(this.provider, parsed.error.message);
    const { id, content: blocks, stop_reason, usage } = parsed.data;
    const content = blocks.flatMap((block) => (block.type === 'text' ? [block.text] : [])).join('');
    const toolCalls = blocks.flatMap((block) =>
      block.type === 'tool_use' ? [{ id: block.id, name: block.name, arguments: JSON.stringify(block.input ?? {}) }] : [],
    );
    return {
      ...(id !== undefined && { id }),
      content,
      toolCalls,
      finishReason: toFinishReason(stop_reason),
      usage: toUsage(usage) ?? countedUsage(request, content),
    };
  }

  stream(request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    const connect = () => this.transport.post(toWireRequest(this.modelId, request, this.transport.defaultMaxTokens, true), options);
    return streamParts(this.provider, options.signal, connect, (response) => this.readStream(request, response));
  }

  private async *readStream(request: ChatRequest, response: UpstreamResponse): AsyncGenerator<ChatStreamPart> {
    const state: StreamState = { text: '', usage: {}, finishReason: undefined, toolInputSeen: new Map(), stopped: false };
    const events = parseJsonEventStream(this.provider, response, { schema: wireEvent, what: 'stream event', ignore: isUnknownEvent });
    for await (const event of events) {
      if (!event.success) {
        yield { type: 'error', error: event.error };
        return;
      }
      if (event.value.type === 'error') {
        const upstreamMessage = this.transport.redact(describeError(event.value.error)) || undefined;
        yield { type: 'error', error: midStreamError(this.provider, upstreamMessage) };
        return;
      }
      yield* partsOf(event.value, state);
      if (state.stopped) break;
    }
    if (!state.stopped) {
      yield { type: 'error', error: streamInterrupted(this.provider) };
      return;
    }
    yield { type: 'finish', finishReason: state.finishReason ?? 'other', usage: toUsage(state.usage) ?? countedUsage(request, state.text) };
  }
}

/** The parts one event yields, updating `state`. Tool-call parts are indexed by content block. */
function* partsOf(event: Exclude<WireEvent, { type: 'error' }>, state: StreamState): Generator<ChatStreamPart> {
  switch (event.type) {
    case 'message_start':
      mergeUsage(state.usage, event.message.usage);
      return;
    case 'content_block_start': {
      const block = event.content_block;
      if (block.type === 'tool_use' && block.id !== undefined && block.name !== undefined) {
        state.toolInputSeen.set(event.index, false);
        yield { type: 'tool-call-delta', index: event.index, id: block.id, name: block.name, argumentsDelta: '' };
      } else if (block.type === 'text' && block.text) {
        state.text += block.text;
        yield { type: 'text-delta', text: block.text };
      }
      return;
    }
    case 'content_block_delta': {
      const { delta, index } = event;
      if (delta.type === 'text_delta' && delta.text) {
        state.text += delta.text;
        yield { type: 'text-delta', text: delta.text };
      }
      // Only for tool_use blocks we announced: server tools (web search) stream their input JSON too.
      if (delta.type === 'input_json_delta' && delta.partial_json && state.toolInputSeen.has(index)) {
        state.toolInputSeen.set(index, true);
        yield { type: 'tool-call-delta', index, argumentsDelta: delta.partial_json };
      }
      return;
    }
    case 'content_block_stop':
      // A tool called without arguments streams no input JSON; its input is the empty object.
      if (state.toolInputSeen.get(event.index) === false) yield { type: 'tool-call-delta', index: event.index, argumentsDelta: '{}' };
      return;
    case 'message_delta':
      if (event.delta.stop_reason) state.finishReason = toFinishReason(event.delta.stop_reason);
      mergeUsage(state.usage, event.usage);
      return;
    case 'message_stop':
      state.stopped = true;
      return;
    case 'ping':
      return;
  }
}

/** message_delta's counts are cumulative, so later values replace earlier ones. */
function mergeUsage(into: WireUsage, from: WireUsage | null | undefined): void {
  for (const [key, value] of Object.entries(from ?? {}) as [keyof WireUsage, number | null | undefined][]) {
    if (value != null) into[key] = value;
  }
}

/** Base URL, auth and version headers, the pooled client. */
class AnthropicTransport extends HttpClient {
  readonly #headers: Record<string, string>;
  readonly defaultMaxTokens: number;

  constructor(private readonly settings: AnthropicSettings) {
    super(settings.name, settings.timeouts);
    this.defaultMaxTokens = settings.defaultMaxTokens ?? DEFAULT_MAX_TOKENS;
    this.#headers = {
      ...settings.headers,
      'anthropic-version': settings.version ?? DEFAULT_VERSION,
      ...(settings.apiKey && { 'x-api-key': settings.apiKey }),
    };
  }

  /**
   * POSTs to /v1/messages and returns a 2xx response; any other status becomes a ProviderError.
   * Anthropic takes no client request id (it assigns its own `request-id`), so none is sent.
   */
  post(body: unknown, options: CallOptions): Promise<UpstreamResponse> {
    const url = `${this.settings.baseUrl.replace(/\/+$/, '')}/v1/messages`;
    return this.postJson(url, body, {
      headers: this.#headers,
      signal: options.signal,
      refusal: (response) => this.#refusal(response),
    });
  }

  async #refusal(response: UpstreamResponse): Promise<ProviderError> {
    const message = this.redact(await readErrorMessage(response, errorMessageOf));
    return errorFromStatus(this.settings.name, response.status, response.headers, message);
  }

  /** Upstream messages are logged; an upstream may echo the key it refused. */
  redact(message: string | undefined): string | undefined {
    return redact(message, this.settings.apiKey);
  }
}

export function createAnthropicProvider(settings: AnthropicSettings): Provider {
  const transport = new AnthropicTransport(settings);
  return {
    name: settings.name,
    chatModel: (modelId) => new AnthropicChatModel(settings.name, modelId, transport),
    embeddingModel: (modelId) => {
      throw new Error(`provider ${settings.name} (Anthropic) has no embeddings API; ${modelId} cannot embed`);
    },
    close: () => transport.close(),
  };
}
