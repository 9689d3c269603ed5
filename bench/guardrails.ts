/**
 * What the guardrails cost per KB of text, in this process (no server): detecting (cards, IBANs,
 * personal data, secrets) and applying the actions (mask), and the injection rules, over
 *
 *   - prose: ordinary business text with dates, amounts and ids but nothing sensitive;
 *   - dense: the same with a card number, an e-mail address and a phone number every 450 characters;
 *
 * every paragraph with numbers of its own (a detector never sees a value twice, as in real text);
 *
 * and the stream guard over the dense text in 7-character deltas (the most it held back). Issue 16's
 * target is ≤ 0.2 ms per KB of prompt.
 *
 *   npx tsx bench/guardrails.ts [--kb 100] [--rounds 20]
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { detect } from '../platform/guardrails/detectors.ts';
import { screenInjection } from '../platform/guardrails/injection.ts';
import { applyActions, Pseudonyms } from '../platform/guardrails/redact.ts';
import { StreamGuard } from '../platform/guardrails/stream.ts';

const { values } = parseArgs({ options: { kb: { type: 'string', default: '100' }, rounds: { type: 'string', default: '20' } } });
const KB = Number(values.kb);
const ROUNDS = Number(values.rounds);

/** Every paragraph's numbers differ (no detector sees the same value twice, as in real text). */
let seed = 7;
const random = (below: number) => {
  seed = (seed * 48_271) % 2_147_483_647;
  return seed % below;
};
const digits = (count: number) => Array.from({ length: count }, () => random(10)).join('');
/** A Visa number that passes Luhn: 15 random digits after the 4, then the check digit. */
function card(): string {
  const body = `4${digits(14)}`;
  const sum = [...body].reverse().reduce((total, digit, i) => {
    const value = Number(digit) * (i % 2 === 0 ? 2 : 1);
    return total + (value > 9 ? value - 9 : value);
  }, 0);
  return `${body}${(10 - (sum % 10)) % 10}`.replace(/(\d{4})(?=\d)/g, '$1 ');
}
const prose = () =>
  `The invoice of 2026-${1 + random(12)}-${1 + random(28)} totals $${random(9_000) + 1_000},${digits(3)}.${digits(2)}, due ${1 + random(28)}/0${1 + random(9)}/2027. ` +
  `Release ${random(20)}.${random(10)}.${random(10)} fixed bug ${digits(4)}; the build runs at ${10 + random(14)}:${10 + random(50)}:${10 + random(50)}. ` +
  `Our revenue grew ${random(30)}.${random(10)}% to ${random(9) + 1},${digits(3)},000 in Q3 with ${digits(7)} users. Lorem ipsum dolor sit amet, consectetur adipiscing elit. `;
const dense = () => `${prose()}Please charge ${card()}, mail user${digits(5)}@example.com or call +44 20 7946 ${digits(4)}. `;
function sized(paragraph: () => string): string {
  let text = '';
  while (text.length < KB * 1024) text += paragraph();
  return text.slice(0, KB * 1024);
}
const mask = () => 'MASK' as const;

/** CPU ms per KB of `work(text)`, after a warm-up. */
function perKb(text: string, work: (text: string) => unknown): number {
  for (let i = 0; i < 3; i++) work(text);
  const start = process.cpuUsage();
  for (let i = 0; i < ROUNDS; i++) work(text);
  const { user, system } = process.cpuUsage(start);
  return (user + system) / 1000 / ROUNDS / KB;
}

const rows: string[] = [];
for (const [name, text] of [
  ['prose', sized(prose)],
  ['dense', sized(dense)],
] as const) {
  const detectMs = perKb(text, (t) => detect(t));
  const guardMs = perKb(text, (t) => applyActions(t, detect(t), 'PROMPT', mask, new Pseudonyms()));
  const injectionMs = perKb(text, (t) => screenInjection(t));
  rows.push(
    `| ${name} | ${detect(text).length} | ${detectMs.toFixed(4)} | ${guardMs.toFixed(4)} | ${injectionMs.toFixed(4)} | ${(guardMs + injectionMs).toFixed(4)} |`,
  );
}

const stream = new StreamGuard({
  direction: 'RESPONSE',
  detect: (t, openEnd) => detect(t, { openEnd }),
  actionFor: mask,
  pseudonyms: new Pseudonyms(),
});
// Warmed on text of its own first (the detectors' code, not their caches: other numbers).
for (const delta of sized(dense).match(/.{1,7}/gs)!) stream.push(delta);
stream.end();
stream.maxHeld = 0;
const deltas = sized(dense).match(/.{1,7}/gs)!;
const streamStart = process.cpuUsage();
for (const delta of deltas) stream.push(delta);
stream.end();
const streamCpu = process.cpuUsage(streamStart);

const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD']).toString().trim();
console.log(
  [
    '## guardrails.ts',
    '',
    `- machine: ${cpus().length} × ${cpus()[0]?.model}, Node ${process.version}; commit ${commit}`,
    `- command: \`npx tsx bench/guardrails.ts --kb ${KB} --rounds ${ROUNDS}\``,
    '',
    '| text | findings | detect ms/KB | detect + mask ms/KB | injection rules ms/KB | all ms/KB |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    `Stream guard over the dense text in ${deltas.length} deltas of 7 characters: ${(((streamCpu.user + streamCpu.system) / 1000 / KB) * 1).toFixed(3)} ms/KB, at most ${stream.maxHeld} characters held back.`,
  ].join('\n'),
);
