/**
 * Tenants, API keys and JWTs end to end: administration through the access subgraph, what each
 * credential may do, revocation across replicas, the audit log, and anonymous mode.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createAccessServices } from '../platform/access/access-services.ts';
import { startRouter, type RunningRouter } from '../router/server.ts';
import { OVER_THE_NETWORK, collectSubscription, postGraphQL, startTestStack, subgraphUrlsOf, type TestStack } from './support/stack.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

const CREATE_KEY = `mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id tenant { id } scopes allowedModels } } }`;
const CHAT = `mutation { chat(input: {model: "echo", temperature: 0, messages: [{role: USER, content: "hello tenant"}]}) { content cached } }`;

interface KeyPage {
  tenant: { apiKeys: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } };
}

const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

async function createTenant(stack: TestStack, id: string) {
  const { body } = await postGraphQL(stack.url, `mutation { createTenant(input: {id: "${id}", name: "${id} inc"}) { tenant { id } } }`);
  expect(body.errors).toBeUndefined();
}

async function createKey(stack: TestStack, input: Record<string, unknown>, asKey?: string): Promise<{ id: string; secret: string }> {
  const { body } = await postGraphQL<{ createApiKey: { secret: string; apiKey: { id: string } } }>(
    stack.url,
    CREATE_KEY,
    { input },
    asKey ? bearer(asKey) : {},
  );
  expect(body.errors).toBeUndefined();
  return { id: body.data!.createApiKey.apiKey.id, secret: body.data!.createApiKey.secret };
}

describe('administering tenants and keys', () => {
  let stack: TestStack;
  beforeAll(async () => {
    stack = await startTestStack();
    await createTenant(stack, 'acme');
    await createTenant(stack, 'globex');
  });
  afterAll(() => stack.stop());

  it('creates a key whose secret is shown once, works at once, and is stored only as a hash', async () => {
    const { id, secret } = await createKey(stack, { tenantId: 'acme', name: 'ci', scopes: ['MODELS_READ'] });
    expect(secret).toMatch(new RegExp(`^mg_${id}_`));
    const me = await postGraphQL<{ me: { kind: string; subject: string; tenant: { id: string }; scopes: string[] } }>(
      stack.url,
      '{ me { kind subject tenant { id } scopes } }',
      undefined,
      bearer(secret),
    );
    expect(me.body.data?.me).toEqual({ kind: 'API_KEY', subject: id, tenant: { id: 'acme' }, scopes: ['MODELS_READ'] });
    const stored = await stack.stack.access!.store.key(id);
    expect(JSON.stringify(stored)).not.toContain(secret.slice(-16));
  });

  it('refuses a field the key has no scope for with FORBIDDEN, and the rest of the response survives', async () => {
    const { secret } = await createKey(stack, { tenantId: 'acme', name: 'reader', scopes: ['MODELS_READ'] });
    const { body } = await postGraphQL<{ models: { id: string }[] }>(
      stack.url,
      '{ models { id } me { subject } }',
      undefined,
      bearer(secret),
    );
    expect(body.data?.models.map((model) => model.id)).toContain('echo');
    const chat = await postGraphQL(stack.url, CHAT, undefined, bearer(secret));
    expect(chat.body.data).toBeNull();
    expect(chat.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('limits a key to its allowed models: listing, reading and chatting', async () => {
    const { secret } = await createKey(stack, {
      tenantId: 'acme',
      name: 'echo only',
      scopes: ['MODELS_READ', 'CHAT_INVOKE'],
      allowedModels: ['echo'],
    });
    const listed = await postGraphQL<{ models: { id: string }[] }>(stack.url, '{ models { id } }', undefined, bearer(secret));
    expect(listed.body.data?.models.map((model) => model.id)).toEqual(['echo']);
    // An alias of an allowed model is allowed; another model, by id or alias, is not.
    const viaAlias = await postGraphQL<{ model: { id: string } }>(stack.url, '{ model(id: "default") { id } }', undefined, bearer(secret));
    expect(viaAlias.body.data?.model.id).toBe('echo');
    for (const ref of ['gpt-test', 'smart', 'gpt-test@2024-08-06']) {
      const refused = await postGraphQL(
        stack.url,
        `mutation { chat(input: {model: "${ref}", messages: [{role: USER, content: "x"}]}) { content } }`,
        undefined,
        bearer(secret),
      );
      expect(refused.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    }
    expect(stack.emulator.requests).toHaveLength(0);
  });

  it.each([
    ['without the chat:invoke scope', { scopes: ['MODELS_READ'] }],
    ['outside its allowed models', { scopes: ['CHAT_INVOKE'], allowedModels: ['echo'] }],
  ])('refuses a stream %s before any provider is called', async (_name, grant) => {
    const { secret } = await createKey(stack, { tenantId: 'acme', name: 'streamer', ...grant });
    const before = stack.emulator.requests.length;
    const { results, error } = await collectSubscription<{ chatStream: unknown }>(stack.ws({ authorization: `Bearer ${secret}` }), {
      query: 'subscription { chatStream(input: {model: "gpt-test", messages: [{role: USER, content: "x"}]}) { __typename } }',
    });
    const errors = [...results.flatMap((result) => result.errors ?? []), ...((error as { extensions?: unknown }[] | undefined) ?? [])];
    expect(results.every((result) => !result.data?.chatStream)).toBe(true);
    expect(JSON.stringify(errors)).toContain('FORBIDDEN');
    expect(stack.emulator.requests.length).toBe(before);
  });

  it('applies an update to the very next request, though the router had cached the key', async () => {
    const { id, secret } = await createKey(stack, { tenantId: 'acme', name: 'grows', scopes: ['MODELS_READ'] });
    expect((await postGraphQL(stack.url, CHAT, undefined, bearer(secret))).body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const update = await postGraphQL(
      stack.url,
      `mutation { updateApiKey(input: {id: "${id}", scopes: [MODELS_READ, CHAT_INVOKE]}) { apiKey { scopes } } }`,
    );
    expect(update.body.data).toEqual({ updateApiKey: { apiKey: { scopes: ['MODELS_READ', 'CHAT_INVOKE'] } } });
    const chat = await postGraphQL<{ chat: { content: string } }>(stack.url, CHAT, undefined, bearer(secret));
    expect(chat.body.data?.chat.content).toBe('hello tenant');
  });

  it('refuses a revoked key on the next request with 401, and records who revoked it', async () => {
    const { id, secret } = await createKey(stack, { tenantId: 'acme', name: 'doomed', scopes: ['MODELS_READ'] });
    expect((await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(secret))).status).toBe(200);
    const revoked = await postGraphQL<{ revokeApiKey: { apiKey: { revokedAt: string } } }>(
      stack.url,
      `mutation { revokeApiKey(input: {id: "${id}"}) { apiKey { revokedAt } } }`,
    );
    expect(revoked.body.data?.revokeApiKey.apiKey.revokedAt).toMatch(/^\d{4}-/);
    const refused = await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(secret));
    expect(refused.status).toBe(401);
    expect(refused.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    const audit = await postGraphQL<{ auditLog: { edges: { node: Record<string, unknown> }[] } }>(
      stack.url,
      `{ auditLog(filter: {action: "apiKey.revoke"}, first: 5) { edges { node { actor actorTenant action target tenant outcome sourceAddress } } } }`,
    );
    expect(audit.body.data?.auditLog.edges[0]?.node).toMatchObject({
      actor: 'bootstrap',
      actorTenant: 'platform',
      action: 'apiKey.revoke',
      target: id,
      tenant: 'acme',
      outcome: 'SUCCESS',
    });
    expect(audit.body.data?.auditLog.edges[0]?.node.sourceAddress).toMatch(/127\.0\.0\.1/);
  });

  it('keeps a tenant admin inside its tenant, and audits the refusals', async () => {
    const acmeAdmin = await createKey(stack, { tenantId: 'acme', name: 'acme admin', scopes: ['ADMIN', 'MODELS_READ'] });
    const globexKey = await createKey(stack, { tenantId: 'globex', name: 'globex ci', scopes: ['MODELS_READ'] });
    // Its own tenant: allowed (the tenant defaults to the caller's).
    const own = await createKey(stack, { name: 'made by acme admin', scopes: ['MODELS_READ'] }, acmeAdmin.secret);
    expect((await stack.stack.access!.store.key(own.id))?.tenantId).toBe('acme');
    // Another tenant's key reads as no key (no existence oracle).
    expect(
      (await postGraphQL(stack.url, `{ apiKey(id: "${globexKey.id}") { id name } }`, undefined, bearer(acmeAdmin.secret))).body,
    ).toEqual({ data: { apiKey: null } });
    const probes = [
      `{ tenant(id: "globex") { id apiKeys { edges { node { id } } } } }`,
      `{ tenants { id } }`,
      `mutation { createApiKey(input: {tenantId: "globex", name: "x", scopes: [ADMIN]}) { secret } }`,
      `mutation { revokeApiKey(input: {id: "${globexKey.id}"}) { apiKey { id } } }`,
      `mutation { createTenant(input: {id: "evil", name: "evil"}) { tenant { id } } }`,
    ];
    for (const probe of probes) {
      const { body } = await postGraphQL(stack.url, probe, undefined, bearer(acmeAdmin.secret));
      expect(JSON.stringify(body.data ?? null)).not.toContain(globexKey.id);
      expect(body.errors?.[0]?.extensions?.code, probe).toBe('FORBIDDEN');
    }
    expect((await stack.stack.access!.store.key(globexKey.id))?.revokedAt).toBeNull();
    // The refused mutations are in the audit log; the tenant admin sees only its tenant's events.
    const denied = await stack.stack.access!.audit.list({ outcome: 'DENIED', actor: acmeAdmin.id }, 10);
    expect(denied.events.map((event) => event.action).sort()).toEqual(['apiKey.create', 'apiKey.revoke', 'tenant.create']);
    const seen = await postGraphQL<{ auditLog: { edges: { node: { tenant: string | null } }[] } }>(
      stack.url,
      '{ auditLog(first: 100, filter: {tenant: "globex"}) { edges { node { tenant } } } }',
      undefined,
      bearer(acmeAdmin.secret),
    );
    expect(seen.body.data?.auditLog.edges.length).toBeGreaterThan(0);
    expect(new Set(seen.body.data?.auditLog.edges.map((edge) => edge.node.tenant))).toEqual(new Set(['acme']));
  });

  it('never lets a key grant more than it holds, or change itself', async () => {
    const narrowAdmin = await createKey(stack, {
      tenantId: 'acme',
      name: 'narrow admin',
      scopes: ['ADMIN', 'MODELS_READ'],
      allowedModels: ['echo'],
    });
    const refusals = [
      `mutation { createApiKey(input: {name: "wider", scopes: [CHAT_INVOKE]}) { secret } }`,
      `mutation { createApiKey(input: {name: "all models", scopes: [MODELS_READ]}) { secret } }`,
      `mutation { createApiKey(input: {name: "other model", scopes: [MODELS_READ], allowedModels: ["gpt-test"]}) { secret } }`,
      `mutation { updateApiKey(input: {id: "${narrowAdmin.id}", allowAllModels: true}) { apiKey { id } } }`,
    ];
    for (const mutation of refusals) {
      const { body } = await postGraphQL(stack.url, mutation, undefined, bearer(narrowAdmin.secret));
      expect(body.errors?.[0]?.extensions?.code, mutation).toBe('FORBIDDEN');
    }
    expect((await stack.stack.access!.store.key(narrowAdmin.id))?.allowedModels).toEqual(['echo']);
    // Within its own grant it may.
    await createKey(stack, { name: 'narrower', scopes: ['MODELS_READ'], allowedModels: ['echo'] }, narrowAdmin.secret);
  });

  it('pages through a tenant’s keys and the audit log with cursors', async () => {
    await createTenant(stack, 'paged');
    const ids = [];
    for (let index = 0; index < 5; index += 1) ids.push((await createKey(stack, { tenantId: 'paged', name: `k${index}`, scopes: [] })).id);
    const seen: string[] = [];
    let after: string | null = null;
    do {
      const response = await postGraphQL<KeyPage>(
        stack.url,
        'query($after: String) { tenant(id: "paged") { apiKeys(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } } }',
        { after },
      );
      const page: KeyPage['tenant']['apiKeys'] = response.body.data!.tenant.apiKeys;
      seen.push(...page.edges.map((edge) => edge.node.id));
      after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
    } while (after);
    expect(seen).toEqual(ids);
    const first = await postGraphQL<{ auditLog: { edges: { cursor: string }[]; pageInfo: { endCursor: string } } }>(
      stack.url,
      '{ auditLog(first: 2, filter: {tenant: "paged"}) { edges { cursor } pageInfo { endCursor } } }',
    );
    const next = await postGraphQL<{ auditLog: { edges: { cursor: string }[] } }>(
      stack.url,
      'query($after: String) { auditLog(first: 2, after: $after, filter: {tenant: "paged"}) { edges { cursor } } }',
      { after: first.body.data!.auditLog.pageInfo.endCursor },
    );
    expect(next.body.data!.auditLog.edges.map((edge) => edge.cursor)).not.toContain(first.body.data!.auditLog.edges[0]!.cursor);
  });

  it('refuses bad admin input with coded errors and audits the failure', async () => {
    const cases: [string, string][] = [
      ['mutation { createTenant(input: {id: "Not Valid!", name: "x"}) { tenant { id } } }', 'BAD_USER_INPUT'],
      ['mutation { createTenant(input: {id: "acme", name: "again"}) { tenant { id } } }', 'BAD_USER_INPUT'],
      ['mutation { createApiKey(input: {tenantId: "nope", name: "x", scopes: []}) { secret } }', 'NOT_FOUND'],
      ['mutation { createApiKey(input: {name: "", scopes: []}) { secret } }', 'BAD_USER_INPUT'],
      ['mutation { createApiKey(input: {name: "x", scopes: [], expiresAt: "2001-01-01T00:00:00Z"}) { secret } }', 'BAD_USER_INPUT'],
      ['mutation { createApiKey(input: {name: "x", scopes: [], limits: {tokensPerMinute: -1}}) { secret } }', 'BAD_USER_INPUT'],
      ['mutation { updateApiKey(input: {id: "missing", name: "x"}) { apiKey { id } } }', 'NOT_FOUND'],
    ];
    for (const [mutation, code] of cases) {
      const { body } = await postGraphQL(stack.url, mutation);
      expect(body.errors?.[0]?.extensions?.code, mutation).toBe(code);
    }
    const failed = await stack.stack.access!.audit.list({ outcome: 'FAILED', actor: 'bootstrap' }, 50);
    expect(failed.events.filter((event) => event.action !== 'auth.failure').length).toBeGreaterThanOrEqual(cases.length);
  });

  it('gives an open socket the key’s new grant, and keeps a socket whose key expires in months open', async () => {
    const inMonths = new Date(Date.now() + 90 * 86_400_000).toISOString();
    const { id, secret } = await createKey(stack, {
      tenantId: 'acme',
      name: 'long-lived',
      scopes: ['MODELS_READ', 'CHAT_INVOKE'],
      expiresAt: inMonths,
    });
    const client = stack.ws({ authorization: `Bearer ${secret}` });
    const stream = {
      query: 'subscription { chatStream(input: {model: "echo", messages: [{role: USER, content: "still here"}]}) { __typename } }',
    };
    const first = await collectSubscription<{ chatStream: { __typename: string } }>(client, stream);
    expect(first.results.at(-1)?.data?.chatStream.__typename).toBe('ChatCompleted');
    await postGraphQL(stack.url, `mutation { updateApiKey(input: {id: "${id}", scopes: [MODELS_READ]}) { apiKey { id } } }`);
    // The same socket (never closed: a 90-day expiry is beyond setTimeout's range) now lacks chat:invoke.
    await expect
      .poll(async () => JSON.stringify(await collectSubscription(client, stream)), { interval: 20, timeout: 2_000 })
      .toContain('FORBIDDEN');
  });

  it('caches answers per tenant: one tenant never reads another’s cached chat', async () => {
    const acme = await createKey(stack, { tenantId: 'acme', name: 'chat', scopes: ['CHAT_INVOKE'] });
    const globex = await createKey(stack, { tenantId: 'globex', name: 'chat', scopes: ['CHAT_INVOKE'] });
    const once = CHAT.replace('hello tenant', 'only in this test');
    const cachedFlag = async (key: string) =>
      (await postGraphQL<{ chat: { cached: boolean } }>(stack.url, once, undefined, bearer(key))).body.data?.chat.cached;
    expect(await cachedFlag(acme.secret)).toBe(false);
    expect(await cachedFlag(acme.secret)).toBe(true);
    expect(await cachedFlag(globex.secret)).toBe(false);
  });
});

describe('a key allowed a route', () => {
  it('chats through the route and reads the model that served it, but not the model directly', async () => {
    const stack = await startTestStack({ routes: { cheap: { targets: [{ model: 'echo@1', weight: 1 }] } } });
    try {
      const { secret } = await createKey(stack, { name: 'route only', scopes: ['MODELS_READ', 'CHAT_INVOKE'], allowedModels: ['cheap'] });
      const routed = await postGraphQL<{ chat: { content: string; model: { id: string } } }>(
        stack.url,
        'mutation { chat(input: {model: "cheap", messages: [{role: USER, content: "via the route"}]}) { content model { id } } }',
        undefined,
        bearer(secret),
      );
      expect(routed.body.errors).toBeUndefined();
      expect(routed.body.data?.chat).toEqual({ content: 'via the route', model: { id: 'echo' } });
      const direct = await postGraphQL(
        stack.url,
        'mutation { chat(input: {model: "echo", messages: [{role: USER, content: "x"}]}) { content } }',
        undefined,
        bearer(secret),
      );
      expect(direct.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    } finally {
      await stack.stop();
    }
  });
});

describe('secrets in logs', () => {
  it('never writes a key secret or an identity token to the log, even for failing subgraph calls', async () => {
    // Over the network, where identity tokens are made and a subgraph can be down.
    const stack = await startTestStack(OVER_THE_NETWORK);
    try {
      const { secret } = await createKey(stack, { name: 'logged?', scopes: ['MODELS_READ', 'CHAT_INVOKE'] });
      await postGraphQL(stack.url, '{ models { id } }', undefined, { 'x-api-key': secret });
      await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(`${secret}tampered`));
      // A subgraph that is down makes the gateway log the failed call at error level.
      await stack.stack.subgraphs.find((subgraph) => subgraph.name === 'inference')!.stop(Date.now());
      const failed = await postGraphQL(stack.url, CHAT, undefined, bearer(secret));
      expect(failed.body.errors?.[0]?.extensions?.code).toBe('DOWNSTREAM_SERVICE_ERROR');
      const logged = JSON.stringify(stack.logs);
      expect(stack.logs.some((line) => line.level === 50 || line.level === 40)).toBe(true);
      for (const leak of [secret, secret.slice(-20), stack.adminKey.slice(-20), 'eyJhbGciOiJIUzI1NiJ9']) expect(logged).not.toContain(leak);
    } finally {
      await stack.stop();
    }
  });
});

describe('revocation across router replicas (Redis pub/sub)', () => {
  let stack: TestStack;
  let second: RunningRouter | undefined;
  let closeSecondAccess: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await second?.stop(Date.now());
    await closeSecondAccess?.();
    await stack?.stop();
  });

  it('refuses a key on every replica as soon as one revokes it, though each had cached it', async () => {
    stack = await startTestStack({ redis: { url: REDIS_URL, keyPrefix: `mg-test:${randomUUID()}:` } });
    const access = await createAccessServices(stack.config, stack.log, false);
    closeSecondAccess = () => access.close();
    second = await startRouter({
      config: { ...stack.config, router: { ...stack.config.router, port: 0 } },
      log: stack.log,
      subgraphUrls: subgraphUrlsOf(stack),
      identity: stack.stack.identity,
      access,
      withProcessMetrics: false,
    });
    const { id, secret } = await createKey(stack, { name: 'replicated', scopes: ['MODELS_READ'] });
    // Both replicas authenticate (and cache) the key.
    for (const url of [stack.url, second.url])
      expect((await postGraphQL(url, '{ models { id } }', undefined, bearer(secret))).status).toBe(200);
    await access.store.listening();
    await postGraphQL(stack.url, `mutation { revokeApiKey(input: {id: "${id}"}) { apiKey { id } } }`);
    await expect
      .poll(async () => (await postGraphQL(second!.url, '{ models { id } }', undefined, bearer(secret))).status, {
        interval: 20,
        timeout: 2_000,
      })
      .toBe(401);
    expect((await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(secret))).status).toBe(401);
  });
});

describe('JWT authentication', () => {
  let stack: TestStack;
  let jwks: Server;
  let sign: (claims: Record<string, unknown>, options?: { audience?: string; expiresIn?: string }) => Promise<string>;
  let privateKey: CryptoKey;
  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    const { publicKey } = pair;
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwks = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    sign = (claims, { audience = 'modelgraph', expiresIn = '5m' } = {}) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer('https://idp.test')
        .setAudience(audience)
        .setSubject('alice')
        .setIssuedAt()
        .setExpirationTime(expiresIn)
        .sign(privateKey);
    stack = await startTestStack({ access: { jwt: { jwksUrl, issuer: 'https://idp.test', audience: 'modelgraph' } } });
  });
  afterAll(async () => {
    await stack.stop();
    jwks.close();
  });

  it('maps a verified token’s claims to tenant, scopes and allowed models', async () => {
    const token = await sign({ tenant: 'acme', scope: 'models:read chat:invoke not-a-scope', models: ['echo'] });
    const { body } = await postGraphQL<{ me: unknown; models: { id: string }[] }>(
      stack.url,
      '{ me { kind subject scopes allowedModels } models { id } }',
      undefined,
      bearer(token),
    );
    expect(body.data).toEqual({
      me: { kind: 'JWT', subject: 'alice', scopes: ['MODELS_READ', 'CHAT_INVOKE'], allowedModels: ['echo'] },
      models: [{ id: 'echo' }],
    });
    const chat = await postGraphQL<{ chat: { content: string } }>(stack.url, CHAT, undefined, bearer(token));
    expect(chat.body.data?.chat.content).toBe('hello tenant');
  });

  it.each([
    ['another audience', () => sign({ tenant: 'acme', scope: 'models:read' }, { audience: 'other' })],
    ['an expired token', () => sign({ tenant: 'acme', scope: 'models:read' }, { expiresIn: '-1m' })],
    ['no tenant claim', () => sign({ scope: 'models:read' })],
    [
      'a models claim that is not a list (it must not widen to every model)',
      () => sign({ tenant: 'acme', scope: 'models:read', models: 'echo' }),
    ],
    [
      'no expiry',
      async () =>
        new SignJWT({ tenant: 'acme', scope: 'models:read' })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setIssuer('https://idp.test')
          .setAudience('modelgraph')
          .setSubject('alice')
          .sign(privateKey),
    ],
    [
      'a tampered payload',
      async () => {
        const [header, payload, signature] = (await sign({ tenant: 'acme', scope: 'models:read' })).split('.');
        const altered = Buffer.from(
          JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), tenant: 'globex' }),
        ).toString('base64url');
        return `${header}.${altered}.${signature}`;
      },
    ],
  ])('refuses %s with 401 UNAUTHENTICATED', async (_name, make) => {
    const { status, body } = await postGraphQL(stack.url, '{ models { id } }', undefined, bearer(await make()));
    expect(status).toBe(401);
    expect(body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(body.data).toBeUndefined();
  });
});

describe('anonymous mode', () => {
  let stack: TestStack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it('is off by default: no credential, no data', async () => {
    stack = await startTestStack();
    const { status, headers } = await postGraphQL(stack.url, '{ models { id } }', undefined, { authorization: '' });
    expect(status).toBe(401);
    expect(headers.get('www-authenticate')).toMatch(/^Bearer/);
  });

  it('when the config enables it, serves callers without a credential with the granted scopes only, and warns at start', async () => {
    stack = await startTestStack({ access: { anonymous: { tenant: 'public', scopes: ['models:read'] } } });
    const { body } = await postGraphQL<{ me: unknown }>(stack.url, '{ me { kind tenant { id } scopes } }', undefined, {
      authorization: '',
    });
    expect(body.data?.me).toEqual({ kind: 'ANONYMOUS', tenant: { id: 'public' }, scopes: ['MODELS_READ'] });
    expect((await postGraphQL(stack.url, CHAT, undefined, { authorization: '' })).body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(stack.logs.some((line) => line.level === 40 && String(line.msg).startsWith('ANONYMOUS ACCESS IS ON'))).toBe(true);
    // A bad credential is still refused.
    expect((await postGraphQL(stack.url, '{ models { id } }', undefined, bearer('mg_nope_nope'))).status).toBe(401);
  });
});
