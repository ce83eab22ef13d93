import { randomBytes } from "node:crypto";
import { z } from "zod";
import { fromRoot } from "./paths";

const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be host:port, e.g. 127.0.0.1:50051");
const positiveInt = (def: number, max?: number) => {
  let n = z.coerce.number().int().positive();
  if (max !== undefined) n = n.max(max);
  return n.default(def);
};

/** Every FIELDVAULT_* variable, its default and its rule. The README's configuration table mirrors this. */
const envSchema = z.object({
  FIELDVAULT_MODE: z.enum(["development", "production"]).default("development"),
  FIELDVAULT_LISTEN: hostPort.default("127.0.0.1:50051"),
  FIELDVAULT_DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL").optional(),
  FIELDVAULT_DATA_DIR: z.string().min(1).default("./data"),
  FIELDVAULT_REDIS_URL: z.string().regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL").optional(),
  FIELDVAULT_REDIS_PREFIX: z.string().min(1).default("fieldvault:"),
  FIELDVAULT_POLICY_FILE: z.string().min(1).optional(),
  FIELDVAULT_ROOT_KEY_FILE: z.string().min(1).optional(),
  FIELDVAULT_ROOT_KEY: z.string().min(1).optional(),
  FIELDVAULT_ACTIVE_ROOT_KEY_ID: z.string().min(1).optional(),
  FIELDVAULT_SIGNING_KEY_FILE: z.string().min(1).optional(),
  /** Retired checkpoint-signing public keys AccessLog.Verify still trusts: base64 Ed25519 public keys, comma-separated. */
  FIELDVAULT_AUDIT_TRUSTED_KEYS: z
    .string()
    .optional()
    .refine(
      (v) => !v || v.split(",").every((k) => /^[A-Za-z0-9+/]{43}=$/.test(k.trim()) && Buffer.from(k.trim(), "base64").length === 32),
      "must be base64 Ed25519 public keys (32 bytes), comma-separated",
    ),
  FIELDVAULT_TLS_CERT_FILE: z.string().min(1).optional(),
  FIELDVAULT_TLS_KEY_FILE: z.string().min(1).optional(),
  FIELDVAULT_TLS_CA_FILE: z.string().min(1).optional(),
  FIELDVAULT_METRICS_LISTEN: z.union([z.literal("off"), hostPort]).default("127.0.0.1:9464"),
  FIELDVAULT_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  FIELDVAULT_MAX_BATCH: positiveInt(1000, 100000),
  FIELDVAULT_CVV_TTL_SECONDS: positiveInt(900, 3600),
  FIELDVAULT_DB_POOL_SIZE: positiveInt(16, 500),
  FIELDVAULT_CHECKPOINT_EVERY: positiveInt(1000),
  FIELDVAULT_CHECKPOINT_INTERVAL_MS: positiveInt(10000),
  FIELDVAULT_KEY_CACHE_TTL_MS: positiveInt(1000),
  FIELDVAULT_CRYPTOPERIOD_DAYS: positiveInt(365),
  FIELDVAULT_AUTO_ROTATE: z.enum(["true", "false"]).default("false"),
  /** Per-category cryptoperiods overriding FIELDVAULT_CRYPTOPERIOD_DAYS, e.g. "card_number=180,card_cvv=90". */
  FIELDVAULT_CRYPTOPERIODS: z
    .string()
    .regex(/^\s*[a-z0-9_]+=\d+(\s*,\s*[a-z0-9_]+=\d+)*\s*$/, "must be category=days pairs separated by commas, e.g. card_number=180")
    .optional(),
  FIELDVAULT_AUTO_ROTATE_CHECK_MS: positiveInt(3_600_000),
  FIELDVAULT_SHUTDOWN_GRACE_MS: positiveInt(10000),
  FIELDVAULT_HEALTH_INTERVAL_MS: positiveInt(5000, 300000),
  FIELDVAULT_INSTANCE_ID: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(),
});

