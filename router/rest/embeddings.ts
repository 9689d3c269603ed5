/**
 * `POST /v1/embeddings`, OpenAI's Embeddings API, onto `Query.embeddings`: `input` as a string or
 * an array of strings, `dimensions`, `encoding_format` float or base64 (little-endian float32, as
 * OpenAI encodes it). Token arrays are refused: no catalog model takes them.
 */
import { z } from 'zod';
import { ErrorCode } from '../../platform/errors.ts';
import { MAX_INT } from './chat-completions.ts';
import type { RestError } from './errors.ts';

export const embeddingsRequest = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string()), z.array(z.number()), z.array(z.array(z.number()))]),
    dimensions: z.number().int().positive().max(MAX_INT).optional(),
    encoding_format: z.enum(['float', 'base64']).optional(),
    user: z.string().optional(),
  })
  .strict();

export type EmbeddingsRequest = z.output<typeof embeddingsRequest>;

export const EMBEDDINGS_DOCUMENT = `query OpenAIEmbeddings($input: EmbeddingsInput!) {
  embeddings(input: $input) { vectors usage { promptTokens totalTokens } }
}`;

export function toEmbeddingsInput(request: EmbeddingsRequest, tags: string[]): { input: Record<string, unknown> } | { error: RestError } {
  const inputs = typeof request.input === 'string' ? [request.input] : request.input;
  if (!inputs.every((each): each is string => typeof each === 'string')) {
    return { error: { code: ErrorCode.BAD_USER_INPUT, message: 'token arrays as input are not supported by this server', param: 'input' } };
  }
  return { input: { model: request.model, inputs, tags, ...(request.dimensions !== undefined && { dimensions: request.dimensions }) } };
}

const base64Of = (vector: number[]) => Buffer.from(new Float32Array(vector).buffer).toString('base64');

export function embeddingsList(
  answer: { vectors: number[][]; usage: { promptTokens: number; totalTokens: number } },
  model: string,
  format: 'float' | 'base64',
) {
  return {
    object: 'list',
    data: answer.vectors.map((vector, index) => ({
      object: 'embedding',
      index,
      embedding: format === 'base64' ? base64Of(vector) : vector,
    })),
    model,
    usage: { prompt_tokens: answer.usage.promptTokens, total_tokens: answer.usage.totalTokens },
  };
}
