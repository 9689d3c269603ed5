/**
 * The REST doors on the router's port: OpenAI's Chat Completions (`POST /v1/chat/completions`),
 * Responses (`POST /v1/responses`), Embeddings (`POST /v1/embeddings`) and Models (`GET
 * /v1/models[/{id}]`) APIs, and Anthropic's Messages API (`POST /v1/messages`). The caller is
 * authenticated as for GraphQL (the same keys and JWTs); each request then runs a fixed GraphQL
 * operation through the router's runtime — its envelop plugins, so the operation's `@rateLimit`,
 * demand control, the subgraph's shield rules, token and USD budgets, usage events and metrics
 * all apply, on the same counters as GraphQL. A REST caller gets nothing a GraphQL caller would not.
 */
import { MAX_TAGS, MAX_TAG_LENGTH } from '../../platform/metering/usage-tags.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { GatewayRuntime } from '@graphql-hive/gateway-runtime';
import { type DocumentNode, type ExecutionResult, type GraphQLError, parse, validate } from 'graphql';
import { ErrorCode, codeOf } from '../../platform/errors.ts';
import type { Principal } from '../../platform/identity/principal.ts';
import type { Logger } from '../../platform/logger.ts';
import { REQUEST_ID_HEADER } from '../../platform/serving/request-id.ts';
import {
  chatDocuments,
  type ChatAnswer,
  ChunkWriter,
  type StreamEvent,
  chatCompletionRequest,
  completion,
  requestError,
  toChatInput,
} from './chat-completions.ts';
import { EMBEDDINGS_DOCUMENT, embeddingsList, embeddingsRequest, toEmbeddingsInput } from './embeddings.ts';
import { type RestError, type RestFormat, restFormatOf, sendOpenAiError, sendRestError } from './errors.ts';
import { MessageEventWriter, anthropicMessage, messagesRequest, toChatInputFromMessages } from './messages.ts';
import { ResponseBuilder, ResponseEventWriter, responsesRequest, toChatInputFromResponses } from './responses.ts';

/** How a door writes a chat stream in its API's events. */
interface StreamWriter {
  start(): string;
  delta(content: string): string;
  finish(completed: Extract<StreamEvent, { __typename: 'ChatCompleted' }>): string;
  failure(error: RestError): string;
}

export const TAGS_HEADER = 'x-modelgraph-tags';

const OPENAI_CHAT = chatDocuments('OpenAIChatCompletion');
const ANTHROPIC_MESSAGES = chatDocuments('AnthropicMessages');
const OPENAI_RESPONSES = chatDocuments('OpenAIResponses');
const MODELS_DOCUMENT = `query OpenAIModels { models { id provider aliases routes } }`;

export interface RestCaller {
  principal: Principal;
  clientAddress: string | null;
  requestId: string;
}

/** The paths the REST doors answer (anything else under /v1 is a 404 in OpenAI's format). */
export function isRestPath(path: string): boolean {
  return path === '/v1' || path.startsWith('/v1/');
}

function sendJson(response: ServerResponse, body: unknown, requestId: string): void {
  const text = JSON.stringify(body);
  response.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    [REQUEST_ID_HEADER]: requestId,
  });
  response.end(text);
}

/** A GraphQL error as the REST error it is: its code and message, masked when it has no code. */
function restErrorOf(error: GraphQLError, log: Logger): RestError {
  const code = codeOf(error);
  const extensions = error.extensions ?? {};
  if (!code) {
    log.error({ err: error }, 'unexpected error');
    return { code: ErrorCode.INTERNAL_SERVER_ERROR, message: 'Internal server error' };
  }
  // A rate limit says when to retry; a token limit or budget, when its window resets.
  const resetAt = typeof extensions.resetAt === 'string' ? Date.parse(extensions.resetAt) : Number.NaN;
  const retryAfterMs =
    typeof extensions.retryAfterMs === 'number' ? extensions.retryAfterMs : Number.isNaN(resetAt) ? undefined : resetAt - Date.now();
  // The status and headers the error carries for HTTP (a rate limit's 429 and RateLimit-* headers).
  const http = extensions.http as { status?: number; headers?: Record<string, string> } | undefined;
  // The SDKs retry a 429 at once; a spent budget will not come back in seconds (both honour this).
  const headers = code === ErrorCode.BUDGET_EXCEEDED ? { ...http?.headers, 'x-should-retry': 'false' } : http?.headers;
  return {
    code,
    message: error.message,
    ...(retryAfterMs !== undefined && { retryAfterMs }),
    ...(http?.status !== undefined && { status: http.status }),
    ...(headers && { headers }),
  };
}

