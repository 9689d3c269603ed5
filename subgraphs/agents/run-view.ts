/** What the GraphQL types of runs and events resolve from. */
import type { AgentRunEventRecord, StoredRunEvent } from './records.ts';
import type { RunSnapshot } from './run-store.ts';

/** A run's snapshot with the cursor of the last event it reflects. */
export type RunView = RunSnapshot;

/** An event of a run at its cursor, flat, so the event types' fields resolve by default. */
export type EventView = AgentRunEventRecord & { runId: string; cursor: string };

const TYPENAMES = {
  STEP_STARTED: 'AgentStepStarted',
  TEXT_DELTA: 'AgentTextDelta',
  TOOL_CALLED: 'AgentToolCalled',
  TOOL_RESULTED: 'AgentToolResulted',
  RUN_FINISHED: 'AgentRunFinished',
} as const satisfies Record<AgentRunEventRecord['type'], string>;

export const eventTypename = (view: EventView) => TYPENAMES[view.type];

export const eventView = (runId: string, { cursor, event }: StoredRunEvent): EventView => ({ ...event, runId, cursor });
