/**
 * The administrative actions of the access subgraph: create tenants, create, update and revoke
 * keys. Each validates its input into a coded error, runs against the store, and leaves exactly
 * one audit event (SUCCESS or FAILED; DENIED events come from the permission rules).
 */
import {
  NO_LIMITS,
  newKeySecret,
  type ApiKeyPatch,
  type ApiKeyRecord,
  type KeyLimits,
  type TenantRecord,
} from '../../platform/access/access-store.ts';
import { callerAuditEvent, type NewAuditEvent } from '../../platform/access/audit-log.ts';
import { ErrorCode, badInput, codeOf, codedError } from '../../platform/errors.ts';
import type { Principal, Scope } from '../../platform/identity/principal.ts';
import type { AccessContext } from './context.ts';

const TENANT_ID = /^[a-z0-9][a-z0-9-]{1,39}$/;
const MAX_NAME = 100;
const MAX_ALLOWED_MODELS = 200;

export const notFound = (what: string) => codedError(ErrorCode.NOT_FOUND, `${what} not found`);

/** The audit event of an access action by the caller of `context`. */
export const auditEvent = (context: AccessContext, action: string, fields: Partial<NewAuditEvent>): NewAuditEvent =>
  callerAuditEvent(context, action, fields);

/**
 * Nobody grants more than they hold: the scopes of a new or changed key must be the caller's, and
 * a caller limited to some models can only hand out (subsets of) those. Platform admins hold
 * everything, so this binds tenant admins and narrower JWTs.
 */
function checkGrant(principal: Principal, scopes: readonly Scope[] | undefined, allowedModels: readonly string[] | null | undefined): void {
  const beyond = (scopes ?? []).filter((scope) => !principal.scopes.includes(scope));
  if (beyond.length) throw codedError(ErrorCode.FORBIDDEN, `this key cannot grant scopes it does not hold: ${beyond.join(', ')}`);
  if (principal.allowedModels === null || allowedModels === undefined) return;
  if (allowedModels === null || allowedModels.some((model) => !principal.allowedModels!.includes(model))) {
    throw codedError(ErrorCode.FORBIDDEN, 'this key cannot grant models outside its own allowed models');
  }
}

/** Runs an action and records its outcome; a failure is recorded with its code, then rethrown. */
async function audited<T>(
  context: AccessContext,
  action: string,
  target: { target: string | null; tenant: string | null },
  run: () => Promise<T>,
): Promise<T> {
  try {
    const result = await run();
    await context.audit.record(auditEvent(context, action, target));
    return result;
  } catch (error) {
    const reason = codeOf(error) ?? ErrorCode.INTERNAL_SERVER_ERROR;
    await context.audit.record(auditEvent(context, action, { ...target, outcome: 'FAILED', reason })).catch((auditError: unknown) => {
      context.log.error({ err: auditError }, 'audit event lost');
    });
    throw error;
  }
}

function checkName(field: string, name: string): string {
  const trimmed = name.trim();
  if (trimmed.length === 0 || trimmed.length > MAX_NAME) throw badInput(field, `${field} must be 1 to ${MAX_NAME} characters`);
  return trimmed;
}

function checkExpiry(expiresAt: string | null | undefined, now: Date): string | null {
  if (expiresAt === null || expiresAt === undefined) return null;
  const time = Date.parse(expiresAt);
  if (Number.isNaN(time)) throw badInput('expiresAt', 'expiresAt must be an ISO-8601 time');
  if (time <= now.getTime()) throw badInput('expiresAt', 'expiresAt must be in the future');
  return new Date(time).toISOString();
}

function checkAllowedModels(models: readonly string[] | null | undefined): string[] | null {
  if (models === null || models === undefined) return null;
  if (models.length > MAX_ALLOWED_MODELS) throw badInput('allowedModels', `at most ${MAX_ALLOWED_MODELS} models`);
  return [...new Set(models)];
}

interface LimitsInput {
  requestsPerMinute?: number | null;
  maxConcurrentRequests?: number | null;
  tokensPerMinute?: number | null;
  usdPerDay?: number | null;
  usdPerMonth?: number | null;
}

function checkLimits(limits: LimitsInput | null | undefined, base: KeyLimits): KeyLimits {
  if (!limits) return base;
  const merged = { ...base };
  for (const field of Object.keys(NO_LIMITS) as (keyof KeyLimits)[]) {
    const value = limits[field];
    if (value === undefined) continue;
    if (value !== null && !(Number.isFinite(value) && value >= 0))
      throw badInput(`limits.${field}`, `limits.${field} must be zero or more`);
    merged[field] = value;
  }
  return merged;
}

