/** What every adapter test does the same way: call options, draining a stream, catching a ProviderError. */
import { expect } from 'vitest';
import type { CallOptions, ChatStreamPart } from '../../providers/contract.ts';
import { ProviderError } from '../../providers/errors.ts';

export const callOptions = (requestId = 'req-1'): CallOptions => ({ signal: new AbortController().signal, requestId });

export async function collect(stream: AsyncIterable<ChatStreamPart>): Promise<ChatStreamPart[]> {
  const parts: ChatStreamPart[] = [];
  for await (const part of stream) parts.push(part);
  return parts;
}

/** The ProviderError a call rejects with; fails the test if it resolves or rejects with anything else. */
export async function providerError(promise: Promise<unknown>): Promise<ProviderError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(ProviderError);
  return error as ProviderError;
}
