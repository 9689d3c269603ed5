import { Sha256 } from '@aws-crypto/sha256-js';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBedrockProvider, decodeEventStream, type BedrockCredentials } from '../providers/bedrock.ts';
import type { ChatStreamPart, Provider } from '../providers/contract.ts';
import type { ProviderError } from '../providers/errors.ts';
import { countTextTokens } from '../providers/tokens.ts';
import {
  corruptFrame,
  eventFrame,
  exceptionFrame,
  startBedrockEmulator,
  type BedrockEmulator,
  type BedrockRecordedRequest,
} from './emulator/bedrock.ts';
import { callOptions, collect, providerError } from './support/provider-calls.ts';

const REGION = 'us-east-1';
const credentials: BedrockCredentials = {
  accessKeyId: 'AKIAWIREFORMAT000001',
  secretAccessKey: 'wire/format+Secret/Key0000000000000000000',
};
const temporary: BedrockCredentials = {
  accessKeyId: 'ASIATEMPORARY0000001',
  secretAccessKey: 'temporary/Secret+Key000000000000000000000',
  sessionToken: 'session-token-0001',
};
const MODEL = 'anthropic.claude-3-5-haiku-20241022-v1:0';
const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 300, totalMs: 10_000 };

let emulator: BedrockEmulator;
let provider: Provider;

const bedrock = (overrides: Partial<Parameters<typeof createBedrockProvider>[0]> = {}) =>
  createBedrockProvider({ name: 'bedrock', endpoint: emulator.baseUrl, region: REGION, credentials, timeouts, ...overrides });

beforeAll(async () => {
  emulator = await startBedrockEmulator({ region: REGION, credentials: [credentials, temporary] });
  provider = bedrock();
});
afterAll(async () => {
  await provider.close();
  await emulator.close();
});

const options = () => callOptions('req-1');
const hello = { messages: [{ role: 'user' as const, content: 'Hello there' }] };

const header = (request: BedrockRecordedRequest, name: string) => String(request.headers[name] ?? '');

/** Recomputes a recorded request's signature independently of the emulator, from what was on the wire. */
async function recomputeAuthorization(request: BedrockRecordedRequest, secret: BedrockCredentials): Promise<string> {
  const signedHeaders = /SignedHeaders=([^,]+)/.exec(header(request, 'authorization'))![1]!.split(';');
  const headers = Object.fromEntries(signedHeaders.map((name) => [name, header(request, name)]));
  const amzDate = header(request, 'x-amz-date');
  const signingDate = new Date(
    `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13)}`,
  );
  const signer = new SignatureV4({ service: 'bedrock', region: REGION, credentials: secret, sha256: Sha256 });
  const signed = await signer.sign(
    new HttpRequest({ method: 'POST', protocol: 'http:', hostname: '127.0.0.1', path: request.path, headers, body: request.rawBody }),
    { signingDate },
  );
  return String(signed.headers.authorization);
}

/** Rewrites a signed request's body (or headers) and replays it, as a tamperer on the wire would. */
async function replay(
  request: BedrockRecordedRequest,
  change: { body?: string; headers?: Record<string, string> },
): Promise<globalThis.Response> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined && !['host', 'content-length', 'connection'].includes(name)) headers[name] = String(value);
  }
  return fetch(`${emulator.baseUrl}${request.path}`, {
    method: 'POST',
    headers: { ...headers, ...change.headers },
    body: change.body ?? request.rawBody,
  });
}

