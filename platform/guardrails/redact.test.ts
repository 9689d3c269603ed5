import { describe, expect, it } from 'vitest';
import { detect, type EntityType } from './detectors.ts';
import { type Action, applyActions, Pseudonyms } from './redact.ts';

const actions =
  (table: Partial<Record<EntityType, Action>>) =>
  (type: EntityType): Action =>
    table[type] ?? 'ALLOW';

describe('applyActions', () => {
  const text = 'Card 4111 1111 1111 1111, mail jane@example.com, again jane@example.com, key AKIAIOSFODNN7EXAMPLE.';

  it('masks with typed placeholders (a card keeps its last four) and says what it did, never the values', () => {
    const { text: out, decision } = applyActions(
      text,
      detect(text),
      'PROMPT',
      actions({ CARD: 'MASK', SECRET: 'MASK', EMAIL: 'LOG' }),
      new Pseudonyms(),
    );
    expect(out).toBe('Card [CARD …1111], mail jane@example.com, again jane@example.com, key [SECRET].');
    expect(decision).toEqual({
      direction: 'PROMPT',
      entities: [
        { type: 'CARD', action: 'MASK', count: 1 },
        { type: 'EMAIL', action: 'LOG', count: 2 },
        { type: 'SECRET', action: 'MASK', count: 1 },
      ],
      rules: ['card', 'email', 'secret.aws-access-key'],
      blocked: false,
    });
    expect(JSON.stringify(decision)).not.toMatch(/4111|jane|AKIA/);
  });

  it('pseudonymizes a value to the same placeholder each time, and restores the answer for the caller', () => {
    const pseudonyms = new Pseudonyms();
    const { text: out } = applyActions(text, detect(text), 'PROMPT', actions({ EMAIL: 'PSEUDONYMIZE', CARD: 'PSEUDONYMIZE' }), pseudonyms);
    expect(out).toBe('Card [CARD_1], mail [EMAIL_1], again [EMAIL_1], key AKIAIOSFODNN7EXAMPLE.');
    expect(pseudonyms.restore('I wrote to [EMAIL_1] about [CARD_1] and [EMAIL_9].')).toBe(
      'I wrote to jane@example.com about 4111 1111 1111 1111 and [EMAIL_9].',
    );
  });

  it('blocks, leaving the text as it was (it is not to be sent) and naming the types', () => {
    const { text: out, decision } = applyActions(text, detect(text), 'PROMPT', actions({ CARD: 'BLOCK', EMAIL: 'MASK' }), new Pseudonyms());
    expect(out).toBe(text);
    expect(decision.blocked).toBe(true);
    expect(decision.entities.map(({ type, action }) => [type, action])).toEqual([
      ['CARD', 'BLOCK'],
      ['EMAIL', 'MASK'],
    ]);
  });
});
