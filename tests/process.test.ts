import { randomBytes, randomUUID } from 'node:crypto';
import { createClient } from 'graphql-ws';
import { print } from 'graphql';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ChatStreamDocument, type ChatStreamSubscription } from '../codegen/operations.ts';
import { newKeySecret } from '../platform/access/access-store.ts';
import { collectSubscription, postGraphQL } from './support/stack.ts';
import { spawnModelgraph, writeConfig, type ModelgraphProcess } from './support/process.ts';
import { startOpenAIEmulator } from './emulator/openai.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The platform-admin key the processes start with (MODELGRAPH_BOOTSTRAP_KEY), sent on every request. */
const BOOTSTRAP_KEY = newKeySecret('process-test').secret;
const AUTH = { authorization: `Bearer ${BOOTSTRAP_KEY}` };

/** A graphql-ws client of the router at `url` (http), authenticated with `key`. */
const wsClient = (url: string, key = BOOTSTRAP_KEY) =>
  createClient({
    url: url.replace('http', 'ws'),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    connectionParams: { authorization: `Bearer ${key}` },
  });

const running: ModelgraphProcess[] = [];
afterEach(() => {
  for (const process of running.splice(0)) process.kill();
});

function start(args: string[], env?: Record<string, string>): ModelgraphProcess {
  const process = spawnModelgraph(args, env);
  running.push(process);
  return process;
}

/** A whole stack on free ports; the local echo model streams one word every `delayMs`. */
async function startAll(delayMs: number, shutdownGraceMs: number) {
  const config = writeConfig({
    router: { port: 0, shutdownGraceMs },
    subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
    providers: { local: { type: 'local', streamDelayMs: delayMs } },
  });
  const process = start(['all', '--config', config], { MODELGRAPH_BOOTSTRAP_KEY: BOOTSTRAP_KEY });
  const ready = await process.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
  return { process, url: ready.url as string };
}

const CHAT_STREAM = print(ChatStreamDocument);
const words = (count: number) => Array.from({ length: count }, (_, index) => `w${index}`).join(' ');

