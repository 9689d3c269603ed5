/**
 * The `local` provider: the offline default, so modelgraph starts and its tests run with no keys
 * and no network. Neither model is a language model:
 * - `echo` answers with the last user message, streamed in word-sized deltas that concatenate to
 *   exactly that text, with token counts from the real tokenizer (and `maxTokens` honoured). So
 *   that tool loops (agents) can be tried offline, it "calls" a tool it was given when the last
 *   message is `/call <tool> <JSON arguments>`, and after tool results it echoes them;
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
  ToolCall,
} from './contract.ts';
import { countChatTokens, countTextTokens, tokenUsage, truncateToTokens } from './tokens.ts';

/** Splits text into word-sized pieces (a word and the whitespace after it) that join back to it. */
export function wordPieces(text: string): string[] {
  return text.match(/\s+|\S+\s*/g) ?? [];
}

const CALL = /^\/call\s+(\S+)\s*([\s\S]*)$/;

/** What echo echoes: the tool results after its last tool calls, else the last user message. */
function echoed(request: ChatRequest): string {
  const last = request.messages.at(-1);
  if (last?.role === 'tool') {
    const results = request.messages.slice(request.messages.findLastIndex((message) => message.role !== 'tool') + 1);
    return results.map((message) => message.content).join('\n');
  }
  return request.messages.findLast((message) => message.role === 'user')?.content ?? '';
}

/** `/call <tool> <arguments>` as the last message, naming a tool the request offers. */
function requestedCall(request: ChatRequest): ToolCall | undefined {
  const last = request.messages.at(-1);
  const match = last?.role === 'user' ? CALL.exec(last.content.trim()) : null;
  if (!match || !request.tools?.some((tool) => tool.name === match[1])) return undefined;
  return { id: `call_${request.messages.length}`, name: match[1]!, arguments: match[2]!.trim() || '{}' };
}

function echoAnswer(request: ChatRequest): ChatResult {
  const promptTokens = countChatTokens(request.messages);
  const call = requestedCall(request);
  if (call) {
    return {
      content: '',
      toolCalls: [call],
      finishReason: 'tool_calls',
      usage: tokenUsage(promptTokens, countTextTokens(call.name + call.arguments)),
    };
  }
  const answer = truncateToTokens(echoed(request), request.maxTokens ?? Number.POSITIVE_INFINITY);
  return {
    content: answer.text,
    toolCalls: [],
    finishReason: answer.truncated ? 'length' : 'stop',
    usage: tokenUsage(promptTokens, answer.tokens),
  };
}

class EchoChatModel implements ChatModel {
  readonly provider: string;
  readonly modelId: string;

  constructor(
    provider: string,
    modelId: string,
    private readonly streamDelayMs: number,
  ) {
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
    for (const [index, call] of result.toolCalls.entries())
      yield { type: 'tool-call-delta', index, id: call.id, name: call.name, argumentsDelta: call.arguments };
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
