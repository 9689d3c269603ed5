/**
 * The security suite: hostile requests against a running stack. Every case sends one attack,
 * asserts the safe outcome (status and `extensions.code`, or the WebSocket close code, and that
 * nothing leaked: no data, no stack trace, no internal address, no secret), and then asserts that
 * the router still serves a normal request (and, for WebSocket cases, a normal socket).
 *
 * Cases are tables grouped by what they attack: the operation document, the HTTP request, the
 * credential, the caller's grant, the subgraphs behind the router, and the WebSocket protocol. The
 * last group reads the audit trail that the refused credentials left.
 */
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IDENTITY_CONNECTION_PARAM, IDENTITY_HEADER, IdentityTokens } from '../platform/identity/identity-token.ts';
import type { Principal } from '../platform/identity/principal.ts';
import { openRawSocket, subscribeMessage, type ProtocolMessage, type RawSocket } from './support/raw-ws.ts';
import { adminHeaders, collectSubscription, postGraphQL, startTestStack, type GraphQLResponse, type TestStack } from './support/stack.ts';

// ─── Operations and fixtures ─────────────────────────────────────────────────────────────────

const MODELS = '{ models { id } }';
const MODEL_IDS = ['echo', 'gpt-test', 'hashing-embed', 'backup'];
const CREATE_TENANT = 'mutation CreateTenant($input: CreateTenantInput!) { createTenant(input: $input) { tenant { id } } }';
const CREATE_KEY = 'mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }';
const REVOKE_KEY = 'mutation RevokeKey($id: ID!) { revokeApiKey(input: {id: $id}) { apiKey { id revokedAt } } }';
const CHAT = 'mutation Chat($model: String!) { chat(input: {model: $model, messages: [{role: USER, content: "hello"}]}) { content } }';
const CHAT_STREAM = `subscription Stream($input: ChatInput!) {
  chatStream(input: $input) { __typename ... on ChatDelta { content } ... on ChatCompleted { finishReason } ... on ChatFailed { code } }
}`;
/** Twenty words: with the local model streaming a word every 50 ms, a stream stays open about a second. */
const SLOW_STREAM = {
  input: {
    model: 'echo',
    maxTokens: 32,
    messages: [
      {
        role: 'USER',
        content:
          'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty',
      },
    ],
  },
};
const STREAM_DELAY_MS = 50;

interface Key {
  id: string;
  secret: string;
}

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });

/** Refused credentials at the shared stack's router: each must leave one auth.failure audit event. */
let refusedCredentials = 0;

/** Every credential an attacker presents in this file: none may ever show up in the audit log. */
const presentedSecrets: string[] = [];
function presented(secret: string): string {
  presentedSecrets.push(secret);
  return secret;
}

// ─── Stacks ──────────────────────────────────────────────────────────────────────────────────

/** One stack for most cases, with default limits. */
let stack: TestStack;
let keys: {
  acmeAdmin: Key;
  globexAdmin: Key;
  globexReader: Key;
  modelsOnly: Key;
  chatOnly: Key;
  echoOnly: Key;
};

async function adminCall<T = Record<string, unknown>>(target: TestStack, query: string, variables?: Record<string, unknown>): Promise<T> {
  const { status, body } = await postGraphQL<T>(target.url, query, variables);
  expect(body.errors, query).toBeUndefined();
  expect(status).toBe(200);
  return body.data!;
}

async function createKey(input: Record<string, unknown>): Promise<Key> {
  const data = await adminCall<{ createApiKey: { secret: string; apiKey: { id: string } } }>(stack, CREATE_KEY, { input });
  return { id: data.createApiKey.apiKey.id, secret: data.createApiKey.secret };
}

beforeAll(async () => {
  stack = await startTestStack({}, { localStreamDelayMs: STREAM_DELAY_MS });
  for (const id of ['acme', 'globex']) await adminCall(stack, CREATE_TENANT, { input: { id, name: `${id} inc` } });
  keys = {
    acmeAdmin: await createKey({ tenantId: 'acme', name: 'acme admin', scopes: ['ADMIN'] }),
    globexAdmin: await createKey({ tenantId: 'globex', name: 'globex admin', scopes: ['ADMIN'] }),
    globexReader: await createKey({ tenantId: 'globex', name: 'globex secret project', scopes: ['MODELS_READ'] }),
    modelsOnly: await createKey({ tenantId: 'acme', name: 'models only', scopes: ['MODELS_READ'] }),
    chatOnly: await createKey({ tenantId: 'acme', name: 'chat only', scopes: ['CHAT_INVOKE'] }),
    echoOnly: await createKey({ tenantId: 'acme', name: 'echo only', scopes: ['MODELS_READ', 'CHAT_INVOKE'], allowedModels: ['echo'] }),
  };
});

afterAll(async () => {
  await stack?.stop();
});

// ─── Assertions ──────────────────────────────────────────────────────────────────────────────

type Body = GraphQLResponse['body'];

interface Answer {
  status: number;
  headers: Headers;
  body: Body;
}

/** What a refusal must look like; `status`, `limit` and `max` are checked only when given. */
interface Refusal {
  status?: number;
  code: string;
  limit?: string;
  max?: number;
}

