/**
 * How an agent run reaches the rest of the supergraph: through the router, as its owner. Each
 * request carries a delegation token (the owner's principal with the run as `actor`), so the router
 * authenticates it like the owner (re-reading the owner's key), and its shield rules, rate limits,
 * demand control and metering apply exactly as to the owner's own calls.
 *
 * Model calls are `chatStream` subscriptions over GraphQL over SSE (distinct connections mode), so
 * the run can pass text on as it comes; tool calls are plain POSTs of the tool's operation.
 */
import { Agent, fetch, type Response } from 'undici';
import { ErrorCode, isErrorCode } from '../../platform/errors.ts';
import { DELEGATION_HEADER, type IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { Principal } from '../../platform/identity/principal.ts';
import { REQUEST_ID_HEADER } from '../../platform/serving/request-id.ts';
import { parseSse } from '../../providers/sse.ts';
import { NO_SPEND, type Spend } from '../../platform/metering/spend.ts';
import type { RunError } from './records.ts';

export interface GraphQLResult {
  data?: Record<string, unknown> | null;
  errors?: { message: string; path?: readonly (string | number)[]; extensions?: Record<string, unknown> }[];
  /** `spend`: what the operation's model calls cost (the router reports it to agent runs). */
  extensions?: Record<string, unknown>;
}

/** What a chat input looks like on the wire (`ChatInput` of the API schema). */
export interface ChatInputWire {
  model: string;
  messages: {
    role: 'SYSTEM' | 'USER' | 'ASSISTANT' | 'TOOL';
    content: string;
    toolCallId?: string;
    toolCalls?: { id: string; name: string; arguments: string }[];
  }[];
  tools?: { name: string; description: string; parameters: string }[];
  maxTokens?: number;
  tags?: string[];
}

export type ChatEvent =
  | { kind: 'delta'; content: string }
  | { kind: 'completed'; toolCalls: { id: string; name: string; arguments: string }[]; usage: Spend }
  | { kind: 'failed'; error: RunError; usage: Spend };

const CHAT_STREAM = /* GraphQL */ `
  subscription AgentStep($input: ChatInput!) {
    chatStream(input: $input) {
      __typename
      ... on ChatDelta { content }
      ... on ChatCompleted { toolCalls { id name arguments } usage { promptTokens completionTokens totalTokens costUsd } }
      ... on ChatFailed { code message usage { promptTokens completionTokens totalTokens costUsd } }
    }
  }
`;

interface StreamPayload {
  __typename: 'ChatDelta' | 'ChatCompleted' | 'ChatFailed';
  content?: string;
  toolCalls?: { id: string; name: string; arguments: string }[];
  usage?: Spend;
  code?: string;
  message?: string;
}

/** The first error of a result, as a run error (a code from the enum, or INTERNAL_SERVER_ERROR). */
export function firstError(errors: GraphQLResult['errors']): RunError {
  const first = errors?.[0];
  const code = first?.extensions?.code;
  return { code: isErrorCode(code) ? code : ErrorCode.INTERNAL_SERVER_ERROR, message: first?.message ?? 'the request failed' };
}

export class RouterClient {
  readonly #url: () => string;
  readonly #identity: IdentityTokens;
  readonly #agent = new Agent({ keepAliveTimeout: 30_000, connect: { timeout: 5_000 }, headersTimeout: 0, bodyTimeout: 0 });

  /** `url` is read per request: in one process the router starts after this subgraph. */
  constructor(url: () => string, identity: IdentityTokens) {
    this.#url = url;
    this.#identity = identity;
  }

  /** Runs an operation as `principal`; a transport failure becomes a coded error result. */
  async execute(
    principal: Principal,
    request: { query: string; variables?: Record<string, unknown>; operationName?: string | undefined },
    requestId: string,
    signal: AbortSignal,
  ): Promise<GraphQLResult> {
    let response: Response;
    try {
      response = await this.#post(principal, request, 'application/graphql-response+json, application/json', requestId, signal);
    } catch {
      if (signal.aborted) throw signal.reason;
      return unreachable();
    }
    let text: string;
    try {
      text = await response.text();
    } catch {
      if (signal.aborted) throw signal.reason;
      return unreachable();
    }
    try {
      return JSON.parse(text) as GraphQLResult;
    } catch {
      return {
        errors: [
          {
            message: `the router answered ${response.status} without a GraphQL result`,
            extensions: { code: ErrorCode.DOWNSTREAM_SERVICE_ERROR },
          },
        ],
      };
    }
  }

  /** Streams one chat as `principal`; always ends with exactly one `completed` or `failed`. */
  async *chat(principal: Principal, input: ChatInputWire, requestId: string, signal: AbortSignal): AsyncGenerator<ChatEvent> {
    let response: Response;
    try {
      response = await this.#post(principal, { query: CHAT_STREAM, variables: { input } }, 'text/event-stream', requestId, signal);
    } catch {
      if (signal.aborted) throw signal.reason;
      const { errors } = unreachable();
      yield { kind: 'failed', error: firstError(errors), usage: NO_SPEND };
      return;
    }
    if (!response.body || !(response.headers.get('content-type') ?? '').includes('text/event-stream')) {
      // Refused before streaming (401, 429, …): a GraphQL result in JSON.
      const body = await response.text();
      let errors: GraphQLResult['errors'];
      try {
        errors = (JSON.parse(body) as GraphQLResult).errors;
      } catch {
        errors = undefined;
      }
      yield {
        kind: 'failed',
        error: errors?.length
          ? firstError(errors)
          : { code: ErrorCode.DOWNSTREAM_SERVICE_ERROR, message: `the router answered ${response.status}` },
        usage: NO_SPEND,
      };
      return;
    }
    for await (const message of parseSse(response.body as AsyncIterable<Uint8Array>)) {
      if (message.event === 'complete') break;
      if (message.event !== 'next') continue;
      const result = JSON.parse(message.data) as GraphQLResult;
      const payload = result.data?.chatStream as StreamPayload | undefined;
      if (!payload) {
        yield { kind: 'failed', error: firstError(result.errors), usage: NO_SPEND };
        return;
      }
      if (payload.__typename === 'ChatDelta') yield { kind: 'delta', content: payload.content ?? '' };
      else if (payload.__typename === 'ChatCompleted') {
        yield { kind: 'completed', toolCalls: payload.toolCalls ?? [], usage: payload.usage ?? NO_SPEND };
        return;
      } else {
        const code = isErrorCode(payload.code) ? payload.code : ErrorCode.INTERNAL_SERVER_ERROR;
        yield { kind: 'failed', error: { code, message: payload.message ?? 'the model call failed' }, usage: payload.usage ?? NO_SPEND };
        return;
      }
    }
    if (signal.aborted) throw signal.reason;
    yield {
      kind: 'failed',
      error: { code: ErrorCode.UPSTREAM_STREAM_INTERRUPTED, message: 'the model stream ended before it finished' },
      usage: NO_SPEND,
    };
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }

  async #post(principal: Principal, body: unknown, accept: string, requestId: string, signal: AbortSignal) {
    return fetch(this.#url(), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept,
        [DELEGATION_HEADER]: await this.#identity.signDelegation(principal),
        [REQUEST_ID_HEADER]: requestId,
      },
      body: JSON.stringify(body),
      signal,
      dispatcher: this.#agent,
    });
  }
}

/** The router's address stays out of what the model and the run's owner see. */
function unreachable(): GraphQLResult {
  return { errors: [{ message: 'the router could not be reached', extensions: { code: ErrorCode.SERVICE_UNAVAILABLE } }] };
}