describe('Bedrock adapter: SigV4 signing', () => {
  it('signs each Converse call with SigV4 for bedrock in the configured region, and the signature recomputes', async () => {
    emulator.script({ kind: 'chat', content: 'Hi!', usage: { prompt: 9, completion: 2 } });
    await provider.chatModel(MODEL).generate(hello, options());
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe('/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse');
    expect(header(sent, 'authorization')).toMatch(
      new RegExp(
        `^AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/\\d{8}/us-east-1/bedrock/aws4_request, SignedHeaders=[a-z0-9;-]+, Signature=[0-9a-f]{64}$`,
      ),
    );
    expect(header(sent, 'x-amz-date')).toMatch(/^\d{8}T\d{6}Z$/);
    const signedHeaders = /SignedHeaders=([^,]+)/.exec(header(sent, 'authorization'))![1]!.split(';');
    expect(signedHeaders).toEqual(expect.arrayContaining(['accept', 'content-type', 'host', 'x-amz-content-sha256', 'x-amz-date']));
    expect(header(sent, 'x-amz-content-sha256')).toBe(createHash('sha256').update(sent.rawBody).digest('hex'));
    expect(sent.rawBody).toBe(JSON.stringify(sent.body));
    expect(await recomputeAuthorization(sent, credentials)).toBe(header(sent, 'authorization'));
  });

  it('signs the stream call too, with a model ARN escaped as one path segment', async () => {
    const arn = 'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0';
    const parts = await collect(provider.chatModel(arn).stream(hello, options()));
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: 'stop' });
    const sent = emulator.requests.at(-1)!;
    expect(sent.path).toBe(`/model/${encodeURIComponent(arn)}/converse-stream`);
    expect(header(sent, 'accept')).toBe('application/vnd.amazon.eventstream');
    expect(await recomputeAuthorization(sent, credentials)).toBe(header(sent, 'authorization'));
  });

  it('sends and signs the session token of temporary credentials', async () => {
    const temp = bedrock({ credentials: temporary });
    expect((await temp.chatModel(MODEL).generate(hello, options())).content).toBe('Hello there');
    const sent = emulator.requests.at(-1)!;
    expect(header(sent, 'x-amz-security-token')).toBe(temporary.sessionToken);
    expect(header(sent, 'authorization')).toContain('x-amz-security-token');
    expect(await recomputeAuthorization(sent, temporary)).toBe(header(sent, 'authorization'));
    await temp.close();
  });

  it('is refused (403, auth failed) when signed with the wrong secret, without leaking either secret', async () => {
    const wrong = bedrock({ credentials: { ...credentials, secretAccessKey: 'not-the-secret-access-key' } });
    const error = await providerError(wrong.chatModel(MODEL).generate(hello, options()));
    expect(error).toMatchObject({ status: 403, code: 'UPSTREAM_AUTH_FAILED', retryable: false });
    expect(error.upstreamMessage).toMatch(/^InvalidSignatureException: The request signature we calculated does not match/);
    const parts = await collect(wrong.chatModel(MODEL).stream(hello, options()));
    expect(parts).toMatchObject([{ type: 'error', error: { status: 403, code: 'UPSTREAM_AUTH_FAILED' } }]);
    expect(JSON.stringify({ ...error, message: error.message })).not.toContain('not-the-secret-access-key');
    await wrong.close();
  });

  it('is refused when the signature is scoped to another region', async () => {
    const elsewhere = bedrock({ region: 'eu-west-1' });
    expect(await providerError(elsewhere.chatModel(MODEL).generate(hello, options()))).toMatchObject({
      status: 403,
      upstreamMessage: expect.stringMatching(/^InvalidSignatureException: .*region/),
    });
    await elsewhere.close();
  });

  it('signs the exact bytes it sends: a changed body or token under the same signature is refused', async () => {
    await provider.chatModel(MODEL).generate(hello, options());
    const signed = emulator.requests.at(-1)!;
    expect((await replay(signed, {})).status).toBe(200);
    const tampered = await replay(signed, { body: signed.rawBody.replace('Hello there', 'Hello thief') });
    expect(tampered.status).toBe(403);
    expect(tampered.headers.get('x-amzn-errortype')).toMatch(/^InvalidSignatureException:/);
    const unsigned = await fetch(`${emulator.baseUrl}${signed.path}`, { method: 'POST', body: signed.rawBody });
    expect([unsigned.status, await unsigned.json()]).toEqual([403, { message: 'Missing Authentication Token' }]);
  });
});

