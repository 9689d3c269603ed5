/**
 * Tenants' agent definitions: in Redis (one hash per tenant, agent name → definition JSON) when
 * configured, else in process memory. Agents from the server config are not stored here, so every
 * stored definition has a tenant. Both implementations pass one contract suite (agent-store.test.ts).
 */
import type { RedisClient } from '../../platform/redis/client.ts';
import { agentKeys } from '../../platform/redis/keys.ts';
import { luaScript } from '../../platform/redis/scripts.ts';
import type { AgentDefinition } from './records.ts';

export interface AgentStore {
  /** The tenant's agents, sorted by name. */
  list(tenantId: string): Promise<AgentDefinition[]>;
  get(tenantId: string, name: string): Promise<AgentDefinition | undefined>;
  /** Stores a new definition; false when the tenant already has an agent of that name. */
  create(definition: AgentDefinition): Promise<boolean>;
  /** Replaces an existing definition; false when there is none. */
  replace(definition: AgentDefinition): Promise<boolean>;
  /** false when there was no such agent. */
  delete(tenantId: string, name: string): Promise<boolean>;
}

function tenantOf(definition: AgentDefinition): string {
  if (definition.tenantId === null) throw new Error(`Agent "${definition.name}" has no tenant; configured agents are not stored`);
  return definition.tenantId;
}

function byName(a: AgentDefinition, b: AgentDefinition): number {
  if (a.name === b.name) return 0;
  return a.name < b.name ? -1 : 1;
}

export class MemoryAgentStore implements AgentStore {
  readonly #tenants = new Map<string, Map<string, AgentDefinition>>();

  async list(tenantId: string) {
    return [...(this.#tenants.get(tenantId)?.values() ?? [])].map((definition) => structuredClone(definition)).sort(byName);
  }

  async get(tenantId: string, name: string) {
    const definition = this.#tenants.get(tenantId)?.get(name);
    return definition && structuredClone(definition);
  }

  async create(definition: AgentDefinition) {
    const tenantId = tenantOf(definition);
    const agents = this.#tenants.get(tenantId) ?? new Map<string, AgentDefinition>();
    if (agents.has(definition.name)) return false;
    this.#tenants.set(tenantId, agents.set(definition.name, structuredClone(definition)));
    return true;
  }

  async replace(definition: AgentDefinition) {
    const agents = this.#tenants.get(tenantOf(definition));
    if (!agents?.has(definition.name)) return false;
    agents.set(definition.name, structuredClone(definition));
    return true;
  }

  async delete(tenantId: string, name: string) {
    return this.#tenants.get(tenantId)?.delete(name) ?? false;
  }
}

/** KEYS: the tenant's definitions. ARGV: name, definition JSON. Sets the field only if it exists. */
const REPLACE = luaScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`);

export class RedisAgentStore implements AgentStore {
  readonly #redis: RedisClient;
  readonly #keys: ReturnType<typeof agentKeys>;

  constructor(redis: RedisClient, keyPrefix: string) {
    this.#redis = redis;
    this.#keys = agentKeys(keyPrefix);
  }

  async list(tenantId: string) {
    const stored = await this.#redis.hvals(this.#keys.definitions(tenantId));
    return stored.map((json) => JSON.parse(json) as AgentDefinition).sort(byName);
  }

  async get(tenantId: string, name: string) {
    const json = await this.#redis.hget(this.#keys.definitions(tenantId), name);
    return json === null ? undefined : (JSON.parse(json) as AgentDefinition);
  }

  async create(definition: AgentDefinition) {
    const created = await this.#redis.hsetnx(this.#keys.definitions(tenantOf(definition)), definition.name, JSON.stringify(definition));
    return created === 1;
  }

  async replace(definition: AgentDefinition) {
    const replaced = await REPLACE.run(
      this.#redis,
      1,
      this.#keys.definitions(tenantOf(definition)),
      definition.name,
      JSON.stringify(definition),
    );
    return replaced === 1;
  }

  async delete(tenantId: string, name: string) {
    return (await this.#redis.hdel(this.#keys.definitions(tenantId), name)) === 1;
  }
}
