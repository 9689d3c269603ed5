/**
 * Graceful shutdown of streams. Every subscription result the router hands out (WebSocket or SSE)
 * is wrapped so that shutdown can end it with a clear reason: once `signal` aborts, the stream
 * sends one last result with a SHUTTING_DOWN error and completes, and the subgraph stream behind
 * it is closed. The server counts open streams itself (WS operations, HTTP responses) and aborts
 * `signal` only when they outlive the grace period.
 */
import { GraphQLError, type ExecutionResult } from 'graphql';
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import { ErrorCode } from '../../platform/errors.ts';

const SHUTDOWN = Symbol('shutdown');

/**
 * Written as an iterator object, not an async generator: a generator's `return()` would wait for
 * its pending `next()`, so an unsubscribe would not reach the subgraph until the next event.
 */
function endOnShutdown(source: AsyncIterable<ExecutionResult>, signal: AbortSignal): AsyncGenerator<ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    void iterator.return?.();
  };
  const shutdown = new Promise<typeof SHUTDOWN>((resolve) => {
    if (signal.aborted) resolve(SHUTDOWN);
    else signal.addEventListener('abort', () => resolve(SHUTDOWN), { once: true });
  });
  const done = (): IteratorResult<ExecutionResult> => ({ done: true, value: undefined });
  const wrapped: AsyncGenerator<ExecutionResult> = {
    async next() {
      if (finished) return done();
      const next = await Promise.race([iterator.next(), shutdown]);
      if (next === SHUTDOWN) {
        finish();
        const error = new GraphQLError('The server is shutting down; reconnect to continue.', { extensions: { code: ErrorCode.SHUTTING_DOWN } });
        return { done: false, value: { errors: [error] } };
      }
      if (next.done) finish();
      return next;
    },
    async return() {
      finish();
      return done();
    },
    async throw(error: unknown) {
      finish();
      throw error;
    },
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}

export function useGracefulStreams(signal: AbortSignal): GatewayPlugin {
  return {
    onSubscribe() {
      return {
        onSubscribeResult({ result, setResult }) {
          if (Symbol.asyncIterator in result) {
            setResult(endOnShutdown(result, signal));
          }
        },
      };
    },
  };
}
