/**
 * Prompt-injection screening by rules: the common attacks, each a rule with a weight, combined
 * into a score in [0, 1] (`1 − Π(1 − weight)` over the rules that matched, so two weak signals
 * count for more than one) that a policy compares with its threshold. Text a model reads but the
 * caller did not write — tool results, retrieved documents — is held to more: instructions
 * addressed to the model there weigh more than in a user's own prompt.
 *
 * Rules, not a model: they run offline in microseconds and say which rule fired. A tenant may add
 * a classifier (a catalog model as its guard model) on top; that is the policy's business.
 */
export type Source = 'PROMPT' | 'TOOL_RESULT';

export interface Screening {
  /** 0 (nothing seen) to 1. */
  score: number;
  /** The rules that matched, for the decision (never the text). */
  rules: string[];
}

interface InjectionRule {
  id: string;
  /** Weight in a prompt, and in text the model reads from elsewhere (tool results, retrieval). */
  weight: Record<Source, number>;
  test(text: string): boolean;
}

const pattern = (regex: RegExp) => (text: string) => regex.test(text);

/** A run of base64 long enough to carry a sentence, and what it says when decoded. */
const BASE64_RUN = /[A-Za-z0-9+/]{60,}={0,2}/g;
const INSTRUCTION_WORDS = /\b(ignore|disregard|instructions?|system prompt|you are|pretend|jailbreak)\b/i;

const RULES: InjectionRule[] = [
  {
    id: 'injection.ignore-instructions',
    weight: { PROMPT: 0.6, TOOL_RESULT: 0.8 },
    test: pattern(
      /\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|any|your|the system'?s?|system)\b[^.\n]{0,20}\b(?:instructions?|prompts?|rules|directions|guidelines|guardrails)\b/i,
    ),
  },
  {
    id: 'injection.reveal-system-prompt',
    weight: { PROMPT: 0.5, TOOL_RESULT: 0.7 },
    test: pattern(
      /\b(?:reveal|show|print|repeat|output|leak|tell me)\b[^.\n]{0,30}\b(?:system prompt|hidden (?:instructions|prompt)|initial instructions|your instructions)\b/i,
    ),
  },
  {
    id: 'injection.role-play',
    weight: { PROMPT: 0.5, TOOL_RESULT: 0.7 },
    test: pattern(
      /\b(?:do anything now|developer mode|jailbreak(?:ed)?|you are no longer (?:an? )?(?:ai|assistant|bound)|pretend (?:that )?you (?:have no|are not bound|are free)|act as (?:an? )?(?:unrestricted|unfiltered|uncensored|evil)|without any (?:restrictions|filters|limits)|\bDAN\b)/i,
    ),
  },
  {
    // Text posing as the conversation's own structure: a role turn, a system tag, a new-instructions header.
    id: 'injection.fake-turn',
    weight: { PROMPT: 0.3, TOOL_RESULT: 0.7 },
    test: pattern(
      /(?:^|\n)\s*(?:system|assistant|developer)\s*:|<\/?(?:system|instructions?|im_start|im_end)\b[^>]*>|#{2,}\s*(?:new )?instructions\b/i,
    ),
  },
  {
    // Characters a reader never sees: zero-width, bidirectional overrides, Unicode tag characters.
    id: 'injection.invisible-text',
    weight: { PROMPT: 0.4, TOOL_RESULT: 0.6 },
    test: pattern(/[\u200B-\u200F\u202A-\u202E\u2060-\u2064]|[\u{E0000}-\u{E007F}]/u),
  },
  {
    id: 'injection.encoded-instructions',
    weight: { PROMPT: 0.6, TOOL_RESULT: 0.8 },
    test(text) {
      for (const [run] of text.matchAll(BASE64_RUN)) {
        const decoded = Buffer.from(run, 'base64').toString('utf8');
        // Mostly printable once decoded, and talking to the model.
        if (/^[\x20-\x7E\s]*$/.test(decoded.slice(0, 200)) && INSTRUCTION_WORDS.test(decoded)) return true;
      }
      return false;
    },
  },
];

export function screenInjection(text: string, source: Source = 'PROMPT'): Screening {
  const rules: string[] = [];
  let clean = 1;
  for (const rule of RULES) {
    if (!rule.test(text)) continue;
    rules.push(rule.id);
    clean *= 1 - rule.weight[source];
  }
  return { score: Math.round((1 - clean) * 1000) / 1000, rules };
}
