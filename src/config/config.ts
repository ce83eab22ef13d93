import { randomBytes } from "node:crypto";
import { z } from "zod";
import { parseRedisUrl } from "../storage/redis/connect";
import { fromRoot } from "./paths";
import { tracingRequested } from "../observability/tracing";
import { type ProviderConfig, providerConfig, ROOT_KEY_PROVIDER_ENV } from "./root-key-settings";

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
  /** Optional read replica for AccessLog Query, SubjectReport and Verify. */
  FIELDVAULT_DATABASE_READ_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL").optional(),
  FIELDVAULT_DATA_DIR: z.string().min(1).default("./data"),
  FIELDVAULT_REDIS_URL: z
    .string()
    .superRefine((v, ctx) => {
      try {
        parseRedisUrl(v);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message.replace(/^FIELDVAULT_REDIS_URL: /, "") });
      }
    })
    .optional(),
  // No braces: a hash tag in the prefix would pin every key to one cluster slot.
  FIELDVAULT_REDIS_PREFIX: z.string().regex(/^[^\s{}]{1,128}$/, "must be 1–128 characters without spaces or braces").default("fieldvault:"),
  FIELDVAULT_POLICY_FILE: z.string().min(1).optional(),
  FIELDVAULT_ROOT_KEY_FILE: z.string().min(1).optional(),
  FIELDVAULT_ROOT_KEY: z.string().min(1).optional(),
  FIELDVAULT_ACTIVE_ROOT_KEY_ID: z.string().min(1).optional(),
  ...ROOT_KEY_PROVIDER_ENV,
  FIELDVAULT_SIGNING_KEY_FILE: z.string().min(1).optional(),
  /** Retired checkpoint-signing public keys AccessLog.Verify still trusts: base64 Ed25519 public keys, comma-separated. */
  FIELDVAULT_AUDIT_TRUSTED_KEYS: z
    .string()
    .optional()
    .refine(
      (v) => !v || v.split(",").every((k) => /^[A-Za-z0-9+/]{43}=$/.test(k.trim()) && Buffer.from(k.trim(), "base64").length === 32),
      "must be base64 Ed25519 public keys (32 bytes), comma-separated",
    ),
  /** Where signed checkpoints are also appended, one JSON line each, fsync'd (outside the database). */
  FIELDVAULT_AUDIT_ANCHOR_FILE: z.string().min(1).optional(),
  FIELDVAULT_TLS_CERT_FILE: z.string().min(1).optional(),
  FIELDVAULT_TLS_KEY_FILE: z.string().min(1).optional(),
  FIELDVAULT_TLS_CA_FILE: z.string().min(1).optional(),
  FIELDVAULT_METRICS_LISTEN: z.union([z.literal("off"), hostPort]).default("127.0.0.1:9464"),
  FIELDVAULT_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  FIELDVAULT_MAX_BATCH: positiveInt(1000, 100000),
  /** HTTP/2 streams (concurrent calls) one client connection may have open. */
  FIELDVAULT_MAX_CONCURRENT_STREAMS: positiveInt(100, 10000),
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
  /** Days a card's tokens outlive the end of its expiry month (DESIGN §13; the refund window). */
  FIELDVAULT_CARD_RETENTION_DAYS: z.coerce.number().int().min(0).max(3650).default(90),
  FIELDVAULT_PURGE_INTERVAL_MS: positiveInt(60_000),
  FIELDVAULT_PURGE_BATCH_SIZE: positiveInt(500, 10_000),
  /** The longest break-glass grant a caller may request (DESIGN §15). */
  FIELDVAULT_BREAK_GLASS_MAX_SECONDS: positiveInt(3600, 86400),
  /** Production with keys-dev/ material (compose.yaml's local try-out only): loudly logged, never for real data. */
  FIELDVAULT_ALLOW_DEV_MATERIAL: z.enum(["true", "false"]).default("false"),
  FIELDVAULT_INSTANCE_ID: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(),
  /**
   * How far V8 lets the old generation grow past what the last full GC kept, in percent
   * (src/runtime/heap.ts); 0 leaves V8's adaptive factor (up to 300%) in place.
   */
  /** Fields or tokens Tokenize and Detokenize work on at once, across calls (services/item-gate.ts). */
  FIELDVAULT_MAX_ITEMS_IN_FLIGHT: z.coerce.number().int().min(1).max(1_000_000).default(5000),
  FIELDVAULT_HEAP_GROWING_PERCENT: z.coerce.number().int().min(0).max(300).default(100),
});

