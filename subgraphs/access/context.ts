import type { AccessStore } from '../../platform/access-store.ts';
import type { AuditLog } from '../../platform/audit-log.ts';
import type { RequestContext } from '../../platform/subgraph-server.ts';

export interface AccessContext extends RequestContext {
  store: AccessStore;
  audit: AuditLog;
}
