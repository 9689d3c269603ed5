import type { Resolvers } from '../../codegen/access.resolvers.ts';
import { ErrorCode, codedError } from '../../platform/errors.ts';
import { SCOPES, administers, isPlatformAdmin, scopeToEnum } from '../../platform/identity/principal.ts';
import { auditScope, createApiKey, createTenant, notFound, revokeApiKey, updateApiKey } from './admin.ts';

const MAX_PAGE = 500;

function pageSize(first: number): number {
  if (!Number.isInteger(first) || first < 1 || first > MAX_PAGE) {
    throw codedError(ErrorCode.BAD_USER_INPUT, `first must be 1 to ${MAX_PAGE}`, { field: 'first' });
  }
  return first;
}

function time(field: string, value: string | null | undefined): Date | undefined {
  if (value === null || value === undefined) return undefined;
  const parsed = new Date(value);
  if (Number.isNaN(parsed.getTime())) throw codedError(ErrorCode.BAD_USER_INPUT, `${field} must be an ISO-8601 time`, { field });
  return parsed;
}

/** A page of ids after `after` (an id of the list), as a Relay connection. */
function connection<T extends { id: string }>(items: T[], first: number, after: string | null | undefined) {
  const start = after ? items.findIndex((item) => item.id === after) + 1 : 0;
  if (after && start === 0) throw codedError(ErrorCode.BAD_USER_INPUT, 'after is not a cursor of this list', { field: 'after' });
  const page = items.slice(start, start + pageSize(first));
  return {
    edges: page.map((node) => ({ cursor: node.id, node })),
    pageInfo: { hasNextPage: start + page.length < items.length, endCursor: page.at(-1)?.id ?? null },
  };
}

export const resolvers: Resolvers = {
  // Enum names in the schema, scope strings (`models:read`) in resolvers, tokens and the store.
  Scope: Object.fromEntries(SCOPES.map((scope) => [scopeToEnum(scope), scope])) as Resolvers['Scope'],
  Query: {
    me: (_parent, _args, { principal }) => principal,
    tenants: (_parent, _args, { store }) => store.tenants(),
    tenant: async (_parent, { id }, { store }) => (await store.tenant(id)) ?? null,
    // Another tenant's key reads as no key at all: the answer must not reveal that it exists.
    apiKey: async (_parent, { id }, { store, principal }) => {
      const key = await store.key(id);
      return key && (administers(principal, key.tenantId) || principal.keyId === key.id) ? key : null;
    },
    auditLog: async (_parent, { filter, first, after }, { audit, principal }) => {
      const page = await audit.list(
        {
          tenant: auditScope(principal, isPlatformAdmin(principal), filter?.tenant),
          ...(filter?.actor && { actor: filter.actor }),
          ...(filter?.action && { action: filter.action }),
          ...(filter?.outcome && { outcome: filter.outcome }),
          from: time('filter.from', filter?.from),
          to: time('filter.to', filter?.to),
        },
        pageSize(first),
        after ?? undefined,
      );
      return {
        edges: page.events.map((node) => ({ cursor: node.id, node })),
        pageInfo: { hasNextPage: page.hasNextPage, endCursor: page.endCursor },
      };
    },
  },
  Mutation: {
    createTenant: async (_parent, { input }, context) => ({ tenant: await createTenant(context, input) }),
    createApiKey: (_parent, { input }, context) => createApiKey(context, input),
    updateApiKey: async (_parent, { input }, context) => ({ apiKey: await updateApiKey(context, input) }),
    revokeApiKey: async (_parent, { input }, context) => ({ apiKey: await revokeApiKey(context, input.id) }),
  },
  Principal: {
    tenant: async (principal, _args, { store }) =>
      (await store.tenant(principal.tenantId)) ?? {
        id: principal.tenantId,
        name: principal.tenantId,
        createdAt: new Date(0).toISOString(),
      },
    apiKey: async (principal, _args, { store }) => (principal.keyId ? ((await store.key(principal.keyId)) ?? null) : null),
  },
  Tenant: {
    __resolveReference: async ({ id }, { store }) => (await store.tenant(id)) ?? null,
    apiKeys: async (tenant, { first, after }, { store }) => connection(await store.keys(tenant.id), first, after),
  },
  ApiKey: {
    __resolveReference: async ({ id }, { store }) => (await store.key(id)) ?? null,
    tenant: async (key, _args, { store }) => {
      const tenant = await store.tenant(key.tenantId);
      if (!tenant) throw notFound(`tenant "${key.tenantId}"`);
      return tenant;
    },
  },
};
