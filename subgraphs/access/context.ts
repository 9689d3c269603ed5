import type { AccessStore } from '../../platform/access/access-store.ts';
import type { AuditLog } from '../../platform/access/audit-log.ts';
import type { RequestContext } from '../../platform/serving/subgraph-server.ts';

export interface AccessContext extends RequestContext {
  store: AccessStore;
  audit: AuditLog;
}
