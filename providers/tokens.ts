/**
 * Token counting with gpt-tokenizer (o200k_base, the encoding of current OpenAI models). It is the
 * count we use when a provider reports no usage, for the local models, and for context-window
 * checks before a call; for other vendors' models it is a close estimate, not their exact count.
 */
import { countTokens, decode, encode } from 'gpt-tokenizer';
import type { ChatMessage } from './contract.ts';

/** Per-message framing overhead of the chat format (role and separators), as OpenAI documents it. */
const TOKENS_PER_MESSAGE = 3;
/** Every reply is primed with `<|start|>assistant<|message|>`. */
const TOKENS_REPLY_PRIMING = 3;

export function countTextTokens(text: string): number {
  return text.length === 0 ? 0 : countTokens(text);
}

export function countChatTokens(messages: readonly ChatMessage[]): number {
  let total = TOKENS_REPLY_PRIMING;
  for (const message of messages) {
    total += TOKENS_PER_MESSAGE + countTextTokens(message.role) + countTextTokens(message.content);
    if (message.role === 'assistant') {
      for (const call of message.toolCalls ?? []) total += countTextTokens(call.name) + countTextTokens(call.arguments);
    }
  }
  return total;
}

/** The longest prefix of `text` that is at most `maxTokens` tokens. */
export function truncateToTokens(text: string, maxTokens: number): { text: string; tokens: number; truncated: boolean } {
  const tokens = encode(text);
  if (tokens.length <= maxTokens) return { text, tokens: tokens.length, truncated: false };
  return { text: decode(tokens.slice(0, maxTokens)), tokens: maxTokens, truncated: true };
}
