/**
 * `POST /v1/messages`, the Anthropic Messages API, onto `Mutation.chat` and
 * `Subscription.chatStream`: `system`, text, image, `tool_use` and `tool_result` blocks, `tools`,
 * `tool_choice` (auto, any, tool, none), `max_tokens`, `stop_sequences`, `temperature`, `top_p`; streamed as
 * Anthropic's event sequence (`message_start`, content blocks, `message_delta` with the stop
 * reason and usage, `message_stop`). Any catalog model answers, whichever provider serves it.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ErrorCode } from '../../platform/errors.ts';
import { MAX_INT, type ToolCall, type Usage } from './chat-completions.ts';
import { type RestError, anthropicErrorBody } from './errors.ts';

const textBlock = z.object({ type: z.literal('text'), text: z.string() }).loose();
const toolUseBlock = z.object({ type: z.literal('tool_use'), id: z.string(), name: z.string(), input: z.unknown() }).loose();
const toolResultBlock = z
  .object({
    type: z.literal('tool_result'),
    tool_use_id: z.string(),
    content: z.union([z.string(), z.array(textBlock)]).optional(),
    is_error: z.boolean().optional(),
  })
  .loose();
const imageBlock = z
  .object({
    type: z.literal('image'),
    source: z.discriminatedUnion('type', [
      z.object({ type: z.literal('base64'), media_type: z.string(), data: z.string() }),
      z.object({ type: z.literal('url'), url: z.string() }),
    ]),
  })
  .loose();
const KNOWN_BLOCKS = new Set(['text', 'tool_use', 'tool_result', 'image']);
const block = z.union([
  textBlock,
  toolUseBlock,
  toolResultBlock,
  imageBlock,
  z.object({ type: z.string().refine((type) => !KNOWN_BLOCKS.has(type)) }).loose(),
]);

const message = z.object({ role: z.enum(['user', 'assistant']), content: z.union([z.string(), z.array(block)]) });

export const messagesRequest = z
  .object({
    model: z.string().min(1),
    max_tokens: z.number().int().positive().max(MAX_INT),
    messages: z.array(message),
    system: z.union([z.string(), z.array(textBlock)]).optional(),
    stop_sequences: z.array(z.string()).optional(),
    temperature: z.number().optional(),
    top_p: z.number().optional(),
    stream: z.boolean().optional(),
    tools: z
      .array(z.object({ name: z.string(), description: z.string().optional(), input_schema: z.record(z.string(), z.unknown()) }).loose())
      .optional(),
    tool_choice: z
      .object({ type: z.enum(['auto', 'any', 'tool', 'none']), name: z.string().optional() })
      .loose()
      .optional(),
    metadata: z.object({ user_id: z.string().nullable().optional() }).optional(),
  })
  .strict();

export type MessagesRequest = z.output<typeof messagesRequest>;

const textOf = (content: string | { text: string }[] | undefined) =>
  typeof content === 'string' ? content : (content ?? []).map((part) => part.text).join('');

export function toChatInputFromMessages(
  request: MessagesRequest,
  tags: string[],
): { input: Record<string, unknown> } | { error: RestError } {
  const unsupported = (param: string, what: string): { error: RestError } => ({
    error: { code: ErrorCode.BAD_USER_INPUT, message: `${what} is not supported by this server`, param },
  });
  const choice = request.tool_choice?.type;
  if (choice === 'tool' && !request.tool_choice?.name) return unsupported('tool_choice.name', 'tool_choice tool without its name');
  const messages: Record<string, unknown>[] = [];
  if (request.system !== undefined) messages.push({ role: 'SYSTEM', content: textOf(request.system) });
  for (const [index, each] of request.messages.entries()) {
    if (typeof each.content === 'string') {
      messages.push({ role: each.role === 'user' ? 'USER' : 'ASSISTANT', content: each.content });
      continue;
    }
    let text = '';
    const toolCalls: { id: string; name: string; arguments: string }[] = [];
    // With an image, a user turn goes as its parts in order (text and images); else as its text.
    const parts: Record<string, unknown>[] | undefined =
      each.role === 'user' && each.content.some((part) => part.type === 'image') ? [] : undefined;
    for (const [position, part] of each.content.entries()) {
      if (part.type === 'text') {
        const block = part as z.output<typeof textBlock>;
        if (parts) parts.push({ type: 'TEXT', text: block.text });
        else text += block.text;
      } else if (part.type === 'image' && parts) {
        const { source } = part as z.output<typeof imageBlock>;
        const image = source.type === 'url' ? { url: source.url } : { data: source.data, mediaType: source.media_type };
        parts.push({ type: 'IMAGE', image });
      } else if (part.type === 'tool_use' && each.role === 'assistant') {
        const use = part as z.output<typeof toolUseBlock>;
        toolCalls.push({ id: use.id, name: use.name, arguments: JSON.stringify(use.input ?? {}) });
      } else if (part.type === 'tool_result' && each.role === 'user') {
        const result = part as z.output<typeof toolResultBlock>;
        messages.push({ role: 'TOOL', toolCallId: result.tool_use_id, content: textOf(result.content) });
      } else return unsupported(`messages.${index}.content.${position}`, `a ${part.type} block in a ${each.role} message`);
    }
    if (each.role === 'assistant') messages.push({ role: 'ASSISTANT', content: text, ...(toolCalls.length && { toolCalls }) });
    else if (parts) messages.push({ role: 'USER', parts });
    else if (text) messages.push({ role: 'USER', content: text });
  }
  const tools = request.tools;
  return {
    input: {
      model: request.model,
      messages,
      maxTokens: request.max_tokens,
      ...(request.temperature !== undefined && { temperature: request.temperature }),
      ...(request.top_p !== undefined && { topP: request.top_p }),
      ...(request.stop_sequences?.length && { stop: request.stop_sequences }),
      ...(tools?.length && {
        tools: tools.map((tool) => ({
          name: tool.name,
          ...(tool.description !== undefined && { description: tool.description }),
          parameters: JSON.stringify(tool.input_schema),
        })),
      }),
      ...(tags.length && { tags }),
      ...(tools?.length && choice === 'any' && { toolChoice: { mode: 'REQUIRED' } }),
      ...(tools?.length && choice === 'none' && { toolChoice: { mode: 'NONE' } }),
      ...(tools?.length && choice === 'tool' && { toolChoice: { name: request.tool_choice!.name } }),
    },
  };
}

/** Our finish reasons as Anthropic's stop reasons (a stop sequence is not told apart from a natural end). */
const STOP: Record<string, string> = { STOP: 'end_turn', LENGTH: 'max_tokens', TOOL_CALLS: 'tool_use', CONTENT_FILTER: 'refusal' };
const stopReason = (reason: string) => STOP[reason] ?? 'end_turn';

