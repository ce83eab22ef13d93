import type { RateLimiter } from "../ports";
import type { RedisClient } from "./connect";

// One key per caller × category × minute (the script touches only KEYS[1], so it runs on any
// topology). Atomically reserve up to n units in this minute's window; returns how many were granted.
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
  redis: RedisClient,
  prefix: string,
  fallback: RateLimiter,
  onFallback: (err: unknown) => void = () => undefined,
): RateLimiter {
  /** Takes of one key within one event-loop turn share one round trip. */
  interface Want {
    n: number;
    resolve: (granted: number) => void;
  }
  const waiting = new Map<string, { limit: number; wants: Want[] }>();

  async function settle(key: string, limitPerMinute: number, wants: Want[]): Promise<void> {
    const total = wants.reduce((sum, w) => sum + w.n, 0);
    const minute = Math.floor(Date.now() / 60_000);
    let granted: number;
    try {
      granted = Number(await redis.eval(TAKE, 1, `${prefix}rl:${key}:${minute}`, limitPerMinute, total));
    } catch (err) {
      onFallback(err);
      for (const w of wants) w.resolve(await fallback.take(key, limitPerMinute, w.n));
      return;
    }
    // First come, first served, exactly as if the takes had gone one by one.
    for (const w of wants) {
      const mine = Math.min(w.n, granted);
      granted -= mine;
      w.resolve(mine);
    }
  }

  return {
    take(key, limitPerMinute, n) {
      return new Promise<number>((resolve) => {
        const batchKey = `${key}\u0000${limitPerMinute}`;
        const pending = waiting.get(batchKey);
        if (pending) {
          pending.wants.push({ n, resolve });
          return;
        }
        waiting.set(batchKey, { limit: limitPerMinute, wants: [{ n, resolve }] });
        setImmediate(() => {
          const batch = waiting.get(batchKey)!;
          waiting.delete(batchKey);
          // Never leave a caller waiting; if even the fallback failed, grant nothing (fail closed).
          settle(key, batch.limit, batch.wants).catch(() => batch.wants.forEach((w) => w.resolve(0)));
        });
      });
    },
    close: () => fallback.close(),
  };
}
