/**
 * Routing across targets: the order in which a request tries its targets (a weighted pick for
 * canary rollouts, then the other targets, then fallbacks), retries with exponential backoff and
 * full jitter that honour Retry-After, a circuit breaker per target, and one total deadline.
 *
 * The rule for streams: a target may be retried or replaced only until it has produced its first
 * token. After that nothing switches silently; a failure ends the stream as it is.
 *
 * cockatiel supplies the circuit breakers. The retry loop is ours, because its waits must end the
 * moment the caller aborts (cockatiel 3's retry sleep cannot be interrupted) and because the
 * policy is ours: which errors are worth another attempt here, which only at another target, how
 * long to wait, and when to move on.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BrokenCircuitError, type CircuitBreakerPolicy, CircuitState, CountBreaker, circuitBreaker, handleWhen } from 'cockatiel';
import type { CallOptions, ChatModel, ChatRequest, ChatResult, ChatStreamPart } from './contract.ts';
import { type Deadline, deadline } from './deadline.ts';
import { ProviderError } from './errors.ts';

export interface RoutingSettings {
  /** Attempts per target, the first included. */
  attemptsPerTarget: number;
  initialDelayMs: number;
  maxDelayMs: number;
  /** Everything (all attempts, waits and fallbacks) until the whole answer or the first token. */
  deadlineMs: number;
  /** Longest wait for a stream's first token before the target counts as failed. */
  firstTokenMs: number;
  /**
   * Failures that open a target's circuit: it opens when at least half of its last
   * 2 × `breakerFailures` calls failed, once it has seen `breakerFailures` calls (so N failures in a
   * row open it, and so does a target whose streams keep breaking after their first token).
   */
  breakerFailures: number;
  /** How long an open circuit waits before it lets one probe through. */
  breakerHalfOpenAfterMs: number;
}

export interface Target<T> {
  /** Stable key of the target, e.g. `gpt-4o@2024-08-06`: breakers are per key. */
  key: string;
  chat: ChatModel;
  /** What the caller gets back about the target that served (its model and version). */
  info: T;
}

export interface Served<T> {
  target: T;
  /** Calls made to providers for this request, failed ones included. */
  attempts: number;
}

export type CircuitStatus = 'CLOSED' | 'OPEN' | 'HALF_OPEN';

/** Worth another attempt at the same target: rate limits, 5xx, timeouts, broken connections. */
function retrySame(error: unknown): error is ProviderError {
  return error instanceof ProviderError && error.retryable;
}

/**
 * Worth trying at another target: everything but a request the provider refused as malformed
 * (400, 413, 422), which every target would refuse. A bad key, an unknown model (404) or a
 * malformed answer is specific to one target.
 */
function tryNext(error: unknown): error is ProviderError {
  return error instanceof ProviderError && !(error.code === 'UPSTREAM_BAD_REQUEST' && error.status !== 404);
}

/** Before the first token nothing was delivered, so a failed stream may be tried again. */
const FAILED_BEFORE_DELIVERY = new Set([
  'UPSTREAM_STREAM_INTERRUPTED',
  'UPSTREAM_UNAVAILABLE',
  'UPSTREAM_TIMEOUT',
  'UPSTREAM_RATE_LIMITED',
]);

function retryableBeforeDelivery(error: ProviderError): ProviderError {
  if (error.retryable || !FAILED_BEFORE_DELIVERY.has(error.code)) return error;
  return new ProviderError(error.message, {
    code: error.code,
    provider: error.provider,
    retryable: true,
    ...(error.status !== undefined && { status: error.status }),
    ...(error.retryAfterMs !== undefined && { retryAfterMs: error.retryAfterMs }),
    ...(error.upstreamMessage !== undefined && { upstreamMessage: error.upstreamMessage }),
    cause: error,
  });
}

const noTargetAvailable = () =>
  new ProviderError('no target could serve the request', { code: 'UPSTREAM_UNAVAILABLE', provider: 'modelgraph', retryable: true });

const probeAbandoned = (provider: string) =>
  new ProviderError('the caller left during a circuit probe', { code: 'UPSTREAM_UNAVAILABLE', provider, retryable: true });

const deadlinePassed = () =>
  new ProviderError('no answer within the routing deadline', { code: 'UPSTREAM_TIMEOUT', provider: 'modelgraph', retryable: true });

/** Weighted random order: the first pick by weight, the rest by descending weight. */
export function weightedOrder<T extends { weight: number }>(entries: readonly T[], random = Math.random): T[] {
  const total = entries.reduce((sum, entry) => sum + entry.weight, 0);
  const point = random() * total;
  let passed = 0;
  const first =
    entries.find((entry) => {
      passed += entry.weight;
      return point < passed;
    }) ?? entries[0];
  if (!first) return [];
  return [first, ...entries.filter((entry) => entry !== first).sort((a, b) => b.weight - a.weight)];
}

