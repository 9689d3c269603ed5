/**
 * The Google Gemini adapter: generateContent (JSON), streamGenerateContent (SSE, `alt=sse`) and
 * batchEmbedContents, as the Gemini API (generativelanguage.googleapis.com/v1beta) speaks them.
 * It translates wire formats and nothing else; retries, fallbacks and limits live above the contract.
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
  EmbeddingModel,
  EmbeddingResult,
  FinishReason,
  Provider,
  TokenUsage,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from './contract.ts';
import { ProviderError, errorFromStatus } from './errors.ts';
import { HttpClient, type Timeouts, type UpstreamResponse } from './http-client.ts';
import { countTextTokens, tokenUsage } from './tokens.ts';
import {
  UPSTREAM_MESSAGE_CHARS,
  badResponse,
  countedUsage,
  isRecord,
  midStreamError,
  parseJson,
  parseJsonEventStream,
  readJson,
  redact,
  streamInterrupted,
  streamParts,
} from './wire.ts';

export interface GeminiSettings {
  name: string;
  /** Up to and including the API version, e.g. `https://generativelanguage.googleapis.com/v1beta`. */
  baseUrl: string;
  apiKey?: string | undefined;
  headers?: Record<string, string>;
  timeouts: Timeouts;
}

/** batchEmbedContents refuses more ("at most 100 requests can be in one batch"). */
const MAX_EMBED_BATCH = 100;

// --- tool-call ids -----------------------------------------------------------------------------

/**
 * Gemini gives function calls no ids, so they are numbered by position in the answer. Gemini 3
 * also refuses (HTTP 400) a history whose function calls lack the `thoughtSignature` they came
 * with; the contract has no field for it, so it travels in the id, which clients hand back as is.
 * `~` is in neither base64 alphabet, so the split is unambiguous.
 */
const SIGNED_ID = /^call_\d+~(.+)$/s;

function toolCallId(index: number, signature: string | null | undefined): string {
  return signature ? `call_${index}~${signature}` : `call_${index}`;
}

function signatureOf(id: string): string | undefined {
  return SIGNED_ID.exec(id)?.[1];
}

// --- wire format: requests ---------------------------------------------------------------------

type WirePart =
  | { text: string }
  | { inlineData: { mimeType: string; data: string } }
  | { functionCall: { name: string; args: Record<string, unknown> }; thoughtSignature?: string }
  | { functionResponse: { name: string; response: Record<string, unknown> } };

interface WireContent {
  role: 'user' | 'model';
  parts: WirePart[];
}

/** Call arguments and tool results are protobuf Structs on the wire: anything but an object is wrapped. */
function toStruct(text: string): Record<string, unknown> {
  const json = parseJson(text);
  // Plain text is wrapped as the string it is.
  const value = json.ok ? json.value : text;
  return isRecord(value) ? value : { result: value };
}

/** Gemini refuses empty text parts ("empty text parameter"), so empty content sends none. */
const textParts = (text: string): WirePart[] => (text ? [{ text }] : []);

/** Images go inline: Gemini fetches no URLs but its own Files API's, and the catalog sends it bytes only. */
function toWirePart(part: ContentPart): WirePart[] {
  if (part.type === 'text') return textParts(part.text);
  const { image } = part;
  if ('url' in image) {
    throw new ProviderError('gemini takes images as their bytes, not by URL', {
      code: 'UPSTREAM_BAD_REQUEST',
      provider: 'gemini',
      retryable: false,
    });
  }
  return [{ inlineData: { mimeType: image.mediaType, data: image.data } }];
}

function toFunctionCallPart(call: ToolCall): WirePart {
  const signature = signatureOf(call.id);
  return { functionCall: { name: call.name, args: toStruct(call.arguments) }, ...(signature && { thoughtSignature: signature }) };
}

