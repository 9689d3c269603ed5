import { randomUUID } from 'node:crypto';
import type { Resolvers } from '../../codegen/agents.resolvers.ts';
import { callerAuditEvent } from '../../platform/access/audit-log.ts';
import { ErrorCode, badInput, codeOf, codedError } from '../../platform/errors.ts';
import { allowsRef } from '../../providers/model-permissions.ts';
import { hasScope, holderOf, isPlatformAdmin } from '../../platform/identity/principal.ts';
import { mayWatch } from './permissions.ts';
import { asPayloads } from '../../platform/serving/subscription-payloads.ts';
import { checkTags } from '../../platform/metering/usage-tags.ts';
import type { AgentsContext } from './context.ts';
import { agentId, type AgentSpec } from './definitions.ts';
import { NO_SPEND } from '../../platform/metering/spend.ts';
import { isFinal, type AgentDefinition, type AgentRunRecord } from './records.ts';
import { eventTypename, eventView, type EventView, type RunView } from './run-view.ts';
import { isCursor, isListCursor } from './run-store.ts';

const RUN_ID = /^run_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_PAGE = 100;
/** Tags a run's model calls carry: the agent's, then the caller's. */
const agentTag = (name: string) => `agent:${name}`.slice(0, 64);

const runNotFound = () => codedError(ErrorCode.NOT_FOUND, 'agent run not found');

async function visibleRun(id: string, { runs, principal }: AgentsContext): Promise<RunView | undefined> {
  if (!RUN_ID.test(id)) return undefined;
  const view = await runs.get(id);
  return view && mayWatch(principal, view.run) ? view : undefined;
}

/**
 * A run that is not finished and whose replica no longer holds its lease (it stopped) is ended
 * FAILED here, by whoever looks first, so nobody waits for it forever.
 */
async function endIfAbandoned(view: RunView, { runs }: AgentsContext): Promise<RunView> {
  if (isFinal(view.run.status)) return view;
  const at = new Date().toISOString();
  const error = {
    code: ErrorCode.INTERNAL_SERVER_ERROR,
    message: 'the replica running this run stopped before it finished; start it again',
  };
  const snapshot: AgentRunRecord = { ...view.run, status: 'FAILED', error, finishedAt: at };
  const ended = await runs.finishIfAbandoned(
    view.run.id,
    { type: 'RUN_FINISHED', at, status: 'FAILED', output: null, error, usage: view.run.usage },
    snapshot,
  );
  return ended ? ((await runs.get(view.run.id)) ?? view) : view;
}

/** Runs an agent definition change and records it in the audit log (SUCCESS, or FAILED with its code). */
async function audited<T>(context: AgentsContext, action: string, tenantId: string, name: string, change: () => Promise<T>): Promise<T> {
  const target = { target: `${tenantId}/${name}`, tenant: tenantId };
  let result: T;
  try {
    if (tenantId !== context.principal.tenantId && !(await context.tenantExists(tenantId)))
      throw codedError(ErrorCode.NOT_FOUND, `tenant "${tenantId}" not found`, { field: 'tenantId' });
    result = await change();
  } catch (error) {
    await context.audit
      .record(callerAuditEvent(context, action, { ...target, outcome: 'FAILED', reason: codeOf(error) ?? ErrorCode.INTERNAL_SERVER_ERROR }))
      .catch((auditError: unknown) => context.log.error({ err: auditError }, 'audit event lost'));
    throw error;
  }
  // The change is made: a lost audit event is logged, not reported as a failed change.
  await context.audit
    .record(callerAuditEvent(context, action, target))
    .catch((auditError: unknown) => context.log.error({ err: auditError, action }, 'audit event lost'));
  return result;
}

/** The fields an input sets (an explicit null included), as a partial spec. */
function toSpec(input: { [K in keyof AgentSpec]?: unknown }): Partial<AgentSpec> {
  const spec: Record<string, unknown> = {};
  for (const field of ['model', 'instructions', 'tools', 'maxSteps', 'maxTokens', 'maxUsd', 'maxWallTimeSeconds'] as const) {
    if (input[field] !== undefined) spec[field] = input[field];
  }
  return spec as Partial<AgentSpec>;
}

