/**
 * What every adapter does the same way around its own wire format: reading a whole JSON answer,
 * naming a malformed one, keeping secrets out of upstream messages, and counting usage when a
 * provider reports none.
 */
import type { Response } from 'undici';
import type { CallOptions, ChatRequest, TokenUsage } from './contract.ts';
import { ProviderError, errorFromException } from './errors.ts';
import { countChatTokens, countTextTokens } from './tokens.ts';

/** Counts usage ourselves for providers that report none. */
export function countedUsage(request: ChatRequest, completion: string): TokenUsage {
  const promptTokens = countChatTokens(request.messages);
  const completionTokens = countTextTokens(completion);
  return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
}

export function badResponse(provider: string, detail: string, cause?: unknown): ProviderError {
  return new ProviderError(`${provider} sent a malformed response`, {
    code: 'UPSTREAM_BAD_RESPONSE',
    provider,
    retryable: false,
    upstreamMessage: detail,
    cause,
  });
}

/** Reads a whole JSON body: a syntax error is a bad response, a timeout or cut body is not. */
export async function readJson(provider: string, response: Response, options: CallOptions): Promise<unknown> {
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    if (options.signal.aborted) throw options.signal.reason;
    throw errorFromException(provider, error, 'body');
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw badResponse(provider, 'body is not JSON', error);
  }
}

/** Upstream messages are logged; some providers echo the credential they refused. */
export function redact(message: string | undefined, ...secrets: (string | undefined)[]): string | undefined {
  let out = message;
  for (const secret of secrets) if (out && secret) out = out.replaceAll(secret, '[redacted]');
  return out;
}
