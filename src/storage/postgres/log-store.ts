import type { ChainedEntry } from "../../domain/access-log";
import type { AnyCheckpoint, SignedCheckpointV2 } from "../../domain/checkpoint";
import type { Queryable } from "../db";
import { byteaArray, intArray, textArray, timestampArray } from "./array-literal";

const COLUMNS = [
  "chain_id", "chain_seq", "at", "caller", "auth", "peer", "action", "category", "token", "purpose",
  "justification", "outcome", "request_id", "instance_id", "detail", "prev_hash", "hash",
] as const;
const TYPES = [
  "text", "int8", "timestamptz", "text", "text", "text", "text", "text", "text", "text",
  "text", "text", "text", "text", "text", "bytea", "bytea",
];

/** Appends chained entries in one statement, in chain order. */
export async function insertLogEntries(tx: Queryable, entries: readonly ChainedEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const text = (f: (e: ChainedEntry) => string) => textArray(entries.map(f));
  const columns = [
    text((e) => e.chainId),
    intArray(entries.map((e) => e.chainSeq)),
    timestampArray(entries.map((e) => e.at)),
    text((e) => e.caller),
    text((e) => e.auth),
    text((e) => e.peer),
    text((e) => e.action),
    text((e) => e.category),
    text((e) => e.token),
    text((e) => e.purpose),
    text((e) => e.justification),
    text((e) => e.outcome),
    text((e) => e.requestId),
    text((e) => e.instanceId),
    text((e) => e.detail),
    byteaArray(entries.map((e) => e.prevHash)),
    byteaArray(entries.map((e) => e.hash)),
  ];
  const unnest = TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(", ");
  await tx.query(
    `INSERT INTO access_log (${COLUMNS.join(", ")}) SELECT * FROM unnest(${unnest}) ORDER BY 2`,
    columns,
  );
}

/** Inserts one v2 checkpoint (chain_seq = its size, hash = its head). */
export async function insertCheckpoint(tx: Queryable, cp: SignedCheckpointV2): Promise<void> {
  await tx.query(
    `INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature, version, number, prev_checkpoint, closed)
     VALUES ($1, $2, $3, $4, $5, $6, 2, $7, $8, $9)`,
    [cp.chainId, cp.size, Buffer.from(cp.head), cp.at, cp.keyId, Buffer.from(cp.signature), cp.number, Buffer.from(cp.prev), cp.closed],
  );
}

/** Serialises checkpoint numbering of one signing key across every writer (held until COMMIT). */
export async function lockCheckpointKey(tx: Queryable, keyId: string): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(1719035760, hashtext($1))", [keyId]);
}

/** The highest-numbered v2 checkpoints stored under a key id (newest first). */
export async function latestCheckpointsOfKey(q: Queryable, keyId: string, limit: number): Promise<StoredCheckpoint[]> {
  const { rows } = await q.query<Record<string, unknown>>(
    `${SELECT_CHECKPOINT} WHERE version = 2 AND key_id = $1 ORDER BY number DESC, id DESC LIMIT $2`,
    [keyId, limit],
  );
  return rows.map(toCheckpoint);
}

/** Entries of a chain after `after`, in chain order (only chain_seq and hash). */
export async function chainTail(q: Queryable, chainId: string, after: number, limit: number): Promise<{ chainSeq: number; hash: Uint8Array }[]> {
  const { rows } = await q.query<Record<string, unknown>>(
    "SELECT chain_seq, hash FROM access_log WHERE chain_id = $1 AND chain_seq > $2 ORDER BY chain_seq LIMIT $3",
    [chainId, after, limit],
  );
  return rows.map((r) => ({ chainSeq: num(r.chain_seq), hash: bytes(r.hash) }));
}

