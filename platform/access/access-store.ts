/**
 * Tenants and API keys: the access subgraph writes them, the router reads keys to authenticate.
 * In Redis when configured (records as hashes of JSON-encoded fields, so updates touch only their
 * fields atomically), else in process memory for a single-process start. Both implementations
 * pass one contract suite (access-store.test.ts).
 *
 * A key's secret exists only in the answer to its creation: the store keeps its SHA-256 and finds
 * a presented key by that hash. Keys are 256-bit random, so a fast hash is enough (no password
 * hashing needed), and SHA-256 lets every replica look a key up in one round trip.
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { duplicateRedis, onSubscriberGap, type RedisClient } from '../redis/client.ts';
import type { Scope } from '../identity/principal.ts';
import { accessKeys } from '../redis/keys.ts';
import { luaScript } from '../redis/scripts.ts';

export interface TenantRecord {
  id: string;
  name: string;
  createdAt: string;
}

/** Limits an admin sets on a key; null means unlimited. */
export interface KeyLimits {
  requestsPerMinute: number | null;
  /** Operations of the key running at once, across replicas (absent in records made before it). */
  maxConcurrentRequests?: number | null;
  tokensPerMinute: number | null;
  usdPerDay: number | null;
  usdPerMonth: number | null;
}

export const NO_LIMITS: KeyLimits = {
  requestsPerMinute: null,
  maxConcurrentRequests: null,
  tokensPerMinute: null,
  usdPerDay: null,
  usdPerMonth: null,
};

export interface ApiKeyRecord {
  id: string;
  tenantId: string;
  name: string;
  scopes: Scope[];
  /** Model or route ids the key may call; null allows all. */
  allowedModels: string[] | null;
  limits: KeyLimits;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

export type NewApiKey = Pick<ApiKeyRecord, 'tenantId' | 'name' | 'scopes' | 'allowedModels' | 'limits' | 'expiresAt'>;
export type ApiKeyPatch = Partial<Pick<ApiKeyRecord, 'name' | 'scopes' | 'allowedModels' | 'limits' | 'expiresAt'>>;

export interface AccessStore {
  /** Creates a tenant; false when the id is taken. */
  createTenant(tenant: TenantRecord): Promise<boolean>;
  tenant(id: string): Promise<TenantRecord | undefined>;
  /** Every tenant, oldest first. */
  tenants(): Promise<TenantRecord[]>;
  /**
   * Stores a key under `secret`'s hash. With `onlyIfAbsent`, does nothing (and answers false) when
   * a key with this id exists; otherwise replaces it (and forgets its old secret).
   */
  putKey(record: ApiKeyRecord, secret: string, options?: { onlyIfAbsent?: boolean }): Promise<boolean>;
  key(id: string): Promise<ApiKeyRecord | undefined>;
  /** A tenant's keys, oldest first. */
  keys(tenantId: string): Promise<ApiKeyRecord[]>;
  /** The key a presented secret belongs to, revoked or not; undefined for an unknown secret. */
  keyBySecret(secret: string): Promise<ApiKeyRecord | undefined>;
  /** Applies the patch and tells every replica; undefined when there is no such key. */
  updateKey(id: string, patch: ApiKeyPatch): Promise<ApiKeyRecord | undefined>;
  /** Marks the key revoked (the first revocation time stays) and tells every replica. */
  revokeKey(id: string, at: Date): Promise<ApiKeyRecord | undefined>;
  /** Records a use; callers throttle it. */
  touchKey(id: string, at: Date): Promise<void>;
  /** Calls `listener` with the id of every key updated or revoked, by any replica (or EVERY_KEY). */
  onKeyChanged(listener: (keyId: string) => void): () => void;
  /** Resolves once changes made by other replicas reach this store's listeners. */
  listening(): Promise<void>;
  close(): Promise<void>;
}

const KEY_PREFIX = 'mg_';

/**
 * What `onKeyChanged` reports when changes may have been missed (the change feed reconnected):
 * every key may have changed.
 */
export const EVERY_KEY = '*';

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new key: `mg_<id>_<secret>`; the id is public (logs, audit), the rest is not. */
export function newKeySecret(id: string = newKeyId()): { id: string; secret: string } {
  return { id, secret: `${KEY_PREFIX}${id}_${randomBytes(32).toString('base64url')}` };
}

export function newKeyId(): string {
  return randomBytes(8).toString('hex');
}

/** The id part of something shaped like one of our keys, for audit records of failed attempts. */
export function keyIdOf(presented: string): string | undefined {
  return /^mg_([a-z0-9-]{1,64})_/.exec(presented)?.[1];
}

export function looksLikeApiKey(presented: string): boolean {
  return presented.startsWith(KEY_PREFIX);
}

function applyPatch(record: ApiKeyRecord, patch: ApiKeyPatch): ApiKeyRecord {
  const defined = Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined));
  return { ...record, ...defined };
}