/** Usage tags a REST call adds itself, naming the API it came through (as agents add `agent:<name>`). */
export const API_TAGS = { openai: 'api:openai', anthropic: 'api:anthropic' } as const;

/**
 * Sends what was written at once. Node's response corks its socket on every write and uncorks it
 * on the next tick, which comes only after every queued microtask: when a provider's chunks
 * arrive together, the whole burst would be processed before the first token left. The first
 * token is flushed as soon as it is written; later ones still share writes.
 */
function flushNow(response: ServerResponse): void {
  if (response.socket?.writableCorked) response.socket.uncork();
}

/** One of a call's usage tags is the API's own. */
const MAX_CALLER_TAGS = MAX_TAGS - 1;

/**
 * The caller's tags from the header and from OpenAI's `metadata` (each pair as `key:value`), with
 * the API's own; usage events carry all of them.
 */
function tagsOf(
  request: IncomingMessage,
  api: keyof typeof API_TAGS,
  metadata?: Record<string, string> | null,
): { tags: string[] } | { error: RestError } {
  const header = request.headers[TAGS_HEADER];
  const given =
    typeof header === 'string'
      ? header
          .split(',')
          .map((tag) => tag.trim())
          .filter(Boolean)
      : [];
  const pairs = Object.entries(metadata ?? {}).map(([key, value]) => `${key}:${value}`);
  const long = pairs.find((pair) => pair.length > MAX_TAG_LENGTH);
  if (long !== undefined) {
    const message = `metadata pairs become usage tags, each "key:value" at most ${MAX_TAG_LENGTH} characters`;
    return { error: { code: ErrorCode.BAD_USER_INPUT, message, param: 'metadata' } };
  }
  if (new Set([...given, ...pairs]).size > MAX_CALLER_TAGS) {
    const message = `at most ${MAX_CALLER_TAGS} usage tags, from the ${TAGS_HEADER} header and metadata together`;
    return { error: { code: ErrorCode.BAD_USER_INPUT, message, param: pairs.length ? 'metadata' : TAGS_HEADER } };
  }
  return { tags: [...given, ...pairs, API_TAGS[api]] };
}

