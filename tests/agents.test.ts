/**
 * Agent runs end to end, against the real Redis and the provider emulator scripted to ask for tool
 * calls: the run loop, operation tools executed through the router as the run's owner, limits,
 * cancellation, and run events that resume from a cursor in this process or another one.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { RedisRunStore } from '../subgraphs/agents/redis-run-store.ts';
import type { AgentToolDefinition } from '../subgraphs/agents/records.ts';
import { agentDefinition, runningRun } from './support/agent-records.ts';
import { spawnModelgraph, writeConfig, type ModelgraphProcess } from './support/process.ts';
import { TEST_MODELS, collectSubscription, postGraphQL, startTestStack, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
afterAll(() => redis.disconnect());

let stacks: TestStack[] = [];
let children: ModelgraphProcess[] = [];
afterEach(async () => {
  for (const child of children) child.kill();
  await Promise.all(children.map((child) => child.exit));
  await Promise.all(stacks.map((stack) => stack.stop()));
  stacks = [];
  children = [];
});

async function agentStack(overrides: Record<string, unknown> = {}) {
  const prefix = `mg-test:${randomUUID()}:`;
  const stack = await startTestStack({ redis: { url: REDIS_URL, keyPrefix: prefix }, cache: { enabled: false }, ...overrides });
  stacks.push(stack);
  return { stack, prefix };
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

const LIST_MODELS = '# Lists the models this key may use.\nquery Models { models { id } }';
const ASK_MODEL =
  'mutation Ask($prompt: String!) { chat(input: {model: "gpt-test", messages: [{role: USER, content: $prompt}]}) { content } }';
const START_RUN =
  'mutation Start($agent: String!, $input: String!) { startAgentRun(input: {agent: $agent, input: $input}) { run { id } } }';
const MINT_KEY = 'mutation Mint($name: String!) { createApiKey(input: {name: $name, scopes: [ADMIN]}) { secret } }';

interface AgentInput {
  name: string;
  tools?: { name: string; document: string }[];
  maxSteps?: number;
  maxTokens?: number;
  maxUsd?: number;
  maxWallTimeSeconds?: number;
}

async function createAgent(stack: TestStack, input: AgentInput, headers: Record<string, string> = {}) {
  const { body } = await postGraphQL(
    stack.url,
    'mutation($input: CreateAgentInput!) { createAgent(input: $input) { agent { id } } }',
    {
      input: {
        model: 'gpt-test',
        instructions: 'You answer questions about models.',
        tools: [{ name: 'list_models', document: LIST_MODELS }],
        ...input,
      },
    },
    headers,
  );
  expect(body.errors).toBeUndefined();
}

async function startRun(stack: TestStack, agent: string, input: string, headers: Record<string, string> = {}): Promise<string> {
  const { body } = await postGraphQL<{ startAgentRun: { run: { id: string; status: string } } }>(
    stack.url,
    'mutation($agent: String!, $input: String!) { startAgentRun(input: {agent: $agent, input: $input}) { run { id status } } }',
    { agent, input },
    headers,
  );
  expect(body.errors).toBeUndefined();
  expect(body.data?.startAgentRun.run.status).toBe('QUEUED');
  return body.data!.startAgentRun.run.id;
}

/** Creates a tenant and a key in it, returning the key's secret and id. */
async function tenantKey(stack: TestStack, tenant: string, scopes: string[]) {
  await postGraphQL(stack.url, `mutation { createTenant(input: {id: "${tenant}", name: "${tenant}"}) { tenant { id } } }`);
  const { body } = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    stack.url,
    `mutation { createApiKey(input: {tenantId: "${tenant}", name: "agent owner", scopes: [${scopes.join(', ')}]}) { secret apiKey { id } } }`,
  );
  expect(body.errors).toBeUndefined();
  return { secret: body.data!.createApiKey.secret, id: body.data!.createApiKey.apiKey.id };
}

interface RunEvent {
  __typename: string;
  cursor: string;
  step?: number;
  content?: string;
  tool?: string;
  callId?: string;
  result?: string | null;
  error?: { code: string; message: string } | null;
  status?: string;
  output?: string | null;
  usage?: { promptTokens: number; completionTokens: number; totalTokens: number; costUsd: number };
}

