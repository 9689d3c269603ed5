import { describe, expect, it } from 'vitest';
import { detect, type EntityType } from './detectors.ts';
import { type Action, applyActions, Pseudonyms } from './redact.ts';
import { HOLD_BACK, RELEASE_STEP, StreamGuard } from './stream.ts';

const actionsOf =
  (table: Partial<Record<EntityType, Action>>) =>
  (type: EntityType): Action =>
    table[type] ?? 'ALLOW';

function guard(table: Partial<Record<EntityType, Action>>, pseudonyms = new Pseudonyms()) {
  return new StreamGuard({
    direction: 'RESPONSE',
    detect: (text, openEnd) => detect(text, { openEnd }),
    actionFor: actionsOf(table),
    pseudonyms,
  });
}

/** Streams `deltas` through `guard`; every piece it let out, and all of it joined. */
function run(stream: StreamGuard, deltas: string[]) {
  const pieces = deltas.map((delta) => stream.push(delta).text);
  pieces.push(stream.end().text);
  return { pieces, text: pieces.join('') };
}

describe('StreamGuard', () => {
  it('catches a card number split across three deltas, and never lets any of its digits out', () => {
    const stream = guard({ CARD: 'MASK' });
    const { pieces, text } = run(stream, ['Your card is 4111 11', '11 1111 11', '11 and it is on file.']);
    expect(text).toBe('Your card is [CARD …1111] and it is on file.');
    for (const piece of pieces) expect(piece).not.toMatch(/4111|1111 1/);
  });

  it('lets ordinary text through unchanged, holding back no more than HOLD_BACK characters and the word in progress', () => {
    const answer = 'The quarterly report shows revenue of 3,400,000 in Q3, up 12.5% on 2026-09-30. '.repeat(20);
    const stream = guard({ CARD: 'MASK', EMAIL: 'MASK' });
    const deltas = answer.match(/.{1,7}/gs)!;
    const { text } = run(stream, deltas);
    expect(text).toBe(answer);
    expect(stream.maxHeld).toBeLessThanOrEqual(HOLD_BACK + RELEASE_STEP + 16);
  });

  it('holds a key streamed a few characters at a time until it is whole, then masks it', () => {
    const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U';
    const stream = guard({ SECRET: 'MASK' });
    const { pieces, text } = run(stream, `token: ${jwt} done`.match(/.{1,3}/gs)!);
    expect(text).toBe('token: [SECRET] done');
    for (const piece of pieces) expect(piece).not.toMatch(/eyJ|dozj/);
  });

  it('holds an unfinished private-key block, whitespace and all, until its END line', () => {
    const block = `-----BEGIN PRIVATE KEY-----\n${'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n'.repeat(20)}-----END PRIVATE KEY-----`;
    const stream = guard({ SECRET: 'MASK' });
    const { pieces, text } = run(stream, `here:\n${block}\nok`.match(/.{1,50}/gs)!);
    expect(text).toBe('here:\n[SECRET]\nok');
    for (const piece of pieces) expect(piece).not.toContain('MIIE');
  });

  it('ends the stream at a value to block: what came before it may go, nothing of it or after it does', () => {
    const stream = guard({ US_SSN: 'BLOCK' });
    const released = [stream.push(`${'All fine so far. '.repeat(5)}Your SSN is 123-45-`), stream.push('6789, keep it safe.'), stream.end()];
    const text = released.map((piece) => piece.text).join('');
    expect(stream.blocked).toBe(true);
    expect('All fine so far. '.repeat(5).startsWith(text.slice(0, 40))).toBe(true);
    expect(text).not.toMatch(/123|6789|keep it safe/);
    expect(released.find((piece) => piece.decision.blocked)?.decision.entities).toEqual([{ type: 'US_SSN', action: 'BLOCK', count: 1 }]);
  });

  it('restores the request’s placeholders, even one split across deltas, after handling the answer’s own values', () => {
    const pseudonyms = new Pseudonyms();
    const prompt = 'Draft a reply to jane@example.com';
    applyActions(prompt, detect(prompt), 'PROMPT', actionsOf({ EMAIL: 'PSEUDONYMIZE' }), pseudonyms);
    const stream = guard({ EMAIL: 'MASK' }, pseudonyms);
    const { text } = run(stream, ['Dear [EMA', 'IL_1], I copied bob@exa', 'mple.org.']);
    expect(text).toBe('Dear jane@example.com, I copied [EMAIL].');
  });
});
