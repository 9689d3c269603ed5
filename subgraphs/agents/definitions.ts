/**
 * Agent definitions: those of the config (read-only; for one tenant, or for every tenant) and
 * those tenant admins create, checked the same way: the model must chat (and call tools when the
 * agent has any), every tool must be a valid operation on the API schema, and the limits must be
 * within the deployment's. A name is unique within a tenant; the config's definition wins.
 */
import type { GraphQLSchema } from 'graphql';
import { LRUCache } from 'lru-cache';
import type { AgentDefinitionConfig, Config } from '../../platform/config.ts';
import { ErrorCode, badInput, codedError } from '../../platform/errors.ts';
import type { ModelCatalog } from '../../providers/catalog.ts';
import type { AgentStore } from './agent-store.ts';
import { ToolDefinitionError, compileOperationTool, type OperationTool } from './operation-tools.ts';
import type { AgentDefinition } from './records.ts';

const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** What a caller (or the config) asks for; `undefined` limits take the deployment's defaults. */
export interface AgentSpec {
  name: string;
  model: string;
  instructions: string;
  tools: { name: string; document: string; description?: string | null | undefined }[];
  maxSteps?: number | null | undefined;
  maxTokens?: number | null | undefined;
  maxUsd?: number | null | undefined;
  maxWallTimeSeconds?: number | null | undefined;
}

export class AgentDirectory {
  readonly #store: AgentStore;
  readonly #catalog: ModelCatalog;
  readonly #schema: GraphQLSchema;
  readonly #settings: Config['agents'];
  readonly #configured: AgentDefinition[];
  /** Compiled tools per definition version, so runs do not re-parse documents. */
  readonly #compiled = new LRUCache<string, OperationTool[]>({ max: 1_000 });

