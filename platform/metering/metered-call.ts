/**
 * A metered model call, reserve → call → settle, written once for every door and kind of call
 * (whole chats, streamed chats, embeddings). Every metered call keeps these promises:
 * - its worst case is reserved in every bucket that applies before any provider is called; a call
 *   that cannot fit is refused, coded (TOKEN_LIMIT_EXCEEDED, BUDGET_EXCEEDED), and holds nothing;
 * - the reservation is settled exactly once: to what the call says it used (`settle`), or to
 *   nothing when the call ends without settling (it threw, or a stream ended before its first read);
 * - a settlement that fails is logged, never thrown (the window's end releases what it holds).
 * What a call "used" is its caller's to say: a failed chat used nothing, a stream the provider took
 * pays for its prompt, embeddings pay for the inputs that went upstream.
 */
import type { Principal } from '../identity/principal.ts';
import type { Logger } from '../logger.ts';
import { bucketsFor, limitOf, overLimit, settle, type Demand, type MeteredModel, type MeteringSettings } from './buckets.ts';
import type { Bucket, Meter } from './meter.ts';
import { NO_SPEND, type Spend } from './spend.ts';
import type { UsageSink } from './usage-event.ts';

/** What a metered call needs of its request (a subgraph's request context has all of it). */
export interface MeteringContext {
  meter: Meter;
  metering: MeteringSettings;
  principal: Principal;
  log: Logger;
  /** Where the call's usage event will go: a call it could not keep is refused before it starts. */
  usage?: Pick<UsageSink, 'refusal'>;
}

/**
 * What to reserve: the worst case, in every version that may serve the call (a route's targets
 * and fallbacks each reserve in their own token limit).
 */
export interface MeteredDemand {
  models: MeteredModel | readonly MeteredModel[];
  demand: Demand;
}

export interface HeldReservation {
  /**
   * Settles to what the call used; only the first settlement counts. A version's own token bucket
   * keeps the tokens only if it is `servedBy`, the version that served the call.
   */
  settle(spend: Spend, servedBy?: MeteredModel): Promise<void>;
}

export interface MeteringOptions {
  /** Told of each refusal, by limit and scope, before it is thrown (metrics). */
  onRefused?(refusal: { limit: string; scope: string }): void;
}

/** Reserves `demand` (nothing when undefined), or throws the coded refusal. */
async function hold(context: MeteringContext, demand: MeteredDemand | undefined, options: MeteringOptions): Promise<HeldReservation> {
  // Nothing is served that could not be metered.
  const refusal = context.usage?.refusal?.();
  if (refusal) throw refusal;
  const wanted = demand ? bucketsFor(context.principal, demand.models, demand.demand, context.metering) : [];
  let buckets: Bucket[] = [];
  if (wanted.length > 0) {
    const reservation = await context.meter.reserve(wanted);
    if (!reservation.ok) {
      options.onRefused?.(limitOf(reservation.bucket));
      throw overLimit(reservation);
    }
    buckets = reservation.buckets;
  }
  let settled = false;
  return {
    settle(spend, servedBy) {
      if (settled) return Promise.resolve();
      settled = true;
      return settle(context.meter, buckets, spend, servedBy).catch((error: unknown) =>
        context.log.error({ err: error }, 'could not settle a reservation'),
      );
    },
  };
}

/** Reserves, then runs `call`; whatever `call` did not settle (it threw before it could) is released. */
export async function meteredCall<T>(
  context: MeteringContext,
  demand: MeteredDemand | undefined,
  call: (held: HeldReservation) => Promise<T>,
  options: MeteringOptions = {},
): Promise<T> {
  const held = await hold(context, demand, options);
  try {
    return await call(held);
  } finally {
    await held.settle(NO_SPEND);
  }
}

/**
 * The same for a stream. Reserved now, before the stream is returned: a call that cannot fit fails
 * (coded) before any event. `events` settles when it ends, in its `finally`; a stream ended before
 * its first read never runs its own `finally`, so ending it then (return or throw) releases here.
 */
export async function meteredStream<T>(
  context: MeteringContext,
  demand: MeteredDemand,
  events: (held: HeldReservation) => AsyncGenerator<T>,
  options: MeteringOptions = {},
): Promise<AsyncGenerator<T>> {
  const held = await hold(context, demand, options);
  const stream = events(held);
  let started = false;
  const wrapped: AsyncGenerator<T> = {
    next: (...args) => {
      started = true;
      return stream.next(...args);
    },
    return: async (value) => {
      if (!started) await held.settle(NO_SPEND);
      return stream.return(value);
    },
    throw: async (error) => {
      if (!started) await held.settle(NO_SPEND);
      return stream.throw(error);
    },
    [Symbol.asyncIterator]: () => wrapped,
  };
  return wrapped;
}
