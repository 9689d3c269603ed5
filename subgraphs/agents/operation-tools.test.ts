import { readFileSync } from 'node:fs';
import { buildSchema, type GraphQLSchema } from 'graphql';
import { describe, expect, it } from 'vitest';
import { MAX_DOCUMENT_LENGTH, ToolDefinitionError, compileOperationTool, parseToolArguments } from './operation-tools.ts';

const api = buildSchema(readFileSync(new URL('../../schema/api.graphql', import.meta.url), 'utf8'));

/** Recursion, custom scalars, defaults and deprecations, which the public API does not (yet) have. */
const catalog = buildSchema(`
  "An ISO-8601 time."
  scalar DateTime @specifiedBy(url: "https://www.rfc-editor.org/rfc/rfc3339")
  scalar Json

  "How results are ordered."
  enum Order {
    "Newest first."
    NEWEST
    OLDEST
    RANDOM @deprecated(reason: "Use NEWEST.")
  }

  "A condition on items."
  input Filter {
    "All of these."
    and: [Filter!]
    not: Filter
    range: Range
    tag: String
  }

  input Range {
    from: DateTime!
    to: DateTime
    within: Filter
  }

  input Span {
    from: DateTime!
    to: DateTime
  }

  input Page {
    first: Int! = 20
    order: Order = NEWEST
    tags: [String!] = ["a"]
    window: Span = { from: "2026-01-01T00:00:00Z" }
    legacy: Boolean @deprecated(reason: "Ignored.")
    raw: Json = { a: 1 }
  }

  type Item {
    id: ID!
  }

  type Query {
    items(filter: Filter, page: Page, "Only items seen after this." since: DateTime): [Item!]!
    ranged(range: Range!): [Item!]!
    recent(first: Int = 10, order: Order): [Item!]!
    echo(value: Json): Json
  }
`);

const CHAT = `# Asks a model one question.
mutation Chat($input: ChatInput!) {
  chat(input: $input) { content finishReason }
}`;

function tool(schema: GraphQLSchema, document: string, description: string | null = null) {
  return compileOperationTool(schema, { name: 'tool', description, document });
}

function refusal(definition: { name?: string; document: string; schema?: GraphQLSchema }): { field: string; message: string } {
  try {
    compileOperationTool(definition.schema ?? api, { name: definition.name ?? 'tool', description: null, document: definition.document });
  } catch (error) {
    if (error instanceof ToolDefinitionError) return { field: error.field, message: error.message };
    throw error;
  }
  throw new Error('the tool compiled');
}

const DATE_TIME = { description: 'Custom scalar DateTime.\n\nAn ISO-8601 time.\n\nSpecified by https://www.rfc-editor.org/rfc/rfc3339.' };
const ORDER = {
  type: 'string',
  description: 'How results are ordered.\n\n- NEWEST: Newest first.\n- RANDOM (deprecated: Use NEWEST.)',
  enum: ['NEWEST', 'OLDEST', 'RANDOM'],
};

