import { chain, type ChainedEntry, GENESIS_HASH, type LogDraft } from "../domain/access-log";
import type { LiveLogState, SignedCheckpointV2 } from "../domain/checkpoint";
import { IntegrityError, VaultError } from "../domain/errors";
import type { SigningKey } from "../crypto/signing";
import { isOutage, type Queryable } from "../storage/db";
import type { NewToken, TokenIntegrity } from "../storage/ports";
import { insertTokens } from "../storage/postgres/token-store";
import { insertLogEntries } from "../storage/postgres/log-store";
import { type AbandonedChain, type CheckpointDraft, CheckpointSealer, type SealerHooks } from "./checkpoint-sealer";

/**
 * Whatever stopped a commit, the caller learns only that the log (and so the call) could not be
 * made durable: fail closed with UNAVAILABLE. Domain errors raised by a job's own work pass through.
 */
function asUnavailable(err: unknown): unknown {
  if (err instanceof VaultError && (err.code !== "INTERNAL" || err instanceof IntegrityError)) return err;
  return Object.assign(new VaultError("UNAVAILABLE", "access log unavailable: nothing was revealed or stored"), { cause: err });
}

export interface CommitJob<T> {
  /** New tokens to store (deterministic ones may resolve to an existing id). */
  tokens?: readonly NewToken[];
  /** Extra statements that must commit atomically with the log entries (deletes, key changes); given this job's token ids. */
  work?: (tx: Queryable, tokenIds: string[]) => Promise<T>;
  /** The access-log entries; may depend on the work's result. */
  log: readonly LogDraft[] | ((result: T | undefined, tokenIds: string[]) => readonly LogDraft[]);
}

export interface Committed<T> {
  tokenIds: string[];
  result: T | undefined;
  /** How many calls shared the flush that committed this one (group commit). */
  flushJobs?: number;
}

interface Pending {
  job: CommitJob<unknown>;
  resolve: (c: Committed<unknown>) => void;
  reject: (err: unknown) => void;
  /** Seal the chain in this flush even if no checkpoint is due (timer, shutdown). */
  seal?: boolean;
  /** When it was queued (performance.now()), to measure the wait before its flush starts. */
  at?: number;
  /** Shutdown: the seal closes the chain (nothing may follow it). */
  final?: boolean;
}

/** Someone else's row already holds this writer's next (chain_id, chain_seq). */
const isChainConflict = (err: unknown) => {
  const e = err as { code?: string; constraint?: string; message?: string };
  return e?.code === "23505" && /access_log_chain_id_chain_seq/.test(`${e.constraint ?? ""} ${e.message ?? ""}`);
};

/** Rows a job writes: its token rows and its log entries (one per token when the log is computed later). */
const rowsOf = (job: CommitJob<unknown>): number => {
  const tokens = job.tokens?.length ?? 0;
  return tokens + (typeof job.log === "function" ? Math.max(tokens, 1) : job.log.length);
};

/** A flush in the pipeline: when its entries joined the chain, and whether it committed. */
interface Stage {
  built: Promise<void>;
  settled: Promise<void>;
}

/** Thrown inside a flush whose chain was built on a predecessor that then failed: run it again. */
const REQUEUE = Symbol("requeue");

export interface CommitQueueOptions {
  chainId: string;
  signingKey: SigningKey;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  maxJobsPerFlush?: number;
  /**
   * Rows (token rows plus log entries) a flush takes before leaving the rest to the next one
   * (default 4,000; one job is always taken whole). Bounds the statement text and buffers a flush
   * builds: 16 calls of 1,000 items would otherwise make one 32,000-row flush.
   */
  maxRowsPerFlush?: number;
  /** Flushes in flight at once (default 2): the next batches write while the previous one commits. */
  maxFlushesInFlight?: number;
  /** After every flush; `waits` holds each job's seconds from queueing to its flush starting. */
  onFlush?: (stats: { jobs: number; entries: number; seconds: number; ok: boolean; waits?: number[] }) => void;
  /** Checkpoint publication and regression alarms (see CheckpointSealer). */
  checkpoints?: SealerHooks;
  /** A flush collided with a row someone else wrote at this writer's next chain position. */
  onConflict?: (e: { chainId: string; chainSeq: number }) => void;
  /** MACs new token rows and checks existing ones a deterministic insert resolves to. */
  integrity?: TokenIntegrity;
}

