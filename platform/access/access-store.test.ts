import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  MemoryAccessStore,
  NO_LIMITS,
  RedisAccessStore,
  hashSecret,
  keyIdOf,
  newKeySecret,
  type AccessStore,
  type ApiKeyRecord,
} from './access-store.ts';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';
import { accessKeys } from '../redis/keys.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
const cluster = await connectSharedCluster();
const stores: AccessStore[] = [];
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  redis.disconnect();
  cluster.disconnect();
});

function track<T extends AccessStore>(store: T): T {
  stores.push(store);
  return store;
}

const implementations: [string, () => AccessStore][] = [
  ['Redis', () => track(new RedisAccessStore(redis, `mg-test:${randomUUID()}:`))],
  ['Redis Cluster', () => track(new RedisAccessStore(cluster, `mg-test:${randomUUID()}:`))],
  ['memory', () => track(new MemoryAccessStore())],
];

function keyRecord(overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: randomUUID().slice(0, 8),
    tenantId: 'acme',
    name: 'ci',
    scopes: ['models:read', 'chat:invoke'],
    allowedModels: null,
    limits: NO_LIMITS,
    createdAt: new Date(1_700_000_000_000).toISOString(),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}

/** The next key id the store reports changed, once its subscription is live. */
async function nextChange(store: AccessStore): Promise<{ change: Promise<string> }> {
  const change = new Promise<string>((resolve) => {
    const off = store.onKeyChanged((id) => {
      off();
      resolve(id);
    });
  });
  await store.listening();
  return { change };
}

describe.each(implementations)('%s access store', (_name, create) => {
  it('creates a tenant once and lists tenants oldest first', async () => {
    const store = create();
    expect(await store.createTenant({ id: 'b', name: 'Bee', createdAt: '2026-01-02T00:00:00.000Z' })).toBe(true);
    expect(await store.createTenant({ id: 'a', name: 'Ay', createdAt: '2026-01-03T00:00:00.000Z' })).toBe(true);
    expect(await store.createTenant({ id: 'b', name: 'Other', createdAt: '2026-01-04T00:00:00.000Z' })).toBe(false);
    expect(await store.tenant('b')).toEqual({ id: 'b', name: 'Bee', createdAt: '2026-01-02T00:00:00.000Z' });
    expect((await store.tenants()).map((tenant) => tenant.id)).toEqual(['b', 'a']);
    expect(await store.tenant('nope')).toBeUndefined();
  });

  it('finds a key by its secret only, and keeps every field as stored', async () => {
    const store = create();
    const { id, secret } = newKeySecret();
    const record = keyRecord({ id, allowedModels: [], scopes: [], limits: { ...NO_LIMITS, tokensPerMinute: 1000 } });
    expect(await store.putKey(record, secret)).toBe(true);
    expect(await store.keyBySecret(secret)).toEqual(record);
    expect(await store.key(id)).toEqual(record);
    expect(await store.keyBySecret(`${secret}x`)).toBeUndefined();
    expect(keyIdOf(secret)).toBe(id);
  });

  it('lists a tenant’s keys and no other tenant’s', async () => {
    const store = create();
    await store.putKey(keyRecord({ id: 'k1', tenantId: 'acme', createdAt: '2026-01-01T00:00:00.000Z' }), newKeySecret('k1').secret);
    await store.putKey(keyRecord({ id: 'k2', tenantId: 'acme', createdAt: '2026-01-02T00:00:00.000Z' }), newKeySecret('k2').secret);
    await store.putKey(keyRecord({ id: 'k3', tenantId: 'globex' }), newKeySecret('k3').secret);
    expect((await store.keys('acme')).map((key) => key.id)).toEqual(['k1', 'k2']);
    expect((await store.keys('globex')).map((key) => key.id)).toEqual(['k3']);
  });

  it('replaces a key put again, and the old secret stops working', async () => {
    const store = create();
    const first = newKeySecret('boot');
    const second = newKeySecret('boot');
    await store.putKey(keyRecord({ id: 'boot' }), first.secret);
    expect(await store.putKey(keyRecord({ id: 'boot' }), second.secret, { onlyIfAbsent: true })).toBe(false);
    expect(await store.keyBySecret(first.secret)).toBeDefined();
    expect(await store.putKey(keyRecord({ id: 'boot', name: 'new' }), second.secret)).toBe(true);
    expect(await store.keyBySecret(first.secret)).toBeUndefined();
    expect((await store.keyBySecret(second.secret))?.name).toBe('new');
  });

  it('updates only the fields given, tells listeners, and answers undefined for unknown keys', async () => {
    const store = create();
    const { id, secret } = newKeySecret();
    await store.putKey(keyRecord({ id }), secret);
    const { change: changed } = await nextChange(store);
    const updated = await store.updateKey(id, { scopes: ['models:read'], allowedModels: ['gpt-test'] });
    expect(await changed).toBe(id);
    expect(updated).toMatchObject({ id, name: 'ci', scopes: ['models:read'], allowedModels: ['gpt-test'] });
    expect(await store.updateKey('missing', { name: 'x' })).toBeUndefined();
    expect(await store.key('missing')).toBeUndefined();
  });

  it('revokes once: the first revocation time stays, and the key is still found (as revoked)', async () => {
    const store = create();
    const { id, secret } = newKeySecret();
    await store.putKey(keyRecord({ id }), secret);
    const { change: changed } = await nextChange(store);
    await store.revokeKey(id, new Date('2026-02-01T00:00:00.000Z'));
    expect(await changed).toBe(id);
    await store.revokeKey(id, new Date('2026-03-01T00:00:00.000Z'));
    expect((await store.keyBySecret(secret))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    expect(await store.revokeKey('missing', new Date())).toBeUndefined();
  });

  it('records the last use', async () => {
    const store = create();
    const { id, secret } = newKeySecret();
    await store.putKey(keyRecord({ id }), secret);
    await store.touchKey(id, new Date('2026-04-01T00:00:00.000Z'));
    expect((await store.key(id))?.lastUsedAt).toBe('2026-04-01T00:00:00.000Z');
    await store.touchKey('missing', new Date());
    expect(await store.key('missing')).toBeUndefined();
  });
});

describe('Redis access store', () => {
  it('tells every replica when a key changes (pub/sub), so their caches can drop it', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const writer = track(new RedisAccessStore(redis, prefix));
    const reader = track(new RedisAccessStore(redis, prefix));
    const { id, secret } = newKeySecret();
    await writer.putKey(keyRecord({ id }), secret);
    const { change: seen } = await nextChange(reader);
    expect(Number((await redis.pubsub('NUMSUB', accessKeys(prefix).changes()))[1])).toBe(1);
    await writer.revokeKey(id, new Date());
    expect(await seen).toBe(id);
  });

  it('never stores the secret, only its hash', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const store = track(new RedisAccessStore(redis, prefix));
    const { id, secret } = newKeySecret();
    await store.putKey(keyRecord({ id }), secret);
    const stored = await redis.hgetall(accessKeys(prefix).apiKey(id));
    expect(JSON.stringify(stored)).not.toContain(secret.slice(-20));
    expect(stored.hash).toBe(hashSecret(secret));
  });
});
