/**
 * Keeps open connections in step with their credentials. Every open WebSocket (and HTTP response,
 * SSE streams included) is held under its API key; when the key changes on any replica, is found
 * changed by a periodic recheck, or after the change feed reconnected (changes may have been
 * missed), the key is read again: a revoked or expired key ends its connections (WebSockets close
 * with 4403, ending their subscriptions); a changed one gives open sockets its new grant for their
 * next operations. A socket also ends when its credential's expiry passes.
 */
import { EVERY_KEY } from '../platform/access/access-store.ts';
import type { Logger } from '../platform/logger.ts';
import type { Principal } from '../platform/identity/principal.ts';
import type { AuthOutcome, Authenticator } from './authenticate.ts';

export interface Holder {
  /** Ends the connection: its credential was withdrawn or expired. */
  end(): void;
  /** The credential still holds, with this grant from now on. */
  refresh?(principal: Principal): void;
}

interface Held {
  holder: Holder;
  expiresAt: number | null;
  timer?: NodeJS.Timeout;
}

/** Longest delay setTimeout honours; longer ones fire at once (Node clamps them to 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class CredentialWatch {
  readonly #auth: Authenticator;
  readonly #log: Logger;
  readonly #held = new Map<string, Set<Held>>();
  readonly #stopFeed: () => void;
  readonly #recheck: NodeJS.Timeout;

  constructor(auth: Authenticator, log: Logger, recheckEveryMs: number) {
    this.#auth = auth;
    this.#log = log;
    this.#stopFeed = auth.onKeyChanged((keyId) => {
      for (const id of keyId === EVERY_KEY ? [...this.#held.keys()] : [keyId]) void this.#recheckKey(id);
    });
    // A safety net for changes the feed did not deliver (e.g. published while it was reconnecting).
    this.#recheck = setInterval(() => {
      for (const id of this.#held.keys()) void this.#recheckKey(id);
    }, recheckEveryMs);
    this.#recheck.unref();
  }

  /**
   * Holds a connection until it closes. `changesBefore` is the authenticator's change count taken
   * before the credential was checked: a change since then may have been missed, so the key is
   * read again at once.
   */
  hold(
    outcome: Extract<AuthOutcome, { ok: true }>,
    connection: { once(event: 'close', listener: () => void): unknown },
    holder: Holder,
    changesBefore: number,
  ): void {
    const held: Held = { holder, expiresAt: outcome.expiresAt };
    this.#armExpiry(held);
    const keyId = outcome.principal.keyId;
    if (keyId) {
      const set = this.#held.get(keyId) ?? new Set<Held>();
      this.#held.set(keyId, set.add(held));
      if (this.#auth.changeCount() !== changesBefore) void this.#recheckKey(keyId);
    }
    connection.once('close', () => {
      clearTimeout(held.timer);
      if (!keyId) return;
      const set = this.#held.get(keyId);
      set?.delete(held);
      if (set?.size === 0) this.#held.delete(keyId);
    });
  }

  close(): void {
    this.#stopFeed();
    clearInterval(this.#recheck);
    for (const set of this.#held.values()) for (const held of set) clearTimeout(held.timer);
    this.#held.clear();
  }

  #armExpiry(held: Held): void {
    clearTimeout(held.timer);
    if (held.expiresAt === null) return;
    const left = held.expiresAt - Date.now();
    if (left <= 0) {
      held.holder.end();
      return;
    }
    held.timer = setTimeout(() => this.#armExpiry(held), Math.min(left, MAX_TIMER_MS));
    held.timer.unref();
  }

  async #recheckKey(keyId: string): Promise<void> {
    const set = this.#held.get(keyId);
    if (!set?.size) return;
    let outcome: AuthOutcome;
    try {
      outcome = await this.#auth.recheckKey(keyId);
    } catch (error) {
      // The store is unreachable: keep what was granted until it answers again.
      this.#log.warn({ err: error, keyId }, 'could not recheck a key');
      return;
    }
    for (const held of set) {
      if (!outcome.ok) {
        held.holder.end();
        continue;
      }
      held.holder.refresh?.(outcome.principal);
      held.expiresAt = outcome.expiresAt;
      this.#armExpiry(held);
    }
    if (!outcome.ok)
      this.#log.info({ keyId, reason: outcome.reason, connections: set.size }, 'credential withdrawn: closing its open connections');
  }
}
