/**
 * The first platform-admin key, so a fresh deployment can be administered at all. From the
 * environment (`MODELGRAPH_BOOTSTRAP_KEY`, any 32+ character string; a new value replaces an
 * earlier bootstrap key, and a revoked one stays revoked across restarts), or, when none is set and none exists yet, a new one that the caller prints once.
 * Several replicas starting together agree on one generated key (only the first write wins).
 */
import { NO_LIMITS, newKeySecret, type AccessStore, type ApiKeyRecord } from '../../platform/access/access-store.ts';
import type { AuditLog } from '../../platform/access/audit-log.ts';
import { ConfigError } from '../../platform/config.ts';
import { PLATFORM_TENANT, SCOPES } from '../../platform/identity/principal.ts';

export const BOOTSTRAP_KEY_ID = 'bootstrap';
const MIN_LENGTH = 32;

function bootstrapRecord(now: Date): ApiKeyRecord {
  return {
    id: BOOTSTRAP_KEY_ID,
    tenantId: PLATFORM_TENANT,
    name: 'bootstrap platform admin',
    scopes: [...SCOPES],
    allowedModels: null,
    limits: NO_LIMITS,
    createdAt: now.toISOString(),
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
  };
}

/** Ensures the platform tenant and a bootstrap key; answers the key's secret when it made a new one. */
export async function bootstrapAccess(
  store: AccessStore,
  audit: AuditLog,
  fromEnv: string | undefined,
  envName: string,
): Promise<string | undefined> {
  const now = new Date();
  await store.createTenant({ id: PLATFORM_TENANT, name: 'Platform operators', createdAt: now.toISOString() });
  const record = (reason: string) =>
    audit.record({
      actor: 'modelgraph',
      actorTenant: PLATFORM_TENANT,
      action: 'apiKey.bootstrap',
      target: BOOTSTRAP_KEY_ID,
      tenant: PLATFORM_TENANT,
      sourceAddress: null,
      outcome: 'SUCCESS',
      reason,
    });
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < MIN_LENGTH) throw new ConfigError(`${envName} must be at least ${MIN_LENGTH} characters`);
    // Stored once per value: a restart neither changes it nor brings back a revoked one.
    if (!(await store.keyBySecret(fromEnv))) {
      await store.putKey(bootstrapRecord(now), fromEnv);
      await record(`set from ${envName}`);
    }
    return undefined;
  }
  const { secret } = newKeySecret(BOOTSTRAP_KEY_ID);
  if (!(await store.putKey(bootstrapRecord(now), secret, { onlyIfAbsent: true }))) return undefined;
  await record('generated at first start');
  return secret;
}
