import { randomBytes } from "node:crypto";
import path from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { Config } from "./config/config";
import { developmentMaterialInUse } from "./config/dev-material";
import { ConfigError } from "./config/config";
import { DEV_ROOT_KEY_ID, loadRootKeys } from "./config/root-keys";
import { loadTlsMaterial } from "./config/tls-material";
import { loadSigningKey } from "./config/signing-key";
import { readySodium } from "./crypto/sodium";
import { subjectRefKey } from "./crypto/subject-ref";
import { defaultRegistry } from "./domain/categories";
import { AccessLogService } from "./gen/fieldvault/v1/access_log";
import { KeyAdminService } from "./gen/fieldvault/v1/key_admin";
import { TokenServiceService } from "./gen/fieldvault/v1/token_service";
import { callLineWriter, createLogger, type Logger } from "./observability/logger";
import { tracedCommits, tracedCvvStore, tracedLookup, tracedPolicy, tracedRateLimiter } from "./observability/traced-deps";
import { setHeapGrowth } from "./runtime/heap";
import { Metrics } from "./observability/metrics";
import { createAudit } from "./services/audit";
import { CommitQueue } from "./services/commit-queue";
import { createKeyLifecycle } from "./services/key-lifecycle";
import { Keyring } from "./services/keyring";
import { PolicyHolder } from "./services/policy-holder";
import { aggregateUnknownCallerDenials } from "./services/denial-log";
import { createTokenIntegrity } from "./services/token-integrity";
import { createBreakGlass } from "./services/break-glass";
import { createSubjectRights } from "./services/subject-rights";
import { createTokenization } from "./services/tokenization";
import { gatedTokenization, ItemGate } from "./services/item-gate";
import type { Db } from "./storage/db";
import { createMemoryCvvStore } from "./storage/embedded/memory-cvv-store";
import { createLocalRateLimiter } from "./storage/local-rate-limiter";
import { MIGRATIONS, migrate, schemaVersion } from "./storage/migrations";
import type { CvvStore, RateLimiter } from "./storage/ports";
import { checkpointJson, parseCheckpointJson } from "./domain/checkpoint";
import { anchorFile, lastLines } from "./storage/anchor-file";
import { auditStore } from "./storage/postgres/log-store";
import { createPgDb } from "./storage/postgres/pg-db";
import { breakGlassStore } from "./storage/postgres/break-glass-store";
import { subjectStore } from "./storage/postgres/subject-store";
import { findTokens } from "./storage/postgres/token-store";
import { createReadRouter } from "./storage/postgres/read-replica";
import { connectRedis, parseRedisUrl, readyWithin, type RedisClient } from "./storage/redis/connect";
import { createKeyChangeNotices } from "./storage/redis/key-notices";
import { assignAliases, findTokensAnyForm, tokenSpellings } from "./storage/postgres/alias-store";
import { createPurge } from "./services/purge";
import { createRedisCvvStore } from "./storage/redis/redis-cvv-store";
import { createRedisRateLimiter } from "./storage/redis/redis-rate-limiter";
import { databaseUnavailable, describeRedisUrl, listenFailure, redisFirstContact, StartupError } from "./runtime/startup-errors";
import { CALLER_HEADER } from "./transport/grpc/identity";
import { accessLogHandlers } from "./transport/grpc/access-log";
import type { CallHooks } from "./transport/grpc/call";
import { Health, within } from "./transport/grpc/health";
import { boundedService, maxRequestBytes } from "./transport/grpc/bounded-decode";
import { guardedService } from "./transport/grpc/decode-guard";
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
  /** Where spans go when tracing is on (default: the OTLP exporter from OTEL_* variables). */
  spanProcessor?: import("@opentelemetry/sdk-trace-base").SpanProcessor;
}

