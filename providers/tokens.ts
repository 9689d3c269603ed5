/**
 * Token counting with gpt-tokenizer (o200k_base, the encoding of current OpenAI models). It is the
 * count we use when a provider reports no usage, for the local models, and for context-window
 * checks before a call; for other vendors' models it is a close estimate, not their exact count.
 *
 * Two guards make it safe on hostile input: special-token text such as `<|endoftext|>` counts as
 * plain text (the library throws on it by default), and long runs without whitespace are encoded
 * in slices, because BPE merging is quadratic in the length of such a run (80 KB of "aaaa…" took
 * 5 s in one piece). Slicing can shift the count by a token per slice, only in such runs.
 */
import { createRequire } from 'node:module';
import type { ChatMessage, TokenUsage } from './contract.ts';

type Tokenizer = typeof import('gpt-tokenizer');

let tokenizer: Tokenizer | undefined;

/**
 * Loaded on first use (about 140 ms, once): its o200k tables take some 66 MB of memory, which a
 * process that never counts tokens — a router alone, the usage or access subgraph — should not
 * carry. Synchronously, through the package's CommonJS build, because counting is synchronous.
 */
function loaded(): Tokenizer {
  tokenizer ??= createRequire(import.meta.url)('gpt-tokenizer') as Tokenizer;
  return tokenizer;
}

/** Per-message framing overhead of the chat format (role and separators), as OpenAI documents it. */
const TOKENS_PER_MESSAGE = 3;
/** Every reply is primed with `<|start|>assistant<|message|>`. */
const TOKENS_REPLY_PRIMING = 3;
/** Longest run of non-whitespace characters encoded in one piece. */
const MAX_RUN = 256;

const PLAIN = { disallowedSpecial: new Set<string>() };

/** Splits text into pieces that encode in linear time and join back to the text. */
function pieces(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (const run of text.matchAll(new RegExp(`\\S{${MAX_RUN + 1},}`, 'g'))) {
    if (run.index > start) out.push(text.slice(start, run.index));
    for (let offset = 0; offset < run[0].length; offset += MAX_RUN) out.push(run[0].slice(offset, offset + MAX_RUN));
    start = run.index + run[0].length;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

export function countTextTokens(text: string): number {
  let total = 0;
  for (const piece of pieces(text)) total += loaded().countTokens(piece, PLAIN);
  return total;
}

const tokensOfRole = new Map<string, number>();

/** A role's count, made once per role (there are four). */
function roleTokens(role: string): number {
  let tokens = tokensOfRole.get(role);
  if (tokens === undefined) {
    tokens = countTextTokens(role);
    tokensOfRole.set(role, tokens);
  }
  return tokens;
}

/**
 * What an image is counted as before the provider says: about the most any of them charges for
 * one (Anthropic ~1,600 for a 1.15-megapixel image; OpenAI 765 for a 1024² high-detail one), so a
 * reservation covers it. The provider's reported usage settles the real figure.
 */
export const IMAGE_TOKENS = 1_600;

export function countChatTokens(messages: readonly ChatMessage[]): number {
  let total = TOKENS_REPLY_PRIMING;
  for (const message of messages) {
    total += TOKENS_PER_MESSAGE + roleTokens(message.role) + countTextTokens(message.content);
    if (message.role === 'user' && message.parts) {
      for (const part of message.parts) if (part.type === 'image') total += IMAGE_TOKENS;
    }
    if (message.role === 'assistant') {
      for (const call of message.toolCalls ?? []) total += countTextTokens(call.name) + countTextTokens(call.arguments);
    }
  }
  return total;
}

/** Usage from two counts; the total is their sum unless the provider reports its own. */
export function tokenUsage(promptTokens: number, completionTokens: number, totalTokens?: number | null): TokenUsage {
  return { promptTokens, completionTokens, totalTokens: totalTokens ?? promptTokens + completionTokens };
}

/** The longest prefix of `text` that is at most `maxTokens` tokens. */
export function truncateToTokens(text: string, maxTokens: number): { text: string; tokens: number; truncated: boolean } {
  const { encode, decode } = loaded();
  const tokens = pieces(text).flatMap((piece) => encode(piece, PLAIN));
  if (tokens.length <= maxTokens) return { text, tokens: tokens.length, truncated: false };
  return { text: decode(tokens.slice(0, maxTokens)), tokens: maxTokens, truncated: true };
}
