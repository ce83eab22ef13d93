/**
 * `npm run bench [-- --quick | --rounds N | --duration S | --profile | --keep]`
 * `npm run bench -- --scale [--scale-max 1000000]`  (see scale.ts)
 * `npm run bench -- --tracing`  the same rows with OpenTelemetry on (spans exported to a local OTLP sink)
 * `npm run bench -- --tls`  the same rows over mutual TLS, vault and no-op floor alike (production's transport)
 * `npm run bench -- --instances N [--quick]`  (N vault processes behind a round-robin; see instances.ts)
 *
 * One run measures, against the machine's real PostgreSQL and Redis, with the load generator,
 * the no-op server and the vault each in a process of its own:
 *   (a) no-op TokenService (the floor for single calls)      (b) Tokenize, 1 field a call
 *   (c) Tokenize, 100 fields a call                          (d) Detokenize, 1 token a call
 *   (e) Detokenize, 100 tokens a call                        (f) the same rows straight through pg
 *   (g) the 100-field insert with pgcrypto pgp_sym_encrypt (a peer)
 * (a), (b), (d) run at 64 and at 16 calls in flight. Ratios are taken within a round; a full run
 * reports the median of three rounds. Results: a table on stdout and JSON in bench/results/.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { LoadJob, LoadResult } from "./load";
import { type Child, runLoad, startServer } from "./lib/children";
import { cpuTimes, createBenchDatabase, dropRedisPrefix, median, peakRssMb, REDIS_URL } from "./lib/common";
import { between, type Buckets, type Distribution, scrapeBuckets } from "./lib/flush-stats";
import { cpuBetween, cpuProbe, type Group, type Snapshot } from "./lib/proc-cpu";
import { VAULT_TLS_ENV } from "./lib/tls";
import { benchPolicy, vaultEnv } from "./lib/vault-env";
import { seedTokens } from "./seed";

const RESULTS = join(__dirname, "results");

interface Options {
  quick: boolean;
  rounds: number;
  durationMs: number;
  warmupMs: number;
  profile: boolean;
  keep: boolean;
  /** Run the vault with OpenTelemetry tracing on, exporting over OTLP/HTTP to a local sink. */
  tracing: boolean;
  /** Every gRPC hop over mutual TLS (bench/lib/tls.ts), the vault's and the floor's alike. */
  tls: boolean;
}

function options(argv: string[]): Options {
  const flag = (name: string) => argv.includes(`--${name}`);
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = flag("quick");
  return {
    quick,
    rounds: Number(value("rounds") ?? (quick ? 1 : 3)),
    durationMs: Number(value("duration") ?? (quick ? 1.5 : 6)) * 1000,
    warmupMs: quick ? 500 : 1000,
    profile: flag("profile"),
    keep: flag("keep"),
    tracing: flag("tracing"),
    tls: flag("tls"),
  };
}

interface RowSpec {
  id: string;
  label: string;
  target: "noop" | "vault" | "pg" | "pgcrypto";
  method?: "tokenize" | "detokenize";
  fields: number;
  concurrency: number;
}

const ROWS: RowSpec[] = [
  { id: "a", label: "no-op gRPC, 1 field", target: "noop", method: "tokenize", fields: 1, concurrency: 64 },
  { id: "b", label: "Tokenize, 1 field", target: "vault", method: "tokenize", fields: 1, concurrency: 64 },
  { id: "d", label: "Detokenize, 1 token", target: "vault", method: "detokenize", fields: 1, concurrency: 64 },
  { id: "a16", label: "no-op gRPC, 1 field", target: "noop", method: "tokenize", fields: 1, concurrency: 16 },
  { id: "b16", label: "Tokenize, 1 field", target: "vault", method: "tokenize", fields: 1, concurrency: 16 },
  { id: "d16", label: "Detokenize, 1 token", target: "vault", method: "detokenize", fields: 1, concurrency: 16 },
  { id: "c", label: "Tokenize, 100 fields", target: "vault", method: "tokenize", fields: 100, concurrency: 16 },
  { id: "e", label: "Detokenize, 100 tokens", target: "vault", method: "detokenize", fields: 100, concurrency: 16 },
  // Issue 15's RSS target covers 1,000-item calls; their CPU per field is reported, not targeted.
  { id: "c1k", label: "Tokenize, 1,000 fields", target: "vault", method: "tokenize", fields: 1000, concurrency: 16 },
  { id: "e1k", label: "Detokenize, 1,000 tokens", target: "vault", method: "detokenize", fields: 1000, concurrency: 16 },
  { id: "f", label: "pg INSERT, 100 rows (floor)", target: "pg", fields: 100, concurrency: 16 },
  { id: "g", label: "pgcrypto pgp_sym_encrypt, 100", target: "pgcrypto", fields: 100, concurrency: 16 },
];

