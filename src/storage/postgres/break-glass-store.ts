import type { Queryable } from "../db";

/** A break-glass request and, once approved, its grant (DESIGN §15). */
export interface BreakGlassGrant {
  id: string;
  requesterCaller: string;
  requestedBy: string;
  categories: string[];
  purpose: string;
  justification: string;
  durationSeconds: number;
  requestedAt: Date;
  approverCaller: string | null;
  approvedBy: string | null;
  approvedAt: Date | null;
  expiresAt: Date | null;
}

const date = (v: unknown) => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(String(v)));

function toGrant(r: Record<string, unknown>): BreakGlassGrant {
  return {
    id: String(r.id),
    requesterCaller: String(r.requester_caller),
    requestedBy: String(r.requested_by),
    categories: r.categories as string[],
    purpose: String(r.purpose),
    justification: String(r.justification),
    durationSeconds: Number(r.duration_seconds),
    requestedAt: date(r.requested_at)!,
    approverCaller: (r.approver_caller as string | null) ?? null,
    approvedBy: (r.approved_by as string | null) ?? null,
    approvedAt: date(r.approved_at),
    expiresAt: date(r.expires_at),
  };
}

export async function insertGrant(
  tx: Queryable,
  g: Pick<BreakGlassGrant, "id" | "requesterCaller" | "requestedBy" | "categories" | "purpose" | "justification" | "durationSeconds" | "requestedAt">,
): Promise<void> {
  await tx.query(
    `INSERT INTO break_glass_grants (id, requester_caller, requested_by, categories, purpose, justification, duration_seconds, requested_at)
     VALUES ($1, $2, $3, $4::text[], $5, $6, $7, $8)`,
    [g.id, g.requesterCaller, g.requestedBy, g.categories, g.purpose, g.justification, g.durationSeconds, g.requestedAt],
  );
}

/** Reads a grant; `forUpdate` locks it until the transaction ends (approval). */
export async function findGrant(q: Queryable, id: string, forUpdate = false): Promise<BreakGlassGrant | undefined> {
  const { rows } = await q.query<Record<string, unknown>>(`SELECT * FROM break_glass_grants WHERE id = $1${forUpdate ? " FOR UPDATE" : ""}`, [id]);
  return rows[0] ? toGrant(rows[0]) : undefined;
}

export async function approveGrant(
  tx: Queryable,
  a: { id: string; approvedBy: string; approverCaller: string; approvedAt: Date; expiresAt: Date },
): Promise<void> {
  await tx.query(
    `UPDATE break_glass_grants SET approved_by = $2, approver_caller = $3, approved_at = $4, expires_at = $5
      WHERE id = $1 AND approved_at IS NULL`,
    [a.id, a.approvedBy, a.approverCaller, a.approvedAt, a.expiresAt],
  );
}

/** The BreakGlassStore of services/break-glass.ts over one database. */
export function breakGlassStore(db: Queryable) {
  return {
    insert: insertGrant,
    find: (id: string, tx?: Queryable) => findGrant(tx ?? db, id, tx !== undefined),
    approve: approveGrant,
  };
}
