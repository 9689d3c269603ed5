/**
 * What every adapter does the same way around its own wire format: reading a whole JSON answer or
 * an error body, parsing stream events (JSON, then the adapter's schema), the stream's connect and
 * failure handling, the errors for a malformed or unfinished answer, keeping secrets out of
 * upstream messages, and counting usage when a provider reports none.
 */
import type { z } from 'zod';
import type { UpstreamResponse } from './http-client.ts';
import type { CallOptions, ChatRequest, ChatStreamPart, FinishReason, ImageSource, ResponseFormat, TokenUsage } from './contract.ts';
import { ProviderError, type ProviderErrorCode, errorFromException } from './errors.ts';
import { parseSse } from './sse.ts';
import { countChatTokens, countTextTokens, tokenUsage } from './tokens.ts';

/** Upstream messages are kept for the logs; this much of one is enough to tell what went wrong. */
export const UPSTREAM_MESSAGE_CHARS = 500;

/** Counts usage ourselves for providers that report none. */
export function countedUsage(request: ChatRequest, completion: string): TokenUsage {
  return tokenUsage(countChatTokens(request.messages), countTextTokens(completion));
}

/**
 * The stop reasons of Anthropic's Messages API, which Bedrock's Converse took over for every model;
 * undefined for the ones each adds of its own.
 */
export function finishOfStopReason(reason: string | null | undefined): FinishReason | undefined {
  switch (reason) {
    case 'end_turn':
    case 'stop_sequence':
      return 'stop';
    case 'max_tokens':
    case 'model_context_window_exceeded':
      return 'length';
    case 'tool_use':
      return 'tool_calls';
    default:
      return undefined;
  }
}

// --- content -----------------------------------------------------------------------------------

/** An image as one URL: its own, or its bytes as a `data:` URL (OpenAI's `image_url`). */
export const imageUrl = (image: ImageSource): string => ('url' in image ? image.url : `data:${image.mediaType};base64,${image.data}`);

/**
 * For providers whose JSON to a schema is always strict and who have no bare JSON mode (Anthropic,
 * Bedrock): a json_object request, or a schema not asked to be followed strictly (their strict
 * decoding refuses schemas it cannot enforce, such as objects left open), is asked for in the
 * system prompt, as their documentation advises. Undefined when the schema itself is sent.
 */
export const JSON_OBJECT_INSTRUCTION = 'Answer with one JSON object and nothing else.';

export function jsonInstruction(format: ResponseFormat | undefined): string | undefined {
  if (format?.type === 'json_object') return JSON_OBJECT_INSTRUCTION;
  if (format?.type === 'json_schema' && !format.strict) {
    return `Answer with one JSON object that follows this JSON Schema, and nothing else: ${JSON.stringify(format.schema)}`;
  }
  return undefined;
}

/** The schema to send as the provider's strict JSON output, when one is asked for strictly. */
export const strictSchema = (format: ResponseFormat | undefined) => (format?.type === 'json_schema' && format.strict ? format : undefined);

// --- errors ------------------------------------------------------------------------------------

export function badResponse(provider: string, detail: string, cause?: unknown): ProviderError {
  return new ProviderError(`${provider} sent a malformed response`, {
    code: 'UPSTREAM_BAD_RESPONSE',
    provider,
    retryable: false,
    upstreamMessage: detail,
    cause,
  });
}

/**
 * The body ended without the provider's sign that the answer was whole (a finish reason, an end
 * event). Deltas may have reached the client, so it is not retryable.
 */
export function streamInterrupted(provider: string, detail?: string): ProviderError {
  return new ProviderError(`${provider} stream ended before the answer finished`, {
    code: 'UPSTREAM_STREAM_INTERRUPTED',
    provider,
    retryable: false,
    ...(detail !== undefined && { upstreamMessage: detail }),
  });
}

/**
 * The provider's own error event inside a stream that had started: what was delivered cannot be
 * taken back, so it is not retryable. `reported` names it in the message when the provider types it.
 */
export function midStreamError(
  provider: string,
  upstreamMessage: string | undefined,
  { code = 'UPSTREAM_UNAVAILABLE', reported = 'an error' }: { code?: ProviderErrorCode; reported?: string } = {},
): ProviderError {
  return new ProviderError(`${provider} reported ${reported} mid-stream`, {
    code,
    provider,
    retryable: false,
    ...(upstreamMessage !== undefined && { upstreamMessage }),
  });
}

/** Upstream messages are logged; some providers echo the credential they refused. */
export function redact(message: string | undefined, ...secrets: (string | undefined)[]): string | undefined {
  let out = message;
  for (const secret of secrets) if (out && secret) out = out.replaceAll(secret, '[redacted]');
  return out;
}

// --- whole bodies ------------------------------------------------------------------------------

