/**
 * Chat, whole and streamed: validates a ChatInput against the catalog, calls the model through the
 * provider contract, and maps provider outcomes to GraphQL results. Provider errors become coded
 * GraphQL errors (whole chat) or a final `ChatFailed` event (stream) here and nowhere else.
 */
import { randomUUID } from 'node:crypto';
import type {
  ChatInput,
  ChatMessageInput,
  ErrorCode as SchemaErrorCode,
  FinishReason as SchemaFinishReason,
} from '../../codegen/inference.resolvers.ts';
import { isRetired, targetKey, type CatalogModel, type ModelCatalog } from '../../providers/catalog.ts';
import { cacheKey, cacheable, type CachedChat } from './chat-cache.ts';
import type {
  ChatMessage,
  ChatRequest,
  FinishReason,
  ResponseFormat,
  TokenUsage,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from '../../providers/contract.ts';
import { ProviderError, publicDetails, publicMessage } from '../../providers/errors.ts';
import type { Served, Target } from '../../providers/routing.ts';
import { countChatTokens, countTextTokens } from '../../providers/tokens.ts';
import type { Demand } from '../../platform/metering/buckets.ts';
import {
  meteredCall,
  meteredStream,
  type HeldReservation,
  type MeteredDemand,
  type MeteringOptions,
} from '../../platform/metering/metered-call.ts';
import { reservationNanos } from '../../platform/metering/money.ts';
import { NO_SPEND, priced, type Spend } from '../../platform/metering/spend.ts';
import { emitChatUsage } from './usage.ts';
import { checkTags } from '../../platform/metering/usage-tags.ts';
import { abortOnReturn } from './abort-on-return.ts';
import { MAX_JSON_DEPTH, nestsDeeperThan } from '../../platform/serving/json-depth.ts';
import { MAX_IMAGES, textOf, toContentParts } from './content-parts.ts';
import { ErrorCode, badInput, codedError } from '../../platform/errors.ts';
import type { Warning } from '../../platform/serving/warnings.ts';
import type { InferenceContext } from './context.ts';

export interface ServedByResult {
  model: CatalogModel;
  provider: string;
  version: string;
  attempts: number;
}

export interface ChatCompletionResult {
  id: string;
  model: CatalogModel;
  content: string;
  toolCalls: ToolCall[];
  finishReason: SchemaFinishReason;
  usage: Spend;
  servedBy: ServedByResult;
  cached: boolean;
}

export type ChatStreamEventResult =
  | { __typename: 'ChatDelta'; content: string }
  | { __typename: 'ChatCompleted'; finishReason: SchemaFinishReason; toolCalls: ToolCall[]; usage: Spend; servedBy: ServedByResult }
  | {
      __typename: 'ChatFailed';
      code: SchemaErrorCode;
      message: string;
      usage: Spend;
      servedBy: ServedByResult;
      retryAfterMs?: number | null;
    };

export interface PreparedChat {
  /** The model the client named (a route's heaviest target). */
  model: CatalogModel;
  /** The versions to try, in order; all able to take this request. */
  targets: Target<CatalogModel>[];
  request: ChatRequest;
  /** Set when the answer may come from, and go to, the response cache. */
  cache?: { key: string; ttlMs: number };
  /** The worst case to reserve: prompt plus maximum output, priced at the dearest target. */
  demand: Demand;
  /** The caller's usage tags, sorted and unique. */
  tags: string[];
  /** Prompt tokens, tool definitions included (tokenizer count). */
  promptTokens: number;
}

function servedBy({ target, attempts }: Served<CatalogModel>): ServedByResult {
  return { model: target, provider: target.provider, version: target.version, attempts };
}

/** Counts retries and fallbacks of one request. */
function recordRouting(context: InferenceContext, prepared: PreparedChat, served: Served<CatalogModel>): void {
  if (served.attempts > 1) context.metrics.extraAttempts.inc({ model: prepared.model.id }, served.attempts - 1);
  const first = prepared.targets[0]?.info;
  if (first && first !== served.target) context.metrics.fallbacks.inc({ from: targetKey(first), to: targetKey(served.target) });
}

const MAX_STOP_SEQUENCES = 4;

function toMessage(message: ChatMessageInput, index: number): ChatMessage {
  if (message.toolCalls?.length && message.role !== 'ASSISTANT')
    throw badInput(`messages[${index}].toolCalls`, 'only an ASSISTANT message carries tool calls');
  if (message.parts && message.role !== 'USER') throw badInput(`messages[${index}].parts`, 'only a USER message has parts');
  const content = message.content ?? '';
  switch (message.role) {
    case 'SYSTEM':
      return { role: 'system', content };
    case 'USER': {
      if (!message.parts) return { role: 'user', content };
      const parts = toContentParts(`messages[${index}]`, content, message.parts);
      return { role: 'user', content: textOf(parts), parts };
    }
    case 'ASSISTANT':
      for (const [at, call] of (message.toolCalls ?? []).entries())
        checkJsonText(`messages[${index}].toolCalls[${at}].arguments`, call.arguments);
      return {
        role: 'assistant',
        content,
        ...(message.toolCalls?.length && {
          toolCalls: message.toolCalls.map(({ id, name, arguments: args }) => ({ id, name, arguments: args })),
        }),
      };
    case 'TOOL':
      if (!message.toolCallId) throw badInput(`messages[${index}].toolCallId`, 'a TOOL message needs the toolCallId it answers');
      checkJsonText(`messages[${index}].content`, content);
      return { role: 'tool', content, toolCallId: message.toolCallId };
  }
}

/**
 * Text that adapters may parse as JSON (tool arguments and results) and serialise again: refused
 * when it nests deeper than any real value, before it overflows a provider's serialiser.
 */
function checkJsonText(field: string, text: string): void {
  const first = text.trimStart()[0];
  if (first !== '{' && first !== '[') return;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return;
  }
  if (nestsDeeperThan(value)) throw badInput(field, `${field} nests more than ${MAX_JSON_DEPTH} levels`);
}

