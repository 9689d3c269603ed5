/**
 * Reading usage needs `usage:read`; which tenant's is decided by the resolvers (a tenant's own
 * only, unless a platform admin asks), on the root field and the entity fields alike.
 */
import { allow, requireScope, subgraphShield } from '../../platform/identity/authorization.ts';

const readUsage = requireScope('usage:read');

export const permissions = subgraphShield({
  Query: { usage: readUsage },
  Tenant: { id: allow, usage: readUsage, budget: readUsage },
  TenantBudget: allow,
  ApiKey: { id: allow, usage: readUsage },
  Model: { id: allow, usage: readUsage },
  UsageReport: allow,
  UsageTotals: allow,
  UsageRow: allow,
});
