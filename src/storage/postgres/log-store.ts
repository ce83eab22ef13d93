import type { ChainedEntry, Checkpoint } from "../../domain/access-log";
import type { Queryable } from "../db";

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
  const columns: unknown[][] = COLUMNS.map(() => []);
  for (const e of entries) {
    const values = [
      e.chainId, e.chainSeq, e.at, e.caller, e.auth, e.peer, e.action, e.category, e.token, e.purpose,
      e.justification, e.outcome, e.requestId, e.instanceId, e.detail, Buffer.from(e.prevHash), Buffer.from(e.hash),
    ];
    values.forEach((v, i) => columns[i]!.push(v));
  }
  const unnest = TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(", ");
  await tx.query(
    `INSERT INTO access_log (${COLUMNS.join(", ")}) SELECT * FROM unnest(${unnest}) ORDER BY 2`,
    columns,
  );
}

export async function insertCheckpoint(tx: Queryable, cp: Checkpoint): Promise<void> {
  await tx.query(
    `INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)`,
    [cp.chainId, cp.chainSeq, Buffer.from(cp.hash), cp.at, cp.keyId, Buffer.from(cp.signature)],
  );
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