export interface LogRow {
  seq: number;
  chain_id: string;
  chain_seq: number;
  at: Date;
  caller: string;
  auth: string;
  peer: string;
  action: string;
  category: string;
  token: string;
  purpose: string;
  justification: string;
  outcome: string;
  request_id: string;
  instance_id: string;
  detail: string;
  prev_hash: Uint8Array;
  hash: Uint8Array;
}

export const rowToEntry = (r: LogRow): ChainedEntry & { seq: number } => ({
  seq: r.seq,
  chainId: r.chain_id,
  chainSeq: r.chain_seq,
  at: r.at,
  caller: r.caller,
  auth: r.auth as ChainedEntry["auth"],
  peer: r.peer,
  action: r.action,
  category: r.category,
  token: r.token,
  purpose: r.purpose,
  justification: r.justification,
  outcome: r.outcome,
  requestId: r.request_id,
  instanceId: r.instance_id,
  detail: r.detail,
  prevHash: r.prev_hash,
  hash: r.hash,
});

// ---- Reading the log (AccessLog.Query / Verify). Every read is bounded by a LIMIT. ----

/** PGlite may hand int8 back as bigint or string; pg as number (see pg-db.ts). */
const num = (v: unknown): number => Number(v);
const bytes = (v: unknown): Uint8Array => (v instanceof Uint8Array ? v : new Uint8Array(Buffer.from(String(v), "hex")));

function toEntry(r: Record<string, unknown>): ChainedEntry & { seq: number } {
  return rowToEntry({
    ...(r as unknown as LogRow),
    seq: num(r.seq),
    chain_seq: num(r.chain_seq),
    at: r.at instanceof Date ? r.at : new Date(String(r.at)),
    prev_hash: bytes(r.prev_hash),
    hash: bytes(r.hash),
  });
}

const SELECT_ENTRY = `SELECT seq, ${COLUMNS.join(", ")} FROM access_log`;

export interface LogQueryFilter {
  caller?: string;
  /** One token, or all spellings of one (see alias-store.ts `tokenSpellings`). */
  token?: string | readonly string[];
  category?: string;
  purpose?: string;
  outcome?: string;
  action?: string;
  /** Inclusive. */
  since?: Date;
  /** Exclusive. */
  until?: Date;
  /** Only entries older than this one in (at, seq) order (the page cursor). */
  before?: { at: Date; seq: number };
}

/** Matching entries, newest first by (at, seq) — the order of the indexes — at most `limit`. */
export async function queryLogEntries(q: Queryable, f: LogQueryFilter, limit: number): Promise<(ChainedEntry & { seq: number })[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace("?", `$${params.length}`));
  };
  for (const col of ["caller", "token", "category", "purpose", "outcome", "action"] as const) {
    const v = f[col];
    if (Array.isArray(v)) add(`${col} = ANY(?::text[])`, v);
    else if (v) add(`${col} = ?`, v);
  }
  if (f.since) add("at >= ?", f.since);
  if (f.until) add("at < ?", f.until);
  if (f.before) {
    add("(at, seq) < (?", f.before.at);
    params.push(f.before.seq);
    where[where.length - 1] += `, $${params.length})`;
  }
  params.push(limit);
  const { rows } = await q.query<Record<string, unknown>>(
    `${SELECT_ENTRY} ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY at DESC, seq DESC LIMIT $${params.length}`,
    params,
  );
  return rows.map(toEntry);
}

export interface ChainSpan {
  chainId: string;
  /** Lowest / highest chain_seq of the chain's entries inside the range (undefined: no entries). */
  lo?: number;
  hi?: number;
  /** Lowest global seq of those entries. */
  firstSeq?: number;
}

/**
 * Every chain with entries (or checkpoints) in the time range, ordered by its first global seq.
 * One aggregate over the table; no rows are held in memory.
 */