describe('Bedrock adapter: Converse wire format', () => {
  it('sends system prompts, inference config, tools and tool choice in the Converse shape', async () => {
    emulator.script({ kind: 'chat', content: 'ok' });
    await provider.chatModel(MODEL).generate(
      {
        messages: [
          { role: 'system', content: 'Be brief.' },
          { role: 'user', content: 'find x' },
        ],
        maxTokens: 50,
        temperature: 0,
        topP: 0.9,
        stop: ['END'],
        tools: [{ name: 'lookup', description: 'Looks up', parameters: { type: 'object', properties: { q: { type: 'string' } } } }],
        toolChoice: 'required',
      },
      options(),
    );
    expect(emulator.requests.at(-1)!.body).toEqual({
      messages: [{ role: 'user', content: [{ text: 'find x' }] }],
      system: [{ text: 'Be brief.' }],
      inferenceConfig: { maxTokens: 50, temperature: 0, topP: 0.9, stopSequences: ['END'] },
      toolConfig: {
        tools: [
          {
            toolSpec: {
              name: 'lookup',
              description: 'Looks up',
              inputSchema: { json: { type: 'object', properties: { q: { type: 'string' } } } },
            },
          },
        ],
        toolChoice: { any: {} },
      },
    });
  });

  it.each([
    ['auto', { auto: {} }],
    [{ name: 'lookup' }, { tool: { name: 'lookup' } }],
    ['none', undefined],
  ] as const)('maps tool choice %j to %j (Converse has no "none": it is left out)', async (choice, wire) => {
    await provider
      .chatModel(MODEL)
      .generate({ ...hello, tools: [{ name: 'lookup', parameters: { type: 'object' } }], toolChoice: choice }, options());
    const toolConfig = emulator.requests.at(-1)!.body.toolConfig as { toolChoice?: unknown; tools: unknown[] };
    expect(toolConfig.tools).toHaveLength(1);
    expect(toolConfig.toolChoice).toEqual(wire);
  });

  it('sends tool calls as toolUse blocks and their results in one user turn, so turns alternate', async () => {
    emulator.script({ kind: 'chat', content: 'Sunny, 21°C.' });
    await provider.chatModel(MODEL).generate(
      {
        messages: [
          { role: 'user', content: 'Weather and time in Paris?' },
          {
            role: 'assistant',
            content: '',
            toolCalls: [
              { id: 'tooluse_1', name: 'weather', arguments: '{"city":"Paris"}' },
              { id: 'tooluse_2', name: 'clock', arguments: '' },
            ],
          },
          { role: 'tool', content: '{"sky":"sunny"}', toolCallId: 'tooluse_1' },
          { role: 'tool', content: '14:00', toolCallId: 'tooluse_2' },
          { role: 'user', content: 'Thanks' },
        ],
        tools: [
          { name: 'weather', parameters: { type: 'object' } },
          { name: 'clock', parameters: { type: 'object' } },
        ],
      },
      options(),
    );
    expect(emulator.requests.at(-1)!.body.messages).toEqual([
      { role: 'user', content: [{ text: 'Weather and time in Paris?' }] },
      {
        role: 'assistant',
        content: [
          { toolUse: { toolUseId: 'tooluse_1', name: 'weather', input: { city: 'Paris' } } },
          { toolUse: { toolUseId: 'tooluse_2', name: 'clock', input: {} } },
        ],
      },
      {
        role: 'user',
        content: [
          { toolResult: { toolUseId: 'tooluse_1', content: [{ json: { sky: 'sunny' } }] } },
          { toolResult: { toolUseId: 'tooluse_2', content: [{ text: '14:00' }] } },
          { text: 'Thanks' },
        ],
      },
    ]);
  });

  it('reads text, tool calls, usage and the request id from a Converse answer', async () => {
    emulator.script({
      kind: 'chat',
      content: 'Let me look.',
      toolCalls: [{ id: 'tooluse_9', name: 'lookup', arguments: '{"q":"x"}' }],
      usage: { prompt: 12, completion: 5 },
    });
    const result = await provider.chatModel(MODEL).generate(hello, options());
    expect(result).toMatchObject({
      content: 'Let me look.',
      toolCalls: [{ id: 'tooluse_9', name: 'lookup', arguments: '{"q":"x"}' }],
      finishReason: 'tool_calls',
      usage: { promptTokens: 12, completionTokens: 5, totalTokens: 17 },
    });
    expect(result.id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it.each([
    ['end_turn', 'stop'],
    ['stop_sequence', 'stop'],
    ['max_tokens', 'length'],
    ['guardrail_intervened', 'content_filter'],
    ['content_filtered', 'content_filter'],
    ['something_new', 'other'],
  ])('maps stopReason %s to %s, whole and streamed', async (stopReason, finishReason) => {
    emulator.script({ kind: 'chat', content: 'x y', finishReason: stopReason }, { kind: 'chat', content: 'x y', finishReason: stopReason });
    expect((await provider.chatModel(MODEL).generate(hello, options())).finishReason).toBe(finishReason);
    expect((await collect(provider.chatModel(MODEL).stream(hello, options()))).at(-1)).toMatchObject({ type: 'finish', finishReason });
  });

  it('names the AWS error type in the upstream message, and treats ModelNotReadyException as unavailable', async () => {
    emulator.script(
      { kind: 'error', status: 400 },
      {
        kind: 'error',
        status: 429,
        headers: { 'x-amzn-errortype': 'ModelNotReadyException:http://internal.amazon.com/coral/com.amazon.bedrock/' },
      },
    );
    expect(await providerError(provider.chatModel(MODEL).generate(hello, options()))).toMatchObject({
      code: 'UPSTREAM_BAD_REQUEST',
      upstreamMessage: 'ValidationException: Malformed input request, please reformat your input and try again.',
    });
    expect(await providerError(provider.chatModel(MODEL).generate(hello, options()))).toMatchObject({
      status: 429,
      code: 'UPSTREAM_UNAVAILABLE',
      retryable: true,
    });
  });

  it('redacts the secret key if an upstream error quotes it', async () => {
    emulator.script({ kind: 'error', status: 403, body: { message: `Key ${credentials.secretAccessKey} is not allowed` } });
    const error = await providerError(provider.chatModel(MODEL).generate(hello, options()));
    expect(error.upstreamMessage).toBe('AccessDeniedException: Key [redacted] is not allowed');
  });

  it('refuses to build an embedding model for now', () => {
    expect(() => provider.embeddingModel('amazon.titan-embed-text-v2:0', { dimensions: 256, maxBatchSize: 1 })).toThrow(
      /not supported yet/,
    );
  });
});

// --- event-stream framing ----------------------------------------------------------------------

const textStream = [
  eventFrame('messageStart', { role: 'assistant' }),
  eventFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Hello ' } }),
  eventFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'world' } }),
  eventFrame('contentBlockStop', { contentBlockIndex: 0 }),
  eventFrame('messageStop', { stopReason: 'end_turn' }),
  eventFrame('metadata', { usage: { inputTokens: 3, outputTokens: 2, totalTokens: 5 }, metrics: { latencyMs: 10 } }),
];

