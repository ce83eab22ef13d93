import { PGlite } from "@electric-sql/pglite";
import type { Db, Queryable, QueryResult } from "../db";
import { lockFolder } from "./folder-lock";
import { preparePrivateFolder, restrictFolder } from "./private-folder";

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

/**
 * Embedded PostgreSQL (PGlite) in a data folder, or in memory when `dataDir` is "memory://". A folder
 * is private (0700, files 0600) and locked for this process's life: a second vault on it refuses to
 * start (FolderLockedError) instead of silently losing one of the two vaults' writes.
 */
export async function createEmbeddedDb(dataDir: string): Promise<Db> {
  const inMemory = dataDir.startsWith("memory://");
  let lock: ReturnType<typeof lockFolder> | undefined;
  if (!inMemory) {
    preparePrivateFolder(dataDir);
    lock = lockFolder(dataDir);
  }
  let db: PGlite;
  try {
    db = await PGlite.create(inMemory ? undefined : dataDir);
    if (!inMemory) restrictFolder(dataDir);
  } catch (err) {
    lock?.release();
    throw err;
  }
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
    async close() {
      try {
        await db.close();
      } finally {
        lock?.release();
      }
    },
  };
}
