/**
 * Runs agent runs on this replica: at most `agents.maxConcurrentRuns` at once (up to
 * `agents.maxQueuedRuns` more wait, QUEUED), each under a lease other replicas can see, each
 * stopped by its wall time, by its owner's credential expiring, by a cancellation requested on any
 * replica, or by its owner's key being revoked. A run that cannot renew its lease (Redis is gone)
 * stops before a reader could take it for abandoned. On shutdown, runs get until the deadline to
 * finish, then end FAILED with SHUTTING_DOWN.
 */
import { EVERY_KEY, type AccessStore, type ApiKeyRecord } from '../../platform/access/access-store.ts';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import type { Principal } from '../../platform/identity/principal.ts';
import type { OperationTool } from './operation-tools.ts';
import type { AgentRunRecord } from './records.ts';
import { RunLoop, RunStop, type RunLoopDeps } from './run-loop.ts';

/** A lease lives this long unless renewed; renewed every third of it. */
export const LEASE_MS = 15_000;
/** A run whose lease was last renewed this long ago stops: soon a reader may take it for abandoned. */
const LEASE_LOST_MS = LEASE_MS / 2;

interface Active {
  run: AgentRunRecord;
  controller: AbortController;
  done: Promise<void>;
  renewedAt: number;
}

interface Waiting {
  run: AgentRunRecord;
  principal: Principal;
  tools: OperationTool[];
  renewedAt: number;
}