/** `toolChoice` as the adapters take it; AUTO (or none) is no choice. A forced call needs its tool. */
function toToolChoice(
  choice: { mode?: 'AUTO' | 'NONE' | 'REQUIRED' | null; name?: string | null } | null | undefined,
  toolNames: readonly string[],
): ToolChoice | undefined {
  if (!choice) return undefined;
  if (choice.name != null) {
    if (!toolNames.includes(choice.name)) throw badInput('toolChoice.name', `toolChoice.name "${choice.name}" is not one of tools`);
    return { name: choice.name };
  }
  if (choice.mode === 'REQUIRED') {
    if (toolNames.length === 0) throw badInput('toolChoice', 'toolChoice REQUIRED needs tools');
    return 'required';
  }
  // Without tools there is nothing to choose: no choice goes upstream (providers refuse one alone).
  return choice.mode === 'NONE' && toolNames.length > 0 ? 'none' : undefined;
}

const SCHEMA_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** `responseFormat` as the adapters take it; TEXT (or none) is no format. */
function toResponseFormat(
  format:
    | { type: 'TEXT' | 'JSON_OBJECT' | 'JSON_SCHEMA'; schema?: string | null; name?: string | null; strict?: boolean | null }
    | null
    | undefined,
): ResponseFormat | undefined {
  if (!format || format.type === 'TEXT') return undefined;
  if (format.type === 'JSON_OBJECT') return { type: 'json_object' };
  if (!format.schema) throw badInput('responseFormat.schema', 'a JSON_SCHEMA response format needs its schema');
  let schema: unknown;
  try {
    schema = JSON.parse(format.schema);
  } catch {
    throw badInput('responseFormat.schema', 'responseFormat.schema is not JSON');
  }
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema))
    throw badInput('responseFormat.schema', 'responseFormat.schema must be a JSON object');
  if (nestsDeeperThan(schema)) throw badInput('responseFormat.schema', `responseFormat.schema nests more than ${MAX_JSON_DEPTH} levels`);
  const name = format.name ?? 'response';
  if (!SCHEMA_NAME.test(name)) throw badInput('responseFormat.name', 'responseFormat.name: letters, digits, _ and -, up to 64');
  return { type: 'json_schema', name, schema: schema as Record<string, unknown>, strict: format.strict ?? false };
}

