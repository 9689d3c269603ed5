/**
 * The graphql-http package's server audits (GraphQL over HTTP spec) against the router. Every MUST
 * audit passes (the SHOULD and MAY ones are listed in the README with their results).
 */
import { serverAudits } from 'graphql-http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminHeaders, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack;
beforeAll(async () => {
  // The audits' documents query `__type`, so this stack enables introspection (off by default).
  stack = await startTestStack({ router: { port: 0, shutdownGraceMs: 2_000, limits: { introspection: true } } });
});
afterAll(async () => {
  await stack?.stop();
});

/** The audits' requests, with the stack's admin key (the router refuses unauthenticated ones). */
const authenticatedFetch: typeof fetch = (input, init) => {
  const headers = new Headers(init?.headers);
  for (const [name, value] of Object.entries(adminHeaders(stack.url))) headers.set(name, value);
  return fetch(input, { ...init, headers });
};

const audits = serverAudits({ url: () => stack.url, fetchFn: authenticatedFetch });

describe('GraphQL over HTTP audits against the router', () => {
  it('has MUST audits to run', () => {
    expect(audits.filter((audit) => audit.name.startsWith('MUST')).length).toBeGreaterThanOrEqual(13);
  });

  for (const audit of audits.filter((candidate) => candidate.name.startsWith('MUST'))) {
    it(audit.name, async () => {
      const result = await audit.fn();
      expect(result.status, 'reason' in result ? result.reason : '').toBe('ok');
    });
  }
});

describe('statuses under each media type', () => {
  const post = (accept: string, body: unknown) =>
    fetch(stack.url, {
      method: 'POST',
      headers: { ...adminHeaders(stack.url), accept, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const badVariables = { query: 'query($id: String!) { model(id: $id) { id } }', variables: { id: 42 } };
  const missingVariable = { query: 'query($id: String!) { model(id: $id) { id } }', variables: {} };

  it.each([
    ['variables of the wrong type', badVariables],
    ['a missing required variable', missingVariable],
    ['a document that does not validate', { query: '{ nope }' }],
    ['a document that does not parse', { query: '{' }],
  ])('answers %s with 400 under application/graphql-response+json, and 200 under application/json', async (_what, body) => {
    const strict = await post('application/graphql-response+json', body);
    expect(strict.status).toBe(400);
    const json = (await strict.json()) as { data?: unknown; errors: { extensions?: { code?: string; http?: unknown } }[] };
    expect(json.data).toBeUndefined();
    expect(json.errors[0]!.extensions?.http).toBeUndefined();
    expect(json.errors[0]!.extensions?.code).toMatch(/^(BAD_USER_INPUT|GRAPHQL_VALIDATION_FAILED|GRAPHQL_PARSE_FAILED)$/);
    const legacy = await post('application/json', body);
    expect(legacy.status).toBe(200);
  });
});
