import type { Queryable } from "../db";

export interface ClaimedDek {
  id: string;
  kekVersion: number;
  wrappedDek: Uint8Array;
}

/**
 * Claims up to `limit` tokens of a category whose DEK is wrapped under one of `versions`, locking
 * them for this transaction. SKIP LOCKED lets several instances share the work without waiting on
 * (or processing) each other's rows; a crashed transaction simply releases its rows.
 */
export async function claimRewrapBatch(tx: Queryable, category: string, versions: readonly number[], limit: number): Promise<ClaimedDek[]> {
  if (versions.length === 0) return [];
  const { rows } = await tx.query<{ id: string; kek_version: number; wrapped_dek: Uint8Array }>(
    `SELECT id, kek_version, wrapped_dek FROM tokens
     WHERE category = $1 AND kek_version = ANY($2::int[])
     ORDER BY id LIMIT $3
     FOR UPDATE SKIP LOCKED`,
    [category, versions, limit],
  );
  return rows.map((r) => ({ id: r.id, kekVersion: r.kek_version, wrappedDek: r.wrapped_dek }));
}

/** Stores re-wrapped DEKs and their new KEK version. Never touches the value's ciphertext. */
export async function storeRewrapped(tx: Queryable, version: number, rows: readonly { id: string; wrappedDek: Uint8Array }[]): Promise<number> {
  if (rows.length === 0) return 0;
  const r = await tx.query(
    `UPDATE tokens t SET wrapped_dek = u.wrapped_dek, kek_version = $3
     FROM unnest($1::text[], $2::bytea[]) AS u(id, wrapped_dek)
     WHERE t.id = u.id`,
    [rows.map((x) => x.id), rows.map((x) => Buffer.from(x.wrappedDek)), version],
  );
  return r.rowCount;
}

export async function countUnder(q: Queryable, category: string, versions: readonly number[]): Promise<number> {
  if (versions.length === 0) return 0;
  const { rows } = await q.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version = ANY($2::int[])",
    [category, versions],
  );
  return rows[0]?.n ?? 0;
}
