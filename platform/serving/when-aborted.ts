/**
 * Many short-lived listeners on one long-lived signal — the router closing, a server shutting
 * down — one for each operation or stream in flight. Added to the signal itself, each one walks
 * Node's listener list to add and to remove, and past ten Node warns of a leak (under load, on
 * every burst). Here the signal gets one listener, and each operation an entry in a Set.
 */
const listenersOf = new WeakMap<AbortSignal, Set<() => void>>();

const nothing = () => undefined;

/** Calls `listener` once when `signal` aborts (at once if it has); returns what removes it. */
export function whenAborted(signal: AbortSignal, listener: () => void): () => void {
  if (signal.aborted) {
    listener();
    return nothing;
  }
  let listeners = listenersOf.get(signal);
  if (!listeners) {
    const registered = new Set<() => void>();
    listeners = registered;
    listenersOf.set(signal, registered);
    signal.addEventListener(
      'abort',
      () => {
        for (const each of registered) each();
        registered.clear();
      },
      { once: true },
    );
  }
  const added = listeners;
  added.add(listener);
  return () => {
    added.delete(listener);
  };
}

/** How many listeners wait on `signal` (what a finished operation must have removed). */
export function waitingOn(signal: AbortSignal): number {
  return listenersOf.get(signal)?.size ?? 0;
}