function toTool(tool: { name: string; description?: string | null; parameters: string }, index: number): ToolDefinition {
  let parameters: unknown;
  try {
    parameters = JSON.parse(tool.parameters);
  } catch {
    throw badInput(`tools[${index}].parameters`, 'tool parameters must be a JSON Schema object as JSON text');
  }
  if (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters)) {
    throw badInput(`tools[${index}].parameters`, 'tool parameters must be a JSON Schema object as JSON text');
  }
  if (nestsDeeperThan(parameters)) throw badInput(`tools[${index}].parameters`, `tool parameters nest more than ${MAX_JSON_DEPTH} levels`);
  return { name: tool.name, ...(tool.description && { description: tool.description }), parameters: parameters as Record<string, unknown> };
}

function checkRange(field: string, value: number | null | undefined, min: number, max: number): void {
  if (value !== null && value !== undefined && !(value >= min && value <= max)) {
    throw badInput(field, `${field} must be between ${min} and ${max}`);
  }
}

function imagesOf(messages: readonly ChatMessage[]): { count: number; byUrl: boolean } {
  let count = 0;
  let byUrl = false;
  for (const message of messages) {
    if (message.role !== 'user' || !message.parts) continue;
    for (const part of message.parts) {
      if (part.type !== 'image') continue;
      count += 1;
      byUrl ||= 'url' in part.image;
    }
  }
  return { count, byUrl };
}

