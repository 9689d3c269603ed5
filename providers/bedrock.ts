/**
 * The AWS Bedrock adapter: the Converse and ConverseStream operations of bedrock-runtime, which give
 * every Bedrock chat model (Claude, Nova, Llama, Mistral, …) one request and response shape.
 * Requests are signed with SigV4 (service `bedrock`); streamed answers arrive as binary AWS
 * event-stream frames, not SSE. It translates wire formats and nothing else; retries, fallbacks
 * and limits live above the contract.
 */
import { Sha256 } from '@aws-crypto/sha256-js';
import { EventStreamCodec, type Message } from '@smithy/eventstream-codec';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
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
import { ProviderError, errorFromStatus, type ProviderErrorCode } from './errors.ts';
import { HttpClient, type Timeouts, type UpstreamResponse } from './http-client.ts';
import { tokenUsage } from './tokens.ts';
import {
  UPSTREAM_MESSAGE_CHARS,
  badResponse,
  countedUsage,
  finishOfStopReason,
  isRecord,
  jsonInstruction,
  midStreamError,
  parseJson,
  parseJsonEvent,
  readErrorMessage,
  readJson,
  redact,
  streamInterrupted,
  streamParts,
  strictSchema,
} from './wire.ts';

export interface BedrockCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** Set for temporary credentials (STS, SSO, instance roles); sent as x-amz-security-token. */
  sessionToken?: string;
}

export interface BedrockSettings {
  name: string;
  /** The bedrock-runtime endpoint, e.g. https://bedrock-runtime.us-east-1.amazonaws.com. */
  endpoint: string;
  /** The region the signature is scoped to; it must be the endpoint's region. */
  region: string;
  credentials: BedrockCredentials;
  timeouts: Timeouts;
}

// --- wire format: requests ---------------------------------------------------------------------

type WireContentBlock =
  | { text: string }
  | { image: { format: string; source: { bytes: string } } }
  | { toolUse: { toolUseId: string; name: string; input: unknown } }
  | { toolResult: { toolUseId: string; content: ({ json: unknown } | { text: string })[] } };

interface WireMessage {
  role: 'user' | 'assistant';
  content: WireContentBlock[];
}

interface WireRequest {
  messages: WireMessage[];
  system?: { text: string }[];
  inferenceConfig?: { maxTokens?: number; temperature?: number; topP?: number; stopSequences?: string[] };
  outputConfig?: { textFormat: { type: 'json_schema'; structure: { jsonSchema: { name: string; schema: string } } } };
  toolConfig?: {
    tools: { toolSpec: { name: string; description?: string; inputSchema: { json: Record<string, unknown> } } }[];
    toolChoice?: { auto: Record<string, never> } | { any: Record<string, never> } | { tool: { name: string } };
  };
}

/**
 * Bedrock wants tool input as a JSON document, where the contract keeps the model's text. Text
 * that does not parse goes back as a JSON string rather than being dropped: the model sees what
 * it wrote, and a model that insists on an object answers with a ValidationException.
 */
function toolInput(text: string): unknown {
  if (text.trim() === '') return {};
  const parsed = parseJson(text);
  return parsed.ok ? parsed.value : text;
}

/** A JSON object result travels as structured data; anything else as the text it is. */
function toolResultContent(content: string): { json: unknown } | { text: string } {
  const parsed = parseJson(content);
  return parsed.ok && isRecord(parsed.value) ? { json: parsed.value } : { text: content };
}

function toWireContent(message: Exclude<ChatMessage, { role: 'system' }>): WireContentBlock[] {
  switch (message.role) {
    case 'assistant': {
      const calls = message.toolCalls ?? [];
      // Bedrock rejects blank text blocks, so a pure tool-call turn carries only its toolUse blocks.
      const text: WireContentBlock[] = message.content !== '' || calls.length === 0 ? [{ text: message.content }] : [];
      return [...text, ...calls.map((call) => ({ toolUse: { toolUseId: call.id, name: call.name, input: toolInput(call.arguments) } }))];
    }
    case 'tool':
      return [{ toolResult: { toolUseId: message.toolCallId, content: [toolResultContent(message.content)] } }];
    default:
      return message.parts ? message.parts.map(toWirePart) : [{ text: message.content }];
  }
}

