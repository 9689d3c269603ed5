/**
 * Images and structured output in each provider's own wire format: the same contract request
 * (a user turn with text and an image, an answer to a JSON Schema) sent through every adapter to
 * its emulator, and the body the emulator received read in that provider's words.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatRequest, Provider } from '../providers/contract.ts';
import { JSON_OBJECT_INSTRUCTION } from '../providers/wire.ts';
import { CONFORMANCE_TARGETS } from './conformance/targets.ts';
import type { ConformanceSubject } from './conformance/target.ts';
import { callOptions, collect } from './support/provider-calls.ts';

const timeouts = { connectMs: 2_000, firstByteMs: 5_000, idleMs: 400, totalMs: 10_000 };
/** A 1×1 transparent PNG. */
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const URL_IMAGE = 'https://images.example/cat.png';
const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false };

const withImage = (image: { url: string } | { mediaType: 'image/png'; data: string }): ChatRequest => ({
  messages: [
    { role: 'system', content: 'Be brief.' },
    {
      role: 'user',
      content: 'What is this?\nAnswer in one word.',
      parts: [
        { type: 'text', text: 'What is this?' },
        { type: 'image', image, detail: 'low' },
        { type: 'text', text: 'Answer in one word.' },
      ],
    },
  ],
});

interface WireExpectations {
  /** The user turn's content, with the image as bytes. */
  imageBytes: unknown;
  /** The same with the image by URL; undefined where the provider takes bytes only. */
  imageUrl?: unknown;
  /** What the body carries for a JSON Schema answer. */
  jsonSchema: (body: unknown) => unknown;
  jsonSchemaWire: unknown;
  /** Where a bare JSON answer (json_object) is asked for. */
  jsonObject: (body: unknown) => unknown;
  jsonObjectWire: unknown;
  /** Where a schema not to be followed strictly goes, and what is sent. */
  looseSchema: (body: unknown) => unknown;
  looseSchemaWire: unknown;
  userContent: (body: unknown) => unknown;
}

/** The value at a path in a recorded body (whose shape is each provider's own). */
const at = (value: unknown, ...path: (string | number)[]): unknown =>
  path.reduce<unknown>((node, key) => (node as Record<string | number, unknown> | undefined)?.[key], value);
