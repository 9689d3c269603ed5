/**
 * How the router subscribes to subgraphs: graphql-ws over WebSocket, one lazy connection per
 * subgraph, and never a retry. A retrying client re-subscribes open operations on a new
 * connection, which for a chat stream means a second upstream call and the answer replayed from
 * its start to the same client; a stream that loses its subgraph must end, coded, instead. Any
 * transport failure (unreachable, socket closed mid-stream) becomes one final result with a
 * DOWNSTREAM_SERVICE_ERROR naming the subgraph, never the raw socket error or address.
 *
 * The socket authenticates as the router (a service token in `connection_init`); each operation
 * carries its caller's identity token in its extensions, moved there from the headers the identity
 * plugin sets (a shared socket has no per-operation headers).
 */
import type { Transport } from '@graphql-mesh/transport-common';
import { buildGraphQLWSExecutor } from '@graphql-tools/executor-graphql-ws';
import type { ExecutionResult } from 'graphql';
import { GraphQLError } from 'graphql';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ErrorCode } from '../platform/errors.ts';
import {
  IDENTITY_CONNECTION_PARAM,
  IDENTITY_EXTENSION,
  IDENTITY_HEADER,
  type IdentityTokens,
} from '../platform/identity/identity-token.ts';
import type { Logger } from '../platform/logger.ts';

export function downstreamFailure(serviceName: string): ExecutionResult {
  return {
    errors: [
      new GraphQLError(`The ${serviceName} service failed to answer.`, {
        extensions: { code: ErrorCode.DOWNSTREAM_SERVICE_ERROR, serviceName },
      }),
    ],
  };
}

/** Turns a stream that throws into one that ends with a coded failure result. */
function endCodedOnFailure(
  source: AsyncIterable<ExecutionResult>,
  serviceName: string,
  log: Logger,
): AsyncIterableIterator<ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  let ended = false;
  const wrapped: AsyncIterableIterator<ExecutionResult> = {
    async next() {
      if (ended) return { done: true, value: undefined };
      try {
        const next = await iterator.next();
        if (next.done) ended = true;
        return next;
      } catch (error) {
        ended = true;
        const reason =
          error instanceof Error
            ? error.message
            : ((error as { reason?: string; code?: number }).reason ?? String((error as { code?: number }).code));
        log.warn({ serviceName, reason }, 'subgraph stream failed');
        return { done: false, value: downstreamFailure(serviceName) };
      }
    },
    async return() {
      ended = true;
      // Not awaited: the graphql-ws client completes the operation on its own schedule.
      iterator.return?.().catch(() => undefined);
      return { done: true, value: undefined };
    },
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}

type ExecutionRequest = Parameters<ReturnType<typeof buildGraphQLWSExecutor>>[0];

/** Headers are not sent over the socket; the identity token travels as an extension instead. */
function identityInExtensions(request: ExecutionRequest): ExecutionRequest {
  const { headers, ...extensions } = (request.extensions ?? {}) as { headers?: Record<string, string> };
  const token = headers?.[IDENTITY_HEADER];
  return { ...request, extensions: { ...extensions, ...(token && { [IDENTITY_EXTENSION]: token }) } };
}

export function createSubgraphWsTransport(log: Logger, tokens: IdentityTokens): Transport {
  return {
    getSubgraphExecutor({ transportEntry }) {
      const url = (transportEntry.location ?? '').replace(/^http/, 'ws');
      const serviceName = transportEntry.subgraph;
      const client = createClient({
        url,
        webSocketImpl: WebSocket,
        lazy: true,
        lazyCloseTimeout: 3_000,
        retryAttempts: 0,
        // Called for every new socket, so a reconnect presents a fresh token.
        connectionParams: async () => ({ [IDENTITY_CONNECTION_PARAM]: await tokens.signService(serviceName) }),
      });
      const executor = buildGraphQLWSExecutor(client);
      const coded = ((request: ExecutionRequest) => {
        const result = executor(identityInExtensions(request)) as unknown;
        if (result && typeof result === 'object' && Symbol.asyncIterator in result) {
          return endCodedOnFailure(result as AsyncIterable<ExecutionResult>, serviceName, log);
        }
        return (result as Promise<ExecutionResult>).catch(() => downstreamFailure(serviceName));
      }) as typeof executor;
      return Object.assign(coded, { [Symbol.asyncDispose]: () => client.dispose() });
    },
  };
}
