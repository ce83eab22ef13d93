import { type CheckpointFields, checkpointHash, checkpointSignedBy, signCheckpoint, type SignedCheckpointV2, ZERO_HASH } from "../domain/checkpoint";
import type { SigningKey } from "../crypto/signing";
import type { Queryable } from "../storage/db";
import { chainTail, checkpointsNumbered, insertCheckpoint, latestCheckpointsOfKey, lockCheckpointKey, type StoredCheckpoint } from "../storage/postgres/log-store";

/** What a flush wants sealed: a chain position and its head. */
export type CheckpointDraft = Pick<CheckpointFields, "chainId" | "size" | "head" | "at" | "closed">;

/** A chain this writer stopped appending to after a failed flush, to be closed by a signed checkpoint. */
export interface AbandonedChain {
  chainId: string;
  /** Last position known committed, and its hash. */
  committedSeq: number;
  committedHead: Uint8Array;
  /** Entries of the failed flush (they may have committed: a lost COMMIT acknowledgement). */
  attempted: { chainSeq: number; hash: Uint8Array }[];
}

export interface SealerHooks {
  /** After COMMIT: publish outside the database (log stream, anchor file). */
  onPublish?: (cp: SignedCheckpointV2) => void;
  /** The database holds fewer (or other) checkpoints of this key than this writer committed: deleted. */
  onRegression?: (e: { keyId: string; expectedNumber: number; foundNumber: number }) => void;
}

const CANDIDATES = 16;

/**
 * Signs checkpoints inside the flush's transaction, numbered in the signing key's sequence and
 * chained to the key's previous checkpoint — the newest validly signed one in the database, or the
 * newest this writer itself committed if the database has lost it (then the gap stays visible).
 */
export class CheckpointSealer {
  /** The newest checkpoint of this key known committed (written by this writer or one it chained on). */
  private last: SignedCheckpointV2 | undefined;

  constructor(
    private readonly key: SigningKey,
    private readonly hooks: SealerHooks = {},
  ) {}

  get latest(): SignedCheckpointV2 | undefined {
    return this.last;
  }

  /**
   * Starts from a checkpoint published earlier outside the database (the anchor file's newest), so
   * a restarted writer never silently continues a sequence the database has since lost. Ignored
   * unless this writer's own key signed it.
   */
  seed(cp: SignedCheckpointV2): boolean {
    if (cp.keyId !== this.key.keyId || !checkpointSignedBy(this.key.publicKey, cp)) return false;
    if (!this.last || cp.number > this.last.number) this.last = cp;
    return true;
  }

  /** Inside the transaction, after its entries: closes the `abandoned` chains, then signs and inserts `drafts`. */
  async seal(tx: Queryable, drafts: readonly CheckpointDraft[], abandoned: readonly AbandonedChain[] = []): Promise<SignedCheckpointV2[]> {
    const all: CheckpointDraft[] = [];
    for (const a of abandoned) {
      const close = await this.closing(tx, a);
      if (close) all.push(close);
    }
    all.push(...drafts);
    if (all.length === 0) return [];
    await lockCheckpointKey(tx, this.key.keyId);
    let prev = await this.predecessor(tx);
    const out: SignedCheckpointV2[] = [];
    for (const d of all) {
      const cp = signCheckpoint(this.key, { ...d, number: (prev?.number ?? 0) + 1, prev: prev ? checkpointHash(prev) : ZERO_HASH });
      await insertCheckpoint(tx, cp);
      out.push(cp);
      prev = cp;
    }
    return out;
  }

  /** After COMMIT of the transaction `seal` ran in. */
  committed(cps: readonly SignedCheckpointV2[]): void {
    for (const cp of cps) {
      if (!this.last || cp.number > this.last.number) this.last = cp;
      this.hooks.onPublish?.(cp);
    }
  }

  private async predecessor(tx: Queryable): Promise<SignedCheckpointV2 | undefined> {
    const valid = (r: StoredCheckpoint): r is StoredCheckpoint & { version: 2 } => r.version === 2 && checkpointSignedBy(this.key.publicKey, r);
    const found = (await latestCheckpointsOfKey(tx, this.key.keyId, CANDIDATES)).find(valid);
    const last = this.last;
    if (!last) return found;
    const lastHash = Buffer.from(checkpointHash(last));
    const isLast = (r: SignedCheckpointV2) => lastHash.equals(checkpointHash(r));
    // The database must still hold the newest checkpoint this writer knows, and anything newer must
    // extend it (another writer of the same key); otherwise checkpoints were deleted — or replaced by
    // a sequence continued from what was left. Keep chaining onto what we know: the break stays visible.
    const intact =
      found !== undefined &&
      (found.number === last.number ? isLast(found) : found.number > last.number && (await checkpointsNumbered(tx, this.key.keyId, last.number)).filter(valid).some(isLast));
    if (!intact) {
      this.hooks.onRegression?.({ keyId: this.key.keyId, expectedNumber: last.number, foundNumber: found?.number ?? 0 });
      return last;
    }
    return found;
  }

  /** Where to close an abandoned chain: after the last entry that is ours, as the database shows. */
  private async closing(tx: Queryable, a: AbandonedChain): Promise<CheckpointDraft | undefined> {
    let size = a.committedSeq;
    let head = a.committedHead;
    const rows = await chainTail(tx, a.chainId, a.committedSeq, a.attempted.length);
    for (const [i, r] of rows.entries()) {
      const mine = a.attempted[i];
      if (!mine || mine.chainSeq !== r.chainSeq || !Buffer.from(mine.hash).equals(Buffer.from(r.hash))) break;
      size = r.chainSeq;
      head = r.hash;
    }
    if (size === 0) return undefined; // nothing of ours reached the database: the chain was never opened
    return { chainId: a.chainId, size, head, at: new Date(), closed: true };
  }
}
