/**
 * `POST /v1/chat/completions`, the OpenAI Chat Completions API, onto `Mutation.chat` and
 * `Subscription.chatStream`: the request is translated into a `ChatInput`, the operation runs
 * through the router's runtime with every policy of the GraphQL path, and the answer is written
 * back in OpenAI's shapes — a `chat.completion`, or `chat.completion.chunk` events ending with
 * `data: [DONE]` (and a usage chunk first when `stream_options.include_usage` asks for it).
 * Fields OpenAI knows and modelgraph does not implement are refused with a 400 naming them, as
 * OpenAI refuses what it does not know.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode } from '../../platform/errors.ts';
import { type RestError, openAiErrorBody } from './errors.ts';

/** GraphQL's Int: a larger count would be refused in GraphQL's words, not the API's. */
export const MAX_INT = 2_147_483_647;

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const imagePart = z.object({
  type: z.literal('image_url'),
  image_url: z.object({ url: z.string(), detail: z.enum(['auto', 'low', 'high']).optional() }),
});
const contentPart = z.union([
  textPart,
  imagePart,
  z.object({ type: z.string().refine((type) => type !== 'text' && type !== 'image_url') }).loose(),
]);

const toolCall = z.object({
  id: z.string(),
  type: z.literal('function'),
  function: z.object({ name: z.string(), arguments: z.string() }),
});

const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(contentPart), z.null()]).optional(),
  name: z.string().optional(),
  tool_calls: z.array(toolCall).optional(),
  tool_call_id: z.string().optional(),
  refusal: z.string().nullable().optional(),
});

const tool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: z.string(),
    description: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    strict: z.boolean().nullable().optional(),
  }),
});

export const chatCompletionRequest = z
  .object({
    model: z.string().min(1),
    messages: z.array(message),
    stream: z.boolean().nullable().optional(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
    max_tokens: z.number().int().positive().max(MAX_INT).nullable().optional(),
    max_completion_tokens: z.number().int().positive().max(MAX_INT).nullable().optional(),
    temperature: z.number().nullable().optional(),
    top_p: z.number().nullable().optional(),
    stop: z
      .union([z.string(), z.array(z.string())])
      .nullable()
      .optional(),
    tools: z.array(tool).optional(),
    tool_choice: z
      .union([z.enum(['auto', 'none', 'required']), z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) })])
      .optional(),
    n: z.number().int().nullable().optional(),
    seed: z.number().int().nullable().optional(),
    user: z.string().optional(),
    metadata: z.record(z.string(), z.string()).nullable().optional(),
    response_format: z.object({ type: z.string() }).loose().optional(),
    // Known to OpenAI and sent by common clients at their defaults: accepted at the values that
    // change nothing, refused at any other (toChatInput).
    frequency_penalty: z.number().nullable().optional(),
    presence_penalty: z.number().nullable().optional(),
    logprobs: z.boolean().nullable().optional(),
    top_logprobs: z.number().int().nullable().optional(),
    parallel_tool_calls: z.boolean().nullable().optional(),
    store: z.boolean().nullable().optional(),
    service_tier: z.string().nullable().optional(),
  })
  .strict();

export type ChatCompletionRequest = z.output<typeof chatCompletionRequest>;

/** The first problem of a request that does not parse, as OpenAI words it. */
export function requestError(error: z.ZodError): RestError {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    return {
      code: ErrorCode.BAD_USER_INPUT,
      message: `Unrecognized request argument supplied: ${issue.keys.join(', ')}`,
      param: issue.keys[0],
    };
  }
  const param = issue.path.length ? issue.path.join('.') : 'body';
  return { code: ErrorCode.BAD_USER_INPUT, message: `Invalid value for '${param}': ${issue.message}`, param };
}

/** The service tiers that change nothing here; `store` is accepted too, and nothing is stored. */
export const SERVICE_TIERS = new Set(['auto', 'default']);

const ROLES = { system: 'SYSTEM', developer: 'SYSTEM', user: 'USER', assistant: 'ASSISTANT', tool: 'TOOL' } as const;

