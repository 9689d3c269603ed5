/**
 * Parsed (and validated) operations by their text, for graphql-ws (its `parse` and `validate`
 * options). graphql-ws parses and validates every subscription's query, and an open subscription
 * keeps its document: the router sends a subgraph the same few operations with different
 * variables, so without a cache each open stream held its own copy of the same AST (≈ 30 tokens
 * and 25 locations, 8 KB of an idle subscription's 50 in the inference subgraph).
 */
import { parse, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { ServerOptions } from 'graphql-ws';
import { LRUCache } from 'lru-cache';

/** More distinct operations than this are parsed anew (the least recently used go). */
const CACHED_DOCUMENTS = 1_000;

export function documentCache(schema: GraphQLSchema, max = CACHED_DOCUMENTS): Required<Pick<ServerOptions, 'parse' | 'validate'>> {
  const parsed = new LRUCache<string, DocumentNode>({ max });
  const valid = new WeakSet<DocumentNode>();
  return {
    parse: (source, options) => {
      const text = typeof source === 'string' ? source : source.body;
      let document = parsed.get(text);
      if (!document) {
        document = parse(source, options);
        parsed.set(text, document);
      }
      return document;
    },
    validate: (against, document, ...rest) => {
      // Once per document and schema (which does not change while the server runs), default rules only.
      const cacheable = against === schema && rest.length === 0;
      if (cacheable && valid.has(document)) return [];
      const errors = validate(against, document, ...rest);
      if (cacheable && errors.length === 0) valid.add(document);
      return errors;
    },
  };
}
