/**
 * Redis as it runs in production, on loopback: a Redis Cluster of `redis-server` processes in
 * cluster mode joined by `redis-cli --cluster create`, and a master with a replica watched by a
 * Sentinel (`redis-server --sentinel`). Each node keeps its files in a temporary folder; a test can
 * kill a node (SIGKILL, as in a crash) to make the cluster or the sentinel promote a replica.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './process.ts';

const run = promisify(execFile);

/** Every node started here, killed when the test process exits however it exits. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface RedisNode {
  port: number;
  url: string;
  /** Kills it at once (SIGKILL), as a crash would. */
  kill(): Promise<void>;
}

interface Started extends RedisNode {
  child: ChildProcess;
}

async function startNode(dir: string, name: string, args: string[]): Promise<Started> {
  const port = await freePort();
  const child = spawn('redis-server', [...args, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', ''], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let output = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (/Ready to accept connections|Sentinel ID is/.test(output)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`redis-server ${name} exited (${code}): ${output.slice(-500)}`)));
  }).catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });
  child.stdout!.resume();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    child,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Resolves when `check` does, polling (a cluster's or a sentinel's state is only seen by asking). */
export async function until<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await check().catch(() => undefined);
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function ask<T>(url: string, command: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return await command(redis);
  } finally {
    redis.disconnect();
  }
}

export interface TestRedisCluster {
  /** Every node's URL, masters first. */
  nodes: RedisNode[];
  masters: RedisNode[];
  /** The master that holds a key's slot now. */
  masterOf(key: string): Promise<RedisNode>;
  /** Resolves when every slot is served by a live master, every live node says so, and every replica is in sync. */
  healthy(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `masters` masters with `replicasPerMaster` replicas each. A short node timeout (1 s) so that a
 * killed master's replica takes over within a few seconds.
 */
export async function startRedisCluster({ masters = 3, replicasPerMaster = 0 } = {}): Promise<TestRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'mg-redis-cluster-'));
  const started: Started[] = [];
  try {
    for (let i = 0; i < masters * (1 + replicasPerMaster); i++) {
      const busPort = await freePort();
      started.push(
        await startNode(dir, `node ${i}`, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${i}.conf`),
          '--cluster-port',
          String(busPort),
          '--cluster-node-timeout',
          '1000',
          '--dbfilename',
          `dump-${i}.rdb`,
          '--appendonly',
          'no',
          // A replica that never synced cannot be promoted: sync at once, not after the default 5 s.
          '--repl-diskless-sync-delay',
          '0',
        ]),
      );
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...started.map(({ port }) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      String(replicasPerMaster),
      '--cluster-yes',
    ]);
  } catch (error) {
    await stopAll(started, dir);
    throw error;
  }
  const alive = () => started.filter(({ child }) => child.exitCode === null && child.signalCode === null);
  const slots = async () => {
    const [node] = alive();
    return (await ask(node!.url, (redis) => redis.cluster('SLOTS'))) as unknown as [number, number, [string, number]][];
  };
  const healthy = async () => {
    await until(async () => {
      const live = new Set(alive().map(({ port }) => port));
      // Every slot's master is a live node…
      if (!(await slots()).every(([, , [, port]]) => live.has(port))) return undefined;
      // …every live node agrees the cluster is whole, and every replica has its master's data.
      for (const node of alive()) {
        const info = await ask(node.url, (redis) => redis.cluster('INFO'));
        if (!/cluster_state:ok/.test(info) || !/cluster_slots_ok:16384/.test(info)) return undefined;
        const replication = await ask(node.url, (redis) => redis.info('replication'));
        if (replication.includes('role:slave') && !replication.includes('master_link_status:up')) return undefined;
      }
      return true;
    }, 'the cluster to serve every slot');
  };
  await healthy().catch(async (error: unknown) => {
    await stopAll(started, dir);
    throw error;
  });
  const initialMasters = started.slice(0, masters);
  return {
    nodes: started,
    masters: initialMasters,
    healthy,
    async masterOf(key) {
      const [node] = alive();
      const slot = await ask(node!.url, (redis) => redis.cluster('KEYSLOT', key));
      const [, , [, port]] = (await slots()).find(([from, to]) => slot >= from && slot <= to)!;
      return started.find((candidate) => candidate.port === port)!;
    },
    stop: () => stopAll(started, dir),
  };
}

async function stopAll(nodes: RedisNode[], dir: string): Promise<void> {
  for (const node of nodes) await node.kill();
  rmSync(dir, { recursive: true, force: true });
}

export interface TestRedisSentinel {
  masterName: string;
  master: RedisNode;
  replica: RedisNode;
  sentinel: RedisNode;
  /** The port of the master the sentinel names now. */
  currentMasterPort(): Promise<number>;
  stop(): Promise<void>;
}

/** A master, its replica, and one sentinel (quorum 1) that fails over 1 s after the master stops answering. */
export async function startRedisSentinel(): Promise<TestRedisSentinel> {
  const dir = mkdtempSync(join(tmpdir(), 'mg-redis-sentinel-'));
  const started: RedisNode[] = [];
  try {
    return await sentinelIn(dir, started);
  } catch (error) {
    await stopAll(started, dir);
    throw error;
  }
}

async function sentinelIn(dir: string, started: RedisNode[]): Promise<TestRedisSentinel> {
  const masterName = 'mg-test';
  const master = await startNode(dir, 'master', ['--dbfilename', 'master.rdb', '--appendonly', 'yes', '--appendfilename', 'master.aof']);
  started.push(master);
  const replica = await startNode(dir, 'replica', [
    '--dbfilename',
    'replica.rdb',
    '--appendonly',
    'yes',
    '--appendfilename',
    'replica.aof',
    '--replicaof',
    '127.0.0.1',
    String(master.port),
  ]);
  started.push(replica);
  await until(
    async () => ((await ask(replica.url, (redis) => redis.info('replication'))).includes('master_link_status:up') ? true : undefined),
    'the replica to follow its master',
  );
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${masterName} 1000`,
      `sentinel failover-timeout ${masterName} 5000`,
      `sentinel parallel-syncs ${masterName} 1`,
      '',
    ].join('\n'),
  );
  const sentinel = await startNode(dir, 'sentinel', [conf, '--sentinel']);
  started.push(sentinel);
  const currentMasterPort = async () =>
    Number(((await ask(sentinel.url, (redis) => redis.call('SENTINEL', 'get-master-addr-by-name', masterName))) as [string, string])[1]);
  await until(async () => {
    const replicas = (await ask(sentinel.url, (redis) => redis.call('SENTINEL', 'replicas', masterName))) as string[][];
    return replicas.length > 0 ? true : undefined;
  }, 'the sentinel to find the replica');
  return {
    masterName,
    master,
    replica,
    sentinel,
    currentMasterPort,
    stop: () => stopAll([sentinel, replica, master], dir),
  };
}
