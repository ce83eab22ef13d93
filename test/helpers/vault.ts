import { Writable } from "node:stream";
import { startVault, type Vault } from "../../src/app";
import { loadConfig } from "../../src/config/config";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "./backends";
import { clients, type Clients } from "./client";

export type Backend = "postgres" | "embedded";

export interface TestVault {
  vault: Vault;
  clients: Clients;
  db?: TestDatabase;
  redisPrefix?: string;
  /** Every JSON log line the vault wrote. */
  logs: string[];
  stop(): Promise<void>;
}

/**
 * A real vault on a real port: PostgreSQL (its own database) and Redis (its own prefix), or the
 * embedded default (PGlite in memory, in-process stand-ins).
 */
export async function startTestVault(backend: Backend, env: Record<string, string> = {}, reuse?: { db?: TestDatabase; redisPrefix?: string }): Promise<TestVault> {
  const db = backend === "postgres" ? (reuse?.db ?? (await createTestDatabase())) : undefined;
  const redisPrefix = backend === "postgres" ? (reuse?.redisPrefix ?? newRedisPrefix()) : undefined;
  const config = loadConfig({
    FIELDVAULT_LISTEN: "127.0.0.1:0",
    FIELDVAULT_METRICS_LISTEN: "off",
    FIELDVAULT_LOG_LEVEL: "info",
    FIELDVAULT_DATA_DIR: "memory://",
    FIELDVAULT_SHUTDOWN_GRACE_MS: "3000",
    ...(db ? { FIELDVAULT_DATABASE_URL: db.url, FIELDVAULT_REDIS_URL: REDIS_URL, FIELDVAULT_REDIS_PREFIX: redisPrefix! } : {}),
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  const vault = await startVault(config, { logDestination: sink });
  const c = clients(vault.address);
  let stopped = false;
  return {
    vault,
    clients: c,
    db,
    redisPrefix,
    logs,
    async stop() {
      if (stopped) return;
      stopped = true;
      c.close();
      await vault.close();
      if (!reuse?.db) await db?.drop();
      if (redisPrefix && !reuse?.redisPrefix) await dropRedisPrefix(redisPrefix);
    },
  };
}

/** Backends the storage tests run against: both by default; FIELDVAULT_TEST_BACKENDS narrows. */
export const BACKENDS: Backend[] = ((process.env.FIELDVAULT_TEST_BACKENDS ?? "postgres,embedded").split(",") as Backend[]);