/** Converse takes an image as its bytes (or from S3), never by URL; the catalog sends it bytes only. */
function toWirePart(part: ContentPart): WireContentBlock {
  if (part.type === 'text') return { text: part.text };
  const { image } = part;
  if ('url' in image) {
    throw new ProviderError('bedrock takes images as their bytes, not by URL', {
      code: 'UPSTREAM_BAD_REQUEST',
      provider: 'bedrock',
      retryable: false,
    });
  }
  return { image: { format: image.mediaType.slice('image/'.length), source: { bytes: image.data } } };
}

/**
 * System messages move to the top-level `system` field, wherever they were. Tool results travel in
 * user turns, and Converse requires turns to alternate, so consecutive turns of one role (several
 * tool results, or tool results followed by user text) merge into one message.
 */
function toWireMessages(messages: readonly ChatMessage[]): Pick<WireRequest, 'messages' | 'system'> {
  const system: { text: string }[] = [];
  const wire: WireMessage[] = [];
  for (const message of messages) {
    if (message.role === 'system') {
      system.push({ text: message.content });
      continue;
    }
    const role = message.role === 'assistant' ? 'assistant' : 'user';
    const content = toWireContent(message);
    const last = wire.at(-1);
    if (last?.role === role) last.content.push(...content);
    else wire.push({ role, content });
  }
  return { messages: wire, ...(system.length > 0 && { system }) };
}

/**
 * Converse has no "none" tool choice: for 'none' we still send the tools (Bedrock refuses a
 * conversation holding toolUse blocks without a toolConfig) and omit toolChoice, so the model is
 * not forced to call one but may still do so.
 */
function toWireToolChoice(choice: ToolChoice | undefined): NonNullable<WireRequest['toolConfig']>['toolChoice'] {
  if (choice === undefined || choice === 'none') return undefined;
  if (choice === 'auto') return { auto: {} };
  if (choice === 'required') return { any: {} };
  return { tool: { name: choice.name } };
}

