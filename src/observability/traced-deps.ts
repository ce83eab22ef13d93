import type { Tracer } from "@opentelemetry/api";
import type { Policy } from "../domain/policy";
import type { CommitJob, CommitQueue, Committed } from "../services/commit-queue";
import type { CvvStore, RateLimiter } from "../storage/ports";
import { inSpan, traceMethods } from "./tracing";

/**
 * The child spans of a traced call, made by wrapping the dependencies the composition root hands to
 * the services: policy decisions, token lookups, the access-log flush the call joined, and Redis.
 * Services stay unaware of tracing. Attributes are counts, categories, purposes and outcomes only.
 */

const count = (a: unknown) => (Array.isArray(a) ? a.length : 1);

const POLICY_CHECKS = ["canTokenize", "canDetokenize", "canInspect", "canDelete", "canDeleteSubject", "isKeyAdmin", "canReadLog"] as const;

/** Each policy decision is a (synchronous) span with its category, purpose and answer. */
export function tracedPolicy(tracer: Tracer, policy: Policy): Policy {
  const wrapped = Object.create(policy) as Policy;
  for (const m of POLICY_CHECKS) {
    const fn = (policy as unknown as Record<string, (...a: unknown[]) => boolean>)[m];
    if (typeof fn !== "function") continue;
    (wrapped as unknown as Record<string, unknown>)[m] = (...args: unknown[]) => {
      const span = tracer.startSpan("policy", {
        attributes: {
          "fieldvault.policy.check": m,
          ...(typeof args[1] === "string" ? { "fieldvault.category": args[1] } : {}),
          ...(typeof args[2] === "string" ? { "fieldvault.purpose": args[2] } : {}),
        },
      });
      try {
        const allowed = fn.apply(policy, args);
        span.setAttribute("fieldvault.policy.allowed", allowed);
        return allowed;
      } finally {
        span.end();
      }
    };
  }
  return wrapped;
}

export function tracedLookup<A extends unknown[], R>(tracer: Tracer, find: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args: A) => inSpan(tracer, "lookup", { "fieldvault.tokens": count(args[0]) }, () => find(...args));
}

export function tracedCvvStore(tracer: Tracer, cvv: CvvStore): CvvStore {
  return traceMethods(tracer, cvv, "redis.cvv", ["put", "peek", "remove"], (_m, args) => ({ "db.system": "redis", "fieldvault.items": count(args[0]) }));
}

export function tracedRateLimiter(tracer: Tracer, limiter: RateLimiter): RateLimiter {
  return traceMethods(tracer, limiter, "redis.rate_budget", ["take"], (_m, args) => ({ "db.system": "redis", "fieldvault.requested": Number(args[2]) || 0 }));
}

/** The flush a call's entries joined: one span per call, with how many calls shared the flush. */
export function tracedCommits(tracer: Tracer, commits: Pick<CommitQueue, "submit" | "append">): Pick<CommitQueue, "submit" | "append"> {
  const submit = <T>(job: CommitJob<T>): Promise<Committed<T>> =>
    inSpan(tracer, "access_log.commit", { "fieldvault.log.entries": typeof job.log === "function" ? -1 : job.log.length, "fieldvault.tokens.new": job.tokens?.length ?? 0 }, async (span) => {
      const c = await commits.submit(job);
      if (c.flushJobs !== undefined) span.setAttribute("fieldvault.flush.jobs", c.flushJobs);
      return c;
    });
  return { submit, append: (log) => submit({ log }).then(() => undefined) };
}