export class Runner {
  readonly #deps: RunLoopDeps;
  readonly #access: AccessStore;
  readonly #active = new Map<string, Active>();
  readonly #waiting: Waiting[] = [];
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
    const { maxConcurrentRuns, maxQueuedRuns } = this.#deps.settings;
    if (this.#active.size >= maxConcurrentRuns && this.#waiting.length >= maxQueuedRuns) {
      throw codedError(
        ErrorCode.SERVICE_UNAVAILABLE,
        `this replica is running ${maxConcurrentRuns} runs with ${maxQueuedRuns} waiting; start the run again later`,
      );
    }
    // Leased before it exists, so no reader can take the new run for an abandoned one.
    await this.#deps.runs.holdLease(run.id, LEASE_MS);
    await this.#deps.runs.create(run);
    this.#waiting.push({ run, principal, tools, renewedAt: Date.now() });
    this.#startWaiting();
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
    const shutdown = new RunStop('FAILED', {
      code: ErrorCode.SHUTTING_DOWN,
      message: 'the replica running it shut down; start the run again',
    });
    // Queued runs never started: they end at once, so nothing waits on them.
    for (const { run, principal, tools } of this.#waiting.splice(0)) this.#launch(run, principal, tools, shutdown);
    const all = () => Promise.all([...this.#active.values()].map((active) => active.done));
    let timer: NodeJS.Timeout | undefined;
    const expired = await Promise.race([
      all().then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), Math.max(0, deadline - Date.now())))),
    ]);
    clearTimeout(timer);
    if (expired) for (const active of this.#active.values()) active.controller.abort(shutdown);
    await all();
    // Cancellations and revocations keep reaching the runs until the last one ended.
    for (const feed of this.#stopFeeds) feed();
    clearInterval(this.#renew);
  }

  #startWaiting(): void {
    while (this.#waiting.length > 0 && this.#active.size < this.#deps.settings.maxConcurrentRuns) {
      const { run, principal, tools } = this.#waiting.shift()!;
      this.#launch(run, principal, tools);
    }
    this.#count();
  }

  #launch(run: AgentRunRecord, principal: Principal, tools: OperationTool[], stopAtOnce?: RunStop): void {
    const controller = new AbortController();
    if (stopAtOnce) controller.abort(stopAtOnce);
    const wallTimeMs = run.agent.maxWallTimeSeconds * 1000;
    // The run acts for its owner only while the owner's credential holds (a JWT's expiry).
    const credentialMs = principal.expiresAt === undefined ? Infinity : principal.expiresAt - Date.now();
    const timer = setTimeout(
      () =>
        controller.abort(
          credentialMs < wallTimeMs
            ? new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: 'the owner’s credential expired' })
            : new RunStop('FAILED', {
                code: ErrorCode.TIME_LIMIT_EXCEEDED,
                message: `the run took longer than its ${run.agent.maxWallTimeSeconds} s`,
              }),
        ),
      Math.max(0, Math.min(wallTimeMs, credentialMs)),
    );
    const loop = new RunLoop(run, principal, tools, controller.signal, this.#deps);
    const done = loop
      .execute()
      .catch((error: unknown) => this.#deps.log.error({ err: error, runId: run.id }, 'agent run ended without being recorded'))
      .finally(() => {
        clearTimeout(timer);
        this.#active.delete(run.id);
        void this.#deps.runs.releaseLease(run.id).catch(() => undefined);
        if (!this.#stopping) this.#startWaiting();
        this.#count();
      });
    this.#active.set(run.id, { run, controller, done, renewedAt: Date.now() });
  }

  /** Ends a run of this replica with `stop`: a running one is aborted, a waiting one ends at once. */
  #stopRun(runId: string, stop: RunStop): void {
    const active = this.#active.get(runId);
    if (active) {
      active.controller.abort(stop);
      return;
    }
    const at = this.#waiting.findIndex((entry) => entry.run.id === runId);
    if (at === -1) return;
    const [{ run, principal, tools }] = this.#waiting.splice(at, 1) as [Waiting];
    this.#launch(run, principal, tools, stop);
    this.#count();
  }

  #holds(runId: string): boolean {
    return this.#active.has(runId) || this.#waiting.some((entry) => entry.run.id === runId);
  }

  /** A cancellation requested anywhere: stops the run if it is here (running or waiting). */
  async #onCancelRequested(runId: string): Promise<void> {
    if (!this.#holds(runId)) return;
    const reason = (await this.#deps.runs.cancelRequested(runId).catch(() => undefined)) ?? 'cancelled';
    // Looked up again after the read: the run may have been launched meanwhile.
    this.#stopRun(runId, new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: reason }));
  }

  /** A key changed: its runs here end when it no longer authenticates. */
  async #onKeyChanged(keyId: string): Promise<void> {
    const runs = [...this.#active.values()].map((active) => active.run).concat(this.#waiting.map((entry) => entry.run));
    const affected = new Set(
      runs.filter((run) => run.keyId !== null && (keyId === EVERY_KEY || run.keyId === keyId)).map((run) => run.keyId!),
    );
    for (const keyOf of affected) {
      let key: ApiKeyRecord | undefined;
      try {
        key = await this.#access.key(keyOf);
      } catch {
        // An unreadable store is no proof of revocation; the router refuses the run's next call if it is.
        continue;
      }
      const expired = key?.expiresAt ? Date.parse(key.expiresAt) <= Date.now() : false;
      // A key that may no longer run agents stops its runs too (other narrowing applies call by call).
      if (key && !key.revokedAt && !expired && key.scopes.includes('agents:run')) continue;
      const why = !key ? 'withdrawn' : key.revokedAt ? 'revoked' : expired ? 'expired' : 'denied the agents:run scope';
      const stop = new RunStop('CANCELLED', { code: ErrorCode.CANCELLED, message: `the owner's API key was ${why}` });
      // Read again after the await: runs of this key may have started or ended meanwhile.
      const current = [...this.#active.values()].map((active) => active.run).concat(this.#waiting.map((entry) => entry.run));
      for (const run of current.filter((candidate) => candidate.keyId === keyOf)) this.#stopRun(run.id, stop);
    }
  }

  #renewLeases(): void {
    const now = Date.now();
    const held: { run: AgentRunRecord; renewedAt: number; renewed: (at: number) => void }[] = [
      ...[...this.#active.values()].map((active) => ({
        run: active.run,
        renewedAt: active.renewedAt,
        renewed: (at: number) => (active.renewedAt = at),
      })),
      ...this.#waiting.map((entry) => ({ run: entry.run, renewedAt: entry.renewedAt, renewed: (at: number) => (entry.renewedAt = at) })),
    ];
    for (const { run, renewedAt, renewed } of held) {
      if (now - renewedAt > LEASE_LOST_MS) {
        this.#stopRun(
          run.id,
          new RunStop('FAILED', {
            code: ErrorCode.SERVICE_UNAVAILABLE,
            message: 'the run could not keep its lease: the run store is unreachable',
          }),
        );
        continue;
      }
      this.#deps.runs.holdLease(run.id, LEASE_MS).then(
        () => renewed(now),
        (error: unknown) => this.#deps.log.warn({ err: error, runId: run.id }, 'could not renew an agent run lease'),
      );
    }
  }

  #count(): void {
    this.#deps.metrics.runsActive.set(this.#active.size);
    this.#deps.metrics.runsQueued.set(this.#waiting.length);
  }
}