/** Images need a model with VISION; an image by URL, one whose provider fetches URLs. */
function checkVision(catalog: ModelCatalog, model: CatalogModel, byUrl: boolean): void {
  if (!model.capabilities.includes('VISION')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not see images`, {
      model: model.id,
      capability: 'VISION',
    });
  }
  if (byUrl && catalog.chatModel(model).imageUrls !== true) {
    throw badInput('messages', `model "${model.id}" takes images as their bytes (data, or a data: URL), not by URL`);
  }
}

/** Warns, once per version and request, when a deprecated version is named or answers. */
export function warnIfDeprecated(context: InferenceContext, model: CatalogModel): void {
  const warning = deprecationWarning(model);
  if (warning && !context.warnings.some((existing) => existing.model === warning.model)) context.warnings.push(warning);
}

/** A deprecated version still answers; the caller hears about it in `extensions.warnings`. */
export function deprecationWarning(model: CatalogModel): Warning | undefined {
  if (model.status !== 'DEPRECATED') return undefined;
  const pinned = `${model.id}@${model.version}`;
  return {
    code: 'MODEL_DEPRECATED',
    message: `model "${pinned}" is deprecated${model.sunset ? ` and retires on ${model.sunset}` : ''}${model.replacement ? `; use "${model.replacement}"` : ''}`,
    model: pinned,
    ...(model.sunset && { sunset: model.sunset }),
    ...(model.replacement && { replacement: model.replacement }),
  };
}

/** Resolves the model and turns the input into a provider request, or throws a coded error. */
export function prepareChat(catalog: ModelCatalog, input: ChatInput): PreparedChat {
  const plan = catalog.plan(input.model);
  if (!plan) throw codedError(ErrorCode.MODEL_NOT_FOUND, `no model, alias or version pin "${input.model}"`, { model: input.model });
  const { model } = plan;
  // A retired version named directly is refused; a route simply skips its retired targets.
  if (!catalog.isRoute(input.model) && isRetired(model)) {
    throw codedError(
      ErrorCode.MODEL_RETIRED,
      `model "${model.id}@${model.version}" is retired${model.replacement ? `; use "${model.replacement}"` : ''}`,
      {
        model: `${model.id}@${model.version}`,
        ...(model.replacement && { replacement: model.replacement }),
      },
    );
  }
  if (!model.capabilities.includes('CHAT')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not chat`, { model: model.id, capability: 'CHAT' });
  }
  if (input.messages.length === 0) throw codedError(ErrorCode.EMPTY_MESSAGES, 'a chat needs at least one message');
  checkRange('maxTokens', input.maxTokens, 1, model.maxOutputTokens);
  checkRange('temperature', input.temperature, 0, 2);
  checkRange('topP', input.topP, 0, 1);
  if ((input.stop?.length ?? 0) > MAX_STOP_SEQUENCES) throw badInput('stop', `at most ${MAX_STOP_SEQUENCES} stop sequences`);
  if (input.tools?.length && !model.capabilities.includes('TOOLS')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not call tools`, {
      model: model.id,
      capability: 'TOOLS',
    });
  }

  const toolChoice = toToolChoice(input.toolChoice, input.tools?.map((tool) => tool.name) ?? []);
  const responseFormat = toResponseFormat(input.responseFormat);
  if (responseFormat && !model.capabilities.includes('JSON_SCHEMA')) {
    throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not answer in JSON`, {
      model: model.id,
      capability: 'JSON_SCHEMA',
    });
  }

  const messages = input.messages.map(toMessage);
  const images = imagesOf(messages);
  if (images.count > MAX_IMAGES) throw badInput('messages', `at most ${MAX_IMAGES} images in a chat`);
  if (images.count > 0) checkVision(catalog, model, images.byUrl);
  const tools = input.tools?.map(toTool);
  // Tool definitions go upstream with the prompt and are billed as prompt tokens.
  const promptTokens = countChatTokens(messages) + (tools?.length ? countTextTokens(JSON.stringify(tools)) : 0);
  const reservedOutput = input.maxTokens ?? 1;
  if (promptTokens + reservedOutput > model.contextWindow) {
    throw codedError(
      ErrorCode.CONTEXT_WINDOW_EXCEEDED,
      `the prompt (${promptTokens} tokens) and output (${reservedOutput}) exceed the context window of "${model.id}" (${model.contextWindow} tokens)`,
      { promptTokens, maxTokens: reservedOutput, contextWindow: model.contextWindow },
    );
  }
  const request: ChatRequest = {
    messages,
    ...(input.maxTokens != null && { maxTokens: input.maxTokens }),
    ...(input.temperature != null && { temperature: input.temperature }),
    ...(input.topP != null && { topP: input.topP }),
    ...(input.stop?.length && { stop: input.stop }),
    ...(tools?.length && { tools }),
    ...(responseFormat && { responseFormat }),
    ...(toolChoice && { toolChoice }),
  };
  // Fallbacks that could not take this request (no chat, no tools, too small a window) are skipped.
  const targets = plan.targets.filter(
    ({ info }) =>
      !isRetired(info) &&
      info.capabilities.includes('CHAT') &&
      (!request.tools || info.capabilities.includes('TOOLS')) &&
      (!request.responseFormat || info.capabilities.includes('JSON_SCHEMA')) &&
      (images.count === 0 || info.capabilities.includes('VISION')) &&
      (!images.byUrl || catalog.chatModel(info).imageUrls === true) &&
      promptTokens + reservedOutput <= info.contextWindow,
  );
  // Without maxTokens any target may answer at its own maximum: the worst case is the largest.
  const maxOutput = input.maxTokens ?? Math.max(model.maxOutputTokens, ...targets.map(({ info }) => info.maxOutputTokens));
  const worst = { promptTokens, completionTokens: maxOutput, totalTokens: promptTokens + maxOutput };
  const costNanos = Math.max(0, ...targets.map(({ info }) => reservationNanos(info.pricing, worst)));
  return { model, targets, request, demand: { tokens: worst.totalTokens, costNanos }, tags: checkTags(input.tags), promptTokens };
}

