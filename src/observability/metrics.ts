import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * Prometheus metrics. Every label comes from a closed set (method, status code, category,
 * purpose, outcome, key state) or is a policy caller name; a label never carries a token, a value
 * or an identity the caller made up — anything outside the closed set becomes "other".
 * Each vault instance has its own registry, so several can run in one process.
 */
export interface MetricsOptions {
  /** Known categories, purposes and caller names; other label values are folded into "other". */
  categories: () => readonly string[];
  purposes: () => readonly string[];
  callerName: (identity: string) => string | undefined;
}

const OTHER = "other";
const DETOKENIZE_OUTCOMES = new Set(["allowed", "denied", "not_found", "expired", "rate_limited", "key_unavailable", "error"]);
const KEY_STATES = ["active", "decrypt_only", "disabled", "destroyed"] as const;
const METHOD = /^[A-Za-z]{1,64}$/;
const CODE = /^[A-Z_]{1,32}$/;

export class Metrics {
  readonly registry = new Registry();
  private readonly rpcs: Counter<"method" | "code">;
  private readonly rpcSeconds: Histogram<"method" | "code">;
  private readonly detokenizations: Counter<"caller" | "category" | "purpose" | "outcome">;
  private readonly commitSeconds: Histogram<"outcome">;
  private readonly commitEntries: Histogram;
  private readonly commitJobs: Histogram;
  private readonly commitWait: Histogram;
  private readonly breakGlassReveals: Counter<"caller" | "category">;
  private readonly dbUp: Gauge;
  /** Created on the first Redis probe, so with in-process stand-ins the series is absent, not 0. */
  private redisUp: Gauge | undefined;
  private readonly fallbacks: Counter;
  private readonly verifyRuns: Counter;
  private readonly rewrapRemaining: Gauge;
  private readonly chainConflicts: Counter;
  private readonly checkpointRegressions: Counter;
  private readonly integrityFailures: Counter<"kind">;
  private readonly deterministicTokenize: Counter<"caller" | "category">;
  private readonly unknownCallers: Counter;
  private server: Server | undefined;

