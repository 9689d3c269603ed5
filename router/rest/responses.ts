/**
 * `POST /v1/responses`, OpenAI's Responses API for text and function tools, onto `Mutation.chat`
 * and `Subscription.chatStream`: `input` as a string or items (messages, `function_call`,
 * `function_call_output`), `instructions`, `tools`, `max_output_tokens`; streamed as its typed
 * events (`response.created` … `response.output_text.delta` … `response.completed` with usage).
 * Stateless: nothing is stored, so `previous_response_id` is refused.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode } from '../../platform/errors.ts';
import { MAX_INT, SERVICE_TIERS, type ToolCall, type Usage, toResponseFormat } from './chat-completions.ts';
import type { RestError } from './errors.ts';

const textContent = z.object({ type: z.enum(['input_text', 'output_text', 'text']), text: z.string() }).loose();
const imageContent = z
  .object({ type: z.literal('input_image'), image_url: z.string(), detail: z.enum(['auto', 'low', 'high']).optional() })
  .loose();
const messageItem = z
  .object({
    type: z.literal('message').optional(),
    role: z.enum(['user', 'system', 'developer', 'assistant']),
    content: z.union([z.string(), z.array(z.union([textContent, z.object({ type: z.string() }).loose()]))]),
  })
  .loose();
const functionCallItem = z
  .object({ type: z.literal('function_call'), call_id: z.string(), name: z.string(), arguments: z.string() })
  .loose();
const functionOutputItem = z.object({ type: z.literal('function_call_output'), call_id: z.string(), output: z.string() }).loose();

export const responsesRequest = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.union([functionCallItem, functionOutputItem, messageItem]))]),
    instructions: z.string().nullable().optional(),
    tools: z
      .array(
        z
          .object({
            type: z.string(),
            name: z.string().optional(),
            description: z.string().nullable().optional(),
            parameters: z.record(z.string(), z.unknown()).nullable().optional(),
          })
          .loose(),
      )
      .optional(),
    tool_choice: z
      .union([z.enum(['auto', 'none', 'required']), z.object({ type: z.string(), name: z.string().optional() }).loose()])
      .optional(),
    max_output_tokens: z.number().int().positive().max(MAX_INT).nullable().optional(),
    temperature: z.number().nullable().optional(),
    top_p: z.number().nullable().optional(),
    stream: z.boolean().nullable().optional(),
    store: z.boolean().nullable().optional(),
    service_tier: z.string().nullable().optional(),
    previous_response_id: z.string().nullable().optional(),
    parallel_tool_calls: z.boolean().nullable().optional(),
    metadata: z.record(z.string(), z.string()).nullable().optional(),
    user: z.string().optional(),
    text: z
      .object({ format: z.object({ type: z.string() }).loose().optional() })
      .loose()
      .optional(),
  })
  .strict();

export type ResponsesRequest = z.output<typeof responsesRequest>;

const ROLES = { user: 'USER', system: 'SYSTEM', developer: 'SYSTEM', assistant: 'ASSISTANT' } as const;

export function toChatInputFromResponses(
  request: ResponsesRequest,
  tags: string[],
): { input: Record<string, unknown> } | { error: RestError } {
  const refuse = (param: string, message: string): { error: RestError } => ({ error: { code: ErrorCode.BAD_USER_INPUT, message, param } });
  if (request.previous_response_id) {
    return refuse('previous_response_id', 'this server keeps no responses (store: false): send the whole conversation as input');
  }
  if (request.parallel_tool_calls === false)
    return refuse('parallel_tool_calls', 'parallel_tool_calls false is not supported by this server');
  if (!SERVICE_TIERS.has(request.service_tier ?? 'auto')) {
    return refuse('service_tier', `service_tier ${request.service_tier} is not supported by this server`);
  }
  // The Responses API's `text.format` is Chat Completions' `response_format` with the schema's fields inline.
  const format = request.text?.format;
  const responseFormat =
    format && toResponseFormat({ type: format.type, json_schema: { name: format.name, schema: format.schema, strict: format.strict } });
  if (responseFormat && 'error' in responseFormat) {
    return refuse('text.format', 'text.format must be text, json_object, or json_schema with a name and schema');
  }
  const choice = typeof request.tool_choice === 'string' ? request.tool_choice : request.tool_choice?.type;
  const named = typeof request.tool_choice === 'object' ? request.tool_choice : undefined;
  if (named && (named.type !== 'function' || !named.name))
    return refuse('tool_choice', `tool_choice ${named.type} is not supported by this server`);
  const nonFunction = request.tools?.findIndex((tool) => tool.type !== 'function' || !tool.name) ?? -1;
  if (nonFunction >= 0) return refuse(`tools.${nonFunction}`, `only function tools are supported by this server`);
  const messages: Record<string, unknown>[] = [];
  if (request.instructions) messages.push({ role: 'SYSTEM', content: request.instructions });
  const items = typeof request.input === 'string' ? [{ role: 'user' as const, content: request.input }] : request.input;
  for (const [index, item] of items.entries()) {
    if ('type' in item && item.type === 'function_call') {
      const call = item as z.output<typeof functionCallItem>;
      const previous = messages.at(-1) as { role?: string; toolCalls?: unknown[] } | undefined;
      const toolCall = { id: call.call_id, name: call.name, arguments: call.arguments };
      // Calls of one turn follow each other: they belong to one assistant message.
      if (previous?.role === 'ASSISTANT' && previous.toolCalls) previous.toolCalls.push(toolCall);
      else messages.push({ role: 'ASSISTANT', content: '', toolCalls: [toolCall] });
    } else if ('type' in item && item.type === 'function_call_output') {
      const output = item as z.output<typeof functionOutputItem>;
      messages.push({ role: 'TOOL', toolCallId: output.call_id, content: output.output });
    } else {
      const message = item as z.output<typeof messageItem>;
      let content = '';
      // With an image, a user message goes as its parts in order (text and images); else as its text.
      const parts: Record<string, unknown>[] | undefined =
        message.role === 'user' && Array.isArray(message.content) && message.content.some((part) => part.type === 'input_image')
          ? []
          : undefined;
      if (typeof message.content === 'string') content = message.content;
      else {
        for (const [position, part] of message.content.entries()) {
          const image = parts && part.type === 'input_image' ? imageContent.safeParse(part) : undefined;
          if (image?.success) {
            const { image_url: url, detail } = image.data;
            parts!.push({ type: 'IMAGE', image: { url, ...(detail && { detail: detail.toUpperCase() }) } });
          } else if ('text' in part && typeof part.text === 'string' && part.type !== 'input_image') {
            if (parts) parts.push({ type: 'TEXT', text: part.text });
            else content += part.text;
          } else return refuse(`input.${index}.content.${position}`, `a content part of type ${part.type} is not supported by this server`);
        }
      }
      messages.push({ role: ROLES[message.role], content, ...(parts && { parts }) });
    }
  }
  const tools = request.tools;
  return {
    input: {
      model: request.model,
      messages,
      ...(request.max_output_tokens != null && { maxTokens: request.max_output_tokens }),
      ...(request.temperature != null && { temperature: request.temperature }),
      ...(request.top_p != null && { topP: request.top_p }),
      ...(tools?.length && {
        tools: tools.map((tool) => ({
          name: tool.name!,
          ...(tool.description && { description: tool.description }),
          parameters: JSON.stringify(tool.parameters ?? { type: 'object', properties: {} }),
        })),
      }),
      ...(tags.length && { tags }),
      ...(responseFormat && { responseFormat }),
      ...(tools?.length && choice === 'required' && { toolChoice: { mode: 'REQUIRED' } }),
      ...(tools?.length && choice === 'none' && { toolChoice: { mode: 'NONE' } }),
      ...(tools?.length && named?.name && { toolChoice: { name: named.name } }),
    },
  };
}

const usageOf = (usage: Usage) => ({
  input_tokens: usage.promptTokens,
  input_tokens_details: { cached_tokens: 0 },
  output_tokens: usage.completionTokens,
  output_tokens_details: { reasoning_tokens: 0 },
  total_tokens: usage.totalTokens,
});

const outputMessage = (id: string, text: string, status: string) => ({
  type: 'message',
  id,
  status,
  role: 'assistant',
  content: status === 'in_progress' ? [] : [{ type: 'output_text', text, annotations: [] }],
});

const functionCall = (call: ToolCall, status: string) => ({
  type: 'function_call',
  id: `fc_${call.id}`,
  call_id: call.id,
  name: call.name,
  arguments: status === 'in_progress' ? '' : call.arguments,
  status,
});

/** Finish reasons that leave a response `incomplete`, and the reason the API gives. */
const INCOMPLETE: Record<string, string> = { LENGTH: 'max_output_tokens', CONTENT_FILTER: 'content_filter' };

