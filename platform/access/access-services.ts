/**
 * The state that authentication and administration share: the tenant/key store, the audit log and
 * the identity-token secret. With Redis they are shared by every replica; without it they live in
 * this process, which is only coherent when one process runs the router and every subgraph
 * (`modelgraph all`), so split roles refuse to start without Redis.
 */
import { MemoryAccessStore, RedisAccessStore, type AccessStore } from './access-store.ts';
import { MemoryAuditLog, RedisAuditLog, type AuditLog } from './audit-log.ts';
import { ConfigError, type Config } from '../config.ts';
import { IdentityTokens, randomIdentitySecret } from '../identity/identity-token.ts';
import type { Logger } from '../logger.ts';
import { createRedis, redisAnswers, redisConfigured, redisPlace } from '../redis/client.ts';

export interface AccessServices {
  store: AccessStore;
  audit: AuditLog;
  close(): Promise<void>;
}

const MIN_SECRET_LENGTH = 32;

/** Redis must answer within this time at start: without it no key can be checked. */
const REDIS_START_TIMEOUT_MS = 5_000;

export async function createAccessServices(config: Config, log: Logger, singleProcess: boolean): Promise<AccessServices> {
  if (!redisConfigured(config.redis) && !singleProcess) {
    throw new ConfigError(
      'redis (url, sentinel or cluster; or REDIS_URL) is required when the router and the access subgraph run as separate processes: they share keys through it',
    );
  }
  const redis = redisConfigured(config.redis) ? createRedis(config.redis, log.child({ component: 'redis' })) : undefined;
  if (redis && !(await redisAnswers(redis, REDIS_START_TIMEOUT_MS))) {
    redis.disconnect();
    throw new ConfigError(
      `Redis (${redisPlace(config.redis)}) did not answer within ${REDIS_START_TIMEOUT_MS / 1000} s; API keys live there, so the router and the access subgraph cannot start without it`,
    );
  }
  const { keyPrefix } = config.redis;
  const store = redis ? new RedisAccessStore(redis, keyPrefix) : new MemoryAccessStore();
  const audit = redis
    ? new RedisAuditLog(redis, keyPrefix, config.access.auditMaxEvents)
    : new MemoryAuditLog(config.access.auditMaxEvents);
  return {
    store,
    audit,
    async close() {
      await store.close();
      redis?.disconnect();
    },
  };
}

/** Identity tokens signed with the configured secret, or (one process only) a random one. */
export function createIdentityTokens(config: Config, env: NodeJS.ProcessEnv, singleProcess: boolean): IdentityTokens {
  const name = config.access.identitySecretEnv;
  const secret = env[name];
  if (secret === undefined || secret === '') {
    if (singleProcess) return new IdentityTokens(randomIdentitySecret());
    throw new ConfigError(
      `${name} must hold the identity-token secret (${MIN_SECRET_LENGTH}+ characters, the same for the router and every subgraph)`,
    );
  }
  if (secret.length < MIN_SECRET_LENGTH) throw new ConfigError(`${name} must be at least ${MIN_SECRET_LENGTH} characters`);
  return new IdentityTokens(secret);
}
