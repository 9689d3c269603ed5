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
export const rateLimitKey = (prefix: string, coordinate: string, per: string, holder: string) =>
  `${prefix}rl:${coordinate}:${per}:${holder}`;

/** The running operations' leases of a key or a tenant (router/concurrency-limiter.ts). */
export const concurrencyKey = (prefix: string, scope: 'key' | 'tenant', holder: string) => `${prefix}cc:${scope}:${holder}`;

/**
 * Meter buckets (platform/metering/meter.ts): tokens per minute of a key, a tenant or a model version
 * (`id@version`), and nano-dollars per UTC day (`YYYY-MM-DD`) or month (`YYYY-MM`) of a key or a
 * tenant. One reservation script updates every bucket of a call: one `{meter}` tag.
 */
export const meterKeys = (prefix: string) => ({
  /** `minute`: whole minutes since the epoch. */
  tokensPerMinute: (scope: 'key' | 'tenant' | 'model', holder: string, minute: string) =>
    `${prefix}{meter}:tpm:${scope}:${holder}:${minute}`,
  // `usdn`, not the micro-dollar buckets' `usd`: a replica of either unit never reads the other's
  // counts during a rolling upgrade (the old keys expire with their window).
  usd: (scope: 'key' | 'tenant', holder: string, window: string) => `${prefix}{meter}:usdn:${scope}:${holder}:${window}`,
});

/**
 * The response cache (platform/redis/response-cache.ts) holds entries by name: a whole chat answer
 * by the SHA-256 of its normalised request, a vector by the version, dimensions and SHA-256 of its
 * text, each within a scope (`tenant:<id>`, or `shared`). The memory cache keys entries by these
 * names; in Redis an entry's key is `responseCacheKey(prefix, name)`.
 */
export const cacheEntryNames = {
  /** Whose entries a caller may read: its tenant's, unless the deployment shares one cache (`cache.shareAcrossTenants`). */
  scope: (shared: boolean, tenantId: string) => (shared ? 'shared' : `tenant:${tenantId}`),
  chat: (scope: string, digest: string) => `chat:${scope}:${digest}`,
  vector: (scope: string, version: string, dimensions: number, digest: string) => `emb:${scope}:${version}:${dimensions}:${digest}`,
};

export const responseCacheKey = (prefix: string, name: string) => `${prefix}${name}`;

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

/**
 * Agents: definitions per tenant, and runs. A run's state hash, its event stream and its lease
 * share a `{run:<id>}` tag, so the script that appends an event and updates the state is atomic;
 * tenants' definitions and run indexes live under `{agents}`.
 */
export const agentKeys = (prefix: string) => ({
  /** A tenant's agent definitions: one hash, agent name → definition JSON. */
  definitions: (tenantId: string) => `${prefix}{agents}:definitions:${tenantId}`,
  /** Sorted set of a tenant's run ids by creation time (ms). */
  tenantRuns: (tenantId: string) => `${prefix}{agents}:runs:${tenantId}`,
  /** Hash: `state` (the run's JSON snapshot), `cursor` (the last event it reflects), `cancel` (a requested cancellation's reason). */
  run: (runId: string) => `${prefix}{run:${runId}}:state`,
  /** Stream: the run's events, in order; the entry id is the event's cursor. */
  runEvents: (runId: string) => `${prefix}{run:${runId}}:events`,
  /** Present while the process running the run renews it; gone when that process stopped. */
  runLease: (runId: string) => `${prefix}{run:${runId}}:lease`,
  /** Pub/sub: notified (message: the new cursor) when a run has a new event. */
  runChannel: (runId: string) => `${prefix}run-events:${runId}`,
  /** Pub/sub: run ids whose cancellation was requested, for the process running each. */
  cancellations: () => `${prefix}run-cancellations`,
});