export class Router {
  readonly #breakers = new Map<string, CircuitBreakerPolicy>();

  constructor(
    private readonly settings: RoutingSettings,
    private readonly onCircuitChange: (key: string, status: CircuitStatus) => void = () => undefined,
  ) {}

  circuit(key: string): CircuitStatus {
    return toStatus(this.#breakers.get(key)?.state ?? CircuitState.Closed);
  }

  /** Answers a whole chat from the first target that can, retrying and falling back as needed. */
  async generate<T>(
    targets: readonly Target<T>[],
    request: ChatRequest,
    options: CallOptions,
  ): Promise<{ result: ChatResult; served: Served<T> }> {
    let attempts = 0;
    const result = await this.#firstSuccess(targets, options, async (target, signal) => {
      attempts++;
      return { value: await target.chat.generate(request, { ...options, signal }), target };
    });
    return { result: result.value, served: { target: result.target.info, attempts } };
  }

  /**
   * Streams a chat. Until the first token, failures are retried and targets replaced; the first
   * part that is not an error commits the stream to its target, and whatever follows (an error
   * part included) is passed through unchanged.
   */
  async *stream<T>(
    targets: readonly Target<T>[],
    request: ChatRequest,
    options: CallOptions,
  ): AsyncGenerator<ChatStreamPart | { type: 'served'; served: Served<T> }> {
    let attempts = 0;
    let opened: { first: ChatStreamPart; rest: AsyncIterator<ChatStreamPart>; target: Target<T> };
    try {
      opened = await this.#firstSuccess(targets, options, async (target, routingSignal) => {
        attempts++;
        // The deadline covers the wait for the first token only; a committed stream runs on the
        // caller's signal alone. An attempt that fails (or times out) is aborted upstream at once.
        const own = new AbortController();
        const onDeadline = () => own.abort(routingSignal.reason);
        routingSignal.addEventListener('abort', onDeadline, { once: true });
        const rest = target.chat
          .stream(request, { ...options, signal: AbortSignal.any([options.signal, own.signal]) })
          [Symbol.asyncIterator]();
        try {
          return { first: await this.#firstPart(rest, target), rest, target };
        } catch (error) {
          own.abort(error);
          throw error;
        } finally {
          routingSignal.removeEventListener('abort', onDeadline);
        }
      });
    } catch (error) {
      if (options.signal.aborted) return;
      yield { type: 'served', served: { target: targets[0]!.info, attempts } };
      yield { type: 'error', error: error instanceof ProviderError ? error : unavailable(error) };
      return;
    }
    yield { type: 'served', served: { target: opened.target.info, attempts } };
    yield opened.first;
    try {
      while (true) {
        const next = await opened.rest.next();
        if (next.done) return;
        if (next.value.type === 'error' && !options.signal.aborted) await this.recordStreamFailure(opened.target.key, next.value.error);
        yield next.value;
      }
    } finally {
      await opened.rest.return?.();
    }
  }

  /** Waits for a stream's first part; an error part or no part in time fails the attempt. */
  async #firstPart<T>(rest: AsyncIterator<ChatStreamPart>, target: Target<T>): Promise<ChatStreamPart> {
    const provider = target.chat.provider;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new ProviderError(`${provider} sent no token in time`, { code: 'UPSTREAM_TIMEOUT', provider, retryable: true })),
        this.settings.firstTokenMs,
      );
    });
    try {
      const next = await Promise.race([rest.next(), timedOut]);
      if (next.done)
        throw new ProviderError(`${provider} ended the stream before any token`, {
          code: 'UPSTREAM_STREAM_INTERRUPTED',
          provider,
          retryable: true,
        });
      if (next.value.type === 'error') throw retryableBeforeDelivery(next.value.error);
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Tries targets in order. Each target gets up to `attemptsPerTarget` attempts through its
   * circuit breaker, waiting between them (Retry-After or backoff) unless the wait would pass the
   * deadline, or would exceed `maxDelayMs` while another target is waiting. Returns the first
   * success; a request-intrinsic failure (400) is thrown at once, anything else moves on.
   */
  async #firstSuccess<T, R>(
    targets: readonly Target<T>[],
    options: CallOptions,
    attempt: (target: Target<T>, signal: AbortSignal) => Promise<R>,
  ): Promise<R> {
    const deadlineAt = Date.now() + this.settings.deadlineMs;
    // Cleared on the way out: a whole call is over then, and a stream has its first part (the
    // deadline covers only the wait for it).
    const expiry = deadline(options.signal, this.settings.deadlineMs);
    const { signal } = expiry;
    try {
      let lastError: unknown;
      for (const [index, target] of targets.entries()) {
        if (signal.aborted) break;
        const hasNext = index < targets.length - 1;
        const breaker = this.#breaker(target.key);
        // A half-open target is being probed by another request: go elsewhere, never queue behind it.
        if (breaker.state === CircuitState.HalfOpen) continue;
        try {
          return await this.#attempts(target, breaker, { signal, expiry, caller: options.signal, deadlineAt }, hasNext, attempt);
        } catch (error) {
          if (options.signal.aborted) throw options.signal.reason;
          if (error instanceof BrokenCircuitError) continue;
          if (!tryNext(error)) throw error;
          lastError = error;
        }
      }
      // The caller left before (or between) attempts: its reason, not a verdict on the targets.
      if (options.signal.aborted) throw options.signal.reason;
      if (expiry.expired && lastError === undefined) throw deadlinePassed();
      throw lastError ?? noTargetAvailable();
    } finally {
      expiry.clear();
    }
  }

  async #attempts<T, R>(
    target: Target<T>,
    breaker: CircuitBreakerPolicy,
    { signal, expiry, caller, deadlineAt }: { signal: AbortSignal; expiry: Deadline; caller: AbortSignal; deadlineAt: number },
    hasNext: boolean,
    attempt: (target: Target<T>, signal: AbortSignal) => Promise<R>,
  ): Promise<R> {
    for (let number = 1; ; number++) {
      try {
        return await breaker.execute(async () => {
          try {
            return await attempt(target, signal);
          } catch (error) {
            if (caller.aborted) {
              // The caller left: no verdict on the target. A probe stays open (cockatiel would
              // close the circuit on an error it does not count); otherwise nothing is counted.
              if (breaker.state === CircuitState.HalfOpen) throw probeAbandoned(target.chat.provider);
              throw caller.reason;
            }
            // The deadline aborted the call: a timeout of this target, whatever the adapter threw.
            if (expiry.expired) throw deadlinePassed();
            throw error;
          }
        });
      } catch (error) {
        // Another attempt here only while the circuit is still closed (this failure may have opened it).
        if (!retrySame(error) || number >= this.settings.attemptsPerTarget || breaker.state !== CircuitState.Closed) throw error;
        const wait = this.#delay(number, error);
        if (Date.now() + wait >= deadlineAt || (hasNext && wait > this.settings.maxDelayMs)) throw error;
        try {
          await sleep(wait, undefined, { signal });
        } catch {
          throw expiry.expired ? deadlinePassed() : error;
        }
      }
    }
  }

  /** Counts a failure that happened after a stream was committed (the call itself succeeded). */
  async recordStreamFailure(key: string, error: ProviderError): Promise<void> {
    // Only a closed breaker samples; a half-open one would make us wait for its probe.
    if (!tryNext(error) || this.#breaker(key).state !== CircuitState.Closed) return;
    await this.#breaker(key)
      .execute(() => Promise.reject(error))
      .catch(() => undefined);
  }

  /** Retry-After when the provider gave one, else exponential backoff with full jitter. */
  #delay(attempt: number, error: unknown): number {
    if (error instanceof ProviderError && error.retryAfterMs !== undefined) return error.retryAfterMs;
    const ceiling = Math.min(this.settings.maxDelayMs, this.settings.initialDelayMs * 2 ** Math.max(0, attempt - 1));
    return Math.random() * ceiling;
  }

  #breaker(key: string): CircuitBreakerPolicy {
    let breaker = this.#breakers.get(key);
    if (!breaker) {
      breaker = circuitBreaker(handleWhen(tryNext), {
        halfOpenAfter: this.settings.breakerHalfOpenAfterMs,
        // cockatiel opens when failures > threshold × calls; 0.49 makes "at least half" open it.
        breaker: new CountBreaker({
          threshold: 0.49,
          size: 2 * this.settings.breakerFailures,
          minimumNumberOfCalls: this.settings.breakerFailures,
        }),
      });
      breaker.onStateChange((state) => this.onCircuitChange(key, toStatus(state)));
      this.#breakers.set(key, breaker);
    }
    return breaker;
  }
}

function toStatus(state: CircuitState): CircuitStatus {
  switch (state) {
    case CircuitState.Closed:
      return 'CLOSED';
    case CircuitState.HalfOpen:
      return 'HALF_OPEN';
    default:
      return 'OPEN';
  }
}

function unavailable(error: unknown): ProviderError {
  return new ProviderError('no target could serve the request', {
    code: 'UPSTREAM_UNAVAILABLE',
    provider: 'modelgraph',
    retryable: true,
    cause: error,
  });
}