describe('modelgraph as a process', () => {
  it('starts with a config file and answers a chat through the router', async () => {
    const { url } = await startAll(0, 1_000);
    const { body } = await postGraphQL<{ chat: { content: string } }>(
      url,
      'mutation { chat(input: {model: "default", messages: [{role: USER, content: "hi there"}]}) { content } }',
      undefined,
      AUTH,
    );
    expect(body.data?.chat.content).toBe('hi there');
  });

  it('started as `npm start` does, with no key and no Redis, prints a new admin key once and accepts it', async () => {
    const config = writeConfig({
      router: { port: 0 },
      subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
    });
    const process = start(['all', '--config', config]);
    const ready = await process.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
    const url = ready.url as string;
    // Shown once on standard error, apart from the JSON log on standard output (the two pipes
    // arrive in no fixed order, so wait for it).
    await expect.poll(() => /\bmg_bootstrap_\S+/.test(process.stderr())).toBe(true);
    const key = /\bmg_bootstrap_\S+/.exec(process.stderr())?.[0];
    expect(process.stderr().split(key!).length - 1).toBe(1);
    expect(JSON.stringify(process.lines)).not.toContain(key);
    const { status, body } = await postGraphQL<{ models: { id: string }[] }>(url, '{ models { id } }', undefined, {
      authorization: `Bearer ${key!}`,
    });
    expect(status).toBe(200);
    expect(body.data?.models.length).toBeGreaterThan(0);
    // Without it the router refuses.
    expect((await postGraphQL(url, '{ models { id } }')).status).toBe(401);
  });

  it('refuses to start on a bad config, naming the field, and exits 1', async () => {
    const config = writeConfig({ router: { port: 'four thousand' } });
    const process = start(['--config', config]);
    expect(await process.exit).toBe(1);
    expect(process.stderr()).toContain('router.port');
  });

  it('refuses an unknown command with its usage', async () => {
    const process = start(['subgraph', 'nope']);
    expect(await process.exit).toBe(1);
    expect(process.stderr()).toContain('usage: modelgraph');
  });

  it('runs each subgraph and the router as separate processes', async () => {
    // Split processes share keys through Redis (a prefix of this test's own) and trust each other
    // through one identity secret; the access subgraph stores the bootstrap key at its start.
    const env = { MODELGRAPH_IDENTITY_SECRET: randomBytes(32).toString('hex'), REDIS_URL };
    const redis = { keyPrefix: `mg-test:${randomUUID()}:` };
    const inference = start(['subgraph', 'inference', '--config', writeConfig({ redis, subgraphs: { inference: { port: 0 } } })], env);
    const access = start(['subgraph', 'access', '--config', writeConfig({ redis, subgraphs: { access: { port: 0 } } })], {
      ...env,
      MODELGRAPH_BOOTSTRAP_KEY: BOOTSTRAP_KEY,
    });
    const [inferenceListening, accessListening] = await Promise.all([
      inference.waitForLine((line) => line.msg === 'subgraph inference listening'),
      access.waitForLine((line) => line.msg === 'subgraph access listening'),
    ]);
    const at = (listening: Record<string, unknown>) => `http://127.0.0.1:${listening.port as number}/graphql`;
    const routerConfig = writeConfig({
      redis,
      router: { port: 0 },
      subgraphs: { inference: { url: at(inferenceListening) }, access: { url: at(accessListening) } },
    });
    const router = start(['router', '--config', routerConfig], env);
    const ready = await router.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
    const { body } = await postGraphQL<{ chat: { content: string } }>(
      ready.url as string,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "split"}]}) { content } }',
      undefined,
      AUTH,
    );
    expect(body.data?.chat.content).toBe('split');
    const { results } = await collectSubscription<ChatStreamSubscription>(wsClient(ready.url as string), {
      query: CHAT_STREAM,
      variables: { input: { model: 'echo', messages: [{ role: 'USER', content: 'over ws' }] } },
    });
    expect(results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
  });

  it('on SIGTERM with nothing in flight stops at once and exits 0', async () => {
    const { process } = await startAll(0, 10_000);
    process.child.kill('SIGTERM');
    expect(await process.exit).toBe(0);
    expect(process.lines.at(-1)?.msg).toBe('stopped');
  });

  it('on SIGTERM lets an open stream finish, refuses new connections, and exits 0', async () => {
    const { process, url } = await startAll(40, 10_000);
    const client = wsClient(url);
    const events: ChatStreamSubscription['chatStream'][] = [];
    let completed!: () => void;
    const done = new Promise<void>((resolve) => (completed = resolve));
    let terminated = false;
    client.subscribe<ChatStreamSubscription>(
      { query: CHAT_STREAM, variables: { input: { model: 'echo', messages: [{ role: 'USER', content: words(12) }] } } },
      {
        next: (result) => {
          events.push(result.data!.chatStream);
          if (!terminated) {
            terminated = true;
            process.child.kill('SIGTERM');
          }
        },
        error: completed,
        complete: completed,
      },
    );
    await process.waitForLine((line) => line.msg === 'stopping');
    await expect(fetch(url.replace('/graphql', '/healthz'))).rejects.toThrow();
    await done;
    expect(events.filter((event) => event.__typename === 'ChatDelta')).toHaveLength(12);
    expect(events.at(-1)?.__typename).toBe('ChatCompleted');
    expect(await process.exit).toBe(0);
  });

  it('on a second SIGTERM stops at once with exit code 1', async () => {
    const { process, url } = await startAll(50, 60_000);
    const client = wsClient(url);
    client.subscribe(
      { query: CHAT_STREAM, variables: { input: { model: 'echo', messages: [{ role: 'USER', content: words(200) }] } } },
      {
        next: () => {
          process.child.kill('SIGTERM');
          process.child.kill('SIGTERM');
        },
        error: () => undefined,
        complete: () => undefined,
      },
    );
    expect(await process.exit).toBe(1);
    expect(process.lines.some((line) => line.msg === 'stopping now, without waiting for open requests and streams')).toBe(true);
  });

  it('keeps the subgraph serving while the router drains, so a stream in flight completes (NODE_ENV=production)', async () => {
    const { process, url } = await startAll(40, 10_000);
    const client = wsClient(url);
    const streamed = new Promise<void>((resolve) => {
      let signalled = false;
      client.subscribe(
        { query: CHAT_STREAM, variables: { input: { model: 'echo', messages: [{ role: 'USER', content: words(10) }] } } },
        {
          next: () => {
            if (!signalled) {
              signalled = true;
              process.child.kill('SIGTERM');
            }
          },
          error: () => resolve(),
          complete: () => resolve(),
        },
      );
    });
    await process.waitForLine((line) => line.msg === 'router draining: no new connections; in-flight work may finish');
    // The stream keeps going through the draining router to the subgraph, and its usage arrives.
    await streamed;
    expect(process.lines.some((line) => line.msg === 'unexpected error')).toBe(false);
    expect(await process.exit).toBe(0);
  });

  it('on SIGTERM ends a stream that outlives the grace period with SHUTTING_DOWN, then exits 0', async () => {
    const { process, url } = await startAll(50, 300);
    const client = wsClient(url);
    const results: { data?: ChatStreamSubscription | null; errors?: readonly { extensions?: Record<string, unknown> }[] }[] = [];
    let completed!: () => void;
    const done = new Promise<void>((resolve) => (completed = resolve));
    client.subscribe<ChatStreamSubscription>(
      { query: CHAT_STREAM, variables: { input: { model: 'echo', messages: [{ role: 'USER', content: words(200) }] } } },
      {
        next: (result) => {
          if (results.push(result) === 1) process.child.kill('SIGTERM');
        },
        error: completed,
        complete: completed,
      },
    );
    await done;
    const deltas = results.filter((result) => result.data?.chatStream.__typename === 'ChatDelta');
    expect(deltas.length).toBeGreaterThan(0);
    expect(deltas.length).toBeLessThan(200);
    expect(results.at(-1)?.errors?.[0]?.extensions?.code).toBe('SHUTTING_DOWN');
    expect(await process.exit).toBe(0);
    expect(process.lines.some((line) => line.msg === 'shutdown deadline passed; ending open streams with SHUTTING_DOWN')).toBe(true);
  });
});

