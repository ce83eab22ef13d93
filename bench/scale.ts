/**
 * `npm run bench -- --scale [--scale-max 1000000] [--duration S]`
 *
 * Seeds tokens and access-log entries through the service's own batch path (Tokenize and
 * Detokenize, 1,000 items a call; see seed.ts) in steps of 10k → 100k → 1M, and at each step
 * measures (d) Detokenize 1 token a call at 64 in flight, and a log query for one caller over
 * one day: the AccessLog.Query RPC (first page of 100) and the same SQL on access_log_caller_at.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChannelCredentials, Metadata } from "@grpc/grpc-js";
import pg from "pg";
import { AccessLogClient } from "../src/gen/fieldvault/v1/access_log";
import { runLoad, startServer } from "./lib/children";
import { CALLER, createBenchDatabase, dropRedisPrefix, median, peakRssMb } from "./lib/common";
import { benchPolicy, vaultEnv } from "./lib/vault-env";
import { seedLog, seedTokens } from "./seed";

const LOG_CALLERS = [CALLER, "booking-service", "support-desk"]; // the last two are refused and logged as denied

async function queryRpc(address: string): Promise<number> {
  const client = new AccessLogClient(address, ChannelCredentials.createInsecure());
  const md = new Metadata();
  md.set("x-fieldvault-caller", "ir-analyst");
  const until = new Date();
  const since = new Date(until.getTime() - 24 * 3600 * 1000);
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const stream = client.query(
      { caller: CALLER, token: "", category: "", purpose: "", outcome: "", action: "", since, until, pageSize: 100, pageToken: "" },
      md,
    );
    let n = 0;
    stream.on("data", () => n++);
    stream.on("error", reject);
    stream.on("end", () => (n > 0 ? resolve() : reject(new Error("log query returned nothing"))));
  });
  const ms = performance.now() - t0;
  client.close();
  return ms;
}

async function querySql(url: string): Promise<{ pageMs: number; countMs: number; count: number; usesIndex: boolean }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const sql = `SELECT seq, at, caller, action, category, token, purpose, outcome FROM access_log
                 WHERE caller = $1 AND at >= now() - interval '1 day' AND at < now()
                 ORDER BY at DESC, seq DESC LIMIT 100`;
    const plan = await c.query(`EXPLAIN ${sql}`, [CALLER]);
    const usesIndex = plan.rows.some((r: Record<string, string>) => Object.values(r)[0]!.includes("access_log_caller_at"));
    const pages: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await c.query(sql, [CALLER]);
      pages.push(performance.now() - t0);
    }
    const t0 = performance.now();
    const { rows } = await c.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM access_log WHERE caller = $1 AND at >= now() - interval '1 day'",
      [CALLER],
    );
    return { pageMs: median(pages), countMs: performance.now() - t0, count: rows[0]!.n, usesIndex };
  } finally {
    await c.end();
  }
}

export async function runScale(argv: string[]): Promise<void> {
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const max = Number(value("scale-max") ?? 1_000_000);
  const durationMs = Number(value("duration") ?? 5) * 1000;
  const steps = [10_000, 100_000, 1_000_000].filter((n) => n <= max);
  const log = (s: string) => process.stderr.write(s + "\n");
  const tmp = mkdtempSync(join(tmpdir(), "fv-scale-"));
  const db = await createBenchDatabase();
  const redisPrefix = `fvbench:scale:${Date.now()}:`;
  const policyFile = benchPolicy(tmp);
  const vault = await startServer("vault-server.ts", vaultEnv(db, redisPrefix, policyFile));
  const tokensFile = join(tmp, "tokens.json");
  const rows: Record<string, number | string | boolean>[] = [];
  try {
    let tokens = await seedTokens(vault.address, 2_000);
    const measure = async (label: string, seeded: { tokens: number; log: number; seconds: number }) => {
      writeFileSync(tokensFile, JSON.stringify(tokens));
      const d = await runLoad({ kind: "grpc", method: "detokenize", address: vault.address, tokensFile, fields: 1, concurrency: 64, durationMs, warmupMs: 1000 });
      const rpcMs = median([await queryRpc(vault.address), await queryRpc(vault.address), await queryRpc(vault.address)]);
      const sql = await querySql(db.url);
      const row = {
        step: label,
        tokens: seeded.tokens,
        logEntries: seeded.log,
        seedSeconds: Math.round(seeded.seconds),
        detokenizeCallsPerSec: Math.round(d.calls / d.seconds),
        detokenizeP99Ms: Number(d.p99.toFixed(2)),
        logQueryRpcMs: Number(rpcMs.toFixed(1)),
        logQuerySqlPageMs: Number(sql.pageMs.toFixed(2)),
        logQueryUsesIndex: sql.usesIndex,
        callerDayCount: sql.count,
        callerDayCountMs: Number(sql.countMs.toFixed(1)),
        serverPeakRssMb: Math.round(peakRssMb(vault.proc.pid!)),
      };
      rows.push(row);
      log(JSON.stringify(row));
    };
    // Warm the vault (JIT, pools) so the empty-database figure is not a cold start.
    writeFileSync(tokensFile, JSON.stringify(tokens));
    await runLoad({ kind: "grpc", method: "detokenize", address: vault.address, tokensFile, fields: 1, concurrency: 64, durationMs: 0, warmupMs: 3000 });
    await measure("empty", { tokens: tokens.length, log: 0, seconds: 0 });
    let logged = 0;
    for (const step of steps) {
      const t0 = performance.now();
      const more = await seedTokens(vault.address, step - tokens.length, tokens.length, (n) => n % 100_000 === 0 && log(`  tokens +${n}`));
      tokens = tokens.concat(more);
      await seedLog(vault.address, tokens, step - logged, LOG_CALLERS, (n) => n % 100_000 === 0 && log(`  log +${n}`));
      logged = step;
      await measure(step >= 1_000_000 ? `${step / 1_000_000}M` : `${step / 1000}k`, { tokens: tokens.length, log: logged, seconds: (performance.now() - t0) / 1000 });
    }
    const base = rows[0]!.detokenizeCallsPerSec as number;
    const text = [
      "| step | tokens | log entries | seed s | detokenize calls/s | vs empty | p99 ms | log query RPC ms (page of 100) | SQL page ms | index | caller-day count | count ms | RSS MB |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
      ...rows.map(
        (r) =>
          `| ${r.step} | ${r.tokens} | ${r.logEntries} | ${r.seedSeconds} | ${r.detokenizeCallsPerSec} | ${((r.detokenizeCallsPerSec as number) / base).toFixed(2)} | ${r.detokenizeP99Ms} | ${r.logQueryRpcMs} | ${r.logQuerySqlPageMs} | ${r.logQueryUsesIndex ? "access_log_caller_at" : "no"} | ${r.callerDayCount} | ${r.callerDayCountMs} | ${r.serverPeakRssMb} |`,
      ),
    ].join("\n");
    process.stdout.write(text + "\n");
    const dir = join(__dirname, "results");
    mkdirSync(dir, { recursive: true });
    const out = join(dir, `scale-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    writeFileSync(out, JSON.stringify({ at: new Date().toISOString(), rows, table: text }, null, 2));
    log(`results: ${out}`);
  } finally {
    await vault.stop();
    if (!argv.includes("--keep")) {
      await db.drop().catch(() => undefined);
      await dropRedisPrefix(redisPrefix).catch(() => undefined);
    } else log(`kept database ${db.name}`);
    rmSync(tmp, { recursive: true, force: true });
  }
}
