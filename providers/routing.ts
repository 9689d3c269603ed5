/**
 * Routing across targets: the order in which a request tries its targets (a weighted pick for
 * canary rollouts, then the other targets, then fallbacks), retries with exponential backoff and
 * full jitter that honour Retry-After, a circuit breaker per target, and one total deadline.
 *
 * The rule for streams: a target may be retried or replaced only until it has produced its first
 * token. After that nothing switches silently; a failure ends the stream as it is.
 *
 * cockatiel supplies the circuit breakers and the retry loop; what is ours is the policy: which
 * errors count, how long to wait, and when to give up on a target and move to the next.
 */
import {
  BrokenCircuitError,
  CircuitBreakerPolicy,
  CircuitState,
  ConsecutiveBreaker,
  DelegateBackoff,
  TaskCancelledError,
  circuitBreaker,
  handleWhen,
  retry,
} from 'cockatiel';
import type { CallOptions, ChatModel, ChatRequest, ChatResult, ChatStreamPart } from './contract.ts';
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
  /** Consecutive failures that open a target's circuit. */
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

/** A provider failure that another attempt (here or at another target) may not repeat. */
function isTransient(error: unknown): error is ProviderError {
  return error instanceof ProviderError && error.retryable;
}

class NoTargetAvailableError extends ProviderError {}

/** Weighted random order: the first pick by weight, the rest by descending weight. */
export function weightedOrder<T extends { weight: number }>(entries: readonly T[], random = Math.random): T[] {
  const total = entries.reduce((sum, entry) => sum + entry.weight, 0);
  let point = random() * total;
  const first = entries.find((entry) => (point -= entry.weight) < 0) ?? entries[0];
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
  async generate<T>(targets: readonly Target<T>[], request: ChatRequest, options: CallOptions): Promise<{ result: ChatResult; served: Served<T> }> {
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
  async *stream<T>(targets: readonly Target<T>[], request: ChatRequest, options: CallOptions): AsyncGenerator<ChatStreamPart | { type: 'served'; served: Served<T> }> {
    let attempts = 0;
    let opened: { first: ChatStreamPart; rest: AsyncIterator<ChatStreamPart>; target: Target<T> };
    try {
      opened = await this.#firstSuccess(targets, options, async (target, deadline) => {
        attempts++;
        // The deadline covers the wait for the first token only; a committed stream runs on the
        // caller's signal alone. An attempt that fails (or times out) is aborted upstream at once.
        const own = new AbortController();
        const onDeadline = () => own.abort(deadline.reason);
        deadline.addEventListener('abort', onDeadline, { once: true });
        const rest = target.chat.stream(request, { ...options, signal: AbortSignal.any([options.signal, own.signal]) })[Symbol.asyncIterator]();
        try {
          return { first: await this.#firstPart(rest, target), rest, target };
        } catch (error) {
          own.abort(error);
          throw error;
        } finally {
          deadline.removeEventListener('abort', onDeadline);
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
      timer = setTimeout(() => reject(new ProviderError(`${provider} sent no token in time`, { code: 'UPSTREAM_TIMEOUT', provider, retryable: true })), this.settings.firstTokenMs);
    });
    try {
      const next = await Promise.race([rest.next(), timedOut]);
      if (next.done) throw new ProviderError(`${provider} ended the stream before any token`, { code: 'UPSTREAM_STREAM_INTERRUPTED', provider, retryable: true });
      if (next.value.type === 'error') throw next.value.error;
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Tries targets in order; each target gets up to `attemptsPerTarget` attempts through its
   * circuit breaker. Returns the first success; rethrows the last transient failure when every
   * target failed, and any other failure at once (a bad request fails everywhere).
   */
  async #firstSuccess<T, R>(targets: readonly Target<T>[], options: CallOptions, attempt: (target: Target<T>, signal: AbortSignal) => Promise<R>): Promise<R> {
    const deadline = Date.now() + this.settings.deadlineMs;
    const signal = AbortSignal.any([options.signal, AbortSignal.timeout(this.settings.deadlineMs)]);
    let lastError: unknown = new NoTargetAvailableError('no target could serve the request', { code: 'UPSTREAM_UNAVAILABLE', provider: 'modelgraph', retryable: true });
    for (const target of targets) {
      const breaker = this.#breaker(target.key);
      const retries = retry(
        handleWhen((error) => isTransient(error) && (error.retryAfterMs ?? 0) < deadline - Date.now()),
        { maxAttempts: this.settings.attemptsPerTarget - 1, backoff: new DelegateBackoff((context) => this.#delay(context.attempt, 'error' in context.result ? context.result.error : undefined)) },
      );
      try {
        return await retries.execute(({ signal: attemptSignal }) => breaker.execute(() => attempt(target, attemptSignal)), signal);
      } catch (error) {
        if (options.signal.aborted) throw options.signal.reason;
        if (error instanceof BrokenCircuitError || error instanceof TaskCancelledError) continue;
        if (!isTransient(error)) throw error;
        lastError = error;
      }
      if (signal.aborted) break;
    }
    throw lastError;
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
      breaker = circuitBreaker(handleWhen(isTransient), {
        halfOpenAfter: this.settings.breakerHalfOpenAfterMs,
        breaker: new ConsecutiveBreaker(this.settings.breakerFailures),
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
  return new ProviderError('no target could serve the request', { code: 'UPSTREAM_UNAVAILABLE', provider: 'modelgraph', retryable: true, cause: error });
}
