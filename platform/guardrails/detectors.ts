/**
 * Sensitive values in text, found offline and in process: payment card numbers, IBANs, e-mail
 * addresses, phone numbers, US social security and UK national insurance numbers, IP addresses,
 * secrets (cloud and model-API keys, private-key blocks, JWTs, modelgraph's own keys), and a
 * tenant's own patterns. A finding is a type, the rule that found it and where it is — never a
 * copy of the value, so nothing downstream (decisions, usage events, the audit log, metrics) can
 * carry one by accident.
 *
 * Checksums decide, not shapes: a card number must pass its issuer's lengths and prefixes and the
 * Luhn check (`card-validator`, Braintree's, which knows the issuers' ranges), an IBAN its
 * country's length and mod-97 (`ibantools`), a phone number its numbering plan
 * (`libphonenumber-js`, Google's metadata), so an order number, a date or an amount is not taken
 * for one. The shapes with no checksum (SSN, NINO, secrets) need their exact format, separators
 * included.
 */
import { isIPv4, isIPv6 } from 'node:net';
import cardValidator from 'card-validator';
import { electronicFormatIBAN, isValidIBAN } from 'ibantools';
import { type CountryCode, findNumbers } from 'libphonenumber-js/max';

export const ENTITY_TYPES = ['CARD', 'IBAN', 'EMAIL', 'PHONE', 'US_SSN', 'UK_NINO', 'IP_ADDRESS', 'SECRET', 'CUSTOM'] as const;
export type EntityType = (typeof ENTITY_TYPES)[number];

export interface Finding {
  type: EntityType;
  /** Which rule matched (`card`, `secret.aws-access-key`, `custom.<name>`, …). */
  rule: string;
  /** The value is `text.slice(start, end)`; the finding never holds it. */
  start: number;
  end: number;
}

export interface CustomPattern {
  /** Names the rule (`custom.<name>`) in decisions and metrics. */
  name: string;
  pattern: RegExp;
}

export interface DetectorOptions {
  /** Where numbers without a country code are read as national phone numbers; unset: only `+…` numbers. */
  phoneRegion?: CountryCode | undefined;
  custom?: readonly CustomPattern[];
  /**
   * The text may go on (a stream's held text): a phone number reaching its end is left for when
   * more has come (the caller holds the end back anyway) instead of being read in every partial form.
   */
  openEnd?: boolean;
}

interface Rule {
  id: string;
  type: EntityType;
  /** Spans in `text`, each already checked (with the rule id when it is not `id`). */
  find(text: string, options: DetectorOptions): Iterable<[start: number, end: number, rule?: string]>;
}

/** Every match of `pattern` (global) that `accept` (given the match) keeps. */
function* matches(text: string, pattern: RegExp, accept: (value: string) => boolean = () => true): Iterable<[number, number]> {
  for (const match of text.matchAll(pattern)) {
    if (accept(match[0])) yield [match.index, match.index + match[0].length];
  }
}

/** 13 to 19 digits, in groups split by single spaces or dashes, not inside a longer run of digits. */
const CARD_CANDIDATE = /(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])/g;
/**
 * `compute`, remembered for the last `REMEMBERED` arguments: a stream guard looks at the same held
 * text again with every delta, and the checksum and numbering-plan checks are the costly part.
 */
const REMEMBERED = 512;
function remembered<V>(compute: (key: string) => V): (key: string) => V {
  const verdicts = new Map<string, V>();
  return (key) => {
    if (verdicts.has(key)) return verdicts.get(key)!;
    const verdict = compute(key);
    if (verdicts.size >= REMEMBERED) verdicts.delete(verdicts.keys().next().value!);
    verdicts.set(key, verdict);
    return verdict;
  };
}

const validCard = remembered((digits) => cardValidator.number(digits).isValid);
const isCard = (value: string) => validCard(value.replace(/[ -]/g, ''));

/** Compact (`GB82WEST12345698765432`) or printed in groups of four (`GB82 WEST 1234 …`). */
const IBAN_CANDIDATE = /\b[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)\b/g;
const isIban = (value: string) => isValidIBAN(electronicFormatIBAN(value) ?? '');

const EMAIL = /\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b/g;
/** Dashed only: nine bare digits are as often an id. Never issued: area 000, 666, 9xx; group 00; serial 0000. */
const US_SSN = /\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b/g;
/** Two prefix letters (not D, F, I, Q, U, V; O not second; not BG, GB, KN, NK, NT, TN, ZZ), six digits, A–D. */
const UK_NINO = /\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b/g;
const IPV4 = /(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])/g;
const IPV6 = /(?<![\w:])(?:[A-Fa-f0-9]{0,4}:){2,7}[A-Fa-f0-9]{0,4}(?![\w:])/g;

/** Digits with the separators phone numbers are written with, an opening `+` or `(` included. */
const PHONE_CANDIDATE = /(?:\+|\()?\d(?:[\d \t().-]|\/){5,24}\d\)?/g;