export interface Config {
  mode: "development" | "production";
  listen: string;
  databaseUrl?: string;
  dataDir: string;
  redisUrl?: string;
  redisPrefix: string;
  policyFile: string;
  rootKey: { files?: string[]; env?: string; activeId?: string };
  signingKeyFile: string;
  /** Extra public keys (32 bytes each) whose access-log checkpoints Verify accepts. */
  auditTrustedKeys: Uint8Array[];
  tls?: { certFile: string; keyFile: string; caFile: string };
  metricsListen?: string;
  logLevel: string;
  maxBatch: number;
  cvvTtlSeconds: number;
  dbPoolSize: number;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  keyCacheTtlMs: number;
  cryptoperiodDays: number;
  /** Cryptoperiod overrides in days, by category (validated against the registry at start). */
  cryptoperiodOverrides: Record<string, number>;
  autoRotate: boolean;
  autoRotateCheckMs: number;
  shutdownGraceMs: number;
  healthIntervalMs: number;
  instanceId: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

export const DEV_ROOT_KEY_FILE = fromRoot("keys-dev", "root.key");
export const DEV_SIGNING_KEY_FILE = fromRoot("keys-dev", "audit-signing.key");

/** Reads and validates configuration once; one message per bad variable, never its value. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const name = i.path.join(".");
        const empty = typeof env[name] === "string" && env[name]!.trim() === "";
        return empty ? `${name}: is set but empty; give it a value, or unset it to use the default` : `${name}: ${i.message}`;
      }),
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  const tlsParts = [e.FIELDVAULT_TLS_CERT_FILE, e.FIELDVAULT_TLS_KEY_FILE, e.FIELDVAULT_TLS_CA_FILE];
  if (tlsParts.some(Boolean) && !tlsParts.every(Boolean)) {
    problems.push("FIELDVAULT_TLS_CERT_FILE, FIELDVAULT_TLS_KEY_FILE and FIELDVAULT_TLS_CA_FILE must be set together");
  }
  if (e.FIELDVAULT_ROOT_KEY && e.FIELDVAULT_ROOT_KEY_FILE) {
    problems.push("FIELDVAULT_ROOT_KEY and FIELDVAULT_ROOT_KEY_FILE are mutually exclusive");
  }
  if (e.FIELDVAULT_MODE === "production") {
    if (!e.FIELDVAULT_DATABASE_URL) problems.push("FIELDVAULT_DATABASE_URL: required in production (no embedded storage)");
    if (!e.FIELDVAULT_REDIS_URL) problems.push("FIELDVAULT_REDIS_URL: required in production (no in-process stand-ins)");
    if (!tlsParts.every(Boolean)) problems.push("FIELDVAULT_TLS_*: production requires mutual TLS (cert, key and CA files)");
    if (!e.FIELDVAULT_ROOT_KEY && !e.FIELDVAULT_ROOT_KEY_FILE) {
      problems.push("FIELDVAULT_ROOT_KEY or FIELDVAULT_ROOT_KEY_FILE: required in production (the development key is refused)");
    }
    if (!e.FIELDVAULT_SIGNING_KEY_FILE) problems.push("FIELDVAULT_SIGNING_KEY_FILE: required in production");
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    mode: e.FIELDVAULT_MODE,
    listen: e.FIELDVAULT_LISTEN,
    databaseUrl: e.FIELDVAULT_DATABASE_URL,
    dataDir: e.FIELDVAULT_DATA_DIR,
    redisUrl: e.FIELDVAULT_REDIS_URL,
    redisPrefix: e.FIELDVAULT_REDIS_PREFIX,
    policyFile: e.FIELDVAULT_POLICY_FILE ?? fromRoot("policy", "default.yaml"),
    rootKey: {
      files: e.FIELDVAULT_ROOT_KEY ? undefined : (e.FIELDVAULT_ROOT_KEY_FILE?.split(",") ?? [DEV_ROOT_KEY_FILE]),
      env: e.FIELDVAULT_ROOT_KEY,
      activeId: e.FIELDVAULT_ACTIVE_ROOT_KEY_ID,
    },
    signingKeyFile: e.FIELDVAULT_SIGNING_KEY_FILE ?? DEV_SIGNING_KEY_FILE,
    auditTrustedKeys: (e.FIELDVAULT_AUDIT_TRUSTED_KEYS ?? "")
      .split(",")
      .filter((k) => k.trim())
      .map((k) => new Uint8Array(Buffer.from(k.trim(), "base64"))),
    tls: tlsParts.every(Boolean)
      ? { certFile: e.FIELDVAULT_TLS_CERT_FILE!, keyFile: e.FIELDVAULT_TLS_KEY_FILE!, caFile: e.FIELDVAULT_TLS_CA_FILE! }
      : undefined,
    metricsListen: e.FIELDVAULT_METRICS_LISTEN === "off" ? undefined : e.FIELDVAULT_METRICS_LISTEN,
    logLevel: e.FIELDVAULT_LOG_LEVEL,
    maxBatch: e.FIELDVAULT_MAX_BATCH,
    cvvTtlSeconds: e.FIELDVAULT_CVV_TTL_SECONDS,
    dbPoolSize: e.FIELDVAULT_DB_POOL_SIZE,
    checkpointEvery: e.FIELDVAULT_CHECKPOINT_EVERY,
    checkpointIntervalMs: e.FIELDVAULT_CHECKPOINT_INTERVAL_MS,
    keyCacheTtlMs: e.FIELDVAULT_KEY_CACHE_TTL_MS,
    cryptoperiodDays: e.FIELDVAULT_CRYPTOPERIOD_DAYS,
    cryptoperiodOverrides: Object.fromEntries(
      (e.FIELDVAULT_CRYPTOPERIODS ?? "")
        .split(",")
        .filter((p) => p.trim())
        .map((p) => p.split("=").map((x) => x.trim()))
        .map(([c, d]) => [c!, Number(d)]),
    ),
    autoRotate: e.FIELDVAULT_AUTO_ROTATE === "true",
    autoRotateCheckMs: e.FIELDVAULT_AUTO_ROTATE_CHECK_MS,
    shutdownGraceMs: e.FIELDVAULT_SHUTDOWN_GRACE_MS,
    healthIntervalMs: e.FIELDVAULT_HEALTH_INTERVAL_MS,
    instanceId: e.FIELDVAULT_INSTANCE_ID ?? `fv-${randomBytes(6).toString("hex")}`,
  };
}
