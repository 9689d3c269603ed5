/**
 * Agent definitions end to end, on a Redis-backed stack: creating, reading, changing and deleting
 * agents through the router, the checks every definition passes (names, models, tool documents,
 * limits), who may see and change which agents, agents from the config, the audit log of changes,
 * and the refusals of `startAgentRun` that come before any model is called.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentDefinition } from '../subgraphs/agents/records.ts';
import { postGraphQL, startTestStack, type GraphQLResponse, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The stack's `agents.limits.maxSteps`, and the default below it. */
const MAX_STEPS = 5;
const DEFAULT_STEPS = 3;

const LIST_MODELS = '# Lists the models.\nquery Models { models { id } }';
const GET_MODEL = 'query M($id: String!) { model(id: $id) { id } }';

const AGENT_FIELDS =
  'id name tenant { id } model instructions tools { name description document parameters } maxSteps maxTokens maxUsd maxWallTimeSeconds configured createdAt updatedAt';
const CREATE = `mutation Create($input: CreateAgentInput!) { createAgent(input: $input) { agent { ${AGENT_FIELDS} } } }`;
const UPDATE = `mutation Update($input: UpdateAgentInput!) { updateAgent(input: $input) { agent { ${AGENT_FIELDS} } } }`;
const DELETE = 'mutation Delete($input: DeleteAgentInput!) { deleteAgent(input: $input) { name } }';
const AGENTS = `{ agents { ${AGENT_FIELDS} } }`;
const AGENT = `query Agent($name: String!) { agent(name: $name) { ${AGENT_FIELDS} } }`;
const START = 'mutation Start($input: StartAgentRunInput!) { startAgentRun(input: $input) { run { id status tags } } }';
const CREATE_KEY = 'mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }';

/** An agent as the API shows it: the stored definition, with its id, tenant and tools' parameters. */
type AgentView = Omit<AgentDefinition, 'tenantId' | 'tools'> & {
  id: string;
  tenant: { id: string } | null;
  tools: { name: string; description: string; document: string; parameters: string }[];
};

type Body<T> = GraphQLResponse<T>['body'];

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** API key secrets, by who holds them. */
interface Keys {
  acmeAdmin: string;
  acmeRunner: string;
  acmeNoChat: string;
  acmeReader: string;
  acmeEchoRunner: string;
  globexAdmin: string;
  globexRunner: string;
  initechRunner: string;
}

let stack: TestStack;
let keys: Keys;

/** Sends an operation as `key` (default: the stack's platform admin). */
async function gql<T = Record<string, unknown>>(query: string, variables?: Record<string, unknown>, key?: string): Promise<Body<T>> {
  const { body } = await postGraphQL<T>(stack.url, query, variables, key ? { authorization: `Bearer ${key}` } : {});
  return body;
}

/** The first error's code and field, for asserting refusals. */
const refusal = (body: Body<unknown>) => ({ code: body.errors?.[0]?.extensions?.code, field: body.errors?.[0]?.extensions?.field });

async function createTenant(id: string) {
  const body = await gql(`mutation { createTenant(input: {id: "${id}", name: "${id} inc"}) { tenant { id } } }`);
  expect(body.errors).toBeUndefined();
}

async function createKey(input: Record<string, unknown>): Promise<string> {
  const body = await gql<{ createApiKey: { secret: string } }>(CREATE_KEY, { input });
  expect(body.errors).toBeUndefined();
  return body.data!.createApiKey.secret;
}

async function createAgent(input: Record<string, unknown>, key?: string): Promise<AgentView> {
  const body = await gql<{ createAgent: { agent: AgentView } }>(CREATE, { input }, key);
  expect(body.errors).toBeUndefined();
  return body.data!.createAgent.agent;
}

async function agentNamed(name: string, key: string): Promise<AgentView | null> {
  const body = await gql<{ agent: AgentView | null }>(AGENT, { name }, key);
  expect(body.errors).toBeUndefined();
  return body.data!.agent;
}

