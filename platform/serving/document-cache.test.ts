import { buildSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { documentCache } from './document-cache.ts';

const schema = buildSchema('type Query { hello(name: String): String }');

describe('documentCache', () => {
  it('parses an operation once, so every open subscription of it shares one document', () => {
    const { parse } = documentCache(schema);
    const query = 'query Q($name: String) { hello(name: $name) }';
    const first = parse(query);
    expect(parse(query)).toBe(first);
    expect(parse('{ hello }')).not.toBe(first);
  });

  it('validates a document once, and still reports what is wrong with one that is not valid, every time', () => {
    const { parse, validate } = documentCache(schema);
    const good = parse('{ hello }');
    expect(validate(schema, good)).toEqual([]);
    expect(validate(schema, good)).toEqual([]);
    const bad = parse('{ goodbye }');
    expect(validate(schema, bad)[0]?.message).toContain('Cannot query field "goodbye"');
    expect(validate(schema, bad)).toHaveLength(1);
    // Another schema is validated against, not taken from the cache.
    expect(validate(buildSchema('type Query { other: String }'), good)).toHaveLength(1);
  });

  it('keeps at most `max` documents, dropping the least recently used', () => {
    const { parse } = documentCache(schema, 2);
    const a = parse('{ a: hello }');
    const b = parse('{ b: hello }');
    expect(parse('{ a: hello }')).toBe(a);
    parse('{ c: hello }');
    expect(parse('{ a: hello }')).toBe(a);
    expect(parse('{ b: hello }')).not.toBe(b);
  });

  it('lets a syntax error through, caching nothing', () => {
    const { parse } = documentCache(schema);
    expect(() => parse('{ hello')).toThrow('Syntax Error');
    expect(() => parse('{ hello')).toThrow('Syntax Error');
  });
});