/** Marks a prepared chat as cacheable under its key, per the request's cache control. */
export function withCache(prepared: PreparedChat, input: ChatInput, defaultTtlMs: number, scope: string): PreparedChat {
  const ttlSeconds = input.cache?.ttlSeconds;
  if (ttlSeconds !== null && ttlSeconds !== undefined && !(ttlSeconds >= 1 && ttlSeconds <= 86_400)) {
    throw badInput('cache.ttlSeconds', 'cache.ttlSeconds must be between 1 and 86400');
  }
  if (!cacheable(prepared.request, input.cache)) return prepared;
  const key = cacheKey(scope, input.model, prepared.model, prepared.request);
  return { ...prepared, cache: { key, ttlMs: ttlSeconds ? ttlSeconds * 1000 : defaultTtlMs } };
}

async function fromCache(prepared: PreparedChat, context: InferenceContext): Promise<ChatCompletionResult | undefined> {
  if (!prepared.cache || !context.cache) return undefined;
  const stored = await context.cache.get(prepared.cache.key).catch((error: unknown) => {
    context.log.warn({ err: error }, 'response cache unavailable; calling the provider');
    return undefined;
  });
  if (!stored) return undefined;
  const hit = JSON.parse(stored) as CachedChat;
  const servedModel = context.catalog.resolve(hit.servedBy) ?? prepared.model;
  warnIfDeprecated(context, servedModel);
  return {
    id: hit.id ?? `chat-${randomUUID()}`,
    model: prepared.model,
    content: hit.content,
    toolCalls: hit.toolCalls,
    finishReason: FINISH_REASONS[hit.finishReason],
    // A cached answer called no provider: it costs nothing.
    usage: { ...hit.usage, costUsd: 0 },
    servedBy: { model: servedModel, provider: servedModel.provider, version: servedModel.version, attempts: 0 },
    cached: true,
  };
}

const FINISH_REASONS: Record<FinishReason, SchemaFinishReason> = {
  stop: 'STOP',
  length: 'LENGTH',
  tool_calls: 'TOOL_CALLS',
  content_filter: 'CONTENT_FILTER',
  other: 'OTHER',
};

function logProviderError(context: InferenceContext, error: ProviderError): void {
  // The transport's own failure (a refused or reset connection, a timeout), by name and code:
  // these messages carry addresses, never request content.
  const cause =
    error.cause instanceof Error
      ? { name: error.cause.name, code: (error.cause as { code?: unknown }).code, message: error.cause.message }
      : undefined;
  context.log.warn(
    { provider: error.provider, code: error.code, status: error.status, upstreamMessage: error.upstreamMessage, ...(cause && { cause }) },
    'provider call failed',
  );
}

export async function runChat(prepared: PreparedChat, context: InferenceContext): Promise<ChatCompletionResult> {
  const { model } = prepared;
  const labels = { provider: model.provider, model: model.id, mode: 'whole' };
  const startedAt = performance.now();
  const cached = await fromCache(prepared, context);
  if (cached) {
    context.metrics.calls.inc({ ...labels, outcome: 'cached' });
    emitChatUsage(context, {
      kind: 'chat',
      model,
      usage: NO_SPEND,
      startedAt,
      timeToFirstTokenMs: null,
      outcome: 'cached',
      tags: prepared.tags,
    });
    return cached;
  }
  const call = { labels, startedAt };
  return meteredCall(context, reservationOf(prepared), (held) => generate(prepared, context, held, call), countingRefusals(context));
}