export function createTenant(context: AccessContext, input: { id: string; name: string }): Promise<TenantRecord> {
  return audited(context, 'tenant.create', { target: input.id, tenant: input.id }, async () => {
    if (!TENANT_ID.test(input.id)) throw badInput('id', 'a tenant id is 2 to 40 lower-case letters, digits and dashes');
    const tenant = { id: input.id, name: checkName('name', input.name), createdAt: new Date().toISOString() };
    if (!(await context.store.createTenant(tenant))) throw badInput('id', `tenant "${input.id}" exists`);
    return tenant;
  });
}

export interface CreateKeyInput {
  tenantId?: string | null;
  name: string;
  scopes: Scope[];
  allowedModels?: string[] | null;
  limits?: LimitsInput | null;
  expiresAt?: string | null;
}

export function createApiKey(context: AccessContext, input: CreateKeyInput): Promise<{ apiKey: ApiKeyRecord; secret: string }> {
  const tenantId = input.tenantId ?? context.principal.tenantId;
  const { id, secret } = newKeySecret();
  return audited(context, 'apiKey.create', { target: id, tenant: tenantId }, async () => {
    if (!(await context.store.tenant(tenantId))) throw notFound(`tenant "${tenantId}"`);
    checkGrant(context.principal, input.scopes, input.allowedModels ?? null);
    const now = new Date();
    const apiKey: ApiKeyRecord = {
      id,
      tenantId,
      name: checkName('name', input.name),
      scopes: [...new Set(input.scopes)],
      allowedModels: checkAllowedModels(input.allowedModels),
      limits: checkLimits(input.limits, NO_LIMITS),
      createdAt: now.toISOString(),
      expiresAt: checkExpiry(input.expiresAt, now),
      revokedAt: null,
      lastUsedAt: null,
    };
    await context.store.putKey(apiKey, secret, { onlyIfAbsent: true });
    return { apiKey, secret };
  });
}

export interface UpdateKeyInput {
  id: string;
  name?: string | null;
  scopes?: Scope[] | null;
  allowedModels?: string[] | null;
  allowAllModels?: boolean | null;
  limits?: LimitsInput | null;
  expiresAt?: string | null;
}

export async function updateApiKey(context: AccessContext, input: UpdateKeyInput): Promise<ApiKeyRecord> {
  const current = await context.store.key(input.id);
  return audited(context, 'apiKey.update', { target: input.id, tenant: current?.tenantId ?? null }, async () => {
    if (!current) throw notFound(`API key "${input.id}"`);
    if (input.allowAllModels && input.allowedModels) throw badInput('allowAllModels', 'give allowedModels or allowAllModels, not both');
    // A key changing itself could only widen its own grant or hide from revocation; admins do it.
    if (input.id === context.principal.keyId) throw codedError(ErrorCode.FORBIDDEN, 'a key cannot change itself; ask another admin');
    checkGrant(context.principal, input.scopes ?? undefined, input.allowAllModels ? null : (input.allowedModels ?? undefined));
    const patch: ApiKeyPatch = {
      ...(input.name != null && { name: checkName('name', input.name) }),
      ...(input.scopes != null && { scopes: [...new Set(input.scopes)] }),
      ...(input.allowedModels != null && { allowedModels: checkAllowedModels(input.allowedModels) }),
      ...(input.allowAllModels && { allowedModels: null }),
      ...(input.limits != null && { limits: checkLimits(input.limits, current.limits) }),
      ...(input.expiresAt != null && { expiresAt: checkExpiry(input.expiresAt, new Date()) }),
    };
    const updated = await context.store.updateKey(input.id, patch);
    if (!updated) throw notFound(`API key "${input.id}"`);
    return updated;
  });
}

export async function revokeApiKey(context: AccessContext, id: string): Promise<ApiKeyRecord> {
  const current = await context.store.key(id);
  return audited(context, 'apiKey.revoke', { target: id, tenant: current?.tenantId ?? null }, async () => {
    const revoked = current && (await context.store.revokeKey(id, new Date()));
    if (!revoked) throw notFound(`API key "${id}"`);
    return revoked;
  });
}

/** A tenant's admins see events about their tenant only; platform admins may filter freely. */
export function auditScope(principal: Principal, isPlatformAdmin: boolean, requested: string | null | undefined): string | undefined {
  if (isPlatformAdmin) return requested ?? undefined;
  return principal.tenantId;
}
