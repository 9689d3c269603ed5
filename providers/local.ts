/**
 * The `local` provider: the offline default, so modelgraph starts and its tests run with no keys
 * and no network. Neither model is a language model:
 * - `echo` answers with the last user message, streamed in word-sized deltas that concatenate to
 *   exactly that text, with token counts from the real tokenizer (and `maxTokens` honoured);
 * - `hashing-embed` embeds text by feature hashing of its words into a fixed number of signed
 *   buckets, L2-normalised: similar wording gives similar vectors, meaning does not.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type {
  CallOptions,
  ChatModel,
  ChatRequest,
  ChatResult,
  ChatStreamPart,
  EmbeddingModel,
  EmbeddingResult,
  Provider,
} from './contract.ts';
import { countChatTokens, countTextTokens, truncateToTokens } from './tokens.ts';

/** Splits text into word-sized pieces (a word and the whitespace after it) that join back to it. */
export function wordPieces(text: string): string[] {
  return text.match(/\s+|\S+\s*/g) ?? [];
}

function echoAnswer(request: ChatRequest): ChatResult {
  const lastUser = request.messages.findLast((message) => message.role === 'user');
  const answer = truncateToTokens(lastUser?.content ?? '', request.maxTokens ?? Number.POSITIVE_INFINITY);
  const promptTokens = countChatTokens(request.messages);
  return {
    content: answer.text,
    toolCalls: [],
    finishReason: answer.truncated ? 'length' : 'stop',
    usage: { promptTokens, completionTokens: answer.tokens, totalTokens: promptTokens + answer.tokens },
  };
}

class EchoChatModel implements ChatModel {
  readonly provider: string;
  readonly modelId: string;

  constructor(provider: string, modelId: string, private readonly streamDelayMs: number) {
    this.provider = provider;
    this.modelId = modelId;
  }

  async generate(request: ChatRequest): Promise<ChatResult> {
    return echoAnswer(request);
  }

  async *stream(request: ChatRequest, { signal }: CallOptions): AsyncGenerator<ChatStreamPart> {
    const result = echoAnswer(request);
    for (const piece of wordPieces(result.content)) {
      if (this.streamDelayMs > 0) {
        try {
          await sleep(this.streamDelayMs, undefined, { signal });
        } catch {
          return; // aborted by the caller: nobody is listening
        }
      }
      if (signal.aborted) return;
      yield { type: 'text-delta', text: piece };
    }
    yield { type: 'finish', finishReason: result.finishReason, usage: result.usage };
  }
}

/** 32-bit FNV-1a with a seed, so one word gives independent bucket and sign hashes. */
function fnv1a(text: string, seed: number): number {
  let hash = (0x811c9dc5 ^ seed) >>> 0;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

export function hashingEmbedding(text: string, dimensions: number): number[] {
  const vector = new Array<number>(dimensions).fill(0);
  for (const word of text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []) {
    const bucket = fnv1a(word, 0) % dimensions;
    vector[bucket]! += (fnv1a(word, 1) & 1) === 0 ? 1 : -1;
  }
  const norm = Math.hypot(...vector);
  return norm === 0 ? vector : vector.map((value) => value / norm);
}

class HashingEmbeddingModel implements EmbeddingModel {
  constructor(
    readonly provider: string,
    readonly modelId: string,
    readonly maxBatchSize: number,
    private readonly defaultDimensions: number,
  ) {}

  async embed(inputs: string[], { dimensions }: CallOptions & { dimensions?: number }): Promise<EmbeddingResult> {
    const size = dimensions ?? this.defaultDimensions;
    const promptTokens = inputs.reduce((sum, input) => sum + countTextTokens(input), 0);
    return { vectors: inputs.map((input) => hashingEmbedding(input, size)), usage: { promptTokens, totalTokens: promptTokens } };
  }
}


export class UnknownLocalModelError extends Error {
  override name = 'UnknownLocalModelError';
}

export function createLocalProvider(name: string, settings: { streamDelayMs: number }): Provider {
  return {
    name,
    chatModel(modelId) {
      if (modelId !== 'echo') throw new UnknownLocalModelError(`the local provider has no chat model "${modelId}" (it has: echo)`);
      return new EchoChatModel(name, modelId, settings.streamDelayMs);
    },
    embeddingModel(modelId, defaults) {
      if (modelId !== 'hashing-embed') {
        throw new UnknownLocalModelError(`the local provider has no embedding model "${modelId}" (it has: hashing-embed)`);
      }
      return new HashingEmbeddingModel(name, modelId, defaults.maxBatchSize, defaults.dimensions);
    },
    close: async () => {},
  };
}
