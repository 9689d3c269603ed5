/**
 * A streamed answer, guarded as it flows: text is let out only once nothing sensitive can still
 * be forming in it, so a card number split across three deltas is caught whole and never leaves
 * in pieces. What is held back is bounded: the last `HOLD_BACK` characters (longer than any card
 * number, IBAN, phone number or placeholder with their separators), and, while it is still open,
 * the last whitespace-free run (a key, a token, an address) and an unfinished private-key block,
 * at most `MAX_HOLD` characters in all. Placeholders of the request's pseudonyms are restored in
 * what is let out, after the answer's own values were handled.
 */
import type { EntityType, Finding } from './detectors.ts';
import { type Action, applyActions, type Decision, type Direction, type Pseudonyms } from './redact.ts';

/** Longer than a card (19 digits, 6 separators), a printed IBAN (34 + 8), a placeholder (24). */
export const HOLD_BACK = 48;
/** Beyond this, held text goes out (handled as far as it can be judged) whatever is still open. */
export const MAX_HOLD = 8_192;
/**
 * Text is let out in steps of at least this many characters (a few tokens), not after every
 * delta: each step scans the held text, and small deltas would scan it again and again.
 */
export const RELEASE_STEP = 16;

const OPEN_PRIVATE_KEY = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?![\s\S]*-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)/;

export interface StreamGuardOptions {
  direction: Direction;
  /** `open`: the text may go on (all but the last look at a stream). */
  detect: (text: string, open: boolean) => Finding[];
  actionFor: (type: EntityType) => Action;
  pseudonyms: Pseudonyms;
}

export interface Released {
  /** What may go to the caller now (possibly nothing). */
  text: string;
  /** The decision over what was released (empty when nothing was found). */
  decision: Decision;
}

export class StreamGuard {
  #held = '';
  #blocked = false;
  /** The most characters held back at once, for the benchmark. */
  maxHeld = 0;

  constructor(private readonly options: StreamGuardOptions) {}

  get blocked(): boolean {
    return this.#blocked;
  }

  /** Takes the next delta; answers what of the text so far may be let out. */
  push(delta: string): Released {
    this.#held += delta;
    this.maxHeld = Math.max(this.maxHeld, this.#held.length);
    if (this.#held.length < HOLD_BACK + RELEASE_STEP) return this.#nothing();
    return this.#release(false);
  }

  /** The stream ended: everything still held, handled. */
  end(): Released {
    return this.#release(true);
  }

  #release(ending: boolean): Released {
    const { direction, actionFor, pseudonyms, detect } = this.options;
    if (this.#blocked) return this.#nothing();
    const held = this.#held;
    const findings = detect(held, !ending);
    let cut = ending ? held.length : this.#safeCut(held);
    // Never through a value: it goes out whole, handled, or waits.
    for (const finding of findings) if (finding.start < cut && cut < finding.end) cut = finding.start;
    if (cut <= 0) return this.#nothing();
    const { text, decision } = applyActions(
      held.slice(0, cut),
      findings.filter((finding) => finding.end <= cut),
      direction,
      actionFor,
      pseudonyms,
    );
    if (decision.blocked) {
      this.#blocked = true;
      this.#held = '';
      return { text: '', decision };
    }
    this.#held = held.slice(cut);
    return { text: pseudonyms.restore(text), decision };
  }

  #nothing(): Released {
    return { text: '', decision: { direction: this.options.direction, entities: [], rules: [], blocked: this.#blocked } };
  }

  /** Where the held text may be cut now: before anything that could still become a value. */
  #safeCut(held: string): number {
    let cut = held.length - HOLD_BACK;
    // The last run without whitespace may still be growing (a key, a JWT, an e-mail address).
    let trailing = held.length;
    while (trailing > 0 && !/\s/.test(held[trailing - 1]!)) trailing--;
    cut = Math.min(cut, trailing);
    const key = OPEN_PRIVATE_KEY.exec(held);
    if (key) cut = Math.min(cut, key.index);
    // Bounded: past MAX_HOLD the oldest text goes out anyway.
    return Math.max(cut, held.length - MAX_HOLD);
  }
}
