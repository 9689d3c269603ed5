/**
 * `router.workers`: one primary process forking workers that serve the same ports. Which worker
 * served a request shows in its log: the subgraph's "operation completed" line carries the
 * request id we send and the `pid` of the process that ran it (the router's own worker, as
 * subgraphs are called in process). Every request goes over a new connection, because the
 * cluster hands out connections, not requests.
 */
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKeySecret } from '../platform/access/access-store.ts';
import { spawnModelgraph, writeConfig, type ModelgraphProcess } from './support/process.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const BOOTSTRAP_KEY = newKeySecret('workers-test').secret;
/** Query.models calls a key may make; per hour, so a slow machine cannot earn one back mid-test (GCRA). */
const MODELS_PER_HOUR = 3;
/** Three clusters start at once: generous, for a loaded 2-core machine (about 10 s each when idle). */
const STARTUP_MS = 120_000;
const ANY_PORT = { port: 0 };
const SUBGRAPHS = { inference: ANY_PORT, embeddings: ANY_PORT, agents: ANY_PORT, usage: ANY_PORT, access: ANY_PORT };

interface Answer<T = Record<string, unknown>> {
  status: number;
  body: { data?: T | null; errors?: { message: string; extensions?: { code?: string } }[] };
  requestId: string;
}

/** A GraphQL POST over a connection of its own (no keep-alive), with a request id of its own. */
function postFresh<T = Record<string, unknown>>(url: string, query: string, key: string): Promise<Answer<T>> {
  const requestId = randomUUID();
  const payload = JSON.stringify({ query });
  return new Promise((resolve, reject) => {
    const outgoing = request(url, {
      method: 'POST',
      agent: false,
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        authorization: `Bearer ${key}`,
        'x-request-id': requestId,
      },
    });
    outgoing.on('error', reject);
    outgoing.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, body: JSON.parse(text) as Answer<T>['body'], requestId }));
      response.on('error', reject);
    });
    outgoing.end(payload);
  });
}

const isReady = (line: Record<string, unknown>) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready');

/**
 * The other processes this file runs, started with the cluster below so that the file waits for
 * their start-ups at the same time.
 */
let others: { overHttp: ModelgraphProcess; noRedis: ModelgraphProcess; cannotStart: ModelgraphProcess };

beforeAll(() => {
  const redis = () => ({ url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` });
  const overHttp = writeConfig({ router: { port: 0, workers: 2, inProcessSubgraphs: false }, subgraphs: SUBGRAPHS, redis: redis() });
  const noRedis = writeConfig({ router: { port: 0, workers: 2 }, subgraphs: SUBGRAPHS });
  // A router alone must be given the identity secret its subgraphs share: each worker refuses.
  const noSecret = writeConfig({ router: { port: 0, workers: 2 }, redis: redis() });
  others = {
    // No bootstrap key given: the first worker makes one, and only it prints it.
    overHttp: spawnModelgraph(['all', '--config', overHttp]),
    noRedis: spawnModelgraph(['all', '--config', noRedis]),
    cannotStart: spawnModelgraph(['router', '--config', noSecret]),
  };
});

afterAll(() => {
  for (const process of Object.values(others)) process.kill();
});

describe('modelgraph with router.workers: 2', () => {
  let modelgraph: ModelgraphProcess;
  let url: string;
  let workerPids: Set<number>;

  /** The pid of the worker that ran a (successful) request. */
  const servedBy = async ({ requestId }: Answer) =>
    (await modelgraph.waitForLine((line) => line.requestId === requestId && line.msg === 'operation completed')).pid as number;

  beforeAll(async () => {
    const config = writeConfig({
      router: { port: 0, workers: 2, inProcessSubgraphs: true, rateLimits: { 'Query.models': { max: MODELS_PER_HOUR, window: '1h' } } },
      subgraphs: SUBGRAPHS,
      redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` },
    });
    modelgraph = spawnModelgraph(['all', '--config', config], { MODELGRAPH_BOOTSTRAP_KEY: BOOTSTRAP_KEY });
    const ready = await modelgraph.waitForLine(isReady);
    url = ready.url as string;
    workerPids = new Set(modelgraph.lines.filter((line) => line.msg === 'worker ready').map((line) => line.pid as number));
  }, STARTUP_MS);

  afterAll(() => modelgraph?.kill());

  it('announces one ready line from the primary once both workers serve the same port', () => {
    const ready = modelgraph.lines.filter(isReady);
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ workers: 2, pid: modelgraph.child.pid });
    expect(workerPids.size).toBe(2);
    expect(workerPids).not.toContain(modelgraph.child.pid);
    const workerUrls = modelgraph.lines.filter((line) => line.msg === 'worker ready').map((line) => line.url);
    expect(workerUrls).toEqual([url, url]);
    expect(modelgraph.lines.some((line) => line.msg === '2 workers share rate limits, budgets, keys and usage through Redis')).toBe(true);
  });

  it('serves GraphQL: models and a chat with the echo model', async () => {
    const models = await postFresh<{ models: { id: string }[] }>(url, '{ models { id } }', BOOTSTRAP_KEY);
    expect(models.status).toBe(200);
    expect(models.body.data?.models.map((model) => model.id)).toContain('echo');
    const chat = await postFresh(
      url,
      'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "two workers"}]}) { content } }',
      BOOTSTRAP_KEY,
    );
    expect(chat.body.data?.chat).toEqual({ content: 'two workers' });
  });

  it('stores the configured bootstrap key once, by the first worker', async () => {
    const audit = await postFresh<{ auditLog: { edges: { node: { reason: string } }[] } }>(
      url,
      '{ auditLog(filter: {action: "apiKey.bootstrap"}) { edges { node { reason } } } }',
      BOOTSTRAP_KEY,
    );
    expect(audit.body.data?.auditLog.edges.map((edge) => edge.node.reason)).toEqual(['set from MODELGRAPH_BOOTSTRAP_KEY']);
  });

  it('spreads new connections over both worker processes', async () => {
    const pids = new Set<number>();
    for (let attempt = 0; attempt < 10 && pids.size < 2; attempt += 1) {
      const chat = await postFresh(
        url,
        'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "which"}]}) { content } }',
        BOOTSTRAP_KEY,
      );
      expect(chat.status).toBe(200);
      pids.add(await servedBy(chat));
    }
    expect(pids).toEqual(workerPids);
  });

  it('shares a rate limit across workers: max calls in total, then RATE_LIMITED from either', async () => {
    // A key of its own, made through one worker and used through both (the key store is shared too).
    const tenant = `workers-${randomUUID().slice(0, 8)}`;
    await postFresh(url, `mutation { createTenant(input: {id: "${tenant}", name: "Workers"}) { tenant { id } } }`, BOOTSTRAP_KEY);
    const created = await postFresh<{ createApiKey: { secret: string } }>(
      url,
      `mutation { createApiKey(input: {tenantId: "${tenant}", name: "limited", scopes: [MODELS_READ]}) { secret } }`,
      BOOTSTRAP_KEY,
    );
    const key = created.body.data!.createApiKey.secret;
    const allowedBy: number[] = [];
    const refused: Answer[] = [];
    for (let attempt = 0; attempt < MODELS_PER_HOUR + 6 && refused.length < 2; attempt += 1) {
      const answer = await postFresh(url, '{ models { id } }', key);
      if (answer.status === 200) allowedBy.push(await servedBy(answer));
      else refused.push(answer);
    }
    expect(allowedBy).toHaveLength(MODELS_PER_HOUR);
    // Connections alternate between the workers, so both counted against the one limit.
    expect(new Set(allowedBy)).toEqual(workerPids);
    expect(refused).toHaveLength(2);
    for (const answer of refused) {
      expect(answer.status).toBe(429);
      expect(answer.body.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
    }
  });

  it('on SIGTERM stops every worker and the primary exits 0', async () => {
    modelgraph.child.kill('SIGTERM');
    expect(await modelgraph.exit).toBe(0);
    const stopped = modelgraph.lines.filter((line) => line.msg === 'stopped').map((line) => line.pid as number);
    expect(new Set(stopped)).toEqual(new Set([...workerPids, modelgraph.child.pid]));
    expect(modelgraph.lines.at(-1)).toMatchObject({ msg: 'stopped', pid: modelgraph.child.pid });
  });
});