function toWireRequest(request: ChatRequest): WireRequest {
  const wire = toWireMessages(request.messages);
  // Converse's JSON to a schema (`outputConfig.textFormat`, the schema as JSON text) is strict; the rest is asked for in words.
  const instruction = jsonInstruction(request.responseFormat);
  if (instruction) wire.system = [...(wire.system ?? []), { text: instruction }];
  const schema = strictSchema(request.responseFormat);
  const inferenceConfig = {
    ...(request.maxTokens !== undefined && { maxTokens: request.maxTokens }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...(request.topP !== undefined && { topP: request.topP }),
    ...(request.stop?.length && { stopSequences: request.stop }),
  };
  const toolChoice = toWireToolChoice(request.toolChoice);
  return {
    ...wire,
    ...(Object.keys(inferenceConfig).length > 0 && { inferenceConfig }),
    ...(schema && {
      outputConfig: {
        textFormat: { type: 'json_schema', structure: { jsonSchema: { name: schema.name, schema: JSON.stringify(schema.schema) } } },
      },
    }),
    ...(request.tools?.length && {
      toolConfig: {
        tools: request.tools.map((tool) => ({
          toolSpec: {
            name: tool.name,
            ...(tool.description !== undefined && { description: tool.description }),
            inputSchema: { json: tool.parameters },
          },
        })),
        ...(toolChoice && { toolChoice }),
      },
    }),
  };
}

// --- wire format: responses --------------------------------------------------------------------

const wireUsage = z.object({
  inputTokens: z.number().int().min(0),
  outputTokens: z.number().int().min(0),
  totalTokens: z.number().int().min(0).optional(),
});

/** Other block kinds (reasoningContent, citations, images) carry neither field and are skipped. */
const wireContentBlock = z.object({
  text: z.string().optional(),
  toolUse: z.object({ toolUseId: z.string(), name: z.string(), input: z.unknown() }).optional(),
});

const wireConverse = z.object({
  output: z.object({ message: z.object({ content: z.array(wireContentBlock) }) }),
  stopReason: z.string(),
  usage: wireUsage.optional(),
});

const blockIndex = z.number().int().min(0);

/** Payloads of the stream events we read; each also carries a random `p` padding field. */
const wireStreamEvents = {
  contentBlockStart: z.object({
    contentBlockIndex: blockIndex,
    start: z.object({ toolUse: z.object({ toolUseId: z.string(), name: z.string() }).optional() }),
  }),
  contentBlockDelta: z.object({
    contentBlockIndex: blockIndex,
    delta: z.object({ text: z.string().optional(), toolUse: z.object({ input: z.string() }).optional() }),
  }),
  messageStop: z.object({ stopReason: z.string() }),
  metadata: z.object({ usage: wireUsage.optional() }),
};

type WireStreamEvent = {
  [K in keyof typeof wireStreamEvents]: { type: K; payload: z.infer<(typeof wireStreamEvents)[K]> };
}[keyof typeof wireStreamEvents];

const isReadEvent = (type: string): type is keyof typeof wireStreamEvents => Object.hasOwn(wireStreamEvents, type);

function toFinishReason(reason: string): FinishReason {
  if (reason === 'guardrail_intervened' || reason === 'content_filtered') return 'content_filter';
  return finishOfStopReason(reason) ?? 'other';
}

const toUsage = (usage: z.infer<typeof wireUsage>): TokenUsage => tokenUsage(usage.inputTokens, usage.outputTokens, usage.totalTokens);

/** AWS says why in `{message}` (some services `{Message}`). */
function errorMessageOf(json: unknown): string | undefined {
  const said = isRecord(json) ? (json.message ?? json.Message) : undefined;
  return typeof said === 'string' ? said : undefined;
}

/** AWS names the error in x-amzn-ErrorType ("ThrottlingException:http://internal…"), read as "ThrottlingException: why". */
async function readError(response: UpstreamResponse): Promise<{ type: string | undefined; message: string | undefined }> {
  const type = response.headers.get('x-amzn-errortype')?.split(':')[0]?.trim() || undefined;
  const message = (await readErrorMessage(response, errorMessageOf)) || undefined;
  return { type, message: type && message ? `${type}: ${message}` : (message ?? type) };
}

/**
 * ModelNotReadyException (a model still loading, answered as 429) is an unavailable model, not a
 * quota: the router should try elsewhere rather than back off the account.
 */
function errorFromResponse(
  provider: string,
  response: UpstreamResponse,
  type: string | undefined,
  message: string | undefined,
): ProviderError {
  const error = errorFromStatus(provider, response.status, response.headers, message);
  if (type !== 'ModelNotReadyException' || error.code === 'UPSTREAM_UNAVAILABLE') return error;
  return new ProviderError(`${provider} model is not ready`, {
    code: 'UPSTREAM_UNAVAILABLE',
    provider,
    status: error.status,
    retryable: true,
    ...(error.retryAfterMs !== undefined && { retryAfterMs: error.retryAfterMs }),
    ...(message !== undefined && { upstreamMessage: message }),
  });
}

// --- wire format: the event stream -------------------------------------------------------------

const codec = new EventStreamCodec(toUtf8, fromUtf8);
/** AWS caps an event-stream message at 16 MiB; a larger prelude length is garbage, not a frame. */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Prelude (length, header length, CRC) plus the trailing message CRC. */
const MIN_FRAME_BYTES = 16;

function append(buffered: Uint8Array, chunk: Uint8Array): Uint8Array {
  if (buffered.byteLength === 0) return chunk;
  const joined = new Uint8Array(buffered.byteLength + chunk.byteLength);
  joined.set(buffered);
  joined.set(chunk, buffered.byteLength);
  return joined;
}

/**
 * Cuts a body into event-stream messages wherever its chunks happen to end: a frame's first four
 * bytes are its total length, and EventStreamCodec checks both CRCs and parses the headers. A
 * corrupt frame throws a bad-response ProviderError; a body that ends inside a frame throws an
 * interrupted one; transport errors pass through as thrown. Exported for its framing tests; it
 * belongs next to sse.ts once a second AWS adapter needs it.
 */
export async function* decodeEventStream(body: AsyncIterable<Uint8Array>, provider: string): AsyncGenerator<Message> {
  let buffered: Uint8Array = new Uint8Array(0);
  for await (const chunk of body) {
    buffered = append(buffered, chunk);
    while (buffered.byteLength >= 4) {
      const length = new DataView(buffered.buffer, buffered.byteOffset, 4).getUint32(0);
      if (length < MIN_FRAME_BYTES || length > MAX_FRAME_BYTES)
        throw badResponse(provider, `event-stream frame length ${length} is impossible`);
      if (buffered.byteLength < length) break;
      let message: Message;
      try {
        message = codec.decode(buffered.subarray(0, length));
      } catch (error) {
        throw badResponse(provider, 'event-stream frame is corrupt', error);
      }
      buffered = buffered.subarray(length);
      yield message;
    }
  }
  if (buffered.byteLength > 0) throw streamInterrupted(provider, `body ended inside an event-stream frame (${buffered.byteLength} bytes)`);
}

function stringHeader(message: Message, name: string): string | undefined {
  const header = message.headers[name];
  return header?.type === 'string' ? header.value : undefined;
}

/** Bedrock's in-stream exceptions, by their `:exception-type` (camel-cased, unlike HTTP errors). */
function codeForStreamException(type: string): ProviderErrorCode {
  if (type === 'throttlingException') return 'UPSTREAM_RATE_LIMITED';
  if (type === 'validationException') return 'UPSTREAM_BAD_REQUEST';
  return 'UPSTREAM_UNAVAILABLE';
}

// --- the adapter -------------------------------------------------------------------------------

interface StreamState {
  /** Text and tool arguments so far, to count usage when Bedrock reports none. */
  completion: string;
  finishReason?: FinishReason;
  usage?: TokenUsage;
}

class BedrockChatModel implements ChatModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    private readonly transport: BedrockTransport,
  ) {}

  async generate(request: ChatRequest, options: CallOptions): Promise<ChatResult> {
    const response = await this.transport.post(this.modelId, 'converse', toWireRequest(request), options);
    const parsed = wireConverse.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success) throw badResponse(this.provider, parsed.error.message);
    const { output, stopReason, usage } = parsed.data;
    const content = output.message.content.flatMap((block) => (block.text !== undefined ? [block.text] : [])).join('');
    const toolCalls = output.message.content.flatMap((block) =>
      block.toolUse
        ? [{ id: block.toolUse.toolUseId, name: block.toolUse.name, arguments: JSON.stringify(block.toolUse.input ?? {}) }]
        : [],
    );
    const id = response.headers.get('x-amzn-requestid');
    return {
      ...(id && { id }),
      content,
      toolCalls,
      finishReason: toFinishReason(stopReason),
      usage: usage ? toUsage(usage) : countedUsage(request, content + toolCalls.map((call) => call.arguments).join('')),
    };
  }

  stream(request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    const connect = () => this.transport.post(this.modelId, 'converse-stream', toWireRequest(request), options);
    return streamParts(this.provider, options.signal, connect, (response) => this.readStream(request, response));
  }

  /** Complete once messageStop has arrived and the body ends; metadata (usage) may follow the stop. */
  private async *readStream(request: ChatRequest, response: UpstreamResponse): AsyncGenerator<ChatStreamPart> {
    const contentType = response.headers.get('content-type') ?? '';
    if (!contentType.includes('application/vnd.amazon.eventstream')) {
      response.cancel();
      yield { type: 'error', error: badResponse(this.provider, `expected an event stream, got ${contentType || 'no body'}`) };
      return;
    }
    const state: StreamState = { completion: '' };
    for await (const message of decodeEventStream(response.body, this.provider)) {
      for (const part of this.partsOf(message, state)) {
        yield part;
        if (part.type === 'error') return;
      }
    }
    if (state.finishReason === undefined) {
      yield { type: 'error', error: streamInterrupted(this.provider, 'body ended before messageStop') };
      return;
    }
    yield { type: 'finish', finishReason: state.finishReason, usage: state.usage ?? countedUsage(request, state.completion) };
  }

  /** One frame → the parts it yields: events by `:event-type`; exceptions and errors end the stream. */
  private partsOf(message: Message, state: StreamState): ChatStreamPart[] {
    const messageType = stringHeader(message, ':message-type');
    if (messageType === 'exception' || messageType === 'error') return [{ type: 'error', error: this.streamError(message, messageType) }];
    const eventType = stringHeader(message, ':event-type');
    // messageStart and contentBlockStop carry nothing the contract needs; unknown events are newer than us.
    if (messageType !== 'event' || eventType === undefined || !isReadEvent(eventType)) return [];
    const names = { text: `${eventType} payload`, event: eventType };
    const parsed = parseJsonEvent(this.provider, toUtf8(message.body), wireStreamEvents[eventType], names);
    if (!parsed.success) return [{ type: 'error', error: parsed.error }];
    // TypeScript cannot tie parsed.value to eventType; the schema picked by eventType parsed it.
    return partsOfEvent({ type: eventType, payload: parsed.value } as WireStreamEvent, state);
  }

  private streamError(message: Message, messageType: 'exception' | 'error'): ProviderError {
    const type =
      (messageType === 'exception' ? stringHeader(message, ':exception-type') : stringHeader(message, ':error-code')) ?? 'unknownException';
    const payload = parseJson(toUtf8(message.body));
    const said = payload.ok ? (payload.value as { message?: unknown } | null)?.message : undefined;
    const detail = typeof said === 'string' ? said : stringHeader(message, ':error-message');
    const upstreamMessage = redact(detail ? `${type}: ${detail.slice(0, UPSTREAM_MESSAGE_CHARS)}` : type, ...this.transport.secrets);
    return midStreamError(this.provider, upstreamMessage, { code: codeForStreamException(type), reported: type });
  }
}

