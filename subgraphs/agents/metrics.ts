/** What the agents subgraph counts: runs by outcome, runs running and waiting here, tool calls by outcome. */
import { Counter, Gauge, type Registry } from 'prom-client';

export interface AgentMetrics {
  runsFinished: Counter<'status' | 'code'>;
  runsActive: Gauge;
  runsQueued: Gauge;
  toolCalls: Counter<'outcome'>;
}

export function createAgentMetrics(registry: Registry): AgentMetrics {
  return {
    runsFinished: new Counter({
      name: 'modelgraph_agent_runs_total',
      help: 'Agent runs finished on this replica, by status and (for FAILED and CANCELLED) error code.',
      labelNames: ['status', 'code'],
      registers: [registry],
    }),
    runsActive: new Gauge({ name: 'modelgraph_agent_runs_active', help: 'Agent runs executing on this replica.', registers: [registry] }),
    runsQueued: new Gauge({
      name: 'modelgraph_agent_runs_queued',
      help: 'Agent runs waiting for a slot on this replica (agents.maxConcurrentRuns).',
      registers: [registry],
    }),
    toolCalls: new Counter({
      name: 'modelgraph_agent_tool_calls_total',
      help: 'Tool calls of agent runs, by outcome: OK, or the error code the model was shown.',
      labelNames: ['outcome'],
      registers: [registry],
    }),
  };
}
