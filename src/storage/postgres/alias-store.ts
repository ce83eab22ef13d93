import { randomInt } from "node:crypto";
import { VaultError } from "../../domain/errors";
import {
  isOpaqueToken,
  isPreservingToken,
  type PanShape,
  preservingCandidate,
  rangeCapacity,
  rangeKey,
  rangeTokens,
} from "../../domain/token-formats";
import type { Queryable } from "../db";
import type { TokenRecord } from "../ports";
import { findTokens } from "./token-store";

/**
 * Format-preserving tokens are aliases (`token_aliases`) of a token row: one stored value, one
 * ciphertext bound to the row's opaque id, and at most one preserving spelling per row (so a PAN
 * tokenized again with PRESERVING gets the same digits). Erasing or purging the row erases its
 * alias with it (ON DELETE CASCADE).
 */

/** Random candidates tried per token before the range is examined as a whole. */
const RANDOM_ROUNDS = 8;
/** Ranges up to this many tokens are enumerated when random picks keep colliding. */
const ENUMERATE_UP_TO = 100_000;

/**
 * Looks tokens up in either form. The map is keyed by the token as given; each record's `id` is
 * the row's opaque id (what the ciphertext's AAD binds). Opaque-only lookups never touch aliases.
 */
export async function findTokensAnyForm(q: Queryable, tokens: readonly string[]): Promise<Map<string, TokenRecord>> {
  const opaque = tokens.filter(isOpaqueToken);
  const preserving = tokens.filter(isPreservingToken);
  const out = opaque.length ? await findTokens(q, opaque) : new Map<string, TokenRecord>();
  if (preserving.length) {
    const ids = await resolveAliases(q, preserving);
    const rows = await findTokens(q, [...new Set(ids.values())]);
    for (const [alias, id] of ids) {
      const r = rows.get(id);
      if (r) out.set(alias, r);
    }
  }
  return out;
}

/** alias → opaque token id, for the aliases that exist. */
export async function resolveAliases(q: Queryable, aliases: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (aliases.length === 0) return out;
  const { rows } = await q.query<{ alias: string; token_id: string }>(
    "SELECT alias, token_id FROM token_aliases WHERE alias = ANY($1::text[])",
    [aliases],
  );
  for (const r of rows) out.set(r.alias, r.token_id);
  return out;
}

/** opaque token id → its preserving alias, for the ids that have one. */
export async function aliasesOf(q: Queryable, ids: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (ids.length === 0) return out;
  const { rows } = await q.query<{ alias: string; token_id: string }>(
    "SELECT alias, token_id FROM token_aliases WHERE token_id = ANY($1::text[])",
    [ids],
  );
  for (const r of rows) out.set(r.token_id, r.alias);
  return out;
}

/**
 * Every spelling of each token given (either form): its opaque id and its preserving alias, where
 * they exist; a token nothing is stored under spells only itself. This is the one place that
 * answers "which log entries are about this token" (AccessLog.Query by token, SubjectReport):
 * entries record the token as the caller presented it.
 */
export async function tokenSpellings(q: Queryable, tokens: readonly string[]): Promise<Map<string, string[]>> {
  const byAlias = await resolveAliases(q, tokens.filter(isPreservingToken));
  const ids = [...new Set([...tokens.filter(isOpaqueToken), ...byAlias.values()])];
  const aliasOf = await aliasesOf(q, ids);
  const out = new Map<string, string[]>();
  for (const t of tokens) {
    const id = isOpaqueToken(t) ? t : byAlias.get(t);
    const all = new Set([t]);
    if (id) {
      all.add(id);
      const a = aliasOf.get(id);
      if (a) all.add(a);
    }
    out.set(t, [...all]);
  }
  return out;
}

/**
 * Gives each token row a preserving alias, in the caller's transaction, and returns id → alias.
 * A row that already has one keeps it (deterministic per PAN). New aliases are random; those that
 * collide (another PAN's token, or a concurrent transaction's) are drawn again. A range with no
 * free token left is RESOURCE_EXHAUSTED — the unique index means a duplicate can never be stored.
 */
export async function assignAliases(
  tx: Queryable,
  wants: readonly { tokenId: string; shape: PanShape }[],
  digit?: (n: number) => number,
): Promise<Map<string, string>> {
  const shapeOf = new Map(wants.map((w) => [w.tokenId, w.shape]));
  const out = await aliasesOf(tx, [...shapeOf.keys()]);
  let missing = [...shapeOf.keys()].filter((id) => !out.has(id));
  const taken = new Map<string, Set<string>>(); // range → aliases known taken (loaded when collisions persist)
  for (let round = 0; missing.length; round++) {
    const resolved: { id: string; alias: string }[] = [];
    for (const id of missing) resolved.push({ id, alias: await propose(tx, shapeOf.get(id)!, round, taken, digit) });
    const { rows } = await tx.query<{ token_id: string; alias: string }>(
      `INSERT INTO token_aliases (token_id, alias, range_key)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
       ON CONFLICT DO NOTHING RETURNING token_id, alias`,
      [resolved.map((p) => p.id), resolved.map((p) => p.alias), resolved.map((p) => rangeKey(shapeOf.get(p.id)!))],
    );
    for (const r of rows) {
      out.set(r.token_id, r.alias);
      taken.get(rangeKey(shapeOf.get(r.token_id)!))?.add(r.alias);
    }
    missing = missing.filter((id) => !out.has(id));
    if (missing.length === 0) break;
    // A row may have gained an alias from a concurrent call: that one is the PAN's token.
    for (const [id, alias] of await aliasesOf(tx, missing)) out.set(id, alias);
    missing = missing.filter((id) => !out.has(id));
    for (const p of resolved) if (missing.includes(p.id)) taken.get(rangeKey(shapeOf.get(p.id)!))?.add(p.alias);
  }
  return out;
}

async function propose(
  tx: Queryable,
  shape: PanShape,
  round: number,
  taken: Map<string, Set<string>>,
  digit?: (n: number) => number,
): Promise<string> {
  if (round < RANDOM_ROUNDS) return preservingCandidate(shape, digit);
  const key = rangeKey(shape);
  let used = taken.get(key);
  if (!used) {
    const { rows } = await tx.query<{ alias: string }>("SELECT alias FROM token_aliases WHERE range_key = $1", [key]);
    used = new Set(rows.map((r) => r.alias));
    taken.set(key, used);
  }
  const capacity = rangeCapacity(shape.length);
  if (used.size >= capacity) throw exhausted(shape);
  if (capacity <= ENUMERATE_UP_TO) {
    const free: string[] = [];
    for (const t of rangeTokens(shape)) if (!used.has(t)) free.push(t);
    if (free.length === 0) throw exhausted(shape);
    return free[(digit ?? randomInt)(free.length)]!;
  }
  // A large range this crowded does not happen with one token per PAN; keep drawing, known-taken excluded.
  for (let i = 0; i < 10_000; i++) {
    const c = preservingCandidate(shape, digit);
    if (!used.has(c)) return c;
  }
  throw exhausted(shape);
}

function exhausted(shape: PanShape): VaultError {
  // Names the range's length only: its first 6 and last 4 are card data.
  return new VaultError(
    "RESOURCE_EXHAUSTED",
    `card_number: no unique format-preserving token is left in this ${shape.length}-digit BIN range (first 6 and last 4); use TOKEN_FORMAT_OPAQUE`,
  );
}