describe('compileOperationTool', () => {
  it('describes a variable-free query as an object without properties, and keeps the document verbatim', () => {
    const document =
      '# Lists the models this key may use, with their prices.\nquery Models { models { id pricing { inputPerMillionTokens } } }';
    const models = compileOperationTool(api, { name: 'list_models', description: null, document });
    expect(models).toMatchObject({
      name: 'list_models',
      description: 'Lists the models this key may use, with their prices.',
      document,
      operationName: 'Models',
      operationType: 'query',
      parameters: { type: 'object', properties: {}, additionalProperties: false },
    });
    expect(models.parameters).toEqual({ type: 'object', properties: {}, additionalProperties: false });
  });

  it('describes chat(input: ChatInput!) with its nested required fields, exact enum values, lists and the CachePolicy default', () => {
    const chat = tool(api, CHAT);
    expect(chat.operationType).toBe('mutation');
    expect(chat.operationName).toBe('Chat');
    expect(chat.parameters).toEqual({
      type: 'object',
      properties: {
        input: {
          type: 'object',
          properties: {
            model: { type: 'string', description: 'A model id, alias or `id@version` pin.' },
            messages: {
              type: 'array',
              description: 'The conversation so far; at least one message.',
              items: {
                type: 'object',
                properties: {
                  role: { type: 'string', enum: ['SYSTEM', 'USER', 'ASSISTANT', 'TOOL'] },
                  content: { type: 'string', description: "The message's text (for USER, before its `parts`).", default: '' },
                  parts: {
                    type: 'array',
                    description:
                      'For role USER: more of the message after `content`, in order: text and images (a model with VISION sees them).',
                    items: {
                      type: 'object',
                      description: 'A part of a USER message: text, or an image. Set the field its type names.',
                      properties: {
                        type: { type: 'string', enum: ['TEXT', 'IMAGE'] },
                        text: { type: 'string', description: 'For TEXT: the text.' },
                        image: {
                          type: 'object',
                          description:
                            'For IMAGE: the image.\n\n' +
                            'An image, by URL (`https:`, or a `data:` URL with base64 bytes) or by its bytes (`data` and `mediaType`).\n' +
                            'Gemini and Bedrock take the bytes only; OpenAI, Azure and Anthropic take both.',
                          properties: {
                            url: { type: 'string', description: 'An `https:` URL the provider fetches, or `data:image/png;base64,…`.' },
                            data: { type: 'string', description: "The image's bytes, base64-encoded (with `mediaType`)." },
                            mediaType: { type: 'string', description: 'image/png, image/jpeg, image/gif or image/webp (with `data`).' },
                            detail: {
                              type: 'string',
                              description: "OpenAI's resolution hint (default AUTO); other providers ignore it.",
                              enum: ['AUTO', 'LOW', 'HIGH'],
                            },
                          },
                          additionalProperties: false,
                        },
                      },
                      required: ['type'],
                      additionalProperties: false,
                    },
                  },
                  toolCallId: { type: 'string', description: 'For role TOOL: the id of the tool call this message answers.' },
                  toolCalls: {
                    type: 'array',
                    description:
                      'For role ASSISTANT: the tool calls the model asked for in this turn (answered by the TOOL messages after it).',
                    items: {
                      type: 'object',
                      description: 'A tool call the model made earlier in the conversation, sent back with its ASSISTANT message.',
                      properties: {
                        id: { type: 'string' },
                        name: { type: 'string' },
                        arguments: { type: 'string', description: 'Arguments as JSON text, as the model produced them.' },
                      },
                      required: ['id', 'name', 'arguments'],
                      additionalProperties: false,
                    },
                  },
                },
                required: ['role'],
                additionalProperties: false,
              },
            },
            maxTokens: { type: 'integer', description: "Most tokens to generate; at most the model's `maxOutputTokens`." },
            temperature: { type: 'number', description: 'Sampling temperature, 0 to 2.' },
            topP: { type: 'number', description: 'Nucleus sampling, 0 to 1.' },
            stop: { type: 'array', items: { type: 'string' }, description: 'Up to 4 sequences at which generation stops.' },
            tools: {
              type: 'array',
              description: 'Tools the model may call.',
              items: {
                type: 'object',
                properties: {
                  name: { type: 'string' },
                  description: { type: 'string' },
                  parameters: { type: 'string', description: "JSON Schema of the tool's arguments object, as JSON text." },
                },
                required: ['name', 'parameters'],
                additionalProperties: false,
              },
            },
            toolChoice: {
              type: 'object',
              description: 'Whether the model must, may or may not call a tool, or which one it must call (default: may).',
              properties: {
                mode: {
                  type: 'string',
                  description:
                    '- AUTO: The model decides.\n- NONE: No tool call, though tools are described.\n- REQUIRED: At least one tool call.',
                  enum: ['AUTO', 'NONE', 'REQUIRED'],
                  default: 'AUTO',
                },
                name: { type: 'string', description: 'The tool the model must call (one of `tools`); with it, mode REQUIRED is implied.' },
              },
              additionalProperties: false,
            },
            cache: {
              type: 'object',
              description: 'Response cache control (whole chats only; streams are never cached).',
              properties: {
                policy: {
                  type: 'string',
                  description:
                    '- AUTO: Use the cache when the request is deterministic (temperature 0).\n' +
                    '- BYPASS: Neither read nor write the cache.\n' +
                    '- ALWAYS: Use the cache even when sampling (the caller accepts a repeated answer).',
                  enum: ['AUTO', 'BYPASS', 'ALWAYS'],
                  default: 'AUTO',
                },
                ttlSeconds: { type: 'integer', description: 'How long a stored answer lives; default from the server config.' },
              },
              additionalProperties: false,
            },
            tags: {
              type: 'array',
              items: { type: 'string' },
              description: 'Labels for usage reports (`Query.usage(filter: {tags})`): up to 10, each 1 to 64 characters.',
            },
            responseFormat: {
              type: 'object',
              description:
                "The answer's form: text (the default), any JSON object, or JSON to a schema; JSON needs a model with JSON_SCHEMA.",
              properties: {
                type: { type: 'string', enum: ['TEXT', 'JSON_OBJECT', 'JSON_SCHEMA'] },
                schema: { type: 'string', description: 'For JSON_SCHEMA: the schema of the answer, as JSON text.' },
                name: { type: 'string', description: "For JSON_SCHEMA: the schema's name (letters, digits, `_` and `-`, up to 64)." },
                strict: {
                  type: 'boolean',
                  description: 'For JSON_SCHEMA: whether the model must follow the schema exactly (where the provider can enforce it).',
                },
              },
              required: ['type'],
              additionalProperties: false,
            },
          },
          required: ['model', 'messages'],
          additionalProperties: false,
        },
      },
      required: ['input'],
      additionalProperties: false,
    });
  });

  it('takes variable defaults and input field defaults as JSON, and leaves defaulted variables out of required', () => {
    const page = tool(
      catalog,
      'query Page($page: Page, $first: Int = 5, $order: Order! = OLDEST) { items(page: $page) { id } recent(first: $first, order: $order) { id } }',
    );
    expect(page.parameters).toEqual({
      type: 'object',
      properties: {
        page: {
          type: 'object',
          properties: {
            first: { type: 'integer', default: 20 },
            order: { ...ORDER, default: 'NEWEST' },
            tags: { type: 'array', items: { type: 'string' }, default: ['a'] },
            window: {
              type: 'object',
              properties: { from: DATE_TIME, to: DATE_TIME },
              required: ['from'],
              additionalProperties: false,
              default: { from: '2026-01-01T00:00:00Z' },
            },
            legacy: { type: 'boolean', description: 'Deprecated: Ignored.' },
            raw: { description: 'Custom scalar Json.', default: { a: 1 } },
          },
          additionalProperties: false,
        },
        first: { type: 'integer', default: 5 },
        order: { ...ORDER, default: 'OLDEST' },
      },
      additionalProperties: false,
    });
  });

  it('describes custom scalars by name, with their description and specification', () => {
    const echo = tool(catalog, 'query Echo($since: DateTime!, $value: Json) { items(since: $since) { id } echo(value: $value) }');
    expect(echo.parameters).toEqual({
      type: 'object',
      properties: {
        since: { description: `Only items seen after this.\n\n${DATE_TIME.description}` },
        value: { description: 'Custom scalar Json.' },
      },
      required: ['since'],
      additionalProperties: false,
    });
  });

  it('stops at an input type already being described (recursive and mutually recursive inputs)', () => {
    const filtered = tool(catalog, 'query Items($filter: Filter) { items(filter: $filter) { id } }');
    const again = { type: 'object', description: 'a Filter (as above)' };
    expect(filtered.parameters).toEqual({
      type: 'object',
      properties: {
        filter: {
          type: 'object',
          description: 'A condition on items.',
          properties: {
            and: { type: 'array', items: again, description: 'All of these.' },
            not: again,
            range: {
              type: 'object',
              properties: { from: DATE_TIME, to: DATE_TIME, within: again },
              required: ['from'],
              additionalProperties: false,
            },
            tag: { type: 'string' },
          },
          additionalProperties: false,
        },
      },
      additionalProperties: false,
    });

    const ranged = tool(catalog, 'query Ranged($range: Range!) { ranged(range: $range) { id } }');
    const within = (ranged.parameters as { properties: { range: { properties: { within: { properties: Record<string, unknown> } } } } })
      .properties.range.properties.within;
    expect(within.properties.range).toEqual({ type: 'object', description: 'a Range (as above)' });
    expect(within.properties.not).toEqual(again);
  });

  it('describes a variable by its own description, else by the argument or input field it is passed to', () => {
    const ask = tool(
      api,
      `mutation Ask($model: String!, $prompt: String!, "How to use the cache." $policy: CachePolicy = BYPASS, $temperature: Float = 0.5) {
        chat(input: { model: $model, temperature: $temperature, cache: { policy: $policy }, messages: [{ role: USER, content: $prompt }] }) { content }
      }`,
    );
    expect(ask.parameters).toEqual({
      type: 'object',
      properties: {
        model: { type: 'string', description: 'A model id, alias or `id@version` pin.' },
        prompt: { type: 'string', description: "The message's text (for USER, before its `parts`)." },
        policy: {
          type: 'string',
          description:
            'How to use the cache.\n\n' +
            '- AUTO: Use the cache when the request is deterministic (temperature 0).\n' +
            '- BYPASS: Neither read nor write the cache.\n' +
            '- ALWAYS: Use the cache even when sampling (the caller accepts a repeated answer).',
          enum: ['AUTO', 'BYPASS', 'ALWAYS'],
          default: 'BYPASS',
        },
        temperature: { type: 'number', description: 'Sampling temperature, 0 to 2.', default: 0.5 },
      },
      required: ['model', 'prompt'],
      additionalProperties: false,
    });
  });
});

