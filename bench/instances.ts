/**
 * `npm run bench -- --instances N [--quick] [--duration S]`
 *
 * Many instances on one machine: the same calls against 1 vault process, then against N vault
 * processes behind a client-side round-robin (the load generator opens one channel per vault and
 * sends call i to vault i mod N), all on the machine's one PostgreSQL and Redis. For each run: calls/s
 * and latency, and — read from /proc/<pid>/stat — CPU time per call in each vault process and in the
 * load generator, plus what the rest of the machine (PostgreSQL, Redis, anything else) spent.
 * On a 2-core machine the total will not double with N; the point is to show that nothing
 * serialises across instances (each process's CPU per call stays flat) and where the time goes.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { type Child, runLoad, startServer } from "./lib/children";
import { cpuTimes, createBenchDatabase, dropRedisPrefix, median, processCpuMs } from "./lib/common";
import { benchPolicy, vaultEnv } from "./lib/vault-env";
import { seedTokens } from "./seed";

const RESULTS = join(__dirname, "results");
const TICK_MS = 10; // /proc/stat counts in USER_HZ (1/100 s) ticks

interface Row {
  instances: number;
  method: "tokenize" | "detokenize";
  concurrency: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  /** Per vault process: calls it served (warm-up included) and its CPU ms per call. */
  perProcess: { calls: number; cpuMsPerCall: number; cpuShare: number }[];
  loadGenCpuMsPerCall: number;
  /** Machine CPU not spent by the vaults or the load generator (PostgreSQL, Redis, other), ms per call. */
  restCpuMsPerCall: number;
  machineBusy: number;
}

const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "—");