/** Tool-call fragments are indexed by contentBlockIndex; the id and name come with the block's start. */
function partsOfEvent(event: WireStreamEvent, state: StreamState): ChatStreamPart[] {
  switch (event.type) {
    case 'contentBlockStart': {
      const toolUse = event.payload.start.toolUse;
      if (!toolUse) return [];
      return [
        { type: 'tool-call-delta', index: event.payload.contentBlockIndex, id: toolUse.toolUseId, name: toolUse.name, argumentsDelta: '' },
      ];
    }
    case 'contentBlockDelta': {
      const { delta, contentBlockIndex } = event.payload;
      if (delta.text) {
        state.completion += delta.text;
        return [{ type: 'text-delta', text: delta.text }];
      }
      if (delta.toolUse) {
        state.completion += delta.toolUse.input;
        return [{ type: 'tool-call-delta', index: contentBlockIndex, argumentsDelta: delta.toolUse.input }];
      }
      return []; // reasoning and citation deltas have no place in the contract yet
    }
    case 'messageStop':
      state.finishReason = toFinishReason(event.payload.stopReason);
      return [];
    case 'metadata':
      if (event.payload.usage) state.usage = toUsage(event.payload.usage);
      return [];
  }
}

type Operation = 'converse' | 'converse-stream';