/**
 * Group commit: token rows and access-log entries of concurrent calls share one transaction.
 * Flushes are pipelined (by default two in flight, each on its own connection) so the next batch
 * is written while the previous one commits, but they join the hash chain and COMMIT strictly in
 * order: a flush chains only after its predecessor chained, and commits only after its
 * predecessor settled. If a flush fails after chaining, the chain head rolls back and every
 * successor that chained on top of it rolls back and is queued again, so committed entries never
 * have a gap. A promise resolves only after COMMIT: this is what makes "durable before reveal" hold.
 */
export class CommitQueue {
  private queue: Pending[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private gathering = false;
  private tail: Stage = { built: Promise.resolve(), settled: Promise.resolve() };
  /** Bumped whenever a chained flush fails: successors built on the old head must run again. */
  private epoch = 0;
  /** How many times this writer moved to a fresh chain after a failed flush. */
  private chainNo = 0;
  private head: Uint8Array = GENESIS_HASH;
  private seq = 0;
  private sealedSeq = 0;
  private lastCheckpointAt = Date.now();
  private closed = false;
  /** The current chain's last committed position (what Verify may compare with the database). */
  private committedSeq = 0;
  private committedHead: Uint8Array = GENESIS_HASH;
  /** Chains left after a failed flush: closed by a signed checkpoint in the next flush that commits. */
  private toClose: AbandonedChain[] = [];
  private retired: AbandonedChain[] = [];
  private readonly sealer: CheckpointSealer;

  constructor(
    private readonly db: { transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>; query?: Queryable["query"] },
    private readonly opts: CommitQueueOptions,
  ) {
    this.sealer = new CheckpointSealer(opts.signingKey, opts.checkpoints);
  }

  /** See CheckpointSealer.seed. */
  seedCheckpoint(cp: SignedCheckpointV2): boolean {
    return this.sealer.seed(cp);
  }

  /** This writer's chains and newest checkpoint as it knows them (AccessLog.Verify compares). */
  liveState(): LiveLogState {
    const chains = [
      { chainId: this.chainId, committedSeq: this.committedSeq, committedHead: this.committedHead, chainedSeq: this.seq },
      ...this.retired.map((a) => ({
        chainId: a.chainId,
        committedSeq: a.committedSeq,
        committedHead: a.committedHead,
        chainedSeq: a.attempted[a.attempted.length - 1]?.chainSeq ?? a.committedSeq,
        attempted: a.attempted,
      })),
    ];
    return { chains, checkpoint: this.sealer.latest };
  }

  /** The chain this writer appends to now: a new one after any failed flush (see `flush`). */
  get chainId(): string {
    return this.chainNo === 0 ? this.opts.chainId : `${this.opts.chainId}.r${this.chainNo}`;
  }

  submit<T>(job: CommitJob<T>): Promise<Committed<T>> {
    if (this.closed) return Promise.reject(new VaultError("UNAVAILABLE", "shutting down"));
    return new Promise<Committed<T>>((resolve, reject) => {
      this.queue.push({ job: job as CommitJob<unknown>, resolve: resolve as Pending["resolve"], reject, at: performance.now() });
      this.kick();
    });
  }

  /** Appends log entries alone (a call that stores nothing else). */
  append(log: readonly LogDraft[]): Promise<void> {
    return this.submit({ log }).then(() => undefined);
  }

  private get maxInFlight(): number {
    return this.opts.maxFlushesInFlight ?? 2;
  }

  private kick(): void {
    if (this.gathering || this.queue.length === 0 || this.inFlight.size >= this.maxInFlight) return;
    this.gathering = true;
    const run = this.flushNext();
    this.inFlight.add(run);
    void run.finally(() => {
      this.inFlight.delete(run);
      this.kick();
    });
  }

  private async flushNext(): Promise<void> {
    // Yield once so calls arriving in the same tick join this batch.
    await new Promise<void>((r) => setImmediate(r));
    this.gathering = false;
    // Take everything queued: splitting a wave into smaller flushes costs more statements than it
    // gains in overlap on a CPU-bound machine (measured; see docs/performance.md).
    const batch = this.queue.splice(0, this.batchLength());
    this.kick(); // the next batch may start gathering while this one writes
    if (batch.length === 0) return;
    try {
      await this.flush(batch);
    } catch (err) {
      if (err === REQUEUE) {
        this.queue.unshift(...batch);
      } else if (batch.length > 1 && (err instanceof VaultError ? err.code !== "UNAVAILABLE" : !isOutage(err))) {
        // A statement failed for one job's data, or one job's work refused (e.g. RESOURCE_EXHAUSTED:
        // no format-preserving token left in a BIN range): isolate it instead of failing its neighbours.
        for (const p of batch) {
          await this.flush([p]).catch((e) => (e === REQUEUE ? this.queue.unshift(p) : p.reject(asUnavailable(e))));
        }
      } else {
        for (const p of batch) p.reject(asUnavailable(err));
      }
    }
  }

  /** How many queued jobs the next flush takes: all, up to the job and row limits, at least one. */
  private batchLength(): number {
    const maxJobs = Math.min(this.queue.length, this.opts.maxJobsPerFlush ?? 512);
    const maxRows = this.opts.maxRowsPerFlush ?? 4000;
    let rows = 0;
    for (let n = 0; n < maxJobs; n++) {
      rows += rowsOf(this.queue[n]!.job);
      if (rows > maxRows) return Math.max(n, 1);
    }
    return maxJobs;
  }

  private async flush(batch: Pending[]): Promise<void> {
    const started = performance.now();
    const waits = batch.map((p) => (p.at === undefined ? 0 : (started - p.at) / 1000));
    const prev = this.tail;
    let markBuilt!: () => void;
    let markSettled!: () => void;
    const stage: Stage = { built: new Promise((r) => (markBuilt = r)), settled: new Promise((r) => (markSettled = r)) };
    this.tail = stage;
    let chainedAt: number | undefined; // the epoch this flush chained in
    let entries = 0;
    let from = { chainId: this.chainId, seq: this.seq, head: this.head }; // where this flush's entries start
    let chainedEntries: ChainedEntry[] = [];
    let closes: AbandonedChain[] = [];
    // Joins the chain in flush order, synchronously (no await between reading and moving the head).
    const join = (results: Committed<unknown>[]) => {
      chainedAt = this.epoch;
      from = { chainId: this.chainId, seq: this.seq, head: this.head };
      const chained: ChainedEntry[] = [];
      batch.forEach((p, i) => {
        const drafts = typeof p.job.log === "function" ? p.job.log(results[i]!.result, results[i]!.tokenIds) : p.job.log;
        for (const d of drafts) {
          const e = chain(d, this.chainId, ++this.seq, this.head);
          this.head = e.hash;
          chained.push(e);
        }
      });
      // Every chain opens with a signed checkpoint of size 0, committed with its first entries.
      const drafts: CheckpointDraft[] = from.seq === 0 && chained.length ? [{ chainId: this.chainId, size: 0, head: GENESIS_HASH, at: new Date(), closed: false }] : [];
      const checkpoint = this.takeCheckpoint(batch.some((p) => p.seal), batch.some((p) => p.final));
      if (checkpoint) drafts.push(checkpoint);
      closes = [...this.toClose];
      markBuilt();
      entries = chained.length;
      chainedEntries = chained;
      return { chained, drafts, closes };
    };
    let signed: Awaited<ReturnType<CheckpointSealer["seal"]>> = [];
    // Log entries alone (detokenize, inspect): one INSERT is its own transaction, sent once the
    // predecessor settled. One statement instead of BEGIN, INSERT, COMMIT.
    const logOnly = this.db.query !== undefined && batch.every((p) => !p.job.work && !p.job.tokens?.length && !p.seal);
    try {
      const outcomes = logOnly
        ? await (async () => {
            const results: Committed<unknown>[] = batch.map(() => ({ tokenIds: [], result: undefined }));
            await prev.built;
            const { chained, drafts, closes } = join(results);
            await prev.settled;
            if (this.epoch !== chainedAt) throw REQUEUE;
            if (drafts.length || closes.length) {
              await this.db.transaction(async (tx) => {
                await insertLogEntries(tx, chained);
                signed = await this.sealer.seal(tx, drafts, closes);
              });
            } else {
              await insertLogEntries(this.db as Queryable, chained);
            }
            return results;
          })()
        : await this.db.transaction(async (tx) => {
            // Start writing only once the predecessor has written its rows and done its work (it
            // has chained): it then never waits on a row lock this flush holds (the same new PAN in
            // both, a rewrap claim), while this flush waits for its COMMIT — no lock cycle between
            // pipelined flushes. What still overlaps is its log insert and COMMIT with our work.
            await prev.built;
            const allTokens = batch.flatMap((p) => p.job.tokens ?? []);
            const ids = await insertTokens(tx, allTokens, this.opts.integrity);
            const results: Committed<unknown>[] = [];
            let at = 0;
            for (const p of batch) {
              const n = p.job.tokens?.length ?? 0;
              const tokenIds = ids.slice(at, at + n);
              at += n;
              const result = p.job.work ? await p.job.work(tx, tokenIds) : undefined;
              results.push({ tokenIds, result });
            }
            await prev.built;
            const { chained, drafts, closes } = join(results);
            await insertLogEntries(tx, chained);
            // Commit in chain order; if a predecessor failed, what this flush chained on is gone.
            await prev.settled;
            if (this.epoch !== chainedAt) throw REQUEUE;
            // Sealed only now: the key's numbering lock is then taken in chain order and held by
            // a transaction that waits on nothing but its own statements.
            signed = await this.sealer.seal(tx, drafts, closes);
            return results;
          });
      if (chainedEntries.length) {
        this.committedSeq = chainedEntries[chainedEntries.length - 1]!.chainSeq;
        this.committedHead = chainedEntries[chainedEntries.length - 1]!.hash;
      }
      this.toClose = this.toClose.filter((a) => !closes.includes(a));
      this.sealer.committed(signed);
      markSettled();
      batch.forEach((p, i) => p.resolve({ ...outcomes[i]!, flushJobs: batch.length }));
      this.opts.onFlush?.({ jobs: batch.length, entries, seconds: (performance.now() - started) / 1000, ok: true, waits });
    } catch (err) {
      if (chainedAt === undefined) {
        // Never chained: successors chain and commit after our predecessor, as if we were not here.
        void prev.built.then(markBuilt);
        void prev.settled.then(markSettled);
      } else {
        await prev.settled;
        if (this.epoch === chainedAt) {
          // Our entries (and any successor's on top of them) may or may not have committed: a lost
          // COMMIT acknowledgement looks just like a failure. Rolling the head back could then reuse
          // a committed chain position forever after; instead continue on a fresh chain from genesis.
          // Either way no chain has a gap, and successors are queued again onto the new chain.
          // The old chain is closed by a signed checkpoint after the last entry that is ours.
          if (isChainConflict(err)) this.opts.onConflict?.({ chainId: from.chainId, chainSeq: from.seq + 1 });
          const abandoned: AbandonedChain = {
            chainId: from.chainId,
            committedSeq: from.seq,
            committedHead: from.head,
            attempted: chainedEntries.map((e) => ({ chainSeq: e.chainSeq, hash: e.hash })),
          };
          this.toClose.push(abandoned);
          this.retired = [...this.retired.slice(-31), abandoned];
          this.committedSeq = 0;
          this.committedHead = GENESIS_HASH;
          this.chainNo++;
          this.head = GENESIS_HASH;
          this.seq = 0;
          this.sealedSeq = 0;
          this.lastCheckpointAt = Date.now();
          this.epoch++;
        }
        markSettled();
      }
      this.opts.onFlush?.({ jobs: batch.length, entries: 0, seconds: (performance.now() - started) / 1000, ok: false });
      throw err;
    }
  }

  /** A checkpoint of the current head when one is due (or forced); marks it sealed. Signed at insert. */
  private takeCheckpoint(force: boolean, final: boolean): CheckpointDraft | undefined {
    if (this.seq === this.sealedSeq && !(final && this.seq > 0)) return undefined;
    const due =
      force ||
      this.seq - this.sealedSeq >= this.opts.checkpointEvery ||
      Date.now() - this.lastCheckpointAt >= this.opts.checkpointIntervalMs;
    if (!due) return undefined;
    this.sealedSeq = this.seq;
    this.lastCheckpointAt = Date.now();
    return { chainId: this.chainId, size: this.seq, head: this.head, at: new Date(), closed: final };
  }

  /** Seals the chain now if anything is unsealed (periodic timer; `final` at shutdown closes it), in chain order. */
  async checkpoint(final = false): Promise<void> {
    if (!final && this.seq === this.sealedSeq && this.inFlight.size === 0 && this.queue.length === 0 && this.toClose.length === 0) return;
    await new Promise<Committed<unknown>>((resolve, reject) => {
      this.queue.push({ job: { log: [] }, resolve, reject, seal: true, final });
      this.kick();
    });
  }

  /** Stops taking jobs, flushes what is queued, and seals the chain. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight.size || this.queue.length) {
      this.kick();
      await Promise.all([...this.inFlight]);
    }
    await this.checkpoint(true).catch(() => undefined);
  }
}
