/**
 * The run's Redis Cluster (tests/support/global-setup.ts), reached as modelgraph reaches one
 * (`redis.cluster` through platform/redis/client.ts), for the contract suites' Cluster cases.
 */
import pino from 'pino';
import { inject } from 'vitest';
import { createRedis, redisAnswers, type RedisClient } from '../../platform/redis/client.ts';

export const sharedClusterNodes = (): string[] => inject('redisCluster');

/** A client of the shared cluster, ready (as shipped, it queues nothing while connecting). */
export async function connectSharedCluster(): Promise<RedisClient> {
  const redis = createRedis({ cluster: { nodes: sharedClusterNodes() } }, pino({ level: 'silent' }));
  if (!(await redisAnswers(redis, 10_000))) throw new Error('the shared Redis Cluster did not answer');
  return redis;
}
