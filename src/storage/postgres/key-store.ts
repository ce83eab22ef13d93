import type { Queryable } from "../db";

export type KeyState = "active" | "decrypt_only" | "disabled" | "destroyed";

export interface KekRow {
  category: string;
  version: number;
  state: KeyState;
  wrappedKey: Uint8Array | null;
  rootKeyId: string | null;
  createdAt: Date;
  stateChangedAt: Date;
}

export async function listKekRows(q: Queryable, category?: string): Promise<KekRow[]> {
  const { rows } = await q.query<{
    category: string;
    version: number;
    state: KeyState;
    wrapped_key: Uint8Array | null;
    root_key_id: string | null;
    created_at: Date;
    state_changed_at: Date;
  }>(
    `SELECT category, version, state, wrapped_key, root_key_id, created_at, state_changed_at
     FROM kek_versions WHERE ($1::text IS NULL OR category = $1) ORDER BY category, version`,
    [category ?? null],
  );
  return rows.map((r) => ({
    category: r.category,
    version: r.version,
    state: r.state,
    wrappedKey: r.wrapped_key,
    rootKeyId: r.root_key_id,
    createdAt: r.created_at,
    stateChangedAt: r.state_changed_at,
  }));
}

/** Inserts v1 for a category unless one exists (several instances may race at first start). */
export async function insertFirstKek(q: Queryable, category: string, wrappedKey: Uint8Array, rootKeyId: string): Promise<void> {
  await q.query(
    `INSERT INTO kek_versions (category, version, state, wrapped_key, root_key_id)
     SELECT $1, 1, 'active', $2, $3 WHERE NOT EXISTS (SELECT 1 FROM kek_versions WHERE category = $1)
     ON CONFLICT DO NOTHING`,
    [category, Buffer.from(wrappedKey), rootKeyId],
  );
}

export async function getSecret(q: Queryable, name: string): Promise<{ wrapped: Uint8Array; rootKeyId: string } | undefined> {
  const { rows } = await q.query<{ wrapped: Uint8Array; root_key_id: string }>(
    "SELECT wrapped, root_key_id FROM vault_secrets WHERE name = $1",
    [name],
  );
  return rows[0] && { wrapped: rows[0].wrapped, rootKeyId: rows[0].root_key_id };
}

export async function insertSecret(q: Queryable, name: string, wrapped: Uint8Array, rootKeyId: string): Promise<void> {
  await q.query("INSERT INTO vault_secrets (name, wrapped, root_key_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [
    name,
    Buffer.from(wrapped),
    rootKeyId,
  ]);
}

/** Channel on which key changes are announced to every instance. */
export const KEY_CHANGE_CHANNEL = "fieldvault_key_change";

export async function notifyKeyChange(q: Queryable, category: string): Promise<void> {
  await q.query("SELECT pg_notify($1, $2)", [KEY_CHANGE_CHANNEL, category]);
}
