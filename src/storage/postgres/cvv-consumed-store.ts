import type { Queryable } from "../db";

/**
 * Records CVV tokens as revealed, in the caller's transaction (the one that commits their log
 * entries). Returns the tokens marked now; a token already marked (a replay, or a concurrent
 * reveal that committed first) is not returned.
 */
export async function markCvvsConsumed(tx: Queryable, tokens: readonly string[]): Promise<Set<string>> {
  if (tokens.length === 0) return new Set();
  const { rows } = await tx.query<{ token: string }>(
    "INSERT INTO cvv_consumed (token) SELECT DISTINCT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING token",
    [tokens],
  );
  return new Set(rows.map((r) => r.token));
}

/** Drops markers older than any CVV can live (its authenticated creation time bounds it). */
export async function pruneCvvMarkers(q: Queryable, olderThanSeconds: number): Promise<void> {
  await q.query("DELETE FROM cvv_consumed WHERE consumed_at < now() - make_interval(secs => $1)", [olderThanSeconds]);
}
