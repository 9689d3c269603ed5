/**
 * What the agents subgraph stores: agent definitions, and runs as a snapshot plus an ordered
 * stream of events. These are plain JSON shapes; the stores keep them as they are.
 */
import type { ErrorCode } from '../../platform/errors.ts';
import type { Spend } from '../../platform/metering/spend.ts';

/** A tool: a named GraphQL operation on the supergraph. */
export interface AgentToolDefinition {
  /** What the model calls it: 1–64 of letters, digits, `_` and `-`. */
  name: string;
  /** Shown to the model; defaults to the operation's own description. */
  description: string | null;
  /** A GraphQL document with exactly one query or mutation. */
  document: string;
}

export interface AgentDefinition {
  /** The owning tenant; null for an agent from the config that every tenant may run. */
  tenantId: string | null;
  name: string;
  /** A model id, alias or `id@version` pin. */
  model: string;
  /** The system message of every run. */
  instructions: string;
  tools: AgentToolDefinition[];
  /** Most model calls per run. */
  maxSteps: number;
  /** Most tokens (prompt + completion, all steps) per run; null: no run limit (keys' and tenants' still apply). */
  maxTokens: number | null;
  /** Most USD per run; null: no run limit. */
  maxUsd: number | null;
  maxWallTimeSeconds: number;
  /** Defined in the server config (read-only through the API). */
  configured: boolean;
  createdAt: string;
  updatedAt: string;
}

export type AgentRunStatus = 'QUEUED' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'CANCELLED';
export const FINAL_STATUSES: readonly AgentRunStatus[] = ['SUCCEEDED', 'FAILED', 'CANCELLED'];
export const isFinal = (status: AgentRunStatus) => FINAL_STATUSES.includes(status);

export interface RunError {
  code: ErrorCode;
  message: string;
}

export interface ToolCallRecord {
  /** The model's id for the call. */
  id: string;
  tool: string;
  /** As the model produced them (JSON text that may not parse). */
  arguments: string;
  /** The operation's `{ data, errors }` as JSON text, when it ran. */
  result: string | null;
  /** Why the call failed, as the model was told. */
  error: RunError | null;
}

export interface StepRecord {
  /** 1-based. */
  number: number;
  /** What the model said in this step. */
  content: string;
  toolCalls: ToolCallRecord[];
  usage: Spend;
  startedAt: string;
  finishedAt: string | null;
}

export interface AgentRunRecord {
  id: string;
  tenantId: string;
  /** Who started it, as `holderOf` names callers (key id, `jwt:<subject>`, `anonymous`). */
  owner: string;
  /** The owner's API key, when a key started it: revoking the key cancels the run. */
  keyId: string | null;
  /** The agent as it was when the run started. */
  agent: AgentDefinition;
  input: string;
  tags: string[];
  status: AgentRunStatus;
  output: string | null;
  error: RunError | null;
  steps: StepRecord[];
  usage: Spend;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** One event of a run. Every run's stream ends with exactly one RUN_FINISHED. */
export type AgentRunEventRecord =
  | { type: 'STEP_STARTED'; at: string; step: number }
  | { type: 'TEXT_DELTA'; at: string; step: number; content: string }
  | { type: 'TOOL_CALLED'; at: string; step: number; callId: string; tool: string; arguments: string }
  | { type: 'TOOL_RESULTED'; at: string; step: number; callId: string; tool: string; result: string | null; error: RunError | null }
  | { type: 'RUN_FINISHED'; at: string; status: AgentRunStatus; output: string | null; error: RunError | null; usage: Spend };

/** An event with its position in the run's stream; `after: cursor` resumes behind it. */
export interface StoredRunEvent {
  cursor: string;
  event: AgentRunEventRecord;
}
