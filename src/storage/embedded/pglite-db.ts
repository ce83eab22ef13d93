import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import type { Db, Queryable, QueryResult } from "../db";

function queryable(q: Pick<PGlite, "query" | "exec">): Queryable {
  return {
    async query<R>(text: string, params?: unknown[]): Promise<QueryResult<R>> {
      if (params === undefined) {
        // Simple protocol: allows several statements (migrations), like pg without parameters.
        const results = await q.exec(text);
        const last = results[results.length - 1];
        return { rows: (last?.rows ?? []) as R[], rowCount: last?.affectedRows ?? last?.rows.length ?? 0 };
      }
      const r = await q.query<R>(text, params);
      return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
    },
  };
}

/** Embedded PostgreSQL (PGlite) in a data folder, or in memory when `dataDir` is "memory://". */
export async function createEmbeddedDb(dataDir: string): Promise<Db> {
  if (!dataDir.startsWith("memory://")) mkdirSync(dataDir, { recursive: true });
  const db = await PGlite.create(dataDir.startsWith("memory://") ? undefined : dataDir);
  const base = queryable(db);
  return {
    kind: "embedded",
    query: base.query,
    transaction: (fn) => db.transaction((tx) => fn(queryable(tx))),
    // PGlite has a single session: its own mutex already serialises everyone.
    withAdvisoryLock: (_key, fn) => fn(base),
    async listen(channel, onPayload) {
      return db.listen(channel, onPayload);
    },
    close: () => db.close(),
  };
}