const concat = (frames: Uint8Array[]) => Uint8Array.from(frames.flatMap((frame) => [...frame]));

async function* chunksOf(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    yield bytes.slice(start, cut);
    start = cut;
  }
}

async function eventTypes(body: AsyncIterable<Uint8Array>): Promise<string[]> {
  const types: string[] = [];
  for await (const message of decodeEventStream(body, 'bedrock')) types.push(String(message.headers[':event-type']?.value));
  return types;
}

async function decodeError(body: AsyncIterable<Uint8Array>): Promise<ProviderError> {
  return providerError(eventTypes(body));
}

/** A bare server answering every request with these bytes, written in the given slices. */
async function serveBytes(
  bytes: Uint8Array,
  sliceBytes: number,
  contentType = 'application/vnd.amazon.eventstream',
): Promise<{ endpoint: string; server: Server }> {
  const server = createServer((request, response) => {
    void (async () => {
      for await (const _chunk of request); // drain the request
      response.writeHead(200, { 'content-type': contentType });
      for (let offset = 0; offset < bytes.length; offset += sliceBytes) {
        response.write(bytes.subarray(offset, offset + sliceBytes));
        await new Promise((resolve) => setImmediate(resolve));
      }
      response.end();
    })();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function streamFrom(bytes: Uint8Array, sliceBytes = 7, contentType?: string): Promise<ChatStreamPart[]> {
  const { endpoint, server } = await serveBytes(bytes, sliceBytes, contentType);
  const raw = bedrock({ endpoint });
  try {
    return await collect(raw.chatModel(MODEL).stream(hello, options()));
  } finally {
    await raw.close();
    server.closeAllConnections();
    server.close();
  }
}

describe('Bedrock adapter: event-stream framing', () => {
  it('decodes the same messages wherever the chunks cut the frames', async () => {
    const bytes = concat(textStream);
    const expected = ['messageStart', 'contentBlockDelta', 'contentBlockDelta', 'contentBlockStop', 'messageStop', 'metadata'];
    expect(await eventTypes(chunksOf(bytes, []))).toEqual(expected);
    expect(
      await eventTypes(
        chunksOf(
          bytes,
          Array.from({ length: bytes.length - 1 }, (_, index) => index + 1),
        ),
      ),
    ).toEqual(expected);
    for (let cut = 1; cut < textStream[0]!.length + textStream[1]!.length + 2; cut++) {
      expect(await eventTypes(chunksOf(bytes, [cut, cut + 3]))).toEqual(expected);
    }
  });

  it('rejects a frame whose CRC does not match as a bad response', async () => {
    const error = await decodeError(chunksOf(concat([textStream[0]!, corruptFrame(textStream[1]!)]), [5]));
    expect(error).toMatchObject({ code: 'UPSTREAM_BAD_RESPONSE', upstreamMessage: 'event-stream frame is corrupt' });
  });

  it('rejects an impossible frame length at once instead of waiting for 4 GB', async () => {
    expect(await decodeError(chunksOf(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), []))).toMatchObject({
      code: 'UPSTREAM_BAD_RESPONSE',
    });
  });

  it('reports a body that ends inside a frame as interrupted', async () => {
    const bytes = concat(textStream.slice(0, 2));
    expect(await decodeError(chunksOf(bytes.subarray(0, bytes.length - 3), [10]))).toMatchObject({
      code: 'UPSTREAM_STREAM_INTERRUPTED',
      retryable: false,
    });
  });

  it('streams text reassembled from frames written a few bytes at a time over HTTP', async () => {
    const parts = await streamFrom(concat(textStream), 3);
    expect(parts).toEqual([
      { type: 'text-delta', text: 'Hello ' },
      { type: 'text-delta', text: 'world' },
      { type: 'finish', finishReason: 'stop', usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 } },
    ]);
  });

  it('streams tool calls indexed by content block, with id and name from the block start', async () => {
    const parts = await streamFrom(
      concat([
        eventFrame('messageStart', { role: 'assistant' }),
        eventFrame('contentBlockDelta', { contentBlockIndex: 0, delta: { text: 'Checking.' } }),
        eventFrame('contentBlockStop', { contentBlockIndex: 0 }),
        eventFrame('contentBlockStart', { contentBlockIndex: 1, start: { toolUse: { toolUseId: 'tooluse_a', name: 'weather' } } }),
        eventFrame('contentBlockDelta', { contentBlockIndex: 1, delta: { toolUse: { input: '{"city":' } } }),
        eventFrame('contentBlockDelta', { contentBlockIndex: 1, delta: { toolUse: { input: '"Paris"}' } } }),
        eventFrame('contentBlockStop', { contentBlockIndex: 1 }),
        eventFrame('messageStop', { stopReason: 'tool_use' }),
      ]),
    );
    expect(parts.slice(0, -1)).toEqual([
      { type: 'text-delta', text: 'Checking.' },
      { type: 'tool-call-delta', index: 1, id: 'tooluse_a', name: 'weather', argumentsDelta: '' },
      { type: 'tool-call-delta', index: 1, argumentsDelta: '{"city":' },
      { type: 'tool-call-delta', index: 1, argumentsDelta: '"Paris"}' },
    ]);
    // No metadata frame: usage is counted, over the text and the tool arguments.
    expect(parts.at(-1)).toMatchObject({
      type: 'finish',
      finishReason: 'tool_calls',
      usage: { completionTokens: countTextTokens('Checking.{"city":"Paris"}') },
    });
  });

  it('ignores event types it does not know', async () => {
    const parts = await streamFrom(concat([textStream[0]!, eventFrame('somethingNew', { x: 1 }), ...textStream.slice(1)]));
    expect(parts.at(-1)).toMatchObject({ type: 'finish', finishReason: 'stop' });
  });

  it('maps an in-stream throttlingException to a rate-limit error part that is not retryable', async () => {
    const parts = await streamFrom(
      concat([...textStream.slice(0, 2), exceptionFrame('throttlingException', 'Too many tokens, please wait before trying again.')]),
    );
    expect(parts).toEqual([
      { type: 'text-delta', text: 'Hello ' },
      {
        type: 'error',
        error: expect.objectContaining({
          code: 'UPSTREAM_RATE_LIMITED',
          retryable: false,
          upstreamMessage: 'throttlingException: Too many tokens, please wait before trying again.',
        }),
      },
    ]);
  });

  it('reports a well-framed event whose payload is not JSON as a bad response', async () => {
    const headers = { ':event-type': 'contentBlockDelta', ':content-type': 'application/json', ':message-type': 'event' };
    const frame = new EventStreamCodec(toUtf8, fromUtf8).encode({
      headers: Object.fromEntries(Object.entries(headers).map(([name, value]) => [name, { type: 'string' as const, value }])),
      body: fromUtf8('{"contentBlockIndex": 0, "delta": {"text": "bro'),
    });
    const parts = await streamFrom(concat([textStream[0]!, frame]));
    expect(parts).toMatchObject([
      { type: 'error', error: { code: 'UPSTREAM_BAD_RESPONSE', upstreamMessage: 'contentBlockDelta payload is not JSON' } },
    ]);
  });

  it('reports a stream that ends cleanly before messageStop as interrupted', async () => {
    const parts = await streamFrom(concat(textStream.slice(0, 3)));
    expect(parts.at(-1)).toMatchObject({ type: 'error', error: { code: 'UPSTREAM_STREAM_INTERRUPTED', retryable: false } });
  });

  it('refuses a 200 that is not an event stream as a bad response', async () => {
    const parts = await streamFrom(new TextEncoder().encode('{"message":"hello"}'), 64, 'application/json');
    expect(parts).toMatchObject([{ type: 'error', error: { code: 'UPSTREAM_BAD_RESPONSE' } }]);
  });
});
