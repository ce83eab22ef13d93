import type { MaskedView } from "../../domain/categories";
import type { Queryable } from "../db";

/** A token and its category, as erased or unlinked. */
export interface SubjectToken {
  token: string;
  category: string;
}

/**
 * Unlinks a data subject from the tokens `caller` linked (and from links made before links
 * recorded a caller), limited to `categories` (those the caller may delete). A token is erased
 * only when no link remains, of any caller, and no caller tokenized it without a subject.
 * Links of other callers, and of categories outside `categories`, are left as they are.
 */
export async function eraseSubjectLinks(
  tx: Queryable,
  subjectRef: string,
  caller: string,
  categories: readonly string[],
): Promise<{ erased: SubjectToken[]; unlinked: SubjectToken[] }> {
  if (categories.length === 0) return { erased: [], unlinked: [] };
  const { rows } = await tx.query<{ token_id: string; category: string }>(
    `DELETE FROM token_subjects s USING tokens t
      WHERE s.subject_ref = $1 AND s.caller IN ($2, '') AND t.id = s.token_id AND t.category = ANY($3::text[])
      RETURNING s.token_id, t.category`,
    [subjectRef, caller, categories],
  );
  const byToken = new Map(rows.map((r) => [r.token_id, r.category]));
  if (byToken.size === 0) return { erased: [], unlinked: [] };
  const { rows: gone } = await tx.query<{ id: string }>(
    `DELETE FROM tokens t WHERE t.id = ANY($1::text[]) AND NOT t.held_without_subject
       AND NOT EXISTS (SELECT 1 FROM token_subjects s WHERE s.token_id = t.id)
     RETURNING t.id`,
    [[...byToken.keys()]],
  );
  const erasedSet = new Set(gone.map((r) => r.id));
  const list = (keep: (id: string) => boolean) =>
    [...byToken].filter(([id]) => keep(id)).map(([token, category]) => ({ token, category })).sort((a, b) => (a.token < b.token ? -1 : 1));
  return { erased: list((id) => erasedSet.has(id)), unlinked: list((id) => !erasedSet.has(id)) };
}

/**
 * The access-log position of the entry a call wrote with `marker` in its detail. The entry's time
 * is the one the call gave it, so (caller, at) finds it on the caller index in one probe; a wider
 * window is tried only if the writer stamped a different time.
 */
export async function findMarkedEntry(
  q: Queryable,
  e: { caller: string; at: Date; requestId: string; action: string; marker: string },
): Promise<{ seq: number; chainId: string; chainSeq: number } | undefined> {
  for (const slack of ["0 seconds", "5 minutes"]) {
    const { rows } = await q.query<Record<string, unknown>>(
      `SELECT seq, chain_id, chain_seq FROM access_log
        WHERE caller = $1 AND at BETWEEN $2::timestamptz - $6::interval AND $2::timestamptz + $6::interval
          AND request_id = $3 AND action = $4 AND strpos(detail, $5) > 0
        ORDER BY seq LIMIT 1`,
      [e.caller, e.at, e.requestId, e.action, e.marker, slack],
    );
    const r = rows[0];
    if (r) return { seq: Number(r.seq), chainId: String(r.chain_id), chainSeq: Number(r.chain_seq) };
  }
  return undefined;
}

export interface HeldToken {
  token: string;
  category: string;
  masked: MaskedView;
  createdAt: Date;
  expiresAt: Date | null;
}

/** Every token linked to the subject, by any caller, oldest first. */
export async function subjectTokens(q: Queryable, subjectRef: string): Promise<HeldToken[]> {
  const { rows } = await q.query<{ id: string; category: string; masked: MaskedView; created_at: Date; expires_at: Date | null }>(
    `SELECT DISTINCT t.id, t.category, t.masked, t.created_at, t.expires_at
       FROM token_subjects s JOIN tokens t ON t.id = s.token_id
      WHERE s.subject_ref = $1
      ORDER BY t.created_at, t.id`,
    [subjectRef],
  );
  const date = (v: unknown) => (v instanceof Date ? v : new Date(String(v)));
  return rows.map((r) => ({
    token: r.id,
    category: r.category,
    masked: r.masked,
    createdAt: date(r.created_at),
    expiresAt: r.expires_at === null ? null : date(r.expires_at),
  }));
}

export interface TokenLogEntry {
  seq: number;
  at: Date;
  caller: string;
  action: string;
  token: string;
  category: string;
  purpose: string;
  outcome: string;
}

/** Access-log entries about any of `tokens`, newest first by (at, seq), before the cursor, at most `limit`. */
export async function entriesAboutTokens(
  q: Queryable,
  tokens: readonly string[],
  before: { at: Date; seq: number } | undefined,
  limit: number,
): Promise<TokenLogEntry[]> {
  if (tokens.length === 0) return [];
  const { rows } = await q.query<Record<string, unknown>>(
    `SELECT seq, at, caller, action, token, category, purpose, outcome FROM access_log
      WHERE token = ANY($1::text[]) AND ($2::timestamptz IS NULL OR (at, seq) < ($2::timestamptz, $3::int8))
      ORDER BY at DESC, seq DESC LIMIT $4`,
    [tokens, before?.at ?? null, before?.seq ?? 0, limit],
  );
  return rows.map((r) => ({
    seq: Number(r.seq),
    at: r.at instanceof Date ? r.at : new Date(String(r.at)),
    caller: String(r.caller),
    action: String(r.action),
    token: String(r.token),
    category: String(r.category),
    purpose: String(r.purpose),
    outcome: String(r.outcome),
  }));
}

/** The SubjectStore of services/subject-rights.ts over one database. */
export function subjectStore(q: Queryable) {
  return {
    eraseLinks: eraseSubjectLinks,
    findMarkedEntry: (e: Parameters<typeof findMarkedEntry>[1]) => findMarkedEntry(q, e),
    subjectTokens: (ref: string) => subjectTokens(q, ref),
    entriesAboutTokens: (tokens: readonly string[], before: { at: Date; seq: number } | undefined, limit: number) => entriesAboutTokens(q, tokens, before, limit),
  };
}
