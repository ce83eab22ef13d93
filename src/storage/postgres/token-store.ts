import type { MaskedView } from "../../domain/categories";
import type { Queryable } from "../db";
import { IntegrityError } from "../../domain/errors";
import type { NewToken, TokenIntegrity, TokenRecord } from "../ports";
import { boolArray, byteaArray, intArray, jsonbArray, textArray, timestampArray } from "./array-literal";

interface TokenRow {
  id: string;
  category: string;
  kek_version: number;
  wrapped_dek: Uint8Array;
  ciphertext: Uint8Array;
  masked: MaskedView;
  fingerprint: Uint8Array | null;
  created_at: Date;
  expires_at: Date | null;
  meta_mac: Uint8Array | null;
}

const toRecord = (r: TokenRow): TokenRecord => ({
  id: r.id,
  category: r.category,
  kekVersion: r.kek_version,
  wrappedDek: r.wrapped_dek,
  ciphertext: r.ciphertext,
  masked: r.masked,
  fingerprint: r.fingerprint,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  metaMac: r.meta_mac,
});

/** A Buffer over the same bytes (pg wants Buffers; copying every blob showed in the profile). */
const view = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

const fpKey = (t: NewToken) => `${t.category}:${view(t.fingerprint!).toString("base64")}`;

/**
 * Inserts tokens in one statement. Deterministic tokens that already exist (same category and
 * fingerprint) keep their id and their ciphertext, take the later expiry, and gain the new holder.
 * Returns, for each input row, the token id that now holds its value.
 *
 * With `integrity`, new rows get a MAC over their metadata, and an existing row a deterministic
 * value resolves to must pass its MAC check first (a fingerprint moved onto another row by a
 * database writer would otherwise hand out that row's token): the upsert changes no MAC-covered
 * column, so the row it returns is the row as it was; its new expiry is then written with a new MAC.
 */
export async function insertTokens(tx: Queryable, tokens: readonly NewToken[], integrity?: TokenIntegrity): Promise<string[]> {
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
  // Only rows that already existed come back (a fresh insert has xmax 0; a row the upsert touched
  // does not): returning every new row's blobs cost as much pg parsing as sending them.
  const { rows: out } = await tx.query<TokenRow>(
    `WITH ins AS (
       INSERT INTO tokens (id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked,
                           held_without_subject, created_at, expires_at, meta_mac)
       SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[], $5::bytea[], $6::bytea[], $7::jsonb[],
                            $8::bool[], $9::timestamptz[], $10::timestamptz[], $11::bytea[])
       ON CONFLICT (category, fingerprint) WHERE fingerprint IS NOT NULL DO UPDATE SET
         held_without_subject = tokens.held_without_subject OR EXCLUDED.held_without_subject
       RETURNING id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked, created_at, expires_at, meta_mac,
                 NOT (xmax = 0) AS existed)
     SELECT id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked, created_at, expires_at, meta_mac
       FROM ins WHERE existed`,
    [
      textArray(rows.map((t) => t.id)),
      textArray(rows.map((t) => t.category)),
      intArray(rows.map((t) => t.kekVersion)),
      byteaArray(rows.map((t) => t.wrappedDek)),
      byteaArray(rows.map((t) => t.ciphertext)),
      byteaArray(rows.map((t) => t.fingerprint)),
      jsonbArray(rows.map((t) => JSON.stringify(t.masked))),
      boolArray(rows.map((t) => heldWithoutSubject.has(t.fingerprint ? fpKey(t) : t.id))),
      timestampArray(rows.map((t) => t.createdAt)),
      timestampArray(rows.map((t) => t.expiresAt)),
      byteaArray(rows.map((t) => (integrity ? integrity.mac(t) : null))),
    ],
  );
  const idByFp = new Map<string, string>();
  for (const t of rows) if (t.fingerprint) idByFp.set(fpKey(t), t.id);
  const inserted = new Set(rows.map((t) => t.id));
  const extend: { id: string; expiresAt: Date | null; mac: Uint8Array | null }[] = [];
  for (const r of out) {
    if (!r.fingerprint) continue;
    const k = `${r.category}:${Buffer.from(r.fingerprint).toString("base64")}`;
    idByFp.set(k, r.id);
    if (inserted.has(r.id)) continue; // ours after all: never trust xmax to mean more than it must
    // An existing deterministic token: check it, then keep the latest expiry asked for.
    const rec = toRecord(r);
    if (integrity && !integrity.intact(rec)) throw new IntegrityError();
    const want = firstByFp.get(k)!.expiresAt;
    const next = rec.expiresAt === null || want === null ? null : new Date(Math.max(rec.expiresAt.getTime(), want.getTime()));
    if ((next?.getTime() ?? null) === (rec.expiresAt?.getTime() ?? null)) continue;
    // A legacy row (no MAC yet) stays legacy until rewrap upgrades it.
    extend.push({ id: r.id, expiresAt: next, mac: integrity && rec.metaMac ? integrity.mac({ ...rec, expiresAt: next }) : null });
  }
  if (extend.length) {
    await tx.query(
      `UPDATE tokens t SET expires_at = u.expires_at, meta_mac = u.meta_mac
       FROM unnest($1::text[], $2::timestamptz[], $3::bytea[]) AS u(id, expires_at, meta_mac) WHERE t.id = u.id`,
      [extend.map((e) => e.id), extend.map((e) => e.expiresAt), extend.map((e) => (e.mac ? view(e.mac) : null))],
    );
  }
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
    `SELECT id, category, kek_version, wrapped_dek, ciphertext, masked, fingerprint, created_at, expires_at, meta_mac
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
