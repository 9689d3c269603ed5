/**
 * Admission control: a replica serves at most `maxOperations` queries and mutations and
 * `maxStreams` subscriptions at once. One more waits in a short queue (`maxQueued`, at most
 * `queueTimeoutMs`) for a slot, and past that is refused at once with OVERLOADED (HTTP 503,
 * `Retry-After`), so that under more load than it can serve, the operations it admits keep their
 * latency and the rest go to another replica instead of slowing everyone down.
 *
 * The queue absorbs a burst, not an overload: once it has not been empty for `queueTimeoutMs`
 * (a standing queue), or a caller waited out its timeout in the last `OVERLOAD_MEMORY_MS` (more
 * keeps arriving than slots free), a newcomer waits only `OVERLOADED_WAIT_MS` — as CoDel and
 * Facebook's adaptive queueing do — so that an admitted operation does not carry a queue's worth
 * of waiting into its latency and a refused one is told at once, not after the timeout. It is an envelop
 * hook, first of the router's policies: GraphQL over HTTP, SSE, graphql-ws and the REST doors
 * all pass through it, and a refusal costs next to nothing.
 */
import type { GatewayPlugin } from '@graphql-hive/gateway-runtime';
import type { ExecutionArgs } from 'graphql';
import { ErrorCode, codedError } from '../../platform/errors.ts';

export interface AdmissionSettings {
  maxOperations: number;
  maxStreams: number;
  /** Operations (or subscriptions) that may wait for a slot; more are refused at once. */
  maxQueued: number;
  queueTimeoutMs: number;
}

export type Kind = 'operations' | 'streams';

/** How long a refused caller is told to wait. */
const RETRY_AFTER_MS = 1_000;

/** How long a newcomer may wait for a slot during an overload (see above). */
export const OVERLOADED_WAIT_MS = 5;

/** How long after a caller waited out the queue the replica counts itself overloaded. */
export const OVERLOAD_MEMORY_MS = 1_000;

/**
 * One kind's slots and the callers waiting for one, first come first served. A slot held longer
 * than `maxHoldMs` by an operation that never said it ended (a hook that threw, skipping the
 * done-hooks) is taken back when the slots run out, so no such loss is permanent.
 */
