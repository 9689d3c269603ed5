/**
 * Redis access. One ioredis client per process, created here from `redis` in modelgraph.yaml and
 * injected where it is needed, never imported as a global: one Redis (`url`), a Sentinel-managed
 * master (`sentinel`), or a Redis Cluster (`cluster`). Everything else sees a `RedisClient` and
 * does not know which: every key a command, transaction, pipeline or script touches together
 * shares a hash tag (keys.ts), so the same code runs on a Cluster without CROSSSLOT errors.
 */
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import { ConfigError, type Config } from '../config.ts';
import type { Logger } from '../logger.ts';

/** A single Redis (standalone or behind Sentinel) or a Redis Cluster: the same commands. */
export type RedisClient = Redis | Cluster;

export type RedisSettings = Pick<Config['redis'], 'url' | 'sentinel' | 'cluster' | 'username' | 'passwordEnv'>;

/** Whether the config names a Redis (else state stays in the process). */
export const redisConfigured = (settings: RedisSettings): boolean => Boolean(settings.url ?? settings.sentinel ?? settings.cluster);

const hostPort = (url: string) => {
  const { hostname, port } = new URL(url);
  return `${hostname}:${port || 6379}`;
};

/** Where the Redis is, for logs, messages and names: hosts, ports and database, never credentials. */
export function redisPlace(settings: RedisSettings): string {
  if (settings.sentinel) {
    const { masterName, sentinels, db } = settings.sentinel;
    return `sentinel master ${masterName}/${db} via ${sentinels.map(hostPort).join(',')}`;
  }
  if (settings.cluster) return `cluster ${settings.cluster.nodes.map(hostPort).join(',')}`;
  if (!settings.url) return 'none';
  const database = new URL(settings.url).pathname.slice(1) || '0';
  return `${hostPort(settings.url)}/${database}`;
}

/** What every connection shares, whatever the topology. */
const COMMON: RedisOptions = {
  // Fail commands fast while disconnected instead of queueing them behind a dead connection.
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  // Commands issued in the same tick leave in one write: under load a chat's rate-limit step,
  // token reservation, settlement and usage event share their socket writes with other chats'
  // instead of a system call each (ioredis's auto-pipelining; on a Cluster, one pipeline per
  // node). A few commands are never pipelined (MULTI, SCRIPT, INFO, CLIENT, SUBSCRIBE…) and may
  // go ahead of ones queued in the same tick; nothing here depends on the order of independent
  // commands. Subscriber connections (duplicates) turn it off.
  enableAutoPipelining: true,
};

function endpoint(url: string) {
  const parsed = new URL(url);
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(parsed.port || 6379),
    username: parsed.username ? decodeURIComponent(parsed.username) : undefined,
    password: parsed.password ? decodeURIComponent(parsed.password) : undefined,
    tls: parsed.protocol === 'rediss:',
  };
}

/**
 * The data nodes' credentials, for Sentinel and Cluster: `username` and the variable `passwordEnv`
 * names, else (a Cluster) those of the first node URL that has any. A named variable that is
 * unset stops the start, rather than connecting without a password and failing later.
 */
function credentials(
  settings: RedisSettings,
  env: NodeJS.ProcessEnv,
  fromUrls: { username?: string | undefined; password?: string | undefined }[] = [],
): Pick<RedisOptions, 'username' | 'password'> {
  if (settings.passwordEnv && !env[settings.passwordEnv]) {
    throw new ConfigError(`redis.passwordEnv: the environment variable ${settings.passwordEnv} is not set`);
  }
  const inUrl = fromUrls.find(({ username, password }) => username || password) ?? {};
  const username = settings.username ?? (settings.passwordEnv ? undefined : inUrl.username);
  const password = settings.passwordEnv ? env[settings.passwordEnv] : inUrl.password;
  return { ...(username && { username }), ...(password && { password }) };
}

