/** Hostile or unusual input at the router's edge: each is refused or handled, and the router keeps serving. */
import { request as httpRequest } from 'node:http';
import { print } from 'graphql';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatDocument, ChatStreamDocument, type ChatMutation, type ChatStreamSubscription } from '../codegen/operations.ts';
import { adminHeaders, collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

let stack: TestStack;
beforeAll(async () => {
  stack = await startTestStack({ router: { port: 0, allowedOrigins: ['https://app.example.com'] } });
});
afterAll(async () => {
  await stack?.stop();
});

const chat = (content: string) =>
  postGraphQL<ChatMutation>(stack.url, print(ChatDocument), { input: { model: 'gpt-test', messages: [{ role: 'USER', content }] } });

async function stillServes() {
  const { body } = await chat('ping');
  expect(body.data?.chat.content).toBe('ping');
}

/**
 * Sends a body with `transfer-encoding: chunked` (no content-length), in many chunks, with the
 * stack's admin key: the router reads a chunked body only once the caller is authenticated.
 */
function postChunked(url: string, totalBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const headers = { ...adminHeaders(url), 'content-type': 'application/json' };
    const request = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers },
      (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      },
    );
    request.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EPIPE' || error.code === 'ECONNRESET' ? resolve(413) : reject(error),
    );
    const chunk = Buffer.alloc(64 * 1024, 'a');
    request.write('{"query": "{ models { id } }", "extensions": {"pad": "');
    let sent = 0;
    const pump = () => {
      while (sent < totalBytes) {
        sent += chunk.length;
        if (!request.write(chunk)) return void request.once('drain', pump);
      }
      request.end('"}}');
    };
    pump();
  });
}

