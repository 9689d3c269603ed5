import type { AuditLog } from '../../platform/access/audit-log.ts';
import type { Config } from '../../platform/config.ts';
import type { RequestContext } from '../../platform/serving/subgraph-server.ts';
import type { ModelCatalog } from '../../providers/catalog.ts';
import type { AgentDirectory } from './definitions.ts';
import type { RunStore } from './run-store.ts';
import type { Runner } from './runner.ts';

export interface AgentsContext extends RequestContext {
  /** Agent definitions: the config's and the tenants' own. */
  directory: AgentDirectory;
  /** Runs and their events (Redis, shared by every replica; memory in one process without Redis). */
  runs: RunStore;
  /** Executes the runs started on this replica. */
  runner: Runner;
  settings: Config['agents'];
  /** The models agents may name (for checks and allow-lists; calls go through the router). */
  catalog: ModelCatalog;
  /** Where agent definition changes are recorded. */
  audit: AuditLog;
  /** Whether a tenant exists (the access store). */
  tenantExists(tenantId: string): Promise<boolean>;
}
