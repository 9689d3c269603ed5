/** `RunStore.follow` for both stores: the follow loop and the doorbell that wakes it. */
import type { StoredRunEvent } from './records.ts';
import { checkCursor, type IdleCheck } from './run-store.ts';

const DEFAULT_IDLE: IdleCheck = { everyMs: 5_000, check: async () => undefined };
/** Events read at a time while a follower catches up. */
const PAGE = 200;

/**
 * A follower's doorbell: rung on each new event, on abort and on close. A ring that comes while
 * the follower is reading (not waiting) is remembered, so the next wait returns at once.
 */
export class Doorbell {
  #rung = false;
  #answer: (() => void) | undefined;

  readonly ring = () => {
    this.#rung = true;
    this.#answer?.();
  };

  /** Forgets earlier rings; call before reading, so only rings during or after the read count. */
  reset() {
    this.#rung = false;
  }

  /** true when rung (at once if it rang since `reset`), false after `ms` without a ring. */
  wait(ms: number): Promise<boolean> {
    if (this.#rung) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#answer = undefined;
        resolve(false);
      }, ms);
      this.#answer = () => {
        clearTimeout(timer);
        this.#answer = undefined;
        resolve(true);
      };
    });
  }
}

/** One consistent look at a run: events after a cursor, and whether more can come (false: finished or unknown). */
export interface Look {
  events: StoredRunEvent[];
  open: boolean;
}

/** What a store gives `followRun` for one run. */
export interface FollowSource {
  look(after: string | undefined, count: number): Promise<Look>;
  /** Rings `bell` on each new event from now on; resolves once it will. */
  watch(bell: Doorbell): Promise<void>;
  /** Stops ringing `bell`; called after `watch`, also when it failed. */
  unwatch(bell: Doorbell): Promise<void>;
  closed(): boolean;
}

/** `RunStore.follow` over `source`: one bell, rung by the source and on abort, released at the end. */
export async function* followRun(
  source: FollowSource,
  after: string | undefined,
  signal: AbortSignal,
  idle: IdleCheck = DEFAULT_IDLE,
): AsyncGenerator<StoredRunEvent> {
  checkCursor(after);
  if (source.closed() || signal.aborted) return;
  const bell = new Doorbell();
  signal.addEventListener('abort', bell.ring, { once: true });
  try {
    // Watched before the first read: whatever is appended after that read rings the bell.
    try {
      await source.watch(bell);
    } catch (error) {
      if (source.closed()) return;
      throw error;
    }
    yield* readOn(source, bell, after, signal, idle);
  } finally {
    signal.removeEventListener('abort', bell.ring);
    await source.unwatch(bell);
  }
}

/**
 * The follow loop. The bell is reset before each read and the source's look is atomic, so an
 * event appended after a read rings the bell and one appended before it is read: none is missed,
 * and the cursor only moves forward, so none is yielded twice.
 */
async function* readOn(
  source: FollowSource,
  bell: Doorbell,
  after: string | undefined,
  signal: AbortSignal,
  idle: IdleCheck,
): AsyncGenerator<StoredRunEvent> {
  const stopped = () => signal.aborted || source.closed();
  let cursor = after;
  while (!stopped()) {
    bell.reset();
    const { events, open } = await source.look(cursor, PAGE);
    for (const stored of events) {
      if (stopped()) return;
      yield stored;
      cursor = stored.cursor;
      if (stored.event.type === 'RUN_FINISHED') return;
    }
    if (events.length === PAGE) continue;
    // Everything there was is read and it held no end: a closed run ended at or before `after`.
    if (!open) return;
    const rung = await bell.wait(idle.everyMs);
    if (!rung && !stopped()) await idle.check();
  }
}
