import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { TestDatabase } from "../../helpers/backends";
import { freePort, waitFor } from "./ports";

/** The newest installed PostgreSQL's bin folder (Debian layout), or PATH. */
export function pgBin(tool: string): string {
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => existsSync(join(root, v, "bin", tool))).sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(root, versions[0], "bin", tool);
  }
  return tool;
}

const asPostgres = (tool: string, args: string[]) => {
  const isRoot = process.getuid?.() === 0;
  const [cmd, argv] = isRoot ? ["runuser", ["-u", "postgres", "--", pgBin(tool), ...args]] : [pgBin(tool), args];
  return execFileSync(cmd, argv as string[], { stdio: ["ignore", "pipe", "pipe"], timeout: 60_000 }).toString();
};

export interface OwnPostgres {
  port: number;
  /** A TestDatabase handle on this instance's `postgres` database (drop() is a no-op: destroy() removes it all). */
  db: TestDatabase;
  /** Stops the server. "immediate" is a crash (no checkpoint, backends killed); "fast" is a clean stop. */
  stop(mode?: "immediate" | "fast"): void;
  /** Starts it again on the same port and data directory; returns once it accepts connections. */
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/** A PostgreSQL instance this test owns: initdb in a temp dir, on a free port, trust auth, run as user postgres. */
export async function startOwnPostgres(): Promise<OwnPostgres> {
  const dir = mkdtempSync(join(tmpdir(), "fv-pg-"));
  const data = join(dir, "data");
  if (process.getuid?.() === 0) {
    const { uid, gid } = userIds("postgres");
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  asPostgres("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let running = false;

  const start = async () => {
    asPostgres("pg_ctl", ["-D", data, "-o", opts, "-l", join(dir, "log"), "-w", "-t", "30", "start"]);
    running = true;
    await waitFor("own PostgreSQL to accept connections", async () => {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      try {
        await c.connect();
        await c.query("SELECT 1");
        return true;
      } finally {
        await c.end().catch(() => undefined);
      }
    });
  };
  await start();
  return {
    port,
    db: { url, name: "postgres", drop: async () => undefined },
    stop(mode = "immediate") {
      asPostgres("pg_ctl", ["-D", data, "-m", mode, "-w", "-t", "30", "stop"]);
      running = false;
    },
    start,
    async destroy() {
      if (running) {
        try {
          asPostgres("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
        } catch {
          /* already gone */
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function userIds(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", name]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", name]).toString().trim());
  return { uid, gid };
}