interface RowResult extends LoadResult {
  id: string;
  callsPerSec: number;
  fieldsPerSec: number;
  rssMb?: number;
  /** CPU microseconds per call spent by each process group over the measured window (from /proc). */
  cpuPerCall?: Partial<Record<Group, number>>;
  /** Vault rows: calls per flush and the wait (seconds) before a call's flush started. */
  flushJobs?: Distribution;
  queueWait?: Distribution;
}

const FLUSH_FAMILIES = ["fieldvault_access_log_batch_calls", "fieldvault_access_log_queue_wait_seconds"];

const GROUPS: Group[] = ["vault", "noop", "postgres", "redis", "load"];
/** The server of a row: the vault, the no-op floor, or (for pg floors) PostgreSQL itself. */
const serverGroup = (spec: RowSpec): Group => (spec.target === "vault" ? "vault" : spec.target === "noop" ? "noop" : "postgres");

function medianDist(ds: (Distribution | undefined)[]): Distribution | undefined {
  const d = ds.filter((x): x is Distribution => !!x);
  if (!d.length) return undefined;
  return { count: median(d.map((x) => x.count)), p50: median(d.map((x) => x.p50)), p90: median(d.map((x) => x.p90)), p99: median(d.map((x) => x.p99)) };
}

/** The commit path: how many calls shared each flush, and how long calls waited for theirs to start. */
function flushTable(rows: RowResult[]): string {
  const head = ["id", "what", "in flight", "flushes", "calls/flush p50", "p90", "p99", "queue wait p50 ms", "p90 ms", "p99 ms"];
  const le = (v: number, scale = 1, d = 0) => (Number.isFinite(v) ? `≤ ${fmt(v * scale, d)}` : "—");
  const lines = rows
    .filter((r) => r.flushJobs)
    .map((r) => {
      const spec = ROWS.find((s) => s.id === r.id)!;
      const j = r.flushJobs!;
      const w = r.queueWait!;
      return [`(${r.id})`, spec.label, String(spec.concurrency), fmt(j.count), le(j.p50), le(j.p90), le(j.p99), le(w.p50, 1000, 2), le(w.p90, 1000, 2), le(w.p99, 1000, 2)];
    });
  return [head, head.map(() => "---"), ...lines].map((l) => `| ${l.join(" | ")} |`).join("\n");
}

const cpu = (r: RowResult, g: Group) => r.cpuPerCall?.[g] ?? NaN;

/** Ratios to the floors, within one round. */
function ratios(r: Map<string, RowResult>): Record<string, number> {
  const v = (id: string) => r.get(id)!;
  return {
    "b/a calls": v("b").callsPerSec / v("a").callsPerSec,
    "d/a calls": v("d").callsPerSec / v("a").callsPerSec,
    "c/f fields": v("c").fieldsPerSec / v("f").fieldsPerSec,
    "e/f fields": v("e").fieldsPerSec / v("f").fieldsPerSec,
    "g/f fields": v("g").fieldsPerSec / v("f").fieldsPerSec,
    "c1k/f fields": v("c1k").fieldsPerSec / v("f").fieldsPerSec,
    "e1k/f fields": v("e1k").fieldsPerSec / v("f").fieldsPerSec,
    "b16/a16 p99": v("b16").p99 / v("a16").p99,
    "d16/a16 p99": v("d16").p99 / v("a16").p99,
    "b/a CPU per call": cpu(v("b"), "vault") / cpu(v("a"), "noop"),
    "d/a CPU per call": cpu(v("d"), "vault") / cpu(v("a"), "noop"),
    "c vault µs/field": cpu(v("c"), "vault") / 100,
    "e vault µs/field": cpu(v("e"), "vault") / 100,
  };
}

const TARGETS: { ratio: string; op: ">=" | "<="; value: number }[] = [
  { ratio: "b/a calls", op: ">=", value: 0.85 },
  { ratio: "d/a calls", op: ">=", value: 0.8 },
  { ratio: "c/f fields", op: ">=", value: 0.4 },
  { ratio: "e/f fields", op: ">=", value: 0.4 },
  { ratio: "b16/a16 p99", op: "<=", value: 1.5 },
  { ratio: "d16/a16 p99", op: "<=", value: 1.5 },
  { ratio: "b/a CPU per call", op: "<=", value: 1.5 },
  { ratio: "d/a CPU per call", op: "<=", value: 1.5 },
  { ratio: "c vault µs/field", op: "<=", value: 15 },
  { ratio: "e vault µs/field", op: "<=", value: 20 },
];

