import { RetryLater, TOKENIZE_BUDGET_EXCEEDED } from "../domain/errors";
import type { Policy } from "../domain/policy";
import { type RateLimiter, untilNextBudgetWindow } from "../storage/ports";

/**
 * Tokenize budgets for deterministic categories. A deterministic token answers "is this value
 * already on file?" without a detokenize grant, so a caller allowed to tokenize card numbers could
 * enumerate the few candidates that fit a known issuer prefix and last 4. The budget (per policy
 * caller × category, a minute; shared through Redis like the detokenize budgets) bounds that
 * rate; every deterministic tokenize is counted for alerting.
 */
export function createTokenizeBudget(deps: {
  policy: () => Policy;
  rateLimiter: Pick<RateLimiter, "take">;
  onVolume?: (e: { identity: string; category: string; fields: number }) => void;
}) {
  return {
    /** Takes the call's deterministic fields from its budgets; throws RESOURCE_EXHAUSTED (nothing stored) when over. */
    async take(identity: string, fields: readonly { name: string; tokenKind: string }[]): Promise<void> {
      const counts = new Map<string, number>();
      for (const f of fields) if (f.tokenKind === "deterministic") counts.set(f.name, (counts.get(f.name) ?? 0) + 1);
      if (counts.size === 0) return;
      const policy = deps.policy();
      const caller = policy.callerName(identity) ?? identity;
      const limit = policy.tokenizeDeterministicPerMinute(identity);
      for (const [category, n] of counts) {
        // All or nothing: a refused call leaves what was left of the minute to the next one.
        const granted = await deps.rateLimiter.take(`tokenize:${caller}:${category}`, limit, n, "all");
        if (granted < n) {
          throw new RetryLater(`tokenize budget for ${category} exceeded (${limit} a minute)`, TOKENIZE_BUDGET_EXCEEDED, untilNextBudgetWindow(), {
            category,
            limit_per_minute: String(limit),
            requested: String(n),
          });
        }
      }
      for (const [category, n] of counts) deps.onVolume?.({ identity, category, fields: n });
    },
  };
}