describe('tool descriptions', () => {
  it('takes the # lines right above the operation keyword, without # and one space', () => {
    const document = `# Not this: a blank line follows.

fragment Price on Model { pricing { inputPerMillionTokens } } # nor this: it ends a line of code
# Lists the models this key may use,
#with their prices.
#
#   Indented.
query Models { models { id ...Price } }`;
    expect(tool(api, document).description).toBe('Lists the models this key may use,\nwith their prices.\n\n  Indented.');
  });

  it('prefers the given description, then the operation\'s own """ description, then its comments', () => {
    const document = '# The comment.\n"""The operation\'s description."""\nquery Models { models { id } }';
    expect(tool(api, document, 'Given.').description).toBe('Given.');
    expect(tool(api, document, '  ').description).toBe("The operation's description.");
    expect(tool(api, '# The comment.\nquery Models { models { id } }', null).description).toBe('The comment.');
  });

  it('generates a description naming the operation and its root fields when there is none', () => {
    expect(tool(api, 'query Models { models { id } }').description).toBe('Runs the GraphQL query Models (selects models).');
    expect(tool(api, '{ models { id } me { kind } m: models { id } }').description).toBe('Runs the GraphQL query (selects models, me).');
    expect(tool(api, '# \n#\nmutation Chat($input: ChatInput!) { chat(input: $input) { content } }').description).toBe(
      'Runs the GraphQL mutation Chat (selects chat).',
    );
  });
});

