import type { Redis } from "ioredis";
import type { RateLimiter } from "../ports";

// Atomically reserve up to n units in this minute's window; returns how many were granted.
const TAKE = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local grant = math.max(0, math.min(want, limit - used))
if grant > 0 then
  redis.call('INCRBY', KEYS[1], grant)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
return grant`;

/**
 * Shared budgets in Redis. When Redis is unreachable each instance enforces its share
 * (`fallback`, sized limit / expected instances) rather than no limit at all.
 */
export function createRedisRateLimiter(
  redis: Redis,
  prefix: string,
  fallback: RateLimiter,
  onFallback: (err: unknown) => void = () => undefined,
): RateLimiter {
  return {
    async take(key, limitPerMinute, n) {
      const minute = Math.floor(Date.now() / 60_000);
      try {
        const granted = await redis.eval(TAKE, 1, `${prefix}rl:${key}:${minute}`, limitPerMinute, n);
        return Number(granted);
      } catch (err) {
        onFallback(err);
        return fallback.take(key, limitPerMinute, n);
      }
    },
    close: () => fallback.close(),
  };
}