/** The agent a run starts with, its compiled tools and the run's tags; or a coded refusal before anything is stored. */
async function admitRun(
  input: { agent: string; input: string; tags?: string[] | null },
  { directory, principal, settings, catalog }: AgentsContext,
) {
  const agent = await directory.find(principal.tenantId, input.agent);
  if (!agent) throw codedError(ErrorCode.NOT_FOUND, `agent "${input.agent}" not found`, { field: 'agent' });
  if (input.input.trim() === '') throw badInput('input', 'input must not be empty');
  if (input.input.length > settings.limits.maxInputChars)
    throw badInput('input', `input is at most ${settings.limits.maxInputChars} characters`);
  // Its model calls are the caller's chats: refused now rather than at the first step.
  if (!hasScope(principal, 'chat:invoke'))
    throw codedError(ErrorCode.FORBIDDEN, 'running an agent needs the chat:invoke scope too: its model calls are your chats');
  if (!allowsRef(principal, catalog, agent.model))
    throw codedError(ErrorCode.FORBIDDEN, `this key may not use model "${agent.model}", the model of agent "${agent.name}"`);
  const tags = checkTags(input.tags, [agentTag(agent.name)]);
  try {
    return { agent, tools: directory.tools(agent), tags };
  } catch (error) {
    // A stored tool that no longer fits the schema (the API changed since it was defined).
    throw badInput('agent', `a tool of agent "${agent.name}" no longer fits the API: ${(error as Error).message}`);
  }
}

/** A new, QUEUED run of `agent` for the caller; limits lowered since the agent was defined apply. */
function newRun(agent: AgentDefinition, input: string, tags: string[], { principal, settings: { limits } }: AgentsContext): AgentRunRecord {
  return {
    id: `run_${randomUUID()}`,
    tenantId: principal.tenantId,
    owner: holderOf(principal),
    keyId: principal.keyId,
    agent: {
      ...agent,
      maxSteps: Math.min(agent.maxSteps, limits.maxSteps),
      maxWallTimeSeconds: Math.min(agent.maxWallTimeSeconds, limits.maxWallTimeSeconds),
    },
    input,
    tags,
    status: 'QUEUED',
    output: null,
    error: null,
    steps: [],
    usage: NO_SPEND,
    createdAt: new Date().toISOString(),
    startedAt: null,
    finishedAt: null,
  };
}

