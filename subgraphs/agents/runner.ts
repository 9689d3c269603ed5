/**
 * Runs agent runs on this replica: at most `agents.maxConcurrentRuns` at once (the rest wait,
 * QUEUED), each under a lease other replicas can see, each stopped by its wall time, by a
 * cancellation requested on any replica, or by its owner's key being revoked or expiring. On
 * shutdown, runs get until the deadline to finish, then end FAILED with SHUTTING_DOWN.
 */
import { EVERY_KEY, type AccessStore } from '../../platform/access-store.ts';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Logger } from '../../platform/logger.ts';
import type { Principal } from '../../platform/principal.ts';
import type { OperationTool } from './operation-tools.ts';
import type { AgentRunRecord } from './records.ts';
import { RunLoop, RunStop, type RunLoopDeps } from './run-loop.ts';

/** A lease lives this long unless renewed; renewed at a third of it. */
export const LEASE_MS = 15_000;

interface Active {
  run: AgentRunRecord;
  controller: AbortController;
  done: Promise<void>;
}

interface Waiting {
  run: AgentRunRecord;
  principal: Principal;
  tools: OperationTool[];
}

export class Runner {
  readonly #deps: RunLoopDeps;
  readonly #access: AccessStore;
  readonly #active = new Map<string, Active>();
  readonly #waiting: Waiting[] = [];
  readonly #cancelled = new Map<string, RunStop>();
  readonly #renew: NodeJS.Timeout;
  readonly #stopFeeds: (() => void)[];
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(deps: RunLoopDeps, access: AccessStore) {
    this.#deps = deps;
    this.#access = access;
    this.#renew = setInterval(() => this.#renewLeases(), LEASE_MS / 3);
    this.#renew.unref();
    this.#stopFeeds = [
      deps.runs.onCancelRequested((runId) => void this.#onCancelRequested(runId)),
      access.onKeyChanged((keyId) => void this.#onKeyChanged(keyId)),
    ];
  }

  /** Resolves once cancellations and key changes from other replicas reach this one. */
  async listening(): Promise<void> {
    await Promise.all([this.#deps.runs.listening(), this.#access.listening()]);
  }

  /** Stores a new, QUEUED run and takes it: it starts now or when a slot frees. */
  async submit(run: AgentRunRecord, principal: Principal, tools: OperationTool[]): Promise<void> {
    if (this.#stopping) throw codedError(ErrorCode.SHUTTING_DOWN, 'this replica is shutting down; start the run again');
    // Leased before it exists, so no reader can take the new run for an abandoned one.
    await this.#deps.runs.holdLease(run.id, LEASE_MS);
    await this.#deps.runs.create(run);
    this.#waiting.push({ run, principal, tools });
    this.#startWaiting();
    this.#count();
  }

  get activeCount(): number {
    return this.#active.size;
  }

  /** Stops taking runs; waits for active ones until `deadline`, then ends them with SHUTTING_DOWN. */
  stop(deadline: number): Promise<void> {
    this.#stopped ??= this.#stop(deadline);
    return this.#stopped;
  }

  async #stop(deadline: number): Promise<void> {
    this.#stopping = true;
    for (const feed of this.#stopFeeds) feed();
    const shutdown = new RunStop('FAILED', { code: ErrorCode.SHUTTING_DOWN, message: 'the replica running it shut down; start the run again' });
    // Queued runs never started: they end at once, so nothing waits on them.
    for (const { run, principal, tools } of this.#waiting.splice(0)) this.#launch(run, principal, tools, shutdown);
    const all = () => Promise.all([...this.#active.values()].map((active) => active.done));
    const remaining = deadline - Date.now();
    let timer: NodeJS.Timeout | undefined;
    const expired = await Promise.race([all().then(() => false), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), Math.max(0, remaining))))]);
    clearTimeout(timer);
    if (expired) for (const active of this.#active.values()) active.controller.abort(shutdown);
    await all();
    clearInterval(this.#renew);
  }

  #startWaiting(): void {
    while (this.#waiting.length > 0 && this.#active.size < this.#deps.settings.maxConcurrentRuns) {
      const { run, principal, tools } = this.#waiting.shift()!;
      this.#launch(run, principal, tools, this.#cancelled.get(run.id));
    }
  }

  #launch(run: AgentRunRecord, principal: Principal, tools: OperationTool[], stopAtOnce?: RunStop): void {
    const controller = new AbortController();
    if (stopAtOnce) controller.abort(stopAtOnce);
    const wallTimeMs = run.agent.maxWallTimeSeconds * 1000;
    const timer = setTimeout(
      () => controller.abort(new RunStop('FAILED', { code: ErrorCode.TIME_LIMIT_EXCEEDED, message: `the run took longer than its ${run.agent.maxWallTimeSeconds} s` })),
      wallTimeMs,
    );
    const loop = new RunLoop(run, principal, tools, controller.signal, this.#deps);
    const done = loop
      .execute()
      .catch((error: unknown) => this.#deps.log.error({ err: error, runId: run.id }, 'agent run ended without being recorded'))
      .finally(() => {
        clearTimeout(timer);
        this.#active.delete(run.id);
        this.#cancelled.delete(run.id);
        void this.#deps.runs.releaseLease(run.id).catch(() => undefined);
        if (!this.#stopping) this.#startWaiting();
        this.#count();
      });
    this.#active.set(run.id, { run, controller, done });
  }

  #count(): void {
    this.#deps.metrics.runsActive.set(this.#active.size);
    this.#deps.metrics.runsQueued.set(this.#waiting.length);
  }

  /** A cancellation requested anywhere: stops the run if it is here (running or waiting). */
  async #onCancelRequested(runId: string): Promise<void> {
    const active = this.#active.get(runId);
    const waiting = this.#waiting.some((entry) => entry.run.id === runId);
    if (!active && !waiting) return;
    const reason = (await this.#deps.runs.cancelRequested(runId).catch(() => undefined)) ?? 'cancelled';
    const stop = new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: reason });
    if (active) active.controller.abort(stop);
    else this.#cancelled.set(runId, stop);
  }

  /** A key changed: its runs here end when it no longer authenticates. */
  async #onKeyChanged(keyId: string): Promise<void> {
    const runs = [...this.#active.values()].map((active) => active.run).concat(this.#waiting.map((entry) => entry.run));
    const affected = runs.filter((run) => run.keyId !== null && (keyId === EVERY_KEY || run.keyId === keyId));
    for (const keyOf of new Set(affected.map((run) => run.keyId!))) {
      let key;
      try {
        key = await this.#access.key(keyOf);
      } catch {
        // An unreadable store is no proof of revocation; the router refuses the run's next call if it is.
        continue;
      }
      const expired = key?.expiresAt ? Date.parse(key.expiresAt) <= Date.now() : false;
      if (key && !key.revokedAt && !expired) continue;
      const stop = new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: `the owner's API key was ${key?.revokedAt ? 'revoked' : 'withdrawn'}` });
      for (const run of affected.filter((candidate) => candidate.keyId === keyOf)) {
        const active = this.#active.get(run.id);
        if (active) active.controller.abort(stop);
        else this.#cancelled.set(run.id, stop);
      }
    }
  }

  #renewLeases(): void {
    const ids = [...this.#active.keys(), ...this.#waiting.map((entry) => entry.run.id)];
    for (const id of ids) {
      this.#deps.runs.holdLease(id, LEASE_MS).catch((error: unknown) => this.#deps.log.warn({ err: error, runId: id }, 'could not renew an agent run lease'));
    }
  }
}
