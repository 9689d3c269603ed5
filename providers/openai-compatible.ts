/**
 * The OpenAI-compatible adapter: Chat Completions (JSON and SSE) and Embeddings, as spoken by
 * OpenAI and by vLLM, Ollama, TGI, LM Studio, Groq, Mistral and DeepSeek. It translates wire
 * formats and nothing else; retries, fallbacks and limits live above the contract.
 */
import { z } from 'zod';
import type { Response } from 'undici';
import type {
  CallOptions,
  ChatMessage,
  ChatModel,
  ChatRequest,
  ChatResult,
  ChatStreamPart,
  EmbeddingModel,
  EmbeddingResult,
  FinishReason,
  Provider,
  TokenUsage,
} from './contract.ts';
import { ProviderError, errorFromException, errorFromStatus } from './errors.ts';
import { badResponse, countedUsage, readJson, redact } from './wire.ts';
import { HttpClient, type Timeouts } from './http-client.ts';
import { parseSse } from './sse.ts';
import { countTextTokens } from './tokens.ts';

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
    default:
      return { role: message.role, content: message.content };
  }
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
    ...(stream && { stream: true, stream_options: { include_usage: true } }),
  };
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

function toUsage(usage: z.infer<typeof wireUsage>): TokenUsage {
  return {
    promptTokens: usage.prompt_tokens,
    completionTokens: usage.completion_tokens,
    totalTokens: usage.total_tokens ?? usage.prompt_tokens + usage.completion_tokens,
  };
}

async function readErrorMessage(response: Response): Promise<string | undefined> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    const message = typeof body.error === 'string' ? body.error : (body.error?.message ?? body.message);
    if (typeof message === 'string') return message.slice(0, 500);
  } catch {
    // not JSON: fall through to the raw text
  }
  return text.slice(0, 500) || undefined;
}

// --- the adapter -------------------------------------------------------------------------------

class OpenAICompatibleChatModel implements ChatModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    private readonly transport: OpenAICompatibleTransport,
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

  async *stream(request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    let response: Response;
    try {
      response = await this.transport.post('/chat/completions', this.modelId, toWireRequest(this.modelId, request, true), options);
    } catch (error) {
      if (options.signal.aborted) return;
      yield { type: 'error', error: errorFromException(this.provider, error, 'connect') };
      return;
    }
    yield* this.readStream(request, response, options);
  }

  private async *readStream(request: ChatRequest, response: Response, options: CallOptions): AsyncGenerator<ChatStreamPart> {
    let text = '';
    let finishReason: FinishReason | undefined;
    let usage: TokenUsage | undefined;
    try {
      for await (const event of parseSse(response.body as ReadableStream<Uint8Array>)) {
        if (event.data === '[DONE]') break;
        let json: unknown;
        try {
          json = JSON.parse(event.data);
        } catch (error) {
          yield { type: 'error', error: badResponse(this.provider, 'stream chunk is not JSON', error) };
          return;
        }
        const chunk = wireChunk.safeParse(json);
        if (!chunk.success) {
          yield { type: 'error', error: badResponse(this.provider, chunk.error.message) };
          return;
        }
        if (chunk.data.error) {
          yield {
            type: 'error',
            error: new ProviderError(`${this.provider} reported an error mid-stream`, {
              code: 'UPSTREAM_UNAVAILABLE',
              provider: this.provider,
              retryable: false,
              upstreamMessage: chunk.data.error.message,
            }),
          };
          return;
        }
        if (chunk.data.usage) usage = toUsage(chunk.data.usage);
        for (const choice of chunk.data.choices) {
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
    } catch (error) {
      if (options.signal.aborted) return;
      yield { type: 'error', error: errorFromException(this.provider, error, 'stream') };
      return;
    }
    if (finishReason === undefined) {
      yield {
        type: 'error',
        error: new ProviderError(`${this.provider} stream ended before the answer finished`, {
          code: 'UPSTREAM_STREAM_INTERRUPTED',
          provider: this.provider,
          retryable: false,
        }),
      };
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
class OpenAICompatibleTransport {
  readonly #client: HttpClient;
  readonly #headers: Record<string, string>;

  constructor(private readonly settings: OpenAICompatibleSettings) {
    this.#client = new HttpClient(settings.name, settings.timeouts);
    this.#headers = {
      ...settings.headers,
      ...(settings.authHeaders ?? (settings.apiKey && { authorization: `Bearer ${settings.apiKey}` })),
    };
  }

  /** POSTs and returns a 2xx response; any other status becomes a ProviderError. */
  async post(path: string, modelId: string, body: unknown, options: CallOptions): Promise<Response> {
    const url = this.settings.url?.(path, modelId) ?? `${this.settings.baseUrl.replace(/\/+$/, '')}${path}`;
    const headers = { ...this.#headers, 'x-client-request-id': options.requestId };
    const response = await this.#client.postJson(url, body, { headers, signal: options.signal });
    if (response.ok) return response;
    const message = redact(await readErrorMessage(response), this.settings.apiKey);
    throw errorFromStatus(this.settings.name, response.status, response.headers as unknown as Headers, message);
  }

  close(): Promise<void> {
    return this.#client.close();
  }
}

export function createOpenAICompatibleProvider(settings: OpenAICompatibleSettings): Provider {
  const transport = new OpenAICompatibleTransport(settings);
  return {
    name: settings.name,
    chatModel: (modelId) => new OpenAICompatibleChatModel(settings.name, modelId, transport),
    embeddingModel: (modelId, defaults) => new OpenAICompatibleEmbeddingModel(settings.name, modelId, defaults.maxBatchSize, transport),
    close: () => transport.close(),
  };
}
