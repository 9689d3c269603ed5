/**
 * Images and structured output through GraphQL: `ChatMessageInput.parts` and
 * `ChatInput.responseFormat` reach the provider, are refused with coded errors by models without
 * VISION or JSON_SCHEMA (or, for an image by URL, by providers that take bytes only), and a route
 * never falls back to a version that could not take the request.
 */
import { print } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatDocument, type ChatMutation } from '../codegen/operations.ts';
import { CONFORMANCE_TARGETS } from './conformance/targets.ts';
import type { ConformanceSubject } from './conformance/target.ts';
import { postGraphQL, startTestStack, TEST_MODELS, type TestStack } from './support/stack.ts';

const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const image = (image: Record<string, unknown>) => ({ type: 'IMAGE', image });
const ask = (model: string, parts: unknown[], extra: Record<string, unknown> = {}) => ({
  input: { model, messages: [{ role: 'USER', content: 'What is this?', parts }], ...extra },
});

let stack: TestStack;
let gemini: ConformanceSubject;

beforeAll(async () => {
  gemini = await CONFORMANCE_TARGETS.find((target) => target.name === 'gemini')!.start();
  stack = await startTestStack(
    {
      models: [
        ...TEST_MODELS,
        { id: 'gemini-test', provider: 'gemini', version: '1', capabilities: ['CHAT', 'VISION'], contextWindow: 8192, maxOutputTokens: 64 },
        // A self-hosted OpenAI-compatible server (no imageUrls: it would fetch from inside the network).
        { id: 'vllm-vision', provider: 'backup', version: '1', capabilities: ['CHAT', 'VISION'], contextWindow: 8192, maxOutputTokens: 64 },
      ],
      routes: {
        careful: { targets: [{ model: 'gpt-test@2024-08-06' }], fallbacks: ['backup@1'] },
        seeing: { targets: [{ model: 'gpt-test@2024-08-06' }], fallbacks: ['gemini-test@1'] },
      },
    },
    { providers: { gemini: { type: 'gemini', baseUrl: gemini.emulator.baseUrl, headers: { 'x-goog-api-key': 'k' } } } },
  );
});
afterAll(async () => {
  await stack?.stop();
  await gemini?.emulator.close();
});

const chat = (variables: Record<string, unknown>) => postGraphQL<ChatMutation>(stack.url, print(ChatDocument), variables);
const lastBody = () => stack.emulator.requests.at(-1)!.body as { messages: { content: unknown }[] };

