import OpenAI, { APIError, AuthenticationError, BadRequestError, NotFoundError, PermissionDeniedError, RateLimitError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AnthropicEmulator, startAnthropicEmulator } from './emulator/anthropic.ts';
import { type TestStack, postGraphQL, startTestStack } from './support/stack.ts';

let stack: TestStack;
let client: OpenAI;
let claude: AnthropicEmulator;

beforeAll(async () => {
  claude = await startAnthropicEmulator();
  stack = await startTestStack(
    { routes: { careful: { targets: [{ model: 'gpt-test@2024-08-06' }] } } },
    { anthropicBaseUrl: claude.baseUrl },
  );
  client = new OpenAI({ apiKey: stack.adminKey, baseURL: stack.url.replace(/\/graphql$/, '/v1'), maxRetries: 0 });
});
afterAll(async () => {
  await stack.stop();
  await claude.close();
});

/** What the test reads of a body an emulator received. */
type SentBody = { messages: { content: unknown }[] } & Record<string, unknown>;

/** A 1×1 transparent PNG. */
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

const user = (content: string) => [{ role: 'user' as const, content }];

describe('the OpenAI-compatible API, through the official openai SDK', () => {
  it('answers a chat whole, in the chat.completion shape, with usage', async () => {
    const answer = await client.chat.completions.create({ model: 'echo', messages: user('hello there') });
    expect(answer.object).toBe('chat.completion');
    expect(answer.model).toBe('echo');
    expect(answer.choices[0]).toMatchObject({ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'hello there' } });
    expect(answer.usage!.total_tokens).toBe(answer.usage!.prompt_tokens + answer.usage!.completion_tokens);
  });

  it('streams chunks in order, then the finish reason, the usage chunk and [DONE]', async () => {
    const stream = await client.chat.completions.create({
      model: 'echo',
      messages: user('one two three'),
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    expect(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('')).toBe('one two three');
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('stop');
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage!.completion_tokens).toBeGreaterThan(0);
    expect(new Set(chunks.map((chunk) => chunk.id)).size).toBe(1);
  });

  it('round-trips a tool call through a provider that speaks OpenAI', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'call_1', name: 'lookup', arguments: '{"q":"x"}' }] });
    const tools = [
      { type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } } } },
    ];
    const answer = await client.chat.completions.create({ model: 'gpt-test', messages: user('find x'), tools });
    expect(answer.choices[0]!.finish_reason).toBe('tool_calls');
    const call = answer.choices[0]!.message.tool_calls![0]!;
    expect(call).toMatchObject({ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } });
    // The answer goes back as OpenAI clients send it: the assistant's call, then the tool's result.
    const next = await client.chat.completions.create({
      model: 'gpt-test',
      tools,
      messages: [...user('find x'), answer.choices[0]!.message, { role: 'tool', tool_call_id: 'call_1', content: 'found' }],
    });
    expect(next.choices[0]!.message.content).toBeTypeOf('string');
    const sent = stack.emulator.requests.at(-1)!.body as { messages: { role: string; tool_call_id?: string }[] };
    expect(sent.messages.map((message) => message.role)).toEqual(['user', 'assistant', 'tool']);
    expect(sent.messages[2]!.tool_call_id).toBe('call_1');
  });

  it('embeds a string and a list of strings, float and base64 decoding to the same vector', async () => {
    const one = await client.embeddings.create({ model: 'hashing-embed', input: 'alpha', encoding_format: 'float' });
    expect(one.data).toHaveLength(1);
    expect(one.data[0]!.embedding).toHaveLength(32);
    const many = await client.embeddings.create({ model: 'hashing-embed', input: ['alpha', 'beta'], encoding_format: 'float' });
    expect(many.data.map((item) => item.index)).toEqual([0, 1]);
    // The SDK asks for base64 by default and decodes it to floats.
    const decoded = await client.embeddings.create({ model: 'hashing-embed', input: 'alpha' });
    expect(decoded.data[0]!.embedding).toEqual(Array.from(new Float32Array(one.data[0]!.embedding)));
    expect(one.usage.total_tokens).toBeGreaterThan(0);
  });

  it("records usage under the caller's tags and the API's own (api:openai)", async () => {
    const tagged = new OpenAI({
      apiKey: stack.adminKey,
      baseURL: client.baseURL,
      maxRetries: 0,
      defaultHeaders: { 'x-modelgraph-tags': 'team-a, batch' },
    });
    await tagged.embeddings.create({ model: 'hashing-embed', input: 'counted' });
    await client.chat.completions.create({ model: 'echo', messages: user('counted too') });
    // OpenAI's metadata pairs are tags too, as key:value.
    await client.chat.completions.create({ model: 'echo', messages: user('and this'), metadata: { app: 'billing' } });
    await client.responses.create({ model: 'echo', input: 'and that', metadata: { app: 'billing' } });
    const long = await client.chat.completions
      .create({ model: 'echo', messages: user('x'), metadata: { app: 'b'.repeat(70) } })
      .catch((error: unknown) => error);
    expect((long as BadRequestError).param).toBe('metadata');
    const hour = 3_600_000;
    const now = Date.now();
    const usage = async (tags: string[]) => {
      const { body } = await postGraphQL<{ usage: { totals: { calls: number } } }>(
        stack.url,
        'query($filter: UsageFilter!) { usage(filter: $filter) { totals { calls } } }',
        { filter: { from: new Date(now - hour).toISOString(), to: new Date(now + hour).toISOString(), tags } },
      );
      return body.data!.usage.totals.calls;
    };
    await expect.poll(() => usage(['api:openai', 'team-a', 'batch'])).toBe(1);
    await expect.poll(() => usage(['api:openai', 'app:billing'])).toBe(2);
    expect(await usage(['api:openai'])).toBeGreaterThan(1);
  });

  it('answers the Responses API whole, with output_text and usage, statelessly', async () => {
    const response = await client.responses.create({ model: 'echo', instructions: 'Be brief.', input: 'reply with this' });
    expect(response).toMatchObject({ object: 'response', status: 'completed', model: 'echo' });
    expect(response.output_text).toBe('reply with this');
    expect(response.usage!.total_tokens).toBe(response.usage!.input_tokens + response.usage!.output_tokens);
    const chained = await client.responses
      .create({ model: 'echo', input: 'more', previous_response_id: response.id })
      .catch((error: unknown) => error);
    expect(chained).toBeInstanceOf(BadRequestError);
    expect((chained as BadRequestError).param).toBe('previous_response_id');
  });

  it('streams the Responses API as typed events, deltas then response.completed with usage', async () => {
    const stream = await client.responses.create({ model: 'echo', input: 'one two three', stream: true });
    const events = [];
    for await (const event of stream) events.push(event);
    expect(events[0]!.type).toBe('response.created');
    expect(events.map((event) => event.sequence_number)).toEqual(events.map((_event, index) => index));
    const text = events.flatMap((event) => (event.type === 'response.output_text.delta' ? [event.delta] : [])).join('');
    expect(text).toBe('one two three');
    const last = events.at(-1)!;
    expect(last.type).toBe('response.completed');
    if (last.type === 'response.completed') {
      expect(last.response.output[0]).toMatchObject({ type: 'message', content: [{ type: 'output_text', text: 'one two three' }] });
      expect(last.response.usage!.output_tokens).toBeGreaterThan(0);
    }
  });

  it('carries function calls both ways through the Responses API', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'call_9', name: 'lookup', arguments: '{"q":"y"}' }] });
    const tools = [
      { type: 'function' as const, name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'string' } } }, strict: false },
    ];
    const first = await client.responses.create({ model: 'gpt-test', input: 'find y', tools });
    expect(first.output).toEqual([
      expect.objectContaining({ type: 'function_call', call_id: 'call_9', name: 'lookup', arguments: '{"q":"y"}' }),
    ]);
    await client.responses.create({
      model: 'gpt-test',
      tools,
      input: [
        { role: 'user', content: 'find y' },
        { type: 'function_call', call_id: 'call_9', name: 'lookup', arguments: '{"q":"y"}' },
        { type: 'function_call_output', call_id: 'call_9', output: 'found' },
      ],
    });
    const sent = stack.emulator.requests.at(-1)!.body as { messages: { role: string; tool_call_id?: string }[] };
    expect(sent.messages.map((message) => message.role)).toEqual(['user', 'assistant', 'tool']);
    expect(sent.messages[2]!.tool_call_id).toBe('call_9');
  });

  it('passes a json_schema response format to an OpenAI-compatible provider, and refuses it for a model without JSON_SCHEMA', async () => {
    stack.emulator.script({ kind: 'chat', content: '{"city":"Paris"}' });
    const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false };
    const answer = await client.chat.completions.create({
      model: 'gpt-test',
      messages: user('where?'),
      response_format: { type: 'json_schema', json_schema: { name: 'place', schema, strict: true } },
    });
    expect(JSON.parse(answer.choices[0]!.message.content!)).toEqual({ city: 'Paris' });
    expect(stack.emulator.requests.at(-1)!.body.response_format).toEqual({
      type: 'json_schema',
      json_schema: { name: 'place', schema, strict: true },
    });
    const refused = await client.chat.completions
      .create({ model: 'echo', messages: user('x'), response_format: { type: 'json_object' } })
      .catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BadRequestError);
    expect((refused as BadRequestError).code).toBe('MODEL_CAPABILITY_UNSUPPORTED');
  });

  it('sends image_url parts to an OpenAI-served model as OpenAI parts, in order with the text', async () => {
    const content = [
      { type: 'text' as const, text: 'What is in both?' },
      { type: 'image_url' as const, image_url: { url: 'https://images.example/cat.png', detail: 'low' as const } },
      { type: 'image_url' as const, image_url: { url: `data:image/png;base64,${PNG}` } },
    ];
    await client.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content }] });
    expect((stack.emulator.requests.at(-1)!.body as { messages: { content: unknown }[] }).messages[0]!.content).toEqual(content);
    const refused = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content }] }).catch((error) => error);
    expect(refused).toBeInstanceOf(BadRequestError);
    expect((refused as BadRequestError).code).toBe('MODEL_CAPABILITY_UNSUPPORTED');
  });

  it('serves a Claude model: an image as an Anthropic base64 block, json_schema as output_config, whole and streamed', async () => {
    const schema = { type: 'object', properties: { thing: { type: 'string' } }, required: ['thing'], additionalProperties: false };
    claude.script({ kind: 'chat', content: '{"thing":"pixel"}', usage: { prompt: 20, completion: 5 } });
    const answer = await client.chat.completions.create({
      model: 'claude-test',
      messages: [
        { role: 'system', content: 'Be brief.' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is this?' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG}` } },
          ],
        },
      ],
      response_format: { type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } },
    });
    expect(answer.model).toBe('claude-test');
    expect(JSON.parse(answer.choices[0]!.message.content!)).toEqual({ thing: 'pixel' });
    expect(answer.usage).toMatchObject({ prompt_tokens: 20, completion_tokens: 5 });
    const sent = claude.requests.at(-1)!.body as SentBody;
    expect(sent.system).toBe('Be brief.');
    expect(sent.messages[0]!.content).toEqual([
      { type: 'text', text: 'What is this?' },
      { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
    ]);
    expect(sent.output_config).toEqual({ format: { type: 'json_schema', schema } });
    claude.script({ kind: 'chat', content: 'one two three' });
    const stream = await client.chat.completions.create({ model: 'claude-test', messages: user('count'), stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('one two three');
  });

  it('takes input_image parts and text.format json_schema in the Responses API', async () => {
    const schema = { type: 'object', properties: { n: { type: 'number' } }, required: ['n'], additionalProperties: false };
    stack.emulator.script({ kind: 'chat', content: '{"n":1}' });
    const response = await client.responses.create({
      model: 'gpt-test',
      input: [
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'How many?' },
            { type: 'input_image', image_url: 'https://images.example/one.png', detail: 'auto' },
          ],
        },
      ],
      text: { format: { type: 'json_schema', name: 'count', schema, strict: true } },
    });
    expect(JSON.parse(response.output_text)).toEqual({ n: 1 });
    expect(response.text?.format).toMatchObject({ type: 'json_schema', name: 'count' });
    const sent = stack.emulator.requests.at(-1)!.body as SentBody;
    expect(sent.messages[0]!.content).toEqual([
      { type: 'text', text: 'How many?' },
      { type: 'image_url', image_url: { url: 'https://images.example/one.png', detail: 'auto' } },
    ]);
    expect(sent.response_format).toEqual({ type: 'json_schema', json_schema: { name: 'count', schema, strict: true } });
  });

  it('forces the named tool, and refuses a name that is not one of the tools', async () => {
    const tools = [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }];
    await client.chat.completions.create({
      model: 'gpt-test',
      messages: user('x'),
      tools,
      tool_choice: { type: 'function', function: { name: 'lookup' } },
    });
    expect(stack.emulator.requests.at(-1)!.body.tool_choice).toEqual({ type: 'function', function: { name: 'lookup' } });
    await client.chat.completions.create({ model: 'gpt-test', messages: user('x'), tools, tool_choice: 'required' });
    expect(stack.emulator.requests.at(-1)!.body.tool_choice).toBe('required');
    const unknown = await client.chat.completions
      .create({ model: 'gpt-test', messages: user('x'), tools, tool_choice: { type: 'function', function: { name: 'other' } } })
      .catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(BadRequestError);
    expect((unknown as BadRequestError).message).toContain('other');
  });

  it('keeps the tools described under tool_choice none, and sends no choice without tools', async () => {
    const tools = [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }];
    await client.chat.completions.create({ model: 'gpt-test', messages: user('x'), tools, tool_choice: 'none' });
    const sent = stack.emulator.requests.at(-1)!.body;
    expect(sent.tool_choice).toBe('none');
    expect(sent.tools).toHaveLength(1);
    const query = 'mutation($input: ChatInput!) { chat(input: $input) { content } }';
    const messages = [{ role: 'USER', content: 'x' }];
    await postGraphQL(stack.url, query, { input: { model: 'gpt-test', messages, toolChoice: { mode: 'NONE' } } });
    expect(stack.emulator.requests.at(-1)!.body).not.toHaveProperty('tool_choice');
    const required = await postGraphQL(stack.url, query, { input: { model: 'gpt-test', messages, toolChoice: { mode: 'REQUIRED' } } });
    expect(required.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'toolChoice' });
    const badSchema = await postGraphQL(stack.url, query, {
      input: { model: 'gpt-test', messages, responseFormat: { type: 'JSON_SCHEMA', schema: '{not json' } },
    });
    expect(badSchema.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'responseFormat.schema' });
  });

  it('refuses what each door cannot map, naming its own field', async () => {
    const badName = await client.chat.completions
      .create({
        model: 'gpt-test',
        messages: user('x'),
        response_format: { type: 'json_schema', json_schema: { name: 'has space', schema: {} } },
      })
      .catch((error: unknown) => error);
    expect((badName as BadRequestError).param).toBe('response_format');
    const fileSearch = await client.responses
      .create({
        model: 'gpt-test',
        input: 'x',
        tools: [{ type: 'function', name: 'f', parameters: {}, strict: false }],
        tool_choice: { type: 'file_search' },
      })
      .catch((error: unknown) => error);
    expect(fileSearch).toBeInstanceOf(BadRequestError);
    expect((fileSearch as BadRequestError).param).toBe('tool_choice');
    // Fields that would change the answer, which modelgraph does not do, are refused rather than ignored.
    const tools = [{ type: 'function' as const, function: { name: 'f', parameters: { type: 'object', properties: {} } } }];
    const refusals = await Promise.all(
      [
        client.chat.completions.create({ model: 'gpt-test', messages: user('x'), tools, parallel_tool_calls: false }),
        client.chat.completions.create({ model: 'gpt-test', messages: user('x'), service_tier: 'flex' }),
        client.chat.completions.create({ model: 'gpt-test', messages: user('x'), tool_choice: 'required' }),
        client.responses.create({ model: 'gpt-test', input: 'x', parallel_tool_calls: false }),
      ].map((call) =>
        call.then(
          () => undefined,
          (error: unknown) => (error as BadRequestError).param,
        ),
      ),
    );
    expect(refusals).toEqual(['parallel_tool_calls', 'service_tier', 'tool_choice', 'parallel_tool_calls']);
    // Nine tags of the caller's (the tenth is the API's), named by where they came from.
    const metadata = Object.fromEntries(Array.from({ length: 10 }, (_, index) => [`k${index}`, 'v']));
    const tooMany = await client.chat.completions.create({ model: 'echo', messages: user('x'), metadata }).catch((error: unknown) => error);
    expect((tooMany as BadRequestError).param).toBe('metadata');
    // Their defaults change nothing and are taken.
    await client.chat.completions.create({
      model: 'echo',
      messages: user('x'),
      parallel_tool_calls: true,
      service_tier: 'auto',
      store: false,
    });
  });

  it('streams tool calls as OpenAI does: indexed tool_calls deltas, then finish_reason tool_calls', async () => {
    stack.emulator.script({ kind: 'chat', content: '', toolCalls: [{ id: 'call_s', name: 'lookup', arguments: '{"q":"s"}' }] });
    const tools = [{ type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }];
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: user('find s'), tools, stream: true });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const calls = chunks.flatMap((chunk) => chunk.choices[0]?.delta.tool_calls ?? []);
    expect(calls).toEqual([{ index: 0, id: 'call_s', type: 'function', function: { name: 'lookup', arguments: '{"q":"s"}' } }]);
    expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe('tool_calls');
  });

  it('answers a provider failure before the first token with its HTTP status, and one after it with an error event', async () => {
    stack.emulator.script({ kind: 'error', status: 429, headers: { 'retry-after': '3' } });
    const early = await client.chat.completions
      .create({ model: 'gpt-test', messages: user('x'), stream: true })
      .then(async (stream) => {
        for await (const _chunk of stream);
      })
      .catch((error: unknown) => error);
    expect(early).toBeInstanceOf(RateLimitError);
    expect((early as RateLimitError).code).toBe('UPSTREAM_RATE_LIMITED');
    // The wait the provider asked for reaches the SDK, which retries after it.
    expect((early as RateLimitError).headers.get('retry-after')).toBe('3');
    stack.emulator.script({ kind: 'chat', content: 'one two three four', errorAfterChunks: 2 });
    const seen: string[] = [];
    const late = await client.chat.completions
      .create({ model: 'gpt-test', messages: user('x'), stream: true })
      .then(async (stream) => {
        for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? '');
      })
      .catch((error: unknown) => error);
    expect(seen.join('')).not.toBe('');
    expect(late).toBeInstanceOf(APIError);
    expect((late as APIError).code).toMatch(/^UPSTREAM_/);
  });

  it('answers bad requests in its own format: invalid JSON 400, an unknown path 404, a wrong method 405', async () => {
    const base = client.baseURL;
    const headers = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
    const invalid = await fetch(`${base}/chat/completions`, { method: 'POST', headers, body: '{"model":' });
    expect(invalid.status).toBe(400);
    expect(((await invalid.json()) as { error: { code: string } }).error.code).toBe('BAD_USER_INPUT');
    const unknown = await fetch(`${base}/assistants`, { headers });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
    const wrongMethod = await fetch(`${base}/chat/completions`, { headers });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
    const anthropicPath = await fetch(`${base}/messages/count_tokens`, { method: 'POST', headers, body: '{}' });
    expect(((await anthropicPath.json()) as { type: string }).type).toBe('error');
    const badName = await fetch(`${base}/models/%E0%A4%A`, { headers });
    expect(badName.status).toBe(404);
  });

  it('lists the models this key may use, and finds one by id', async () => {
    const listed = await client.models.list();
    const ids = listed.data.map((model) => model.id);
    expect(ids).toEqual(expect.arrayContaining(['echo', 'gpt-test', 'smart']));
    expect((await client.models.retrieve('gpt-test')).owned_by).toBe('emulated');
    await expect(client.models.retrieve('no-such-model')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('lists and serves a restricted key only what it may use, refusing the rest with 403', async () => {
    const keyFor = async (input: Record<string, unknown>) => {
      const { body } = await postGraphQL<{ createApiKey: { secret: string } }>(
        stack.url,
        'mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }',
        { input },
      );
      return new OpenAI({ apiKey: body.data!.createApiKey.secret, baseURL: client.baseURL, maxRetries: 0 });
    };
    const narrow = await keyFor({ name: 'narrow', scopes: ['MODELS_READ', 'CHAT_INVOKE'], allowedModels: ['careful'] });
    // The route is what it may send; the model behind it, and that model's alias, are not.
    expect((await narrow.models.list()).data.map((model) => model.id)).toEqual(['careful']);
    expect((await narrow.models.retrieve('careful')).owned_by).toBe('emulated');
    await expect(narrow.models.retrieve('gpt-test')).rejects.toBeInstanceOf(NotFoundError);
    stack.emulator.script({ kind: 'chat', content: 'through the route' });
    const routed = await narrow.chat.completions.create({ model: 'careful', messages: user('x') });
    expect(routed.choices[0]!.message.content).toBe('through the route');
    const denied = await narrow.chat.completions.create({ model: 'gpt-test', messages: user('x') }).catch((error: unknown) => error);
    expect(denied).toBeInstanceOf(PermissionDeniedError);
    expect((denied as PermissionDeniedError).code).toBe('FORBIDDEN');
    const reader = await keyFor({ name: 'reader', scopes: ['MODELS_READ'] });
    const unscoped = await reader.chat.completions.create({ model: 'echo', messages: user('x') }).catch((error: unknown) => error);
    expect(unscoped).toBeInstanceOf(PermissionDeniedError);
  });

  it('refuses JSON nested past 64 levels with a coded 400, in REST and in GraphQL, and keeps serving', async () => {
    const deep = `${'['.repeat(20_000)}${']'.repeat(20_000)}`;
    const tool = `{"type":"function","function":{"name":"f","parameters":{"a":${deep}}}}`;
    const rest = await fetch(`${client.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' },
      body: `{"model":"echo","messages":[{"role":"user","content":"x"}],"tools":[${tool}]}`,
    });
    expect(rest.status).toBe(400);
    expect(((await rest.json()) as { error: { code: string } }).error.code).toBe('BAD_USER_INPUT');
    const query = 'mutation($input: ChatInput!) { chat(input: $input) { content } }';
    const graphql = await postGraphQL(stack.url, query, {
      input: { model: 'gpt-test', messages: [{ role: 'USER', content: 'x' }], tools: [{ name: 'f', parameters: `{"a":${deep}}` }] },
    });
    expect(graphql.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'tools[0].parameters' });
    const result = await postGraphQL(stack.url, query, {
      input: {
        model: 'gpt-test',
        messages: [
          { role: 'USER', content: 'x' },
          { role: 'ASSISTANT', content: '', toolCalls: [{ id: 'c', name: 'f', arguments: '{}' }] },
          { role: 'TOOL', toolCallId: 'c', content: `{"a":${deep}}` },
        ],
      },
    });
    expect(result.body.errors?.[0]?.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'messages[2].content' });
    const after = await client.chat.completions.create({ model: 'echo', messages: user('still here') });
    expect(after.choices[0]!.message.content).toBe('still here');
  });

  it('cancels the provider call when the caller leaves a stream mid-way', async () => {
    stack.emulator.script({ kind: 'chat', content: 'one two three four five six', chunkDelayMs: 200 });
    const aborted = stack.emulator.nextAbort();
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'gpt-test', messages: user('x'), stream: true },
      { signal: controller.signal },
    );
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content) break;
    }
    controller.abort();
    expect((await aborted).body.model).toBe('gpt-test-upstream');
  });

  it("echoes the caller's x-request-id, and makes one when none is sent", async () => {
    const sent = await fetch(`${client.baseURL}/models`, {
      headers: { authorization: `Bearer ${stack.adminKey}`, 'x-request-id': 'trace-me-123' },
    });
    expect(sent.headers.get('x-request-id')).toBe('trace-me-123');
    const made = await fetch(`${client.baseURL}/models`, { headers: { authorization: `Bearer ${stack.adminKey}` } });
    expect(made.headers.get('x-request-id')).toMatch(/\S{8,}/);
  });

  it("raises the SDK's own errors: 401 for a bad key, 404 for an unknown model, 400 for what is not supported", async () => {
    const stranger = new OpenAI({ apiKey: 'mg_nope_0000', baseURL: client.baseURL, maxRetries: 0 });
    await expect(stranger.chat.completions.create({ model: 'echo', messages: user('x') })).rejects.toBeInstanceOf(AuthenticationError);
    // Audited as any failed authentication is, without the credential.
    const audited = async () => {
      const { body } = await postGraphQL<{ auditLog: { edges: { node: Record<string, unknown> }[] } }>(
        stack.url,
        '{ auditLog(filter: {action: "auth.failure"}, first: 50) { edges { node { action outcome actor target reason sourceAddress } } } }',
      );
      return body.data!.auditLog.edges.map((edge) => edge.node);
    };
    await expect.poll(async () => (await audited()).length).toBeGreaterThan(0);
    expect(JSON.stringify(await audited())).not.toContain('mg_nope_0000');
    const unknown = await client.chat.completions.create({ model: 'nope', messages: user('x') }).catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect((unknown as NotFoundError).code).toBe('MODEL_NOT_FOUND');
    const many = await client.chat.completions.create({ model: 'echo', messages: user('x'), n: 2 }).catch((error: unknown) => error);
    expect(many).toBeInstanceOf(BadRequestError);
    expect((many as BadRequestError).param).toBe('n');
    const unknownField = await client.chat.completions
      .create({ model: 'echo', messages: user('x'), frobnicate: true } as never)
      .catch((error: unknown) => error);
    expect((unknownField as BadRequestError).message).toContain('frobnicate');
  });
});

describe('the OpenAI-compatible API under a rate limit', () => {
  let limited: TestStack;
  beforeAll(async () => {
    limited = await startTestStack({ router: { port: 0, rateLimits: { 'Mutation.chat': { max: 2, window: '1h' } } } });
  });
  afterAll(() => limited.stop());

  it("counts against Mutation.chat's limit, one bucket with GraphQL, and says when to retry", async () => {
    const rest = new OpenAI({ apiKey: limited.adminKey, baseURL: limited.url.replace(/\/graphql$/, '/v1'), maxRetries: 0 });
    const graphql = () =>
      postGraphQL(limited.url, 'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { content } }');
    expect((await graphql()).body.data).toBeTruthy();
    await rest.chat.completions.create({ model: 'echo', messages: user('x') });
    const refused = await rest.chat.completions.create({ model: 'echo', messages: user('x') }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(RateLimitError);
    expect((refused as RateLimitError).code).toBe('RATE_LIMITED');
    expect(Number((refused as RateLimitError).headers?.get('retry-after'))).toBeGreaterThan(0);
    expect((await graphql()).body.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
  });
});

describe('the REST doors from a browser on an allowed origin', () => {
  let browserStack: TestStack;
  const origin = 'https://app.example.com';
  beforeAll(async () => {
    browserStack = await startTestStack({ router: { port: 0, allowedOrigins: [origin] } });
  });
  afterAll(() => browserStack.stop());

  it('answers the preflight and the call with CORS headers, and refuses other origins', async () => {
    const url = browserStack.url.replace(/\/graphql$/, '/v1/chat/completions');
    const preflight = await fetch(url, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(origin);
    expect(preflight.headers.get('access-control-allow-headers')).toContain('authorization');
    const call = await fetch(url, {
      method: 'POST',
      headers: { origin, authorization: `Bearer ${browserStack.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo', messages: user('from a page') }),
    });
    expect(call.status).toBe(200);
    expect(call.headers.get('access-control-allow-origin')).toBe(origin);
    const refusedCall = await fetch(url, { method: 'POST', headers: { origin, 'content-type': 'application/json' }, body: '{}' });
    expect(refusedCall.status).toBe(401);
    expect(refusedCall.headers.get('access-control-allow-origin')).toBe(origin);
    const elsewhere = await fetch(url, {
      method: 'POST',
      headers: { origin: 'https://evil.example', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(elsewhere.status).toBe(403);
    // In the door's own format, with its request id.
    expect(((await elsewhere.json()) as { error: { code: string } }).error.code).toBe('FORBIDDEN');
    expect(elsewhere.headers.get('x-request-id')).toBeTruthy();
  });
});