/** One whole chat, not from the cache: called, settled and its usage emitted. */
async function generate(
  prepared: PreparedChat,
  context: InferenceContext,
  held: HeldReservation,
  { labels, startedAt }: { labels: { provider: string; model: string; mode: string }; startedAt: number },
): Promise<ChatCompletionResult> {
  const { model, targets, request } = prepared;
  let used: Spend | undefined;
  let servedModel = model;
  let outcome = 'ok';
  const stopTimer = context.metrics.duration.startTimer(labels);
  try {
    const { result, served } = await context.router.generate(targets, request, { signal: context.signal, requestId: context.requestId });
    servedModel = served.target;
    context.metrics.calls.inc({ ...labels, provider: served.target.provider, outcome: 'ok' });
    recordRouting(context, prepared, served);
    warnIfDeprecated(context, served.target);
    // Stored only when the version the request names answered (not a canary or a fallback).
    if (prepared.cache && context.cache && served.target === prepared.model) {
      const entry: CachedChat = {
        ...(result.id && { id: result.id }),
        content: result.content,
        toolCalls: result.toolCalls,
        finishReason: result.finishReason,
        usage: result.usage,
        servedBy: targetKey(served.target),
      };
      await context.cache.set(prepared.cache.key, JSON.stringify(entry), prepared.cache.ttlMs).catch((error: unknown) => {
        context.log.warn({ err: error }, 'response cache unavailable; answer not stored');
      });
    }
    used = priced(result.usage, served.target.pricing);
    return {
      id: result.id ?? `chat-${randomUUID()}`,
      model,
      content: result.content,
      toolCalls: result.toolCalls,
      finishReason: FINISH_REASONS[result.finishReason],
      usage: used,
      servedBy: servedBy(served),
      cached: false,
    };
  } catch (error) {
    outcome = error instanceof ProviderError ? error.code : ErrorCode.INTERNAL_SERVER_ERROR;
    if (error instanceof ProviderError) {
      context.metrics.calls.inc({ ...labels, outcome: error.code });
      logProviderError(context, error);
      throw codedError(error.code, publicMessage(error), publicDetails(error));
    }
    throw error;
  } finally {
    stopTimer();
    // To the real usage; a failed call used nothing.
    await held.settle(used ?? NO_SPEND, servedModel);
    emitChatUsage(context, {
      kind: 'chat',
      model: servedModel,
      usage: used ?? NO_SPEND,
      startedAt,
      timeToFirstTokenMs: null,
      outcome,
      tags: prepared.tags,
    });
  }
}

/**
 * A chat reserves in the limits of every version that may serve it (a route's targets and
 * fallbacks); settling keeps the tokens in the serving version's bucket only, and refunds the rest.
 */
const reservationOf = (prepared: PreparedChat): MeteredDemand => ({
  models: prepared.targets.map(({ info }) => info),
  demand: prepared.demand,
});

/** Refusals are counted by limit and scope. */
const countingRefusals = (context: InferenceContext): MeteringOptions => ({
  onRefused: (refusal) => context.metrics.meterRejections.inc(refusal),
});

/** Assembles streamed tool-call fragments by index. */
class ToolCallAssembler {
  readonly #calls = new Map<number, ToolCall>();

  add(part: { index: number; id?: string; name?: string; argumentsDelta: string }): void {
    const call = this.#calls.get(part.index) ?? { id: '', name: '', arguments: '' };
    if (part.id) call.id = part.id;
    if (part.name) call.name += part.name;
    call.arguments += part.argumentsDelta;
    this.#calls.set(part.index, call);
  }

