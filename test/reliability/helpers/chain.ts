import { entryHash, GENESIS_HASH } from "../../../src/domain/access-log";
import type { Queryable } from "../../../src/storage/db";
import { type LogRow, rowToEntry } from "../../../src/storage/postgres/log-store";

export interface ChainReport {
  ok: boolean;
  chains: number;
  entries: number;
  /** The first problem found, naming the chain and sequence. */
  problem?: string;
}

const eq = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

/**
 * Recomputes every writer's hash chain from the access_log table, independently of the service:
 * chain_seq runs 1, 2, 3… with no gap, each prev_hash is the previous entry's hash (genesis first),
 * and each hash is BLAKE2b(prev_hash ‖ canonical(entry)).
 */
export async function verifyChains(db: Queryable): Promise<ChainReport> {
  const { rows } = await db.query<LogRow>("SELECT * FROM access_log ORDER BY chain_id, chain_seq", []);
  let chainId: string | undefined;
  let expectSeq = 1;
  let prev: Uint8Array = GENESIS_HASH;
  let chains = 0;
  for (const row of rows) {
    const e = rowToEntry(row);
    if (e.chainId !== chainId) {
      chainId = e.chainId;
      chains++;
      expectSeq = 1;
      prev = GENESIS_HASH;
    }
    const where = `chain ${e.chainId} seq ${e.chainSeq}`;
    if (e.chainSeq !== expectSeq) return { ok: false, chains, entries: rows.length, problem: `${where}: expected seq ${expectSeq} (gap)` };
    if (!eq(e.prevHash, prev)) return { ok: false, chains, entries: rows.length, problem: `${where}: prev_hash does not link` };
    const { prevHash: _p, hash: _h, ...body } = e;
    if (!eq(entryHash(prev, body), e.hash)) return { ok: false, chains, entries: rows.length, problem: `${where}: hash does not match its content` };
    prev = e.hash;
    expectSeq++;
  }
  return { ok: true, chains, entries: rows.length };
}