export async function logChains(q: Queryable, range: { since?: Date; until?: Date }): Promise<ChainSpan[]> {
  const since = range.since ?? null;
  const until = range.until ?? null;
  const { rows } = await q.query<Record<string, unknown>>(
    `SELECT chain_id, min(chain_seq) AS lo, max(chain_seq) AS hi, min(seq) AS first_seq FROM access_log
      WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)
      GROUP BY chain_id`,
    [since, until],
  );
  const spans = new Map<string, ChainSpan>();
  for (const r of rows) {
    spans.set(String(r.chain_id), { chainId: String(r.chain_id), lo: num(r.lo), hi: num(r.hi), firstSeq: num(r.first_seq) });
  }
  const cps = await q.query<{ chain_id: string }>(
    `SELECT DISTINCT chain_id FROM log_checkpoints
      WHERE ($1::timestamptz IS NULL OR at >= $1) AND ($2::timestamptz IS NULL OR at < $2)`,
    [since, until],
  );
  for (const r of cps.rows) if (!spans.has(r.chain_id)) spans.set(r.chain_id, { chainId: r.chain_id });
  return [...spans.values()].sort((a, b) => (a.firstSeq ?? Infinity) - (b.firstSeq ?? Infinity) || a.chainId.localeCompare(b.chainId));
}

/** One page of a chain in chain order: chain_seq in (after, upTo]. */
export async function chainEntries(
  q: Queryable,
  chainId: string,
  after: number,
  upTo: number | undefined,
  limit: number,
): Promise<(ChainedEntry & { seq: number })[]> {
  const { rows } = await q.query<Record<string, unknown>>(
    `${SELECT_ENTRY} WHERE chain_id = $1 AND chain_seq > $2 AND ($3::int8 IS NULL OR chain_seq <= $3)
      ORDER BY chain_seq LIMIT $4`,
    [chainId, after, upTo ?? null, limit],
  );
  return rows.map(toEntry);
}

export type StoredCheckpoint = AnyCheckpoint & { id: number };

const SELECT_CHECKPOINT = "SELECT id, chain_id, chain_seq, hash, at, key_id, signature, version, number, prev_checkpoint, closed FROM log_checkpoints";

function toCheckpoint(r: Record<string, unknown>): StoredCheckpoint {
  const common = {
    id: num(r.id),
    chainId: String(r.chain_id),
    size: num(r.chain_seq),
    head: bytes(r.hash),
    at: r.at instanceof Date ? r.at : new Date(String(r.at)),
    keyId: String(r.key_id),
    signature: bytes(r.signature),
  };
  if (num(r.version) !== 2) return { version: 1, ...common };
  return {
    version: 2,
    ...common,
    number: num(r.number),
    prev: r.prev_checkpoint == null ? new Uint8Array(0) : bytes(r.prev_checkpoint),
    closed: r.closed === true || r.closed === "t",
  };
}

/** One page of a chain's checkpoints in (chain_seq, id) order, after the given position. */
export async function chainCheckpoints(
  q: Queryable,
  chainId: string,
  after: { chainSeq: number; id: number },
  upTo: number | undefined,
  limit: number,
): Promise<StoredCheckpoint[]> {
  const { rows } = await q.query<Record<string, unknown>>(
    `${SELECT_CHECKPOINT}
      WHERE chain_id = $1 AND (chain_seq, id) > ($2, $3) AND ($4::int8 IS NULL OR chain_seq <= $4)
      ORDER BY chain_seq, id LIMIT $5`,
    [chainId, after.chainSeq, after.id, upTo ?? null, limit],
  );
  return rows.map(toCheckpoint);
}

/** One page of every v2 checkpoint in (key_id, number, id) order, after the given position. */
export async function keyCheckpoints(q: Queryable, after: { keyId: string; number: number; id: number }, limit: number): Promise<StoredCheckpoint[]> {
  const { rows } = await q.query<Record<string, unknown>>(
    `${SELECT_CHECKPOINT} WHERE version = 2 AND (key_id, number, id) > ($1, $2, $3) ORDER BY key_id, number, id LIMIT $4`,
    [after.keyId, after.number, after.id, limit],
  );
  return rows.map(toCheckpoint);
}

