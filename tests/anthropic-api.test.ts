import Anthropic, { APIError, AuthenticationError, BadRequestError, NotFoundError } from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AnthropicEmulator, startAnthropicEmulator } from './emulator/anthropic.ts';
import { type TestStack, startTestStack } from './support/stack.ts';

let stack: TestStack;
let client: Anthropic;
let claude: AnthropicEmulator;

beforeAll(async () => {
  claude = await startAnthropicEmulator();
  stack = await startTestStack({}, { anthropicBaseUrl: claude.baseUrl });
  client = new Anthropic({ apiKey: stack.adminKey, baseURL: stack.url.replace(/\/graphql$/, ''), maxRetries: 0 });
});
afterAll(async () => {
  await stack.stop();
  await claude.close();
});

/** What the test reads of a body an emulator received. */
type SentBody = { messages: { content: unknown }[] } & Record<string, unknown>;

/** A 1×1 transparent PNG. */
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

describe('the Anthropic Messages API, through the official @anthropic-ai/sdk', () => {
  it('answers a message whole from an OpenAI-served model, with usage', async () => {
    stack.emulator.script({ kind: 'chat', content: 'Hello from upstream', usage: { prompt: 7, completion: 3 } });
    const message = await client.messages.create({
      model: 'gpt-test',
      max_tokens: 64,
      system: 'Be brief.',
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(message).toMatchObject({ type: 'message', role: 'assistant', model: 'gpt-test', stop_reason: 'end_turn' });
    expect(message.content).toEqual([{ type: 'text', text: 'Hello from upstream' }]);
    expect(message.usage).toMatchObject({ input_tokens: 7, output_tokens: 3 });
    const sent = stack.emulator.requests.at(-1)!.body as { messages: { role: string; content: string }[] };
    expect(sent.messages.map((each) => each.role)).toEqual(['system', 'user']);
  });

  it('answers from a Claude-served model whole and streamed, an image block reaching it as Anthropic sent it', async () => {
    claude.script({ kind: 'chat', content: 'A pixel.', usage: { prompt: 30, completion: 3 } });
    const content = [
      { type: 'image' as const, source: { type: 'base64' as const, media_type: 'image/png' as const, data: PNG } },
      { type: 'text' as const, text: 'What is this?' },
    ];
    const message = await client.messages.create({
      model: 'claude-test',
      max_tokens: 64,
      system: 'Be brief.',
      messages: [{ role: 'user', content }],
    });
    expect(message).toMatchObject({ model: 'claude-test', stop_reason: 'end_turn', usage: { input_tokens: 30, output_tokens: 3 } });
    expect(message.content).toEqual([{ type: 'text', text: 'A pixel.' }]);
    const sent = claude.requests.at(-1)!.body as SentBody;
    expect(sent).toMatchObject({ model: 'claude-test-upstream', system: 'Be brief.', max_tokens: 64 });
    expect(sent.messages[0]!.content).toEqual(content);
    claude.script({ kind: 'chat', content: 'one two three', usage: { prompt: 4, completion: 3 } });
    const streamed = await client.messages
      .stream({ model: 'claude-test', max_tokens: 32, messages: [{ role: 'user', content: 'count' }] })
      .finalMessage();
    expect(streamed.content).toEqual([{ type: 'text', text: 'one two three' }]);
    expect(streamed.usage).toMatchObject({ output_tokens: 3 });
    // An image by URL goes as Anthropic's url source; a model without VISION refuses images.
    await client.messages.create({
      model: 'claude-test',
      max_tokens: 16,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://images.example/cat.png' } }] }],
    });
    expect((claude.requests.at(-1)!.body as SentBody).messages[0]!.content).toEqual([
      { type: 'image', source: { type: 'url', url: 'https://images.example/cat.png' } },
    ]);
    const refused = await client.messages
      .create({ model: 'echo', max_tokens: 16, messages: [{ role: 'user', content }] })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BadRequestError);
    expect((refused as BadRequestError).error).toMatchObject({ error: { code: 'MODEL_CAPABILITY_UNSUPPORTED' } });
  });

  it('streams the event sequence the SDK assembles into the same message', async () => {
    const stream = client.messages.stream({ model: 'echo', max_tokens: 32, messages: [{ role: 'user', content: 'one two three' }] });
    const types: string[] = [];
    stream.on('streamEvent', (event) => types.push(event.type));
    const message = await stream.finalMessage();
    expect(message.content).toEqual([{ type: 'text', text: 'one two three' }]);
    expect(message.stop_reason).toBe('end_turn');
    expect(message.usage.output_tokens).toBeGreaterThan(0);
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(types).toContain('content_block_delta');
  });

  it('round-trips tool use: a tool_use block out, a tool_result block back as the tool message', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'toolu_1', name: 'lookup', arguments: '{"q":"x"}' }] });
    const tools = [{ name: 'lookup', input_schema: { type: 'object' as const, properties: { q: { type: 'string' } } } }];
    const first = await client.messages.create({
      model: 'gpt-test',
      max_tokens: 64,
      tools,
      messages: [{ role: 'user', content: 'find x' }],
    });
    expect(first.stop_reason).toBe('tool_use');
    expect(first.content).toEqual([{ type: 'tool_use', id: 'toolu_1', name: 'lookup', input: { q: 'x' } }]);
    await client.messages.create({
      model: 'gpt-test',
      max_tokens: 64,
      tools,
      messages: [
        { role: 'user', content: 'find x' },
        { role: 'assistant', content: first.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'found' }] },
      ],
    });
    const sent = stack.emulator.requests.at(-1)!.body as { messages: { role: string; tool_call_id?: string; content?: string }[] };
    expect(sent.messages.map((each) => each.role)).toEqual(['user', 'assistant', 'tool']);
    expect(sent.messages[2]).toMatchObject({ tool_call_id: 'toolu_1', content: 'found' });
  });

  it("maps tool_choice any and tool onto the serving provider's own forced choice", async () => {
    const tools = [{ name: 'lookup', input_schema: { type: 'object' as const, properties: {} } }];
    const ask = (tool_choice: Anthropic.Messages.ToolChoice) =>
      client.messages.create({ model: 'gpt-test', max_tokens: 16, tools, tool_choice, messages: [{ role: 'user', content: 'x' }] });
    await ask({ type: 'tool', name: 'lookup' });
    expect(stack.emulator.requests.at(-1)!.body.tool_choice).toEqual({ type: 'function', function: { name: 'lookup' } });
    await ask({ type: 'any' });
    expect(stack.emulator.requests.at(-1)!.body.tool_choice).toBe('required');
    const nameless = await ask({ type: 'tool' } as never).catch((error: unknown) => error);
    expect(nameless).toBeInstanceOf(BadRequestError);
  });

  it('streams tool use as a tool_use block the SDK assembles, with its input', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'toolu_s', name: 'lookup', arguments: '{"q":"s"}' }] });
    const tools = [{ name: 'lookup', input_schema: { type: 'object' as const, properties: {} } }];
    const message = await client.messages
      .stream({ model: 'gpt-test', max_tokens: 32, tools, messages: [{ role: 'user', content: 'find s' }] })
      .finalMessage();
    expect(message.stop_reason).toBe('tool_use');
    expect(message.content).toEqual([{ type: 'tool_use', id: 'toolu_s', name: 'lookup', input: { q: 's' } }]);
  });

  it('ends a stream that fails after its first token with an error event, which the SDK raises', async () => {
    stack.emulator.script({ kind: 'chat', content: 'one two three four', errorAfterChunks: 2 });
    const stream = client.messages.stream({ model: 'gpt-test', max_tokens: 32, messages: [{ role: 'user', content: 'x' }] });
    const failure = await stream.finalMessage().catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(APIError);
    expect(JSON.stringify((failure as APIError).error)).toMatch(/UPSTREAM_/);
  });

  it("raises the SDK's own errors in Anthropic's format: 401 for a bad key, 404 for an unknown model, 400 for a bad request", async () => {
    const stranger = new Anthropic({ apiKey: 'mg_nope_0000', baseURL: client.baseURL, maxRetries: 0 });
    const unauthenticated = await stranger.messages
      .create({ model: 'echo', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] })
      .catch((error: unknown) => error);
    expect(unauthenticated).toBeInstanceOf(AuthenticationError);
    expect((unauthenticated as AuthenticationError).error).toMatchObject({
      type: 'error',
      error: { type: 'authentication_error', code: 'UNAUTHENTICATED' },
    });
    const unknown = await client.messages
      .create({ model: 'nope', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] })
      .catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(NotFoundError);
    const missing = await client.messages
      .create({ model: 'echo', messages: [{ role: 'user', content: 'x' }] } as never)
      .catch((error: unknown) => error);
    expect(missing).toBeInstanceOf(BadRequestError);
    expect((missing as BadRequestError).message).toContain('max_tokens');
  });
});
