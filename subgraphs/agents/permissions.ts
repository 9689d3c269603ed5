/**
 * Who may do what with agents. Running agents and reading runs needs `agents:run` (tenant admins
 * may read and cancel their tenant's runs without it); defining agents needs admin rights over the
 * tenant. A tenant sees only its own agents (and those configured for every tenant), and a run only
 * its owner and the tenant's admins. Nothing acting for an agent run may start another run, so a
 * tool cannot make an agent recurse.
 */
import { allow, and, forbidden, or, requireScope, rule, subgraphShield } from '../../platform/identity/authorization.ts';
import { callerAuditEvent } from '../../platform/access/audit-log.ts';
import { ErrorCode } from '../../platform/errors.ts';
import { administers, holderOf, isPlatformAdmin, type Principal } from '../../platform/identity/principal.ts';
import type { AgentsContext } from './context.ts';
import type { AgentDefinition, AgentRunRecord } from './records.ts';
import type { RunView } from './run-view.ts';

/** The run's owner, its tenant's admins and platform admins see a run; nobody else learns it exists. */
export const mayWatch = (principal: Principal, run: AgentRunRecord) =>
  (run.owner === holderOf(principal) && run.tenantId === principal.tenantId) || administers(principal, run.tenantId);

const runAgents = requireScope('agents:run');
const admin = requireScope('admin');

const notYours = () => forbidden('this belongs to another tenant');

const agentVisible = rule('agent-visible', { cache: 'no_cache' })((agent: AgentDefinition, _args, { principal }: AgentsContext) =>
  agent.tenantId === null || agent.tenantId === principal.tenantId || isPlatformAdmin(principal) ? true : notYours(),
);

const runVisible = rule('run-visible', { cache: 'no_cache' })(({ run }: RunView, _args, { principal }: AgentsContext) =>
  mayWatch(principal, run) ? true : notYours(),
);

/**
 * The tenant an agent definition change is for (`input.tenantId`, else the caller's) must be the
 * caller's to administer; a refusal leaves a DENIED audit event, as access changes do.
 */
const administersInputTenant = (action: string) =>
  rule(`agent-admin:${action}`, { cache: 'no_cache' })(
    async (_parent, { input }: { input: { tenantId?: string | null; name: string } }, context: AgentsContext) => {
      const tenantId = input.tenantId ?? context.principal.tenantId;
      // An agent acting for an admin does not administer: a model must not redefine agents.
      if (administers(context.principal, tenantId) && context.principal.actor === undefined) return true;
      await context.audit.record(
        callerAuditEvent(context, action, {
          target: `${tenantId}/${input.name}`,
          tenant: tenantId,
          outcome: 'DENIED',
          reason: ErrorCode.FORBIDDEN,
        }),
      );
      return forbidden('only admins of the tenant may define its agents');
    },
  );

const notActingForARun = rule('not-agent-run', { cache: 'contextual' })((_parent, _args, { principal }: AgentsContext) =>
  principal.actor === undefined ? true : forbidden('an agent run cannot start agent runs'),
);

const runsReader = or(runAgents, admin);

export const permissions = subgraphShield({
  Query: { agents: runsReader, agent: runsReader, agentRun: runsReader, agentRuns: runsReader },
  Mutation: {
    createAgent: administersInputTenant('agent.create'),
    updateAgent: administersInputTenant('agent.update'),
    deleteAgent: administersInputTenant('agent.delete'),
    startAgentRun: and(runAgents, notActingForARun),
    cancelAgentRun: runsReader,
  },
  Subscription: { agentRunEvents: runsReader },
  Agent: { '*': agentVisible },
  AgentRun: { '*': runVisible },
  // Values inside answers the rules above already allowed.
  Tenant: allow,
  AgentTool: allow,
  AgentStep: allow,
  AgentToolCall: allow,
  AgentRunError: allow,
  TokenUsage: allow,
  AgentRunConnection: allow,
  AgentRunEdge: allow,
  PageInfo: allow,
  CreateAgentPayload: allow,
  UpdateAgentPayload: allow,
  DeleteAgentPayload: allow,
  StartAgentRunPayload: allow,
  CancelAgentRunPayload: allow,
  AgentStepStarted: allow,
  AgentTextDelta: allow,
  AgentToolCalled: allow,
  AgentToolResulted: allow,
  AgentRunFinished: allow,
});
