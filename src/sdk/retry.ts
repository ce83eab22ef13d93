import { status } from "@grpc/grpc-js";

/** How an idempotent call is retried. Only UNAVAILABLE is retried, and only for idempotent calls. */
export interface RetryPolicy {
  /** Total attempts, including the first (default 3). */
  attempts: number;
  /** First back-off in ms (default 100); doubles each retry, with full jitter. */
  baseDelayMs: number;
  /** Upper bound for one back-off (default 2000). */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 100, maxDelayMs: 2000 };

/**
 * Categories whose Tokenize is idempotent: the same value always yields the same token, so a
 * retry after a lost answer cannot create a second copy. Every other category mints a new random
 * token each time (a retry would store the value twice); Detokenize is never retried because a
 * CVV is single-use and a reveal is an audited event.
 */
export const DETERMINISTIC_CATEGORIES: ReadonlySet<string> = new Set(["card_number", "passport_number"]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `attempt` and retries it on UNAVAILABLE when `idempotent`, never past `deadline`. */
export async function withRetry<T>(attempt: () => Promise<T>, idempotent: boolean, policy: RetryPolicy, deadline: number): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      const retryable = idempotent && (err as { code?: number }).code === status.UNAVAILABLE && n < policy.attempts;
      const delay = Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (n - 1));
      if (!retryable || Date.now() + delay >= deadline) throw err;
      await sleep(delay);
    }
  }
}
