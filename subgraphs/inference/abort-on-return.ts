/**
 * Wraps an async generator so that ending it early (`return()`, as graphql-ws does when a client
 * unsubscribes or disconnects) aborts `controller` at once. A plain async generator cannot do this:
 * `return()` waits until the generator's pending `await` settles, which for a silent upstream
 * means until a timeout. Aborting first makes that pending read fail now, so the generator's
 * `finally` runs and the upstream request is cancelled immediately.
 */
/** Made once: every early end aborts with it (a new Error would capture a stack each time). */
const CONSUMER_STOPPED = new Error('consumer stopped');

export function abortOnReturn<T>(source: AsyncGenerator<T>, controller: AbortController): AsyncGenerator<T> {
  const wrapped: AsyncGenerator<T> = {
    next: (...args) => source.next(...args),
    return: (value) => {
      controller.abort(CONSUMER_STOPPED);
      return source.return(value);
    },
    throw: (error) => {
      controller.abort(error);
      return source.throw(error);
    },
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}
