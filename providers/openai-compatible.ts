/**
 * The OpenAI-compatible adapter: Chat Completions (JSON and SSE) and Embeddings, as spoken by
 * OpenAI and by vLLM, Ollama, TGI, LM Studio, Groq, Mistral and DeepSeek. It translates wire
 * formats and nothing else; retries, fallbacks and limits live above the contract.
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
  ResponseFormat,
  TokenUsage,
} from './contract.ts';
import { type ProviderError, errorFromStatus } from './errors.ts';
import { HttpClient, type Timeouts, type UpstreamResponse } from './http-client.ts';
import { countTextTokens, tokenUsage } from './tokens.ts';
import {
  badResponse,
  countedUsage,
  imageUrl,
  isRecord,
  midStreamError,
  parseJsonEventStream,
  readErrorMessage,
  readJson,
  redact,
  streamInterrupted,
  streamParts,
} from './wire.ts';

export interface OpenAICompatibleSettings {
  name: string;
  baseUrl: string;
  apiKey?: string | undefined;
  headers?: Record<string, string>;
  timeouts: Timeouts;
  /**
   * Where a call for `modelId` goes; default `baseUrl + path`. Azure OpenAI puts the deployment in
   * the path and the API version in the query.
   */
  url?: (path: string, modelId: string) => string;
  /** How the key is sent; default `authorization: Bearer <key>`. */
  authHeaders?: Record<string, string>;
  /** Whether the server fetches images given by URL (else its models take them as bytes only). */
  imageUrls?: boolean;
}

// --- wire format: requests ---------------------------------------------------------------------

function toWireMessage(message: ChatMessage): Record<string, unknown> {
  switch (message.role) {
    case 'assistant':
      return {
        role: 'assistant',
        content: message.content,
        ...(message.toolCalls?.length && {
          tool_calls: message.toolCalls.map((call) => ({
            id: call.id,
            type: 'function',
            function: { name: call.name, arguments: call.arguments },
          })),
        }),
      };
    case 'tool':
      return { role: 'tool', tool_call_id: message.toolCallId, content: message.content };
    case 'user':
      return { role: 'user', content: message.parts ? message.parts.map(toWirePart) : message.content };
    default:
      return { role: message.role, content: message.content };
  }
}

function toWirePart(part: ContentPart): Record<string, unknown> {
  if (part.type === 'text') return { type: 'text', text: part.text };
  return { type: 'image_url', image_url: { url: imageUrl(part.image), ...(part.detail && { detail: part.detail }) } };
}

function toWireRequest(modelId: string, request: ChatRequest, stream: boolean): Record<string, unknown> {
  const { toolChoice } = request;
  return {
    model: modelId,
    messages: request.messages.map(toWireMessage),
    ...(request.maxTokens !== undefined && { max_tokens: request.maxTokens }),
    ...(request.temperature !== undefined && { temperature: request.temperature }),
    ...(request.topP !== undefined && { top_p: request.topP }),
    ...(request.stop?.length && { stop: request.stop }),
    ...(request.tools?.length && {
      tools: request.tools.map((tool) => ({
        type: 'function',
        function: { name: tool.name, description: tool.description, parameters: tool.parameters },
      })),
    }),
    ...(toolChoice !== undefined && {
      tool_choice: typeof toolChoice === 'string' ? toolChoice : { type: 'function', function: { name: toolChoice.name } },
    }),
    ...(request.responseFormat && { response_format: wireResponseFormat(request.responseFormat) }),
    ...(stream && { stream: true, stream_options: { include_usage: true } }),
  };
}

function wireResponseFormat(format: ResponseFormat) {
  if (format.type === 'json_object') return { type: 'json_object' };
  return { type: 'json_schema', json_schema: { name: format.name, schema: format.schema, strict: format.strict } };
}

// --- wire format: responses --------------------------------------------------------------------

const wireUsage = z.object({
  prompt_tokens: z.number().int().min(0),
  completion_tokens: z.number().int().min(0).default(0),
  total_tokens: z.number().int().min(0).optional(),
});

const wireToolCall = z.object({
  id: z.string(),
  function: z.object({ name: z.string(), arguments: z.string().default('') }),
});