/** Nothing internal in what a client receives: no stack traces, addresses, secrets or tokens. */
function expectNothingLeaked(body: unknown, target: TestStack = stack): void {
  const text = JSON.stringify(body);
  expect(text).not.toMatch(/stacktrace|\bat \S+ \(|node_modules|\.[cm]?[jt]s:\d+/);
  expect(text).not.toMatch(/127\.0\.0\.1|localhost|\[::1?\]/);
  for (const subgraph of target.stack.subgraphs) expect(text).not.toContain(`:${subgraph.port}`);
  expect(text).not.toContain(target.adminKey);
  // Identity tokens (and any other JWT) are internal.
  expect(text).not.toMatch(/eyJ[\w-]+\.eyJ[\w-]+/);
  expect(text).not.toMatch(/Did you mean/i);
}

/** The refusal, with no data and nothing leaked. */
function expectRefused(answer: Answer, expected: Refusal, target: TestStack = stack): void {
  const error = answer.body.errors?.[0];
  const actual: Refusal = { code: String(error?.extensions?.code) };
  if (expected.status !== undefined) actual.status = answer.status;
  if (expected.limit !== undefined) actual.limit = error?.extensions?.limit as string;
  if (expected.max !== undefined) actual.max = error?.extensions?.max as number;
  expect(actual, error?.message).toEqual(expected);
  expect(answer.body.data ?? null).toBeNull();
  expectNothingLeaked(answer.body, target);
}

/** The normal request every case ends with: the admin lists the models. */
async function stillServes(target: TestStack = stack): Promise<void> {
  const { status, body } = await postGraphQL<{ models: { id: string }[] }>(target.url, MODELS);
  expect(body.errors).toBeUndefined();
  expect(status).toBe(200);
  expect(body.data?.models.map((model) => model.id)).toEqual(MODEL_IDS);
}

/** A fresh graphql-ws client with the admin key runs a query. */
async function stillServesOverWebSocket(target: TestStack = stack): Promise<void> {
  const client = target.ws();
  try {
    const { results, error } = await collectSubscription<{ models: { id: string }[] }>(client, { query: MODELS });
    expect(error).toBeUndefined();
    expect(results.map((result) => result.data?.models.map((model) => model.id))).toEqual([MODEL_IDS]);
  } finally {
    await client.dispose();
  }
}

interface HostileCase {
  name: string;
  attack(): Promise<void>;
}

/** Runs each case: the attack with its own assertions, then the normal request(s). */
function hostile(cases: HostileCase[], target: () => TestStack = () => stack, { overWebSocket = false } = {}): void {
  for (const { name, attack } of cases) {
    it(name, async () => {
      await attack();
      await stillServes(target());
      if (overWebSocket) await stillServesOverWebSocket(target());
    });
  }
}

// ─── HTTP helpers ────────────────────────────────────────────────────────────────────────────

/** POSTs an operation with the admin key (or `headers`' credential). */
async function post(query: string, variables?: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Answer> {
  return postGraphQL(stack.url, query, variables, headers);
}

/** Any request; the body is parsed as JSON when it is JSON. */
async function send(url: string, init: RequestInit): Promise<Answer> {
  const response = await fetch(url, init);
  const text = await response.text();
  let body: Body = {};
  try {
    body = JSON.parse(text) as Body;
  } catch {
    body = { errors: [{ message: text }] };
  }
  return { status: response.status, headers: response.headers, body };
}

const jsonHeaders = (credential?: Record<string, string>) => ({
  'content-type': 'application/json',
  accept: 'application/graphql-response+json, application/json',
  ...(credential ?? adminHeaders(stack.url)),
});

/** POSTs `{ models { id } }` with exactly these credential headers (none when empty). */
const modelsWith = (credential: Record<string, string>) =>
  send(stack.url, { method: 'POST', headers: jsonHeaders(credential), body: JSON.stringify({ query: MODELS }) });

/**
 * A body of `totalBytes` sent with `transfer-encoding: chunked` (no declared size), with the
 * admin key: the router reads (and bounds) such a body itself once the caller is authenticated.
 */
function postChunked(totalBytes: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const target = new URL(stack.url);
    let answered = false;
    const request = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', headers: jsonHeaders() },
      (response) => {
        answered = true;
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: new Headers(response.headers as Record<string, string>),
            body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body,
          }),
        );
      },
    );
    // The server may stop reading (and close) before we finish writing: that is the point.
    request.on('error', (error) => {
      if (!answered) reject(error);
    });
    const chunk = Buffer.alloc(64 * 1024, 'a');
    request.write('{"query": "{ models { id } }", "extensions": {"pad": "');
    let sent = 0;
    const pump = () => {
      while (sent < totalBytes && !request.destroyed) {
        sent += chunk.length;
        if (!request.write(chunk)) return void request.once('drain', pump);
      }
      if (!request.destroyed) request.end('"}}');
    };
    pump();
  });
}

/** Declares a body of `declaredBytes` and sends none of it: the answer must not wait for it. */
function postDeclaringOnly(declaredBytes: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const target = new URL(stack.url);
    const request = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: { ...jsonHeaders(), 'content-length': String(declaredBytes) },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          resolve({
            status: response.statusCode ?? 0,
            headers: new Headers(response.headers as Record<string, string>),
            body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Body,
          });
          request.destroy();
        });
      },
    );
    request.on('error', reject);
    request.flushHeaders();
  });
}

// ─── Identity tokens ─────────────────────────────────────────────────────────────────────────

const subgraphUrl = (name: 'inference' | 'access') => stack.stack.subgraphs.find((subgraph) => subgraph.name === name)!.url;

const principalOf = (key: Key, tenantId: string, scopes: Principal['scopes']): Principal => ({
  kind: 'API_KEY',
  subject: key.id,
  tenantId,
  keyId: key.id,
  scopes,
  allowedModels: null,
});

