/**
 * Lua scripts run by their SHA1. `EVAL` sends a script's whole text with every call (and Redis
 * hashes it each time): on the hot path that was the largest single cost of a chat in the split
 * layout, the rate limit's and the token reservation's scripts written to the socket per request.
 * ioredis's `defineCommand` does the standard dance instead: the text once per connection (`EVAL`,
 * which also loads it), then `EVALSHA`, and the text again only if Redis answers `NOSCRIPT` (after a
 * restart or `SCRIPT FLUSH`).
 */
import type { Redis } from 'ioredis';

export type ScriptArgument = string | number;

export interface LuaScript {
  /** As `redis.eval(script, numberOfKeys, ...keysAndArgs)`. */
  run(redis: Redis, numberOfKeys: number, ...keysAndArgs: ScriptArgument[]): Promise<unknown>;
}

type DefinedCommand = (numberOfKeys: number, ...keysAndArgs: ScriptArgument[]) => Promise<unknown>;

/** `name` is the command's name on each client it runs on; one per script. */
export function luaScript(name: string, lua: string): LuaScript {
  const definedOn = new WeakSet<Redis>();
  return {
    run(redis, numberOfKeys, ...keysAndArgs) {
      if (!definedOn.has(redis)) {
        // No numberOfKeys here: each call passes its own, as EVAL takes it.
        redis.defineCommand(name, { lua });
        definedOn.add(redis);
      }
      const command = (redis as unknown as Record<string, DefinedCommand>)[name]!;
      return command.call(redis, numberOfKeys, ...keysAndArgs);
    },
  };
}