/** The request as a ChatInput, or the 400 for what modelgraph does not implement (yet). */
export function toChatInput(request: ChatCompletionRequest, tags: string[]): { input: Record<string, unknown> } | { error: RestError } {
  const unsupported = (param: string, what: string): { error: RestError } => ({
    error: { code: ErrorCode.BAD_USER_INPUT, message: `${what} is not supported by this server`, param },
  });
  if ((request.n ?? 1) !== 1) return unsupported('n', 'n other than 1');
  if (request.frequency_penalty) return unsupported('frequency_penalty', 'frequency_penalty other than 0');
  if (request.presence_penalty) return unsupported('presence_penalty', 'presence_penalty other than 0');
  if (request.logprobs || request.top_logprobs) return unsupported('logprobs', 'logprobs');
  if (request.parallel_tool_calls === false) return unsupported('parallel_tool_calls', 'parallel_tool_calls false');
  if (!SERVICE_TIERS.has(request.service_tier ?? 'auto')) return unsupported('service_tier', `service_tier ${request.service_tier}`);
  if (request.tool_choice !== undefined && request.tool_choice !== 'auto' && request.tool_choice !== 'none' && !request.tools?.length) {
    return unsupported('tool_choice', 'tool_choice without tools');
  }
  const responseFormat = toResponseFormat(request.response_format);
  if (responseFormat && 'error' in responseFormat) return responseFormat as { error: RestError };
  const messages = [];
  for (const [index, each] of request.messages.entries()) {
    let content = '';
    let parts: Record<string, unknown>[] | undefined;
    if (typeof each.content === 'string') content = each.content;
    else if (Array.isArray(each.content)) {
      const images = each.role === 'user' && each.content.some((part) => part.type === 'image_url');
      if (images) parts = [];
      for (const part of each.content as z.output<typeof contentPart>[]) {
        if (part.type === 'text') {
          const { text } = part as z.output<typeof textPart>;
          if (parts) parts.push({ type: 'TEXT', text });
          else content += text;
        } else if (part.type === 'image_url' && parts) {
          const { url, detail } = (part as z.output<typeof imagePart>).image_url;
          parts.push({ type: 'IMAGE', image: { url, ...(detail && { detail: detail.toUpperCase() }) } });
        } else return unsupported(`messages.${index}.content`, `a content part of type ${part.type} in a ${each.role} message`);
      }
    }
    messages.push({
      role: ROLES[each.role],
      content,
      ...(parts && { parts }),
      ...(each.tool_call_id !== undefined && { toolCallId: each.tool_call_id }),
      ...(each.tool_calls?.length && {
        toolCalls: each.tool_calls.map((call) => ({ id: call.id, name: call.function.name, arguments: call.function.arguments })),
      }),
    });
  }
  const maxTokens = request.max_completion_tokens ?? request.max_tokens;
  const tools = request.tools;
  return {
    input: {
      model: request.model,
      messages,
      ...(maxTokens != null && { maxTokens }),
      ...(request.temperature != null && { temperature: request.temperature }),
      ...(request.top_p != null && { topP: request.top_p }),
      ...(request.stop != null && { stop: typeof request.stop === 'string' ? [request.stop] : request.stop }),
      ...(tools?.length && {
        tools: tools.map(({ function: fn }) => ({
          name: fn.name,
          ...(fn.description !== undefined && { description: fn.description }),
          parameters: JSON.stringify(fn.parameters ?? { type: 'object', properties: {} }),
        })),
      }),
      ...(tags.length && { tags }),
      ...(responseFormat && { responseFormat }),
      ...(tools?.length && request.tool_choice === 'required' && { toolChoice: { mode: 'REQUIRED' } }),
      // Tools stay described (a conversation with tool calls needs them), only none may be called.
      ...(tools?.length && request.tool_choice === 'none' && { toolChoice: { mode: 'NONE' } }),
      ...(tools?.length && typeof request.tool_choice === 'object' && { toolChoice: { name: request.tool_choice.function.name } }),
    },
  };
}

const jsonSchemaFormat = z.object({
  // As OpenAI words its rule, so the refusal names this API's field rather than GraphQL's.
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  schema: z.record(z.string(), z.unknown()).optional(),
  strict: z.boolean().nullable().optional(),
});

/** `response_format` as ChatInput's `responseFormat`; text is none. */
export function toResponseFormat(
  format: ChatCompletionRequest['response_format'],
): Record<string, unknown> | { error: RestError } | undefined {
  if (!format || format.type === 'text') return undefined;
  if (format.type === 'json_object') return { type: 'JSON_OBJECT' };
  const schema = format.type === 'json_schema' ? jsonSchemaFormat.safeParse(format.json_schema) : undefined;
  if (!schema?.success) {
    const message = 'response_format must be text, json_object, or json_schema with a json_schema { name, schema }';
    return { error: { code: ErrorCode.BAD_USER_INPUT, message, param: 'response_format' } };
  }
  return {
    type: 'JSON_SCHEMA',
    name: schema.data.name,
    // Strict mode needs every object closed; a schema-less strict format is "any object" made strict.
    schema: JSON.stringify(
      schema.data.schema ?? (schema.data.strict ? { type: 'object', additionalProperties: false } : { type: 'object' }),
    ),
    ...(schema.data.strict != null && { strict: schema.data.strict }),
  };
}

const SELECTION = `finishReason toolCalls { id name arguments } usage { promptTokens completionTokens totalTokens }`;

/**
 * The operations a door runs, named after it (`OpenAIChatCompletion`, `AnthropicMessages`,
 * `OpenAIResponses`, each with a `Stream` twin), so metrics and logs tell the doors apart.
 */