  constructor(private readonly opts: MetricsOptions) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "fieldvault_process_" });
    this.rpcs = new Counter({ name: "fieldvault_rpc_total", help: "gRPC calls by method and status code", labelNames: ["method", "code"], registers });
    this.rpcSeconds = new Histogram({
      name: "fieldvault_rpc_duration_seconds",
      help: "gRPC call latency by method and status code",
      labelNames: ["method", "code"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.detokenizations = new Counter({
      name: "fieldvault_detokenize_items_total",
      help: "Detokenize items by policy caller, category, purpose and outcome (counted once the access log committed)",
      labelNames: ["caller", "category", "purpose", "outcome"],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: "fieldvault_access_log_commit_seconds",
      help: "Latency of one group commit of access-log entries (and the token rows beside them)",
      labelNames: ["outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.commitEntries = new Histogram({
      name: "fieldvault_access_log_batch_entries",
      help: "Access-log entries written per committed batch",
      buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000],
      registers,
    });
    this.commitJobs = new Histogram({
      name: "fieldvault_access_log_batch_calls",
      help: "Calls sharing one committed batch (group commit)",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers,
    });
    this.commitWait = new Histogram({
      name: "fieldvault_access_log_queue_wait_seconds",
      help: "Time a call's log entries waited in the commit queue before their flush started",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.breakGlassReveals = new Counter({
      name: "fieldvault_break_glass_reveals_total",
      help: "Values revealed through an approved break-glass grant, by policy caller and category (alert on any increase)",
      labelNames: ["caller", "category"],
      registers,
    });
    this.dbUp = new Gauge({ name: "fieldvault_db_up", help: "1 while the last PostgreSQL health probe succeeded and migrations are applied", registers });
    this.fallbacks = new Counter({
      name: "fieldvault_rate_limit_local_fallback_total",
      help: "Rate-budget takes enforced from the instance's local share because Redis did not answer",
      registers,
    });
    this.verifyRuns = new Counter({ name: "fieldvault_audit_verify_total", help: "AccessLog.Verify runs by result (ok | broken)", labelNames: ["result"], registers });
    for (const result of ["ok", "broken"]) this.verifyRuns.inc({ result }, 0);
    this.rewrapRemaining = new Gauge({
      name: "fieldvault_rewrap_remaining_data_keys",
      help: "Data keys still wrapped under a non-active version, as the last rewrap batch on this instance saw it",
      labelNames: ["category"],
      registers,
    });
    this.chainConflicts = new Counter({
      name: "fieldvault_audit_chain_conflicts_total",
      help: "Access-log writes that collided with a row someone else inserted at this writer's next chain position (alert on any)",
      registers,
    });
    this.checkpointRegressions = new Counter({
      name: "fieldvault_audit_checkpoint_regressions_total",
      help: "Times the database held fewer checkpoints of the signing key than this instance had committed (deleted; alert on any)",
      registers,
    });
    this.deterministicTokenize = new Counter({
      name: "fieldvault_deterministic_tokenize_fields_total",
      help: "Deterministic-category fields tokenized, by policy caller and category (alert on bursts: an enumeration oracle)",
      labelNames: ["caller", "category"],
      registers,
    });
    this.unknownCallers = new Counter({
      name: "fieldvault_unknown_caller_denials_total",
      help: "Calls refused because the caller identity is not in the policy",
      registers,
    });
    this.integrityFailures = new Counter({
      name: "fieldvault_integrity_failures_total",
      help: "Stored metadata that failed its MAC (kind: token row or KEK state): a database writer edited it",
      labelNames: ["kind"],
      registers,
    });
  }

  /** Deterministic fields a caller tokenized (the "is this value on file?" oracle's volume). */
  deterministicTokenized(e: { identity: string; category: string; fields: number }): void {
    const categories = new Set(this.opts.categories());
    this.deterministicTokenize.inc(
      { caller: this.opts.callerName(e.identity) ?? "unknown", category: categories.has(e.category) ? e.category : OTHER },
      e.fields,
    );
  }

  /** A call refused because its identity is not in the policy (the log aggregates these). */
  unknownCaller(): void {
    this.unknownCallers.inc();
  }

  integrityFailure(kind: "token" | "kek_state"): void {
    this.integrityFailures.inc({ kind });
  }

  /** A finished gRPC call (CallHooks.onDone). */
  rpc(method: string, code: string, seconds: number): void {
    const labels = { method: METHOD.test(method) ? method : OTHER, code: CODE.test(code) ? code : OTHER };
    this.rpcs.inc(labels);
    this.rpcSeconds.observe(labels, seconds);
  }

  /** One detokenize item whose access-log entry committed. */
  detokenized(e: { identity: string; category: string; purpose: string; outcome: string }): void {
    this.detokenizations.inc({
      caller: this.opts.callerName(e.identity) ?? "unknown",
      category: this.opts.categories().includes(e.category) ? e.category : e.category === "" ? "none" : OTHER,
      purpose: this.opts.purposes().includes(e.purpose) ? e.purpose : "undeclared",
      outcome: DETOKENIZE_OUTCOMES.has(e.outcome) ? e.outcome : OTHER,
    });
  }

  /** A value revealed through a break-glass grant (after its log entry committed). */
  breakGlassReveal(e: { identity: string; category: string }): void {
    this.breakGlassReveals.inc({
      caller: this.opts.callerName(e.identity) ?? "unknown",
      category: this.opts.categories().includes(e.category) ? e.category : OTHER,
    });
  }

  /** One group commit (CommitQueue onFlush). */
  commit(s: { jobs: number; entries: number; seconds: number; ok: boolean; waits?: number[] }): void {
    this.commitSeconds.observe({ outcome: s.ok ? "ok" : "failed" }, s.seconds);
    if (s.ok) {
      this.commitEntries.observe(s.entries);
      this.commitJobs.observe(s.jobs);
      for (const w of s.waits ?? []) this.commitWait.observe(w);
    }
  }

  /** Key versions by category and state, read from the keyring at scrape time. */
  keyVersions(read: () => { category: string; state: string }[]): void {
    const registers = [this.registry];
    const categories = this.opts.categories;
    new Gauge({
      name: "fieldvault_key_versions",
      help: "KEK versions by category and state",
      labelNames: ["category", "state"],
      registers,
      collect() {
        this.reset();
        for (const c of categories()) for (const s of KEY_STATES) this.set({ category: c, state: s }, 0);
        for (const v of read()) {
          if (categories().includes(v.category) && (KEY_STATES as readonly string[]).includes(v.state)) this.inc({ category: v.category, state: v.state });
        }
      },
    });
  }

  /** Database pool gauges, read at scrape time (configured size; live counts where the driver reports them). */
  dbPool(size: number, read?: () => { total: number; idle: number; waiting: number } | undefined): void {
    const registers = [this.registry];
    new Gauge({ name: "fieldvault_db_pool_max", help: "Configured maximum PostgreSQL connections", registers }).set(size);
    if (!read) return;
    new Gauge({
      name: "fieldvault_db_pool_connections",
      help: "PostgreSQL pool connections by state",
      labelNames: ["state"],
      registers,
      collect() {
        const s = read();
        if (!s) return;
        this.set({ state: "total" }, s.total);
        this.set({ state: "idle" }, s.idle);
        this.set({ state: "waiting" }, s.waiting);
      },
    });
  }

  /** Tokenize/Detokenize admission (services/item-gate.ts), read at scrape time. */
  itemGate(limit: number, read: () => { inUse: number; waiting: number }): void {
    const registers = [this.registry];
    new Gauge({ name: "fieldvault_items_in_flight_max", help: "FIELDVAULT_MAX_ITEMS_IN_FLIGHT", registers }).set(limit);
    new Gauge({
      name: "fieldvault_items_in_flight",
      help: "Fields or tokens Tokenize and Detokenize are working on now",
      registers,
      collect() {
        this.set(read().inUse);
      },
    });
    new Gauge({
      name: "fieldvault_calls_waiting_for_items",
      help: "Tokenize/Detokenize calls waiting for room under FIELDVAULT_MAX_ITEMS_IN_FLIGHT",
      registers,
      collect() {
        this.set(read().waiting);
      },
    });
  }

  /** Age of each category's active KEK version beside its cryptoperiod, read at scrape time. */
  keyAges(read: () => { category: string; ageSeconds: number; cryptoperiodSeconds: number }[]): void {
    const registers = [this.registry];
    const categories = this.opts.categories;
    const known = (c: string) => categories().includes(c);
    new Gauge({
      name: "fieldvault_key_active_age_seconds",
      help: "Age of the active KEK version per category",
      labelNames: ["category"],
      registers,
      collect() {
        this.reset();
        for (const r of read()) if (known(r.category)) this.set({ category: r.category }, r.ageSeconds);
      },
    });
    new Gauge({
      name: "fieldvault_key_cryptoperiod_seconds",
      help: "Configured cryptoperiod per category (FIELDVAULT_CRYPTOPERIOD_DAYS / _CRYPTOPERIODS)",
      labelNames: ["category"],
      registers,
      collect() {
        this.reset();
        for (const r of read()) if (known(r.category)) this.set({ category: r.category }, r.cryptoperiodSeconds);
      },
    });
  }

  /** A rate-budget take that Redis could not answer, so the instance enforced its local share. */
  rateLimitFallback(): void {
    this.fallbacks.inc();
  }

  /** Data keys a running rewrap still has to move to the active version. */
  rewrapProgress(category: string, remaining: number): void {
    if (this.opts.categories().includes(category)) this.rewrapRemaining.set({ category }, remaining);
  }

  /** One AccessLog.Verify run and what it found. */
  verified(ok: boolean): void {
    this.verifyRuns.inc({ result: ok ? "ok" : "broken" });
  }

  /** The read replica: its lag, measured at scrape time, and reads that fell back to the primary. */
  dbReplica(readLag: () => Promise<number | undefined>): { fallback: () => void } {
    const registers = [this.registry];
    const up = new Gauge({ name: "fieldvault_db_replica_up", help: "1 while the read replica answers (measured at scrape time)", registers });
    new Gauge({
      name: "fieldvault_db_replica_lag_seconds",
      help: "How far the read replica (FIELDVAULT_DATABASE_READ_URL) is behind the primary; NaN while it is unreachable",
      registers,
      async collect() {
        const lag = await readLag();
        up.set(lag === undefined ? 0 : 1);
        this.set(lag ?? Number.NaN);
      },
    });
    const fallbacks = new Counter({
      name: "fieldvault_db_replica_fallbacks_total",
      help: "Log reads (Query, SubjectReport, Verify) the primary answered because the read replica was unreachable",
      registers,
    });
    return { fallback: () => fallbacks.inc() };
  }

  /** Tamper signals seen by the access-log writer. */
  auditTamper(kind: "chain_conflict" | "checkpoint_regression"): void {
    (kind === "chain_conflict" ? this.chainConflicts : this.checkpointRegressions).inc();
  }

  setDbUp(up: boolean): void {
    this.dbUp.set(up ? 1 : 0);
  }

  setRedisUp(up: boolean): void {
    this.redisUp ??= new Gauge({ name: "fieldvault_redis_up", help: "1 while Redis answers (absent: in-process stand-ins)", registers: [this.registry] });
    this.redisUp.set(up ? 1 : 0);
  }

  /** Serves GET /metrics on host:port; resolves with the bound address. */
  async listen(hostPort: string): Promise<string> {
    const at = hostPort.lastIndexOf(":");
    const host = hostPort.slice(0, at).replace(/^\[|\]$/g, "");
    const port = Number(hostPort.slice(at + 1));
    const server = createServer((req, res) => {
      if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": this.registry.contentType }).end(body),
        () => res.writeHead(500, { "content-type": "text/plain" }).end("metrics unavailable\n"),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    this.server = server;
    const a = server.address() as AddressInfo;
    return `${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    this.registry.clear();
  }
}
