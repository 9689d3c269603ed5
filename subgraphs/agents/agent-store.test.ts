import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { agentKeys } from '../../platform/redis/keys.ts';
import { MemoryAgentStore, RedisAgentStore, type AgentStore } from './agent-store.ts';
import { agentDefinition } from '../../tests/support/agent-records.ts';
import type { AgentDefinition } from './records.ts';
import { connectSharedCluster } from '../../tests/support/shared-redis-cluster.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(REDIS_URL);
const cluster = await connectSharedCluster();
afterAll(() => {
  redis.disconnect();
  cluster.disconnect();
});

const implementations: [string, () => AgentStore][] = [
  ['Redis', () => new RedisAgentStore(redis, `mg-test:${randomUUID()}:`)],
  ['Redis Cluster', () => new RedisAgentStore(cluster, `mg-test:${randomUUID()}:`)],
  ['memory', () => new MemoryAgentStore()],
];

/** acme's researcher, with one tool and a token limit. */
const agent = (overrides: Partial<AgentDefinition> = {}): AgentDefinition =>
  agentDefinition({ tools: [{ name: 'models', description: null, document: 'query { models { id } }' }], maxTokens: 10_000, ...overrides });

describe.each(implementations)('%s agent store', (_name, create) => {
  it('creates an agent once, keeping every field, and finds it by tenant and name', async () => {
    const store = create();
    const definition = agent();
    expect(await store.create(definition)).toBe(true);
    expect(await store.get('acme', 'researcher')).toEqual(definition);
    expect(await store.create(agent({ instructions: 'Something else.' }))).toBe(false);
    expect((await store.get('acme', 'researcher'))?.instructions).toBe('Answer briefly.');
    expect(await store.get('acme', 'writer')).toBeUndefined();
  });

  it('lists a tenant’s agents sorted by name, and no other tenant’s', async () => {
    const store = create();
    for (const name of ['writer', 'analyst', 'researcher']) await store.create(agent({ name }));
    await store.create(agent({ tenantId: 'globex', name: 'spy' }));
    await store.create(agent({ tenantId: 'globex', name: 'researcher', model: 'other-model' }));
    expect((await store.list('acme')).map((definition) => definition.name)).toEqual(['analyst', 'researcher', 'writer']);
    expect((await store.list('globex')).map((definition) => definition.name)).toEqual(['researcher', 'spy']);
    expect((await store.get('acme', 'researcher'))?.model).toBe('gpt-test');
    expect(await store.get('acme', 'spy')).toBeUndefined();
    expect(await store.list('initech')).toEqual([]);
  });

  it('replaces only an agent that exists', async () => {
    const store = create();
    expect(await store.replace(agent())).toBe(false);
    expect(await store.get('acme', 'researcher')).toBeUndefined();
    await store.create(agent());
    const changed = agent({ maxSteps: 8, updatedAt: '2026-03-02T12:00:00.000Z' });
    expect(await store.replace(changed)).toBe(true);
    expect(await store.get('acme', 'researcher')).toEqual(changed);
    expect(await store.replace(agent({ tenantId: 'globex' }))).toBe(false);
    expect(await store.list('globex')).toEqual([]);
  });

  it('deletes an agent of one tenant only, and answers false when there is none', async () => {
    const store = create();
    await store.create(agent());
    await store.create(agent({ tenantId: 'globex' }));
    expect(await store.delete('acme', 'researcher')).toBe(true);
    expect(await store.delete('acme', 'researcher')).toBe(false);
    expect(await store.get('acme', 'researcher')).toBeUndefined();
    expect(await store.get('globex', 'researcher')).toEqual(agent({ tenantId: 'globex' }));
    expect(await store.create(agent())).toBe(true);
  });

  it('refuses definitions without a tenant (configured agents are not stored)', async () => {
    const store = create();
    await expect(store.create(agent({ tenantId: null, configured: true }))).rejects.toThrow(/no tenant/);
    await expect(store.replace(agent({ tenantId: null, configured: true }))).rejects.toThrow(/no tenant/);
  });

  it('hands out copies: changing a returned definition changes nothing stored', async () => {
    const store = create();
    await store.create(agent());
    const fetched = (await store.get('acme', 'researcher'))!;
    fetched.tools.push({ name: 'extra', description: null, document: 'query { x }' });
    fetched.maxSteps = 99;
    expect(await store.get('acme', 'researcher')).toEqual(agent());
  });
});

describe('Redis agent store', () => {
  it('keeps a tenant’s agents in one hash, name → definition JSON', async () => {
    const prefix = `mg-test:${randomUUID()}:`;
    const store = new RedisAgentStore(redis, prefix);
    await store.create(agent());
    expect(await redis.hgetall(agentKeys(prefix).definitions('acme'))).toEqual({ researcher: JSON.stringify(agent()) });
  });
});