describe('refused tool definitions', () => {
  it('refuses names other than 1 to 64 letters, digits, _ and -', () => {
    for (const name of ['', 'x'.repeat(65), 'two words', 'dotted.name', 'ümlaut']) {
      expect(refusal({ name, document: '{ models { id } }' })).toEqual({
        field: 'name',
        message: `The tool name ${JSON.stringify(name)} must be 1 to 64 letters, digits, "_" or "-".`,
      });
    }
    expect(
      compileOperationTool(api, { name: `A-z_9${'x'.repeat(59)}`, description: null, document: '{ models { id } }' }).name,
    ).toHaveLength(64);
  });

  it('refuses a document that does not parse, with the syntax error and where it is', () => {
    expect(refusal({ document: 'query {\n  models { id }' })).toEqual({
      field: 'document',
      message: 'The document does not parse: Syntax Error: Expected Name, found <EOF>. (line 2, column 16)',
    });
  });

  it('refuses documents without exactly one operation', () => {
    expect(refusal({ document: 'query A { models { id } } query B { me { kind } }' })).toEqual({
      field: 'document',
      message: 'The document must contain exactly one operation (fragments may accompany it); it has 2.',
    });
    expect(refusal({ document: 'fragment F on Model { id }' })).toEqual({
      field: 'document',
      message: 'The document must contain exactly one operation (fragments may accompany it); it has 0.',
    });
  });

  it('refuses a subscription: a tool returns one result', () => {
    expect(refusal({ document: 'subscription Stream($input: ChatInput!) { chatStream(input: $input) { __typename } }' })).toEqual({
      field: 'document',
      message: 'The operation is a subscription; a tool must be a query or a mutation, because it returns one result.',
    });
  });

  it('refuses a document that does not validate, with every GraphQL error and where it is', () => {
    expect(refusal({ document: '{ nope }' })).toEqual({
      field: 'document',
      message: 'The document does not validate against the schema: Cannot query field "nope" on type "Query". (line 1, column 3)',
    });
    expect(refusal({ document: 'query Models($unused: Int) {\n  models { id }\n  model { id }\n}' })).toEqual({
      field: 'document',
      message:
        'The document does not validate against the schema: Field "model" argument "id" of type "String!" is required, but it was not provided. (line 3, column 3) ' +
        'Variable "$unused" is never used in operation "Models". (line 1, column 14)',
    });
    const many = refusal({ document: `{ ${Array.from({ length: 12 }, (_, index) => `f${index}`).join(' ')} }` }).message;
    expect(many.match(/Cannot query field/g)).toHaveLength(10);
    expect(many).toMatch(/Cannot query field "f9" on type "Query"\. \(line 1, column 30\) \(and 2 more\)$/);
    expect(refusal({ document: 'type X { a: Int } query { models { id } }' }).message).toBe(
      'The document does not validate against the schema: The "X" definition is not executable. (line 1, column 1)',
    );
  });

  it('refuses documents longer than 20,000 characters', () => {
    const document = '{ models { id } }';
    expect(MAX_DOCUMENT_LENGTH).toBe(20_000);
    expect(tool(api, document.padEnd(20_000)).document).toHaveLength(20_000);
    expect(refusal({ document: document.padEnd(20_001) })).toEqual({
      field: 'document',
      message: 'The document is 20001 characters long; at most 20000 are allowed.',
    });
  });
});

