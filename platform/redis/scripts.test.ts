import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { createRedis } from './client.ts';
import { luaScript } from './scripts.ts';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const redis = new Redis(url);
const monitor = new Redis(url);
afterAll(() => {
  redis.disconnect();
  monitor.disconnect();
});

describe('Lua scripts', () => {
  it('run by SHA, their text sent only when Redis does not know them yet', async () => {
    const key = `mg-test:${randomUUID()}:script`;
    // A script no one has loaded: its text is unique to this run.
    const script = luaScript(`-- ${key}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`);
    const seen: string[] = [];
    const watching = await monitor.monitor();
    const watched = new Promise<void>((resolve) => {
      watching.on('monitor', (_time: string, args: string[]) => {
        const command = args[0]!.toLowerCase();
        // MONITOR also shows the commands the script itself runs.
        if (!args.includes(key) || !command.startsWith('eval')) return;
        seen.push(command);
        if (seen.length === 4) resolve();
      });
    });
    expect(await script.run(redis, 1, key, 2)).toBe(2);
    expect(await script.run(redis, 1, key, 3)).toBe(5);
    expect(await script.run(redis, 1, key, 4)).toBe(9);
    await watched;
    watching.disconnect();
    expect(seen).toEqual(['evalsha', 'eval', 'evalsha', 'evalsha']);
    await redis.del(key);
  });

  it('load themselves once when several calls of a script no one has loaded leave in one auto-pipeline', async () => {
    const shipped = createRedis({ url }, pino({ level: 'silent' }));
    try {
      // As shipped it queues nothing while connecting.
      if (shipped.status !== 'ready') await once(shipped, 'ready');
      const key = `mg-test:${randomUUID()}:script`;
      const script = luaScript(`-- ${key}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`);
      const results = await Promise.all([2, 3, 4].map((amount) => script.run(shipped, 1, key, amount)));
      expect((results as number[]).sort((a, b) => a - b)).toEqual([2, 5, 9]);
      expect(await shipped.get(key)).toBe('9');
      await shipped.del(key);
    } finally {
      shipped.disconnect();
    }
  });
});