const openAiWire = (detail: boolean): WireExpectations => ({
  userContent: (body) => at(body, 'messages', 1, 'content'),
  imageBytes: [
    { type: 'text', text: 'What is this?' },
    { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}`, ...(detail && { detail: 'low' }) } },
    { type: 'text', text: 'Answer in one word.' },
  ],
  imageUrl: [
    { type: 'text', text: 'What is this?' },
    { type: 'image_url', image_url: { url: URL_IMAGE, detail: 'low' } },
    { type: 'text', text: 'Answer in one word.' },
  ],
  jsonSchema: (body) => at(body, 'response_format'),
  jsonSchemaWire: { type: 'json_schema', json_schema: { name: 'place', schema, strict: true } },
  jsonObject: (body) => at(body, 'response_format'),
  jsonObjectWire: { type: 'json_object' },
  looseSchema: (body) => at(body, 'response_format'),
  looseSchemaWire: { type: 'json_schema', json_schema: { name: 'place', schema, strict: false } },
});
/** Strict decoding only: a loose schema is asked for in the system prompt. */
const LOOSE_INSTRUCTION = `Answer with one JSON object that follows this JSON Schema, and nothing else: ${JSON.stringify(schema)}`;

const EXPECTED: Record<string, WireExpectations> = {
  'openai-compatible': openAiWire(true),
  'azure-openai': openAiWire(true),
  anthropic: {
    userContent: (body) => at(body, 'messages', 0, 'content'),
    imageBytes: [
      { type: 'text', text: 'What is this?' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
      { type: 'text', text: 'Answer in one word.' },
    ],
    imageUrl: [
      { type: 'text', text: 'What is this?' },
      { type: 'image', source: { type: 'url', url: URL_IMAGE } },
      { type: 'text', text: 'Answer in one word.' },
    ],
    jsonSchema: (body) => at(body, 'output_config'),
    jsonSchemaWire: { format: { type: 'json_schema', schema } },
    jsonObject: (body) => at(body, 'system'),
    jsonObjectWire: `Be brief.\n\n${JSON_OBJECT_INSTRUCTION}`,
    looseSchema: (body) => [at(body, 'system'), at(body, 'output_config')],
    looseSchemaWire: [`Be brief.\n\n${LOOSE_INSTRUCTION}`, undefined],
  },
  gemini: {
    userContent: (body) => at(body, 'contents', 0, 'parts'),
    imageBytes: [{ text: 'What is this?' }, { inlineData: { mimeType: 'image/png', data: PNG } }, { text: 'Answer in one word.' }],
    jsonSchema: (body) => at(body, 'generationConfig'),
    jsonSchemaWire: { responseMimeType: 'application/json', responseJsonSchema: schema },
    jsonObject: (body) => at(body, 'generationConfig'),
    jsonObjectWire: { responseMimeType: 'application/json' },
    looseSchema: (body) => at(body, 'generationConfig'),
    looseSchemaWire: { responseMimeType: 'application/json', responseJsonSchema: schema },
  },
  bedrock: {
    userContent: (body) => at(body, 'messages', 0, 'content'),
    imageBytes: [{ text: 'What is this?' }, { image: { format: 'png', source: { bytes: PNG } } }, { text: 'Answer in one word.' }],
    jsonSchema: (body) => at(body, 'outputConfig'),
    jsonSchemaWire: { textFormat: { type: 'json_schema', structure: { jsonSchema: { name: 'place', schema: JSON.stringify(schema) } } } },
    jsonObject: (body) => at(body, 'system'),
    jsonObjectWire: [{ text: 'Be brief.' }, { text: JSON_OBJECT_INSTRUCTION }],
    looseSchema: (body) => [at(body, 'system'), at(body, 'outputConfig')],
    looseSchemaWire: [[{ text: 'Be brief.' }, { text: LOOSE_INSTRUCTION }], undefined],
  },
};

it('knows the wire of every adapter', () => {
  expect(Object.keys(EXPECTED).sort()).toEqual(CONFORMANCE_TARGETS.map((target) => target.name));
});

describe.each(CONFORMANCE_TARGETS.map((target) => [target.name, target] as const))('%s: images and JSON output', (name, target) => {
  const expected = EXPECTED[name]!;
  let subject: ConformanceSubject;
  let provider: Provider;
  beforeAll(async () => {
    subject = await target.start();
    provider = subject.provider(timeouts, 'sk-multimodal');
  });
  afterAll(async () => {
    await provider?.close();
    await subject?.emulator.close();
  });
  const chat = () => provider.chatModel(subject.chatModelId);
  const lastBody = () => subject.emulator.requests.at(-1)!.body;

  it('sends an image given as bytes inside the user turn, in order with its text, whole and streamed', async () => {
    subject.emulator.script({ kind: 'chat', content: 'A pixel.' }, { kind: 'chat', content: 'A pixel.' });
    const whole = await chat().generate(withImage({ mediaType: 'image/png', data: PNG }), callOptions('req-image'));
    expect(whole.content).toBe('A pixel.');
    expect(expected.userContent(lastBody())).toEqual(expected.imageBytes);
    const parts = await collect(chat().stream(withImage({ mediaType: 'image/png', data: PNG }), callOptions('req-image-stream')));
    expect(parts.at(-1)).toMatchObject({ type: 'finish' });
    expect(expected.userContent(lastBody())).toEqual(expected.imageBytes);
  });

  it(`${expected.imageUrl ? 'sends an image by URL for the provider to fetch' : 'says it takes images as bytes only'}`, async () => {
    expect(chat().imageUrls === true).toBe(expected.imageUrl !== undefined);
    if (!expected.imageUrl) return;
    subject.emulator.script({ kind: 'chat', content: 'A cat.' });
    await chat().generate(withImage({ url: URL_IMAGE }), callOptions('req-image-url'));
    expect(expected.userContent(lastBody())).toEqual(expected.imageUrl);
  });

  it('asks for an answer to a JSON Schema (strictly or not), and for any JSON object, in its own field', async () => {
    const json = '{"city":"Paris"}';
    subject.emulator.script({ kind: 'chat', content: json }, { kind: 'chat', content: json });
    const hello: ChatRequest = {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Where is the Louvre?' },
      ],
    };
    const answer = await chat().generate(
      { ...hello, responseFormat: { type: 'json_schema', name: 'place', schema, strict: true } },
      callOptions('req-json'),
    );
    expect(JSON.parse(answer.content)).toEqual({ city: 'Paris' });
    expect(expected.jsonSchema(lastBody())).toEqual(expected.jsonSchemaWire);
    await chat().generate({ ...hello, responseFormat: { type: 'json_object' } }, callOptions('req-json-object'));
    expect(expected.jsonObject(lastBody())).toEqual(expected.jsonObjectWire);
    subject.emulator.script({ kind: 'chat', content: json });
    await chat().generate(
      { ...hello, responseFormat: { type: 'json_schema', name: 'place', schema, strict: false } },
      callOptions('req-json-loose'),
    );
    expect(expected.looseSchema(lastBody())).toEqual(expected.looseSchemaWire);
  });
});