/** Gemini matches a function response to its call by name: the name of the call this result answers. */
function answeredToolName(provider: string, messages: ChatMessage[], index: number, toolCallId: string): string {
  for (let at = index - 1; at >= 0; at--) {
    const message = messages[at]!;
    const call = message.role === 'assistant' ? message.toolCalls?.find((candidate) => candidate.id === toolCallId) : undefined;
    if (call) return call.name;
  }
  throw new ProviderError(`${provider} needs the tool call that a tool result answers`, {
    code: 'UPSTREAM_BAD_REQUEST',
    provider,
    retryable: false,
    upstreamMessage: `no earlier assistant tool call has id ${toolCallId}`,
  });
}

/**
 * System messages become the system instruction wherever they stand (Gemini has no system turn).
 * Consecutive turns of one role merge: the responses to parallel calls must share one turn.
 */
function toWireContents(provider: string, messages: ChatMessage[]): { system: string[]; contents: WireContent[] } {
  const system: string[] = [];
  const contents: WireContent[] = [];
  const add = (role: WireContent['role'], parts: WirePart[]) => {
    if (parts.length === 0) return;
    const last = contents.at(-1);
    if (last?.role === role) last.parts.push(...parts);
    else contents.push({ role, parts });
  };
  messages.forEach((message, index) => {
    switch (message.role) {
      case 'system':
        system.push(message.content);
        break;
      case 'user':
        add('user', message.parts ? message.parts.flatMap(toWirePart) : textParts(message.content));
        break;
      case 'assistant':
        add('model', [...textParts(message.content), ...(message.toolCalls ?? []).map(toFunctionCallPart)]);
        break;
      case 'tool': {
        const name = answeredToolName(provider, messages, index, message.toolCallId);
        add('user', [{ functionResponse: { name, response: toStruct(message.content) } }]);
        break;
      }
    }
  });
  return { system, contents };
}

/**
 * Tool parameters are JSON Schema, which Gemini takes as `parametersJsonSchema` (its `parameters`
 * is an OpenAPI subset that refuses keywords such as `additionalProperties`). A function without
 * parameters declares none: Gemini refuses an object schema without properties.
 */
function toFunctionDeclaration(tool: ToolDefinition): Record<string, unknown> {
  const properties = tool.parameters.properties;
  const hasParameters = tool.parameters.type !== 'object' || (isRecord(properties) && Object.keys(properties).length > 0);
  return {
    name: tool.name,
    ...(tool.description !== undefined && { description: tool.description }),
    ...(hasParameters && { parametersJsonSchema: tool.parameters }),
  };
}

function toFunctionCallingConfig(choice: ToolChoice): Record<string, unknown> {
  switch (choice) {
    case 'auto':
      return { mode: 'AUTO' };
    case 'none':
      return { mode: 'NONE' };
    case 'required':
      return { mode: 'ANY' };
    default:
      return { mode: 'ANY', allowedFunctionNames: [choice.name] };
  }
}