export function chatDocuments(name: string): { whole: string; stream: string } {
  return {
    whole: `mutation ${name}($input: ChatInput!) {
  chat(input: $input) { id content ${SELECTION} }
}`,
    stream: `subscription ${name}Stream($input: ChatInput!) {
  chatStream(input: $input) {
    __typename
    ... on ChatDelta { content }
    ... on ChatCompleted { ${SELECTION} }
    ... on ChatFailed { code message retryAfterMs }
  }
}`,
  };
}

/** The token counts the GraphQL operations select, which every door reports in its own words. */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

export interface ChatAnswer {
  id: string;
  content: string;
  finishReason: string;
  toolCalls: ToolCall[];
  usage: Usage;
}

export type StreamEvent =
  | { __typename: 'ChatDelta'; content: string }
  | ({ __typename: 'ChatCompleted' } & Omit<ChatAnswer, 'id' | 'content'>)
  | { __typename: 'ChatFailed'; code: ErrorCode; message: string; retryAfterMs: number | null };

const FINISH: Record<string, string> = { STOP: 'stop', LENGTH: 'length', TOOL_CALLS: 'tool_calls', CONTENT_FILTER: 'content_filter' };

const finishReason = (reason: string) => FINISH[reason] ?? 'stop';

const openAiUsage = (usage: Usage) => ({
  prompt_tokens: usage.promptTokens,
  completion_tokens: usage.completionTokens,
  total_tokens: usage.totalTokens,
});

const openAiToolCalls = (calls: ToolCall[]) =>
  calls.map((call) => ({ id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }));

/** A whole answer as a `chat.completion`; `model` is the id the caller asked for, as OpenAI echoes it. */
export function completion(answer: ChatAnswer, model: string) {
  return {
    id: `chatcmpl-${answer.id}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          // OpenAI sends null beside tool calls when the model said nothing.
          content: answer.content === '' && answer.toolCalls.length ? null : answer.content,
          refusal: null,
          ...(answer.toolCalls.length && { tool_calls: openAiToolCalls(answer.toolCalls) }),
        },
        logprobs: null,
        finish_reason: finishReason(answer.finishReason),
      },
    ],
    usage: openAiUsage(answer.usage),
    system_fingerprint: null,
  };
}

/** Writes one stream's events as `chat.completion.chunk` data lines. */
export class ChunkWriter {
  readonly #id = `chatcmpl-${randomUUID()}`;
  readonly #created = Math.floor(Date.now() / 1000);
  readonly #model: string;
  readonly #withUsage: boolean;

  /** A content delta's chunk around its JSON string: built once, as `#chunk` would build it. */
  readonly #deltaPrefix: string;
  readonly #deltaSuffix: string;

  constructor(model: string, withUsage: boolean) {
    this.#model = model;
    this.#withUsage = withUsage;
    const empty = this.#chunk([{ index: 0, delta: { content: '' }, logprobs: null, finish_reason: null }]);
    // The choices come after the model's name (which the caller chose): the last `"content":""` is the delta's.
    const at = empty.lastIndexOf('"content":""') + '"content":'.length;
    this.#deltaPrefix = empty.slice(0, at);
    this.#deltaSuffix = empty.slice(at + 2);
  }

  #chunk(choices: object[], usage?: Usage): string {
    const body = {
      id: this.#id,
      object: 'chat.completion.chunk',
      created: this.#created,
      model: this.#model,
      system_fingerprint: null,
      choices,
      ...(this.#withUsage && { usage: usage ? openAiUsage(usage) : null }),
    };
    return `data: ${JSON.stringify(body)}\n\n`;
  }

  /** The first chunk: the assistant's role, no content yet. */
  start(): string {
    return this.#chunk([{ index: 0, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }]);
  }

  /** Every token's chunk: the one part that changes is the content. */
  delta(content: string): string {
    return `${this.#deltaPrefix}${JSON.stringify(content)}${this.#deltaSuffix}`;
  }

  /** A failure after the stream started: an error event, as OpenAI sends one (its SDK raises it). */
  failure(error: RestError): string {
    return `data: ${JSON.stringify(openAiErrorBody(error))}\n\n`;
  }

  /** The tool calls (if any), the finish reason, the usage chunk when asked for, and `[DONE]`. */
  finish(event: Omit<ChatAnswer, 'id' | 'content'>): string {
    const calls = event.toolCalls.length
      ? this.#chunk([
          {
            index: 0,
            delta: { tool_calls: openAiToolCalls(event.toolCalls).map((call, index) => ({ index, ...call })) },
            logprobs: null,
            finish_reason: null,
          },
        ])
      : '';
    const finish = this.#chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(event.finishReason) }]);
    const usage = this.#withUsage ? this.#chunk([], event.usage) : '';
    return `${calls}${finish}${usage}data: [DONE]\n\n`;
  }
}
