import type { MaskedView } from "../../domain/categories";
import type { Queryable } from "../db";
import type { TokenRecord } from "../ports";

/** A claimed row: everything needed to re-wrap its DEK, upgrade its value's format and check its MAC. */
export type ClaimedDek = TokenRecord;

/**
 * Claims up to `limit` tokens of a category whose DEK is wrapped under one of `versions`, locking
 * them for this transaction. SKIP LOCKED lets several instances share the work without waiting on
 * (or processing) each other's rows; a crashed transaction simply releases its rows.
 */
export async function claimRewrapBatch(tx: Queryable, category: string, versions: readonly number[], limit: number): Promise<ClaimedDek[]> {
  if (versions.length === 0) return [];
  const { rows } = await tx.query<{
    id: string;
    category: string;
    kek_version: number;
    wrapped_dek: Uint8Array;
    ciphertext: Uint8Array;
    fingerprint: Uint8Array | null;
    masked: MaskedView;
    created_at: Date;
    expires_at: Date | null;
    meta_mac: Uint8Array | null;
  }>(
    `SELECT id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked, created_at, expires_at, meta_mac FROM tokens
     WHERE category = $1 AND kek_version = ANY($2::int[])
     ORDER BY id LIMIT $3
     FOR UPDATE SKIP LOCKED`,
    [category, versions, limit],
  );
  return rows.map((r) => ({
    id: r.id,
    category: r.category,
    kekVersion: r.kek_version,
    wrappedDek: r.wrapped_dek,
    ciphertext: r.ciphertext,
    fingerprint: r.fingerprint,
    masked: r.masked,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    metaMac: r.meta_mac,
  }));
}

/**
 * Stores re-wrapped DEKs, their new KEK version and metadata MAC; the value's ciphertext changes
 * only when a legacy v1 value was upgraded to v2 (same DEK), and then its re-derived masked view.
 */
export async function storeRewrapped(
  tx: Queryable,
  version: number,
  rows: readonly { id: string; wrappedDek: Uint8Array; ciphertext: Uint8Array; masked: MaskedView; metaMac: Uint8Array | null }[],
): Promise<number> {
  if (rows.length === 0) return 0;
  const r = await tx.query(
    `UPDATE tokens t SET wrapped_dek = u.wrapped_dek, kek_version = $3, ciphertext = u.ciphertext, masked = u.masked,
                         meta_mac = u.meta_mac
     FROM unnest($1::text[], $2::bytea[], $4::bytea[], $5::jsonb[], $6::bytea[]) AS u(id, wrapped_dek, ciphertext, masked, meta_mac)
     WHERE t.id = u.id`,
    [
      rows.map((x) => x.id),
      rows.map((x) => Buffer.from(x.wrappedDek)),
      version,
      rows.map((x) => Buffer.from(x.ciphertext)),
      rows.map((x) => JSON.stringify(x.masked)),
      rows.map((x) => (x.metaMac ? Buffer.from(x.metaMac) : null)),
    ],
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
