/**
 * Subscription fields in modelgraph have a `subscribe` and no `resolve`: their streams yield
 * `{ [field]: event }` payloads that the default resolver reads. The reason is authorization:
 * graphql-middleware (under graphql-shield) wraps a field's `resolve` when it has one and its
 * `subscribe` only when it has none, and a rule that runs per event, after `subscribe` started
 * the stream, is too late (the provider has been called). subgraph-server.ts refuses a schema
 * whose subscription field has its own `resolve`.
 */
export function asPayloads<Field extends string, T>(field: Field, source: AsyncGenerator<T>): AsyncGenerator<{ [K in Field]: T }> {
  const wrap = (result: IteratorResult<T>): IteratorResult<{ [K in Field]: T }> =>
    result.done ? { done: true, value: undefined } : { done: false, value: { [field]: result.value } as { [K in Field]: T } };
  const wrapped: AsyncGenerator<{ [K in Field]: T }> = {
    next: async () => wrap(await source.next()),
    return: async () => wrap(await source.return(undefined)),
    throw: async (error) => wrap(await source.throw(error)),
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}