describe('OperationTool.coerce', () => {
  const chat = tool(api, CHAT);
  const message = { role: 'USER', content: 'Hello' };

  it('coerces arguments as the server coerces variables: enums by name, defaults filled in, a single value as a list', () => {
    expect(
      chat.coerce({
        input: { model: 'echo', messages: [message, { role: 'ASSISTANT', content: 'Hi' }], cache: { ttlSeconds: 60 }, tags: 'demo' },
      }),
    ).toEqual({
      ok: true,
      variables: {
        input: {
          model: 'echo',
          messages: [message, { role: 'ASSISTANT', content: 'Hi' }],
          cache: { policy: 'AUTO', ttlSeconds: 60 },
          tags: ['demo'],
        },
      },
    });
    const recent = tool(catalog, 'query Recent($first: Int = 5, $order: Order! = OLDEST) { recent(first: $first, order: $order) { id } }');
    expect(recent.coerce({})).toEqual({ ok: true, variables: { first: 5, order: 'OLDEST' } });
    expect(recent.coerce({ first: null })).toEqual({ ok: true, variables: { first: null, order: 'OLDEST' } });
  });

  it('refuses a missing required argument', () => {
    expect(chat.coerce({})).toEqual({ ok: false, errors: ['Variable "$input" of required type "ChatInput!" was not provided.'] });
    expect(chat.coerce({ input: { model: 'echo' } })).toEqual({
      ok: false,
      errors: [
        'Variable "$input" got invalid value { model: "echo" }; Field "messages" of required type "[ChatMessageInput!]!" was not provided.',
      ],
    });
  });

  it('names the path of a wrong value deep in an input object', () => {
    expect(chat.coerce({ input: { model: 'echo', messages: [message, { role: 5, content: 'x' }], cache: { policy: 'auto' } } })).toEqual({
      ok: false,
      errors: [
        'Variable "$input" got invalid value 5 at "input.messages[1].role"; Enum "ChatRole" cannot represent non-string value: 5.',
        'Variable "$input" got invalid value "auto" at "input.cache.policy"; Value "auto" does not exist in "CachePolicy" enum. Did you mean the enum value "AUTO"?',
      ],
    });
  });

  it('refuses arguments the operation does not declare, at the top and inside input objects', () => {
    expect(chat.coerce({ input: { model: 'echo', messages: [message] }, stream: true })).toEqual({
      ok: false,
      errors: ['Unknown argument "stream"; this tool takes "input".'],
    });
    const models = tool(api, '{ models { id } }');
    expect(models.coerce({})).toEqual({ ok: true, variables: {} });
    expect(models.coerce({ filter: 'gpt' })).toEqual({ ok: false, errors: ['Unknown argument "filter"; this tool takes no arguments.'] });
    expect(chat.coerce({ input: { model: 'echo', messages: [message], temperatur: 0 } })).toEqual({
      ok: false,
      errors: [
        'Variable "$input" got invalid value { model: "echo", messages: [[Object]], temperatur: 0 }; Field "temperatur" is not defined by type "ChatInput". Did you mean "temperature"?',
      ],
    });
  });

  it('refuses anything but an object', () => {
    expect(chat.coerce([message])).toEqual({ ok: false, errors: ['The arguments must be a JSON object; got an array.'] });
    expect(chat.coerce(null)).toEqual({ ok: false, errors: ['The arguments must be a JSON object; got null.'] });
    expect(chat.coerce('hello')).toEqual({ ok: false, errors: ['The arguments must be a JSON object; got a string.'] });
    expect(chat.coerce(3)).toEqual({ ok: false, errors: ['The arguments must be a JSON object; got a number.'] });
  });

  it('lists at most 10 problems', () => {
    const messages = Array.from({ length: 12 }, () => ({ role: 'NOBODY', content: 'x' }));
    const result = chat.coerce({ input: { model: 'echo', messages }, extra: 1 });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toHaveLength(10);
    expect(result.errors[0]).toBe('Unknown argument "extra"; this tool takes "input".');
    expect(result.errors[9]).toBe(
      'Variable "$input" got invalid value "NOBODY" at "input.messages[8].role"; Value "NOBODY" does not exist in "ChatRole" enum.',
    );
  });
});

describe('parseToolArguments', () => {
  it('reads empty text as no arguments', () => {
    expect(parseToolArguments('')).toEqual({ ok: true, value: {} });
    expect(parseToolArguments(' \n')).toEqual({ ok: true, value: {} });
  });

  it('reads a JSON object', () => {
    expect(parseToolArguments('{}')).toEqual({ ok: true, value: {} });
    expect(parseToolArguments('{"a":1}')).toEqual({ ok: true, value: { a: 1 } });
  });

  it('refuses JSON that is not an object', () => {
    expect(parseToolArguments('[1]')).toEqual({ ok: false, error: 'The arguments must be a JSON object; got an array.' });
    expect(parseToolArguments('null')).toEqual({ ok: false, error: 'The arguments must be a JSON object; got null.' });
    expect(parseToolArguments('"text"')).toEqual({ ok: false, error: 'The arguments must be a JSON object; got a string.' });
  });

  it("refuses text that is not JSON, with the parser's message", () => {
    const result = parseToolArguments('not json');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error).toMatch(/^The arguments are not valid JSON: \S/);
  });
});