  get calls(): ToolCall[] {
    return [...this.#calls.entries()].sort(([a], [b]) => a - b).map(([, call]) => call);
  }
}

/**
 * Streams one chat as GraphQL events. Ends after exactly one ChatCompleted or ChatFailed. When the
 * consumer stops early (unsubscribe, disconnect) the upstream request is aborted at once.
 */
export function streamChat(prepared: PreparedChat, context: InferenceContext): Promise<AsyncGenerator<ChatStreamEventResult>> {
  // Reserved before the subscription starts: a call that cannot fit fails it, coded, before any
  // event. The stream settles when it ends; one ended before its first read releases it at once.
  return meteredStream(
    context,
    reservationOf(prepared),
    (held) => {
      const upstream = new AbortController();
      return abortOnReturn(chatEvents(prepared, context, upstream, held), upstream);
    },
    countingRefusals(context),
  );
}

/**
 * Why a stream's upstream call is aborted: made once, since every stream ends with one
 * (a new Error per stream would capture a stack trace each time, for nobody to read).
 */
const CALLER_GONE = new Error('caller went away');
const STREAM_CLOSED = new Error('stream closed');

async function* chatEvents(
  prepared: PreparedChat,
  context: InferenceContext,
  upstream: AbortController,
  held: HeldReservation,
): AsyncGenerator<ChatStreamEventResult> {
  const { model, targets, request } = prepared;
  const onCallerGone = () => upstream.abort(CALLER_GONE);
  context.signal.addEventListener('abort', onCallerGone, { once: true });
  const labels = { provider: model.provider, model: model.id };
  const started = performance.now();
  let firstToken = true;
  let served: ServedByResult = servedBy({ target: model, attempts: 0 });
  let delivered = '';
  const toolCalls = new ToolCallAssembler();
  /** What was delivered before a failure, counted with the tokenizer (the provider never said). */
  const deliveredUsage = (): TokenUsage => {
    const promptTokens = prepared.promptTokens;
    const toolText = toolCalls.calls.map((call) => call.name + call.arguments).join('');
    const completionTokens = countTextTokens(delivered + toolText);
    return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
  };
  /** What the stream used, as reported (or counted, for a failure); settled when it ends. */
  let used: Spend | undefined;
  let outcome = 'cancelled';
  let timeToFirstTokenMs: number | null = null;
  let reachedProvider = false;
  try {
    for await (const part of context.router.stream(targets, request, { signal: upstream.signal, requestId: context.requestId })) {
      switch (part.type) {
        case 'served':
          reachedProvider = true;
          served = servedBy(part.served);
          recordRouting(context, prepared, part.served);
          warnIfDeprecated(context, part.served.target);
          break;
        case 'text-delta':
          if (firstToken) {
            timeToFirstTokenMs = Math.round(performance.now() - started);
            context.metrics.timeToFirstToken.observe(labels, timeToFirstTokenMs / 1000);
            firstToken = false;
          }
          delivered += part.text;
          yield { __typename: 'ChatDelta', content: part.text };
          break;
        case 'tool-call-delta':
          toolCalls.add(part);
          break;
        case 'finish':
          context.metrics.calls.inc({ ...labels, provider: served.provider, mode: 'stream', outcome: 'ok' });
          used = priced(part.usage, served.model.pricing);
          outcome = 'ok';
          yield {
            __typename: 'ChatCompleted',
            finishReason: FINISH_REASONS[part.finishReason],
            toolCalls: toolCalls.calls,
            usage: used,
            servedBy: served,
          };
          return;
        case 'error':
          context.metrics.calls.inc({ ...labels, provider: served.provider, mode: 'stream', outcome: part.error.code });
          logProviderError(context, part.error);
          used = priced(deliveredUsage(), served.model.pricing);
          outcome = part.error.code;
          yield {
            __typename: 'ChatFailed',
            code: part.error.code,
            message: publicMessage(part.error),
            usage: used,
            servedBy: served,
            retryAfterMs: part.error.retryAfterMs ?? null,
          };
          return;
      }
    }
    if (!upstream.signal.aborted) {
      used = priced(deliveredUsage(), served.model.pricing);
      outcome = ErrorCode.UPSTREAM_STREAM_INTERRUPTED;
      yield {
        __typename: 'ChatFailed',
        code: ErrorCode.UPSTREAM_STREAM_INTERRUPTED,
        message: `provider ${served.provider} ended the stream without finishing`,
        usage: used,
        servedBy: served,
      };
    }
  } finally {
    // A stream the caller left pays for what was delivered until then.
    // Once a provider took the call, the prompt (and what was delivered) is paid for.
    const final = used ?? (reachedProvider || delivered ? priced(deliveredUsage(), served.model.pricing) : NO_SPEND);
    await held.settle(final, served.model);
    emitChatUsage(context, {
      kind: 'chat_stream',
      model: served.model,
      usage: final,
      startedAt: started,
      timeToFirstTokenMs,
      outcome,
      tags: prepared.tags,
    });
    context.metrics.duration.observe({ ...labels, mode: 'stream' }, (performance.now() - started) / 1000);
    context.signal.removeEventListener('abort', onCallerGone);
    upstream.abort(STREAM_CLOSED);
  }
}