const platformAdmin = (): Principal => ({
  kind: 'API_KEY',
  subject: 'forger',
  tenantId: 'platform',
  keyId: 'forger',
  scopes: ['admin', 'models:read', 'chat:invoke'],
  allowedModels: null,
});

const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Straight to a subgraph's /graphql, with `token` (if any) as the identity header. */
function toSubgraph(name: 'inference' | 'access', query: string, token?: string, variables?: Record<string, unknown>): Promise<Answer> {
  return send(subgraphUrl(name), {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...(token !== undefined && { [IDENTITY_HEADER]: token }) },
    body: JSON.stringify({ query, variables }),
  });
}

// ─── WebSocket helpers ───────────────────────────────────────────────────────────────────────

/** A raw graphql-transport-ws socket to the router; closed by the test that opened it or the server. */
const sockets: RawSocket[] = [];
function rawSocket(target: TestStack = stack, options?: Parameters<typeof openRawSocket>[1]): RawSocket {
  const socket = openRawSocket(target.wsUrl, options);
  sockets.push(socket);
  return socket;
}
afterAll(() => {
  for (const socket of sockets) socket.close();
});

const adminInit = (target: TestStack = stack) => ({ authorization: `Bearer ${target.adminKey}` });
/** The router's gauge of subscriptions streaming through it. */
async function openSubscriptions(target: TestStack): Promise<number | undefined> {
  const metrics = await (await fetch(target.url.replace(/\/graphql$/, '/metrics'))).text();
  const value = /^modelgraph_router_open_subscriptions(?:\{[^}]*\})? (\d+)$/m.exec(metrics)?.[1];
  return value === undefined ? undefined : Number(value);
}
const ofId = (id: string, type?: string) => (message: ProtocolMessage) =>
  message.id === id && (type === undefined || message.type === type);
const eventOf = (message: ProtocolMessage) =>
  (message.payload as { data?: { chatStream?: { __typename: string } } } | undefined)?.data?.chatStream?.__typename;

// ─── Hostile operation documents ─────────────────────────────────────────────────────────────

/** `{ models { versions { versions { ... id } } } }`, `levels` deep below `models`. */
function nestedVersions(levels: number): string {
  let selection = 'id';
  for (let level = 0; level < levels; level++) selection = `versions { ${selection} }`;
  return `{ models { ${selection} } }`;
}

/** The same nesting, one fragment per level. */
function nestedFragments(levels: number): string {
  const fragments = Array.from({ length: levels }, (_, level) => `fragment L${level} on Model { versions { ...L${level + 1} } }`);
  return `{ models { ...L0 } } ${fragments.join(' ')} fragment L${levels} on Model { id }`;
}

/**
 * `levels` fragments, each spreading the next twice: 2^levels copies of `leaf` in a document of a
 * few hundred tokens. Kept at 20 levels so that a router that does expand it still finishes (in
 * seconds, doubling per level) instead of hanging the suite.
 */
function fragmentExplosion(levels: number, leaf: string): string {
  const fragments = Array.from({ length: levels }, (_, level) => `fragment X${level} on Model { ...X${level + 1} ...X${level + 1} }`);
  return `{ models { ...X0 } } ${fragments.join(' ')} fragment X${levels} on Model { ${leaf} }`;
}

const MODEL_SCALARS = [
  'id',
  'provider',
  'upstream',
  'version',
  'aliases',
  'status',
  'sunset',
  'replacement',
  'capabilities',
  'contextWindow',
  'maxOutputTokens',
];