describe('images in a chat', () => {
  it('sends text and images in order, a data: URL read into its bytes, and counts each image in the prompt', async () => {
    stack.emulator.script({ kind: 'chat', content: 'A pixel.', usage: null });
    const { body } = await chat(
      ask('gpt-test', [image({ url: `data:image/png;base64,${PNG}`, detail: 'HIGH' }), { type: 'TEXT', text: 'Be brief.' }]),
    );
    expect(body.errors).toBeUndefined();
    expect(body.data?.chat.content).toBe('A pixel.');
    expect(lastBody().messages[0]!.content).toEqual([
      { type: 'text', text: 'What is this?' },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}`, detail: 'high' } },
      { type: 'text', text: 'Be brief.' },
    ]);
    // Without the provider's usage the image is counted at its reservation size, not as nothing.
    expect(body.data?.chat.usage.promptTokens).toBeGreaterThan(1_600);
  });

  it('refuses images for a model without VISION, naming the capability', async () => {
    const { body } = await chat(ask('echo', [image({ data: PNG, mediaType: 'image/png' })]));
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'MODEL_CAPABILITY_UNSUPPORTED', capability: 'VISION' });
  });

  it('refuses an image by URL for a provider that takes bytes only, and sends its bytes inline', async () => {
    const byUrl = await chat(ask('gemini-test', [image({ url: 'https://images.example/cat.png' })]));
    expect(byUrl.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'messages' });
    expect(byUrl.body.errors?.[0]?.message).toContain('bytes');
    gemini.emulator.script({ kind: 'chat', content: 'A pixel.' });
    const inline = await chat(ask('gemini-test', [image({ data: PNG, mediaType: 'image/png' })]));
    expect(inline.body.data?.chat.content).toBe('A pixel.');
    const sent = gemini.emulator.requests.at(-1)!.body as { contents: { parts: unknown[] }[] };
    expect(sent.contents[0]!.parts).toEqual([{ text: 'What is this?' }, { inlineData: { mimeType: 'image/png', data: PNG } }]);
  });

  it('takes images as bytes only for a self-hosted OpenAI-compatible server, which would fetch URLs inside the network', async () => {
    const byUrl = await chat(ask('vllm-vision', [image({ url: 'https://images.example/cat.png' })]));
    expect(byUrl.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'messages' });
    stack.emulator.script({ kind: 'chat', content: 'A pixel.' });
    const inline = await chat(ask('vllm-vision', [image({ data: PNG, mediaType: 'image/png' })]));
    expect(inline.body.data?.chat.content).toBe('A pixel.');
    expect(lastBody().messages[0]!.content).toEqual([
      { type: 'text', text: 'What is this?' },
      { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
    ]);
  });

  it.each([
    [[image({ url: 'https://x.example/a.png', data: PNG })], 'messages[0].parts[0].image'],
    [[image({ data: PNG, mediaType: 'image/bmp' })], 'messages[0].parts[0].image.mediaType'],
    [[image({ data: 'not base64!', mediaType: 'image/png' })], 'messages[0].parts[0].image.data'],
    [[image({ url: 'data:image/png;base64,@@@@' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'file:///etc/passwd' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'http://images.example/cat.png' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'https://169.254.169.254/latest/meta-data/' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'https://[::1]/a.png' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'https://0x7f.1/a.png' })], 'messages[0].parts[0].image.url'],
    [[image({ url: 'https://localhost/a.png' })], 'messages[0].parts[0].image.url'],
    [[{ type: 'TEXT' }], 'messages[0].parts[0]'],
    [[{ type: 'IMAGE', text: 'x' }], 'messages[0].parts[0]'],
  ])('refuses the bad part %j naming %s', async (parts, field) => {
    const { body } = await chat(ask('gpt-test', parts));
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field });
  });

  it('takes parts on USER messages only', async () => {
    const { body } = await chat({
      input: { model: 'gpt-test', messages: [{ role: 'SYSTEM', content: 'x', parts: [{ type: 'TEXT', text: 'y' }] }] },
    });
    expect(body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'messages[0].parts' });
  });
});

describe('a route with images or a response format', () => {
  it('falls back to a version without VISION or JSON_SCHEMA only for requests that need neither', async () => {
    // The primary fails; the fallback has neither capability.
    stack.emulator.script({ kind: 'error', status: 503 }, { kind: 'error', status: 503 });
    const withImage = await chat(ask('careful', [image({ data: PNG, mediaType: 'image/png' })]));
    expect(withImage.body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_UNAVAILABLE');
    const withFormat = await chat({
      input: { model: 'careful', messages: [{ role: 'USER', content: 'x' }], responseFormat: { type: 'JSON_OBJECT' } },
    });
    expect(withFormat.body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_UNAVAILABLE');
    expect(stack.emulator.requests.slice(-2).map((request) => request.body.model)).toEqual(['gpt-test-upstream', 'gpt-test-upstream']);
    stack.emulator.script({ kind: 'error', status: 503 }, { kind: 'chat', content: 'from backup' });
    const plain = await chat({ input: { model: 'careful', messages: [{ role: 'USER', content: 'x' }] } });
    expect(plain.body.data?.chat).toMatchObject({ content: 'from backup', servedBy: { provider: 'backup' } });
  });

  it('falls back with an image by URL only to versions whose provider fetches URLs', async () => {
    stack.emulator.script({ kind: 'error', status: 503 });
    const before = gemini.emulator.requests.length;
    const { body } = await chat(ask('seeing', [image({ url: 'https://images.example/cat.png' })]));
    expect(body.errors?.[0]?.extensions?.code).toBe('UPSTREAM_UNAVAILABLE');
    expect(gemini.emulator.requests.length).toBe(before);
  });
});
