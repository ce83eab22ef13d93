import type { MaskedView } from "../../domain/categories";
import type { Queryable } from "../db";
import type { NewToken, TokenRecord } from "../ports";

interface TokenRow {
  id: string;
  category: string;
  kek_version: number;
  wrapped_dek: Uint8Array;
  ciphertext: Uint8Array;
  masked: MaskedView;
  created_at: Date;
  expires_at: Date | null;
}

const toRecord = (r: TokenRow): TokenRecord => ({
  id: r.id,
  category: r.category,
  kekVersion: r.kek_version,
  wrappedDek: r.wrapped_dek,
  ciphertext: r.ciphertext,
  masked: r.masked,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
});

/** A Buffer over the same bytes (pg wants Buffers; copying every blob showed in the profile). */
const view = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

const fpKey = (t: NewToken) => `${t.category}:${view(t.fingerprint!).toString("base64")}`;

/**
 * Inserts tokens in one statement. Deterministic tokens that already exist (same category and
 * fingerprint) keep their id and their ciphertext, take the later expiry, and gain the new holder.
 * Returns, for each input row, the token id that now holds its value.
 */
export async function insertTokens(tx: Queryable, tokens: readonly NewToken[]): Promise<string[]> {
  if (tokens.length === 0) return [];
  // Several rows of one batch may carry the same deterministic value: insert it once.
  const firstByFp = new Map<string, NewToken>();
  const unique: NewToken[] = [];
  for (const t of tokens) {
    if (t.fingerprint) {
      const k = fpKey(t);
      const seen = firstByFp.get(k);
      if (seen) {
        if (seen.expiresAt && (!t.expiresAt || t.expiresAt > seen.expiresAt)) firstByFp.set(k, { ...seen, expiresAt: t.expiresAt });
        continue;
      }
      firstByFp.set(k, t);
    }
    unique.push(t);
  }
  const rows = unique.map((t) => (t.fingerprint ? firstByFp.get(fpKey(t))! : t));
  const heldWithoutSubject = new Set(tokens.filter((t) => t.subjectRef === null).map((t) => (t.fingerprint ? fpKey(t) : t.id)));
  const { rows: out } = await tx.query<{ id: string; category: string; fingerprint: Uint8Array | null }>(
    `INSERT INTO tokens (id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked,
                         held_without_subject, created_at, expires_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[], $5::bytea[], $6::bytea[], $7::jsonb[],
                          $8::bool[], $9::timestamptz[], $10::timestamptz[])
     ON CONFLICT (category, fingerprint) WHERE fingerprint IS NOT NULL DO UPDATE SET
       expires_at = CASE WHEN tokens.expires_at IS NULL OR EXCLUDED.expires_at IS NULL THEN NULL
                         ELSE greatest(tokens.expires_at, EXCLUDED.expires_at) END,
       held_without_subject = tokens.held_without_subject OR EXCLUDED.held_without_subject
     RETURNING id, category, fingerprint`,
    [
      rows.map((t) => t.id),
      rows.map((t) => t.category),
      rows.map((t) => t.kekVersion),
      rows.map((t) => view(t.wrappedDek)),
      rows.map((t) => view(t.ciphertext)),
      rows.map((t) => (t.fingerprint ? view(t.fingerprint) : null)),
      rows.map((t) => JSON.stringify(t.masked)),
      rows.map((t) => heldWithoutSubject.has(t.fingerprint ? fpKey(t) : t.id)),
      rows.map((t) => t.createdAt),
      rows.map((t) => t.expiresAt),
    ],
  );
  const idByFp = new Map<string, string>();
  for (const r of out) if (r.fingerprint) idByFp.set(`${r.category}:${Buffer.from(r.fingerprint).toString("base64")}`, r.id);
  const ids = tokens.map((t) => (t.fingerprint ? idByFp.get(fpKey(t))! : t.id));

  const links = new Set<string>();
  const subjects: string[] = [];
  const linkIds: string[] = [];
  const linkCallers: string[] = [];
  tokens.forEach((t, i) => {
    if (t.subjectRef === null) return;
    const caller = t.subjectCaller ?? "";
    const k = `${t.subjectRef}\u0000${ids[i]}\u0000${caller}`;
    if (links.has(k)) return;
    links.add(k);
    subjects.push(t.subjectRef);
    linkIds.push(ids[i]!);
    linkCallers.push(caller);
  });
  if (subjects.length) {
    await tx.query(
      `INSERT INTO token_subjects (subject_ref, token_id, caller) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
       ON CONFLICT DO NOTHING`,
      [subjects, linkIds, linkCallers],
    );
  }
  return ids;
}

export async function findTokens(q: Queryable, ids: readonly string[]): Promise<Map<string, TokenRecord>> {
  const out = new Map<string, TokenRecord>();
  if (ids.length === 0) return out;
  const { rows } = await q.query<TokenRow>(
    `SELECT id, category, kek_version, wrapped_dek, ciphertext, masked, created_at, expires_at
     FROM tokens WHERE id = ANY($1::text[])`,
    [ids],
  );
  for (const r of rows) out.set(r.id, toRecord(r));
  return out;
}

/** Erases tokens outright (their subject links go with them). Returns the ids erased. */
export async function deleteTokens(tx: Queryable, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await tx.query<{ id: string }>("DELETE FROM tokens WHERE id = ANY($1::text[]) RETURNING id", [ids]);
  return rows.map((r) => r.id);
}