describe('the router edge', () => {
  it('refuses a chunked body over the size limit with 413', async () => {
    expect(await postChunked(stack.url, 20 * 1024 * 1024)).toBe(413);
    await stillServes();
  });

  it('accepts a chunked body under the size limit', async () => {
    expect(await postChunked(stack.url, 64 * 1024)).toBe(200);
  });

  it('refuses a request from a browser origin that is not allowed, with FORBIDDEN', async () => {
    // Even with a valid credential: the origin decides first.
    const response = await fetch(stack.url, {
      method: 'POST',
      headers: { ...adminHeaders(stack.url), 'content-type': 'application/json', origin: 'https://evil.example' },
      body: JSON.stringify({ query: '{ models { id } }' }),
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { errors: { extensions: { code: string } }[] }).errors[0]?.extensions.code).toBe('FORBIDDEN');
    expect(response.headers.get('access-control-allow-origin')).toBeNull();
    await stillServes();
  });

  it('grants CORS to an allowed origin', async () => {
    const preflight = await fetch(stack.url, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type, authorization',
      },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example.com');
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('authorization');
    const response = await fetch(stack.url, {
      method: 'POST',
      headers: { ...adminHeaders(stack.url), 'content-type': 'application/json', origin: 'https://app.example.com' },
      body: JSON.stringify({ query: '{ models { id } }' }),
    });
    expect(response.status).toBe(200);
  });

  it('refuses a WebSocket from a browser origin that is not allowed, and accepts an allowed one', async () => {
    const refused = await new Promise<number>((resolve) => {
      const socket = new WebSocket(stack.wsUrl, 'graphql-transport-ws', { origin: 'https://evil.example' });
      socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
      socket.on('open', () => resolve(101));
    });
    expect(refused).toBe(403);
    const allowed = createClient({
      url: stack.wsUrl,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${stack.adminKey}` },
      webSocketImpl: class extends WebSocket {
        constructor(address: string, protocols?: string | string[]) {
          super(address, protocols, { origin: 'https://app.example.com' });
        }
      },
    });
    const { results } = await collectSubscription<ChatStreamSubscription>(allowed, {
      query: print(ChatStreamDocument),
      variables: { input: { model: 'echo', messages: [{ role: 'USER', content: 'hello' }] } },
    });
    expect(results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
    await allowed.dispose();
  });

  it('chats about special tokens such as <|endoftext|> instead of failing', async () => {
    const { body } = await chat('What does <|endoftext|> mean in <|im_start|> prompts?');
    expect(body.errors).toBeUndefined();
    expect(body.data?.chat.content).toBe('What does <|endoftext|> mean in <|im_start|> prompts?');
  });

  it('refuses a megabyte-sized prompt without whitespace at once, and keeps serving meanwhile', async () => {
    const huge = 'a'.repeat(stack.config.router.maxBodyBytes - 2_000);
    const refused = postGraphQL(stack.url, print(ChatDocument), { input: { model: 'echo', messages: [{ role: 'USER', content: huge }] } });
    const health = fetch(stack.url.replace('/graphql', '/healthz'));
    expect((await health).status).toBe(200);
    expect((await refused).body.errors?.[0]?.extensions?.code).toBe('CONTEXT_WINDOW_EXCEEDED');
  });

  it('puts the request id on errors streamed over WebSocket and SSE', async () => {
    for (const client of [stack.ws(), stack.sse()]) {
      const { results, error } = await collectSubscription(client, {
        query: print(ChatStreamDocument),
        variables: { input: { model: 'no-such-model', messages: [{ role: 'USER', content: 'x' }] } },
      });
      const errors = [...results.flatMap((result) => result.errors ?? []), ...(Array.isArray(error) ? error : [])] as {
        extensions?: Record<string, unknown>;
      }[];
      expect(errors[0]?.extensions?.code).toBe('MODEL_NOT_FOUND');
      expect(errors[0]?.extensions?.requestId).toEqual(expect.any(String));
    }
  });

  it('codes variables that do not coerce as BAD_USER_INPUT over WebSocket too', async () => {
    const { results, error } = await collectSubscription(stack.ws(), {
      query: print(ChatStreamDocument),
      variables: { input: { model: 'echo', messages: [{ role: 'WIZARD', content: 'x' }] } },
    });
    const errors = [...results.flatMap((result) => result.errors ?? []), ...(Array.isArray(error) ? error : [])] as {
      extensions?: Record<string, unknown>;
    }[];
    expect(errors[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });

  it('labels metrics for at most a bounded number of client-chosen operation names', async () => {
    await Promise.all(Array.from({ length: 260 }, (_, index) => postGraphQL(stack.url, `query Name${index} { models { id } }`)));
    const metrics = await (await fetch(stack.url.replace('/graphql', '/metrics'))).text();
    const series = metrics.split('\n').filter((line) => line.startsWith('modelgraph_router_operations_total{'));
    expect(series.length).toBeLessThanOrEqual(210);
    expect(metrics).toContain('operation="other"');
  });
});

describe('subscriptions per key', () => {
  it('caps the subscriptions one key holds open across its sockets, while another key is not affected', async () => {
    const capped = await startTestStack({ router: { port: 0, limits: { maxSubscriptionsPerPrincipal: 2 } } }, { localStreamDelayMs: 200 });
    try {
      const slow = {
        query:
          'subscription { chatStream(input: {model: "echo", messages: [{role: USER, content: "one two three four five six"}]}) { __typename } }',
      };
      // Two slow streams on two sockets of the admin key stay open...
      await Promise.all(
        [capped.ws(), capped.ws()].map(
          (client) =>
            new Promise<void>((resolve) =>
              client.subscribe(slow, { next: () => resolve(), error: () => resolve(), complete: () => resolve() }),
            ),
        ),
      );
      // ...so a third, on a third socket, is refused with the per-key limit.
      const third = await collectSubscription(capped.ws(), slow);
      const errors = JSON.stringify([...third.results.flatMap((result) => result.errors ?? []), third.error]);
      expect(errors).toContain('OPERATION_LIMIT_EXCEEDED');
      expect(errors).toContain('subscriptionsPerPrincipal');
      // Another key streams.
      const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
        capped.url,
        'mutation { createApiKey(input: {name: "other", scopes: [CHAT_INVOKE]}) { secret } }',
      );
      const other = await collectSubscription<{ chatStream: { __typename: string } }>(
        capped.ws({ authorization: `Bearer ${body.data!.createApiKey.secret}` }),
        slow,
      );
      expect(other.results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
    } finally {
      await capped.stop();
    }
  });
});