/** Key formats of the providers and platforms a prompt is most likely to carry, by their documented prefixes. */
const SECRETS: [id: string, pattern: RegExp][] = [
  ['secret.private-key', /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----/g],
  ['secret.aws-access-key', /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/g],
  ['secret.github-token', /\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b/g],
  ['secret.anthropic-key', /\bsk-ant-[A-Za-z0-9_-]{20,}/g],
  ['secret.openai-key', /\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}/g],
  ['secret.google-api-key', /\bAIza[0-9A-Za-z_-]{35}\b/g],
  ['secret.slack-token', /\bxox[abposr]-[A-Za-z0-9-]{10,}\b/g],
  ['secret.stripe-key', /\b(?:sk|rk)_live_[0-9A-Za-z]{24,}\b/g],
  ['secret.jwt', /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g],
  // platform/access/access-store.ts newKeySecret: mg_<id>_<32 random bytes, base64url>.
  ['secret.modelgraph-key', /\bmg_[a-z0-9-]{1,64}_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/g],
];

/** The valid phone numbers in a candidate span (`<region> <span>`), as offsets in the span. */
const phoneSpans = remembered((key) => {
  const space = key.indexOf(' ');
  const region = (key.slice(0, space) || undefined) as CountryCode | undefined;
  const spans: [number, number][] = [];
  for (const found of findNumbers(key.slice(space + 1), { v2: true, ...(region && { defaultCountry: region }) })) {
    if (found.number.isValid()) spans.push([found.startsAt, found.endsAt]);
  }
  return spans;
});

/**
 * What every built-in rule needs in the text: a digit, an `@`, or a secret's prefix. Text with
 * none (most prose, most stream deltas) has no finding but a tenant's own patterns.
 */
const ANY_BUILT_IN = /[\d@]|AKIA|ASIA|gh[pousr]_|github_pat_|sk-|AIza|xox[abposr]-|_live_|eyJ|mg_|-----BEGIN/;

/** In order of precedence: where two findings overlap, the earlier rule's wins. */
const RULES: Rule[] = [
  ...SECRETS.map(([id, pattern]): Rule => ({ id, type: 'SECRET', find: (text) => matches(text, pattern) })),
  {
    id: 'custom',
    type: 'CUSTOM',
    *find(text, { custom = [] }) {
      for (const { name, pattern } of custom) {
        const global = pattern.global ? pattern : new RegExp(pattern.source, `${pattern.flags}g`);
        for (const [start, end] of matches(text, global, (value) => value.length > 0)) yield [start, end, `custom.${name}`];
      }
    },
  },
  { id: 'card', type: 'CARD', find: (text) => matches(text, CARD_CANDIDATE, isCard) },
  { id: 'iban', type: 'IBAN', find: (text) => matches(text, IBAN_CANDIDATE, isIban) },
  { id: 'us-ssn', type: 'US_SSN', find: (text) => matches(text, US_SSN) },
  { id: 'uk-nino', type: 'UK_NINO', find: (text) => matches(text, UK_NINO) },
  { id: 'email', type: 'EMAIL', find: (text) => matches(text, EMAIL) },
  { id: 'ip-address', type: 'IP_ADDRESS', find: (text) => matches(text, IPV4, isIPv4) },
  { id: 'ip-address', type: 'IP_ADDRESS', find: (text) => matches(text, IPV6, isIPv6) },
  {
    id: 'phone',
    type: 'PHONE',
    *find(text, { phoneRegion, openEnd }) {
      // The numbering-plan search is slow over long text (≈ 1.4 ms a KB of text dense with
      // numbers): it reads only the spans that could be a phone number, 7 to 15 digits.
      for (const candidate of text.matchAll(PHONE_CANDIDATE)) {
        // Without a region only international numbers (`+…`) can be read as phone numbers.
        if (!phoneRegion && !candidate[0].startsWith('+')) continue;
        if (openEnd && candidate.index + candidate[0].length === text.length) continue;
        const digits = candidate[0].replace(/\D/g, '').length;
        if (digits < 7 || digits > 15) continue;
        for (const [start, end] of phoneSpans(`${phoneRegion ?? ''} ${candidate[0]}`))
          yield [candidate.index + start, candidate.index + end];
      }
    },
  },
];

/** The sensitive values in `text`, in order, none overlapping another. */
export function detect(text: string, options: DetectorOptions = {}): Finding[] {
  if (!options.custom?.length && !ANY_BUILT_IN.test(text)) return [];
  const found: (Finding & { precedence: number })[] = [];
  RULES.forEach((rule, precedence) => {
    for (const [start, end, id = rule.id] of rule.find(text, options)) found.push({ type: rule.type, rule: id, start, end, precedence });
  });
  found.sort((a, b) => a.precedence - b.precedence || a.start - b.start || b.end - a.end);
  const kept: Finding[] = [];
  for (const { precedence: _precedence, ...finding } of found) {
    if (kept.some((other) => finding.start < other.end && other.start < finding.end)) continue;
    kept.push(finding);
  }
  return kept.sort((a, b) => a.start - b.start);
}