const EVENTS = `subscription($runId: ID!, $after: String) {
  agentRunEvents(runId: $runId, after: $after) {
    __typename cursor
    ... on AgentStepStarted { step }
    ... on AgentTextDelta { step content }
    ... on AgentToolCalled { step callId tool }
    ... on AgentToolResulted { step callId tool result error { code message } }
    ... on AgentRunFinished { status output error { code message } usage { promptTokens completionTokens totalTokens costUsd } }
  }
}`;

/** Every event of a run after `after` (none: from the first), until the run finishes. */
async function followRun(stack: TestStack, runId: string, after?: string, connectionParams?: Record<string, unknown>): Promise<RunEvent[]> {
  const { results, error } = await collectSubscription<{ agentRunEvents: RunEvent }>(stack.ws(connectionParams), {
    query: EVENTS,
    variables: { runId, after },
  });
  expect(error).toBeUndefined();
  for (const result of results) expect(result.errors).toBeUndefined();
  return results.map((result) => result.data!.agentRunEvents);
}

const RUN = `query($id: ID!) { agentRun(id: $id) { status output cursor error { code message } usage { promptTokens completionTokens totalTokens costUsd }
  steps { number content usage { totalTokens } toolCalls { id tool arguments result error { code message } } } } }`;

interface RunState {
  status: string;
  output: string | null;
  cursor: string | null;
  error: { code: string; message: string } | null;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number; costUsd: number };
  steps: {
    number: number;
    content: string;
    usage: { totalTokens: number };
    toolCalls: { id: string; tool: string; arguments: string; result: string | null; error: { code: string; message: string } | null }[];
  }[];
}

async function runState(stack: TestStack, id: string, headers: Record<string, string> = {}): Promise<RunState | null | undefined> {
  const { body } = await postGraphQL<{ agentRun: RunState | null }>(stack.url, RUN, { id }, headers);
  expect(body.errors).toBeUndefined();
  return body.data?.agentRun;
}

/** An agent of the platform tenant as the store keeps it, made now: two steps of gpt-test. */
const platformAgent = (name: string, tools: AgentToolDefinition[] = []) => {
  const now = new Date().toISOString();
  return agentDefinition({ tenantId: 'platform', name, instructions: 'x', tools, maxSteps: 2, createdAt: now, updatedAt: now });
};

const chatRequests = (stack: TestStack) => stack.emulator.requests.filter((request) => request.path.endsWith('/chat/completions'));
/** The tool results the model was given in a request, by tool call id. */
function toolMessages(request: { body: Record<string, unknown> }): Record<string, string> {
  const messages = request.body.messages as { role: string; tool_call_id?: string; content: string }[];
  return Object.fromEntries(
    messages.filter((message) => message.role === 'tool').map((message) => [message.tool_call_id!, message.content]),
  );
}

