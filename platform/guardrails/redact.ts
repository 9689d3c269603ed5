/**
 * What a guardrail does with what the detectors found, per entity type and direction: `ALLOW`
 * (nothing), `LOG` (record the finding only), `MASK` (a typed placeholder, `[CARD …1234]`),
 * `PSEUDONYMIZE` (a placeholder stable within the request, `[EMAIL_1]`, restored in the answer to
 * the caller) or `BLOCK` (refuse). The decision says what was found and done — types, counts,
 * actions, rule ids — and never a value.
 */
import type { EntityType, Finding } from './detectors.ts';

export const DIRECTIONS = ['PROMPT', 'RESPONSE', 'EMBEDDINGS_INPUT', 'TOOL_RESULT'] as const;
export type Direction = (typeof DIRECTIONS)[number];

export const ACTIONS = ['ALLOW', 'LOG', 'MASK', 'PSEUDONYMIZE', 'BLOCK'] as const;
export type Action = (typeof ACTIONS)[number];

export interface EntityDecision {
  type: EntityType;
  action: Action;
  count: number;
}

export interface Decision {
  direction: Direction;
  /** One entry per entity type found, in the order first seen. */
  entities: EntityDecision[];
  /** The rules that matched, each once. */
  rules: string[];
  /** Whether any finding's action is BLOCK: the text must not go on. */
  blocked: boolean;
}

/**
 * The placeholders of one request: a value gets the same one every time it appears (in any
 * message, in either direction), and the answer's placeholders are turned back into the values.
 * Held for the request only.
 */
export class Pseudonyms {
  readonly #byValue = new Map<string, string>();
  readonly #byPlaceholder = new Map<string, string>();
  readonly #counts = new Map<EntityType, number>();

  placeholder(type: EntityType, value: string): string {
    let placeholder = this.#byValue.get(value);
    if (!placeholder) {
      const count = (this.#counts.get(type) ?? 0) + 1;
      this.#counts.set(type, count);
      placeholder = `[${type}_${count}]`;
      this.#byValue.set(value, placeholder);
      this.#byPlaceholder.set(placeholder, value);
    }
    return placeholder;
  }

  /** `text` with every placeholder of this request replaced by its value. */
  restore(text: string): string {
    if (this.#byPlaceholder.size === 0) return text;
    return text.replace(PLACEHOLDER, (placeholder) => this.#byPlaceholder.get(placeholder) ?? placeholder);
  }
}

const PLACEHOLDER = /\[[A-Z_]+_\d+\]/g;

/** A card keeps its last four digits (as receipts print it); everything else only its type. */
function mask(type: EntityType, value: string): string {
  if (type === 'CARD') return `[CARD …${value.replace(/\D/g, '').slice(-4)}]`;
  return `[${type}]`;
}

/**
 * `text` with each finding handled by `actionFor(type)`, and the decision. A BLOCK leaves the
 * text as it is (it must not be sent at all); the caller refuses.
 */
export function applyActions(
  text: string,
  findings: readonly Finding[],
  direction: Direction,
  actionFor: (type: EntityType) => Action,
  pseudonyms: Pseudonyms,
): { text: string; decision: Decision } {
  const entities = new Map<EntityType, EntityDecision>();
  const rules = new Set<string>();
  let blocked = false;
  let out = '';
  let at = 0;
  for (const finding of findings) {
    const action = actionFor(finding.type);
    if (action === 'ALLOW') continue;
    rules.add(finding.rule);
    const entity = entities.get(finding.type) ?? { type: finding.type, action, count: 0 };
    entity.count++;
    entities.set(finding.type, entity);
    if (action === 'BLOCK') blocked = true;
    if (action !== 'MASK' && action !== 'PSEUDONYMIZE') continue;
    const value = text.slice(finding.start, finding.end);
    out += text.slice(at, finding.start) + (action === 'MASK' ? mask(finding.type, value) : pseudonyms.placeholder(finding.type, value));
    at = finding.end;
  }
  out += text.slice(at);
  return { text: blocked ? text : out, decision: { direction, entities: [...entities.values()], rules: [...rules], blocked } };
}
