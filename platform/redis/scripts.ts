/**
 * Lua scripts run by their SHA1. `EVAL` sends a script's whole text with every call (and Redis
 * hashes it each time): on the hot path that was the largest single cost of a chat in the split
 * layout, the rate limit's and the token reservation's scripts written to the socket per request.
 * Here every call is `EVALSHA`; only when Redis answers `NOSCRIPT` (the first call after a start,
 * a restart or `SCRIPT FLUSH`) is the text sent, with `EVAL`, which also loads it.
 *
 * Not ioredis's `defineCommand`: its commands are missing from auto-pipelines made before they were
 * defined (ioredis 5.11 throws `pipeline[functionName] is not a function`), while `EVALSHA` and
 * `EVAL` are plain commands that auto-pipeline like any other.
 */
import { createHash } from 'node:crypto';
import type { RedisClient } from './client.ts';

export type ScriptArgument = string | number;

export interface LuaScript {
  /** As `redis.eval(script, numberOfKeys, ...keysAndArgs)`. */
  run(redis: RedisClient, numberOfKeys: number, ...keysAndArgs: ScriptArgument[]): Promise<unknown>;
}

export function luaScript(lua: string): LuaScript {
  const sha = createHash('sha1').update(lua).digest('hex');
  return {
    async run(redis, numberOfKeys, ...keysAndArgs) {
      try {
        return await redis.evalsha(sha, numberOfKeys, ...keysAndArgs);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        return redis.eval(lua, numberOfKeys, ...keysAndArgs);
      }
    },
  };
}