export interface Config {
  mode: "development" | "production";
  listen: string;
  databaseUrl?: string;
  /** Read replica for log reads (Query, SubjectReport, Verify); unset → the primary. */
  databaseReadUrl?: string;
  dataDir: string;
  redisUrl?: string;
  redisPrefix: string;
  policyFile: string;
  rootKey: { files?: string[]; env?: string; activeId?: string } & ProviderConfig;
  signingKeyFile: string;
  /** Extra public keys (32 bytes each) whose access-log checkpoints Verify accepts. */
  auditTrustedKeys: Uint8Array[];
  /** Append every signed checkpoint here as a JSON line (unset: only the log stream). */
  auditAnchorFile?: string;
  tls?: { certFile: string; keyFile: string; caFile: string };
  metricsListen?: string;
  logLevel: string;
  maxBatch: number;
  maxConcurrentStreams: number;
  cvvTtlSeconds: number;
  dbPoolSize: number;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  keyCacheTtlMs: number;
  cryptoperiodDays: number;
  /** Cryptoperiod overrides in days, by category (validated against the registry at start). */
  cryptoperiodOverrides: Record<string, number>;
  autoRotate: boolean;
  /** OpenTelemetry tracing (FIELDVAULT_TRACING=on, or OTEL_EXPORTER_OTLP_ENDPOINT set; OTEL_SDK_DISABLED=true wins). */
  tracing: boolean;
  autoRotateCheckMs: number;
  shutdownGraceMs: number;
  healthIntervalMs: number;
  cardRetentionDays: number;
  purgeIntervalMs: number;
  purgeBatchSize: number;
  instanceId: string;
  breakGlassMaxSeconds: number;
  /** Production accepts development keys and certificates (loud WARN at start). */
  allowDevMaterial: boolean;
  /** Items Tokenize and Detokenize work on at once; more wait their turn (services/item-gate.ts). */
  maxItemsInFlight: number;
  /** Old-generation growth past the last full GC's live set, in percent; 0 = V8's own (runtime/heap.ts). */
  heapGrowingPercent: number;
  /** FIELDVAULT_MODE was not set (development by default). */
  modeDefaulted: boolean;
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
  const providers = providerConfig(e);
  problems.push(...providers.problems);
  const inHsm = providers.config.provider === "pkcs11";
  if (e.FIELDVAULT_DATABASE_READ_URL && !e.FIELDVAULT_DATABASE_URL) {
    problems.push("FIELDVAULT_DATABASE_READ_URL: needs FIELDVAULT_DATABASE_URL (a replica of the embedded store does not exist)");
  }
  if (e.FIELDVAULT_MODE === "production") {
    if (!e.FIELDVAULT_DATABASE_URL) problems.push("FIELDVAULT_DATABASE_URL: required in production (no embedded storage)");
    if (!e.FIELDVAULT_REDIS_URL) problems.push("FIELDVAULT_REDIS_URL: required in production (no in-process stand-ins)");
    if (!tlsParts.every(Boolean)) problems.push("FIELDVAULT_TLS_*: production requires mutual TLS (cert, key and CA files)");
    if (!inHsm && !e.FIELDVAULT_ROOT_KEY && !e.FIELDVAULT_ROOT_KEY_FILE) {
      problems.push("FIELDVAULT_ROOT_KEY or FIELDVAULT_ROOT_KEY_FILE: required in production (the development key is refused)");
    }
    if (!e.FIELDVAULT_SIGNING_KEY_FILE) problems.push("FIELDVAULT_SIGNING_KEY_FILE: required in production");
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    mode: e.FIELDVAULT_MODE,
    listen: e.FIELDVAULT_LISTEN,
    databaseUrl: e.FIELDVAULT_DATABASE_URL,
    databaseReadUrl: e.FIELDVAULT_DATABASE_READ_URL,
    dataDir: e.FIELDVAULT_DATA_DIR,
    redisUrl: e.FIELDVAULT_REDIS_URL,
    // A `?prefix=` in the Redis URL wins over FIELDVAULT_REDIS_PREFIX.
    redisPrefix: (e.FIELDVAULT_REDIS_URL && parseRedisUrl(e.FIELDVAULT_REDIS_URL).prefix) || e.FIELDVAULT_REDIS_PREFIX,
    policyFile: e.FIELDVAULT_POLICY_FILE ?? fromRoot("policy", "default.yaml"),
    rootKey: {
      // With pkcs11, file/env keys are optional extras that only unwrap (migration), never the development default.
      files: e.FIELDVAULT_ROOT_KEY ? undefined : (e.FIELDVAULT_ROOT_KEY_FILE?.split(",") ?? (inHsm ? [] : [DEV_ROOT_KEY_FILE])),
      env: e.FIELDVAULT_ROOT_KEY,
      activeId: e.FIELDVAULT_ACTIVE_ROOT_KEY_ID,
      ...providers.config,
    },
    signingKeyFile: e.FIELDVAULT_SIGNING_KEY_FILE ?? DEV_SIGNING_KEY_FILE,
    auditTrustedKeys: (e.FIELDVAULT_AUDIT_TRUSTED_KEYS ?? "")
      .split(",")
      .filter((k) => k.trim())
      .map((k) => new Uint8Array(Buffer.from(k.trim(), "base64"))),
    auditAnchorFile: e.FIELDVAULT_AUDIT_ANCHOR_FILE,
    tls: tlsParts.every(Boolean)
      ? { certFile: e.FIELDVAULT_TLS_CERT_FILE!, keyFile: e.FIELDVAULT_TLS_KEY_FILE!, caFile: e.FIELDVAULT_TLS_CA_FILE! }
      : undefined,
    metricsListen: e.FIELDVAULT_METRICS_LISTEN === "off" ? undefined : e.FIELDVAULT_METRICS_LISTEN,
    logLevel: e.FIELDVAULT_LOG_LEVEL,
    heapGrowingPercent: e.FIELDVAULT_HEAP_GROWING_PERCENT,
    maxItemsInFlight: e.FIELDVAULT_MAX_ITEMS_IN_FLIGHT,
    maxBatch: e.FIELDVAULT_MAX_BATCH,
    maxConcurrentStreams: e.FIELDVAULT_MAX_CONCURRENT_STREAMS,
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
    tracing: tracingRequested(env),
    autoRotateCheckMs: e.FIELDVAULT_AUTO_ROTATE_CHECK_MS,
    shutdownGraceMs: e.FIELDVAULT_SHUTDOWN_GRACE_MS,
    healthIntervalMs: e.FIELDVAULT_HEALTH_INTERVAL_MS,
    cardRetentionDays: e.FIELDVAULT_CARD_RETENTION_DAYS,
    purgeIntervalMs: e.FIELDVAULT_PURGE_INTERVAL_MS,
    purgeBatchSize: e.FIELDVAULT_PURGE_BATCH_SIZE,
    instanceId: e.FIELDVAULT_INSTANCE_ID ?? `fv-${randomBytes(6).toString("hex")}`,
    breakGlassMaxSeconds: e.FIELDVAULT_BREAK_GLASS_MAX_SECONDS,
    allowDevMaterial: e.FIELDVAULT_ALLOW_DEV_MATERIAL === "true",
    modeDefaulted: env.FIELDVAULT_MODE === undefined,
  };
}