const wireCompletion = z.object({
  id: z.string().optional(),
  choices: z
    .array(
      z.object({
        message: z.object({ content: z.string().nullish(), tool_calls: z.array(wireToolCall).nullish() }),
        finish_reason: z.string().nullish(),
      }),
    )
    .min(1),
  usage: wireUsage.nullish(),
});

const wireChunk = z.object({
  choices: z
    .array(
      z.object({
        delta: z
          .object({
            content: z.string().nullish(),
            tool_calls: z
              .array(
                z.object({
                  index: z.number().int().min(0),
                  id: z.string().nullish(),
                  function: z.object({ name: z.string().nullish(), arguments: z.string().nullish() }).nullish(),
                }),
              )
              .nullish(),
          })
          .nullish(),
        finish_reason: z.string().nullish(),
      }),
    )
    .default([]),
  usage: wireUsage.nullish(),
  error: z.object({ message: z.string().optional() }).nullish(),
});

const wireEmbeddings = z.object({
  data: z.array(z.object({ index: z.number().int().min(0), embedding: z.array(z.number()) })),
  usage: z.object({ prompt_tokens: z.number().int().min(0), total_tokens: z.number().int().min(0).optional() }).nullish(),
});

function toFinishReason(reason: string | null | undefined): FinishReason {
  switch (reason) {
    case 'stop':
    case 'length':
    case 'tool_calls':
    case 'content_filter':
      return reason;
    case 'function_call':
      return 'tool_calls';
    default:
      return 'other';
  }
}

const toUsage = (usage: z.infer<typeof wireUsage>): TokenUsage =>
  tokenUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens);

/** `{error: {message}}`, `{error: "…"}` or `{message}`: servers that speak the format differ. */
function errorMessageOf(json: unknown): string | undefined {
  if (!isRecord(json)) return undefined;
  const { error } = json;
  const message = typeof error === 'string' ? error : ((isRecord(error) ? error.message : undefined) ?? json.message);
  return typeof message === 'string' ? message : undefined;
}

// --- the adapter -------------------------------------------------------------------------------

class OpenAICompatibleChatModel implements ChatModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    private readonly transport: OpenAICompatibleTransport,
    readonly imageUrls: boolean,
  ) {}

  async generate(request: ChatRequest, options: CallOptions): Promise<ChatResult> {
    const response = await this.transport.post('/chat/completions', this.modelId, toWireRequest(this.modelId, request, false), options);
    const parsed = wireCompletion.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success) throw badResponse(this.provider, parsed.error.message);
    const { choices, usage, id } = parsed.data;
    const message = choices[0]!.message;
    const content = message.content ?? '';
    return {
      ...(id !== undefined && { id }),
      content,
      toolCalls: (message.tool_calls ?? []).map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })),
      finishReason: toFinishReason(choices[0]!.finish_reason),
      usage: usage ? toUsage(usage) : countedUsage(request, content),
    };
  }

  stream(request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    const connect = () => this.transport.post('/chat/completions', this.modelId, toWireRequest(this.modelId, request, true), options);
    return streamParts(this.provider, options.signal, connect, (response) => this.readStream(request, response));
  }

  /** The answer is whole once a choice gave its finish reason; usage, when asked for, comes after. */
  private async *readStream(request: ChatRequest, response: UpstreamResponse): AsyncGenerator<ChatStreamPart> {
    let text = '';
    let finishReason: FinishReason | undefined;
    let usage: TokenUsage | undefined;
    const chunks = parseJsonEventStream(this.provider, response, { schema: wireChunk, what: 'stream chunk', done: '[DONE]' });
    for await (const chunk of chunks) {
      if (!chunk.success) {
        yield { type: 'error', error: chunk.error };
        return;
      }
      const { error, choices } = chunk.value;
      if (error) {
        yield { type: 'error', error: midStreamError(this.provider, this.transport.redact(error.message)) };
        return;
      }
      if (chunk.value.usage) usage = toUsage(chunk.value.usage);
      for (const choice of choices) {
        if (choice.delta?.content) {
          text += choice.delta.content;
          yield { type: 'text-delta', text: choice.delta.content };
        }
        for (const call of choice.delta?.tool_calls ?? []) {
          yield {
            type: 'tool-call-delta',
            index: call.index,
            ...(call.id && { id: call.id }),
            ...(call.function?.name && { name: call.function.name }),
            argumentsDelta: call.function?.arguments ?? '',
          };
        }
        if (choice.finish_reason) finishReason = toFinishReason(choice.finish_reason);
      }
    }
    if (finishReason === undefined) {
      yield { type: 'error', error: streamInterrupted(this.provider) };
      return;
    }
    yield { type: 'finish', finishReason, usage: usage ?? countedUsage(request, text) };
  }
}