export class MemoryAccessStore implements AccessStore {
  readonly #tenants = new Map<string, TenantRecord>();
  readonly #keys = new Map<string, { record: ApiKeyRecord; hash: string }>();
  readonly #byHash = new Map<string, string>();
  readonly #changes = new EventEmitter();

  async createTenant(tenant: TenantRecord) {
    if (this.#tenants.has(tenant.id)) return false;
    this.#tenants.set(tenant.id, { ...tenant });
    return true;
  }

  async tenant(id: string) {
    return this.#tenants.get(id);
  }

  async tenants() {
    return [...this.#tenants.values()];
  }

  async putKey(record: ApiKeyRecord, secret: string, { onlyIfAbsent = false } = {}) {
    const existing = this.#keys.get(record.id);
    if (existing && onlyIfAbsent) return false;
    if (existing) this.#byHash.delete(existing.hash);
    const hash = hashSecret(secret);
    this.#keys.set(record.id, { record: structuredClone(record), hash });
    this.#byHash.set(hash, record.id);
    if (existing) this.#changes.emit('changed', record.id);
    return true;
  }

  async key(id: string) {
    const stored = this.#keys.get(id);
    return stored && structuredClone(stored.record);
  }

  async keys(tenantId: string) {
    return [...this.#keys.values()].filter(({ record }) => record.tenantId === tenantId).map(({ record }) => structuredClone(record));
  }

  async keyBySecret(secret: string) {
    const id = this.#byHash.get(hashSecret(secret));
    return id === undefined ? undefined : this.key(id);
  }

  async updateKey(id: string, patch: ApiKeyPatch) {
    const stored = this.#keys.get(id);
    if (!stored) return undefined;
    stored.record = applyPatch(stored.record, structuredClone(patch));
    this.#changes.emit('changed', id);
    return structuredClone(stored.record);
  }

  async revokeKey(id: string, at: Date) {
    const stored = this.#keys.get(id);
    if (!stored) return undefined;
    stored.record.revokedAt ??= at.toISOString();
    this.#changes.emit('changed', id);
    return structuredClone(stored.record);
  }

  async touchKey(id: string, at: Date) {
    const stored = this.#keys.get(id);
    if (stored) stored.record.lastUsedAt = at.toISOString();
  }

  onKeyChanged(listener: (keyId: string) => void) {
    this.#changes.on('changed', listener);
    return () => void this.#changes.off('changed', listener);
  }

  async listening() {}

  async close() {
    this.#changes.removeAllListeners();
  }
}

/** Sets fields of an existing hash only (never creates a half record). */
const UPDATE_IF_EXISTS = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`);

/** Sets revokedAt unless it is set already. */
const REVOKE = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'revokedAt') == 'null' then redis.call('HSET', KEYS[1], 'revokedAt', ARGV[1]) end
return 1`);

/**
 * KEYS: record, new hash index, tenant keys, old hash index (read before, so every key is
 * declared). ARGV: onlyIfAbsent, id, created ms, new hash, old hash ('' for none), fields...
 * Returns -1 when the record's hash is no longer the one read (the caller reads again).
 */
const PUT_KEY = luaScript(`
local old = redis.call('HGET', KEYS[1], 'hash') or ''
if old ~= ARGV[5] then return -1 end
if old ~= '' and ARGV[1] == '1' then return 0 end
if old ~= '' then redis.call('DEL', KEYS[4]) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[4], unpack(ARGV, 6))
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
if old ~= '' then return 2 end
return 1`);

/** ARGV: id (JSON), created ms, id, fields... */
const CREATE_TENANT = luaScript(`
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1`);

function toFields(record: object): string[] {
  return Object.entries(record).flatMap(([field, value]) => [field, JSON.stringify(value ?? null)]);
}

function fromFields<T>(hash: Record<string, string>, fields: readonly (keyof T & string)[]): T | undefined {
  if (!hash.id) return undefined;
  return Object.fromEntries(fields.map((field) => [field, JSON.parse(hash[field] ?? 'null') as unknown])) as T;
}

const TENANT_FIELDS = ['id', 'name', 'createdAt'] as const;
const KEY_FIELDS = [
  'id',
  'tenantId',
  'name',
  'scopes',
  'allowedModels',
  'limits',
  'createdAt',
  'expiresAt',
  'revokedAt',
  'lastUsedAt',
] as const;

export class RedisAccessStore implements AccessStore {
  readonly #redis: RedisClient;
  readonly #keys: ReturnType<typeof accessKeys>;
  readonly #changes = new EventEmitter();
  #subscriber: RedisClient | undefined;
  #subscribed: Promise<void> = Promise.resolve();

  constructor(redis: RedisClient, keyPrefix: string) {
    this.#redis = redis;
    this.#keys = accessKeys(keyPrefix);
  }

  async createTenant(tenant: TenantRecord) {
    const fields = toFields({ name: tenant.name, createdAt: tenant.createdAt });
    const created = await CREATE_TENANT.run(
      this.#redis,
      2,
      this.#keys.tenant(tenant.id),
      this.#keys.tenants(),
      JSON.stringify(tenant.id),
      Date.parse(tenant.createdAt),
      tenant.id,
      ...fields,
    );
    return created === 1;
  }

  async tenant(id: string) {
    return fromFields<TenantRecord>(await this.#redis.hgetall(this.#keys.tenant(id)), TENANT_FIELDS);
  }

  async tenants() {
    const ids = await this.#redis.zrange(this.#keys.tenants(), 0, -1);
    return this.#many<TenantRecord>(ids.map(this.#keys.tenant), TENANT_FIELDS);
  }

  async putKey(record: ApiKeyRecord, secret: string, { onlyIfAbsent = false } = {}) {
    const hash = hashSecret(secret);
    const { id, tenantId } = record;
    const k = this.#keys;
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const old = (await this.#redis.hget(k.apiKey(id), 'hash')) ?? '';
      const outcome = await PUT_KEY.run(
        this.#redis,
        4,
        k.apiKey(id),
        k.apiKeyByHash(hash),
        k.tenantKeys(tenantId),
        k.apiKeyByHash(old),
        onlyIfAbsent ? '1' : '0',
        id,
        Date.parse(record.createdAt),
        hash,
        old,
        ...toFields(record),
      );
      if (outcome === -1) continue; // replaced meanwhile by another writer: read again
      if (outcome === 2) await this.#publish(id);
      return outcome !== 0;
    }
    throw new Error(`API key ${id} kept changing while it was being replaced`);
  }

  async key(id: string) {
    return fromFields<ApiKeyRecord>(await this.#redis.hgetall(this.#keys.apiKey(id)), KEY_FIELDS);
  }

  async keys(tenantId: string) {
    const ids = await this.#redis.zrange(this.#keys.tenantKeys(tenantId), 0, -1);
    return this.#many<ApiKeyRecord>(ids.map(this.#keys.apiKey), KEY_FIELDS);
  }

  async keyBySecret(secret: string) {
    const id = await this.#redis.get(this.#keys.apiKeyByHash(hashSecret(secret)));
    return id === null ? undefined : this.key(id);
  }

  async updateKey(id: string, patch: ApiKeyPatch) {
    const fields = toFields(Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined)));
    if (fields.length > 0) {
      const updated = await UPDATE_IF_EXISTS.run(this.#redis, 1, this.#keys.apiKey(id), ...fields);
      if (updated === 0) return undefined;
      await this.#publish(id);
    }
    return this.key(id);
  }

  async revokeKey(id: string, at: Date) {
    const revoked = await REVOKE.run(this.#redis, 1, this.#keys.apiKey(id), JSON.stringify(at.toISOString()));
    if (revoked === 0) return undefined;
    await this.#publish(id);
    return this.key(id);
  }

  async touchKey(id: string, at: Date) {
    await UPDATE_IF_EXISTS.run(this.#redis, 1, this.#keys.apiKey(id), 'lastUsedAt', JSON.stringify(at.toISOString()));
  }

  onKeyChanged(listener: (keyId: string) => void) {
    this.#subscribe();
    this.#changes.on('changed', listener);
    return () => void this.#changes.off('changed', listener);
  }

  async close() {
    this.#changes.removeAllListeners();
    this.#subscriber?.disconnect();
  }

  async #publish(id: string) {
    await this.#redis.publish(this.#keys.changes(), id);
  }

  #subscribe() {
    if (this.#subscriber) return;
    // A subscribed connection can do nothing else, so changes get their own. It queues the
    // SUBSCRIBE until connected and re-subscribes after a reconnect (ioredis does both).
    this.#subscriber = duplicateRedis(this.#redis);
    this.#subscriber.on('error', () => undefined);
    this.#subscriber.on('message', (_channel: string, id: string) => this.#changes.emit('changed', id));
    // Changes published while the feed was down are lost: after a gap, everything may have changed.
    onSubscriberGap(this.#subscriber, () => this.#changes.emit('changed', EVERY_KEY));
    this.#subscribed = this.#subscriber.subscribe(this.#keys.changes()).then(
      () => undefined,
      () => undefined,
    );
  }

  listening() {
    return this.#subscribed;
  }

  async #many<T>(keys: string[], fields: readonly (keyof T & string)[]): Promise<T[]> {
    if (keys.length === 0) return [];
    const pipeline = this.#redis.pipeline();
    for (const key of keys) pipeline.hgetall(key);
    const results = (await pipeline.exec()) ?? [];
    return results.flatMap(([, hash]) => {
      const record = fromFields<T>(hash as Record<string, string>, fields);
      return record ? [record] : [];
    });
  }
}
