/**
 * `router.workers`: several processes serving one host's ports, one per core. A primary process
 * (node:cluster) serves nothing: it forks the workers, each of which runs the whole start, and
 * hands them the connections of the ports they listen on, round-robin. The cluster shares
 * `listen()` handles, port 0 included: the n-th listen of every worker gets the same port, so the
 * router and every subgraph of `modelgraph all` are on one port each, whichever worker answers.
 *
 * Workers are separate processes, so what they must agree on is shared through Redis (required)
 * or given by the primary: one identity-token secret, since a worker's router or agent run may
 * reach another worker's subgraph or router on a shared port.
 *
 * The primary forks one worker, and the others once it is ready: a first start's one-time work
 * (the platform tenant, the bootstrap key) is done once, and a start that cannot succeed fails
 * once. A worker that fails to start stops the whole cluster (exit 1); one that dies later is
 * replaced, sooner or later depending on how many died in the last minute.
 *
 * Stopping: the primary's first SIGTERM or SIGINT asks every worker to drain as a lone process
 * would (a worker that got the signal itself, as from Ctrl-C or systemd, drains once); it exits 0
 * when every worker has stopped cleanly. A second signal kills the workers and exits 1.
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { ConfigError, type Config } from '../config.ts';
import { randomIdentitySecret } from '../identity/identity-token.ts';
import type { Logger } from '../logger.ts';
import { redisConfigured, redisPlace } from '../redis/client.ts';

const RESTART_WINDOW_MS = 60_000;
const FIRST_RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30_000;

/** Primary → worker: drain and exit, as on the given signal. */
interface StopMessage {
  type: 'modelgraph:stop';
  signal: NodeJS.Signals;
}
/** Worker → primary: started, the router listening at `url`. */
interface ReadyMessage {
  type: 'modelgraph:ready';
  url: string;
}

const isReadyMessage = (message: unknown): message is ReadyMessage =>
  typeof message === 'object' && message !== null && (message as ReadyMessage).type === 'modelgraph:ready';
const isStopMessage = (message: unknown): message is StopMessage =>
  typeof message === 'object' && message !== null && (message as StopMessage).type === 'modelgraph:stop';

/** How many workers the config asks for (1: no cluster, this process serves). */
export function workerCount(config: Config): number {
  return config.router.workers === 'auto' ? availableParallelism() : config.router.workers;
}

/** Refuses workers that could not share state: rate limits, budgets, keys and usage live in Redis. */
export function checkWorkersShareState(config: Config, workers: number, log: Logger): void {
  if (!redisConfigured(config.redis)) {
    throw new ConfigError(
      `router.workers: ${workers} needs redis (url, sentinel or cluster; or REDIS_URL): workers are separate processes that share rate limits, budgets, API keys and usage through Redis`,
    );
  }
  log.info({ workers, redis: redisPlace(config.redis) }, `${workers} workers share rate limits, budgets, keys and usage through Redis`);
}

/**
 * What every worker gets beside the primary's environment: when the workers sign their own
 * identity tokens (`modelgraph all`) and no secret is configured, one random secret for all.
 */
export function workerEnvironment(config: Config, signsOwnTokens: boolean, env: NodeJS.ProcessEnv): Record<string, string> {
  const name = config.access.identitySecretEnv;
  return signsOwnTokens && !env[name] ? { [name]: randomIdentitySecret() } : {};
}

export const isWorker = (): boolean => cluster.isWorker;

/** The id of this worker (1, 2, … as forked), for its log lines. */
export const workerId = (): number | undefined => cluster.worker?.id;

/** In a worker: tells the primary it serves. */
export function announceReady(url: string): void {
  process.send?.({ type: 'modelgraph:ready', url } satisfies ReadyMessage);
}

/** In a worker: calls `stop` when the primary asks it to drain (sent only once it announced ready). */
export function onStopRequest(stop: (signal: NodeJS.Signals) => void): void {
  process.on('message', (message: unknown) => {
    if (isStopMessage(message)) stop(message.signal);
  });
}

export interface PrimaryOptions {
  workers: number;
  log: Logger;
  /** Variables every worker gets beside the primary's own environment. */
  env: Record<string, string>;
  graceMs: number;
}

