import { VaultError } from "../domain/errors";

/** The SQL surface every store uses; implemented by `pg` (postgres/) and PGlite (embedded/). */
export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<QueryResult<R>>;
}

export interface Db extends Queryable {
  readonly kind: "postgres" | "embedded";
  /** Runs `fn` in one transaction on one connection; rolls back if it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Runs `fn` while holding a session-level advisory lock. */
  withAdvisoryLock<T>(key: number, fn: (session: Queryable) => Promise<T>): Promise<T>;
  /** LISTEN on a channel; returns an unsubscribe function. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
  /** Connection pool counts, where there is a pool (metrics). */
  poolStats?(): { total: number; idle: number; waiting: number };
}

/** SQLSTATE classes that are our own bugs or data conflicts, not an outage. */
const LOGIC_CLASSES = ["22", "23", "42", "P0", "2B", "25", "0A"];

export function isOutage(err: unknown): boolean {
  // A symbol is a control-flow signal thrown through a transaction (the commit queue's REQUEUE),
  // never a failure of the database.
  if (typeof err === "symbol") return false;
  // A domain error raised by a transaction's own work (e.g. an integrity check) is not an outage.
  if (err instanceof VaultError) return err.code === "UNAVAILABLE";
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return !LOGIC_CLASSES.includes(code.slice(0, 2));
  return true;
}