describe('modelgraph with router.workers: 2, calling its subgraphs over HTTP', () => {
  it(
    "answers when one worker's router reaches the other worker's subgraph on the shared port",
    async () => {
      const { overHttp } = others;
      const ready = await overHttp.waitForLine(isReady);
      // Printed on standard error, which arrives in no fixed order with the log.
      await expect.poll(() => /\bmg_bootstrap_\S+/.test(overHttp.stderr())).toBe(true);
      const key = /\bmg_bootstrap_\S+/.exec(overHttp.stderr())![0];
      expect(overHttp.stderr().match(/\bmg_bootstrap_\S+/g)).toHaveLength(1);
      const chat = () =>
        postFresh<{ chat: { content: string } }>(
          ready.url as string,
          'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "across"}]}) { content } }',
          key,
        );
      // At once, so each router opens several connections to the inference port, which the cluster
      // spreads; with an identity secret of each worker's own, about half of these were refused.
      const answers = await Promise.all(Array.from({ length: 16 }, chat));
      expect(answers.map((answer) => answer.body.data?.chat.content ?? answer.body.errors?.[0]?.message)).toEqual(Array(16).fill('across'));
    },
    STARTUP_MS,
  );
});

describe('modelgraph with router.workers: 2 that cannot serve', () => {
  it(
    'without redis refuses to start, naming it, and exits 1',
    async () => {
      const { noRedis } = others;
      expect(await noRedis.exit).toBe(1);
      expect(noRedis.stderr()).toContain('router.workers: 2 needs redis (url, sentinel or cluster');
      expect(noRedis.lines.some((line) => line.msg === 'worker ready')).toBe(false);
    },
    STARTUP_MS,
  );

  it(
    'whose first worker fails to start gives up, forking no more, and exits 1',
    async () => {
      const { cannotStart } = others;
      expect(await cannotStart.exit).toBe(1);
      expect(cannotStart.stderr()).toContain('MODELGRAPH_IDENTITY_SECRET must hold the identity-token secret');
      const failed = cannotStart.lines.filter((line) => line.msg === 'a worker failed to start; stopping the others');
      expect(failed).toEqual([expect.objectContaining({ worker: 1, code: 1 })]);
      expect(cannotStart.lines.some((line) => line.worker === 2)).toBe(false);
    },
    STARTUP_MS,
  );
});