/** Shared by a provider's models: endpoint, the SigV4 signer, the pooled client. */
class BedrockTransport extends HttpClient {
  readonly #signer: SignatureV4;
  readonly #endpoint: string;

  constructor(private readonly settings: BedrockSettings) {
    super(settings.name, settings.timeouts);
    this.#endpoint = settings.endpoint.replace(/\/+$/, '');
    this.#signer = new SignatureV4({ service: 'bedrock', region: settings.region, credentials: settings.credentials, sha256: Sha256 });
  }

  /** What upstream messages must never repeat into our logs. */
  get secrets(): readonly (string | undefined)[] {
    return [this.settings.credentials.secretAccessKey, this.settings.credentials.sessionToken];
  }

  /**
   * Signs and POSTs, returning a 2xx response; any other status becomes a ProviderError. The model
   * id is one path segment (ids hold ':' and ARNs hold '/'), escaped once in the URL; the signer
   * escapes it again for the canonical request, as AWS expects.
   */
  async post(modelId: string, operation: Operation, body: WireRequest, options: CallOptions): Promise<UpstreamResponse> {
    const url = new URL(`${this.#endpoint}/model/${encodeURIComponent(modelId)}/${operation}`);
    const headers = await this.sign(url, operation, body);
    // Bedrock takes no client request id header, so options.requestId stays in our own logs.
    return this.postJson(url.href, body, { headers, signal: options.signal, refusal: (response) => this.#refusal(response) });
  }

  async #refusal(response: UpstreamResponse): Promise<ProviderError> {
    const { type, message } = await readError(response);
    return errorFromResponse(this.settings.name, response, type, redact(message, ...this.secrets));
  }

  /**
   * The signature covers the body, so we sign JSON.stringify(body) — exactly what postJson sends —
   * and every header we send ourselves. Host is signed but not passed on: undici derives the same
   * value from the URL.
   */
  private async sign(url: URL, operation: Operation, body: WireRequest): Promise<Record<string, string>> {
    const request = new HttpRequest({
      method: 'POST',
      protocol: url.protocol,
      hostname: url.hostname,
      ...(url.port && { port: Number(url.port) }),
      path: url.pathname,
      headers: {
        host: url.host,
        'content-type': 'application/json',
        accept: operation === 'converse-stream' ? 'application/vnd.amazon.eventstream' : 'application/json',
      },
      body: JSON.stringify(body),
    });
    const signed = await this.#signer.sign(request);
    return Object.fromEntries(Object.entries(signed.headers).filter(([name]) => name !== 'host'));
  }
}

export function createBedrockProvider(settings: BedrockSettings): Provider {
  const transport = new BedrockTransport(settings);
  return {
    name: settings.name,
    chatModel: (modelId) => new BedrockChatModel(settings.name, modelId, transport),
    // Titan and Cohere embeddings use InvokeModel with per-model bodies, not Converse; they come later.
    embeddingModel: (modelId) => {
      throw new Error(`${settings.name}: Bedrock embedding models are not supported yet (asked for ${modelId})`);
    },
    close: () => transport.close(),
  };
}
