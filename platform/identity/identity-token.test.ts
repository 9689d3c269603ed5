import { afterEach, describe, expect, it, vi } from 'vitest';
import { IdentityTokenError, IdentityTokens } from './identity-token.ts';
import type { Principal } from './principal.ts';

const SECRET = 'a'.repeat(40);
const alice: Principal = {
  kind: 'API_KEY',
  subject: 'k1',
  tenantId: 'acme',
  keyId: 'k1',
  scopes: ['models:read'],
  allowedModels: ['echo'],
};

afterEach(() => vi.useRealTimers());

describe('identity tokens', () => {
  it('carry the principal to the subgraph they are addressed to', async () => {
    const tokens = new IdentityTokens(SECRET);
    expect(await tokens.verify(await tokens.sign(alice, 'inference'), 'inference')).toEqual(alice);
  });

  it.each([
    ['another subgraph', async (tokens: IdentityTokens) => tokens.verify(await tokens.sign(alice, 'inference'), 'access')],
    [
      'another secret',
      async (tokens: IdentityTokens) => tokens.verify(await new IdentityTokens('b'.repeat(40)).sign(alice, 'inference'), 'inference'),
    ],
    ['nothing', (tokens: IdentityTokens) => tokens.verify(undefined, 'inference')],
    ['a service token', async (tokens: IdentityTokens) => tokens.verify(await tokens.signService('inference'), 'inference')],
    [
      'a payload moved to another tenant',
      async (tokens: IdentityTokens) => {
        const [header, payload, signature] = (await tokens.sign(alice, 'inference')).split('.');
        const moved = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, 'base64url').toString()), tid: 'globex' })).toString(
          'base64url',
        );
        return tokens.verify(`${header}.${moved}.${signature}`, 'inference');
      },
    ],
  ])('are refused from %s', async (_name, attempt) => {
    await expect(attempt(new IdentityTokens(SECRET))).rejects.toBeInstanceOf(IdentityTokenError);
  });

  it('expire after their lifetime, and a fresh one is signed rather than an old one reused', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const tokens = new IdentityTokens(SECRET, 60);
    const first = await tokens.sign(alice, 'inference');
    expect(await tokens.sign(alice, 'inference')).toBe(first);
    vi.setSystemTime(Date.now() + 61_000);
    await expect(tokens.verify(first, 'inference')).rejects.toBeInstanceOf(IdentityTokenError);
    expect(await tokens.verify(await tokens.sign(alice, 'inference'), 'inference')).toEqual(alice);
  });

  it('tell the router’s own service token apart from a caller’s', async () => {
    const tokens = new IdentityTokens(SECRET);
    await expect(tokens.verifyService(await tokens.signService('access'), 'access')).resolves.toBeUndefined();
    await expect(tokens.verifyService(await tokens.sign(alice, 'access'), 'access')).rejects.toBeInstanceOf(IdentityTokenError);
  });

  it('carry an agent run acting for its owner to the router, and to nobody else', async () => {
    const tokens = new IdentityTokens(SECRET);
    const delegated = { ...alice, actor: 'agent-run:r1' };
    const token = await tokens.signDelegation(delegated);
    expect(await tokens.verifyDelegation(token)).toEqual(delegated);
    await expect(tokens.verify(token, 'inference')).rejects.toBeInstanceOf(IdentityTokenError);
    // A caller's own subgraph token is no delegation, and a delegation needs an actor.
    await expect(tokens.verifyDelegation(await tokens.sign(alice, 'inference'))).rejects.toBeInstanceOf(IdentityTokenError);
    await expect(tokens.signDelegation(alice)).rejects.toBeInstanceOf(IdentityTokenError);
    // The actor travels on to subgraphs with the principal.
    expect(await tokens.verify(await tokens.sign(delegated, 'agents'), 'agents')).toEqual(delegated);
  });
});
