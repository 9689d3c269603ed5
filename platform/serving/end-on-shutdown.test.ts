import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { ExecutionResult } from 'graphql';
import { endOnShutdown } from './end-on-shutdown.ts';
import { waitingOn } from './when-aborted.ts';

/** A source that yields `values` and then waits forever, recording whether it was closed. */
function source(values: ExecutionResult[]) {
  const state = { closed: false };
  const iterable: AsyncIterable<ExecutionResult> = {
    [Symbol.asyncIterator]: () => {
      let index = 0;
      return {
        next: () =>
          index < values.length ? Promise.resolve({ done: false, value: values[index++]! }) : new Promise<never>(() => undefined),
        return: async () => {
          state.closed = true;
          return { done: true, value: undefined };
        },
      };
    },
  };
  return { iterable, state };
}

describe('endOnShutdown', () => {
  it('passes results through, then ends a waiting stream with SHUTTING_DOWN and closes its source', async () => {
    const shutdown = new AbortController();
    const { iterable, state } = source([{ data: { n: 1 } }]);
    const stream = endOnShutdown(iterable, shutdown.signal);
    expect(await stream.next()).toEqual({ done: false, value: { data: { n: 1 } } });
    const pending = stream.next();
    shutdown.abort();
    const last = await pending;
    expect(last.done).toBe(false);
    expect(last.value?.errors?.[0]?.extensions?.code).toBe('SHUTTING_DOWN');
    expect(await stream.next()).toEqual({ done: true, value: undefined });
    expect(state.closed).toBe(true);
  });

  it('closes its source at once when the consumer returns while a next() is pending', async () => {
    const { iterable, state } = source([]);
    const stream = endOnShutdown(iterable, new AbortController().signal);
    void stream.next();
    await stream.return(undefined);
    expect(state.closed).toBe(true);
  });

  it('keeps one listener on the shared shutdown signal however many streams came and went', async () => {
    const shutdown = new AbortController();
    for (let index = 0; index < 20; index++) {
      const stream = endOnShutdown(source([{ data: {} }]).iterable, shutdown.signal);
      await stream.next();
      await stream.return(undefined);
    }
    const open = endOnShutdown(source([]).iterable, shutdown.signal);
    const pending = open.next();
    expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(1);
    // Only the open stream still waits: every ended one removed itself.
    expect(waitingOn(shutdown.signal)).toBe(1);
    shutdown.abort();
    expect((await pending).value?.errors?.[0]?.extensions?.code).toBe('SHUTTING_DOWN');
  });
});