/** Runs the primary until every worker has exited; answers the exit code. */
export function runPrimary(options: PrimaryOptions): Promise<number> {
  const pool = new WorkerPool(options);
  process.on('SIGTERM', pool.onSignal);
  process.on('SIGINT', pool.onSignal);
  pool.start();
  return pool.done;
}

class WorkerPool {
  readonly done: Promise<number>;
  readonly #options: PrimaryOptions;
  /** Live workers, and whether each has announced ready. */
  readonly #workers = new Map<Worker, boolean>();
  readonly #restartTimers = new Set<NodeJS.Timeout>();
  #restarts: number[] = [];
  #announced = false;
  #stopSignal: NodeJS.Signals | undefined;
  #stopping = false;
  #signals = 0;
  #exitCode = 0;
  #finish!: (code: number) => void;

  constructor(options: PrimaryOptions) {
    this.#options = options;
    this.done = new Promise((resolve) => (this.#finish = resolve));
  }

  start(): void {
    this.#fork();
  }

  readonly onSignal = (signal: NodeJS.Signals): void => {
    const { log, graceMs } = this.#options;
    if (++this.#signals > 1) {
      log.warn({ signal }, 'stopping now, without waiting for open requests and streams');
      this.#exitCode = 1;
      for (const worker of this.#workers.keys()) worker.process.kill('SIGKILL');
      return;
    }
    log.info({ signal, graceMs, workers: this.#workers.size }, 'stopping');
    this.#stop(signal);
  };

  #fork(): void {
    const worker = cluster.fork(this.#options.env);
    this.#workers.set(worker, false);
    worker.on('message', (message: unknown) => {
      if (isReadyMessage(message)) this.#onReady(worker, message.url);
    });
    worker.on('exit', (code, signal) => this.#onExit(worker, code, signal));
  }

  #onReady(worker: Worker, url: string): void {
    if (!this.#workers.has(worker)) return;
    this.#workers.set(worker, true);
    // A stop that came during its start waited for this: before it, the worker was not listening.
    if (this.#stopping) this.#ask(worker);
    if (this.#stopping || this.#announced) return;
    const { workers, log } = this.#options;
    if (this.#workers.size === 1) for (let more = 1; more < workers; more += 1) this.#fork();
    if ([...this.#workers.values()].filter(Boolean).length === workers) {
      this.#announced = true;
      log.info({ url, workers }, `modelgraph is ready at ${url}`);
    }
  }

  #onExit(worker: Worker, code: number | null, signal: string | null): void {
    const ready = this.#workers.get(worker);
    this.#workers.delete(worker);
    const exited = { worker: worker.id, workerPid: worker.process.pid, code, signal };
    if (this.#stopping) {
      if (code !== 0) this.#exitCode = 1;
      this.#finishIfDone();
    } else if (!ready) {
      this.#options.log.error(exited, 'a worker failed to start; stopping the others');
      this.#exitCode = 1;
      this.#stop('SIGTERM');
    } else {
      this.#restart(exited);
    }
  }

  /** Replaces a worker that died, later the more have died in the last minute (a crash loop must not spin). */
  #restart(exited: Record<string, unknown>): void {
    const now = Date.now();
    this.#restarts = this.#restarts.filter((at) => now - at < RESTART_WINDOW_MS);
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** this.#restarts.length);
    this.#restarts.push(now);
    this.#options.log.error({ ...exited, restartInMs: delayMs }, 'a worker exited unexpectedly; starting another');
    const timer = setTimeout(() => {
      this.#restartTimers.delete(timer);
      this.#fork();
    }, delayMs);
    this.#restartTimers.add(timer);
  }

  #stop(signal: NodeJS.Signals): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#stopSignal = signal;
    for (const timer of this.#restartTimers) clearTimeout(timer);
    this.#restartTimers.clear();
    for (const [worker, ready] of this.#workers) if (ready) this.#ask(worker);
    this.#finishIfDone();
  }

  #ask(worker: Worker): void {
    if (worker.isConnected()) worker.send({ type: 'modelgraph:stop', signal: this.#stopSignal! } satisfies StopMessage);
  }

  #finishIfDone(): void {
    if (this.#workers.size > 0) return;
    if (this.#exitCode === 0) this.#options.log.info('stopped');
    this.#finish(this.#exitCode);
  }
}