describe('hostile operation documents are refused before any work, and the router keeps serving', () => {
  hostile([
    {
      name: 'a batched array of operations → 400 BAD_USER_INPUT, none of them run',
      async attack() {
        const answer = await send(stack.url, {
          method: 'POST',
          headers: jsonHeaders(),
          body: JSON.stringify([{ query: MODELS }, { query: MODELS }]),
        });
        expectRefused(answer, { status: 400, code: 'BAD_USER_INPUT' });
      },
    },
    {
      name: '31 aliases → 400 OPERATION_LIMIT_EXCEEDED (aliases, max 30)',
      async attack() {
        const aliases = Array.from({ length: 31 }, (_, index) => `a${index}: id`).join(' ');
        expectRefused(await post(`{ models { ${aliases} } }`), {
          status: 400,
          code: 'OPERATION_LIMIT_EXCEEDED',
          limit: 'aliases',
          max: 30,
        });
      },
    },
    {
      name: 'Model.versions nested 13 levels (depth 15) → 400 OPERATION_LIMIT_EXCEEDED (depth, max 12)',
      async attack() {
        expectRefused(await post(nestedVersions(13)), { status: 400, code: 'OPERATION_LIMIT_EXCEEDED', limit: 'depth', max: 12 });
      },
    },
    {
      name: 'the same nesting hidden in 13 nested fragments → 400 OPERATION_LIMIT_EXCEEDED (depth, max 12)',
      async attack() {
        expectRefused(await post(nestedFragments(13)), { status: 400, code: 'OPERATION_LIMIT_EXCEEDED', limit: 'depth', max: 12 });
      },
    },
    {
      name: 'circular fragments → 400 GRAPHQL_VALIDATION_FAILED, answered at once',
      async attack() {
        const answer = await post('{ models { ...A } } fragment A on Model { id ...B } fragment B on Model { version ...A }');
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
      },
    },
    {
      name: 'a fragment explosion (20 fragments, each spreading the next twice) → refused with OPERATION_LIMIT_EXCEEDED, not expanded',
      async attack() {
        const answer = await post(fragmentExplosion(20, 'id'));
        expectRefused(answer, { status: 400, code: 'OPERATION_LIMIT_EXCEEDED' });
      },
    },
    {
      name: 'a fragment explosion multiplying one alias → 400 OPERATION_LIMIT_EXCEEDED (aliases counted as spread)',
      async attack() {
        expectRefused(await post(fragmentExplosion(20, 'alias: id')), {
          status: 400,
          code: 'OPERATION_LIMIT_EXCEEDED',
          limit: 'aliases',
          max: 30,
        });
      },
    },
    {
      name: '22 directives → 400 OPERATION_LIMIT_EXCEEDED (directives, max 20)',
      async attack() {
        const fields = MODEL_SCALARS.map((field) => `${field} @include(if: true) @skip(if: false)`).join(' ');
        expectRefused(await post(`{ models { ${fields} } }`), {
          status: 400,
          code: 'OPERATION_LIMIT_EXCEEDED',
          limit: 'directives',
          max: 20,
        });
      },
    },
    {
      name: 'a document of over 2,000 tokens → 400 OPERATION_LIMIT_EXCEEDED (tokens, max 2000)',
      async attack() {
        expectRefused(await post(`{ models { ${'id '.repeat(2_100)} } }`), {
          status: 400,
          code: 'OPERATION_LIMIT_EXCEEDED',
          limit: 'tokens',
          max: 2_000,
        });
      },
    },
    {
      name: 'introspection through __schema → 400 GRAPHQL_VALIDATION_FAILED, no schema in the answer',
      async attack() {
        const answer = await post('{ __schema { queryType { name } types { name fields { name } } } }');
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
        expect(JSON.stringify(answer.body)).not.toMatch(/"(ApiKey|Tenant|AuditEvent|ChatInput)"/);
      },
    },
    {
      name: 'introspection through __type → 400 GRAPHQL_VALIDATION_FAILED, no type in the answer',
      async attack() {
        const answer = await post('{ __type(name: "ApiKey") { name fields { name } } }');
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
        expect(JSON.stringify(answer.body)).not.toMatch(/revokedAt|lastUsedAt/);
      },
    },
    {
      name: 'suggestion harvesting with a misspelt root field → GRAPHQL_VALIDATION_FAILED without "Did you mean"',
      async attack() {
        const answer = await post('{ modles { id } }');
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
        expect(JSON.stringify(answer.body)).not.toContain('"models"');
      },
    },
    {
      name: 'suggestion harvesting with misspelt nested fields, arguments and types → no suggestion',
      async attack() {
        for (const query of [
          '{ models { ide } }',
          '{ model(ids: "echo") { id } }',
          '{ models { ...F } } fragment F on Modle { id }',
          'query ($i: ChatInpt!) { models { id } }',
        ]) {
          expectRefused(await post(query), { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
        }
      },
    },
    {
      name: 'suggestion harvesting with a misspelt enum literal → GRAPHQL_VALIDATION_FAILED without "Did you mean"',
      async attack() {
        const answer = await post('mutation { chat(input: {model: "echo", messages: [{role: USR, content: "x"}]}) { content } }');
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
      },
    },
    {
      name: 'suggestion harvesting through variables (a misspelt enum value and input field) → BAD_USER_INPUT without "Did you mean"',
      async attack() {
        const query = 'mutation ($input: ChatInput!) { chat(input: $input) { content } }';
        const enumValue = await post(query, { input: { model: 'echo', messages: [{ role: 'USR', content: 'x' }] } });
        expectRefused(enumValue, { code: 'BAD_USER_INPUT' });
        const inputField = await post(query, { input: { model: 'echo', mesages: [{ role: 'USER', content: 'x' }] } });
        expectRefused(inputField, { code: 'BAD_USER_INPUT' });
        expect(stack.emulator.requests).toHaveLength(0);
      },
    },
    {
      name: '_entities through the router → 400 GRAPHQL_VALIDATION_FAILED: it is not in the public schema',
      async attack() {
        const answer = await post(
          `{ _entities(representations: [{__typename: "ApiKey", id: "${keys.globexReader.id}"}]) { ... on ApiKey { id name } } }`,
        );
        expectRefused(answer, { status: 400, code: 'GRAPHQL_VALIDATION_FAILED' });
        expect(JSON.stringify(answer.body)).not.toContain('globex secret project');
      },
    },
  ]);
});

// ─── Hostile HTTP requests ───────────────────────────────────────────────────────────────────

describe('hostile HTTP requests are refused at the edge, and the router keeps serving', () => {
  hostile([
    {
      name: 'a declared body over router.maxBodyBytes → 413 before a byte of it is read',
      async attack() {
        const answer = await postDeclaringOnly(100 * 1024 * 1024);
        expectRefused(answer, { status: 413, code: 'BAD_USER_INPUT' });
      },
    },
    {
      name: 'a chunked body over router.maxBodyBytes → 413',
      async attack() {
        const answer = await postChunked(stack.config.router.maxBodyBytes + 256 * 1024);
        expectRefused(answer, { status: 413, code: 'BAD_USER_INPUT' });
      },
    },
    {
      name: 'a GET without a CSRF-prevention header (a cross-site <img> or link) → 403 FORBIDDEN',
      async attack() {
        const answer = await send(`${stack.url}?query=${encodeURIComponent(MODELS)}`, {
          headers: { ...adminHeaders(stack.url), accept: 'application/json' },
        });
        expectRefused(answer, { status: 403, code: 'FORBIDDEN' });
      },
    },
    {
      name: 'a text/plain POST (what a cross-site form sends without a preflight) → 403 FORBIDDEN',
      async attack() {
        const answer = await send(stack.url, {
          method: 'POST',
          headers: { ...adminHeaders(stack.url), 'content-type': 'text/plain' },
          body: JSON.stringify({ query: MODELS }),
        });
        expectRefused(answer, { status: 403, code: 'FORBIDDEN' });
      },
    },
  ]);
});

// ─── Missing, unknown and malformed credentials ──────────────────────────────────────────────

describe('requests without a valid credential get 401 and nothing else', () => {
  const expectUnauthenticated = (answer: Answer) => {
    refusedCredentials++;
    expectRefused(answer, { status: 401, code: 'UNAUTHENTICATED' });
    expect(answer.headers.get('www-authenticate')).toMatch(/^Bearer /);
  };
  hostile([
    {
      name: 'no credential → 401 UNAUTHENTICATED with WWW-Authenticate',
      async attack() {
        expectUnauthenticated(await modelsWith({}));
      },
    },
    {
      name: 'an unknown key of the right shape → 401',
      async attack() {
        expectUnauthenticated(await modelsWith(bearer(presented('mg_0123456789abcdef_9HuGLbZlqXeTSiPZ9ImdxYSxvB2Ql0Fz9pAF7vNCt3Q'))));
      },
    },
    {
      name: 'a malformed credential → 401',
      async attack() {
        expectUnauthenticated(await modelsWith(bearer(presented('not-a-key-at-all'))));
      },
    },
    {
      name: 'a key-shaped string of SQL and control junk → 401',
      async attack() {
        expectUnauthenticated(await modelsWith(bearer(presented(`mg_' OR '1'='1' --_ÿþ%00<script>alert(1)</script>`))));
        expectUnauthenticated(await modelsWith({ 'x-api-key': presented('mg_*_"; DROP TABLE keys; --') }));
      },
    },
    {
      name: 'Authorization: Basic → 401',
      async attack() {
        const basic = presented(Buffer.from('admin:hunter2').toString('base64'));
        expectUnauthenticated(await modelsWith({ authorization: `Basic ${basic}` }));
      },
    },
    {
      name: 'a key with a valid id but a guessed secret → 401',
      async attack() {
        expectUnauthenticated(await modelsWith(bearer(presented(`mg_${keys.modelsOnly.id}_guessedguessedguessedguessedguessedguessedg`))));
      },
    },
  ]);
});

// ─── Authenticated callers reaching beyond their grant ───────────────────────────────────────

describe('authenticated callers are held to their scopes, models and tenant', () => {
  hostile([
    {
      name: 'a key without chat:invoke calling chat → FORBIDDEN, no answer, no provider call',
      async attack() {
        const before = stack.emulator.requests.length;
        const answer = await post(CHAT, { model: 'gpt-test' }, bearer(keys.modelsOnly.secret));
        expectRefused(answer, { status: 200, code: 'FORBIDDEN' });
        expect(stack.emulator.requests.length).toBe(before);
      },
    },
    {
      name: 'a key without admin asking for a key beside its models → that field FORBIDDEN, models still answered',
      async attack() {
        const answer = await post(
          `{ models { id } apiKey(id: "${keys.modelsOnly.id}") { id name } }`,
          undefined,
          bearer(keys.modelsOnly.secret),
        );
        expect(answer.status).toBe(200);
        expect((answer.body.data as { models: { id: string }[] }).models.map((model) => model.id)).toEqual(MODEL_IDS);
        expect(answer.body.data?.apiKey).toBeNull();
        expect(answer.body.errors?.map((error) => [error.path, error.extensions?.code])).toEqual([[['apiKey'], 'FORBIDDEN']]);
        expectNothingLeaked(answer.body);
      },
    },
    {
      name: 'a key without models:read reading a model beside its own principal → that field FORBIDDEN, the rest answered',
      async attack() {
        const answer = await post('{ model(id: "echo") { id provider } me { subject } }', undefined, bearer(keys.chatOnly.secret));
        expect(answer.body.data).toEqual({ model: null, me: { subject: keys.chatOnly.id } });
        expect(answer.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
        expectNothingLeaked(answer.body);
      },
    },
    {
      name: "a key limited to ['echo'] chatting with gpt-test → FORBIDDEN, the provider never called",
      async attack() {
        const before = stack.emulator.requests.length;
        expectRefused(await post(CHAT, { model: 'gpt-test' }, bearer(keys.echoOnly.secret)), { status: 200, code: 'FORBIDDEN' });
        expectRefused(await post(CHAT, { model: 'smart' }, bearer(keys.echoOnly.secret)), { status: 200, code: 'FORBIDDEN' });
        expect(stack.emulator.requests.length).toBe(before);
      },
    },
    {
      name: "a tenant admin reading another tenant's key by id → null, exactly as for a key that does not exist",
      async attack() {
        const answer = await post(
          `{ apiKey(id: "${keys.globexReader.id}") { id name tenant { id } scopes } }`,
          undefined,
          bearer(keys.acmeAdmin.secret),
        );
        const missing = await post(
          '{ apiKey(id: "no-such-key") { id name tenant { id } scopes } }',
          undefined,
          bearer(keys.acmeAdmin.secret),
        );
        expect(answer.status).toBe(200);
        expect(answer.body.data).toEqual({ apiKey: null });
        // No existence oracle: another tenant's key and no key answer alike.
        expect(answer.body).toEqual(missing.body);
        expect(JSON.stringify(answer.body)).not.toMatch(/globex|MODELS_READ/);
        expectNothingLeaked(answer.body);
      },
    },
    {
      name: 'a tenant admin reading another tenant and its keys → FORBIDDEN, null',
      async attack() {
        const answer = await post(
          '{ tenant(id: "globex") { id name apiKeys { edges { node { id name } } } } }',
          undefined,
          bearer(keys.acmeAdmin.secret),
        );
        expect(answer.body.data).toEqual({ tenant: null });
        expect(answer.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
        expect(JSON.stringify(answer.body)).not.toMatch(/globex inc|globex secret project/);
        expectNothingLeaked(answer.body);
      },
    },
    {
      name: 'a tenant admin creating a key in another tenant → FORBIDDEN, no key and no secret made',
      async attack() {
        const before = (await stack.stack.access!.store.keys('globex')).length;
        const answer = await post(
          CREATE_KEY,
          { input: { tenantId: 'globex', name: 'backdoor', scopes: ['ADMIN'] } },
          bearer(keys.acmeAdmin.secret),
        );
        expectRefused(answer, { status: 200, code: 'FORBIDDEN' });
        expect(JSON.stringify(answer.body)).not.toMatch(/mg_/);
        expect((await stack.stack.access!.store.keys('globex')).length).toBe(before);
      },
    },
    {
      name: "a tenant admin revoking another tenant's key → FORBIDDEN, the key still works",
      async attack() {
        expectRefused(await post(REVOKE_KEY, { id: keys.globexAdmin.id }, bearer(keys.acmeAdmin.secret)), {
          status: 200,
          code: 'FORBIDDEN',
        });
        expect((await stack.stack.access!.store.key(keys.globexAdmin.id))?.revokedAt).toBeNull();
        const stillWorks = await post('{ me { subject } }', undefined, bearer(keys.globexAdmin.secret));
        expect(stillWorks.body.data).toEqual({ me: { subject: keys.globexAdmin.id } });
      },
    },
  ]);
});

// ─── Past the router, straight to a subgraph ─────────────────────────────────────────────────

describe('a subgraph reached directly serves nothing without the router’s signed identity', () => {
  const expectTurnedAway = (answer: Answer) => expectRefused(answer, { status: 401, code: 'UNAUTHENTICATED' });
  hostile([
    {
      name: 'no identity token → 401, no data',
      async attack() {
        expectTurnedAway(await toSubgraph('inference', MODELS));
        expectTurnedAway(await toSubgraph('access', '{ tenants { id } }'));
      },
    },
    {
      name: 'a token forged with another secret → 401',
      async attack() {
        const forged = await new IdentityTokens('x'.repeat(40)).sign(platformAdmin(), 'access');
        expectTurnedAway(await toSubgraph('access', '{ tenants { id name } }', forged));
      },
    },
    {
      name: 'a genuine token addressed to another subgraph → 401',
      async attack() {
        const forInference = await stack.stack.identity.sign(principalOf(keys.acmeAdmin, 'acme', ['admin']), 'inference');
        expectTurnedAway(await toSubgraph('access', '{ me { subject } }', forInference));
      },
    },
    {
      name: 'a genuine token whose payload was rewritten to the platform tenant (signature kept) → 401',
      async attack() {
        const token = await stack.stack.identity.sign(principalOf(keys.acmeAdmin, 'acme', ['admin']), 'access');
        const [header, payload, signature] = token.split('.');
        const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>;
        const tampered = [header, base64url({ ...claims, tid: 'platform' }), signature].join('.');
        expectTurnedAway(await toSubgraph('access', '{ tenants { id } }', tampered));
      },
    },
    {
      name: 'an unsigned (alg: none) token → 401',
      async attack() {
        const claims = {
          tid: 'platform',
          kid: null,
          knd: 'API_KEY',
          scp: ['admin'],
          mdl: null,
          sub: 'forger',
          iss: 'modelgraph-router',
          aud: 'access',
          exp: Math.floor(Date.now() / 1000) + 60,
        };
        expectTurnedAway(
          await toSubgraph('access', '{ tenants { id } }', `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claims)}.`),
        );
      },
    },
    {
      name: "the router's own service token used as a caller's identity → 401",
      async attack() {
        expectTurnedAway(await toSubgraph('access', '{ tenants { id } }', await stack.stack.identity.signService('access')));
      },
    },
    {
      name: "a genuine acme token reading globex's key and tenant through _entities → null with FORBIDDEN",
      async attack() {
        const token = await stack.stack.identity.sign(principalOf(keys.acmeAdmin, 'acme', ['admin']), 'access');
        const answer = await toSubgraph(
          'access',
          'query ($representations: [_Any!]!) { _entities(representations: $representations) { ... on ApiKey { id name scopes tenant { id } } ... on Tenant { id name apiKeys { edges { node { id name } } } } } }',
          token,
          {
            representations: [
              { __typename: 'ApiKey', id: keys.globexReader.id },
              { __typename: 'Tenant', id: 'globex' },
            ],
          },
        );
        expect(answer.status).toBe(200);
        expect(answer.body.data).toEqual({ _entities: [null, null] });
        expect(answer.body.errors?.length).toBeGreaterThan(0);
        expect(new Set(answer.body.errors?.map((error) => error.extensions?.code))).toEqual(new Set(['FORBIDDEN']));
        expect(JSON.stringify(answer.body)).not.toMatch(/globex secret project|globex inc|MODELS_READ|models:read/);
        expectNothingLeaked(answer.body);
      },
    },
    {
      name: "a WebSocket straight to a subgraph without the router's service token → closed 4403",
      async attack() {
        const socket = openRawSocket(subgraphUrl('inference').replace(/^http/, 'ws'));
        sockets.push(socket);
        await socket.opened;
        socket.send({
          type: 'connection_init',
          payload: { [IDENTITY_CONNECTION_PARAM]: await new IdentityTokens('y'.repeat(40)).signService('inference') },
        });
        expect(await socket.closed).toEqual({ code: 4403, reason: 'Forbidden' });
        expect(socket.messages).toEqual([]);
      },
    },
  ]);
});

// ─── WebSocket abuse ─────────────────────────────────────────────────────────────────────────

describe('WebSocket abuse closes the offending socket with the documented code, and the router keeps serving', () => {
  /** A second stack where the limits under test are small: a 200 ms init window, 3 subscriptions per socket. */
  let limited: TestStack;
  beforeAll(async () => {
    limited = await startTestStack(
      { router: { port: 0, shutdownGraceMs: 2_000, limits: { connectionInitTimeoutMs: 200, maxSubscriptionsPerConnection: 3 } } },
      { localStreamDelayMs: STREAM_DELAY_MS },
    );
  });
  afterAll(async () => {
    await limited?.stop();
  });

  describe('on the default stack', () => {
    hostile(
      [
        {
          name: 'a bad credential in connection_init → closed 4403, never acknowledged',
          async attack() {
            const socket = rawSocket();
            await socket.opened;
            socket.send({
              type: 'connection_init',
              payload: { authorization: `Bearer ${presented('mg_💥_\u0000\u202e; DROP TABLE keys;--')}` },
            });
            expect(await socket.closed).toEqual({ code: 4403, reason: 'Forbidden' });
            refusedCredentials++;
            expect(socket.messages).toEqual([]);
          },
        },
        {
          name: 'connection_init without any credential → closed 4403',
          async attack() {
            const socket = rawSocket();
            await socket.opened;
            socket.send({ type: 'connection_init' });
            expect(await socket.closed).toEqual({ code: 4403, reason: 'Forbidden' });
            refusedCredentials++;
          },
        },
        {
          name: 'a second connection_init → closed 4429',
          async attack() {
            const socket = rawSocket();
            await socket.opened;
            socket.send({ type: 'connection_init', payload: adminInit() });
            socket.send({ type: 'connection_init', payload: adminInit() });
            expect(await socket.closed).toEqual({ code: 4429, reason: 'Too many initialisation requests' });
          },
        },
        {
          name: 'subscribe before connection_ack → closed 4401, nothing executed',
          async attack() {
            const socket = rawSocket();
            await socket.opened;
            socket.send(subscribeMessage('early', MODELS));
            expect(await socket.closed).toEqual({ code: 4401, reason: 'Unauthorized' });
            expect(socket.messages).toEqual([]);
          },
        },
        {
          name: 'a duplicate operation id while the first is streaming → closed 4409',
          async attack() {
            const socket = rawSocket();
            await socket.init(adminInit());
            socket.send(subscribeMessage('same', CHAT_STREAM, SLOW_STREAM));
            await socket.waitFor(ofId('same', 'next'), 'the first event of the stream');
            socket.send(subscribeMessage('same', CHAT_STREAM, SLOW_STREAM));
            expect(await socket.closed).toEqual({ code: 4409, reason: 'Subscriber for same already exists' });
          },
        },
        {
          name: 'a frame that is not JSON → closed 4400',
          async attack() {
            const socket = rawSocket();
            await socket.init(adminInit());
            socket.send('{"type": "subscribe", "id": ');
            expect(await socket.closed).toEqual({ code: 4400, reason: 'Invalid message received' });
          },
        },
        {
          name: 'only a foreign subprotocol offered (subscriptions-transport-ws) → no protocol agreed, nothing served',
          async attack() {
            const socket = rawSocket(stack, { protocols: 'graphql-ws' });
            const closed = await socket.closed;
            expect(socket.socket.protocol).toBe('');
            expect(closed.code).toBe(1006);
            expect(socket.errors.map((error) => error.message)).toContain('Server sent no subprotocol');
            expect(socket.messages).toEqual([]);
          },
        },
        {
          name: 'no subprotocol at all → closed 4406',
          async attack() {
            const socket = rawSocket(stack, { protocols: [] });
            expect(await socket.closed).toEqual({ code: 4406, reason: 'Subprotocol not acceptable' });
            expect(socket.messages).toEqual([]);
          },
        },
        {
          name: 'a frame over router.wsMaxPayloadBytes → closed 1009',
          async attack() {
            const socket = rawSocket();
            await socket.init(adminInit());
            socket.send(
              JSON.stringify(subscribeMessage('big', `{ models { id } } # ${'x'.repeat(stack.config.router.wsMaxPayloadBytes)}`)),
            );
            expect((await socket.closed).code).toBe(1009);
            expect(socket.messages.filter((message) => message.id === 'big')).toEqual([]);
          },
        },
        {
          name: 'a key revoked while its socket streams → closed 4403 at once, the stream ends, the key gets 401 after',
          async attack() {
            const key = await createKey({ tenantId: 'acme', name: 'soon revoked', scopes: ['CHAT_INVOKE', 'MODELS_READ'] });
            presented(key.secret);
            const socket = rawSocket();
            await socket.init({ authorization: `Bearer ${key.secret}` });
            socket.send(subscribeMessage('live', CHAT_STREAM, SLOW_STREAM));
            await socket.waitFor(ofId('live', 'next'), 'the first event of the stream');

            await adminCall(stack, REVOKE_KEY, { id: key.id });
            expect(await socket.closed).toEqual({ code: 4403, reason: 'Forbidden: credential withdrawn' });
            // Cut, not finished: no ChatCompleted, no complete.
            expect(
              socket.messages.filter(
                (message) => message.id === 'live' && (message.type === 'complete' || eventOf(message) === 'ChatCompleted'),
              ),
            ).toEqual([]);
            // The router lets go of the stream.
            await expect.poll(() => openSubscriptions(stack)).toBe(0);

            const refused = await modelsWith(bearer(key.secret));
            expectRefused(refused, { status: 401, code: 'UNAUTHENTICATED' });
            refusedCredentials++;
            const again = rawSocket();
            await again.opened;
            again.send({ type: 'connection_init', payload: { authorization: `Bearer ${key.secret}` } });
            expect(await again.closed).toEqual({ code: 4403, reason: 'Forbidden' });
            refusedCredentials++;
          },
        },
      ],
      () => stack,
      { overWebSocket: true },
    );
  });

  describe('on a stack with small WebSocket limits', () => {
    hostile(
      [
        {
          name: 'no connection_init within router.limits.connectionInitTimeoutMs → closed 4408',
          async attack() {
            const socket = rawSocket(limited);
            await socket.opened;
            expect(await socket.closed).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
            expect(socket.messages).toEqual([]);
          },
        },
        {
          name: 'a subscription flood past maxSubscriptionsPerConnection → the extra one OPERATION_LIMIT_EXCEEDED, the open ones stream on',
          async attack() {
            const socket = rawSocket(limited);
            await socket.init(adminInit(limited));
            const open = ['s1', 's2', 's3'];
            for (const id of open) socket.send(subscribeMessage(id, CHAT_STREAM, SLOW_STREAM));
            for (const id of open) await socket.waitFor(ofId(id, 'next'), `the first event of ${id}`);

            socket.send(subscribeMessage('s4', CHAT_STREAM, SLOW_STREAM));
            const refusal = await socket.waitFor(ofId('s4'), 'the answer to s4');
            expect(refusal.type).toBe('error');
            const [error] = refusal.payload as { message: string; extensions?: Record<string, unknown> }[];
            expect(error?.extensions).toMatchObject({ code: 'OPERATION_LIMIT_EXCEEDED', limit: 'subscriptionsPerConnection', max: 3 });
            expectNothingLeaked(refusal.payload, limited);
            const refusedAt = socket.messages.indexOf(refusal);

            // The three keep streaming after the refusal, to their ChatCompleted and complete.
            for (const id of open) {
              await socket.waitFor(ofId(id, 'complete'), `the completion of ${id}`);
              const after = socket.messages.slice(refusedAt).filter(ofId(id, 'next'));
              expect(after.length, id).toBeGreaterThan(0);
              expect(eventOf(after.at(-1)!)).toBe('ChatCompleted');
            }
            expect(socket.messages.filter(ofId('s4', 'next'))).toEqual([]);
            // The cap counts open subscriptions: once they end, the same socket may subscribe again.
            socket.send(subscribeMessage('s5', MODELS));
            const next = await socket.waitFor(ofId('s5', 'next'), 'the answer to s5');
            expect((next.payload as { data: { models: unknown[] } }).data.models).toHaveLength(MODEL_IDS.length);
            socket.close();
          },
        },
      ],
      () => limited,
      { overWebSocket: true },
    );
  });
});

// ─── The audit trail ─────────────────────────────────────────────────────────────────────────

describe('the audit trail of refused credentials', () => {
  it('records every refused credential as auth.failure, and never the credential itself', async () => {
    const data = await adminCall<{ auditLog: { edges: { node: Record<string, unknown> }[] } }>(
      stack,
      '{ auditLog(filter: {action: "auth.failure"}, first: 500) { edges { node { id time actor actorTenant action target tenant sourceAddress outcome reason } } } }',
    );
    const events = data.auditLog.edges.map((edge) => edge.node);
    expect(refusedCredentials).toBeGreaterThanOrEqual(10);
    expect(events).toHaveLength(refusedCredentials);
    for (const event of events) expect(event).toMatchObject({ action: 'auth.failure', actor: 'anonymous', outcome: 'FAILED' });
    const reasons = new Set(events.map((event) => event.reason));
    for (const reason of ['missing_credential', 'unknown_key', 'revoked']) expect(reasons).toContain(reason);

    // Neither any presented credential nor its secret part is recorded (a key's id is public).
    const text = JSON.stringify(data);
    expect(presentedSecrets.length).toBeGreaterThanOrEqual(8);
    for (const secret of presentedSecrets) {
      expect(text).not.toContain(secret);
      const secretPart = /^mg_[a-z0-9-]+_(.{8,})$/.exec(secret)?.[1];
      if (secretPart) expect(text).not.toContain(secretPart);
    }
    expect(text).not.toContain('hunter2');
    await stillServes();
  });
});