class Slots {
  /** When each held slot was taken. */
  readonly #held = new Map<symbol, number>();
  /** Each waiter is handed its slot's release (taken for it at once), or undefined when it timed out. */
  readonly #waiting: ((release: (() => void) | undefined) => void)[] = [];
  /** When the queue was last seen empty: long ago means a standing queue. */
  #emptyAt = Date.now();
  /** When a caller last waited out its time in the queue. */
  #timedOutAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly max: number,
    private readonly settings: AdmissionSettings,
    private readonly maxHoldMs: number,
    private readonly onReclaimed: () => void,
  ) {}

  get used(): number {
    return this.#held.size;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** A release function once admitted (at once when a slot is free), or undefined when refused. */
  enter(): (() => void) | undefined | Promise<(() => void) | undefined> {
    if (this.#held.size >= this.max) this.#reclaim();
    if (this.#held.size < this.max) return this.#take();
    if (this.#waiting.length >= this.settings.maxQueued) return undefined;
    const now = Date.now();
    if (this.#waiting.length === 0) this.#emptyAt = now;
    const { queueTimeoutMs } = this.settings;
    const overloaded = now - this.#emptyAt > queueTimeoutMs || now - this.#timedOutAt < OVERLOAD_MEMORY_MS;
    return this.#wait(overloaded ? Math.min(OVERLOADED_WAIT_MS, queueTimeoutMs) : queueTimeoutMs);
  }

  #wait(timeoutMs: number): Promise<(() => void) | undefined> {
    return new Promise((resolve) => {
      const waiter = (release: (() => void) | undefined) => {
        clearTimeout(timer);
        resolve(release);
      };
      const timer = setTimeout(() => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        this.#timedOutAt = Date.now();
        this.#seenEmpty();
        resolve(undefined);
      }, timeoutMs);
      this.#waiting.push(waiter);
    });
  }

  /** A freed slot goes to the longest waiter, taken now: no caller can slip in before it. */
  #handOver(): void {
    const next = this.#waiting.shift();
    if (next) next(this.#take());
    this.#seenEmpty();
  }

  #take(): () => void {
    const slot = Symbol('slot');
    this.#held.set(slot, Date.now());
    return () => {
      // Once: a second release, or one of a slot taken back, frees nothing.
      if (!this.#held.delete(slot)) return;
      this.#handOver();
    };
  }

  #seenEmpty(): void {
    if (this.#waiting.length === 0) this.#emptyAt = Date.now();
  }

  #reclaim(): void {
    const before = Date.now() - this.maxHoldMs;
    for (const [slot, since] of this.#held) {
      if (since > before) continue;
      this.#held.delete(slot);
      this.onReclaimed();
      this.#handOver();
    }
  }
}

/** Longer than any whole operation runs (routing's deadline is a minute by default); streams may run for hours. */
const MAX_OPERATION_HOLD_MS = 10 * 60_000;

export class Admission {
  readonly #slots: Record<Kind, Slots>;

  constructor(settings: AdmissionSettings, onReclaimed: (kind: Kind) => void = () => undefined) {
    this.#slots = {
      operations: new Slots(settings.maxOperations, settings, MAX_OPERATION_HOLD_MS, () => onReclaimed('operations')),
      streams: new Slots(settings.maxStreams, settings, Number.POSITIVE_INFINITY, () => onReclaimed('streams')),
    };
  }

  /** Operations or streams running, and waiting. */
  load(kind: Kind): { used: number; queued: number } {
    return { used: this.#slots[kind].used, queued: this.#slots[kind].queued };
  }

  enter(kind: Kind): (() => void) | undefined | Promise<(() => void) | undefined> {
    return this.#slots[kind].enter();
  }

  refusal(kind: Kind) {
    const { max } = this.#slots[kind];
    return codedError(
      ErrorCode.OVERLOADED,
      `this replica is serving its maximum of ${max} concurrent ${kind === 'streams' ? 'subscriptions' : 'operations'}; retry shortly`,
      {
        limit: kind === 'streams' ? 'maxStreams' : 'maxOperations',
        max,
        retryAfterMs: RETRY_AFTER_MS,
        http: { status: 503, headers: { 'retry-after': String(RETRY_AFTER_MS / 1000) } },
      },
    );
  }
}

/** What holding an operation's slot gives: how to free it, or why it was refused. */
export type Held = { release: () => void } | { refusal: Error };

/**
 * Hooks that hold something for each operation while it runs (a slot, a lease): `gate`, placed
 * early among the router's plugins, takes it before later policies run (`take` sees the operation
 * kind and its context) and frees it when the result is ready, a later policy stopped the
 * operation, or a stream ends; `guard`, placed last (after any plugin that replaces how the
 * operation executes), frees it if execution throws, which skips envelop's done-hooks.
 */
export function heldWhileRunning(take: (kind: Kind, args: ExecutionArgs) => Held | Promise<Held> | undefined): {
  gate: GatewayPlugin;
  guard: GatewayPlugin;
} {
  /** Each running operation's release, by its context (one per operation). */
  const releases = new WeakMap<object, () => void>();
  /** Synchronously when `take` answers at once (the common case: a free slot, no limit). */
  const then = <T>(held: Held | Promise<Held> | undefined, use: (held: Held | undefined) => T): T | Promise<T> =>
    held instanceof Promise ? held.then(use) : use(held);
  const gate: GatewayPlugin = {
    onExecute({ args, setResultAndStopExecution }) {
      return then(take('operations', args), (held) => {
        // Nothing held: nothing to free, and the guard wraps nothing.
        if (!held) return;
        if ('refusal' in held) {
          setResultAndStopExecution({ errors: [held.refusal as never] });
          return;
        }
        releases.set(args.contextValue as object, held.release);
        // Reached when the result is ready, also when a later policy stopped the operation.
        return { onExecuteDone: held.release };
      });
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      return then(take('streams', args), (held) => {
        if (!held) return;
        if ('refusal' in held) {
          setResultAndStopExecution({ errors: [held.refusal as never] });
          return;
        }
        const { release } = held;
        releases.set(args.contextValue as object, release);
        return {
          onSubscribeResult({ result }) {
            // A refusal before the stream opened frees it now; an open stream, when it ends.
            if (!(Symbol.asyncIterator in (result as object))) {
              release();
              return;
            }
            return { onEnd: release };
          },
          onSubscribeError: release,
        };
      });
    },
  };
  const guard: GatewayPlugin = {
    onExecute({ args, executeFn, setExecuteFn }) {
      const release = releases.get(args.contextValue as object);
      if (!release) return;
      setExecuteFn(async (execution) => {
        try {
          return await executeFn(execution);
        } finally {
          release();
        }
      });
    },
    onSubscribe({ args, subscribeFn, setSubscribeFn }) {
      const release = releases.get(args.contextValue as object);
      if (!release) return;
      setSubscribeFn(async (subscription) => {
        try {
          return await subscribeFn(subscription);
        } catch (error) {
          release();
          throw error;
        }
      });
    },
  };
  return { gate, guard };
}

/** Admission as hooks (see `heldWhileRunning`); `onRefused` counts the refusals. */
export function useAdmission(admission: Admission, onRefused: (kind: Kind) => void = () => undefined) {
  const held = (kind: Kind, release: (() => void) | undefined): Held => {
    if (release) return { release };
    onRefused(kind);
    return { refusal: admission.refusal(kind) };
  };
  return heldWhileRunning((kind) => {
    const entered = admission.enter(kind);
    return entered instanceof Promise ? entered.then((release) => held(kind, release)) : held(kind, entered);
  });
}
