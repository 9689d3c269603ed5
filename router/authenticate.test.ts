import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryAccessStore, NO_LIMITS, newKeySecret, type ApiKeyRecord } from '../platform/access/access-store.ts';
import { MemoryAuditLog } from '../platform/access/audit-log.ts';
import { parseConfig } from '../platform/config.ts';
import { createLogger } from '../platform/logger.ts';
import { IdentityTokens } from '../platform/identity/identity-token.ts';
import type { Principal } from '../platform/identity/principal.ts';
import { Authenticator } from './authenticate.ts';

const settings = parseConfig({}).access;
const log = createLogger({ level: 'silent', name: 'test' });
const from = { sourceAddress: '203.0.113.7' };

function keyRecord(id: string): ApiKeyRecord {
  return {
    id,
    tenantId: 'acme',
    name: 'k',
    scopes: ['models:read'],
    allowedModels: null,
    limits: NO_LIMITS,
    createdAt: new Date().toISOString(),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
  };
}

afterEach(() => vi.useRealTimers());

describe('the authenticator', () => {
  it('does not cache a key it read while that key was being revoked', async () => {
    const store = new MemoryAccessStore();
    const { id, secret } = newKeySecret();
    await store.putKey(keyRecord(id), secret);
    const auth = new Authenticator(settings, store, new MemoryAuditLog(100), log);
    // The read returns the record as it was, and the revocation lands before the read completes.
    const read = store.keyBySecret.bind(store);
    vi.spyOn(store, 'keyBySecret').mockImplementationOnce(async (presented) => {
      const stale = await read(presented);
      await store.revokeKey(id, new Date());
      return stale;
    });
    expect((await auth.authenticate(secret, from)).ok).toBe(true);
    expect(await auth.authenticate(secret, from)).toMatchObject({ ok: false, reason: 'revoked' });
    auth.close();
  });

  it('records at most 20 refusals a minute per address, then says how many it did not', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const audit = new MemoryAuditLog(1_000);
    const auth = new Authenticator(settings, new MemoryAccessStore(), audit, log);
    for (let attempt = 0; attempt < 25; attempt += 1) expect((await auth.authenticate(`mg_guess_${attempt}`, from)).ok).toBe(false);
    expect((await audit.list({ action: 'auth.failure' }, 100)).events).toHaveLength(20);
    // Another address is not held back by the first one's flood.
    await auth.authenticate('mg_other_x', { sourceAddress: '198.51.100.1' });
    expect((await audit.list({ action: 'auth.failure' }, 100)).events).toHaveLength(21);
    vi.setSystemTime(Date.now() + 60_000);
    await auth.authenticate('mg_guess_late', from);
    const [latest] = (await audit.list({ action: 'auth.failure' }, 1)).events;
    expect(latest?.reason).toBe('unknown_key; 5 more refused from this address in the previous minute, not recorded');
    auth.close();
  });

  describe('delegations (an agent run calling as its owner)', () => {
    const identity = new IdentityTokens('s'.repeat(40));
    const owner = (overrides: Partial<Principal> = {}): Principal => ({
      kind: 'API_KEY',
      subject: 'k1',
      tenantId: 'acme',
      keyId: 'k1',
      scopes: ['models:read', 'admin'],
      allowedModels: null,
      actor: 'agent-run:r1',
      ...overrides,
    });

    it('take the owner’s key as it is now: narrowed, then revoked', async () => {
      const store = new MemoryAccessStore();
      const { secret } = newKeySecret('k1');
      await store.putKey(keyRecord('k1'), secret);
      const auth = new Authenticator(settings, store, new MemoryAuditLog(100), log);
      // The token claims admin; the key now holds only models:read.
      const token = await identity.signDelegation(owner());
      expect(await auth.authenticateDelegation(token, identity, from)).toMatchObject({
        ok: true,
        principal: { keyId: 'k1', scopes: ['models:read'], actor: 'agent-run:r1' },
      });
      await store.revokeKey('k1', new Date());
      expect(await auth.authenticateDelegation(token, identity, from)).toMatchObject({ ok: false, reason: 'revoked' });
      auth.close();
    });

    it('refuse a key delegation that names no key, a JWT delegation past its expiry, and tokens that are no delegation', async () => {
      const audit = new MemoryAuditLog(100);
      const auth = new Authenticator(settings, new MemoryAccessStore(), audit, log);
      const refused = async (token: string) => (await auth.authenticateDelegation(token, identity, from)).ok;
      expect(await refused(await identity.signDelegation(owner({ keyId: null })))).toBe(false);
      const jwtOwner = owner({ kind: 'JWT', subject: 'alice', keyId: null });
      expect(await refused(await identity.signDelegation({ ...jwtOwner, expiresAt: Date.now() - 1_000 }))).toBe(false);
      expect(
        await auth.authenticateDelegation(await identity.signDelegation({ ...jwtOwner, expiresAt: Date.now() + 60_000 }), identity, from),
      ).toMatchObject({ ok: true, principal: { subject: 'alice' } });
      // A subgraph's identity token, the router's service token and another secret's delegation.
      expect(await refused(await identity.sign(owner(), 'agents'))).toBe(false);
      expect(await refused(await identity.signService('agents'))).toBe(false);
      expect(await refused(await new IdentityTokens('t'.repeat(40)).signDelegation(owner()))).toBe(false);
      expect((await audit.list({ action: 'auth.failure' }, 10)).events.length).toBeGreaterThanOrEqual(5);
      auth.close();
    });
  });
});
