import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { Config } from "./config/config";
import { loadRootKeys } from "./config/root-keys";
import { loadSigningKey } from "./config/signing-key";
import { readySodium } from "./crypto/sodium";
import { defaultRegistry } from "./domain/categories";
import { AccessLogService } from "./gen/fieldvault/v1/access_log";
import { KeyAdminService } from "./gen/fieldvault/v1/key_admin";
import { TokenServiceService } from "./gen/fieldvault/v1/token_service";
import { createLogger, type Logger } from "./observability/logger";
import { Metrics } from "./observability/metrics";
import { createAudit } from "./services/audit";
import { CommitQueue } from "./services/commit-queue";
import { createKeyLifecycle } from "./services/key-lifecycle";
import { Keyring } from "./services/keyring";
import { PolicyHolder } from "./services/policy-holder";
import { createTokenization } from "./services/tokenization";
import type { Db } from "./storage/db";
import { createMemoryCvvStore } from "./storage/embedded/memory-cvv-store";
import { createLocalRateLimiter } from "./storage/local-rate-limiter";
import { MIGRATIONS, migrate, schemaVersion } from "./storage/migrations";
import type { CvvStore, RateLimiter } from "./storage/ports";
import { auditStore } from "./storage/postgres/log-store";
import { createPgDb } from "./storage/postgres/pg-db";
import { findTokens } from "./storage/postgres/token-store";
import { createReadRouter } from "./storage/postgres/read-replica";
import { connectRedis, parseRedisUrl, readyWithin, type RedisClient } from "./storage/redis/connect";
import { createKeyChangeNotices } from "./storage/redis/key-notices";
import { createRedisCvvStore } from "./storage/redis/redis-cvv-store";
import { createRedisRateLimiter } from "./storage/redis/redis-rate-limiter";
import { accessLogHandlers } from "./transport/grpc/access-log";
import type { CallHooks } from "./transport/grpc/call";
import { Health, within } from "./transport/grpc/health";
import { addReflection } from "./transport/grpc/reflection";
import { keyAdminHandlers } from "./transport/grpc/key-admin";
import { tokenServiceHandlers } from "./transport/grpc/token-service";

export interface Vault {
  readonly address: string;
  readonly port: number;
  readonly config: Config;
  readonly db: Db;
  readonly log: Logger;
  readonly policy: PolicyHolder;
  readonly keyring: Keyring;
  readonly commits: CommitQueue;
  readonly health: Health;
  readonly metrics: Metrics;
  /** Where GET /metrics is served (undefined when FIELDVAULT_METRICS_LISTEN=off). */
  readonly metricsAddress?: string;
  /** Stops accepting calls, lets in-flight ones finish (bounded), flushes the log, closes pools. */
  close(): Promise<void>;
}

export interface StartOptions {
  /** Where JSON logs go (default stdout). */
  logDestination?: import("pino").DestinationStream;
}

