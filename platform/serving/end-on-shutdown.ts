/**
 * Wraps a stream of GraphQL results so that shutdown can end it with a clear reason: once `signal`
 * aborts, the stream yields one last result with a SHUTTING_DOWN error and completes, and the
 * source is closed. Used by the router for client streams and by subgraphs for theirs.
 *
 * Written as an iterator object, not an async generator: a generator's `return()` would wait for
 * its pending `next()`, so an unsubscribe would not reach the source until its next event.
 */
import { GraphQLError, type ExecutionResult } from 'graphql';
import { ErrorCode } from '../errors.ts';
import { whenAborted } from './when-aborted.ts';

const SHUTDOWN = Symbol('shutdown');

export function shuttingDownResult(): ExecutionResult {
  return {
    errors: [new GraphQLError('The server is shutting down; reconnect to continue.', { extensions: { code: ErrorCode.SHUTTING_DOWN } })],
  };
}

export function endOnShutdown(source: AsyncIterable<ExecutionResult>, signal: AbortSignal): AsyncGenerator<ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  let finished = false;
  // Removed from the long-lived shutdown signal when this stream ends.
  let detach: () => void = () => undefined;
  const finish = () => {
    if (finished) return;
    finished = true;
    detach();
    iterator.return?.().catch(() => undefined);
  };
  const shutdown = new Promise<typeof SHUTDOWN>((resolve) => {
    detach = whenAborted(signal, () => resolve(SHUTDOWN));
  });
  const done = (): IteratorResult<ExecutionResult> => ({ done: true, value: undefined });
  const wrapped: AsyncGenerator<ExecutionResult> = {
    async next() {
      if (finished) return done();
      let next: IteratorResult<ExecutionResult> | typeof SHUTDOWN;
      try {
        next = await Promise.race([iterator.next(), shutdown]);
      } catch (error) {
        finish();
        throw error;
      }
      if (next === SHUTDOWN) {
        finish();
        return { done: false, value: shuttingDownResult() };
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
