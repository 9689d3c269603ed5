/**
 * Once per test run: a three-master Redis Cluster on loopback that the Redis contract suites run
 * against besides the single Redis (`REDIS_URL`). Its nodes' URLs reach the tests as
 * `inject('redisCluster')` (tests/support/shared-redis-cluster.ts).
 */
import type { TestProject } from 'vitest/node';
import { startRedisCluster } from './redis-cluster.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    redisCluster: string[];
  }
}

export default async function setup(project: TestProject) {
  const cluster = await startRedisCluster({ masters: 3 });
  project.provide(
    'redisCluster',
    cluster.nodes.map(({ url }) => url),
  );
  return () => cluster.stop();
}