describe('agent runs', () => {
  it('runs a two-step run: calls the models query as a tool through the router and answers with its result', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'guide' });
    stack.emulator.script(
      {
        kind: 'chat',
        content: 'Let me look.',
        toolCalls: [{ id: 'call_1', name: 'list_models', arguments: '{}' }],
        usage: { prompt: 120, completion: 10 },
      },
      { kind: 'chat', content: 'You can use echo, gpt-test, hashing-embed and backup.', usage: { prompt: 200, completion: 12 } },
    );
    const runId = await startRun(stack, 'guide', 'Which models can I use?');
    const events = await followRun(stack, runId);

    expect(events.map((event) => event.__typename)).toEqual([
      'AgentStepStarted',
      ...Array(3).fill('AgentTextDelta'),
      'AgentToolCalled',
      'AgentToolResulted',
      'AgentStepStarted',
      ...Array(8).fill('AgentTextDelta'),
      'AgentRunFinished',
    ]);
    const models = JSON.stringify({ data: { models: TEST_MODELS.map((model) => ({ id: model.id })) } });
    expect(events[5]).toMatchObject({ tool: 'list_models', callId: 'call_1', result: models, error: null });
    const finished = events.at(-1)!;
    expect(finished).toMatchObject({ status: 'SUCCEEDED', output: 'You can use echo, gpt-test, hashing-embed and backup.', error: null });
    // gpt-test: 2.5 USD per million prompt tokens, 10 per million completion tokens.
    expect(finished.usage).toEqual({ promptTokens: 320, completionTokens: 22, totalTokens: 342, costUsd: (320 * 2.5 + 22 * 10) / 1e6 });
    // Cursors order the events strictly.
    const cursors = events.map((event) => event.cursor);
    expect(new Set(cursors).size).toBe(cursors.length);

    // The model got the tools, then the operation's result as the answer to its call.
    const [first, second] = chatRequests(stack);
    expect(chatRequests(stack)).toHaveLength(2);
    expect((first!.body.tools as { function: { name: string; description: string } }[]).map((tool) => tool.function)).toMatchObject([
      { name: 'list_models', description: 'Lists the models this key may use.' },
    ]);
    expect(toolMessages(second!)).toEqual({ call_1: models });

    const state = await runState(stack, runId);
    expect(state).toMatchObject({ status: 'SUCCEEDED', output: finished.output, cursor: finished.cursor, usage: finished.usage });
    expect(state!.steps.map((step) => [step.number, step.content, step.toolCalls.map((call) => call.tool)])).toEqual([
      [1, 'Let me look.', ['list_models']],
      [2, finished.output, []],
    ]);
  });

  it('meters every model call of a run like any other, tagged with the agent', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'metered' });
    stack.emulator.script(
      { kind: 'chat', content: '', toolCalls: [{ id: 'c', name: 'list_models', arguments: '{}' }], usage: { prompt: 50, completion: 5 } },
      { kind: 'chat', content: 'done', usage: { prompt: 70, completion: 1 } },
    );
    const runId = await startRun(stack, 'metered', 'go');
    const finished = (await followRun(stack, runId)).at(-1)!;
    const hour = Date.now() - (Date.now() % 3_600_000);
    const { body } = await postGraphQL<{ usage: { totals: { calls: number; totalTokens: number; costUsd: number } } }>(
      stack.url,
      'query($filter: UsageFilter!) { usage(filter: $filter) { totals { calls totalTokens costUsd } } }',
      { filter: { from: new Date(hour).toISOString(), to: new Date(hour + 3_600_000).toISOString(), tags: ['agent:metered'] } },
    );
    expect(body.errors).toBeUndefined();
    expect(body.data?.usage.totals).toEqual({ calls: 2, totalTokens: 126, costUsd: finished.usage!.costUsd });
  });

  it('counts what a tool’s own model calls cost in the run’s usage and against its limits', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'delegator', tools: [{ name: 'ask_model', document: ASK_MODEL }], maxTokens: 1_000 });
    stack.emulator.script(
      {
        kind: 'chat',
        content: '',
        toolCalls: [{ id: 'ask', name: 'ask_model', arguments: '{"prompt": "summarise"}' }],
        usage: { prompt: 100, completion: 10 },
      },
      // The tool's own chat (a whole one), far bigger than the run has left.
      { kind: 'chat', content: 'a long summary', usage: { prompt: 600, completion: 300 } },
    );
    const runId = await startRun(stack, 'delegator', 'go');
    const events = await followRun(stack, runId);
    expect(events.find((event) => event.__typename === 'AgentToolResulted')).toMatchObject({ error: null });
    // 110 for the agent's call plus 900 for the tool's: no room for another step.
    expect(events.at(-1)).toMatchObject({
      status: 'FAILED',
      error: { code: 'TOKEN_LIMIT_EXCEEDED' },
      usage: { promptTokens: 700, completionTokens: 310, totalTokens: 1_010 },
    });
    expect(events.at(-1)!.usage!.costUsd).toBeCloseTo((700 * 2.5 + 310 * 10) / 1e6, 9);
    expect(chatRequests(stack)).toHaveLength(2);
  });

  it('fails a tool call its owner may not make, and shows the model the coded error', async () => {
    const { stack } = await agentStack();
    // The owner may run agents and chat, but not read models: the tool's operation is refused.
    const owner = await tenantKey(stack, 'acme', ['AGENTS_RUN', 'CHAT_INVOKE']);
    await createAgent(stack, { name: 'guide', tenantId: 'acme' } as AgentInput);
    stack.emulator.script(
      { kind: 'chat', content: '', toolCalls: [{ id: 'call_1', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: 'I may not list the models for you.' },
    );
    const runId = await startRun(stack, 'guide', 'Which models?', bearer(owner.secret));
    const events = await followRun(stack, runId, undefined, { authorization: `Bearer ${owner.secret}` });

    const result = events.find((event) => event.__typename === 'AgentToolResulted')!;
    expect(result.error?.code).toBe('FORBIDDEN');
    const told = JSON.parse(toolMessages(chatRequests(stack)[1]!).call_1!) as { errors: { extensions: { code: string } }[] };
    expect(told.errors[0]!.extensions.code).toBe('FORBIDDEN');
    expect(events.at(-1)).toMatchObject({ status: 'SUCCEEDED', output: 'I may not list the models for you.' });
  });

  it('runs the tool calls of one step at once', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'parallel', tools: [{ name: 'ask_model', document: ASK_MODEL }] });
    stack.emulator.script(
      {
        kind: 'chat',
        content: '',
        toolCalls: [
          { id: 'a', name: 'ask_model', arguments: '{"prompt": "first"}' },
          { id: 'b', name: 'ask_model', arguments: '{"prompt": "second"}' },
        ],
      },
      // Each tool's chat gets its headers, then silence: one after the other, the second would never start.
      { kind: 'chat', content: 'never finished', stallBody: true },
      { kind: 'chat', content: 'never finished', stallBody: true },
    );
    const runId = await startRun(stack, 'parallel', 'ask twice');
    while (chatRequests(stack).length < 3) await stack.emulator.nextRequest();
    expect(
      chatRequests(stack)
        .slice(1)
        .map((request) => (request.body.messages as { content: string }[])[0]!.content)
        .sort(),
    ).toEqual(['first', 'second']);
    const { body } = await postGraphQL(stack.url, 'mutation($id: ID!) { cancelAgentRun(input: {runId: $id}) { run { id } } }', {
      id: runId,
    });
    expect(body.errors).toBeUndefined();
    expect((await followRun(stack, runId)).at(-1)).toMatchObject({ status: 'CANCELLED' });
  });

  it('applies the owner’s rate limits to tool calls', async () => {
    const { stack } = await agentStack({
      router: { port: 0, shutdownGraceMs: 2_000, rateLimits: { 'Query.models': { max: 1, window: '1m' } } },
    });
    await createAgent(stack, { name: 'guide' });
    stack.emulator.script(
      { kind: 'chat', content: '', toolCalls: [{ id: 'a', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: '', toolCalls: [{ id: 'b', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: 'limited' },
    );
    const events = await followRun(stack, await startRun(stack, 'guide', 'twice'));
    const results = events.filter((event) => event.__typename === 'AgentToolResulted');
    expect(results.map((event) => event.error?.code ?? null)).toEqual([null, 'RATE_LIMITED']);
  });

  it('refuses, before running anything, tools outside the agent, arguments that do not fit, oversized results and runs started by runs', async () => {
    // Room for an error answer, not for every model's details.
    const { stack } = await agentStack({ agents: { maxToolResultBytes: 300 } });
    await createAgent(stack, {
      name: 'careful',
      tools: [
        {
          name: 'model_details',
          document: 'query Details { models { id provider upstream version status contextWindow maxOutputTokens } }',
        },
        { name: 'ask_model', document: ASK_MODEL },
        { name: 'start_run', document: START_RUN },
        { name: 'mint_key', document: MINT_KEY },
      ],
    });
    stack.emulator.script(
      {
        kind: 'chat',
        content: '',
        toolCalls: [
          { id: 'outside', name: 'drop_tables', arguments: '{}' },
          { id: 'wrong', name: 'ask_model', arguments: '{"prompt": 5}' },
          { id: 'junk', name: 'ask_model', arguments: 'not json' },
          { id: 'extra', name: 'ask_model', arguments: '{"prompt": "hi", "model": "x"}' },
          { id: 'large', name: 'model_details', arguments: '{}' },
          { id: 'recurse', name: 'start_run', arguments: '{"agent": "careful", "input": "again"}' },
          { id: 'mint', name: 'mint_key', arguments: '{"name": "for the model"}' },
        ],
      },
      { kind: 'chat', content: 'nothing worked' },
    );
    const events = await followRun(stack, await startRun(stack, 'careful', 'try everything'));
    const codes = Object.fromEntries(
      events.filter((event) => event.__typename === 'AgentToolResulted').map((event) => [event.callId, event.error?.code]),
    );
    expect(codes).toEqual({
      outside: 'TOOL_NOT_ALLOWED',
      wrong: 'BAD_USER_INPUT',
      junk: 'BAD_USER_INPUT',
      extra: 'BAD_USER_INPUT',
      large: 'TOOL_RESULT_TOO_LARGE',
      recurse: 'FORBIDDEN',
      mint: 'FORBIDDEN',
    });
    // No ask_model ran: the only model calls are the agent's own two.
    expect(chatRequests(stack)).toHaveLength(2);
    const told = toolMessages(chatRequests(stack)[1]!);
    expect(JSON.parse(told.outside!)).toMatchObject({ error: { code: 'TOOL_NOT_ALLOWED' } });
    expect(JSON.parse(told.wrong!).error.message).toContain('prompt');
    expect(JSON.parse(told.recurse!).errors[0].message).toBe('an agent run cannot start agent runs');
    expect(events.at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    // Even for an admin, an agent administers nothing; the refusal names the agent beside its owner.
    const { body } = await postGraphQL<{ auditLog: { edges: { node: { actor: string; outcome: string } }[] } }>(
      stack.url,
      'query { auditLog(first: 1, filter: {action: "apiKey.create"}) { edges { node { actor outcome } } } }',
    );
    expect(body.data?.auditLog.edges[0]?.node).toMatchObject({ outcome: 'DENIED', actor: expect.stringMatching(/ via agent-run:run_/) });
  });

  it('ends a run that needs more steps than allowed FAILED with STEP_LIMIT_EXCEEDED, without running the last step’s tools', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'looper', maxSteps: 2 });
    stack.emulator.script(
      { kind: 'chat', content: '', toolCalls: [{ id: 'one', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: '', toolCalls: [{ id: 'two', name: 'list_models', arguments: '{}' }] },
    );
    const runId = await startRun(stack, 'looper', 'loop');
    const events = await followRun(stack, runId);
    expect(events.at(-1)).toMatchObject({ status: 'FAILED', error: { code: 'STEP_LIMIT_EXCEEDED' } });
    expect(events.filter((event) => event.__typename === 'AgentToolCalled').map((event) => event.callId)).toEqual(['one']);
    expect(chatRequests(stack)).toHaveLength(2);
    expect(await runState(stack, runId)).toMatchObject({ status: 'FAILED', error: { code: 'STEP_LIMIT_EXCEEDED' } });
  });

  it('keeps a run within its token limit: the next step is refused when it no longer fits', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'frugal', maxTokens: 400 });
    stack.emulator.script({
      kind: 'chat',
      content: '',
      toolCalls: [{ id: 'a', name: 'list_models', arguments: '{}' }],
      usage: { prompt: 150, completion: 200 },
    });
    const runId = await startRun(stack, 'frugal', 'go');
    const events = await followRun(stack, runId);
    expect(events.at(-1)).toMatchObject({ status: 'FAILED', error: { code: 'TOKEN_LIMIT_EXCEEDED' }, usage: { totalTokens: 350 } });
    // The first call could ask for no more than the run had left; there was no second call.
    expect(chatRequests(stack)).toHaveLength(1);
    expect(chatRequests(stack)[0]!.body.max_tokens).toBeLessThanOrEqual(400);
  });

  it('refuses the first step of a run whose USD limit cannot pay for it, before any model call', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'broke', maxUsd: 0.000001 });
    const events = await followRun(stack, await startRun(stack, 'broke', 'go'));
    expect(events.map((event) => event.__typename)).toEqual(['AgentRunFinished']);
    expect(events[0]).toMatchObject({ status: 'FAILED', error: { code: 'BUDGET_EXCEEDED' } });
    expect(chatRequests(stack)).toHaveLength(0);
  });

  it('ends a run that outlives its wall time FAILED with TIME_LIMIT_EXCEEDED and aborts its model call', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'slow', maxWallTimeSeconds: 1 });
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const aborted = stack.emulator.nextAbort();
    const events = await followRun(stack, await startRun(stack, 'slow', 'go'));
    expect(events.at(-1)).toMatchObject({ status: 'FAILED', error: { code: 'TIME_LIMIT_EXCEEDED' } });
    await aborted;
  });

  it('cancels a run on request, aborting its model call', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'slow' });
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const aborted = stack.emulator.nextAbort();
    const requested = stack.emulator.nextRequest();
    const runId = await startRun(stack, 'slow', 'go');
    const following = followRun(stack, runId);
    await requested;
    const { body } = await postGraphQL<{ cancelAgentRun: { run: { id: string } } }>(
      stack.url,
      'mutation($id: ID!) { cancelAgentRun(input: {runId: $id}) { run { id } } }',
      { id: runId },
    );
    expect(body.errors).toBeUndefined();
    expect((await following).at(-1)).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
    await aborted;
  });

  it('cancels the runs of a key that may no longer run agents', async () => {
    const { stack } = await agentStack();
    const owner = await tenantKey(stack, 'acme', ['AGENTS_RUN', 'CHAT_INVOKE', 'MODELS_READ']);
    await createAgent(stack, { name: 'slow', tenantId: 'acme' } as AgentInput);
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const requested = stack.emulator.nextRequest();
    const runId = await startRun(stack, 'slow', 'go', bearer(owner.secret));
    const following = followRun(stack, runId);
    await requested;
    const { body } = await postGraphQL(
      stack.url,
      'mutation($id: ID!) { updateApiKey(input: {id: $id, scopes: [CHAT_INVOKE, MODELS_READ]}) { apiKey { scopes } } }',
      { id: owner.id },
    );
    expect(body.errors).toBeUndefined();
    expect((await following).at(-1)).toMatchObject({
      status: 'CANCELLED',
      error: { code: 'CANCELLED', message: "the owner's API key was denied the agents:run scope" },
    });
  });

  it('cancels the runs of a key when it is revoked', async () => {
    const { stack } = await agentStack();
    const owner = await tenantKey(stack, 'acme', ['AGENTS_RUN', 'CHAT_INVOKE', 'MODELS_READ']);
    await createAgent(stack, { name: 'slow', tenantId: 'acme' } as AgentInput);
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const requested = stack.emulator.nextRequest();
    const runId = await startRun(stack, 'slow', 'go', bearer(owner.secret));
    // Followed by the platform admin: the owner's own socket closes when its key is revoked.
    const following = followRun(stack, runId);
    await requested;
    const { body } = await postGraphQL(stack.url, 'mutation($id: ID!) { revokeApiKey(input: {id: $id}) { apiKey { revokedAt } } }', {
      id: owner.id,
    });
    expect(body.errors).toBeUndefined();
    const finished = (await following).at(-1)!;
    expect(finished).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
    expect(finished.error!.message).toContain('revoked');
  });

  it('lets a subscriber that left mid-run resume from its last cursor and get every remaining event exactly once', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'guide' });
    stack.emulator.script(
      { kind: 'chat', content: 'Looking it up now.', toolCalls: [{ id: 'c', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: 'Here are all the models you can use today, one by one.', chunkDelayMs: 20 },
    );
    const runId = await startRun(stack, 'guide', 'models?');
    // The first subscriber leaves after the second step's first piece of text.
    const client = createClient({
      url: stack.wsUrl,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${stack.adminKey}` },
    });
    const before: RunEvent[] = [];
    await new Promise<void>((resolve, reject) => {
      const stop = client.subscribe<{ agentRunEvents: RunEvent }>(
        { query: EVENTS, variables: { runId } },
        {
          next: (result) => {
            before.push(result.data!.agentRunEvents);
            if (before.at(-1)!.__typename === 'AgentTextDelta' && before.at(-1)!.step === 2) {
              stop();
              resolve();
            }
          },
          error: reject,
          complete: () => reject(new Error('the run finished before the subscriber left')),
        },
      );
    });
    await client.dispose();
    expect(before.map((event) => event.__typename)).not.toContain('AgentRunFinished');

    const after = await followRun(stack, runId, before.at(-1)!.cursor);
    const everything = await followRun(stack, runId);
    expect([...before, ...after]).toEqual(everything);
    expect(after.at(-1)).toMatchObject({
      __typename: 'AgentRunFinished',
      status: 'SUCCEEDED',
      output: 'Here are all the models you can use today, one by one.',
    });
    // From the last cursor there is nothing more, and the subscription ends at once.
    expect(await followRun(stack, runId, after.at(-1)!.cursor)).toEqual([]);
  });

  it('lets a run started through one process be followed and read through another process sharing Redis', async () => {
    const { stack, prefix } = await agentStack();
    await createAgent(stack, { name: 'guide' });
    const other = spawnModelgraph(
      [
        'all',
        '--config',
        writeConfig({
          redis: { url: REDIS_URL, keyPrefix: prefix },
          router: { port: 0 },
          subgraphs: { inference: { port: 0 }, embeddings: { port: 0 }, agents: { port: 0 }, usage: { port: 0 }, access: { port: 0 } },
          providers: {
            local: { type: 'local' },
            emulated: { type: 'openai-compatible', baseUrl: stack.emulator.baseUrl },
            backup: { type: 'openai-compatible', baseUrl: stack.emulator.baseUrl },
          },
          models: TEST_MODELS,
        }),
      ],
      { REDIS_URL, MODELGRAPH_BOOTSTRAP_KEY: stack.adminKey },
    );
    children.push(other);
    const ready = await other.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('modelgraph is ready'));
    const otherUrl = ready.url as string;

    stack.emulator.script(
      { kind: 'chat', content: 'Checking.', toolCalls: [{ id: 'c', name: 'list_models', arguments: '{}' }] },
      { kind: 'chat', content: 'Four models are configured here.', chunkDelayMs: 20 },
    );
    const runId = await startRun(stack, 'guide', 'How many models?');
    const client = createClient({
      url: otherUrl.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      connectionParams: { authorization: `Bearer ${stack.adminKey}` },
    });
    const { results, error } = await collectSubscription<{ agentRunEvents: RunEvent }>(client, { query: EVENTS, variables: { runId } });
    await client.dispose();
    expect(error).toBeUndefined();
    const seenThere = results.map((result) => result.data!.agentRunEvents);
    expect(seenThere).toEqual(await followRun(stack, runId));
    expect(seenThere.at(-1)).toMatchObject({ status: 'SUCCEEDED', output: 'Four models are configured here.' });
    const { body } = await postGraphQL<{ agentRun: RunState }>(otherUrl, RUN, { id: runId }, bearer(stack.adminKey));
    expect(body.data?.agentRun).toMatchObject({ status: 'SUCCEEDED', cursor: seenThere.at(-1)!.cursor });
  });

  it('ends a run whose replica stopped without finishing it, when someone looks', async () => {
    const { stack, prefix } = await agentStack();
    // A run left RUNNING by a replica that is gone: stored, with no lease held.
    const store = new RedisRunStore(redis, prefix);
    const id = `run_${randomUUID()}`;
    const agent = platformAgent('gone');
    const run = runningRun({
      id,
      tenantId: 'platform',
      owner: 'someone',
      keyId: null,
      agent,
      input: 'x',
      createdAt: agent.createdAt,
      startedAt: agent.createdAt,
    });
    await store.create(run);
    expect(await runState(stack, id)).toMatchObject({ status: 'FAILED', error: { code: 'INTERNAL_SERVER_ERROR' } });
    expect((await followRun(stack, id)).map((event) => event.status)).toEqual(['FAILED']);
    await store.close();
  });

  it('without Redis, reads a run right after it started as the run it is, not as abandoned', async () => {
    const stack = await startTestStack({ cache: { enabled: false } });
    stacks.push(stack);
    await createAgent(stack, { name: 'guide' });
    stack.emulator.script({ kind: 'chat', content: 'one two three', chunkDelayMs: 20 });
    const runId = await startRun(stack, 'guide', 'hello');
    expect((await runState(stack, runId))?.status).toMatch(/^(QUEUED|RUNNING)$/);
    expect((await followRun(stack, runId)).at(-1)).toMatchObject({ status: 'SUCCEEDED', output: 'one two three' });
  });

  it('queues runs beyond the replica’s slots, refuses beyond its queue, and cancels a queued run at once', async () => {
    const { stack } = await agentStack({ agents: { maxConcurrentRuns: 1, maxQueuedRuns: 1 } });
    await createAgent(stack, { name: 'slow' });
    stack.emulator.script({ kind: 'chat', content: 'one two three', stallAfterChunks: 1 });
    const requested = stack.emulator.nextRequest();
    const running = await startRun(stack, 'slow', 'first');
    await requested;
    const queued = await startRun(stack, 'slow', 'second');
    expect((await runState(stack, queued))?.status).toBe('QUEUED');
    const { body } = await postGraphQL(stack.url, 'mutation { startAgentRun(input: {agent: "slow", input: "third"}) { run { id } } }');
    expect(body.errors?.[0]?.extensions?.code).toBe('SERVICE_UNAVAILABLE');

    const cancel = (id: string) =>
      postGraphQL(stack.url, 'mutation($id: ID!) { cancelAgentRun(input: {runId: $id}) { run { id } } }', { id });
    await cancel(queued);
    expect((await followRun(stack, queued)).map((event) => [event.__typename, event.status, event.error?.code])).toEqual([
      ['AgentRunFinished', 'CANCELLED', 'CANCELLED'],
    ]);
    expect((await runState(stack, running))?.status).toBe('RUNNING');
    await cancel(running);
    expect((await followRun(stack, running)).at(-1)).toMatchObject({ status: 'CANCELLED' });
  });

  it('lists runs with the cursor of each snapshot, and refuses cursors it never gave', async () => {
    const { stack } = await agentStack();
    await createAgent(stack, { name: 'guide' });
    stack.emulator.script({ kind: 'chat', content: 'listed' });
    const runId = await startRun(stack, 'guide', 'hello');
    const finished = (await followRun(stack, runId)).at(-1)!;
    const { body } = await postGraphQL<{ agentRuns: { edges: { node: { id: string; status: string; cursor: string | null } }[] } }>(
      stack.url,
      '{ agentRuns(first: 5) { edges { node { id status cursor } } } }',
    );
    expect(body.data?.agentRuns.edges.map((edge) => edge.node)).toEqual([{ id: runId, status: 'SUCCEEDED', cursor: finished.cursor }]);

    const badList = await postGraphQL(stack.url, '{ agentRuns(first: 5, after: "garbage") { edges { cursor } } }');
    expect(badList.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
    const { results } = await collectSubscription(stack.ws(), { query: EVENTS, variables: { runId, after: '99999999999999999999-0' } });
    expect(results[0]?.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'after' });
  });

  it('still lists an agent whose stored tool the API no longer accepts, saying so', async () => {
    const { stack, prefix } = await agentStack();
    const stale = platformAgent('stale', [{ name: 'gone', description: null, document: 'query { removedField }' }]);
    await redis.hset(`${prefix}{agents}:definitions:platform`, 'stale', JSON.stringify(stale));
    const { body } = await postGraphQL<{ agents: { name: string; tools: { description: string }[] }[] }>(
      stack.url,
      '{ agents { name tools { description } } }',
    );
    expect(body.errors).toBeUndefined();
    expect(body.data?.agents[0]?.tools[0]?.description).toContain('no longer fit the API');
    const started = await postGraphQL(stack.url, 'mutation { startAgentRun(input: {agent: "stale", input: "go"}) { run { id } } }');
    expect(started.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'agent' });
  });

  it('shows a run to its owner and its tenant’s admins only, and refuses forged delegations at the router', async () => {
    const { stack } = await agentStack();
    const owner = await tenantKey(stack, 'acme', ['AGENTS_RUN', 'CHAT_INVOKE', 'MODELS_READ']);
    const { body: created } = await postGraphQL<{ createApiKey: { secret: string } }>(
      stack.url,
      'mutation { createApiKey(input: {tenantId: "acme", name: "colleague", scopes: [AGENTS_RUN, CHAT_INVOKE]}) { secret } }',
    );
    const colleague = created.data!.createApiKey.secret;
    const stranger = await tenantKey(stack, 'globex', ['AGENTS_RUN', 'CHAT_INVOKE', 'ADMIN']);
    await createAgent(stack, { name: 'guide', tenantId: 'acme' } as AgentInput);
    stack.emulator.script({ kind: 'chat', content: 'private answer' });
    const runId = await startRun(stack, 'guide', 'a private question', bearer(owner.secret));
    expect((await followRun(stack, runId, undefined, { authorization: `Bearer ${owner.secret}` })).at(-1)).toMatchObject({
      output: 'private answer',
    });

    for (const outsider of [colleague, stranger.secret]) {
      expect(await runState(stack, runId, bearer(outsider))).toBeNull();
      const { results } = await collectSubscription(stack.ws({ authorization: `Bearer ${outsider}` }), {
        query: EVENTS,
        variables: { runId },
      });
      expect(results[0]?.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
      const cancel = await postGraphQL(
        stack.url,
        'mutation($id: ID!) { cancelAgentRun(input: {runId: $id}) { run { id } } }',
        { id: runId },
        bearer(outsider),
      );
      expect(cancel.body.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
    }
    // The platform admin (the stack's key) administers every tenant.
    expect((await runState(stack, runId))?.output).toBe('private answer');

    // A delegation is only ever made by an agents subgraph holding the identity secret.
    const forged = await fetch(stack.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-modelgraph-delegation': 'eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl' },
      body: JSON.stringify({ query: '{ models { id } }' }),
    });
    expect(forged.status).toBe(401);
    expect(((await forged.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('UNAUTHENTICATED');
  });
});
