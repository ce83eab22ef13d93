import { type LogDraft, logDraft } from "../domain/access-log";
import { newRequestId } from "../domain/context";
import type { Queryable } from "../storage/db";
import { purgeExpiredTokens } from "../storage/postgres/purge-store";
import type { CommitQueue } from "./commit-queue";

export interface PurgeDeps {
  commits: Pick<CommitQueue, "submit">;
  instanceId: string;
  /** Rows erased per transaction (FIELDVAULT_PURGE_BATCH_SIZE). */
  batchSize: number;
  now?: () => Date;
  /** Told about each batch that erased something: counts only, never a value or a token. */
  onBatch?: (b: PurgeBatch) => void;
}

export interface PurgeBatch {
  erased: number;
  byCategory: Record<string, number>;
}

export interface PurgeRun {
  erased: number;
  batches: number;
  byCategory: Record<string, number>;
}

/**
 * Erases expired tokens (DESIGN §13: "expired tokens are purged") in bounded batches. Each batch is
 * one transaction of the commit queue, together with the access-log entry that records it
 * (action `purge`, counts per category): a purge is never unlogged, and a failed log write leaves
 * the rows in place. Safe with several instances (see purge-store.ts).
 */
export function createPurge(deps: PurgeDeps) {
  const now = deps.now ?? (() => new Date());
  let running: Promise<PurgeRun> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;

  async function batch(at: Date): Promise<PurgeBatch> {
    const ctx = { identity: "fieldvault", auth: "internal" as const, peer: "", requestId: newRequestId() };
    const { result } = await deps.commits.submit<Map<string, number>>({
      work: (tx: Queryable) => purgeExpiredTokens(tx, at, deps.batchSize),
      log: (counts): LogDraft[] => {
        const erased = [...(counts?.values() ?? [])].reduce((a, b) => a + b, 0);
        if (!erased) return [];
        const detail = [`erased=${erased}`, ...[...counts!].map(([c, n]) => `${c}=${n}`), `expired_before=${at.toISOString()}`].join(" ");
        return [logDraft(ctx, deps.instanceId, now(), "purge", { outcome: "erased", detail })];
      },
    });
    const byCategory = Object.fromEntries(result ?? []);
    const erased = Object.values(byCategory).reduce((a, b) => a + b, 0);
    if (erased) deps.onBatch?.({ erased, byCategory });
    return { erased, byCategory };
  }

  /** Purges until a batch comes back short (everything expired by `now()` at the start is gone). */
  function purgeExpired(): Promise<PurgeRun> {
    running ??= (async () => {
      const at = now();
      const run: PurgeRun = { erased: 0, batches: 0, byCategory: {} };
      try {
        for (;;) {
          const b = await batch(at);
          run.batches++;
          run.erased += b.erased;
          for (const [c, n] of Object.entries(b.byCategory)) run.byCategory[c] = (run.byCategory[c] ?? 0) + n;
          if (b.erased < deps.batchSize || stopping) return run;
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
  }

  function start(intervalMs: number, onError: (err: unknown) => void): void {
    timer = setInterval(() => void purgeExpired().catch(onError), intervalMs);
    timer.unref();
  }

  /** Stops the timer; a run in progress ends after its current batch. */
  async function stop(): Promise<void> {
    stopping = true;
    if (timer) clearInterval(timer);
    await running?.catch(() => undefined);
  }

  return { purgeExpired, start, stop };
}

export type Purge = ReturnType<typeof createPurge>;
