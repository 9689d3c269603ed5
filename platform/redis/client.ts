/**
 * Redis access. One ioredis client per process, created here and injected where it is needed,
 * never imported as a global. Until a capability stores state in Redis, the router uses it for
 * readiness only: a replica whose Redis is unreachable reports not ready.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../logger.ts';

export function createRedis(url: string, log: Logger): Redis {
  const redis = new Redis(url, {
    lazyConnect: false,
    // Fail commands fast while disconnected instead of queueing them behind a dead connection.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
    // Commands issued in the same tick leave in one write: under load a chat's rate-limit step,
    // token reservation, settlement and usage event share their socket writes with other chats'
    // instead of a system call each (ioredis's auto-pipelining). A few commands are never
    // pipelined (MULTI, SCRIPT, INFO, CLIENT, SUBSCRIBE…) and may go ahead of ones queued in the
    // same tick; nothing here depends on the order of independent commands. Subscriber
    // connections (duplicates) turn it off.
    enableAutoPipelining: true,
  });
  let reported = false;
  redis.on('error', (error: Error) => {
    if (!reported) log.warn({ err: { message: error.message } }, 'redis unreachable; retrying');
    reported = true;
  });
  redis.on('ready', () => {
    if (reported) log.info('redis reachable again');
    reported = false;
  });
  return redis;
}

/** True when Redis answers PING within `timeoutMs`. Never throws. */
export async function redisAnswers(redis: Redis, timeoutMs = 500): Promise<boolean> {
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
 * A subgraph's Redis, when `redis.url` is set: given a moment to connect so that its first requests
 * find it ready, but never blocking the start (commands fail fast until it answers).
 */
export async function openRedis(url: string | undefined, log: Logger): Promise<Redis | undefined> {
  if (!url) return undefined;
  const redis = createRedis(url, log.child({ component: 'redis' }));
  await redisAnswers(redis, 1_000);
  return redis;
}