/** The composition root: the one place that chooses implementations and wires them together. */
export async function startVault(config: Config, opts: StartOptions = {}): Promise<Vault> {
  await readySodium();
  setHeapGrowth(config.heapGrowingPercent);
  const log = createLogger(config.logLevel, opts.logDestination, { traceIds: config.tracing });
  const registry = defaultRegistry();
  const policy = new PolicyHolder(config.policyFile, registry.names());
  const signingKey = loadSigningKey(config.signingKeyFile);
  const roots = await loadRootKeys(config, { warn: (m) => log.warn(m) });
  const tlsMaterial = config.tls && loadTlsMaterial(config.tls); // a bad file is named before any migration runs
  const cleanup: (() => Promise<unknown>)[] = [() => roots.close()];
  log.info({ active: roots.active.id, loaded: [...roots.byId.keys()] }, "root keys loaded");
  const devMaterial = developmentMaterialInUse(config, signingKey);
  if (config.mode === "production" && devMaterial.length) {
    if (!config.allowDevMaterial) throw new ConfigError([...devMaterial.map((m) => `${m} is refused in production mode`)]);
    for (const m of devMaterial) log.warn({ material: m }, "INSECURE: production mode with PUBLIC development material (FIELDVAULT_ALLOW_DEV_MATERIAL=true) — anyone can mint identities or forge checkpoints; never hold real data");
  }
  if (config.modeDefaulted && config.databaseUrl && config.redisUrl && config.tls) {
    log.warn("FIELDVAULT_MODE is not set: running in DEVELOPMENT mode with real backends and TLS — set FIELDVAULT_MODE=production (or =development to silence this)");
  }

  try {
    const db = config.databaseUrl
      ? createPgDb({ url: config.databaseUrl, poolSize: config.dbPoolSize })
      : // PGlite (~45 MB resident once loaded) is loaded only when the embedded store is used.
        await (await import("./storage/embedded/pglite-db")).createEmbeddedDb(config.dataDir);
    cleanup.push(() => db.close());
    if (db.kind === "embedded") {
      const dataDir = config.dataDir.startsWith("memory://") ? config.dataDir : path.resolve(config.dataDir);
      log.warn({ dataDir }, `storage: embedded PostgreSQL (PGlite) in ${dataDir} — development only; set FIELDVAULT_DATABASE_URL for production`);
    } else {
      await db.query("SELECT 1").catch((err: unknown) => {
        throw databaseUnavailable(config.databaseUrl!, err);
      });
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
      const unreachable = await redisFirstContact(client, 5000);
      if (unreachable && config.mode === "production") {
        throw new StartupError(`FIELDVAULT_REDIS_URL: Redis at ${describeRedisUrl(config.redisUrl)} is unreachable (${unreachable}); production does not start without it`);
      }
      if (unreachable) log.warn({ topology: target.kind }, `cache: Redis at ${describeRedisUrl(config.redisUrl)} is unreachable (${unreachable}); CVV calls answer UNAVAILABLE and rate budgets are local until it answers`);
      log.info({ topology: target.kind }, "cache: Redis");
    }

    const metrics = new Metrics({
      categories: () => registry.names(),
      purposes: () => Object.keys(policy.get().doc.purposes),
      callerName: (identity) => policy.get().callerName(identity),
    });
    cleanup.push(() => metrics.close());

    const keyring = await Keyring.open(db, roots, registry.names(), config.keyCacheTtlMs, redis && createKeyChangeNotices(redis, config.redisPrefix), (category, version) => {
      metrics.integrityFailure("kek_state");
      log.error({ category, version }, "integrity: a KEK version's state failed its MAC (edited in the database?); the version refuses all use");
    });
    cleanup.push(() => keyring.close());
    metrics.keyVersions(() => registry.names().flatMap((category) => keyring.versions(category).map((v) => ({ category, state: v.state }))));
    metrics.keyAges(() =>
      registry.names().flatMap((category) =>
        keyring
          .versions(category)
          .filter((v) => v.state === "active")
          .map((v) => ({
            category,
            ageSeconds: Math.max(0, (Date.now() - v.createdAt.getTime()) / 1000),
            cryptoperiodSeconds: (config.cryptoperiodOverrides[category] ?? config.cryptoperiodDays) * 86_400,
          })),
      ),
    );
    if (db.kind === "postgres") metrics.dbPool(config.dbPoolSize, db.poolStats);

    let cvv: CvvStore;
    let rateLimiter: RateLimiter;
    const localLimiter = createLocalRateLimiter();
    if (redis) {
      cvv = createRedisCvvStore(redis, config.redisPrefix);
      let warned = 0;
      rateLimiter = createRedisRateLimiter(redis, config.redisPrefix, localLimiter, () => {
        metrics.rateLimitFallback();
        if (Date.now() - warned > 10_000) log.warn("rate budgets: Redis unreachable, enforcing local budgets");
        warned = Date.now();
      });
    } else {
      cvv = createMemoryCvvStore();
      rateLimiter = localLimiter;
      cleanup.push(() => cvv.close());
      log.warn("cache: in-process stand-ins for Redis (CVVs, rate budgets) — development only; CVVs live in this process's memory and do not survive a restart; set FIELDVAULT_REDIS_URL");
    }

    // The commit queue writes on connections of its own, so a flush never waits behind lookups.
    // PGlite has one session, so there its flushes cannot overlap.
    const commitDb = config.databaseUrl ? createPgDb({ url: config.databaseUrl, poolSize: 2 }) : db;
    if (commitDb !== db) cleanup.push(() => commitDb.close());
    // Checkpoints leave the database as they commit: a JSON line on the log stream, and the anchor file.
    const anchors = config.auditAnchorFile
      ? anchorFile(config.auditAnchorFile, (err) => log.error({ err: (err as Error).message, file: config.auditAnchorFile }, "audit checkpoint: cannot append to FIELDVAULT_AUDIT_ANCHOR_FILE"))
      : undefined;
    if (anchors) cleanup.push(() => anchors.flushed());
    const integrity = createTokenIntegrity({
      key: () => keyring.metadataKey(),
      onFailure: (token) => {
        metrics.integrityFailure("token");
        log.error({ token }, "integrity: a token row's metadata failed its MAC (edited in the database?)");
      },
    });
    const commits = new CommitQueue(commitDb, {
      integrity,
      chainId: `${config.instanceId}.${randomBytes(4).toString("hex")}`,
      signingKey,
      checkpointEvery: config.checkpointEvery,
      checkpointIntervalMs: config.checkpointIntervalMs,
      maxFlushesInFlight: commitDb === db ? 1 : 2,
      onFlush: (s) => metrics.commit(s),
      checkpoints: {
        onPublish: (cp) => {
          const json = checkpointJson(cp);
          log.info({ checkpoint: json }, "audit checkpoint");
          void anchors?.append(JSON.stringify(json));
        },
        onRegression: (e) => {
          metrics.auditTamper("checkpoint_regression");
          log.error(e, "audit: the database lost checkpoints this instance committed (deleted); the next checkpoint keeps the gap visible");
        },
      },
      onConflict: (e) => {
        metrics.auditTamper("chain_conflict");
        log.error(e, "audit: someone else wrote at this writer's next chain position; continuing on a new chain (investigate: Verify names the foreign entries)");
      },
    });
    if (config.auditAnchorFile) {
      // Continue the key's checkpoint sequence from what was published, not from what the database kept.
      const newest = (await lastLines(config.auditAnchorFile))?.map(parseCheckpointJson).filter((c) => typeof c !== "string").pop();
      if (newest && commits.seedCheckpoint(newest)) log.info({ number: newest.number, keyId: newest.keyId }, "audit: continuing the checkpoint sequence from FIELDVAULT_AUDIT_ANCHOR_FILE");
    }
    // Denials of identities the policy does not know are aggregated in the log (one entry, then a count).
    const logged = aggregateUnknownCallerDenials(commits, {
      isKnown: (identity) => policy.get().callerName(identity) !== undefined,
      onDenied: () => metrics.unknownCaller(),
    });
    const checkpointTimer = setInterval(() => void commits.checkpoint().catch(() => undefined), config.checkpointIntervalMs);
    checkpointTimer.unref();

    // Tracing, when configured: the RPC spans come from the call hooks; child spans from wrapping
    // the dependencies handed to the services (policy, lookup, commit flush, Redis).
    // The OpenTelemetry SDK is loaded only when tracing is on (observability/tracing.ts).
    const tracing = config.tracing
      ? (await import("./observability/tracing-sdk")).startTracing({ instanceId: config.instanceId, processor: opts.spanProcessor })
      : undefined;
    if (tracing) {
      cleanup.push(() => tracing.shutdown());
      log.info({ exporter: opts.spanProcessor ? "custom" : "otlp" }, "tracing: OpenTelemetry on");
    }
    const tracer = tracing?.tracer;
    const lookup = (ids: readonly string[]) => findTokensAnyForm(db, ids);
    const breakGlass = createBreakGlass({
      policy: () => policy.get(),
      categories: () => registry.names(),
      commits: logged,
      store: breakGlassStore(db),
      maxSeconds: config.breakGlassMaxSeconds,
      instanceId: config.instanceId,
      onReveal: (e) => {
        metrics.breakGlassReveal(e);
        log.warn({ breakGlassId: e.grantId, caller: e.identity, category: e.category, purpose: e.purpose, requestId: e.requestId }, "break-glass reveal");
      },
    });
    const gate = new ItemGate(config.maxItemsInFlight);
    metrics.itemGate(config.maxItemsInFlight, () => gate.state);
    const tokenization = gatedTokenization(gate, createTokenization({
      registry,
      policy: tracer ? () => tracedPolicy(tracer, policy.get()) : () => policy.get(),
      keyring,
      commits: tracer ? tracedCommits(tracer, logged) : logged,
      findTokens: tracer ? tracedLookup(tracer, lookup) : lookup,
      assignAliases: (tx, wants) => assignAliases(tx, wants),
      cardRetentionDays: config.cardRetentionDays,
      cvv: tracer ? tracedCvvStore(tracer, cvv) : cvv,
      rateLimiter: tracer ? tracedRateLimiter(tracer, rateLimiter) : rateLimiter,
      integrity,
      instanceId: config.instanceId,
      maxBatch: config.maxBatch,
      cvvTtlSeconds: config.cvvTtlSeconds,
      onDetokenized: (e) => metrics.detokenized(e),
      onDeterministicTokenize: (e) => metrics.deterministicTokenized(e),
      breakGlass,
    }));

    const subjects = createSubjectRights({
      policy: () => policy.get(),
      categories: () => registry.names(),
      commits: logged,
      store: subjectStore(db),
      signingKey,
      subjectKey: subjectRefKey(signingKey),
      instanceId: config.instanceId,
    });

    const inFlight = new Set<Promise<unknown>>();
    const hooks: CallHooks = {
      log,
      callLine: callLineWriter(log, { traceIds: config.tracing }),
      identity: { allowSelfAsserted: config.mode === "development" },
      onDone: (e) => metrics.rpc(e.method, e.code, e.seconds),
      tracing,
      track: (p) => {
        inFlight.add(p);
        return p.finally(() => inFlight.delete(p));
      },
    };

    // Sized to the largest legal request, checked on the length prefix before anything is buffered;
    // repeated items past the batch limit are never decoded; streams per connection are capped.
    const server = new Server({
      "grpc.max_receive_message_length": maxRequestBytes(config.maxBatch),
      "grpc.max_concurrent_streams": config.maxConcurrentStreams,
      // No channelz service is served, so its per-call bookkeeping (~2% of a call's CPU) buys nothing.
      "grpc.enable_channelz": 0,
    });
    // A request that does not decode is answered INVALID_ARGUMENT by the handler wrapper, not INTERNAL by grpc-js.
    const bounded = guardedService(boundedService(TokenServiceService, { tokenize: 1, detokenize: 1, inspectTokens: 1, deleteTokens: 1 }, config.maxBatch + 1));
    server.addService(bounded, tokenServiceHandlers({ ...hooks, service: "TokenService" }, tokenization, subjects, breakGlass));
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
    const auditService = createAudit({
      policy: () => policy.get(),
      commits: logged,
      store: auditStore(db),
      readStore: (fn) => readRouter.read((readDb, source) => fn(auditStore(readDb), source)),
      // This instance's own chain heads and newest checkpoint, compared with the primary it writes to.
      live: { state: () => commits.liveState(), reads: auditStore(db) },
      unsealedGraceMs: 2 * config.checkpointIntervalMs,
      // Verify trusts only keys from configuration, never a key stored next to the log.
      trustedKeys: [signingKey.publicKey, ...config.auditTrustedKeys],
      instanceId: config.instanceId,
      tokenSpellings: async (token) => (await tokenSpellings(db, [token])).get(token) ?? [token],
    });
    // Every Verify finding is also a metric, so an alert fires without anyone reading the answer.
    const audit: typeof auditService = {
      ...auditService,
      verify: async (ctx, req) => {
        const r = await auditService.verify(ctx, req);
        metrics.verified(r.ok);
        return r;
      },
    };
    server.addService(guardedService(AccessLogService), accessLogHandlers({ ...hooks, service: "AccessLog" }, audit, subjects));
    const keyLifecycleService = createKeyLifecycle({
      registry,
      policy: () => policy.get(),
      keyring,
      commits: logged,
      db,
      instanceId: config.instanceId,
      cryptoperiodDays: config.cryptoperiodDays,
      cryptoperiodOverrides: config.cryptoperiodOverrides,
      integrity,
    });
    // Rewrap progress is also a metric (dashboard: "rewrap progress").
    const keyLifecycle: typeof keyLifecycleService = {
      ...keyLifecycleService,
      rewrap: (ctx, req, onProgress, cancelled) =>
        keyLifecycleService.rewrap(ctx, req, async (p) => {
          metrics.rewrapProgress(req.category, p.remaining);
          await onProgress(p);
        }, cancelled),
    };
    server.addService(guardedService(KeyAdminService), keyAdminHandlers({ ...hooks, service: "KeyAdmin" }, keyLifecycle));
    cleanup.push(async () => keyLifecycle.stop());
    if (config.autoRotate) {
      keyLifecycle.startAutoRotation(config.autoRotateCheckMs, (err) => log.warn({ err: (err as Error).message }, "automatic key rotation failed; retrying at the next check"));
      log.info({ checkMs: config.autoRotateCheckMs }, "automatic key rotation on: categories past their cryptoperiod rotate");
    }

    // Expired tokens are purged in the background (DESIGN §13), in batches, on every instance.
    const purge = createPurge({ commits, instanceId: config.instanceId, batchSize: config.purgeBatchSize, onBatch: (b) => log.info(b, "purge: expired tokens erased") });
    purge.start(config.purgeIntervalMs, (err) => log.warn({ err: (err as Error).message }, "purge of expired tokens failed; retrying at the next interval"));
    cleanup.push(() => purge.stop());

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
    const metricsAddress = config.metricsListen
      ? await metrics.listen(config.metricsListen).catch((err: unknown) => {
          throw listenFailure("FIELDVAULT_METRICS_LISTEN", config.metricsListen!, err);
        })
      : undefined;
    if (metricsAddress) log.info({ metricsAddress }, "metrics: GET /metrics");

    const credentials = tlsMaterial
      ? ServerCredentials.createSsl(tlsMaterial.ca, [{ cert_chain: tlsMaterial.cert, private_key: tlsMaterial.key }], true)
      : ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(config.listen, credentials, (err, p) => (err ? reject(listenFailure("FIELDVAULT_LISTEN", config.listen, err)) : resolve(p))),
    );
    const host = config.listen.slice(0, config.listen.lastIndexOf(":"));
    const address = `${host}:${port}`;
    log.info({ policyFile: path.resolve(config.policyFile) }, `policy: ${path.resolve(config.policyFile)} (SIGHUP reloads it)`);
    if (roots.active.id === DEV_ROOT_KEY_ID) log.warn({ rootKeyId: roots.active.id }, "root key: the DEVELOPMENT root key (keys-dev/root.key, published in the repository) — never for real data");
    if (config.mode === "development" && !config.tls) {
      log.warn({ header: CALLER_HEADER }, `identity: callers name themselves with the ${CALLER_HEADER} header (self-asserted, plaintext) — development only`);
    }
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
        await purge.stop();
        await logged.close();
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