async function createPeerTables(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query("CREATE TABLE IF NOT EXISTS bench_floor_tokens (LIKE tokens INCLUDING ALL)");
    await c.query(`CREATE TABLE IF NOT EXISTS bench_pgcrypto_tokens (
      id text PRIMARY KEY, category text NOT NULL, ciphertext bytea NOT NULL, masked jsonb NOT NULL, created_at timestamptz NOT NULL)`);
  } finally {
    await c.end();
  }
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined || !Number.isFinite(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

function table(rows: RowResult[], floors: Record<string, string>, ratioByRow: Record<string, number | undefined>): string {
  const head = [
    "id", "what", "in flight", "calls/s", "fields/s", "p50 ms", "p99 ms", "p99.9 ms", "server peak RSS MB", "ratio to floor",
    "server CPU µs/call", "server CPU µs/field", "pg µs/call", "redis µs/call", "load gen µs/call",
  ];
  const lines = rows.map((r) => {
    const spec = ROWS.find((s) => s.id === r.id)!;
    const ratio = ratioByRow[r.id];
    return [
      `(${r.id})`,
      spec.label,
      String(spec.concurrency),
      fmt(r.callsPerSec),
      fmt(r.fieldsPerSec),
      fmt(r.p50, 2),
      fmt(r.p99, 2),
      fmt(r.p999, 2),
      fmt(r.rssMb),
      ratio === undefined ? "floor" : `${fmt(ratio, 2)} × ${floors[r.id]}`,
      fmt(cpu(r, serverGroup(spec)), 0),
      fmt(cpu(r, serverGroup(spec)) / spec.fields, 1),
      spec.target === "pg" || spec.target === "pgcrypto" ? "(server)" : fmt(cpu(r, "postgres"), 0),
      fmt(cpu(r, "redis"), 0),
      fmt(cpu(r, "load"), 0),
    ];
  });
  const md = [head, head.map(() => "---"), ...lines].map((l) => `| ${l.join(" | ")} |`);
  return md.join("\n");
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes("--scale")) {
    const { runScale } = await import("./scale");
    return runScale(argv);
  }
  if (argv.includes("--instances")) {
    const { runInstances } = await import("./instances");
    return runInstances(argv);
  }
  const opts = options(argv);
  const t0 = Date.now();
  const cpu0 = cpuTimes();
  const tmp = mkdtempSync(join(tmpdir(), "fv-bench-"));
  const db = await createBenchDatabase();
  const redisPrefix = `fvbench:${randomBytes(5).toString("hex")}:`;
  const policyFile = benchPolicy(tmp);
  const tokensFile = join(tmp, "tokens.json");
  const profileDir = join(RESULTS, "profiles");
  let noop: Child | undefined;
  let vault: Child | undefined;
  let sinkServer: Server | undefined;
  let probe: Awaited<ReturnType<typeof cpuProbe>> | undefined;
  const rounds: { rows: Map<string, RowResult>; ratios: Record<string, number> }[] = [];
  const log = (s: string) => process.stderr.write(s + "\n");
  try {
    let extraEnv: Record<string, string> = {};
    if (opts.tracing) {
      // An OTLP/HTTP sink that accepts every export, so the vault pays the full cost of tracing.
      let spansBytes = 0;
      const sink = createServer((req, res) => {
        req.on("data", (c: Buffer) => (spansBytes += c.length));
        req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end("{}"));
      });
      await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
      sinkServer = sink;
      extraEnv = { FIELDVAULT_TRACING: "on", OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(sink.address() as AddressInfo).port}` };
      process.on("exit", () => log(`tracing: the OTLP sink received ${(spansBytes / 1e6).toFixed(1)} MB of spans`));
    }
    if (opts.tls) {
      process.env.FIELDVAULT_BENCH_TLS = "1"; // read by this process's seeding and by the forked load generators
      extraEnv = { ...extraEnv, ...VAULT_TLS_ENV };
    }
    noop = await startServer("noop-server.ts", { PATH: process.env.PATH, NODE_ENV: "production", ...(opts.tls ? { FIELDVAULT_BENCH_TLS: "1" } : {}) });
    probe = await cpuProbe({ dbUrl: db.url, dbName: db.name, redisUrl: REDIS_URL, pids: () => ({ vault: vault ? [vault.proc.pid!] : [], noop: noop?.proc.pid }) });
    for (let round = 0; round < opts.rounds; round++) {
      const nodeArgs = opts.profile ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
      if (opts.profile) mkdirSync(profileDir, { recursive: true });
      vault = await startServer("vault-server.ts", vaultEnv(db, redisPrefix, policyFile, extraEnv), nodeArgs);
      if (round === 0) {
        await createPeerTables(db.url);
        const tokens = await seedTokens(vault.address, opts.quick ? 5_000 : 20_000);
        writeFileSync(tokensFile, JSON.stringify(tokens));
      }
      // Warm both servers' JIT (and the vault's caches and pools) before anything is measured.
      const warm = (method: "tokenize" | "detokenize", address: string) =>
        runLoad({ kind: "grpc", method, address, tokensFile, fields: 1, concurrency: 64, durationMs: 0, warmupMs: opts.warmupMs * 2 });
      await warm("tokenize", noop.address);
      await warm("tokenize", vault.address);
      await warm("detokenize", vault.address);
      const rows = new Map<string, RowResult>();
      for (const spec of ROWS) {
        const job: LoadJob = {
          kind: spec.target === "pg" ? "pg" : spec.target === "pgcrypto" ? "pgcrypto" : "grpc",
          method: spec.method,
          address: spec.target === "noop" ? noop.address : vault.address,
          url: db.url,
          tokensFile,
          fields: spec.fields,
          concurrency: spec.concurrency,
          durationMs: opts.durationMs,
          warmupMs: opts.warmupMs,
        };
        let opened: Snapshot | undefined;
        let window: Record<Group, number> | undefined;
        let flushOpened: Buckets | undefined;
        let flush: { jobs: Distribution; wait: Distribution } | undefined;
        const metricsAt = spec.target === "vault" ? vault.metricsAddress : undefined;
        const res = await runLoad(job, async (phase, loadPid) => {
          const snap = await probe!.snapshot(loadPid);
          const buckets = metricsAt ? await scrapeBuckets(metricsAt, FLUSH_FAMILIES).catch(() => undefined) : undefined;
          if (phase === "start") {
            opened = snap;
            flushOpened = buckets;
          } else {
            if (opened) window = cpuBetween(opened, snap);
            if (flushOpened && buckets)
              flush = { jobs: between(flushOpened, buckets, FLUSH_FAMILIES[0]!), wait: between(flushOpened, buckets, FLUSH_FAMILIES[1]!) };
          }
        });
        const row: RowResult = {
          ...res,
          id: spec.id,
          callsPerSec: res.calls / res.seconds,
          fieldsPerSec: res.fields / res.seconds,
          rssMb: spec.target === "vault" ? peakRssMb(vault.proc.pid!) : undefined,
          cpuPerCall: window && res.calls ? Object.fromEntries(GROUPS.map((g) => [g, (window![g] * 1e6) / res.calls])) : undefined,
          flushJobs: flush?.jobs,
          queueWait: flush?.wait,
        };
        rows.set(spec.id, row);
        log(
          `round ${round + 1}/${opts.rounds} (${spec.id}) ${spec.label} @${spec.concurrency}: ${fmt(row.callsPerSec)} calls/s, ` +
            `${fmt(row.fieldsPerSec)} fields/s, p99 ${fmt(row.p99, 2)} ms, server CPU ${fmt(cpu(row, serverGroup(spec)), 0)} µs/call${res.errors ? `, ${res.errors} errors (${res.firstError})` : ""}`,
        );
        if (res.errors && res.calls === 0) throw new Error(`(${spec.id}) every call failed: ${res.firstError}`);
      }
      await vault.stop();
      vault = undefined;
      rounds.push({ rows, ratios: ratios(rows) });
    }

    // The median of each figure over the rounds; ratios are medians of per-round ratios.
    const summary: RowResult[] = ROWS.map((spec) => {
      const all = rounds.map((r) => r.rows.get(spec.id)!);
      const m = (k: keyof RowResult) => median(all.map((x) => x[k] as number));
      return {
        id: spec.id,
        calls: m("calls"),
        fields: m("fields"),
        seconds: all[0]!.seconds,
        callsPerSec: m("callsPerSec"),
        fieldsPerSec: m("fieldsPerSec"),
        p50: m("p50"),
        p99: m("p99"),
        p999: m("p999"),
        errors: all.reduce((n, x) => n + x.errors, 0),
        rssMb: spec.target === "vault" ? m("rssMb") : undefined,
        cpuPerCall: Object.fromEntries(GROUPS.map((g) => [g, median(all.map((x) => x.cpuPerCall?.[g] ?? NaN))])),
        flushJobs: medianDist(all.map((x) => x.flushJobs)),
        queueWait: medianDist(all.map((x) => x.queueWait)),
      };
    });
    const ratioNames = Object.keys(rounds[0]!.ratios);
    const medianRatios = Object.fromEntries(ratioNames.map((k) => [k, median(rounds.map((r) => r.ratios[k]!))]));
    const peakRss = Math.max(...rounds.flatMap((r) => [...r.rows.values()].map((x) => x.rssMb ?? 0)));
    const ratioByRow: Record<string, number | undefined> = {
      b: medianRatios["b/a calls"],
      d: medianRatios["d/a calls"],
      b16: medianRatios["b16/a16 p99"],
      d16: medianRatios["d16/a16 p99"],
      c: medianRatios["c/f fields"],
      e: medianRatios["e/f fields"],
      g: medianRatios["g/f fields"],
      c1k: medianRatios["c1k/f fields"],
      e1k: medianRatios["e1k/f fields"],
    };
    const floors = { b: "(a) calls/s", d: "(a) calls/s", b16: "(a16) p99", d16: "(a16) p99", c: "(f) rows/s", e: "(f) rows/s", g: "(f) rows/s", c1k: "(f) rows/s", e1k: "(f) rows/s" };
    const targets = [
      ...TARGETS.map((t) => {
        const v = medianRatios[t.ratio]!;
        return { measure: t.ratio, target: `${t.op} ${t.value}`, value: v, met: t.op === ">=" ? v >= t.value : v <= t.value };
      }),
      { measure: "server peak RSS MB", target: "< 200", value: peakRss, met: peakRss < 200 },
    ];
    const cpu1 = cpuTimes();
    const machine = {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      memoryGb: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      busyShare: (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total),
    };

    const text = [
      `fieldvault bench — ${opts.quick ? "quick" : "full"} run${opts.tracing ? " with tracing ON (OTLP/HTTP to a local sink)" : ""}${opts.tls ? " over mutual TLS (vault and no-op floor)" : ""}, ${opts.rounds} round(s) of ${opts.durationMs / 1000} s per row, median shown`,
      `machine: ${machine.cpus} × ${machine.model}, ${machine.memoryGb} GB, Node ${machine.node}; machine busy ${(machine.busyShare * 100).toFixed(0)}% during the run`,
      "",
      table(summary, floors, ratioByRow),
      "",
      "Commit path (vault rows, from the vault's /metrics over the measured window; bucket upper bounds):",
      "",
      flushTable(summary),
      "",
      "| target | measured | goal | met |",
      "| --- | --- | --- | --- |",
      ...targets.map((t) => `| ${t.measure} | ${fmt(t.value, 2)} | ${t.target} | ${t.met ? "yes" : "no"} |`),
      "",
      `total ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    ].join("\n");
    process.stdout.write(text + "\n");

    mkdirSync(RESULTS, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const json = {
      at: new Date().toISOString(),
      mode: opts.quick ? "quick" : "full",
      options: opts,
      machine,
      rows: ROWS.map((spec) => ({ ...spec, ...summary.find((s) => s.id === spec.id) })),
      ratios: medianRatios,
      targets,
      rounds: rounds.map((r) => ({ rows: Object.fromEntries(r.rows), ratios: r.ratios })),
      table: text,
    };
    const out = join(RESULTS, `bench-${json.mode}${opts.tracing ? "-tracing" : ""}${opts.tls ? "-tls" : ""}-${stamp}.json`);
    writeFileSync(out, JSON.stringify(json, null, 2));
    writeFileSync(join(RESULTS, `latest-${json.mode}${opts.tracing ? "-tracing" : ""}${opts.tls ? "-tls" : ""}.json`), JSON.stringify(json, null, 2));
    log(`results: ${out}`);
  } finally {
    await vault?.stop();
    await noop?.stop();
    await probe?.close().catch(() => undefined);
    sinkServer?.close();
    if (!opts.keep) {
      await db.drop().catch((e) => log(`could not drop ${db.name}: ${(e as Error).message}`));
      await dropRedisPrefix(redisPrefix).catch(() => undefined);
    } else log(`kept database ${db.name} and Redis prefix ${redisPrefix}`);
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