function connect(settings: RedisSettings, env: NodeJS.ProcessEnv): RedisClient {
  if (settings.sentinel) {
    const { masterName, sentinels, db } = settings.sentinel;
    const nodes = sentinels.map(endpoint);
    const { username: sentinelUsername, password: sentinelPassword, tls } = nodes[0]!;
    return new Redis({
      ...COMMON,
      ...credentials(settings, env),
      sentinels: nodes.map(({ host, port }) => ({ host, port })),
      name: masterName,
      db,
      ...(sentinelUsername && { sentinelUsername }),
      ...(sentinelPassword && { sentinelPassword }),
      ...(tls && { enableTLSForSentinelMode: true, sentinelTLS: {}, tls: {} }),
      // Told of a new master by the sentinels' +switch-master, instead of when the old one stops answering.
      failoverDetector: true,
    });
  }
  if (settings.cluster) {
    const nodes = settings.cluster.nodes.map(endpoint);
    const { maxRetriesPerRequest, retryStrategy, ...commands } = COMMON;
    const options: ClusterOptions = {
      ...commands,
      clusterRetryStrategy: retryStrategy!,
      // While a master fails over, its slots answer CLUSTERDOWN or stop answering: retry shortly,
      // a few times, then fail the command (the callers' fail modes decide what that means).
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      maxRedirections: 16,
      slotsRefreshTimeout: 1_000,
      redisOptions: {
        maxRetriesPerRequest,
        ...credentials(settings, env, nodes),
        ...(nodes[0]!.tls && { tls: {} }),
      },
    };
    return new Cluster(
      nodes.map(({ host, port }) => ({ host, port })),
      options,
    );
  }
  return new Redis(settings.url!, COMMON);
}

export function createRedis(settings: RedisSettings, log: Logger, env: NodeJS.ProcessEnv = process.env): RedisClient {
  const redis = connect(settings, env);
  let reported = false;
  redis.on('error', (error: Error) => {
    if (!reported) log.warn({ err: { message: error.message }, redis: redisPlace(settings) }, 'redis unreachable; retrying');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info({ redis: redisPlace(settings) }, 'redis reachable again');
    reported = false;
  });
  return redis;
}

/**
 * Another connection to the same Redis, for subscriptions and blocking reads: it queues commands
 * while it reconnects (a subscription is re-made on the new connection) and sends them unpipelined.
 */
export function duplicateRedis(redis: RedisClient): RedisClient {
  const override = { enableOfflineQueue: true, enableAutoPipelining: false };
  return redis instanceof Cluster ? redis.duplicate([], override) : redis.duplicate(override);
}

/**
 * Calls `gap` whenever a subscriber connection may have missed messages (pub/sub keeps none): at
 * every 'ready' after the first (a reconnect, after which ioredis subscribes again). On a Cluster,
 * ioredis moves a subscription whose node died to another node without a new 'ready' and without
 * telling: that gap is not seen here (README, Redis in production).
 */
export function onSubscriberGap(feed: RedisClient, gap: () => void): void {
  let connectedBefore = false;
  feed.on('ready', () => {
    if (connectedBefore) gap();
    connectedBefore = true;
  });
}

/** True when Redis answers PING within `timeoutMs`. Never throws. */
export async function redisAnswers(redis: RedisClient, timeoutMs = 500): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  let onReady: (() => void) | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  // A client still connecting (just started, or reconnecting) gets the same time to become ready.
  const connected =
    redis.status === 'ready'
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          onReady = resolve;
          redis.once('ready', onReady);
        });
  const ping = connected.then(() =>
    redis.ping().then(
      (reply) => reply === 'PONG',
      () => false,
    ),
  );
  const answer = await Promise.race([ping, timeout]);
  clearTimeout(timer);
  if (onReady) redis.removeListener('ready', onReady);
  return answer;
}

/**
 * A subgraph's Redis, when the config names one: given a moment to connect so that its first
 * requests find it ready, but never blocking the start (commands fail fast until it answers).
 */
export async function openRedis(settings: RedisSettings, log: Logger): Promise<RedisClient | undefined> {
  if (!redisConfigured(settings)) return undefined;
  const redis = createRedis(settings, log.child({ component: 'redis' }));
  await redisAnswers(redis, 1_000);
  return redis;
}
