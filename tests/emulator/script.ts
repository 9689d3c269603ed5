/**
 * What a test asks a provider emulator to answer next, in provider-neutral terms. Every emulator
 * (OpenAI, Anthropic, Gemini, Bedrock, …) renders these in its provider's real wire format, so one
 * conformance suite drives every adapter with the same cases.
 */
export interface ScriptedChat {
  kind: 'chat';
  content: string;
  /** Tool calls to answer with (the finish reason becomes the provider's "tool use" reason). */
  toolCalls?: { id: string; name: string; arguments: string }[];
  /** Provider-native finish reason, when a test needs a specific one. */
  finishReason?: string;
  /** Reported usage; `null` reports none (as some OpenAI-compatible servers do). */
  usage?: { prompt: number; completion: number } | null;
  /** Streaming: split content into chunks of this many characters (default: words). */
  chunkChars?: number;
  /** Streaming: wait this long before each chunk. */
  chunkDelayMs?: number;
  /** Streaming: close the connection mid-body after this many content chunks. */
  cutAfterChunks?: number;
  /** Streaming: send a chunk that is not valid JSON (or not a valid frame) after this many content chunks. */
  malformedAfterChunks?: number;
  /** Streaming: hold the stream open and silent after this many content chunks. */
  stallAfterChunks?: number;
  /** Streaming: send the provider's in-stream error event after this many content chunks. */
  errorAfterChunks?: number;
  /** Streaming: the in-stream error event's message (default: the provider's usual one). */
  errorMessage?: string;
  /** Non-streaming: send a body that is not JSON. */
  malformedBody?: boolean;
  /** Non-streaming: send the headers and half the body, then go silent. */
  stallBody?: boolean;
}

export interface ScriptedError {
  kind: 'error';
  /** HTTP status; 529 is "overloaded" (Anthropic's, rendered natively by each emulator). */
  status: number;
  headers?: Record<string, string>;
  /** Defaults to the provider's own error body for that status. */
  body?: unknown;
}

export type Scripted = ScriptedChat | ScriptedError;

export interface RecordedRequest {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The parsed JSON body (or {} when there was none). */
  body: Record<string, unknown>;
}

export interface ProviderEmulator {
  /** Base URL, as configured for the provider. */
  baseUrl: string;
  requests: RecordedRequest[];
  /** Queues answers for the next requests, in order; once empty, requests are echoed. */
  script(...answers: Scripted[]): void;
  /** Resolves when a client closes its connection before the emulator finished answering. */
  nextAbort(): Promise<RecordedRequest>;
  /** Resolves with the next request the emulator receives. */
  nextRequest(): Promise<RecordedRequest>;
  close(): Promise<void>;
}

/** Splits content the way emulators stream it: a word and the whitespace after it, or fixed sizes. */
export function contentPieces(content: string, chunkChars?: number): string[] {
  if (!chunkChars) return content.match(/\s+|\S+\s*/g) ?? [];
  const out: string[] = [];
  for (let index = 0; index < content.length; index += chunkChars) out.push(content.slice(index, index + chunkChars));
  return out;
}

export const wordCount = (text: string) => (text.match(/\S+/g) ?? []).length;

/**
 * The usage an answer reports, before each emulator names its fields: the script's numbers, else
 * the length of the prompt's JSON and the answer's word count; undefined for `usage: null`.
 */
export function scriptedUsage(answer: ScriptedChat, prompt: unknown): { prompt: number; completion: number } | undefined {
  if (answer.usage === null) return undefined;
  return {
    prompt: answer.usage?.prompt ?? JSON.stringify(prompt ?? []).length,
    completion: answer.usage?.completion ?? wordCount(answer.content),
  };
}

/** Tool arguments are streamed in two fragments, to prove that clients concatenate them. */
export function halves(text: string): [string, string] {
  const half = Math.ceil(text.length / 2);
  return [text.slice(0, half), text.slice(half)];
}

/**
 * What every emulator keeps the same way: the queue of scripted answers, the recorded requests,
 * and the waiters for the next request and the next client that goes away mid-answer.
 */
export class EmulatorLog<A, R extends RecordedRequest = RecordedRequest> {
  readonly queue: A[] = [];
  readonly requests: R[] = [];
  readonly #abortWaiters: ((request: RecordedRequest) => void)[] = [];
  readonly #requestWaiters: ((request: RecordedRequest) => void)[] = [];

  /** Records a request and watches its response for a client that leaves before the end. */
  record(recorded: R, response: import('node:http').ServerResponse): R {
    this.requests.push(recorded);
    for (const resolve of this.#requestWaiters.splice(0)) resolve(recorded);
    response.on('close', () => {
      if (!response.writableFinished) for (const resolve of this.#abortWaiters.splice(0)) resolve(recorded);
    });
    return recorded;
  }

  script = (...answers: A[]): void => {
    this.queue.push(...answers);
  };

  nextAbort = (): Promise<RecordedRequest> => new Promise((resolve) => this.#abortWaiters.push(resolve));
  nextRequest = (): Promise<RecordedRequest> => new Promise((resolve) => this.#requestWaiters.push(resolve));
}