function toWireRequest(provider: string, request: ChatRequest): Record<string, unknown> {
  const { system, contents } = toWireContents(provider, request.messages);
  const generationConfig = {
    ...(request.maxTokens !== undefined && { maxOutputTokens: request.maxTokens }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...(request.topP !== undefined && { topP: request.topP }),
    ...(request.stop?.length && { stopSequences: request.stop }),
    ...(request.responseFormat && { responseMimeType: 'application/json' }),
    ...(request.responseFormat?.type === 'json_schema' && { responseJsonSchema: request.responseFormat.schema }),
  };
  return {
    contents,
    ...(system.length && { systemInstruction: { parts: system.map((text) => ({ text })) } }),
    ...(Object.keys(generationConfig).length && { generationConfig }),
    ...(request.tools?.length && { tools: [{ functionDeclarations: request.tools.map(toFunctionDeclaration) }] }),
    ...(request.toolChoice !== undefined && { toolConfig: { functionCallingConfig: toFunctionCallingConfig(request.toolChoice) } }),
  };
}

/** `gemini-2.5-flash` → `models/gemini-2.5-flash`; a full resource name (`tunedModels/…`) stays. */
const modelResource = (modelId: string) => (modelId.includes('/') ? modelId : `models/${modelId}`);

// --- wire format: responses --------------------------------------------------------------------

const wirePart = z.object({
  text: z.string().nullish(),
  /** A thinking summary, not part of the answer. */
  thought: z.boolean().nullish(),
  thoughtSignature: z.string().nullish(),
  functionCall: z.object({ name: z.string(), args: z.record(z.string(), z.unknown()).nullish() }).nullish(),
});

const wireUsage = z.object({
  promptTokenCount: z.number().int().min(0).default(0),
  candidatesTokenCount: z.number().int().min(0).default(0),
  thoughtsTokenCount: z.number().int().min(0).default(0),
  totalTokenCount: z.number().int().min(0).nullish(),
});

const wireResponse = z.object({
  responseId: z.string().nullish(),
  candidates: z
    .array(
      z.object({
        content: z.object({ parts: z.array(wirePart).nullish() }).nullish(),
        finishReason: z.string().nullish(),
      }),
    )
    .nullish(),
  /** Set, with no candidates, when the prompt itself was blocked. */
  promptFeedback: z.object({ blockReason: z.string().nullish() }).nullish(),
  usageMetadata: wireUsage.nullish(),
});

/** google.rpc.Status, as in error bodies and in-stream errors. */
const wireStatus = z.object({
  code: z.number().nullish(),
  message: z.string().nullish(),
  status: z.string().nullish(),
  details: z.array(z.object({ reason: z.string().nullish(), retryDelay: z.string().nullish() })).nullish(),
});

const wireChunk = wireResponse.extend({ error: wireStatus.nullish() });

const errorBody = z.object({ error: wireStatus });

const wireEmbeddings = z.object({ embeddings: z.array(z.object({ values: z.array(z.number()) })) });

type WireResponsePart = z.infer<typeof wirePart>;

function toFinishReason(reason: string | null | undefined, calledTools: boolean): FinishReason {
  switch (reason) {
    case 'STOP':
      // Gemini ends a function-calling answer with STOP too.
      return calledTools ? 'tool_calls' : 'stop';
    case 'MAX_TOKENS':
      return 'length';
    case 'SAFETY':
    case 'RECITATION':
    case 'BLOCKLIST':
    case 'PROHIBITED_CONTENT':
    case 'SPII':
    case 'IMAGE_SAFETY':
      return 'content_filter';
    default:
      return 'other';
  }
}

/** Thinking tokens are billed as output but reported apart from the answer's. */
const toUsage = (usage: z.infer<typeof wireUsage>): TokenUsage =>
  tokenUsage(usage.promptTokenCount, usage.candidatesTokenCount + usage.thoughtsTokenCount, usage.totalTokenCount);

function toToolCall(part: WireResponsePart, index: number): ToolCall | undefined {
  if (!part.functionCall) return undefined;
  return {
    id: toolCallId(index, part.thoughtSignature),
    name: part.functionCall.name,
    arguments: JSON.stringify(part.functionCall.args ?? {}),
  };
}

interface UpstreamFailure {
  message?: string;
  /** google.rpc.ErrorInfo reasons, e.g. API_KEY_INVALID. */
  reasons: string[];
  /** google.rpc.RetryInfo, which Gemini sends on 429 in place of a Retry-After header. */
  retryDelayMs?: number;
}

/** Reads Google's error body, `{error: {code, message, status, details}}` (or that in an array). */
async function readFailure(response: UpstreamResponse): Promise<UpstreamFailure> {
  const text = await response.text().catch(() => '');
  const json = parseJson(text);
  const parsed = json.ok ? errorBody.safeParse(Array.isArray(json.value) ? json.value[0] : json.value) : undefined;
  if (!parsed?.success) return { reasons: [], ...(text && { message: text.slice(0, UPSTREAM_MESSAGE_CHARS) }) };
  const { message, details } = parsed.data.error;
  const delay = details?.find((detail) => detail.retryDelay)?.retryDelay;
  const retryDelayMs = delay && /^\d+(\.\d+)?s$/.test(delay) ? Math.ceil(Number(delay.slice(0, -1)) * 1000) : undefined;
  return {
    reasons: (details ?? []).flatMap((detail) => (detail.reason ? [detail.reason] : [])),
    ...(message && { message: message.slice(0, UPSTREAM_MESSAGE_CHARS) }),
    ...(retryDelayMs !== undefined && { retryDelayMs }),
  };
}

// --- the adapter -------------------------------------------------------------------------------

/** What a stream has said so far; the finish part is built from it when the body ends. */
interface StreamState {
  text: string;
  toolCalls: number;
  finishReason?: string;
  blocked: boolean;
  usage?: TokenUsage;
}

class GeminiChatModel implements ChatModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    private readonly transport: GeminiTransport,
  ) {}

  async generate(request: ChatRequest, options: CallOptions): Promise<ChatResult> {
    const path = `/${modelResource(this.modelId)}:generateContent`;
    const response = await this.transport.post(path, toWireRequest(this.provider, request), options);
    const parsed = wireResponse.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success) throw badResponse(this.provider, parsed.error.message);
    const { candidates, promptFeedback, usageMetadata, responseId } = parsed.data;
    const candidate = candidates?.[0];
    if (!candidate && !promptFeedback?.blockReason) throw badResponse(this.provider, 'no candidates');
    let content = '';
    const toolCalls: ToolCall[] = [];
    for (const part of candidate?.content?.parts ?? []) {
      if (part.text && !part.thought) content += part.text;
      const call = toToolCall(part, toolCalls.length);
      if (call) toolCalls.push(call);
    }
    return {
      ...(responseId && { id: responseId }),
      content,
      toolCalls,
      finishReason: candidate ? toFinishReason(candidate.finishReason, toolCalls.length > 0) : 'content_filter',
      usage: usageMetadata ? toUsage(usageMetadata) : countedUsage(request, content),
    };
  }

  stream(request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    const path = `/${modelResource(this.modelId)}:streamGenerateContent?alt=sse`;
    // toWireRequest may refuse the history; inside connect, that refusal is an error part too.
    const connect = () => this.transport.post(path, toWireRequest(this.provider, request), options);
    return streamParts(this.provider, options.signal, connect, (response) => this.readStream(request, response));
  }

  /** Gemini sends no end marker: an answer is whole when a finish reason came and the body ended. */
  private async *readStream(request: ChatRequest, response: UpstreamResponse): AsyncGenerator<ChatStreamPart> {
    const state: StreamState = { text: '', toolCalls: 0, blocked: false };
    for await (const chunk of parseJsonEventStream(this.provider, response, { schema: wireChunk, what: 'stream chunk' })) {
      if (!chunk.success) {
        yield { type: 'error', error: chunk.error };
        return;
      }
      const { error } = chunk.value;
      if (error) {
        const upstreamMessage = redact(error.message ?? error.status ?? undefined, this.transport.apiKey);
        yield { type: 'error', error: midStreamError(this.provider, upstreamMessage) };
        return;
      }
      yield* this.chunkParts(chunk.value, state);
    }
    if (state.finishReason === undefined && !state.blocked) {
      yield { type: 'error', error: streamInterrupted(this.provider) };
      return;
    }
    const finishReason = state.blocked ? 'content_filter' : toFinishReason(state.finishReason, state.toolCalls > 0);
    yield { type: 'finish', finishReason, usage: state.usage ?? countedUsage(request, state.text) };
  }

  /** Function calls arrive whole in one part, so each is one tool-call delta with all its arguments. */
  private *chunkParts(chunk: z.infer<typeof wireChunk>, state: StreamState): Generator<ChatStreamPart> {
    if (chunk.usageMetadata) state.usage = toUsage(chunk.usageMetadata);
    if (chunk.promptFeedback?.blockReason) state.blocked = true;
    const candidate = chunk.candidates?.[0];
    for (const part of candidate?.content?.parts ?? []) {
      if (part.text && !part.thought) {
        state.text += part.text;
        yield { type: 'text-delta', text: part.text };
      }
      const index = state.toolCalls;
      const call = toToolCall(part, index);
      if (call) {
        state.toolCalls++;
        yield { type: 'tool-call-delta', index, id: call.id, name: call.name, argumentsDelta: call.arguments };
      }
    }
    if (candidate?.finishReason) state.finishReason = candidate.finishReason;
  }
}