function parsedInput(call: ToolCall): unknown {
  try {
    return JSON.parse(call.arguments);
  } catch {
    return {};
  }
}

const messageId = () => `msg_${randomUUID().replaceAll('-', '')}`;

/** A whole answer as a Messages API `message`. */
export function anthropicMessage(answer: { content: string; finishReason: string; toolCalls: ToolCall[]; usage: Usage }, model: string) {
  return {
    id: messageId(),
    type: 'message',
    role: 'assistant',
    model,
    content: [
      ...(answer.content || !answer.toolCalls.length ? [{ type: 'text', text: answer.content }] : []),
      ...answer.toolCalls.map((call) => ({ type: 'tool_use', id: call.id, name: call.name, input: parsedInput(call) })),
    ],
    stop_reason: stopReason(answer.finishReason),
    stop_sequence: null,
    usage: { input_tokens: answer.usage.promptTokens, output_tokens: answer.usage.completionTokens },
  };
}

const event = (type: string, data: object) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

/** Writes one stream's events in Anthropic's sequence. */
export class MessageEventWriter {
  readonly #model: string;
  #textOpen = false;

  constructor(model: string) {
    this.#model = model;
  }

  start(): string {
    const message = {
      id: messageId(),
      type: 'message',
      role: 'assistant',
      model: this.#model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 0, output_tokens: 0 },
    };
    return event('message_start', { message });
  }

  delta(text: string): string {
    const open = this.#textOpen ? '' : event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } });
    this.#textOpen = true;
    return `${open}${event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })}`;
  }

  /** A failure after the stream started: Anthropic's `error` event. */
  failure(error: RestError): string {
    const { type: _type, ...body } = anthropicErrorBody(error);
    return event('error', body);
  }

  /** Closes the text block, sends each tool call as a block, then the stop reason, usage and message_stop. */
  finish({ finishReason, toolCalls, usage }: { finishReason: string; toolCalls: ToolCall[]; usage: Usage }): string {
    let out = this.#textOpen ? event('content_block_stop', { index: 0 }) : '';
    const first = this.#textOpen ? 1 : 0;
    for (const [offset, call] of toolCalls.entries()) {
      const index = first + offset;
      out += event('content_block_start', { index, content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} } });
      out += event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: call.arguments } });
      out += event('content_block_stop', { index });
    }
    out += event('message_delta', {
      delta: { stop_reason: stopReason(finishReason), stop_sequence: null },
      usage: { input_tokens: usage.promptTokens, output_tokens: usage.completionTokens },
    });
    return `${out}${event('message_stop', {})}`;
  }
}
