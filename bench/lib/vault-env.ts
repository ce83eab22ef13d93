import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { type BenchDatabase, REDIS_URL } from "./common";

/** The development policy, with rate budgets (detokenize, deterministic tokenize) that a benchmark does not run into. */
export function benchPolicy(dir: string): string {
  const doc = parse(readFileSync(join(__dirname, "..", "..", "policy", "default.yaml"), "utf8")) as Record<string, unknown>;
  doc.rate_limits = { detokenize_per_minute: 1_000_000_000, tokenize_deterministic_per_minute: 1_000_000_000 };
  const file = join(dir, "bench-policy.yaml");
  writeFileSync(file, stringify(doc));
  return file;
}

/** The vault's environment: real PostgreSQL and Redis, development mode, per-call info logs. */
export function vaultEnv(db: BenchDatabase, redisPrefix: string, policyFile: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: "production",
    FIELDVAULT_MODE: "development",
    FIELDVAULT_LISTEN: "127.0.0.1:0",
    // The bench reads the commit path's histograms (calls per flush, queue wait) from /metrics.
    FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0",
    FIELDVAULT_DATABASE_URL: db.url,
    FIELDVAULT_REDIS_URL: REDIS_URL,
    FIELDVAULT_REDIS_PREFIX: redisPrefix,
    FIELDVAULT_POLICY_FILE: policyFile,
    FIELDVAULT_INSTANCE_ID: "bench",
    ...extra,
  };
}