/** A JSON object, as opposed to an array, a primitive or null. */
export const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** JSON.parse that says whether the text was JSON rather than throwing. */
export function parseJson(text: string): { ok: true; value: unknown } | { ok: false; error: unknown } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Reads a whole JSON body: a syntax error is a bad response, a timeout or cut body is not. */
export async function readJson(provider: string, response: UpstreamResponse, options: CallOptions): Promise<unknown> {
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    if (options.signal.aborted) throw options.signal.reason;
    throw errorFromException(provider, error, 'body');
  }
  const json = parseJson(text);
  if (!json.ok) throw badResponse(provider, 'body is not JSON', json.error);
  return json.value;
}

/**
 * Reads a refusal's body for the logs: the message `pick` finds in its JSON, else the raw text,
 * clipped; undefined for an empty body. A body that cannot be read counts as empty.
 */
export async function readErrorMessage(
  response: UpstreamResponse,
  pick: (json: unknown) => string | undefined,
): Promise<string | undefined> {
  const text = await response.text().catch(() => '');
  const json = parseJson(text);
  const message = json.ok ? pick(json.value) : undefined;
  return message !== undefined ? message.slice(0, UPSTREAM_MESSAGE_CHARS) : text.slice(0, UPSTREAM_MESSAGE_CHARS) || undefined;
}

// --- stream events -----------------------------------------------------------------------------

/** One stream event read against the adapter's schema; a failure carries the error to yield. */
export type ParsedEvent<T> =
  | { success: true; value: T }
  /** `raw` is the JSON the schema refused; absent when the text was not JSON. */
  | { success: false; error: ProviderError; raw?: unknown };

/**
 * The one "JSON, then schema" step of every stream event, SSE or AWS event-stream. A failure is a
 * bad response whose detail names what failed: `<text> is not JSON`, or the schema's complaint,
 * after `<event>: ` when the event has a type of its own.
 */
export function parseJsonEvent<S extends z.ZodType>(
  provider: string,
  data: string,
  schema: S,
  names: { text: string; event?: string },
): ParsedEvent<z.output<S>> {
  const json = parseJson(data);
  if (!json.ok) return { success: false, error: badResponse(provider, `${names.text} is not JSON`, json.error) };
  const parsed = schema.safeParse(json.value);
  if (parsed.success) return { success: true, value: parsed.data };
  const detail = names.event === undefined ? parsed.error.message : `${names.event}: ${parsed.error.message}`;
  return { success: false, error: badResponse(provider, detail), raw: json.value };
}

export interface JsonEventStreamOptions<S extends z.ZodType> {
  schema: S;
  /** What an event is called in a bad-response detail, e.g. `stream chunk`. */
  what: string;
  /** Data that ends the stream in place of an event, as OpenAI's `[DONE]`. */
  done?: string;
  /** Whether JSON the schema refused is an event type newer than the adapter, skipped, not failed on. */
  ignore?: (json: unknown) => boolean;
}

/**
 * Every SSE adapter's events, parsed once: the body's bytes → SSE events (sse.ts) → JSON →
 * `schema`. Yields a value per event until the body or `done` ends it, or one failure, which is
 * the last. Transport errors (timeouts, a cut connection) are thrown, for `streamParts` to map.
 */
export async function* parseJsonEventStream<S extends z.ZodType>(
  provider: string,
  response: UpstreamResponse,
  { schema, what, done, ignore }: JsonEventStreamOptions<S>,
): AsyncGenerator<ParsedEvent<z.output<S>>> {
  for await (const message of parseSse(response.body)) {
    if (message.data === done) return;
    const event = parseJsonEvent(provider, message.data, schema, { text: what });
    if (!event.success && 'raw' in event && ignore?.(event.raw)) continue;
    yield event;
    if (!event.success) return;
  }
}

// --- the stream contract -----------------------------------------------------------------------

/**
 * The part of `stream` that is the same for every adapter: connects, hands the 2xx response to the
 * adapter's `read`, and turns anything thrown on the way into one final error part, `connect`
 * before a response (another attempt is safe) and `stream` after (deltas may have reached the
 * client). After an abort it ends with no part: nobody is listening. Building the request inside
 * `connect` makes a request the adapter cannot translate an error part too.
 */
export async function* streamParts(
  provider: string,
  signal: AbortSignal,
  connect: () => Promise<UpstreamResponse>,
  read: (response: UpstreamResponse) => AsyncIterable<ChatStreamPart>,
): AsyncGenerator<ChatStreamPart> {
  let response: UpstreamResponse;
  try {
    response = await connect();
  } catch (error) {
    if (signal.aborted) return;
    yield { type: 'error', error: errorFromException(provider, error, 'connect') };
    return;
  }
  try {
    yield* read(response);
  } catch (error) {
    if (signal.aborted) return;
    yield { type: 'error', error: errorFromException(provider, error, 'stream') };
  } finally {
    // An adapter stops at its stream's last event, or at an error: what is left is read so the
    // connection can be reused, unless the caller left (then the rest is not wanted).
    if (signal.aborted) response.cancel();
    else void response.release();
  }
}