describe('modelgraph as a process, with a slow upstream', () => {
  it('answers a whole chat still waiting at the end of the grace period with 503 SHUTTING_DOWN', async () => {
    const emulator = await startOpenAIEmulator();
    try {
      emulator.script({ kind: 'chat', content: 'late', stallBody: true });
      const config = writeConfig({
        router: { port: 0, shutdownGraceMs: 300 },
        subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
        providers: { slow: { type: 'openai-compatible', baseUrl: emulator.baseUrl } },
        models: [{ id: 'slow', provider: 'slow', version: '1', capabilities: ['CHAT'], contextWindow: 1000, maxOutputTokens: 100 }],
      });
      const process = start(['all', '--config', config], { MODELGRAPH_BOOTSTRAP_KEY: BOOTSTRAP_KEY });
      const ready = await process.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
      const reachedUpstream = emulator.nextRequest();
      const pending = postGraphQL(
        ready.url as string,
        'mutation { chat(input: {model: "slow", messages: [{role: USER, content: "hi"}]}) { content } }',
        undefined,
        AUTH,
      );
      await reachedUpstream;
      process.child.kill('SIGTERM');
      const { status, body } = await pending;
      expect(status).toBe(503);
      expect(body.errors?.[0]?.extensions?.code).toBe('SHUTTING_DOWN');
      expect(await process.exit).toBe(0);
    } finally {
      await emulator.close();
    }
  });
});
