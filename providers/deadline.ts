/**
 * A signal that aborts with its parent, or with a TimeoutError after `ms`, and lets go of both as
 * soon as `clear()` is called. `AbortSignal.any([parent, AbortSignal.timeout(ms)])` does not: the
 * timeout's timer lives until it fires — the provider's 300 s total for a call that took 2 ms —
 * holding its signal, so under load hundreds of thousands of them pile up for minutes.
 */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Whether the time ran out (rather than the parent aborting). */
  readonly expired: boolean;
  /** Stops the timer and detaches from the parent; the signal stays as it is. */
  clear(): void;
}

export function deadline(parent: AbortSignal, ms: number): Deadline {
  const controller = new AbortController();
  let expired = false;
  const onParent = () => {
    clearTimeout(timer);
    controller.abort(parent.reason);
  };
  const timer = setTimeout(() => {
    expired = true;
    parent.removeEventListener('abort', onParent);
    controller.abort(new DOMException('The operation timed out.', 'TimeoutError'));
  }, ms);
  timer.unref();
  if (parent.aborted) onParent();
  else parent.addEventListener('abort', onParent, { once: true });
  return {
    signal: controller.signal,
    get expired() {
      return expired;
    },
    clear() {
      clearTimeout(timer);
      parent.removeEventListener('abort', onParent);
    },
  };
}
