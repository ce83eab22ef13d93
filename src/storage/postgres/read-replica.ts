import { DependencyError } from "../../domain/errors";
import type { Db } from "../db";

/** Which database answered a read, and how stale it may be. */
export interface ReadSource {
  /** True when the read database (FIELDVAULT_DATABASE_READ_URL) answered, false for the primary. */
  readonly replica: boolean;
  /**
   * How far behind the primary the replica was when the read began, in seconds (0 on the primary).
   * Entries committed on the primary within this window may be missing from the answer; a check
   * that compares a replica's view with live state (e.g. an in-memory chain head) must allow for it.
   */
  readonly lagSeconds: number;
}

export const PRIMARY: ReadSource = { replica: false, lagSeconds: 0 };

export interface ReadRouter {
  /**
   * Runs a read-only `fn` on the replica when there is one and it answers, else on the primary.
   * A replica that cannot be reached (or fails with an outage mid-read) is skipped for
   * `retryAfterMs` and the read runs on the primary: log reads stay available during an
   * incident, at the price of loading the primary (reported by `onFallback`).
   */
  read<T>(fn: (db: Db, source: ReadSource) => Promise<T>): Promise<{ value: T; source: ReadSource }>;
  /** The replica's lag now (undefined without a replica or while it is unreachable). */
  lag(): Promise<number | undefined>;
}

export interface ReadRouterOptions {
  primary: Db;
  replica?: Db;
  retryAfterMs?: number;
  onFallback?: (err: unknown) => void;
  onLag?: (seconds: number) => void;
}

// On a standby: no lag while everything received is replayed and the WAL receiver streams (an idle
// primary sends nothing new, so "time since the last replayed transaction" would overstate it);
// otherwise the age of the last replayed transaction. Not a standby (promoted, or a primary given
// as the read URL): 0.
const LAG_SQL = `
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
  ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)
END::float8 AS lag`;

export function createReadRouter(opts: ReadRouterOptions): ReadRouter {
  const { primary, replica } = opts;
  const retryAfterMs = opts.retryAfterMs ?? 5000;
  let skipUntil = 0;

  async function measure(db: Db): Promise<number> {
    const { rows } = await db.query<{ lag: number }>(LAG_SQL);
    const lag = Math.max(0, Number(rows[0]?.lag ?? 0));
    opts.onLag?.(lag);
    return lag;
  }

  const unreachable = (err: unknown) => {
    skipUntil = Date.now() + retryAfterMs;
    opts.onFallback?.(err);
  };

  return {
    async read(fn) {
      if (replica && Date.now() >= skipUntil) {
        let lagSeconds: number | undefined;
        try {
          lagSeconds = await measure(replica);
          const source = { replica: true, lagSeconds };
          return { value: await fn(replica, source), source };
        } catch (err) {
          // Only an outage moves the read; a bad request fails the same on the primary.
          if (!(err instanceof DependencyError) && lagSeconds !== undefined) throw err;
          unreachable(err);
        }
      }
      return { value: await fn(primary, PRIMARY), source: PRIMARY };
    },
    async lag() {
      if (!replica) return undefined;
      try {
        return await measure(replica);
      } catch {
        return undefined;
      }
    },
  };
}