class GeminiEmbeddingModel implements EmbeddingModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    readonly maxBatchSize: number,
    private readonly transport: GeminiTransport,
  ) {}

  async embed(inputs: string[], options: CallOptions & { dimensions?: number }): Promise<EmbeddingResult> {
    const model = modelResource(this.modelId);
    const requests = inputs.map((text) => ({
      model,
      content: { parts: [{ text }] },
      ...(options.dimensions && { outputDimensionality: options.dimensions }),
    }));
    const response = await this.transport.post(`/${model}:batchEmbedContents`, { requests }, options);
    const parsed = wireEmbeddings.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success || parsed.data.embeddings.length !== inputs.length) {
      throw badResponse(this.provider, parsed.success ? 'wrong number of embeddings' : parsed.error.message);
    }
    // Gemini reports no usage for embeddings.
    const promptTokens = inputs.reduce((sum, input) => sum + countTextTokens(input), 0);
    return { vectors: parsed.data.embeddings.map((embedding) => embedding.values), usage: { promptTokens, totalTokens: promptTokens } };
  }
}

/** Shared by the chat and embedding models of one provider: base URL, auth, the pooled client. */
class GeminiTransport extends HttpClient {
  readonly #headers: Record<string, string>;

  constructor(private readonly settings: GeminiSettings) {
    super(settings.name, settings.timeouts);
    // The key goes in a header, not in `?key=`, so it never lands in URL logs. Gemini documents no
    // client request-id header, so CallOptions.requestId is not sent.
    this.#headers = { ...settings.headers, ...(settings.apiKey && { 'x-goog-api-key': settings.apiKey }) };
  }

