/**
 * Who may read and change access data. Any caller reads `me`; a tenant's members read its name;
 * its admins (scope `admin`) read and manage its keys and audit events; admins of the `platform`
 * tenant do so for every tenant and create tenants. A key may always read itself (`me.apiKey`).
 * Refused admin mutations leave a DENIED audit event.
 */
import type { ApiKeyRecord, TenantRecord } from '../../platform/access/access-store.ts';
import { allow, and, forbidden, requireScope, rule, subgraphShield } from '../../platform/identity/authorization.ts';
import { ErrorCode } from '../../platform/errors.ts';
import { administers, isPlatformAdmin, type Principal } from '../../platform/identity/principal.ts';
import { auditEvent } from './admin.ts';
import type { AccessContext } from './context.ts';

const notYours = () => forbidden('this belongs to another tenant');

/** Members of the tenant, and platform admins. */
const tenantMember = rule('tenant-member', { cache: 'no_cache' })((tenant: TenantRecord, _args, { principal }: AccessContext) =>
  tenant.id === principal.tenantId || isPlatformAdmin(principal) ? true : notYours(),
);

const tenantAdmin = rule('tenant-admin', { cache: 'no_cache' })((tenant: TenantRecord, _args, { principal }: AccessContext) =>
  administers(principal, tenant.id) ? true : notYours(),
);

const tenantArgument = rule('tenant-argument', { cache: 'strict' })((_parent, { id }: { id: string }, { principal }: AccessContext) =>
  id === principal.tenantId || isPlatformAdmin(principal) ? true : notYours(),
);

/** The key's tenant admins, platform admins, and the key itself. */
const keyReader = rule('key-reader', { cache: 'no_cache' })((key: ApiKeyRecord, _args, { principal }: AccessContext) =>
  administers(principal, key.tenantId) || principal.keyId === key.id ? true : notYours(),
);

const platformAdmin = rule('platform-admin', { cache: 'contextual' })((_parent, _args, { principal }: AccessContext) =>
  isPlatformAdmin(principal) ? true : forbidden('only platform admins may do this'),
);

type Verdict = true | { target: string | null; tenant: string | null };

/** An admin mutation's rule: on refusal, a DENIED audit event, then FORBIDDEN. */
function adminMutation(
  action: string,
  judge: (principal: Principal, args: { input: Record<string, unknown> }, context: AccessContext) => Promise<Verdict> | Verdict,
) {
  return rule(`admin:${action}`, { cache: 'no_cache' })(
    async (_parent, args: { input: Record<string, unknown> }, context: AccessContext) => {
      // An agent run acting for an admin does not administer: a model must not mint or revoke keys
      // (a new key's secret would land in its context, its run record and a provider's logs).
      const verdict =
        context.principal.actor === undefined ? await judge(context.principal, args, context) : { target: null, tenant: null };
      if (verdict === true) return true;
      await context.audit.record(auditEvent(context, action, { ...verdict, outcome: 'DENIED', reason: ErrorCode.FORBIDDEN }));
      return forbidden(`this key may not ${action.replace('.', ' ')} here`);
    },
  );
}

const mayCreateTenant = adminMutation('tenant.create', (principal, { input }) =>
  isPlatformAdmin(principal) ? true : { target: String(input.id), tenant: String(input.id) },
);

const mayCreateKey = adminMutation('apiKey.create', (principal, { input }) => {
  const tenantId = (input.tenantId as string | null | undefined) ?? principal.tenantId;
  return administers(principal, tenantId) ? true : { target: null, tenant: tenantId };
});

/** Updating or revoking a key: admins of its tenant. An unknown key is refused alike to others (no existence oracle). */
const mayChangeKey = (action: string) =>
  adminMutation(action, async (principal, { input }, { store }) => {
    const id = String(input.id);
    const key = await store.key(id);
    if (key ? administers(principal, key.tenantId) : isPlatformAdmin(principal)) return true;
    return { target: id, tenant: key?.tenantId ?? null };
  });

const admin = requireScope('admin');

export const permissions = subgraphShield({
  Query: {
    me: allow,
    tenants: platformAdmin,
    tenant: tenantArgument,
    apiKey: admin,
    auditLog: admin,
  },
  Mutation: {
    createTenant: mayCreateTenant,
    createApiKey: and(admin, mayCreateKey),
    updateApiKey: and(admin, mayChangeKey('apiKey.update')),
    revokeApiKey: and(admin, mayChangeKey('apiKey.revoke')),
  },
  Principal: allow,
  Tenant: { '*': tenantMember, apiKeys: tenantAdmin },
  ApiKey: keyReader,
  KeyLimits: allow,
  ApiKeyConnection: allow,
  ApiKeyEdge: allow,
  PageInfo: allow,
  CreateTenantPayload: allow,
  CreateApiKeyPayload: allow,
  UpdateApiKeyPayload: allow,
  RevokeApiKeyPayload: allow,
  AuditEventConnection: allow,
  AuditEventEdge: allow,
  AuditEvent: allow,
});
