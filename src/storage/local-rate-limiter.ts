import { BUDGET_WINDOW_MS, type RateLimiter } from "./ports";

/** Fixed one-minute windows in process memory. Used alone in development and as Redis's fallback. */
export function createLocalRateLimiter(share = 1, now: () => number = Date.now): RateLimiter {
  const windows = new Map<string, { minute: number; used: number }>();
  return {
    async take(key, limitPerMinute, n, mode = "up-to") {
      const minute = Math.floor(now() / BUDGET_WINDOW_MS);
      let w = windows.get(key);
      if (!w || w.minute !== minute) {
        if (windows.size > 10_000) windows.clear();
        w = { minute, used: 0 };
        windows.set(key, w);
      }
      const limit = Math.max(1, Math.floor(limitPerMinute * share));
      const fits = Math.max(0, Math.min(n, limit - w.used));
      const allowed = mode === "all" && fits < n ? 0 : fits;
      w.used += allowed;
      return allowed;
    },
    async close() {
      windows.clear();
    },
  };
}
