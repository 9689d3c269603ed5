import Anthropic, { APIError, AuthenticationError, BadRequestError, NotFoundError } from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestStack, startTestStack } from './support/stack.ts';

let stack: TestStack;
let client: Anthropic;

beforeAll(async () => {
  stack = await startTestStack();
  client = new Anthropic({ apiKey: stack.adminKey, baseURL: stack.url.replace(/\/graphql$/, ''), maxRetries: 0 });
});
afterAll(() => stack.stop());

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
