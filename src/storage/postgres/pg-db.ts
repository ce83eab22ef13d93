import pg from "pg";
import { DependencyError, VaultError } from "../../domain/errors";
import { type Db, isOutage, type Queryable, type QueryResult } from "../db";

// int8 (counts, sequences) as JS numbers: our values stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

// A domain error thrown by a transaction's own work (e.g. RESOURCE_EXHAUSTED) is not an outage: it passes through.
const wrap = (err: unknown): unknown => (err instanceof VaultError || !isOutage(err) ? err : new DependencyError("postgres", err));

function queryable(client: pg.Pool | pg.PoolClient): Queryable {
  return {
    async query<R>(text: string, params?: unknown[]): Promise<QueryResult<R>> {
      try {
        const r = await client.query(text, params as unknown[]);
        return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
      } catch (err) {
        throw wrap(err);
      }
    },
  };
}

export interface PgOptions {
  url: string;
  poolSize: number;
  /** Fail fast when the server is gone instead of hanging the caller. */
  connectTimeoutMs?: number;
  statementTimeoutMs?: number;
}

export function createPgDb(opts: PgOptions): Db {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 2000,
    statement_timeout: opts.statementTimeoutMs ?? 10000,
    query_timeout: (opts.statementTimeoutMs ?? 10000) + 1000,
    keepAlive: true,
  });
  pool.on("error", () => {
    /* an idle client died (e.g. server restart); the pool replaces it */
  });
  // A checked-out client (transaction, advisory lock) has no pool listener: without this, the server
  // going away mid-transaction emits an unhandled 'error' and kills the process. Its queries still
  // fail (→ UNAVAILABLE) and release() drops the dead client.
  pool.on("connect", (client) => client.on("error", () => undefined));
  const base = queryable(pool);

  async function connect(): Promise<pg.PoolClient> {
    try {
      return await pool.connect();
    } catch (err) {
      throw new DependencyError("postgres", err);
    }
  }

  return {
    kind: "postgres",
    query: base.query,
    async transaction(fn) {
      const client = await connect();
      const tx = queryable(client);
      let broken = false;
      try {
        await tx.query("BEGIN");
        const out = await fn(tx);
        await tx.query("COMMIT");
        return out;
      } catch (err) {
        broken = err instanceof DependencyError;
        await client.query("ROLLBACK").catch(() => (broken = true));
        throw wrap(err);
      } finally {
        client.release(broken);
      }
    },
    async withAdvisoryLock(key, fn) {
      const client = await connect();
      const session = queryable(client);
      try {
        await session.query("SELECT pg_advisory_lock($1)", [key]);
        try {
          return await fn(session);
        } finally {
          await session.query("SELECT pg_advisory_unlock($1)", [key]).catch(() => undefined);
        }
      } finally {
        client.release();
      }
    },
    async listen(channel, onPayload) {
      // A dedicated client outside the pool; reconnects if the server goes away.
      let client: pg.Client | undefined;
      let stopped = false;
      const start = async (): Promise<void> => {
        if (stopped) return;
        const c = new pg.Client({ connectionString: opts.url, connectionTimeoutMillis: 2000 });
        c.on("error", () => undefined);
        c.on("end", () => {
          if (!stopped) setTimeout(() => void start().catch(() => undefined), 500).unref();
        });
        c.on("notification", (n) => n.channel === channel && onPayload(n.payload ?? ""));
        try {
          await c.connect();
          await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
          client = c;
        } catch {
          await c.end().catch(() => undefined);
        }
      };
      await start();
      return async () => {
        stopped = true;
        await client?.end().catch(() => undefined);
      };
    },
    async close() {
      await pool.end();
    },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
  };
}