/** The composition root: the one place that chooses implementations and wires them together. */
export async function startVault(config: Config, opts: StartOptions = {}): Promise<Vault> {
  await readySodium();
  const log = createLogger(config.logLevel, opts.logDestination);
  const registry = defaultRegistry();
  const policy = new PolicyHolder(config.policyFile, registry.names());
  const roots = loadRootKeys(config);
  const signingKey = loadSigningKey(config.signingKeyFile);
  const cleanup: (() => Promise<unknown>)[] = [];

  try {
    const db = config.databaseUrl
      ? createPgDb({ url: config.databaseUrl, poolSize: config.dbPoolSize })
      : // PGlite (~45 MB resident once loaded) is loaded only when the embedded store is used.
        await (await import("./storage/embedded/pglite-db")).createEmbeddedDb(config.dataDir);
    cleanup.push(() => db.close());
    if (db.kind === "embedded") {
      log.warn({ dataDir: config.dataDir }, "storage: embedded PostgreSQL (PGlite) — development only; set FIELDVAULT_DATABASE_URL for production");
    } else {
      log.info("storage: PostgreSQL");
    }
    const applied = await migrate(db);
    if (applied.length) log.info({ applied }, "migrations applied");

    // Redis (one server, Sentinel or Cluster: connect.ts); it fails fast while away, so CVV calls
    // answer UNAVAILABLE. Start-up waits a little for it, never forever.
    let redis: RedisClient | undefined;
    if (config.redisUrl) {
      const target = parseRedisUrl(config.redisUrl);
      const client = (redis = connectRedis(target));
      client.on("error", () => undefined); // reconnects on its own; calls fail UNAVAILABLE meanwhile
      cleanup.push(async () => client.disconnect());
      if (!(await readyWithin(client, 2000))) log.warn({ topology: target.kind }, "cache: Redis not ready yet; CVV calls fail UNAVAILABLE until it is");
      log.info({ topology: target.kind }, "cache: Redis");
    }

    const keyring = await Keyring.open(db, roots, registry.names(), config.keyCacheTtlMs, redis && createKeyChangeNotices(redis, config.redisPrefix));
    cleanup.push(() => keyring.close());

    const metrics = new Metrics({
      categories: () => registry.names(),
      purposes: () => Object.keys(policy.get().doc.purposes),
      callerName: (identity) => policy.get().callerName(identity),
    });
    cleanup.push(() => metrics.close());
    metrics.keyVersions(() => registry.names().flatMap((category) => keyring.versions(category).map((v) => ({ category, state: v.state }))));
    if (db.kind === "postgres") metrics.dbPool(config.dbPoolSize, db.poolStats);

    let cvv: CvvStore;
    let rateLimiter: RateLimiter;
    const localLimiter = createLocalRateLimiter();
    if (redis) {
      cvv = createRedisCvvStore(redis, config.redisPrefix);
      let warned = 0;
      rateLimiter = createRedisRateLimiter(redis, config.redisPrefix, localLimiter, () => {
        if (Date.now() - warned > 10_000) log.warn("rate budgets: Redis unreachable, enforcing local budgets");
        warned = Date.now();
      });
    } else {
      cvv = createMemoryCvvStore();
      rateLimiter = localLimiter;
      cleanup.push(() => cvv.close());
      log.warn("cache: in-process stand-ins for Redis (CVVs, rate budgets) — development only; set FIELDVAULT_REDIS_URL");
    }

    // The commit queue writes on connections of its own, so a flush never waits behind lookups.
    // PGlite has one session, so there its flushes cannot overlap.
    const commitDb = config.databaseUrl ? createPgDb({ url: config.databaseUrl, poolSize: 2 }) : db;
    if (commitDb !== db) cleanup.push(() => commitDb.close());
    const commits = new CommitQueue(commitDb, {
      chainId: `${config.instanceId}.${randomBytes(4).toString("hex")}`,
      signingKey,
      checkpointEvery: config.checkpointEvery,
      checkpointIntervalMs: config.checkpointIntervalMs,
      maxFlushesInFlight: commitDb === db ? 1 : 2,
      onFlush: (s) => metrics.commit(s),
    });
    const checkpointTimer = setInterval(() => void commits.checkpoint().catch(() => undefined), config.checkpointIntervalMs);
    checkpointTimer.unref();

    const tokenization = createTokenization({
      registry,
      policy: () => policy.get(),
      keyring,
      commits,
      findTokens: (ids) => findTokens(db, ids),
      cvv,
      rateLimiter,
      instanceId: config.instanceId,
      maxBatch: config.maxBatch,
      cvvTtlSeconds: config.cvvTtlSeconds,
      onDetokenized: (e) => metrics.detokenized(e),
    });

    const inFlight = new Set<Promise<unknown>>();
    const hooks: CallHooks = {
      log,
      identity: { allowSelfAsserted: config.mode === "development" },
      onDone: (e) => metrics.rpc(e.method, e.code, e.seconds),
      track: (p) => {
        inFlight.add(p);
        return p.finally(() => inFlight.delete(p));
      },
    };

    const server = new Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
    server.addService(TokenServiceService, tokenServiceHandlers(hooks, tokenization));
    // Log reads (Query, Verify; SubjectReport) may go to a read replica; writes never do. A read
    // service takes `readRouter.read((db, source) => …)` and reports `source` (served_by_replica, lag).
    const replicaDb = config.databaseReadUrl ? createPgDb({ url: config.databaseReadUrl, poolSize: Math.max(2, Math.ceil(config.dbPoolSize / 4)), connectTimeoutMs: 1000 }) : undefined;
    if (replicaDb) cleanup.push(() => replicaDb.close());
    let replicaWarned = 0;
    const replicaMetrics = replicaDb && metrics.dbReplica(() => readRouter.lag());
    const readRouter = createReadRouter({
      primary: db,
      replica: replicaDb,
      onFallback: (err) => {
        replicaMetrics?.fallback();
        if (Date.now() - replicaWarned > 10_000) log.warn({ err: (err as Error).message }, "read replica unreachable: log reads go to the primary");
        replicaWarned = Date.now();
      },
    });
    if (replicaDb) log.info("storage: log reads (Query, SubjectReport, Verify) go to the read replica");
    const audit = createAudit({
      policy: () => policy.get(),
      commits,
      store: auditStore(db),
      readStore: (fn) => readRouter.read((readDb) => fn(auditStore(readDb))),
      // Verify trusts only keys from configuration, never a key stored next to the log.
      trustedKeys: [signingKey.publicKey, ...config.auditTrustedKeys],
      instanceId: config.instanceId,
    });
    server.addService(AccessLogService, accessLogHandlers(hooks, audit));
    const keyLifecycle = createKeyLifecycle({
      registry,
      policy: () => policy.get(),
      keyring,
      commits,
      db,
      instanceId: config.instanceId,
      cryptoperiodDays: config.cryptoperiodDays,
      cryptoperiodOverrides: config.cryptoperiodOverrides,
    });
    server.addService(KeyAdminService, keyAdminHandlers(hooks, keyLifecycle));
    cleanup.push(async () => keyLifecycle.stop());
    if (config.autoRotate) {
      keyLifecycle.startAutoRotation(config.autoRotateCheckMs, (err) => log.warn({ err: (err as Error).message }, "automatic key rotation failed; retrying at the next check"));
      log.info({ checkMs: config.autoRotateCheckMs }, "automatic key rotation on: categories past their cryptoperiod rotate");
    }

    // Health: SERVING only while PostgreSQL answers and every migration is applied.
    const latestMigration = Math.max(...MIGRATIONS.map((m) => m.version));
    let wasReady: boolean | undefined;
    const health = new Health({
      intervalMs: config.healthIntervalMs,
      probe: async () => {
        if (redis) void within(redis.ping().then(() => true, () => false), 2000, false).then((up) => metrics.setRedisUp(up));
        return within(schemaVersion(db).then((v) => v >= latestMigration), 3000, false);
      },
      onResult: (ready) => {
        metrics.setDbUp(ready);
        if (ready !== wasReady && wasReady !== undefined) {
          if (ready) log.info("health: SERVING (PostgreSQL reachable, migrations applied)");
          else log.warn("health: NOT_SERVING (PostgreSQL unreachable or migrations missing)");
        }
        wasReady = ready;
      },
    });
    cleanup.push(async () => health.stop());
    health.addToServer(server);
    addReflection(server);
    await health.start();
    const metricsAddress = config.metricsListen ? await metrics.listen(config.metricsListen) : undefined;
    if (metricsAddress) log.info({ metricsAddress }, "metrics: GET /metrics");

    const credentials = config.tls
      ? ServerCredentials.createSsl(
          readFileSync(config.tls.caFile),
          [{ cert_chain: readFileSync(config.tls.certFile), private_key: readFileSync(config.tls.keyFile) }],
          true,
        )
      : ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(config.listen, credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    const host = config.listen.slice(0, config.listen.lastIndexOf(":"));
    const address = `${host}:${port}`;
    log.info({ address, mode: config.mode, tls: !!config.tls, instanceId: config.instanceId }, "fieldvault listening");

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        health.stop();
        keyLifecycle.stop(); // running rewraps end after their current batch; the rest waits for the next run
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, config.shutdownGraceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        });
        await Promise.allSettled([...inFlight]);
        clearInterval(checkpointTimer);
        await commits.close();
        for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
        log.info("fieldvault stopped");
      })());

    return { address, port, config, db, log, policy, keyring, commits, health, metrics, metricsAddress, close };
  } catch (err) {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
    throw err;
  }
}
