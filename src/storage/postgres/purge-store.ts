import type { Queryable } from "../db";

/**
 * Erases at most `limit` tokens whose expiry is at or before `now`, oldest expiry first, and
 * returns how many per category. `FOR UPDATE SKIP LOCKED`: rows another purger (or a Tokenize
 * extending a deterministic token's expiry) holds are left to it, so concurrent purgers on
 * several instances never take the same row and never wait on each other. Subject links and
 * format-preserving aliases go with their row (ON DELETE CASCADE).
 */
export async function purgeExpiredTokens(tx: Queryable, now: Date, limit: number): Promise<Map<string, number>> {
  const { rows } = await tx.query<{ category: string; n: number }>(
    `WITH gone AS (
       DELETE FROM tokens WHERE id IN (
         SELECT id FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1
         ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING category)
     SELECT category, count(*)::int AS n FROM gone GROUP BY category ORDER BY category`,
    [now, limit],
  );
  return new Map(rows.map((r) => [r.category, r.n]));
}