export const resolvers: Resolvers = {
  Query: {
    agents: (_parent, _args, { directory, principal }) => directory.list(principal.tenantId),
    agent: async (_parent, { name }, { directory, principal }) => (await directory.find(principal.tenantId, name)) ?? null,
    agentRun: async (_parent, { id }, context) => {
      const view = await visibleRun(id, context);
      return view ? endIfAbandoned(view, context) : null;
    },
    agentRuns: async (_parent, { tenant, first, after }, { runs, principal }) => {
      const tenantId = tenant ?? principal.tenantId;
      if (tenantId !== principal.tenantId && !isPlatformAdmin(principal))
        throw codedError(ErrorCode.FORBIDDEN, 'this belongs to another tenant');
      if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE) throw badInput('first', `first must be 1 to ${MAX_PAGE}`);
      if (after != null && !isListCursor(after)) throw badInput('after', 'after must be an endCursor of agentRuns');
      const page = await runs.list(tenantId, first, after ?? undefined);
      // Members see their own runs; admins see the tenant's. Each comes with the cursor of its
      // snapshot, so following from `cursor` continues exactly from what the node shows.
      const visible = page.runs.filter(({ run }) => mayWatch(principal, run));
      return {
        edges: visible.map((view) => ({ cursor: view.run.id, node: view })),
        pageInfo: { hasNextPage: page.next !== undefined, endCursor: page.next ?? null },
      };
    },
  },
  Mutation: {
    createAgent: async (_parent, { input }, context) => {
      const tenantId = input.tenantId ?? context.principal.tenantId;
      const agent = await audited(context, 'agent.create', tenantId, input.name, () =>
        context.directory.create(tenantId, { ...(toSpec(input) as AgentSpec), name: input.name, tools: input.tools }),
      );
      return { agent };
    },
    updateAgent: async (_parent, { input }, context) => {
      const tenantId = input.tenantId ?? context.principal.tenantId;
      const agent = await audited(context, 'agent.update', tenantId, input.name, () =>
        context.directory.update(tenantId, input.name, toSpec(input)),
      );
      return { agent };
    },
    deleteAgent: async (_parent, { input }, context) => {
      const tenantId = input.tenantId ?? context.principal.tenantId;
      await audited(context, 'agent.delete', tenantId, input.name, () => context.directory.delete(tenantId, input.name));
      return { name: input.name };
    },
    startAgentRun: async (_parent, { input }, context) => {
      const { agent, tools, tags } = await admitRun(input, context);
      const run = newRun(agent, input.input, tags, context);
      // The run acts for the caller: same grant, marked as acting for this run.
      const { actor: _, ...owner } = context.principal;
      // The runner owns (and changes) its copy; the answer shows the run as it was stored.
      await context.runner.submit(structuredClone(run), { ...owner, actor: `agent-run:${run.id}` }, tools);
      return { run: { run, cursor: null } };
    },
    cancelAgentRun: async (_parent, { input }, context) => {
      const view = await visibleRun(input.runId, context);
      if (!view) throw runNotFound();
      if (isFinal(view.run.status)) return { run: view };
      await context.runs.requestCancel(view.run.id, `cancelled by ${holderOf(context.principal)}`);
      const now = (await context.runs.get(view.run.id)) ?? view;
      return { run: await endIfAbandoned(now, context) };
    },
  },
  Subscription: {
    agentRunEvents: {
      // No `resolve`: the shield rule guards `subscribe` itself (see subgraph-server.ts).
      subscribe: async (_parent, { runId, after }, context) => {
        if (after != null && !isCursor(after)) throw badInput('after', 'after must be a cursor from an earlier event or AgentRun.cursor');
        const view = await visibleRun(runId, context);
        if (!view) throw runNotFound();
        const events = context.runs.follow(runId, after ?? undefined, context.signal, {
          everyMs: 5_000,
          check: async () => {
            const current = await context.runs.get(runId);
            if (current) await endIfAbandoned(current, context);
          },
        });
        return asPayloads('agentRunEvents', mapEvents(runId, events));
      },
    },
  },
  Agent: {
    id: (agent) => agentId(agent),
    tenant: (agent) => (agent.tenantId === null ? null : { id: agent.tenantId }),
    tools: (agent, _args, { directory }) => {
      try {
        return directory.tools(agent).map((tool) => ({
          name: tool.name,
          description: tool.description,
          document: tool.document,
          parameters: JSON.stringify(tool.parameters),
        }));
      } catch (error) {
        // A stored tool the API has outgrown: shown, so its admins can see and fix it (runs refuse it).
        const problem = (error as Error).message;
        return agent.tools.map((tool) => ({
          name: tool.name,
          description: `(this agent's tools no longer fit the API: ${problem})`,
          document: tool.document,
          parameters: '{}',
        }));
      }
    },
  },
  AgentRun: {
    __resolveReference: async (reference, context) => {
      const view = await visibleRun(reference.id, context);
      return view ? endIfAbandoned(view, context) : null;
    },
    id: ({ run }) => run.id,
    agent: ({ run }) => run.agent,
    status: ({ run }) => run.status,
    input: ({ run }) => run.input,
    output: ({ run }) => run.output,
    error: ({ run }) => run.error,
    steps: ({ run }) => run.steps,
    usage: ({ run }) => run.usage,
    tags: ({ run }) => run.tags,
    createdAt: ({ run }) => run.createdAt,
    startedAt: ({ run }) => run.startedAt,
    finishedAt: ({ run }) => run.finishedAt,
    cursor: ({ cursor }) => cursor,
  },
  AgentRunEvent: {
    __resolveType: (event) => eventTypename(event),
  },
};

async function* mapEvents(runId: string, events: AsyncIterable<import('./records.ts').StoredRunEvent>): AsyncGenerator<EventView> {
  for await (const stored of events) yield eventView(runId, stored);
}
