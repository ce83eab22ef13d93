import type { RedisClient } from "../../src/storage/redis/connect";
import { connectRedis, parseRedisUrl, readyWithin } from "../../src/storage/redis/connect";
import { createRedisRateLimiter } from "../../src/storage/redis/redis-rate-limiter";
import { createLocalRateLimiter } from "../../src/storage/local-rate-limiter";
import type { RateLimiter, TakeMode } from "../../src/storage/ports";
import { dropRedisPrefix, newRedisPrefix, REDIS_URL } from "../helpers/backends";

/**
 * Both budgets — Redis's (shared by every instance) and the in-process one (development, and
 * Redis's fallback) — grant takes as if they ran one by one: "up-to" gets what is left, "all" gets
 * everything or nothing and then leaves the rest to the next take.
 */
describe.each(["redis", "local"] as const)("rate budgets (%s)", (kind) => {
  let redis: RedisClient | undefined;
  let limiter: RateLimiter;
  const prefix = newRedisPrefix();
  let fallbacks = 0;
  // Fixed clock for the local one; Redis's window is the real minute, so a test waits out a boundary.
  const clock = { now: Date.UTC(2026, 11, 4, 12, 0, 10) };

  beforeAll(async () => {
    if (kind === "redis") {
      redis = connectRedis(parseRedisUrl(REDIS_URL));
      expect(await readyWithin(redis, 5000)).toBe(true);
      limiter = createRedisRateLimiter(redis, prefix, createLocalRateLimiter(), () => fallbacks++);
    } else limiter = createLocalRateLimiter(1, () => clock.now);
  });
  afterAll(async () => {
    await limiter.close();
    redis?.disconnect();
    await dropRedisPrefix(prefix);
  });
  /** Not within 3 s of a minute boundary, so every take of one test falls in one window. */
  const sameMinute = async () => {
    const into = Date.now() % 60_000;
    if (into > 57_000) await new Promise((r) => setTimeout(r, 60_000 - into + 100));
  };
  let n = 0;
  const key = () => `test:${kind}:${n++}`;

  it("an all-or-nothing take that does not fit gets nothing and leaves the rest", async () => {
    await sameMinute();
    const k = key();
    expect(await limiter.take(k, 40, 30, "all")).toBe(30);
    expect(await limiter.take(k, 40, 30, "all")).toBe(0); // 10 left, 30 asked
    expect(await limiter.take(k, 40, 10, "all")).toBe(10); // the refusal took none of them
    expect(await limiter.take(k, 40, 1, "all")).toBe(0);
  });

  it("an up-to take gets what is left (the default)", async () => {
    await sameMinute();
    const k = key();
    expect(await limiter.take(k, 40, 30)).toBe(30);
    expect(await limiter.take(k, 40, 30)).toBe(10);
    expect(await limiter.take(k, 40, 30, "up-to")).toBe(0);
  });

  it("takes arriving together are granted in order, each by its own mode", async () => {
    await sameMinute();
    const k = key();
    const wants: [number, TakeMode][] = [
      [25, "all"], // 25 of 40
      [20, "all"], // 15 left: nothing
      [20, "up-to"], // 15
      [1, "all"], // 0 left: nothing
      [5, "up-to"], // 0
    ];
    // One event-loop turn, so Redis's limiter sends them in one script run.
    const granted = await Promise.all(wants.map(([n, mode]) => limiter.take(k, 40, n, mode)));
    expect(granted).toEqual([25, 0, 15, 0, 0]);
    if (redis) {
      const [stored] = await redis.keys(`${prefix}rl:${k}:*`);
      expect(Number(await redis.get(stored!))).toBe(40);
    }
    expect(fallbacks).toBe(0);
  });
});