/** One response's identity and the parts of it every event repeats. */
export class ResponseBuilder {
  readonly id = `resp_${randomUUID().replaceAll('-', '')}`;
  readonly messageId = `msg_${randomUUID().replaceAll('-', '')}`;
  readonly #createdAt = Math.floor(Date.now() / 1000);
  readonly #model: string;
  readonly #request: ResponsesRequest;

  constructor(model: string, request: ResponsesRequest) {
    this.#model = model;
    this.#request = request;
  }

  response(status: string, output: object[], usage: Usage | null, extra: Record<string, unknown> = {}) {
    return {
      id: this.id,
      object: 'response',
      created_at: this.#createdAt,
      status,
      error: null,
      incomplete_details: null,
      instructions: this.#request.instructions ?? null,
      max_output_tokens: this.#request.max_output_tokens ?? null,
      model: this.#model,
      output,
      parallel_tool_calls: this.#request.parallel_tool_calls ?? true,
      previous_response_id: null,
      store: false,
      temperature: this.#request.temperature ?? null,
      top_p: this.#request.top_p ?? null,
      tool_choice: this.#request.tool_choice ?? 'auto',
      tools: this.#request.tools ?? [],
      text: { format: this.#request.text?.format ?? { type: 'text' } },
      usage: usage ? usageOf(usage) : null,
      metadata: this.#request.metadata ?? {},
      ...extra,
    };
  }

  /** A finished answer: its text as one message (if any), each tool call as a function_call item. */
  completed(answer: { content: string; finishReason: string; toolCalls: ToolCall[]; usage: Usage }) {
    const output = [
      ...(answer.content || !answer.toolCalls.length ? [outputMessage(this.messageId, answer.content, 'completed')] : []),
      ...answer.toolCalls.map((call) => functionCall(call, 'completed')),
    ];
    const reason = INCOMPLETE[answer.finishReason];
    return this.response(reason ? 'incomplete' : 'completed', output, answer.usage, reason ? { incomplete_details: { reason } } : {});
  }
}

/** Writes one stream's typed events, numbered as the API numbers them. */
export class ResponseEventWriter {
  readonly #builder: ResponseBuilder;
  #sequence = 0;
  #text = '';
  #textOpen = false;

