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
  private readonly dbUp: Gauge;
  /** Created on the first Redis probe, so with in-process stand-ins the series is absent, not 0. */
  private redisUp: Gauge | undefined;
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
    this.dbUp = new Gauge({ name: "fieldvault_db_up", help: "1 while the last PostgreSQL health probe succeeded and migrations are applied", registers });
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

  /** One group commit (CommitQueue onFlush). */
  commit(s: { jobs: number; entries: number; seconds: number; ok: boolean }): void {
    this.commitSeconds.observe({ outcome: s.ok ? "ok" : "failed" }, s.seconds);
    if (s.ok) {
      this.commitEntries.observe(s.entries);
      this.commitJobs.observe(s.jobs);
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