class OpenAICompatibleEmbeddingModel implements EmbeddingModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    readonly maxBatchSize: number,
    private readonly transport: OpenAICompatibleTransport,
  ) {}

  async embed(inputs: string[], options: CallOptions & { dimensions?: number }): Promise<EmbeddingResult> {
    const body = {
      model: this.modelId,
      input: inputs,
      encoding_format: 'float',
      ...(options.dimensions && { dimensions: options.dimensions }),
    };
    const response = await this.transport.post('/embeddings', this.modelId, body, options);
    const parsed = wireEmbeddings.safeParse(await readJson(this.provider, response, options));
    if (!parsed.success || parsed.data.data.length !== inputs.length) {
      throw badResponse(this.provider, parsed.success ? 'wrong number of embeddings' : parsed.error.message);
    }
    const ordered = [...parsed.data.data].sort((a, b) => a.index - b.index);
    // Indices must be exactly 0..n-1: vectors go back to different callers by position.
    if (ordered.some((item, position) => item.index !== position)) throw badResponse(this.provider, 'embedding indices are not 0..n-1');
    const vectors = ordered.map((item) => item.embedding);
    const promptTokens = parsed.data.usage?.prompt_tokens ?? inputs.reduce((sum, input) => sum + countTextTokens(input), 0);
    return { vectors, usage: { promptTokens, totalTokens: parsed.data.usage?.total_tokens ?? promptTokens } };
  }
}

/** Shared by the chat and embedding models of one provider: base URL, auth, the pooled client. */
class OpenAICompatibleTransport extends HttpClient {
  readonly #headers: Record<string, string>;
  /** Every credential this transport sends (a key, or an Azure key or Entra token), never repeated in an error. */
  readonly #secrets: string[];

  constructor(private readonly settings: OpenAICompatibleSettings) {
    super(settings.name, settings.timeouts);
    this.#headers = {
      ...settings.headers,
      ...(settings.authHeaders ?? (settings.apiKey && { authorization: `Bearer ${settings.apiKey}` })),
    };
    const credentials = [settings.apiKey, ...Object.values(settings.authHeaders ?? {}).map((value) => value.replace(/^Bearer /, ''))];
    this.#secrets = credentials.filter((secret): secret is string => Boolean(secret));
  }

  /** `message` with every credential of this transport replaced by `[redacted]`. */
  redact(message: string | undefined): string | undefined {
    return redact(message, ...this.#secrets);
  }

  /** POSTs and returns a 2xx response; any other status becomes a ProviderError. */
  post(path: string, modelId: string, body: unknown, options: CallOptions): Promise<UpstreamResponse> {
    const url = this.settings.url?.(path, modelId) ?? `${this.settings.baseUrl.replace(/\/+$/, '')}${path}`;
    const headers = { ...this.#headers, 'x-client-request-id': options.requestId };
    return this.postJson(url, body, { headers, signal: options.signal, refusal: (response) => this.#refusal(response) });
  }

  async #refusal(response: UpstreamResponse): Promise<ProviderError> {
    const message = this.redact(await readErrorMessage(response, errorMessageOf));
    return errorFromStatus(this.settings.name, response.status, response.headers, message);
  }
}

export function createOpenAICompatibleProvider(settings: OpenAICompatibleSettings): Provider {
  const transport = new OpenAICompatibleTransport(settings);
  return {
    name: settings.name,
    chatModel: (modelId) => new OpenAICompatibleChatModel(settings.name, modelId, transport, settings.imageUrls ?? false),
    embeddingModel: (modelId, defaults) => new OpenAICompatibleEmbeddingModel(settings.name, modelId, defaults.maxBatchSize, transport),
    close: () => transport.close(),
  };
}
