import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { pgBin } from "../../reliability/helpers/own-postgres";
import { freePort, waitFor } from "../../reliability/helpers/ports";

// PostgreSQL refuses to run as root: as root, run its tools as user postgres (as own-postgres.ts does).
const asPostgres = (tool: string, args: string[]) => {
  const isRoot = process.getuid?.() === 0;
  const [cmd, argv] = isRoot ? ["runuser", ["-u", "postgres", "--", pgBin(tool), ...args]] : [pgBin(tool), args];
  return execFileSync(cmd, argv as string[], { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 }).toString();
};

export interface PgNode {
  port: number;
  url: string;
  data: string;
  stop(mode?: "immediate" | "fast"): void;
  start(): Promise<void>;
  /** One query as the superuser. */
  sql<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
}

export interface PgPrimaryAndReplica {
  primary: PgNode;
  replica: PgNode;
  destroy(): Promise<void>;
}

/**
 * A PostgreSQL primary (initdb in a temp folder) and a streaming replica made from it with
 * `pg_basebackup -R`, each on a free port, both owned and removed by the test.
 */
export async function startPrimaryAndReplica(): Promise<PgPrimaryAndReplica> {
  const dir = mkdtempSync(join(tmpdir(), "fv-pgrep-"));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const running = new Set<PgNode>();

  const node = async (name: string, port: number): Promise<PgNode> => {
    const data = join(dir, name);
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 -c wal_level=replica -c max_wal_senders=5 -c hot_standby=on -c wal_receiver_status_interval=1s`;
    const n: PgNode = {
      port,
      url,
      data,
      stop(mode = "immediate") {
        asPostgres("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "30", "stop"]);
        running.delete(n);
      },
      async start() {
        asPostgres("pg_ctl", ["-D", data, "-o", opts, "-l", join(dir, `${name}.log`), "-w", "-t", "30", "start"]);
        running.add(n);
        await waitFor(`PostgreSQL ${name} to accept connections`, async () => (await n.sql("SELECT 1 AS one")).length === 1);
      },
      async sql(text, params) {
        const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
        await c.connect();
        try {
          return (await c.query(text, params)).rows;
        } finally {
          await c.end().catch(() => undefined);
        }
      },
    };
    return n;
  };

  try {
    const primary = await node("primary", await freePort());
    asPostgres("initdb", ["-D", primary.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]);
    await primary.start();
    const replica = await node("replica", await freePort());
    // -R writes standby.signal and primary_conninfo: the copy starts as a streaming replica.
    asPostgres("pg_basebackup", ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", replica.data, "-R", "-X", "stream", "--no-sync"]);
    await replica.start();
    await waitFor("the replica to stream from the primary", async () => (await primary.sql("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'")).length === 1);
    return {
      primary,
      replica,
      async destroy() {
        for (const n of running) {
          try {
            n.stop("immediate");
          } catch {
            /* already gone */
          }
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const n of running) {
      try {
        n.stop("immediate");
      } catch {
        /* already gone */
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
