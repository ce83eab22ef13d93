import type { LogDraft } from "../domain/access-log";
import type { CommitQueue } from "./commit-queue";

type Commits = Pick<CommitQueue, "append" | "submit">;

/**
 * Access-log entries for calls from identities the policy does not know, aggregated: the first
 * such denial per identity × action in each window is written at once (durably, like any entry);
 * the rest in that window are counted and written as one summary entry when the window closes
 * (`detail: repeated=N window=60s`). A flood of unknown callers then costs a counter, not a
 * database write per call. Everything else passes through unchanged. At most `maxKeys` identities
 * are tracked per window; beyond that they share one summary under the caller "(other)".
 */
export function aggregateUnknownCallerDenials(
  commits: Commits,
  opts: { isKnown: (identity: string) => boolean; windowMs?: number; maxKeys?: number; onDenied?: () => void },
): Commits & { flush(): Promise<void>; close(): Promise<void> } {
  const windowMs = opts.windowMs ?? 60_000;
  const maxKeys = opts.maxKeys ?? 1000;
  const seen = new Map<string, { draft: LogDraft; repeated: number }>();
  const keyOf = (d: LogDraft) => `${d.caller}\u0000${d.action}`;

  async function flush(): Promise<void> {
    const summaries = [...seen.values()].filter((s) => s.repeated > 0);
    seen.clear();
    if (summaries.length === 0) return;
    await commits
      .append(
        summaries.map(({ draft, repeated }) => ({
          ...draft,
          at: new Date(),
          detail: `repeated=${repeated} window=${Math.round(windowMs / 1000)}s: ${draft.detail}`,
        })),
      )
      .catch(() => undefined);
  }
  const timer = setInterval(() => void flush(), windowMs);
  timer.unref();

  return {
    submit: (job) => commits.submit(job),
    append(log) {
      const unknown = log.length === 1 && log[0]!.outcome === "denied" && !opts.isKnown(log[0]!.caller);
      if (!unknown) return commits.append(log);
      opts.onDenied?.();
      const d = log[0]!;
      let key = keyOf(d);
      if (!seen.has(key) && seen.size >= maxKeys) key = "(other)";
      const s = seen.get(key);
      if (s) {
        s.repeated++;
        return Promise.resolve();
      }
      seen.set(key, { draft: key === "(other)" ? { ...d, caller: "(other)", peer: "", requestId: "" } : d, repeated: key === "(other)" ? 1 : 0 });
      return key === "(other)" ? Promise.resolve() : commits.append(log);
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