export function createRestDoors(runtime: GatewayRuntime, log: Logger) {
  const documents = new Map<string, DocumentNode>();
  /** Parsed and validated against the router's schema once: these documents are ours, not the caller's. */
  const documentOf = (text: string): DocumentNode => {
    let document = documents.get(text);
    if (!document) {
      document = parse(text);
      const errors = validate(runtime.getEnveloped({}).schema, document);
      if (errors.length) throw new Error(`REST operation does not validate: ${errors[0]!.message}`);
      documents.set(text, document);
    }
    return document;
  };

  /** What the runtime's context is built from, as for a WebSocket operation. */
  const enveloped = (caller: RestCaller, signal: AbortSignal) =>
    runtime.getEnveloped({ ...caller, headers: {}, request: { signal } } as never);

  async function execute(
    text: string,
    variables: Record<string, unknown>,
    caller: RestCaller,
    signal: AbortSignal,
  ): Promise<ExecutionResult> {
    const { schema, execute: run, contextFactory } = enveloped(caller, signal);
    return (await run({
      schema,
      document: documentOf(text),
      variableValues: variables,
      contextValue: await contextFactory(),
    })) as ExecutionResult;
  }

  /** Runs an operation and returns its one root field, or the REST error its first error is. */
  async function fieldOf<T>(
    text: string,
    field: string,
    variables: Record<string, unknown>,
    caller: RestCaller,
    signal: AbortSignal,
  ): Promise<{ value: T } | { error: RestError }> {
    const result = await execute(text, variables, caller, signal);
    const value = (result.data as Record<string, T | null> | null | undefined)?.[field];
    return value ? { value } : { error: restErrorOf(result.errors![0]!, log) };
  }

  async function chatCompletions(
    request: IncomingMessage,
    response: ServerResponse,
    body: unknown,
    caller: RestCaller,
    signal: AbortSignal,
  ) {
    const parsed = chatCompletionRequest.safeParse(body);
    if (!parsed.success) return sendOpenAiError(response, requestError(parsed.error), caller.requestId);
    const tags = tagsOf(request, 'openai', parsed.data.metadata);
    if ('error' in tags) return sendOpenAiError(response, tags.error, caller.requestId);
    const translated = toChatInput(parsed.data, tags.tags);
    if ('error' in translated) return sendOpenAiError(response, translated.error, caller.requestId);
    const model = parsed.data.model;
    if (!parsed.data.stream) {
      const answer = await fieldOf<ChatAnswer>(OPENAI_CHAT.whole, 'chat', translated, caller, signal);
      if ('error' in answer) return sendOpenAiError(response, answer.error, caller.requestId);
      return sendJson(response, completion(answer.value, model), caller.requestId);
    }
    return stream(
      response,
      OPENAI_CHAT.stream,
      translated,
      new ChunkWriter(model, parsed.data.stream_options?.include_usage === true),
      'openai',
      caller,
      signal,
    );
  }

  /** Runs `chatStream` and writes its events with `writer`; a refusal before the first event is an HTTP error. */
  async function stream(
    response: ServerResponse,
    document: string,
    variables: Record<string, unknown>,
    writer: StreamWriter,
    format: RestFormat,
    caller: RestCaller,
    signal: AbortSignal,
  ) {
    const { schema, subscribe, contextFactory } = enveloped(caller, signal);
    const subscribed = (await subscribe({
      schema,
      document: documentOf(document),
      variableValues: variables,
      contextValue: await contextFactory(),
    })) as AsyncIterableIterator<ExecutionResult> | ExecutionResult;
    if (!(Symbol.asyncIterator in subscribed))
      return sendRestError(response, format, restErrorOf(subscribed.errors![0]!, log), caller.requestId);
    const events = subscribed;
    const ended = () => {
      events.return?.().catch((error: unknown) => log.warn({ err: error }, 'stream did not close cleanly'));
    };
    response.once('close', ended);
    const eventOf = (result: ExecutionResult) => (result.data as { chatStream?: StreamEvent } | null | undefined)?.chatStream;
    try {
      // Refusals before the first event (an unknown model, a budget) are still HTTP errors.
      const first = await events.next();
      if (!first.done && !eventOf(first.value))
        return sendRestError(response, format, restErrorOf(first.value.errors![0]!, log), caller.requestId);
      // A failure before any token (the provider refused, every target failed) is still an HTTP
      // error, with its status, so clients see a 429 or 5xx they can retry.
      const opening = first.done ? undefined : eventOf(first.value);
      if (opening?.__typename === 'ChatFailed') {
        const { code, message, retryAfterMs } = opening;
        return sendRestError(response, format, { code, message, ...(retryAfterMs !== null && { retryAfterMs }) }, caller.requestId);
      }
      response.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        // A proxy in front (nginx) passes events through as they come rather than buffering them.
        'x-accel-buffering': 'no',
        [REQUEST_ID_HEADER]: caller.requestId,
      });
      response.write(writer.start());
      // After the stream started, a failure is the API's error event, never a cut socket.
      try {
        let next = first.done ? undefined : eventOf(first.value);
        while (next) {
          if (next.__typename === 'ChatCompleted') return void response.end(writer.finish(next));
          if (next.__typename === 'ChatFailed') return void response.end(writer.failure({ code: next.code, message: next.message }));
          response.write(writer.delta(next.content));
          if (next === opening) flushNow(response);
          const step = await events.next();
          if (step.done) break;
          next = eventOf(step.value);
          if (!next) return void response.end(writer.failure(restErrorOf(step.value.errors![0]!, log)));
        }
        response.end(
          writer.failure({ code: ErrorCode.UPSTREAM_STREAM_INTERRUPTED, message: 'the stream ended before the answer finished' }),
        );
      } catch (error) {
        log.error({ err: error }, 'unexpected error');
        if (!response.writableEnded)
          response.end(writer.failure({ code: ErrorCode.INTERNAL_SERVER_ERROR, message: 'Internal server error' }));
      }
    } finally {
      response.off('close', ended);
      ended();
    }
  }

  async function messages(request: IncomingMessage, response: ServerResponse, body: unknown, caller: RestCaller, signal: AbortSignal) {
    const fail = (error: RestError) => sendRestError(response, 'anthropic', error, caller.requestId);
    const parsed = messagesRequest.safeParse(body);
    if (!parsed.success) return fail(requestError(parsed.error));
    const tags = tagsOf(request, 'anthropic');
    if ('error' in tags) return fail(tags.error);
    const translated = toChatInputFromMessages(parsed.data, tags.tags);
    if ('error' in translated) return fail(translated.error);
    const model = parsed.data.model;
    if (parsed.data.stream) {
      return stream(response, ANTHROPIC_MESSAGES.stream, translated, new MessageEventWriter(model), 'anthropic', caller, signal);
    }
    const answer = await fieldOf<ChatAnswer>(ANTHROPIC_MESSAGES.whole, 'chat', translated, caller, signal);
    if ('error' in answer) return fail(answer.error);
    return sendJson(response, anthropicMessage(answer.value, model), caller.requestId);
  }

  async function responses(request: IncomingMessage, response: ServerResponse, body: unknown, caller: RestCaller, signal: AbortSignal) {
    const fail = (error: RestError) => sendOpenAiError(response, error, caller.requestId);
    const parsed = responsesRequest.safeParse(body);
    if (!parsed.success) return fail(requestError(parsed.error));
    const tags = tagsOf(request, 'openai', parsed.data.metadata);
    if ('error' in tags) return fail(tags.error);
    const translated = toChatInputFromResponses(parsed.data, tags.tags);
    if ('error' in translated) return fail(translated.error);
    const builder = new ResponseBuilder(parsed.data.model, parsed.data);
    if (parsed.data.stream) {
      return stream(response, OPENAI_RESPONSES.stream, translated, new ResponseEventWriter(builder), 'openai', caller, signal);
    }
    const answer = await fieldOf<ChatAnswer>(OPENAI_RESPONSES.whole, 'chat', translated, caller, signal);
    if ('error' in answer) return fail(answer.error);
    return sendJson(response, builder.completed(answer.value), caller.requestId);
  }

  async function embeddings(request: IncomingMessage, response: ServerResponse, body: unknown, caller: RestCaller, signal: AbortSignal) {
    const parsed = embeddingsRequest.safeParse(body);
    if (!parsed.success) return sendOpenAiError(response, requestError(parsed.error), caller.requestId);
    const tags = tagsOf(request, 'openai');
    if ('error' in tags) return sendOpenAiError(response, tags.error, caller.requestId);
    const translated = toEmbeddingsInput(parsed.data, tags.tags);
    if ('error' in translated) return sendOpenAiError(response, translated.error, caller.requestId);
    const answer = await fieldOf<Parameters<typeof embeddingsList>[0]>(EMBEDDINGS_DOCUMENT, 'embeddings', translated, caller, signal);
    if ('error' in answer) return sendOpenAiError(response, answer.error, caller.requestId);
    return sendJson(response, embeddingsList(answer.value, parsed.data.model, parsed.data.encoding_format ?? 'float'), caller.requestId);
  }

  async function models(response: ServerResponse, caller: RestCaller, signal: AbortSignal, id?: string) {
    type Listed = { id: string; provider: string; aliases: string[]; routes: string[] };
    const listed = await fieldOf<Listed[]>(MODELS_DOCUMENT, 'models', {}, caller, signal);
    if ('error' in listed) return sendOpenAiError(response, listed.error, caller.requestId);
    // The names this key may send as `model`: a model's id and aliases when the model itself is
    // allowed, and the allowed routes it serves (a model reached only through a route is not).
    const { allowedModels } = caller.principal;
    const names = new Map<string, string>();
    for (const model of listed.value) {
      const direct = allowedModels === null || allowedModels.includes(model.id);
      for (const name of [...(direct ? [model.id, ...model.aliases] : []), ...model.routes]) {
        if (!names.has(name)) names.set(name, model.provider);
      }
    }
    const objects = [...names].map(([name, provider]) => ({ id: name, object: 'model', created: 0, owned_by: provider }));
    if (id === undefined) return sendJson(response, { object: 'list', data: objects }, caller.requestId);
    const found = objects.find((model) => model.id === id);
    if (!found)
      return sendOpenAiError(
        response,
        { code: ErrorCode.MODEL_NOT_FOUND, message: `The model '${id}' does not exist or you do not have access to it.`, param: 'model' },
        caller.requestId,
      );
    return sendJson(response, found, caller.requestId);
  }

  type Handler = (
    request: IncomingMessage,
    response: ServerResponse,
    body: unknown,
    caller: RestCaller,
    signal: AbortSignal,
  ) => Promise<void>;

  /** The routes: path → the method it takes and what answers it. */
  const routes: Record<string, { method: 'POST' | 'GET'; handle: Handler }> = {
    '/v1/chat/completions': { method: 'POST', handle: chatCompletions },
    '/v1/messages': { method: 'POST', handle: messages },
    '/v1/responses': { method: 'POST', handle: responses },
    '/v1/embeddings': { method: 'POST', handle: embeddings },
    '/v1/models': { method: 'GET', handle: (_request, response, _body, caller, signal) => models(response, caller, signal) },
  };

  function route(path: string): { method: 'POST' | 'GET'; handle: Handler } | undefined {
    const exact = routes[path];
    if (exact || !path.startsWith('/v1/models/')) return exact;
    let id: string;
    try {
      id = decodeURIComponent(path.slice('/v1/models/'.length));
    } catch {
      return undefined;
    }
    return { method: 'GET', handle: (_request, response, _body, caller, signal) => models(response, caller, signal, id) };
  }

  return {
    /** Answers one authenticated request under /v1; `body` is its parsed JSON (undefined for a GET). */
    async handle(request: IncomingMessage, response: ServerResponse, body: unknown, caller: RestCaller): Promise<void> {
      const path = (request.url ?? '/').split('?')[0]!;
      const format = restFormatOf(path);
      const target = route(path);
      if (!target) {
        return sendRestError(
          response,
          format,
          { code: ErrorCode.NOT_FOUND, message: `Unknown request URL: ${request.method} ${path}` },
          caller.requestId,
        );
      }
      if (request.method !== target.method && !(target.method === 'GET' && request.method === 'HEAD')) {
        const wrong = { code: ErrorCode.BAD_USER_INPUT, message: `${request.method} is not allowed on ${path}; use ${target.method}` };
        return sendRestError(response, format, wrong, caller.requestId, 405, { allow: target.method });
      }
      const aborter = new AbortController();
      // The caller left before the answer was whole: what runs for it is cancelled.
      const left = () => {
        if (!response.writableFinished) aborter.abort();
      };
      response.once('close', left);
      try {
        await target.handle(request, response, body, caller, aborter.signal);
      } catch (error) {
        log.error({ err: error }, 'unexpected error');
        const internal = { code: ErrorCode.INTERNAL_SERVER_ERROR, message: 'Internal server error' };
        if (!response.headersSent) sendRestError(response, format, internal, caller.requestId);
        else if (!response.writableEnded) response.end();
      } finally {
        response.off('close', left);
      }
    },
  };
}

export type RestDoors = ReturnType<typeof createRestDoors>;