  get apiKey(): string | undefined {
    return this.settings.apiKey;
  }

  /** POSTs and returns a 2xx response; any other status becomes a ProviderError. */
  post(path: string, body: unknown, options: CallOptions): Promise<UpstreamResponse> {
    const url = `${this.settings.baseUrl.replace(/\/+$/, '')}${path}`;
    return this.postJson(url, body, {
      headers: this.#headers,
      signal: options.signal,
      refusal: (response) => this.#refusal(response),
    });
  }

  async #refusal(response: UpstreamResponse): Promise<ProviderError> {
    const failure = await readFailure(response);
    const { name } = this.settings;
    const upstreamMessage = redact(failure.message, this.settings.apiKey);
    const error = errorFromStatus(name, response.status, response.headers, upstreamMessage);
    // Gemini refuses a bad key with 400 INVALID_ARGUMENT, not 401; only the reason tells.
    const badKey = failure.reasons.includes('API_KEY_INVALID');
    const retryAfterMs = error.retryAfterMs ?? failure.retryDelayMs;
    if (!badKey && retryAfterMs === error.retryAfterMs) return error;
    return new ProviderError(badKey ? `${name} refused the API key` : error.message, {
      code: badKey ? 'UPSTREAM_AUTH_FAILED' : error.code,
      provider: name,
      status: response.status,
      retryable: !badKey && error.retryable,
      ...(retryAfterMs !== undefined && { retryAfterMs }),
      ...(upstreamMessage !== undefined && { upstreamMessage }),
    });
  }
}

export function createGeminiProvider(settings: GeminiSettings): Provider {
  const transport = new GeminiTransport(settings);
  return {
    name: settings.name,
    chatModel: (modelId) => new GeminiChatModel(settings.name, modelId, transport),
    embeddingModel: (modelId, defaults) =>
      new GeminiEmbeddingModel(settings.name, modelId, Math.min(defaults.maxBatchSize, MAX_EMBED_BATCH), transport),
    close: () => transport.close(),
  };
}