async function agentNames(key: string): Promise<string[]> {
  const body = await gql<{ agents: AgentView[] }>(AGENTS, undefined, key);
  expect(body.errors).toBeUndefined();
  return body.data!.agents.map((agent) => agent.name);
}

/** A valid definition to vary. */
const spec = (overrides: Record<string, unknown> = {}) => ({
  name: `agent-${randomUUID().slice(0, 8)}`,
  model: 'gpt-test',
  instructions: 'Answer briefly.',
  tools: [],
  ...overrides,
});

beforeAll(async () => {
  stack = await startTestStack({
    redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` },
    agents: {
      defaults: { maxSteps: DEFAULT_STEPS },
      limits: { maxSteps: MAX_STEPS },
      definitions: [
        { name: 'helper', model: 'gpt-test', instructions: 'Help whoever asks.', tools: [{ name: 'list_models', document: LIST_MODELS }] },
        { name: 'acme-desk', tenant: 'acme', model: 'echo', instructions: 'Answer for Acme.' },
      ],
    },
  });
  for (const tenant of ['acme', 'globex', 'initech']) await createTenant(tenant);
  keys = {
    acmeAdmin: await createKey({ tenantId: 'acme', name: 'acme admin', scopes: ['ADMIN'] }),
    acmeRunner: await createKey({ tenantId: 'acme', name: 'acme runner', scopes: ['AGENTS_RUN', 'CHAT_INVOKE'] }),
    acmeNoChat: await createKey({ tenantId: 'acme', name: 'runs but cannot chat', scopes: ['AGENTS_RUN'] }),
    acmeReader: await createKey({ tenantId: 'acme', name: 'acme reader', scopes: ['MODELS_READ', 'CHAT_INVOKE'] }),
    acmeEchoRunner: await createKey({
      tenantId: 'acme',
      name: 'echo runner',
      scopes: ['AGENTS_RUN', 'CHAT_INVOKE'],
      allowedModels: ['echo'],
    }),
    globexAdmin: await createKey({ tenantId: 'globex', name: 'globex admin', scopes: ['ADMIN', 'AGENTS_RUN'] }),
    globexRunner: await createKey({ tenantId: 'globex', name: 'globex runner', scopes: ['AGENTS_RUN'] }),
    initechRunner: await createKey({ tenantId: 'initech', name: 'initech runner', scopes: ['AGENTS_RUN'] }),
  };
});

afterAll(async () => {
  await stack?.stop();
});

describe('defining an agent', () => {
  it('creates an agent whose tools describe themselves, and reads it back by list and by name', async () => {
    const created = await createAgent(
      { name: 'librarian', model: 'gpt-test', instructions: 'Find models.', tools: [{ name: 'list_models', document: LIST_MODELS }] },
      keys.acmeAdmin,
    );
    expect(created).toEqual({
      id: 'acme/librarian',
      name: 'librarian',
      tenant: { id: 'acme' },
      model: 'gpt-test',
      instructions: 'Find models.',
      tools: [{ name: 'list_models', description: 'Lists the models.', document: LIST_MODELS, parameters: expect.any(String) }],
      maxSteps: DEFAULT_STEPS,
      maxTokens: null,
      maxUsd: null,
      maxWallTimeSeconds: 300,
      configured: false,
      createdAt: expect.stringMatching(ISO_TIME),
      updatedAt: created.createdAt,
    });
    // A query without variables takes an empty arguments object, and nothing else.
    expect(JSON.parse(created.tools[0]!.parameters)).toEqual({ type: 'object', properties: {}, additionalProperties: false });

    const listed = await gql<{ agents: AgentView[] }>(AGENTS, undefined, keys.acmeAdmin);
    expect(listed.data?.agents.find((agent) => agent.name === 'librarian')).toEqual(created);
    expect(await agentNamed('librarian', keys.acmeAdmin)).toEqual(created);
  });

  it('requires the non-null variables of a tool and describes an unnamed one from its selection', async () => {
    const agent = await createAgent(spec({ tools: [{ name: 'get_model', document: GET_MODEL }] }), keys.acmeAdmin);
    const [tool] = agent.tools;
    expect(tool?.description).toBe('Runs the GraphQL query M (selects model).');
    expect(JSON.parse(tool!.parameters)).toEqual({
      type: 'object',
      properties: { id: { type: 'string' } },
      required: ['id'],
      additionalProperties: false,
    });
  });

  it('takes a tool description given with the tool over the document comment', async () => {
    const agent = await createAgent(
      spec({ tools: [{ name: 'list_models', document: LIST_MODELS, description: 'Every model id.' }] }),
      keys.acmeAdmin,
    );
    expect(agent.tools[0]?.description).toBe('Every model id.');
  });
});

describe('refusing an invalid definition', () => {
  const tool = (document: string, name = 'tool') => ({ name, document });
  it.each([
    ['a name that is not 1 to 64 letters, digits, _ . or -', { name: 'has space' }, 'BAD_USER_INPUT', 'name'],
    ['a name starting with a dash', { name: '-dash' }, 'BAD_USER_INPUT', 'name'],
    ['a name longer than 64 characters', { name: 'a'.repeat(65) }, 'BAD_USER_INPUT', 'name'],
    ['a tool document that does not parse', { tools: [tool('query {')] }, 'BAD_USER_INPUT', 'tools[0].document'],
    [
      'a tool document selecting a field the API does not have',
      { tools: [tool(LIST_MODELS, 'ok'), tool('query { nope }')] },
      'BAD_USER_INPUT',
      'tools[1].document',
    ],
    [
      'a subscription as a tool',
      { tools: [tool('subscription { chatStream(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { __typename } }')] },
      'BAD_USER_INPUT',
      'tools[0].document',
    ],
    [
      'a document with two operations',
      { tools: [tool('query A { models { id } } query B { models { id } }')] },
      'BAD_USER_INPUT',
      'tools[0].document',
    ],
    ['a tool name a provider would refuse', { tools: [tool(LIST_MODELS, 'list models')] }, 'BAD_USER_INPUT', 'tools[0].name'],
    ['two tools of the same name', { tools: [tool(LIST_MODELS, 'twin'), tool(GET_MODEL, 'twin')] }, 'BAD_USER_INPUT', 'tools[1].name'],
    ['a model that does not exist', { model: 'no-such-model' }, 'MODEL_NOT_FOUND', 'model'],
    [
      'a model that cannot call tools, for an agent with tools',
      { model: 'echo', tools: [tool(LIST_MODELS)] },
      'MODEL_CAPABILITY_UNSUPPORTED',
      'model',
    ],
    ['a model that does not chat', { model: 'hashing-embed' }, 'MODEL_CAPABILITY_UNSUPPORTED', 'model'],
    ['blank instructions', { instructions: '  ' }, 'BAD_USER_INPUT', 'instructions'],
    ['more steps than agents.limits.maxSteps', { maxSteps: MAX_STEPS + 1 }, 'BAD_USER_INPUT', 'maxSteps'],
    ['zero steps', { maxSteps: 0 }, 'BAD_USER_INPUT', 'maxSteps'],
    ['a non-positive maxUsd', { maxUsd: 0 }, 'BAD_USER_INPUT', 'maxUsd'],
  ])('refuses %s, naming the field, and stores nothing', async (_case, overrides, code, field) => {
    const input = spec(overrides);
    const body = await gql(CREATE, { input }, keys.acmeAdmin);
    expect(body.data).toBeNull();
    expect(refusal(body)).toEqual({ code, field });
    expect(await agentNames(keys.acmeAdmin)).not.toContain(input.name);
  });

  it('says why a tool document does not validate', async () => {
    const body = await gql(CREATE, { input: spec({ tools: [{ name: 'broken', document: 'query { nope }' }] }) }, keys.acmeAdmin);
    expect(body.errors?.[0]?.message).toMatch(
      /^The document does not validate against the schema: Cannot query field "nope" on type "Query"\./,
    );
  });

  it('accepts exactly agents.limits.maxSteps steps', async () => {
    expect((await createAgent(spec({ maxSteps: MAX_STEPS }), keys.acmeAdmin)).maxSteps).toBe(MAX_STEPS);
  });

  it('refuses a second agent of the same name in the tenant and keeps the first', async () => {
    const first = await createAgent(spec({ name: 'only-once', instructions: 'The first.' }), keys.acmeAdmin);
    const again = await gql(CREATE, { input: spec({ name: 'only-once', instructions: 'The second.' }) }, keys.acmeAdmin);
    expect(again.data).toBeNull();
    expect(refusal(again)).toEqual({ code: 'BAD_USER_INPUT', field: 'name' });
    expect(await agentNamed('only-once', keys.acmeAdmin)).toEqual(first);
  });
});

describe('changing and deleting an agent', () => {
  it('changes only the fields given, keeps the rest, and lifts maxTokens on an explicit null', async () => {
    const created = await createAgent(
      {
        name: 'editor',
        model: 'gpt-test',
        instructions: 'Before.',
        tools: [{ name: 'list_models', document: LIST_MODELS }],
        maxSteps: 2,
        maxTokens: 1_000,
        maxUsd: 0.5,
        maxWallTimeSeconds: 60,
      },
      keys.acmeAdmin,
    );
    const updated = await gql<{ updateAgent: { agent: AgentView } }>(
      UPDATE,
      { input: { name: 'editor', instructions: 'After.' } },
      keys.acmeAdmin,
    );
    expect(updated.errors).toBeUndefined();
    const changed = updated.data!.updateAgent.agent;
    expect(changed).toEqual({ ...created, instructions: 'After.', updatedAt: expect.stringMatching(ISO_TIME) });
    expect(changed.updatedAt >= created.createdAt).toBe(true);
    expect(await agentNamed('editor', keys.acmeAdmin)).toEqual(changed);

    const lifted = await gql<{ updateAgent: { agent: AgentView } }>(UPDATE, { input: { name: 'editor', maxTokens: null } }, keys.acmeAdmin);
    expect(lifted.errors).toBeUndefined();
    expect(lifted.data!.updateAgent.agent).toEqual({ ...changed, maxTokens: null, updatedAt: expect.stringMatching(ISO_TIME) });
  });

  it('replaces every tool when tools are given, checking them as on create', async () => {
    await createAgent(spec({ name: 'retooled', tools: [{ name: 'list_models', document: LIST_MODELS }] }), keys.acmeAdmin);
    const refused = await gql(
      UPDATE,
      { input: { name: 'retooled', tools: [{ name: 'bad', document: 'query { nope }' }] } },
      keys.acmeAdmin,
    );
    expect(refusal(refused)).toEqual({ code: 'BAD_USER_INPUT', field: 'tools[0].document' });
    expect((await agentNamed('retooled', keys.acmeAdmin))?.tools.map((tool) => tool.name)).toEqual(['list_models']);

    const replaced = await gql<{ updateAgent: { agent: AgentView } }>(
      UPDATE,
      { input: { name: 'retooled', tools: [{ name: 'get_model', document: GET_MODEL }] } },
      keys.acmeAdmin,
    );
    expect(replaced.errors).toBeUndefined();
    expect(replaced.data!.updateAgent.agent.tools.map((tool) => tool.name)).toEqual(['get_model']);
    expect((await agentNamed('retooled', keys.acmeAdmin))?.tools.map((tool) => tool.name)).toEqual(['get_model']);
  });

  it('refuses to update or delete an agent the tenant does not have with NOT_FOUND', async () => {
    const update = await gql(UPDATE, { input: { name: 'never-made', instructions: 'x' } }, keys.acmeAdmin);
    expect(update.data).toBeNull();
    expect(refusal(update).code).toBe('NOT_FOUND');
    const remove = await gql(DELETE, { input: { name: 'never-made' } }, keys.acmeAdmin);
    expect(remove.data).toBeNull();
    expect(refusal(remove).code).toBe('NOT_FOUND');
  });

  it('deletes an agent: it is gone from the list and by name, and a second delete finds nothing', async () => {
    await createAgent(spec({ name: 'short-lived' }), keys.acmeAdmin);
    const deleted = await gql(DELETE, { input: { name: 'short-lived' } }, keys.acmeAdmin);
    expect(deleted).toEqual({ data: { deleteAgent: { name: 'short-lived' } } });
    expect(await agentNamed('short-lived', keys.acmeAdmin)).toBeNull();
    expect(await agentNames(keys.acmeAdmin)).not.toContain('short-lived');
    expect(refusal(await gql(DELETE, { input: { name: 'short-lived' } }, keys.acmeAdmin)).code).toBe('NOT_FOUND');
  });
});

describe('who may see and define agents', () => {
  it('lets a key that runs agents list them, but not define them', async () => {
    await createAgent(spec({ name: 'visible-to-runners' }), keys.acmeAdmin);
    expect(await agentNames(keys.acmeRunner)).toContain('visible-to-runners');
    const refused = await gql(CREATE, { input: spec({ name: 'by-a-runner' }) }, keys.acmeRunner);
    expect(refused.data).toBeNull();
    expect(refusal(refused).code).toBe('FORBIDDEN');
    expect(await agentNames(keys.acmeAdmin)).not.toContain('by-a-runner');
  });

  it('refuses the agents queries to a key with neither AGENTS_RUN nor ADMIN', async () => {
    const list = await gql(AGENTS, undefined, keys.acmeReader);
    expect(list.data).toBeNull();
    expect(refusal(list).code).toBe('FORBIDDEN');
    const one = await gql(AGENT, { name: 'helper' }, keys.acmeReader);
    expect(one.data).toEqual({ agent: null });
    expect(refusal(one).code).toBe('FORBIDDEN');
  });

  it('hides one tenant’s agents from another, which can neither change nor delete them', async () => {
    const original = await createAgent(spec({ name: 'acme-secret' }), keys.acmeAdmin);
    expect(await agentNames(keys.globexRunner)).not.toContain('acme-secret');
    expect(await agentNamed('acme-secret', keys.globexRunner)).toBeNull();
    // Naming the other tenant is refused; naming none finds nothing in its own.
    for (const [operation, input] of [
      [UPDATE, { tenantId: 'acme', name: 'acme-secret', instructions: 'Hijacked.' }],
      [DELETE, { tenantId: 'acme', name: 'acme-secret' }],
      [CREATE, spec({ tenantId: 'acme' })],
    ] as const) {
      const body = await gql(operation, { input }, keys.globexAdmin);
      expect(body.data, operation).toBeNull();
      expect(refusal(body).code, operation).toBe('FORBIDDEN');
    }
    expect(refusal(await gql(UPDATE, { input: { name: 'acme-secret', instructions: 'Hijacked.' } }, keys.globexAdmin)).code).toBe(
      'NOT_FOUND',
    );
    expect(refusal(await gql(DELETE, { input: { name: 'acme-secret' } }, keys.globexAdmin)).code).toBe('NOT_FOUND');
    expect(await agentNamed('acme-secret', keys.acmeAdmin)).toEqual(original);
  });

  it('lets a platform admin define an agent for any tenant', async () => {
    const agent = await createAgent(spec({ tenantId: 'globex', name: 'made-by-platform' }));
    expect(agent).toMatchObject({ id: 'globex/made-by-platform', tenant: { id: 'globex' }, configured: false });
    expect(await agentNamed('made-by-platform', keys.globexRunner)).toEqual(agent);
    expect(await agentNamed('made-by-platform', keys.acmeRunner)).toBeNull();
    const changed = await gql<{ updateAgent: { agent: AgentView } }>(UPDATE, {
      input: { tenantId: 'globex', name: 'made-by-platform', maxSteps: 1 },
    });
    expect(changed.data?.updateAgent.agent.maxSteps).toBe(1);
    expect(await gql(DELETE, { input: { tenantId: 'globex', name: 'made-by-platform' } })).toEqual({
      data: { deleteAgent: { name: 'made-by-platform' } },
    });
  });
});

describe('agents from the config', () => {
  it('shows an agent configured for every tenant to every tenant, read-only', async () => {
    const body = await gql<{ agents: AgentView[] }>(AGENTS, undefined, keys.initechRunner);
    expect(body.errors).toBeUndefined();
    expect(body.data?.agents).toEqual([
      {
        id: '_shared/helper',
        name: 'helper',
        tenant: null,
        model: 'gpt-test',
        instructions: 'Help whoever asks.',
        tools: [
          {
            name: 'list_models',
            description: 'Lists the models.',
            document: LIST_MODELS,
            parameters: '{"type":"object","properties":{},"additionalProperties":false}',
          },
        ],
        maxSteps: DEFAULT_STEPS,
        maxTokens: null,
        maxUsd: null,
        maxWallTimeSeconds: 300,
        configured: true,
        createdAt: expect.stringMatching(ISO_TIME),
        updatedAt: expect.stringMatching(ISO_TIME),
      },
    ]);
    expect(await agentNamed('helper', keys.globexRunner)).toMatchObject({ id: '_shared/helper', tenant: null, configured: true });
  });

  it('shows an agent configured for one tenant to that tenant only', async () => {
    expect(await agentNamed('acme-desk', keys.acmeRunner)).toMatchObject({
      id: 'acme/acme-desk',
      tenant: { id: 'acme' },
      model: 'echo',
      tools: [],
      configured: true,
    });
    expect(await agentNames(keys.acmeRunner)).toEqual(expect.arrayContaining(['acme-desk', 'helper']));
    expect(await agentNames(keys.globexRunner)).not.toContain('acme-desk');
    expect(await agentNamed('acme-desk', keys.globexRunner)).toBeNull();
  });

  it.each([
    ['update the shared agent', UPDATE, { name: 'helper', instructions: 'Mine now.' }],
    ['delete the shared agent', DELETE, { name: 'helper' }],
    ['update the tenant’s configured agent', UPDATE, { name: 'acme-desk', instructions: 'Mine now.' }],
    ['delete the tenant’s configured agent', DELETE, { name: 'acme-desk' }],
    ['create an agent named like the shared one', CREATE, spec({ name: 'helper' })],
    ['create an agent named like the tenant’s configured one', CREATE, spec({ name: 'acme-desk' })],
  ])('refuses a tenant admin’s attempt to %s with BAD_USER_INPUT', async (_case, operation, input) => {
    const body = await gql(operation, { input }, keys.acmeAdmin);
    expect(body.data).toBeNull();
    expect(refusal(body)).toEqual({ code: 'BAD_USER_INPUT', field: 'name' });
    expect(await agentNamed('helper', keys.acmeAdmin)).toMatchObject({ configured: true, instructions: 'Help whoever asks.' });
    expect(await agentNamed('acme-desk', keys.acmeAdmin)).toMatchObject({ configured: true, instructions: 'Answer for Acme.' });
  });

  it('leaves the name of another tenant’s configured agent free', async () => {
    const agent = await createAgent(spec({ name: 'acme-desk' }), keys.globexAdmin);
    expect(agent).toMatchObject({ id: 'globex/acme-desk', configured: false });
    expect(await agentNamed('acme-desk', keys.acmeRunner)).toMatchObject({ id: 'acme/acme-desk', configured: true });
  });

  it('refuses to start with a configured agent whose tool does not validate, naming the tool', async () => {
    const definitions = [{ name: 'broken', model: 'gpt-test', instructions: 'x', tools: [{ name: 'bad', document: 'query { nope }' }] }];
    await expect(startTestStack({ agents: { definitions } })).rejects.toThrow(
      /^invalid agents\.definitions\[0\]\.tools\[0\]\.document: The document does not validate/,
    );
  });
});

describe('the audit log of agent definitions', () => {
  it('records a created agent as SUCCESS and a refused one as FAILED with its code', async () => {
    await createTenant('audited');
    const admin = await createKey({ tenantId: 'audited', name: 'auditee', scopes: ['ADMIN'] });
    const me = await gql<{ me: { subject: string } }>('{ me { subject } }', undefined, admin);
    const keyId = me.data!.me.subject;
    await createAgent(spec({ name: 'logged' }), admin);
    expect(refusal(await gql(CREATE, { input: spec({ name: 'ghost', model: 'no-such-model' }) }, admin)).code).toBe('MODEL_NOT_FOUND');

    const body = await gql<{ auditLog: { edges: { node: Record<string, unknown> }[] } }>(
      '{ auditLog(filter: {action: "agent.create", tenant: "audited"}, first: 10) { edges { node { actor actorTenant action target tenant outcome reason time } } } }',
    );
    expect(body.errors).toBeUndefined();
    const event = {
      actor: keyId,
      actorTenant: 'audited',
      action: 'agent.create',
      tenant: 'audited',
      time: expect.stringMatching(ISO_TIME),
    };
    expect(body.data?.auditLog.edges.map((edge) => edge.node)).toEqual([
      { ...event, target: 'audited/ghost', outcome: 'FAILED', reason: 'MODEL_NOT_FOUND' },
      { ...event, target: 'audited/logged', outcome: 'SUCCESS', reason: null },
    ]);
  });
});

describe('starting a run', () => {
  const tags = (count: number) => Array.from({ length: count }, (_, index) => `tag-${index}`);

  it.each<[string, keyof Keys, Record<string, unknown>, string, string | undefined]>([
    ['an agent the tenant does not have', 'acmeRunner', { agent: 'no-such-agent', input: 'hi' }, 'NOT_FOUND', 'agent'],
    ['another tenant’s configured agent', 'initechRunner', { agent: 'acme-desk', input: 'hi' }, 'NOT_FOUND', 'agent'],
    ['an empty input', 'acmeRunner', { agent: 'helper', input: '' }, 'BAD_USER_INPUT', 'input'],
    ['a blank input', 'acmeRunner', { agent: 'helper', input: ' \n ' }, 'BAD_USER_INPUT', 'input'],
    ['a key whose allowed models exclude the agent’s model', 'acmeEchoRunner', { agent: 'helper', input: 'hi' }, 'FORBIDDEN', undefined],
    ['a key without AGENTS_RUN, though an admin', 'acmeAdmin', { agent: 'helper', input: 'hi' }, 'FORBIDDEN', undefined],
    ['a key with neither AGENTS_RUN nor ADMIN', 'acmeReader', { agent: 'helper', input: 'hi' }, 'FORBIDDEN', undefined],
    [
      'a key that may run agents but not chat (a run’s model calls are its chats)',
      'acmeNoChat',
      { agent: 'helper', input: 'hi' },
      'FORBIDDEN',
      undefined,
    ],
    ['more than 9 tags of the caller’s', 'acmeRunner', { agent: 'helper', input: 'hi', tags: tags(10) }, 'BAD_USER_INPUT', 'tags'],
    [
      'an empty tag, naming it by its place in the caller’s list',
      'acmeRunner',
      { agent: 'helper', input: 'hi', tags: ['fine', ''] },
      'BAD_USER_INPUT',
      'tags[1]',
    ],
  ])('refuses %s before any model call', async (_case, holder, input, code, field) => {
    const before = stack.emulator.requests.length;
    const body = await gql(START, { input }, keys[holder]);
    expect(body.data).toBeNull();
    expect(refusal(body)).toEqual({ code, field });
    expect(stack.emulator.requests.length).toBe(before);
  });

  it('accepts 9 tags of the caller’s, beside the agent’s own', async () => {
    const before = stack.emulator.requests.length;
    // The echo model is served locally, so this run never reaches the emulator.
    const body = await gql<{ startAgentRun: { run: { id: string; status: string; tags: string[] } } }>(
      START,
      { input: { agent: 'acme-desk', input: 'hi', tags: tags(9) } },
      keys.acmeEchoRunner,
    );
    expect(body.errors).toBeUndefined();
    expect(body.data?.startAgentRun.run).toEqual({
      id: expect.stringMatching(/^run_[0-9a-f-]{36}$/),
      status: 'QUEUED',
      tags: ['agent:acme-desk', ...tags(9)].sort(),
    });
    const id = body.data!.startAgentRun.run.id;
    const run = async () =>
      (
        await gql<{ agentRun: { status: string; output: string | null } | null }>(
          'query($id: ID!) { agentRun(id: $id) { status output } }',
          { id },
          keys.acmeEchoRunner,
        )
      ).data?.agentRun;
    await expect.poll(run, { interval: 20, timeout: 10_000 }).toEqual({ status: 'SUCCEEDED', output: 'hi' });
    expect(stack.emulator.requests.length).toBe(before);
  });

  it('answers null for a run that does not exist', async () => {
    expect(await gql('{ agentRun(id: "run_nope") { id } }', undefined, keys.acmeRunner)).toEqual({ data: { agentRun: null } });
    expect(await gql(`{ agentRun(id: "run_${randomUUID()}") { id } }`, undefined, keys.acmeRunner)).toEqual({ data: { agentRun: null } });
  });

  it('refuses the runs of another tenant to all but platform admins', async () => {
    for (const key of [keys.acmeRunner, keys.acmeAdmin]) {
      const body = await gql('{ agentRuns(tenant: "initech") { edges { cursor } } }', undefined, key);
      expect(body.data).toBeNull();
      expect(refusal(body).code).toBe('FORBIDDEN');
    }
    // No run of initech's was ever started.
    expect(await gql('{ agentRuns(tenant: "initech") { edges { cursor } pageInfo { hasNextPage } } }')).toEqual({
      data: { agentRuns: { edges: [], pageInfo: { hasNextPage: false } } },
    });
  });
});

describe('a config that later names a tenant’s own agent', () => {
  it('shows by list, by name and in a run the same one of the two agents', async () => {
    const redis = { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` };
    const before = await startTestStack({ redis });
    try {
      await postGraphQL(before.url, 'mutation { createTenant(input: {id: "acme", name: "acme inc"}) { tenant { id } } }');
      const key = await postGraphQL<{ createApiKey: { secret: string } }>(before.url, CREATE_KEY, {
        input: { tenantId: 'acme', name: 'runner', scopes: ['ADMIN', 'AGENTS_RUN', 'CHAT_INVOKE'] },
      });
      const auth = { authorization: `Bearer ${key.body.data!.createApiKey.secret}` };
      const own = await postGraphQL(
        before.url,
        CREATE,
        { input: spec({ name: 'late', model: 'echo', instructions: 'The tenant’s own.' }) },
        auth,
      );
      expect(own.body.errors).toBeUndefined();
      // A replica on the same Redis whose config, deployed after the tenant defined its agent, has a shared one of that name.
      const after = await startTestStack({
        redis,
        agents: { definitions: [{ name: 'late', model: 'echo', instructions: 'The shared one.' }] },
      });
      try {
        const listed = await postGraphQL<{ agents: AgentView[] }>(after.url, AGENTS, undefined, auth);
        const named = await postGraphQL<{ agent: AgentView | null }>(after.url, AGENT, { name: 'late' }, auth);
        const started = await postGraphQL<{ startAgentRun: { run: { agent: { id: string } } } }>(
          after.url,
          'mutation { startAgentRun(input: {agent: "late", input: "hi"}) { run { agent { id } } } }',
          undefined,
          auth,
        );
        const shown = listed.body.data?.agents.filter((agent) => agent.name === 'late');
        expect(shown).toHaveLength(1);
        expect(named.body.data?.agent).toEqual(shown?.[0]);
        expect(started.body.data?.startAgentRun.run.agent.id).toBe(shown?.[0]?.id);
      } finally {
        await after.stop();
      }
    } finally {
      await before.stop();
    }
  });
});
