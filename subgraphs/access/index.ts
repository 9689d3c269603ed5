/** The access subgraph: tenants, API keys, the caller's principal and the audit log. */
import type { AccessServices } from '../../platform/access/access-services.ts';
import type { Config } from '../../platform/config.ts';
import type { IdentityTokens } from '../../platform/identity/identity-token.ts';
import type { Logger } from '../../platform/logger.ts';
import { createRegistry } from '../../platform/metrics.ts';
import { startSubgraphServer, type RunningSubgraph } from '../../platform/serving/subgraph-server.ts';
import type { AccessContext } from './context.ts';
import { permissions } from './permissions.ts';
import { resolvers } from './resolvers.ts';

export const ACCESS_SCHEMA_FILE = new URL('../../schema/access.graphql', import.meta.url);

export interface AccessSubgraphOptions {
  withProcessMetrics: boolean;
  identity: IdentityTokens;
  access: AccessServices;
}

export async function startAccessSubgraph(
  config: Config,
  log: Logger,
  { withProcessMetrics, identity, access }: AccessSubgraphOptions,
): Promise<RunningSubgraph> {
  const registry = createRegistry('access', withProcessMetrics);
  return startSubgraphServer<AccessContext>(
    { name: 'access', config, log, registry, identity },
    {
      schemaFile: ACCESS_SCHEMA_FILE,
      resolvers,
      permissions,
      extendContext: (base) => ({ ...base, store: access.store, audit: access.audit }),
    },
  );
}
