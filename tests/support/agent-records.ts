/**
 * Records as the agents subgraph stores them, for the store tests and for tests that plant a
 * record in Redis: acme's `researcher` agent, and a RUNNING run of it, made at a fixed time.
 */
import { randomUUID } from 'node:crypto';
import { NO_SPEND } from '../../platform/metering/spend.ts';
import type { AgentDefinition, AgentRunRecord } from '../../subgraphs/agents/records.ts';

/** When these records were made, unless a test says otherwise. */
export const RECORDED_AT = '2026-03-01T12:00:00.000Z';

/** acme's `researcher` on gpt-test: no tools, 4 steps, no token or USD limit. */
export function agentDefinition(overrides: Partial<AgentDefinition> = {}): AgentDefinition {
  return {
    tenantId: 'acme',
    name: 'researcher',
    model: 'gpt-test',
    instructions: 'Answer briefly.',
    tools: [],
    maxSteps: 4,
    maxTokens: null,
    maxUsd: null,
    maxWallTimeSeconds: 60,
    configured: false,
    createdAt: RECORDED_AT,
    updatedAt: RECORDED_AT,
    ...overrides,
  };
}

/** A run of `agentDefinition()` by key k1 that has started and has no steps or usage yet. */
export function runningRun(overrides: Partial<AgentRunRecord> = {}): AgentRunRecord {
  return {
    id: randomUUID(),
    tenantId: 'acme',
    owner: 'k1',
    keyId: 'k1',
    agent: agentDefinition(),
    input: 'What is new?',
    tags: [],
    status: 'RUNNING',
    output: null,
    error: null,
    steps: [],
    usage: NO_SPEND,
    createdAt: RECORDED_AT,
    startedAt: RECORDED_AT,
    finishedAt: null,
    ...overrides,
  };
}
