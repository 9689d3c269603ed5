import { countTokens } from 'gpt-tokenizer';
import { describe, expect, it } from 'vitest';
import { countTextTokens, truncateToTokens } from './tokens.ts';

describe('token counting', () => {
  it('counts prose exactly as the tokenizer does', () => {
    const prose = 'The quick brown fox jumps over the lazy dog. Numbers 12345 and symbols #!? too.\n'.repeat(50);
    expect(countTextTokens(prose)).toBe(countTokens(prose));
  });

  it('counts special-token text as plain text instead of throwing', () => {
    expect(countTextTokens('a <|endoftext|> b <|im_start|>')).toBeGreaterThan(5);
    const truncated = truncateToTokens('say <|endoftext|> please', 100);
    expect(truncated.text).toBe('say <|endoftext|> please');
  });

  it('counts a megabyte without whitespace (linear, not quadratic: this would take minutes in one piece)', () => {
    const run = 'a'.repeat(1_000_000);
    const tokens = countTextTokens(run);
    expect(tokens).toBeGreaterThan(1_000_000 / 256);
    expect(tokens).toBeLessThan(1_000_000);
  });

  it('truncates to a prefix and joins slices back to the original text', () => {
    const text = `start ${'x'.repeat(1000)} end`;
    expect(truncateToTokens(text, 1_000_000).text).toBe(text);
    const cut = truncateToTokens(text, 3);
    expect(cut.truncated).toBe(true);
    expect(text.startsWith(cut.text)).toBe(true);
  });
});
