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
  /** MAC over category ‖ version ‖ state (crypto/metadata-mac.ts); null only before it was first set. */
  stateMac: Uint8Array | null;
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
    state_mac: Uint8Array | null;
  }>(
    `SELECT category, version, state, wrapped_key, root_key_id, created_at, state_changed_at, state_mac
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
    stateMac: r.state_mac,
  }));
}

/** Inserts v1 for a category unless one exists (several instances may race at first start). */
export async function insertFirstKek(q: Queryable, category: string, wrappedKey: Uint8Array, rootKeyId: string, stateMac: Uint8Array): Promise<void> {
  await q.query(
    `INSERT INTO kek_versions (category, version, state, wrapped_key, root_key_id, state_mac)
     SELECT $1, 1, 'active', $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM kek_versions WHERE category = $1)
     ON CONFLICT DO NOTHING`,
    [category, Buffer.from(wrappedKey), rootKeyId, Buffer.from(stateMac)],
  );
}

/** Sets the MAC of a version's state (first start with state MACs, for rows that had none). */
export async function setKekStateMac(q: Queryable, category: string, version: number, stateMac: Uint8Array): Promise<void> {
  await q.query("UPDATE kek_versions SET state_mac = $3 WHERE category = $1 AND version = $2 AND state_mac IS NULL", [
    category,
    version,
    Buffer.from(stateMac),
  ]);
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

/** Locks a category's KEK rows (FOR UPDATE) for a state change; returns them oldest first. */
export async function lockKekRows(tx: Queryable, category: string): Promise<KekRow[]> {
  await tx.query("SELECT 1 FROM kek_versions WHERE category = $1 FOR UPDATE", [category]);
  return listKekRows(tx, category);
}

/** Reads a category's versions and states under a share lock: state changes wait for the holder. */
export async function shareKekStates(tx: Queryable, category: string): Promise<{ version: number; state: KeyState }[]> {
  const { rows } = await tx.query<{ version: number; state: KeyState }>(
    "SELECT version, state FROM kek_versions WHERE category = $1 ORDER BY version FOR SHARE",
    [category],
  );
  return rows;
}

export async function insertKekVersion(
  tx: Queryable,
  row: { category: string; version: number; wrappedKey: Uint8Array; rootKeyId: string; stateMac: Uint8Array },
): Promise<void> {
  await tx.query(
    "INSERT INTO kek_versions (category, version, state, wrapped_key, root_key_id, state_mac) VALUES ($1, $2, 'active', $3, $4, $5)",
    [row.category, row.version, Buffer.from(row.wrappedKey), row.rootKeyId, Buffer.from(row.stateMac)],
  );
}

export async function setKekState(
  tx: Queryable,
  category: string,
  version: number,
  state: Exclude<KeyState, "destroyed">,
  stateMac: Uint8Array,
): Promise<void> {
  await tx.query("UPDATE kek_versions SET state = $3, state_mac = $4, state_changed_at = now() WHERE category = $1 AND version = $2", [
    category,
    version,
    state,
    Buffer.from(stateMac),
  ]);
}

/** Deletes a version's key material for good: the row stays as a record, wrapped_key becomes NULL. */
export async function destroyKek(tx: Queryable, category: string, version: number, stateMac: Uint8Array): Promise<void> {
  await tx.query(
    `UPDATE kek_versions SET state = 'destroyed', wrapped_key = NULL, root_key_id = NULL, state_mac = $3, state_changed_at = now()
     WHERE category = $1 AND version = $2`,
    [category, version, Buffer.from(stateMac)],
  );
}

/** Every KEK row with key material, locked, for a root key rotation. */
export async function lockLiveKeks(tx: Queryable): Promise<KekRow[]> {
  await tx.query("SELECT 1 FROM kek_versions WHERE state <> 'destroyed' FOR UPDATE");
  return (await listKekRows(tx)).filter((r) => r.state !== "destroyed");
}

export async function rewrapKekRow(tx: Queryable, category: string, version: number, wrappedKey: Uint8Array, rootKeyId: string): Promise<void> {
  await tx.query("UPDATE kek_versions SET wrapped_key = $3, root_key_id = $4 WHERE category = $1 AND version = $2", [
    category,
    version,
    Buffer.from(wrappedKey),
    rootKeyId,
  ]);
}

export async function lockSecrets(tx: Queryable): Promise<{ name: string; wrapped: Uint8Array; rootKeyId: string }[]> {
  const { rows } = await tx.query<{ name: string; wrapped: Uint8Array; root_key_id: string }>(
    "SELECT name, wrapped, root_key_id FROM vault_secrets ORDER BY name FOR UPDATE",
    [],
  );
  return rows.map((r) => ({ name: r.name, wrapped: r.wrapped, rootKeyId: r.root_key_id }));
}

export async function updateSecret(tx: Queryable, name: string, wrapped: Uint8Array, rootKeyId: string): Promise<void> {
  await tx.query("UPDATE vault_secrets SET wrapped = $2, root_key_id = $3 WHERE name = $1", [name, Buffer.from(wrapped), rootKeyId]);
}

/** Tokens in PostgreSQL per category and KEK version (CVVs live in Redis and are not counted). */
export async function countTokensByVersion(q: Queryable, category?: string): Promise<Map<string, Map<number, number>>> {
  const { rows } = await q.query<{ category: string; kek_version: number; n: number }>(
    `SELECT category, kek_version, count(*)::int AS n FROM tokens
     WHERE ($1::text IS NULL OR category = $1) GROUP BY category, kek_version`,
    [category ?? null],
  );
  const out = new Map<string, Map<number, number>>();
  for (const r of rows) {
    const m = out.get(r.category) ?? new Map<number, number>();
    m.set(r.kek_version, r.n);
    out.set(r.category, m);
  }
  return out;
}

export async function countTokensUnder(q: Queryable, category: string, version: number): Promise<number> {
  const { rows } = await q.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version = $2", [
    category,
    version,
  ]);
  return rows[0]?.n ?? 0;
}

export interface DestroyRequest {
  id: string;
  category: string;
  version: number;
  cryptoShred: boolean;
  requestedBy: string;
  /** The policy caller behind `requestedBy` (null only for requests filed before migration 30). */
  requesterCaller: string | null;
  requestedAt: Date;
  approvedBy: string | null;
  approvedAt: Date | null;
}

export async function insertDestroyRequest(
  tx: Queryable,
  r: { id: string; category: string; version: number; cryptoShred: boolean; requestedBy: string; requesterCaller: string },
): Promise<void> {
  await tx.query(
    "INSERT INTO destroy_requests (id, category, version, crypto_shred, requested_by, requester_caller) VALUES ($1, $2, $3, $4, $5, $6)",
    [r.id, r.category, r.version, r.cryptoShred, r.requestedBy, r.requesterCaller],
  );
}

export async function lockDestroyRequest(tx: Queryable, id: string): Promise<DestroyRequest | undefined> {
  const { rows } = await tx.query<{
    id: string;
    category: string;
    version: number;
    crypto_shred: boolean;
    requested_by: string;
    requester_caller: string | null;
    requested_at: Date;
    approved_by: string | null;
    approved_at: Date | null;
  }>("SELECT * FROM destroy_requests WHERE id = $1 FOR UPDATE", [id]);
  const r = rows[0];
  return (
    r && {
      id: r.id,
      category: r.category,
      version: r.version,
      cryptoShred: r.crypto_shred,
      requestedBy: r.requested_by,
      requesterCaller: r.requester_caller,
      requestedAt: r.requested_at,
      approvedBy: r.approved_by,
      approvedAt: r.approved_at,
    }
  );
}

export async function approveDestroyRequest(tx: Queryable, id: string, approvedBy: string, approverCaller: string): Promise<void> {
  await tx.query("UPDATE destroy_requests SET approved_by = $2, approver_caller = $3, approved_at = now() WHERE id = $1", [id, approvedBy, approverCaller]);
}

/** The root key id that wraps the vault's secrets now, read under a share lock (a root rotation waits). */
export async function currentRootKeyId(tx: Queryable, secretName: string): Promise<string | undefined> {
  const { rows } = await tx.query<{ root_key_id: string }>("SELECT root_key_id FROM vault_secrets WHERE name = $1 FOR SHARE", [
    secretName,
  ]);
  return rows[0]?.root_key_id;
}
