import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack();
  // The subgraph goes away; the router stays.
  await stack.stack.subgraphs[0]!.stop(Date.now());
});
afterAll(async () => {
  await stack?.stack.router?.stop(Date.now());
  await stack?.emulator.close();
});

describe('router with its subgraph down', () => {
  it('answers DOWNSTREAM_SERVICE_ERROR naming the service, without its address', async () => {
    for (const query of ['{ models { id } }', 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { content } }']) {
      const { status, body } = await postGraphQL(stack.url, query);
      expect(status).toBe(200);
      expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'DOWNSTREAM_SERVICE_ERROR', serviceName: 'inference' });
      expect(JSON.stringify(body)).not.toMatch(/127\.0\.0\.1|ECONNREFUSED/);
    }
  });

  it('stays alive', async () => {
    expect((await fetch(stack.url.replace('/graphql', '/healthz'))).status).toBe(200);
  });
});