/** The v2 checkpoints stored with this key id and number (normally one). */
export async function checkpointsNumbered(q: Queryable, keyId: string, number: number): Promise<StoredCheckpoint[]> {
  const { rows } = await q.query<Record<string, unknown>>(`${SELECT_CHECKPOINT} WHERE version = 2 AND key_id = $1 AND number = $2 ORDER BY id`, [keyId, number]);
  return rows.map(toCheckpoint);
}

/** A chain's entry at one position, or its last entry (`chainSeq` undefined). */
export async function chainEntryAt(q: Queryable, chainId: string, chainSeq?: number): Promise<{ seq: number; chainSeq: number; hash: Uint8Array } | undefined> {
  const { rows } = await q.query<Record<string, unknown>>(
    chainSeq === undefined
      ? "SELECT seq, chain_seq, hash FROM access_log WHERE chain_id = $1 ORDER BY chain_seq DESC LIMIT 1"
      : "SELECT seq, chain_seq, hash FROM access_log WHERE chain_id = $1 AND chain_seq = $2 ORDER BY seq LIMIT 1",
    chainSeq === undefined ? [chainId] : [chainId, chainSeq],
  );
  const r = rows[0];
  return r ? { seq: num(r.seq), chainSeq: num(r.chain_seq), hash: bytes(r.hash) } : undefined;
}

/** The entry of a chain whose `column` equals `value`, other than `exceptSeq` (used only to explain a broken link). */
export async function findChainEntryBy(
  q: Queryable,
  chainId: string,
  column: "hash" | "prev_hash",
  value: Uint8Array,
  exceptSeq: number,
): Promise<{ seq: number; chainSeq: number } | undefined> {
  const { rows } = await q.query<Record<string, unknown>>(
    `SELECT seq, chain_seq FROM access_log WHERE chain_id = $1 AND ${column === "hash" ? "hash" : "prev_hash"} = $2 AND seq <> $3
      ORDER BY chain_seq LIMIT 1`,
    [chainId, Buffer.from(value), exceptSeq],
  );
  const r = rows[0];
  return r ? { seq: num(r.seq), chainSeq: num(r.chain_seq) } : undefined;
}

function logReads(q: Queryable) {
  return {
    query: (f: LogQueryFilter, limit: number) => queryLogEntries(q, f, limit),
    chains: (range: { since?: Date; until?: Date }) => logChains(q, range),
    chainEntries: (chainId: string, after: number, upTo: number | undefined, limit: number) => chainEntries(q, chainId, after, upTo, limit),
    chainCheckpoints: (chainId: string, after: { chainSeq: number; id: number }, upTo: number | undefined, limit: number) =>
      chainCheckpoints(q, chainId, after, upTo, limit),
    findChainEntryBy: (chainId: string, column: "hash" | "prev_hash", value: Uint8Array, exceptSeq: number) =>
      findChainEntryBy(q, chainId, column, value, exceptSeq),
    keyCheckpoints: (after: { keyId: string; number: number; id: number }, limit: number) => keyCheckpoints(q, after, limit),
    checkpointsNumbered: (keyId: string, number: number) => checkpointsNumbered(q, keyId, number),
    chainEntryAt: (chainId: string, chainSeq?: number) => chainEntryAt(q, chainId, chainSeq),
  };
}

/**
 * The read side of the log (the audit service's AuditStore). `snapshot` runs several reads in one
 * REPEATABLE READ, READ ONLY transaction, so entries and checkpoints committed meanwhile by live
 * writers cannot make a consistent log look broken.
 */
export function auditStore(db: Queryable & { transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> }) {
  return {
    ...logReads(db),
    snapshot: <T>(fn: (reads: ReturnType<typeof logReads>) => Promise<T>): Promise<T> =>
      db.transaction(async (tx) => {
        await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", []);
        return fn(logReads(tx));
      }),
  };
}
