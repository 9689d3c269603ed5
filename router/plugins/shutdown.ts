/**
 * Graceful shutdown of streams. Every subscription result the router hands out (WebSocket or SSE)
 * is wrapped so that shutdown can end it with a clear reason: once `signal` aborts, the stream
 * sends one last result with a SHUTTING_DOWN error and completes, and the subgraph stream behind
 * it is closed. `inFlight` counts open streams so shutdown can wait for them to finish first.
 */
import { GraphQLError, type ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { ErrorCode } from '../../platform/errors.ts';
import type { InFlight } from '../../platform/in-flight.ts';

const SHUTDOWN = Symbol('shutdown');

async function* endOnShutdown<T extends ExecutionResult>(
  source: AsyncIterable<T>,
  signal: AbortSignal,
  end: () => void,
): AsyncGenerator<T | ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  const shutdown = new Promise<typeof SHUTDOWN>((resolve) => {
    if (signal.aborted) resolve(SHUTDOWN);
    else signal.addEventListener('abort', () => resolve(SHUTDOWN), { once: true });
  });
  try {
    while (true) {
      const next = await Promise.race([iterator.next(), shutdown]);
      if (next === SHUTDOWN) {
        yield {
          errors: [new GraphQLError('The server is shutting down; reconnect to continue.', { extensions: { code: ErrorCode.SHUTTING_DOWN } })],
        };
        return;
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    end();
    void iterator.return?.();
  }
}

export function useGracefulStreams(signal: AbortSignal, inFlight: InFlight): GatewayPlugin {
  return {
    onSubscribe() {
      return {
        onSubscribeResult({ result, setResult }) {
          if (Symbol.asyncIterator in result) {
            setResult(endOnShutdown(result as AsyncIterable<ExecutionResult>, signal, inFlight.begin()));
          }
        },
      };
    },
  };
}
