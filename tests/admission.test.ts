/**
 * Admission control through the whole stack: past `router.admission.maxOperations` (and a short
 * queue) an operation is refused at once with OVERLOADED, 503 and Retry-After — over GraphQL and
 * the REST doors — and past `maxStreams` a subscription is; slots come back when operations end,
 * also when their caller leaves.
 */
import { print } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import { ChatStreamDocument, type ChatStreamSubscription } from '../codegen/operations.ts';
import { collectSubscription, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const chat = (model: string, signal?: AbortSignal) =>
  fetch(stack!.url, {
    method: 'POST',
    headers: { authorization: `Bearer ${stack!.adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ query: `mutation { chat(input: {model: "${model}", messages: [{role: USER, content: "in"}]}) { content } }` }),
    ...(signal && { signal }),
  });

describe('admission control', () => {
  it('refuses an operation past maxOperations and its queue with 503 OVERLOADED, and admits again once slots free', async () => {
    stack = await startTestStack({
      router: { port: 0, shutdownGraceMs: 2_000, admission: { maxOperations: 2, maxQueued: 1, queueTimeoutMs: 200 } },
    });
    // Two chats that hang upstream hold both slots.
    stack.emulator.script({ kind: 'chat', content: 'never', stallBody: true }, { kind: 'chat', content: 'never', stallBody: true });
    const leaving = new AbortController();
    const holding = [chat('gpt-test', leaving.signal), chat('gpt-test', leaving.signal)].map((call) => call.catch(() => undefined));
    await stack.emulator.nextRequest();
    await stack.emulator.nextRequest();
    // The third waits its 200 ms in the queue, then is refused; REST is refused the same way.
    const refused = await chat('echo');
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = (await refused.json()) as { errors: { extensions: Record<string, unknown> }[] };
    expect(body.errors[0]!.extensions).toMatchObject({ code: 'OVERLOADED', limit: 'maxOperations', max: 2 });
    const rest = await fetch(stack.url.replace('/graphql', '/v1/models'), { headers: { authorization: `Bearer ${stack.adminKey}` } });
    expect(rest.status).toBe(503);
    expect(((await rest.json()) as { error: { code: string } }).error.code).toBe('OVERLOADED');
    // Their callers leave: the slots come back.
    leaving.abort();
    await Promise.all(holding);
    await expect
      .poll(async () => ((await (await chat('echo')).json()) as { data?: { chat?: { content: string } } }).data?.chat?.content)
      .toBe('in');
  });

  it('refuses a subscription past maxStreams, and admits another once the open one ends', async () => {
    stack = await startTestStack(
      { router: { port: 0, shutdownGraceMs: 2_000, admission: { maxStreams: 1, maxQueued: 0 } } },
      { localStreamDelayMs: 30 },
    );
    const stream = (content: string) =>
      collectSubscription<ChatStreamSubscription>(stack!.ws(), {
        query: print(ChatStreamDocument),
        variables: { input: { model: 'echo', messages: [{ role: 'USER', content }] } },
      });
    // The first is open once its first word arrives (the rest come 30 ms apart); a second is refused at once.
    let opened!: () => void;
    const firstWord = new Promise<void>((resolve) => {
      opened = resolve;
    });
    const open = new Promise<unknown>((resolve) => {
      stack!.ws().subscribe(
        {
          query: print(ChatStreamDocument),
          variables: { input: { model: 'echo', messages: [{ role: 'USER', content: 'one two three four five' }] } },
        },
        { next: opened, error: resolve, complete: () => resolve('complete') },
      );
    });
    await firstWord;
    const refused = await stream('two');
    expect(refused.error ?? refused.results[0]?.errors?.[0]).toMatchObject({ extensions: { code: 'OVERLOADED', limit: 'maxStreams' } });
    expect(await open).toBe('complete');
    const after = await stream('three');
    expect(after.results.at(-1)?.data?.chatStream).toMatchObject({ __typename: 'ChatCompleted' });
  });
});