  constructor(builder: ResponseBuilder) {
    this.#builder = builder;
  }

  #event(type: string, data: object): string {
    return `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: this.#sequence++, ...data })}\n\n`;
  }

  start(): string {
    const response = this.#builder.response('in_progress', [], null);
    return this.#event('response.created', { response }) + this.#event('response.in_progress', { response });
  }

  /** Announces the message item and its text part, once. */
  #open(): string {
    if (this.#textOpen) return '';
    this.#textOpen = true;
    const item_id = this.#builder.messageId;
    return (
      this.#event('response.output_item.added', { output_index: 0, item: outputMessage(item_id, '', 'in_progress') }) +
      this.#event('response.content_part.added', {
        item_id,
        output_index: 0,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      })
    );
  }

  delta(text: string): string {
    const item_id = this.#builder.messageId;
    const out = this.#open();
    this.#text += text;
    return out + this.#event('response.output_text.delta', { item_id, output_index: 0, content_index: 0, delta: text, logprobs: [] });
  }

  finish(completed: { finishReason: string; toolCalls: ToolCall[]; usage: Usage }): string {
    const item_id = this.#builder.messageId;
    // An empty answer is still one (empty) message, announced like any other.
    let out = completed.toolCalls.length === 0 ? this.#open() : '';
    if (this.#textOpen) {
      const part = { type: 'output_text', text: this.#text, annotations: [] };
      out += this.#event('response.output_text.done', { item_id, output_index: 0, content_index: 0, text: this.#text, logprobs: [] });
      out += this.#event('response.content_part.done', { item_id, output_index: 0, content_index: 0, part });
      out += this.#event('response.output_item.done', { output_index: 0, item: outputMessage(item_id, this.#text, 'completed') });
    }
    for (const [offset, call] of completed.toolCalls.entries()) {
      const output_index = (this.#textOpen ? 1 : 0) + offset;
      out += this.#event('response.output_item.added', { output_index, item: functionCall(call, 'in_progress') });
      out += this.#event('response.function_call_arguments.delta', { item_id: `fc_${call.id}`, output_index, delta: call.arguments });
      out += this.#event('response.function_call_arguments.done', { item_id: `fc_${call.id}`, output_index, arguments: call.arguments });
      out += this.#event('response.output_item.done', { output_index, item: functionCall(call, 'completed') });
    }
    const response = this.#builder.completed({ ...completed, content: this.#text });
    return out + this.#event(response.status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response });
  }

  /** A failure after the stream started: the response ends `failed`, with our code. */
  failure(error: RestError): string {
    const response = this.#builder.response('failed', [], null, { error: { code: error.code, message: error.message } });
    return this.#event('response.failed', { response });
  }
}