export async function runInstances(argv: string[]): Promise<void> {
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes("--quick");
  const n = Number(value("instances"));
  if (!Number.isInteger(n) || n < 2 || n > 8) throw new Error("--instances takes a number from 2 to 8");
  const durationMs = Number(value("duration") ?? (quick ? 1.5 : 6)) * 1000;
  const warmupMs = quick ? 500 : 1000;
  const concurrency = 64;
  const log = (s: string) => process.stderr.write(s + "\n");

  const tmp = mkdtempSync(join(tmpdir(), "fv-bench-inst-"));
  const db = await createBenchDatabase();
  const redisPrefix = `fvbench:${randomBytes(5).toString("hex")}:`;
  const policyFile = benchPolicy(tmp);
  const tokensFile = join(tmp, "tokens.json");
  let vaults: Child[] = [];
  const rows: Row[] = [];
  const t0 = Date.now();
  try {
    for (const count of [1, n]) {
      // One process first (it migrates and creates the keys), then the others together.
      vaults = [await startServer("vault-server.ts", vaultEnv(db, redisPrefix, policyFile, { FIELDVAULT_INSTANCE_ID: "bench-1" }))];
      vaults.push(
        ...(await Promise.all(
          Array.from({ length: count - 1 }, (_, i) => startServer("vault-server.ts", vaultEnv(db, redisPrefix, policyFile, { FIELDVAULT_INSTANCE_ID: `bench-${i + 2}` }))),
        )),
      );
      if (rows.length === 0) writeFileSync(tokensFile, JSON.stringify(await seedTokens(vaults[0]!.address, quick ? 5_000 : 20_000)));
      const addresses = vaults.map((v) => v.address);
      // Warm every process's JIT, caches and pools.
      for (const method of ["tokenize", "detokenize"] as const) {
        await runLoad({ kind: "grpc", method, addresses, tokensFile, fields: 1, concurrency, durationMs: 0, warmupMs: warmupMs * 2 });
      }
      for (const method of ["tokenize", "detokenize"] as const) {
        const before = vaults.map((v) => processCpuMs(v.proc.pid!));
        const machine0 = cpuTimes();
        const result = await runLoad({ kind: "grpc", method, addresses, tokensFile, fields: 1, concurrency, durationMs, warmupMs });
        const machine1 = cpuTimes();
        const loadGenCpuMs = result.cpuMs ?? NaN;
        const spent = vaults.map((v, i) => processCpuMs(v.proc.pid!) - before[i]!);
        const byTarget = result.callsByTarget ?? [];
        const allCalls = byTarget.reduce((a, b) => a + b, 0);
        const wallMs = durationMs + warmupMs;
        // /proc/stat counts in USER_HZ ticks too, summed over every core.
        const machineMs = (machine1.busy - machine0.busy) * TICK_MS;
        const row: Row = {
          instances: count,
          method,
          concurrency,
          callsPerSec: result.calls / result.seconds,
          p50: result.p50,
          p99: result.p99,
          errors: result.errors,
          perProcess: spent.map((ms, i) => ({ calls: byTarget[i] ?? 0, cpuMsPerCall: ms / Math.max(1, byTarget[i] ?? 0), cpuShare: ms / wallMs })),
          loadGenCpuMsPerCall: loadGenCpuMs / Math.max(1, allCalls),
          restCpuMsPerCall: (machineMs - spent.reduce((a, b) => a + b, 0) - loadGenCpuMs) / Math.max(1, allCalls),
          machineBusy: (machine1.busy - machine0.busy) / (machine1.total - machine0.total),
        };
        rows.push(row);
        log(
          `${count} instance(s) ${method} @${concurrency}: ${fmt(row.callsPerSec)} calls/s, p99 ${fmt(row.p99, 2)} ms; ` +
            `vault CPU ms/call ${row.perProcess.map((p) => fmt(p.cpuMsPerCall, 3)).join(" / ")}${result.errors ? `; ${result.errors} errors (${result.firstError})` : ""}`,
        );
        if (result.errors && result.calls === 0) throw new Error(`every call failed: ${result.firstError}`);
      }
      await Promise.all(vaults.map((v) => v.stop()));
      vaults = [];
    }

    const head = ["instances", "call", "calls/s", "p50 ms", "p99 ms", "vault CPU ms/call (each process)", "vault CPU share of a core (each)", "load gen CPU ms/call", "rest of machine CPU ms/call", "machine busy"];
    const lines = rows.map((r) => [
      String(r.instances),
      r.method === "tokenize" ? "Tokenize, 1 field @64" : "Detokenize, 1 token @64",
      fmt(r.callsPerSec),
      fmt(r.p50, 2),
      fmt(r.p99, 2),
      r.perProcess.map((p) => fmt(p.cpuMsPerCall, 3)).join(" / "),
      r.perProcess.map((p) => `${fmt(p.cpuShare * 100)}%`).join(" / "),
      fmt(r.loadGenCpuMsPerCall, 3),
      fmt(r.restCpuMsPerCall, 3),
      `${fmt(r.machineBusy * 100)}%`,
    ]);
    const scaling = (["tokenize", "detokenize"] as const).map((m) => {
      const one = rows.find((r) => r.method === m && r.instances === 1)!;
      const many = rows.find((r) => r.method === m && r.instances === n)!;
      return `${m}: ${n} instances give ${fmt(many.callsPerSec / one.callsPerSec, 2)}× the calls/s of one; vault CPU per call ${fmt(one.perProcess[0]!.cpuMsPerCall, 3)} → ${fmt(median(many.perProcess.map((p) => p.cpuMsPerCall)), 3)} ms`;
    });
    const text = [
      `fieldvault bench — ${n} instances behind a client-side round-robin (${quick ? "quick" : "full"} run, ${durationMs / 1000} s per row), ${cpus().length} cores`,
      "",
      [head, head.map(() => "---"), ...lines].map((l) => `| ${l.join(" | ")} |`).join("\n"),
      "",
      ...scaling,
      "",
      `total ${((Date.now() - t0) / 1000).toFixed(0)} s`,
    ].join("\n");
    process.stdout.write(text + "\n");
    mkdirSync(RESULTS, { recursive: true });
    const json = { at: new Date().toISOString(), mode: quick ? "quick" : "full", instances: n, durationMs, cores: cpus().length, rows, table: text };
    const out = join(RESULTS, `instances-${n}-${json.mode}-${json.at.replace(/[:.]/g, "-")}.json`);
    writeFileSync(out, JSON.stringify(json, null, 2));
    writeFileSync(join(RESULTS, `latest-instances-${json.mode}.json`), JSON.stringify(json, null, 2));
    log(`results: ${out}`);
  } finally {
    await Promise.all(vaults.map((v) => v.stop()));
    await db.drop().catch((e) => log(`could not drop ${db.name}: ${(e as Error).message}`));
    await dropRedisPrefix(redisPrefix).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  }
}
