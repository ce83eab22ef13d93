import { BUDGET_WINDOW_MS, type RateLimiter, type TakeMode } from "../ports";
import type { RedisClient } from "./connect";

// One key per caller × category × minute (the script touches only KEYS[1], so it runs on any
// topology). ARGV: the limit, then each take's (n, whole) in arrival order. Atomically grants each
// take in turn, exactly as if they had run one by one: up to n of what is left, or (whole = 1) n or
// nothing; returns the grants.
const TAKE = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local grants = {}
local total = 0
for i = 2, #ARGV, 2 do
  local want = tonumber(ARGV[i])
  local grant = math.max(0, math.min(want, limit - used - total))
  if ARGV[i + 1] == '1' and grant < want then grant = 0 end
  grants[#grants + 1] = grant
  total = total + grant
end
if total > 0 then
  redis.call('INCRBY', KEYS[1], total)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
return grants`;

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
    mode: TakeMode;
    resolve: (granted: number) => void;
  }
  const waiting = new Map<string, { limit: number; wants: Want[] }>();

  async function settle(key: string, limitPerMinute: number, wants: Want[]): Promise<void> {
    const minute = Math.floor(Date.now() / BUDGET_WINDOW_MS);
    let grants: unknown;
    try {
      const args = wants.flatMap((w) => [w.n, w.mode === "all" ? 1 : 0]);
      grants = await redis.eval(TAKE, 1, `${prefix}rl:${key}:${minute}`, limitPerMinute, ...args);
    } catch (err) {
      onFallback(err);
      for (const w of wants) w.resolve(await fallback.take(key, limitPerMinute, w.n, w.mode));
      return;
    }
    // A reply of another shape grants nothing (fail closed).
    const list = Array.isArray(grants) ? grants : [];
    wants.forEach((w, i) => w.resolve(Math.min(w.n, Math.max(0, Number(list[i]) || 0))));
  }

  return {
    take(key, limitPerMinute, n, mode = "up-to") {
      return new Promise<number>((resolve) => {
        const batchKey = `${key}\u0000${limitPerMinute}`;
        const pending = waiting.get(batchKey);
        if (pending) {
          pending.wants.push({ n, mode, resolve });
          return;
        }
        waiting.set(batchKey, { limit: limitPerMinute, wants: [{ n, mode, resolve }] });
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
