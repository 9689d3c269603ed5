/**
 * Agent runs benchmark, against the real Redis (REDIS_URL) and the offline echo model:
 * - overhead: N concurrent two-step runs (the echo model "calls" the models query as a tool, then
 *   answers with its result), start to `AgentRunFinished`, over graphql-ws through the router;
 *   each run is two model calls and one tool call through the router plus ~6 stored events;
 * - events: one run whose answer streams E text deltas, then a follower replaying all of them
 *   from the start (Redis Stream → agents subgraph → router → graphql-ws).
 *
 *   REDIS_URL=redis://127.0.0.1:6379 npx tsx bench/agent-runs.ts [--runs 100] [--deltas 2000]
 *
 * Results go to standard output as Markdown; record them in bench/results.md.
 */
import { randomUUID } from 'node:crypto';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { collectSubscription, postGraphQL, startTestStack } from '../tests/support/stack.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '100' }, deltas: { type: 'string', default: '2000' } } });
const runs = Number(values.runs);
const deltas = Number(values.deltas);
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `mg-bench:${randomUUID()}:`;

const EVENTS = 'subscription($runId: ID!) { agentRunEvents(runId: $runId) { __typename cursor ... on AgentRunFinished { status } } }';
const START = 'mutation($input: String!) { startAgentRun(input: {agent: "guide", input: $input}) { run { id } } }';

const echo = {
  id: 'echo',
  provider: 'local',
  version: '1',
  capabilities: ['CHAT', 'TOOLS'],
  contextWindow: 1_000_000,
  maxOutputTokens: 100_000,
};
const stack = await startTestStack({
  redis: { url: REDIS_URL, keyPrefix: prefix },
  models: [echo],
  log: { level: 'warn' },
  agents: {
    maxConcurrentRuns: runs,
    definitions: [
      {
        name: 'guide',
        model: 'echo',
        instructions: 'Answer.',
        tools: [{ name: 'list_models', document: 'query { models { id } }' }],
        maxSteps: 4,
      },
    ],
  },
  router: { port: 0, shutdownGraceMs: 2_000, rateLimits: { 'Mutation.startAgentRun': { max: 1_000_000, window: '1m' } } },
});

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

async function oneRun(input: string): Promise<{ ms: number; status: string | undefined; events: number }> {
  const started = performance.now();
  const { body } = await postGraphQL<{ startAgentRun: { run: { id: string } } }>(stack.url, START, { input });
  const runId = body.data!.startAgentRun.run.id;
  const { results } = await collectSubscription<{ agentRunEvents: { __typename: string; status?: string } }>(stack.ws(), {
    query: EVENTS,
    variables: { runId },
  });
  return { ms: performance.now() - started, status: results.at(-1)?.data?.agentRunEvents.status, events: results.length };
}

try {
  await oneRun('/call list_models'); // warm-up
  const began = performance.now();
  const outcomes = await Promise.all(Array.from({ length: runs }, () => oneRun('/call list_models')));
  const wall = (performance.now() - began) / 1000;
  const latencies = outcomes.map((outcome) => outcome.ms).sort((a, b) => a - b);
  const succeeded = outcomes.filter((outcome) => outcome.status === 'SUCCEEDED').length;

  // One long answer: E words, so E text-delta events, then replayed by a new follower.
  const long = Array.from({ length: deltas }, (_, index) => `w${index}`).join(' ');
  const streamed = await oneRun(long);
  const { body } = await postGraphQL<{ agentRuns: { edges: { node: { id: string } }[] } }>(
    stack.url,
    '{ agentRuns(first: 1) { edges { node { id } } } }',
  );
  const longRun = body.data!.agentRuns.edges[0]!.node.id;
  const replayStarted = performance.now();
  const { results } = await collectSubscription(stack.ws(), { query: EVENTS, variables: { runId: longRun } });
  const replayMs = performance.now() - replayStarted;

  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, Redis at ${new URL(REDIS_URL).host}`);
  console.log(`\n${runs} concurrent two-step runs (model → tool through the router → model), each followed over graphql-ws\n`);
  console.log('| runs | succeeded | wall s | runs/s | p50 ms | p95 ms | p99 ms | events per run |');
  console.log('|---|---|---|---|---|---|---|---|');
  console.log(
    `| ${runs} | ${succeeded} | ${wall.toFixed(2)} | ${(runs / wall).toFixed(1)} | ${percentile(latencies, 50).toFixed(0)} | ${percentile(latencies, 95).toFixed(0)} | ${percentile(latencies, 99).toFixed(0)} | ${outcomes[0]?.events} |`,
  );
  console.log(
    `\none run streaming ${deltas} text deltas: ${streamed.events} events live in ${streamed.ms.toFixed(0)} ms; replayed from the start in ${replayMs.toFixed(0)} ms (${Math.round(results.length / (replayMs / 1000))} events/s)`,
  );
} finally {
  await stack.stop();
  const redis = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length) await redis.del(...keys);
    cursor = next;
  } while (cursor !== '0');
  redis.disconnect();
}
