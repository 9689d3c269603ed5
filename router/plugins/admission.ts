/**
 * Admission control: a replica serves at most `maxOperations` queries and mutations and
 * `maxStreams` subscriptions at once. One more waits in a short queue (`maxQueued`, at most
 * `queueTimeoutMs`) for a slot, and past that is refused at once with OVERLOADED (HTTP 503,
 * `Retry-After`), so that under more load than it can serve, the operations it admits keep their
 * latency and the rest go to another replica instead of slowing everyone down. It is an envelop
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

/** One kind's slots and the callers waiting for one, first come first served. */
class Slots {
  #used = 0;
  readonly #waiting: ((admitted: boolean) => void)[] = [];

  constructor(
    readonly max: number,
    private readonly settings: AdmissionSettings,
  ) {}

  get used(): number {
    return this.#used;
  }

  get queued(): number {
    return this.#waiting.length;
  }

  /** A release function once admitted, or undefined when refused. */
  async enter(): Promise<(() => void) | undefined> {
    if (this.#used < this.max) {
      this.#used += 1;
      return this.#releaser();
    }
    if (this.#waiting.length >= this.settings.maxQueued) return undefined;
    const admitted = await new Promise<boolean>((resolve) => {
      const waiter = (value: boolean) => {
        clearTimeout(timer);
        resolve(value);
      };
      const timer = setTimeout(() => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        resolve(false);
      }, this.settings.queueTimeoutMs);
      this.#waiting.push(waiter);
    });
    return admitted ? this.#releaser() : undefined;
  }

  /** Releases once; a freed slot goes straight to the first caller waiting. */
  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next(true);
      else this.#used -= 1;
    };
  }
}

export class Admission {
  readonly #slots: Record<Kind, Slots>;

  constructor(settings: AdmissionSettings) {
    this.#slots = { operations: new Slots(settings.maxOperations, settings), streams: new Slots(settings.maxStreams, settings) };
  }

  /** Operations or streams running, and waiting. */
  load(kind: Kind): { used: number; queued: number } {
    return { used: this.#slots[kind].used, queued: this.#slots[kind].queued };
  }

  enter(kind: Kind): Promise<(() => void) | undefined> {
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
export function heldWhileRunning(take: (kind: Kind, args: ExecutionArgs) => Promise<Held>): { gate: GatewayPlugin; guard: GatewayPlugin } {
  /** Each running operation's release, by its context (one per operation). */
  const releases = new WeakMap<object, () => void>();
  const gate: GatewayPlugin = {
    async onExecute({ args, setResultAndStopExecution }) {
      const held = await take('operations', args);
      if ('refusal' in held) {
        setResultAndStopExecution({ errors: [held.refusal as never] });
        return;
      }
      releases.set(args.contextValue as object, held.release);
      // Reached when the result is ready, also when a later policy stopped the operation.
      return { onExecuteDone: held.release };
    },
    async onSubscribe({ args, setResultAndStopExecution }) {
      const held = await take('streams', args);
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
  return heldWhileRunning(async (kind) => {
    const release = await admission.enter(kind);
    if (release) return { release };
    onRefused(kind);
    return { refusal: admission.refusal(kind) };
  });
}