  constructor(store: AgentStore, catalog: ModelCatalog, apiSchema: GraphQLSchema, settings: Config['agents']) {
    this.#store = store;
    this.#catalog = catalog;
    this.#schema = apiSchema;
    this.#settings = settings;
    const now = new Date().toISOString();
    // A bad configured agent stops the start, naming it (the config parser cannot see the schema).
    this.#configured = settings.definitions.map((definition, index) => {
      try {
        return this.#check(fromConfig(definition), definition.tenant ?? null, true, now, now);
      } catch (error) {
        const field = (error as { extensions?: { field?: string } }).extensions?.field;
        throw new Error(`invalid agents.definitions[${index}]${field ? `.${field}` : ''}: ${(error as Error).message}`);
      }
    });
  }

  /** The agents `tenantId` may run, by name. */
  async list(tenantId: string): Promise<AgentDefinition[]> {
    const configured = this.#configured.filter((agent) => agent.tenantId === null || agent.tenantId === tenantId);
    const names = new Set(configured.map((agent) => agent.name));
    const own = (await this.#store.list(tenantId)).filter((agent) => !names.has(agent.name));
    return [...configured, ...own].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * The agent `tenantId` runs under `name`: a configured one (for the tenant, then for every
   * tenant) before the tenant's own, as `list` shows them. A tenant's agent named like one the
   * config added later is shadowed until the tenant deletes it.
   */
  async find(tenantId: string, name: string): Promise<AgentDefinition | undefined> {
    return this.#configuredFor(tenantId, name) ?? (await this.#store.get(tenantId, name));
  }

  async create(tenantId: string, spec: AgentSpec): Promise<AgentDefinition> {
    if (this.#isConfigured(tenantId, spec.name)) throw badInput('name', `"${spec.name}" is the name of a configured agent`);
    const now = new Date().toISOString();
    const definition = this.#check(spec, tenantId, false, now, now);
    if (!(await this.#store.create(definition))) throw badInput('name', `the tenant already has an agent "${spec.name}"`);
    return definition;
  }

  /** Applies the fields given; the rest keep their values. */
  async update(tenantId: string, name: string, patch: Partial<AgentSpec>): Promise<AgentDefinition> {
    if (this.#isConfigured(tenantId, name)) throw badInput('name', `"${name}" is a configured agent; change it in the config`);
    const current = await this.#store.get(tenantId, name);
    if (!current) throw codedError(ErrorCode.NOT_FOUND, `agent "${name}" not found`);
    const defined = <T>(value: T | null | undefined, fallback: T) => (value === undefined ? fallback : (value ?? fallback));
    const spec: AgentSpec = {
      name,
      model: defined(patch.model, current.model),
      instructions: defined(patch.instructions, current.instructions),
      tools: defined(patch.tools, current.tools),
      maxSteps: defined(patch.maxSteps, current.maxSteps),
      // For these two, an explicit null lifts the run limit.
      maxTokens: patch.maxTokens === undefined ? current.maxTokens : patch.maxTokens,
      maxUsd: patch.maxUsd === undefined ? current.maxUsd : patch.maxUsd,
      maxWallTimeSeconds: defined(patch.maxWallTimeSeconds, current.maxWallTimeSeconds),
    };
    const definition = this.#check(spec, tenantId, false, current.createdAt, new Date().toISOString());
    if (!(await this.#store.replace(definition))) throw codedError(ErrorCode.NOT_FOUND, `agent "${name}" not found`);
    return definition;
  }

  /** Deletes the tenant's own agent (also one a configured agent shadows). */
  async delete(tenantId: string, name: string): Promise<void> {
    if (await this.#store.delete(tenantId, name)) return;
    if (this.#isConfigured(tenantId, name)) throw badInput('name', `"${name}" is a configured agent; remove it from the config`);
    throw codedError(ErrorCode.NOT_FOUND, `agent "${name}" not found`);
  }

  /** The agent's tools, compiled against the API schema (once per definition version). */
  tools(definition: AgentDefinition): OperationTool[] {
    const key = `${definition.tenantId ?? ''}\n${definition.name}\n${definition.createdAt}\n${definition.updatedAt}`;
    let tools = this.#compiled.get(key);
    if (!tools) {
      tools = definition.tools.map((tool) => compileOperationTool(this.#schema, tool));
      this.#compiled.set(key, tools);
    }
    return tools;
  }

  #configuredFor(tenantId: string, name: string): AgentDefinition | undefined {
    return (
      this.#configured.find((agent) => agent.tenantId === tenantId && agent.name === name) ??
      this.#configured.find((agent) => agent.tenantId === null && agent.name === name)
    );
  }

  #isConfigured(tenantId: string, name: string): boolean {
    return this.#configuredFor(tenantId, name) !== undefined;
  }

  /** Checks a spec into a definition, or throws a coded error naming the field. */
  #check(spec: AgentSpec, tenantId: string | null, configured: boolean, createdAt: string, updatedAt: string): AgentDefinition {
    const { limits, defaults } = this.#settings;
    if (!AGENT_NAME.test(spec.name)) throw badInput('name', 'an agent name is 1 to 64 letters, digits, _ . or -');
    this.#checkModel(spec.model, spec.tools.length > 0);
    if (spec.instructions.trim() === '') throw badInput('instructions', 'instructions must not be empty');
    if (spec.instructions.length > limits.maxInstructionsChars)
      throw badInput('instructions', `instructions are at most ${limits.maxInstructionsChars} characters`);
    if (spec.tools.length > limits.maxTools) throw badInput('tools', `at most ${limits.maxTools} tools`);
    const names = new Set<string>();
    const tools = spec.tools.map((tool, index) => {
      if (names.has(tool.name)) throw badInput(`tools[${index}].name`, `two tools are named "${tool.name}"`);
      names.add(tool.name);
      const definition = { name: tool.name, description: tool.description ?? null, document: tool.document };
      try {
        compileOperationTool(this.#schema, definition);
      } catch (error) {
        if (error instanceof ToolDefinitionError) throw badInput(`tools[${index}].${error.field}`, error.message);
        throw error;
      }
      return definition;
    });
    const maxSteps = spec.maxSteps ?? defaults.maxSteps;
    const maxWallTimeSeconds = spec.maxWallTimeSeconds ?? defaults.maxWallTimeSeconds;
    checkRange('maxSteps', maxSteps, 1, limits.maxSteps);
    checkRange('maxWallTimeSeconds', maxWallTimeSeconds, 1, limits.maxWallTimeSeconds);
    if (spec.maxTokens != null) checkRange('maxTokens', spec.maxTokens, 1, Number.MAX_SAFE_INTEGER);
    if (spec.maxUsd != null && !(spec.maxUsd > 0 && Number.isFinite(spec.maxUsd)))
      throw badInput('maxUsd', 'maxUsd must be a positive amount');
    return {
      tenantId,
      name: spec.name,
      model: spec.model,
      instructions: spec.instructions,
      tools,
      maxSteps,
      maxTokens: spec.maxTokens ?? null,
      maxUsd: spec.maxUsd ?? null,
      maxWallTimeSeconds,
      configured,
      createdAt,
      updatedAt,
    };
  }

  #checkModel(ref: string, withTools: boolean): void {
    const model = this.#catalog.resolve(ref);
    if (!model) throw codedError(ErrorCode.MODEL_NOT_FOUND, `no model, alias or version pin "${ref}"`, { field: 'model', model: ref });
    if (!model.capabilities.includes('CHAT'))
      throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not chat`, { field: 'model', capability: 'CHAT' });
    if (withTools && !model.capabilities.includes('TOOLS')) {
      throw codedError(ErrorCode.MODEL_CAPABILITY_UNSUPPORTED, `model "${model.id}" does not call tools`, {
        field: 'model',
        capability: 'TOOLS',
      });
    }
  }
}

function checkRange(field: string, value: number, min: number, max: number): void {
  if (!(Number.isInteger(value) && value >= min && value <= max)) throw badInput(field, `${field} must be between ${min} and ${max}`);
}

function fromConfig(definition: AgentDefinitionConfig): AgentSpec {
  return { ...definition, tools: definition.tools.map((tool) => ({ ...tool, description: tool.description ?? null })) };
}

/** `<tenant>/<name>`, or `_shared/<name>` for an agent of every tenant. */
export const agentId = (definition: AgentDefinition) => `${definition.tenantId ?? '_shared'}/${definition.name}`;
