import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryAccessStore, NO_LIMITS, newKeySecret, type ApiKeyRecord } from '../platform/access-store.ts';
import { MemoryAuditLog } from '../platform/audit-log.ts';
import { parseConfig } from '../platform/config.ts';
import { createLogger } from '../platform/logger.ts';
import { Authenticator } from './authenticate.ts';

const settings = parseConfig({}).access;
const log = createLogger({ level: 'silent', name: 'test' });
const from = { sourceAddress: '203.0.113.7' };

function keyRecord(id: string): ApiKeyRecord {
  return { id, tenantId: 'acme', name: 'k', scopes: ['models:read'], allowedModels: null, limits: NO_LIMITS, createdAt: new Date().toISOString(), expiresAt: null, revokedAt: null, lastUsedAt: null };
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
});
