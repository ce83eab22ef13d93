/**
 * Profiles the vault on one bench row: `npx tsx bench/profile-row.ts --method tokenize|detokenize
 * --fields N --concurrency C [--seconds S]`. Starts the compiled vault with `--cpu-prof` on a bench
 * database of its own, warms it, runs the one row, stops the vault (which writes its profile) and
 * prints the vault's CPU per call over the measured window (from /proc) and the profile's self and
 * inclusive time by function (bench/profile-summary.ts). The profile also covers the vault's start-up,
 * warm-up and (for detokenize) seeding, so read its shares as rough. For finding where a row's CPU goes; the figures that count come
 * from `npm run bench`. With `--no-profile` it only prints the CPU per call (to compare two commits
 * back to back: the profiler itself costs CPU).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { execFileSync } from "node:child_process";
import { createBenchDatabase, dropRedisPrefix, peakRssMb, processCpuMs } from "./lib/common";
import { runLoad, startServer } from "./lib/children";
import { benchTls, VAULT_TLS_ENV } from "./lib/tls";
import { benchPolicy, vaultEnv } from "./lib/vault-env";
import { seedTokens } from "./seed";

async function main(): Promise<void> {
  const arg = (n: string, d: string) => {
    const i = process.argv.indexOf(`--${n}`);
    return i >= 0 ? process.argv[i + 1]! : d;
  };
  const method = arg("method", "tokenize") as "tokenize" | "detokenize";
  const fields = Number(arg("fields", "1"));
  const concurrency = Number(arg("concurrency", "64"));
  const seconds = Number(arg("seconds", "5"));
  // --no-profile: only the CPU per call (no profiler overhead), e.g. to compare two commits back to back.
  const profile = !process.argv.includes("--no-profile");
  // --tls: the vault and this row's clients over mutual TLS (bench/lib/tls.ts), as in production.
  if (process.argv.includes("--tls")) process.env.FIELDVAULT_BENCH_TLS = "1";
  // --node-arg X (repeatable): extra flags for the vault's node process (e.g. V8 heap sizes).
  const nodeArgs = process.argv.flatMap((a, i) => (a === "--node-arg" ? [process.argv[i + 1]!] : []));
  // --env K=V (repeatable): extra environment for the vault (e.g. MALLOC_ARENA_MAX=2).
  const extraEnv = Object.fromEntries(
    process.argv.flatMap((a, i) => (a === "--env" ? [process.argv[i + 1]!.split(/=(.*)/s).slice(0, 2) as [string, string]] : [])),
  );
  const tmp = mkdtempSync(join(tmpdir(), "fv-prof-"));
  const profDir = join(tmp, "prof");
  const db = await createBenchDatabase();
  const prefix = `fvprof:${process.pid}:`;
  try {
    const vault = await startServer("vault-server.ts", vaultEnv(db, prefix, benchPolicy(tmp), { ...(benchTls() ? VAULT_TLS_ENV : {}), ...extraEnv }), [...nodeArgs, ...(profile ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`] : [])]);
    const tokensFile = join(tmp, "tokens.json");
    writeFileSync(tokensFile, JSON.stringify(method === "detokenize" ? await seedTokens(vault.address, 5_000) : []));
    const job = { kind: "grpc" as const, method, address: vault.address, tokensFile, fields, concurrency };
    await runLoad({ ...job, durationMs: 0, warmupMs: 2000 });
    let openedMs = 0;
    let cpuMs = 0; // the vault's CPU over the measured window
    const res = await runLoad({ ...job, durationMs: seconds * 1000, warmupMs: 500 }, (phase) => {
      if (phase === "start") openedMs = processCpuMs(vault.proc.pid);
      else cpuMs = processCpuMs(vault.proc.pid) - openedMs;
    });
    const rss = peakRssMb(vault.proc.pid!);
    const memory = rssBreakdown(vault.proc.pid!);
    const heap = vault.metricsAddress ? await heapBreakdown(vault.metricsAddress) : "";
    await vault.stop();
    process.stdout.write(
      `${method} ${fields} field(s) @${concurrency}: ${Math.round(res.calls / res.seconds)} calls/s, vault CPU ${Math.round((cpuMs * 1000) / res.calls)} µs/call, ` +
        `${((cpuMs * 1000) / res.fields).toFixed(1)} µs/field, p50 ${res.p50.toFixed(2)} ms, vault peak RSS ${rss.toFixed(0)} MB (now ${memory}${heap})\n`,
    );
    if (!profile) return;
    const file = readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"))!;
    const kept = join(__dirname, "results", "profiles", `${method}-${fields}-${concurrency}-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`);
    mkdirSync(dirname(kept), { recursive: true });
    copyFileSync(join(profDir, file), kept);
    process.stdout.write(`profile: ${kept}\n`);
    process.stdout.write(execFileSync("npx", ["tsx", join(__dirname, "profile-summary.ts"), kept], { encoding: "utf8" }));
  } finally {
    await db.drop().catch(() => undefined);
    await dropRedisPrefix(prefix).catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});

/** The vault's resident memory right now, by kind (anonymous: heaps and malloc; file: mapped code). */
function rssBreakdown(pid: number): string {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return `RSS ${kb("VmRSS").toFixed(0)} MB: anon ${kb("RssAnon").toFixed(0)}, file ${kb("RssFile").toFixed(0)}`;
}

/** V8's heap and external memory from the vault's /metrics (prom-client's default metrics), in MB. */
async function heapBreakdown(address: string): Promise<string> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const mb = (re: RegExp) => [...text.matchAll(re)].map((m) => `${m[1] ? `${m[1]} ` : ""}${(Number(m[2]) / 1048576).toFixed(0)}`);
  return (
    `; heap total ${mb(/^fieldvault_process_nodejs_heap_size_total_bytes()\s+(\S+)/gm)}, used ${mb(/^fieldvault_process_nodejs_heap_size_used_bytes()\s+(\S+)/gm)}, ` +
    `external ${mb(/^fieldvault_process_nodejs_external_memory_bytes()\s+(\S+)/gm)}; spaces ${mb(/^fieldvault_process_nodejs_heap_space_size_total_bytes\{space="(\w+)"\}\s+(\S+)/gm).join(", ")}`
  );
}
