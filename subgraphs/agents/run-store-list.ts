/** Keyset paging of a tenant's runs (`RunStore.list`), shared by both stores. */
import type { AgentRunRecord } from './records.ts';
import type { RunPage, RunSnapshot } from './run-store.ts';

/**
 * A run's place in its tenant's list. The list is newest first, and runs created in the same
 * millisecond by id descending, which is how Redis orders equal scores in reverse.
 */
export interface ListPosition {
  createdMs: number;
  runId: string;
}

export function positionOf(run: AgentRunRecord): ListPosition {
  const createdMs = Date.parse(run.createdAt);
  if (Number.isNaN(createdMs)) throw new Error(`Run ${run.id} has an invalid createdAt: ${run.createdAt}`);
  return { createdMs, runId: run.id };
}

export function listsAfter(entry: ListPosition, position: ListPosition): boolean {
  return entry.createdMs < position.createdMs || (entry.createdMs === position.createdMs && entry.runId < position.runId);
}

function encodePosition({ createdMs, runId }: ListPosition): string {
  return Buffer.from(JSON.stringify([createdMs, runId])).toString('base64url');
}

export function decodePosition(cursor: string): ListPosition {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString());
  } catch {
    value = undefined;
  }
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'number' || typeof value[1] !== 'string') {
    throw new Error(`Not a run list cursor: ${cursor}`);
  }
  return { createdMs: value[0], runId: value[1] };
}

function checkFirst(first: number) {
  if (!Number.isInteger(first) || first < 1) throw new RangeError(`A page holds at least one run (first: ${first})`);
}

/** Checks `list`'s arguments; returns the position to list after (undefined: from the newest). */
export function listFrom(first: number, after: string | undefined): ListPosition | undefined {
  checkFirst(first);
  return after === undefined ? undefined : decodePosition(after);
}

/** `list`'s page of `found` (in list order; more than `first` of them when there is a next page). */
export function pageOf<T extends { position: ListPosition }>(found: T[], first: number, snapshotOf: (entry: T) => RunSnapshot): RunPage {
  const page = found.slice(0, first);
  const last = page.at(-1);
  const runs = page.map((entry) => snapshotOf(entry));
  return found.length > first && last ? { runs, next: encodePosition(last.position) } : { runs };
}
