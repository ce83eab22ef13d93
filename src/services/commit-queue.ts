import { chain, type ChainedEntry, checkpointMessage, GENESIS_HASH, type LogDraft } from "../domain/access-log";
import { VaultError } from "../domain/errors";
import { sign, type SigningKey } from "../crypto/signing";
import { isOutage, type Queryable } from "../storage/db";
import type { NewToken } from "../storage/ports";
import { insertTokens } from "../storage/postgres/token-store";
import { insertCheckpoint, insertLogEntries } from "../storage/postgres/log-store";

/**
 * Whatever stopped a commit, the caller learns only that the log (and so the call) could not be
 * made durable: fail closed with UNAVAILABLE. Domain errors raised by a job's own work pass through.
 */
function asUnavailable(err: unknown): unknown {
  if (err instanceof VaultError && err.code !== "INTERNAL") return err;
  return Object.assign(new VaultError("UNAVAILABLE", "access log unavailable: nothing was revealed or stored"), { cause: err });
}

export interface CommitJob<T> {
  /** New tokens to store (deterministic ones may resolve to an existing id). */
  tokens?: readonly NewToken[];
  /** Extra statements that must commit atomically with the log entries (deletes, key changes). */
  work?: (tx: Queryable) => Promise<T>;
  /** The access-log entries; may depend on the work's result. */
  log: readonly LogDraft[] | ((result: T | undefined, tokenIds: string[]) => readonly LogDraft[]);
}

export interface Committed<T> {
  tokenIds: string[];
  result: T | undefined;
}

interface Pending {
  job: CommitJob<unknown>;
  resolve: (c: Committed<unknown>) => void;
  reject: (err: unknown) => void;
}

export interface CommitQueueOptions {
  chainId: string;
  signingKey: SigningKey;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  maxJobsPerFlush?: number;
  onFlush?: (stats: { jobs: number; entries: number; seconds: number; ok: boolean }) => void;
}

/**
 * Group commit: token rows and access-log entries of concurrent calls share one transaction.
 * One flush runs at a time, so this writer's hash chain is built in commit order; a failed flush
 * rolls the chain head back, so committed entries never have a gap. A promise resolves only after
 * COMMIT: this is what makes "durable before reveal" hold.
 */
export class CommitQueue {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private head: Uint8Array = GENESIS_HASH;
  private seq = 0;
  private sealedSeq = 0;
  private lastCheckpointAt = Date.now();
  private closed = false;

  constructor(
    private readonly db: { transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> },
    private readonly opts: CommitQueueOptions,
  ) {}

  get chainId(): string {
    return this.opts.chainId;
  }

  submit<T>(job: CommitJob<T>): Promise<Committed<T>> {
    if (this.closed) return Promise.reject(new VaultError("UNAVAILABLE", "shutting down"));
    return new Promise<Committed<T>>((resolve, reject) => {
      this.queue.push({ job: job as CommitJob<unknown>, resolve: resolve as Pending["resolve"], reject });
      this.kick();
    });
  }

  /** Appends log entries alone (a call that stores nothing else). */
  append(log: readonly LogDraft[]): Promise<void> {
    return this.submit({ log }).then(() => undefined);
  }

  private kick(): void {
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = this.flushAll().finally(() => {
      this.flushing = undefined;
      this.kick();
    });
  }

  private async flushAll(): Promise<void> {
    // Yield once so calls arriving in the same tick join this batch.
    await new Promise<void>((r) => setImmediate(r));
    const max = this.opts.maxJobsPerFlush ?? 512;
    const batch = this.queue.splice(0, max);
    try {
      await this.flush(batch);
    } catch (err) {
      if (batch.length > 1 && !isOutage(err) && !(err instanceof VaultError)) {
        // A statement failed for one job's data: isolate it instead of failing its neighbours.
        for (const p of batch) await this.flush([p]).catch((e) => p.reject(asUnavailable(e)));
      } else {
        for (const p of batch) p.reject(asUnavailable(err));
      }
    }
  }

  private async flush(batch: Pending[]): Promise<void> {
    const started = performance.now();
    const savedHead = this.head;
    const savedSeq = this.seq;
    const savedSealed = this.sealedSeq;
    let entries = 0;
    try {
      const outcomes = await this.db.transaction(async (tx) => {
        const allTokens = batch.flatMap((p) => p.job.tokens ?? []);
        const ids = await insertTokens(tx, allTokens);
        const results: Committed<unknown>[] = [];
        let at = 0;
        for (const p of batch) {
          const n = p.job.tokens?.length ?? 0;
          const tokenIds = ids.slice(at, at + n);
          at += n;
          const result = p.job.work ? await p.job.work(tx) : undefined;
          results.push({ tokenIds, result });
        }
        const chained: ChainedEntry[] = [];
        batch.forEach((p, i) => {
          const drafts = typeof p.job.log === "function" ? p.job.log(results[i]!.result, results[i]!.tokenIds) : p.job.log;
          for (const d of drafts) {
            const e = chain(d, this.opts.chainId, ++this.seq, this.head);
            this.head = e.hash;
            chained.push(e);
          }
        });
        entries = chained.length;
        await insertLogEntries(tx, chained);
        await this.maybeCheckpoint(tx, false);
        return results;
      });
      batch.forEach((p, i) => p.resolve(outcomes[i]!));
      this.opts.onFlush?.({ jobs: batch.length, entries, seconds: (performance.now() - started) / 1000, ok: true });
    } catch (err) {
      this.head = savedHead;
      this.seq = savedSeq;
      this.sealedSeq = savedSealed;
      this.opts.onFlush?.({ jobs: batch.length, entries: 0, seconds: (performance.now() - started) / 1000, ok: false });
      throw err;
    }
  }

  private async maybeCheckpoint(tx: Queryable, force: boolean): Promise<void> {
    if (this.seq === this.sealedSeq) return;
    const due =
      force ||
      this.seq - this.sealedSeq >= this.opts.checkpointEvery ||
      Date.now() - this.lastCheckpointAt >= this.opts.checkpointIntervalMs;
    if (!due) return;
    const at = new Date();
    const signature = sign(this.opts.signingKey, checkpointMessage(this.opts.chainId, this.seq, this.head, at));
    await insertCheckpoint(tx, {
      chainId: this.opts.chainId,
      chainSeq: this.seq,
      hash: this.head,
      at,
      keyId: this.opts.signingKey.keyId,
      signature,
    });
    this.sealedSeq = this.seq;
    this.lastCheckpointAt = Date.now();
  }

  /** Seals the chain now if anything is unsealed (periodic timer and shutdown). */
  async checkpoint(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.seq === this.sealedSeq) return;
    const savedSealed = this.sealedSeq;
    try {
      await this.db.transaction((tx) => this.maybeCheckpoint(tx, true));
    } catch (err) {
      this.sealedSeq = savedSealed;
      throw err;
    }
  }

  /** Stops taking jobs, flushes what is queued, and seals the chain. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.flushing || this.queue.length) {
      this.kick();
      if (this.flushing) await this.flushing;
    }
    await this.checkpoint().catch(() => undefined);
  }
}
