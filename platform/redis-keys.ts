/**
 * Every Redis key and channel modelgraph uses, built here and nowhere else. Keys start with the
 * deployment's prefix (`redis.keyPrefix`). Keys that one command or transaction updates together
 * share a hash tag (`{access}`), so they live in one Redis Cluster slot.
 */

/** Access data: tenants, API keys and the hash → key index, updated together in MULTI blocks. */
export const accessKeys = (prefix: string) => ({
  tenant: (tenantId: string) => `${prefix}{access}:tenant:${tenantId}`,
  /** Sorted set of tenant ids by creation time. */
  tenants: () => `${prefix}{access}:tenants`,
  apiKey: (keyId: string) => `${prefix}{access}:key:${keyId}`,
  /** SHA-256 of a presented secret → key id. */
  apiKeyByHash: (hash: string) => `${prefix}{access}:key-hash:${hash}`,
  /** Sorted set of a tenant's key ids by creation time. */
  tenantKeys: (tenantId: string) => `${prefix}{access}:tenant-keys:${tenantId}`,
  /** Pub/sub: the id of every key that was updated or revoked, so replicas drop cached copies. */
  changes: () => `${prefix}access:changes`,
});

/** The audit log: one Redis Stream per deployment. */
export const auditStreamKey = (prefix: string) => `${prefix}audit`;

/** A rate limit's GCRA state: one key per field coordinate, scope and holder (key id, tenant, address). */
export const rateLimitKey = (prefix: string, coordinate: string, per: string, holder: string) => `${prefix}rl:${coordinate}:${per}:${holder}`;

/**
 * Usage: the event stream every model call writes to, and the usage subgraph's aggregates. The
 * counting script touches the counted set, a row and an hour index together: one `{usage}` tag.
 */
export const usageKeys = (prefix: string) => ({
  stream: () => `${prefix}usage:events`,
  /** The consumer group that aggregates the stream. */
  group: 'usage-aggregator',
  /** Event ids already counted (per UTC day of the event), so a redelivery never counts twice. */
  counted: (day: string) => `${prefix}{usage}:counted:${day}`,
  /** One hash of sums per (hour, row key); the row key names tenant, key, model, provider, tags. */
  row: (hour: string, rowKey: string) => `${prefix}{usage}:row:${hour}:${rowKey}`,
  /** The row keys that have sums in an hour. */
  hourIndex: (hour: string) => `${prefix}{usage}:hour:${hour}`,
});
