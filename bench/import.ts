/**
 * `npm run bench:import [-- --rows 50000] [--batch 333] [--concurrency 4] [--subject-rows K] [--keep]`
 *
 * DESIGN §16's target: `fieldvault import` of card number + expiry + cardholder name rows at no
 * less than half the vault's own batch Tokenize rate. One run, against the machine's real
 * PostgreSQL and Redis, with the vault in a process of its own (bench/vault-server.ts):
 *   1. direct: the same kind of rows sent straight as Tokenize calls from this process, with the
 *      importer's batch size and concurrency (3 fields a row) — the vault's batch rate;
 *   2. import: `fieldvault import` (compiled to plain JS, in a process of its own) of a generated
 *      CSV file of `--rows` rows to an output file, with the rejects file, sidecar and fsyncs;
 *   3. direct again (the machine is shared: the ratio uses the mean of 1 and 3).
 * Every phase uses PANs of its own, so no phase reuses another's deterministic tokens.
 * Reports rows/s, the ratio, and the peak RSS (VmHWM) of the vault and of the importer.
 * `--subject-rows K` gives every K consecutive rows one subject reference (--subject-column).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { once } from "node:events";
import { ChannelCredentials, Metadata } from "@grpc/grpc-js";
import { TokenServiceClient } from "../src/gen/fieldvault/v1/token_service";
import { tokenizeCall } from "../src/cli/import";
import { CALLER_HEADER } from "../src/transport/grpc/identity";
import { startServer } from "./lib/children";
import { createBenchDatabase, dropRedisPrefix, peakRssMb } from "./lib/common";
import { benchPolicy, vaultEnv } from "./lib/vault-env";

const RESULTS = join(__dirname, "results");

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

function luhn(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = body.charCodeAt(body.length - 1 - i) - 48;
    if (i % 2 === 0 && (d *= 2) > 9) d -= 9;
    sum += d;
  }
  return body + String((10 - (sum % 10)) % 10);
}

/** Row i of phase p: a distinct valid PAN, an expiry in the future, a name. */
const row = (p: number, i: number) => ({
  pan: luhn(`4${p}${String(i).padStart(13, "0")}`),
  exp: `${String((i % 12) + 1).padStart(2, "0")}/${2030 + (i % 6)}`,
  name: `HOLDER ${p} ${i.toString(36).toUpperCase()}`,
});

async function writeCsv(file: string, rows: number, subjectRows: number): Promise<void> {
  const out = createWriteStream(file);
  out.write(subjectRows ? "id,subject,card_number,expiry,cardholder\n" : "id,card_number,expiry,cardholder\n");
  for (let i = 0; i < rows; i++) {
    const r = row(2, i);
    const line = subjectRows ? `${i},subj-${Math.floor(i / subjectRows)},${r.pan},${r.exp},${r.name}\n` : `${i},${r.pan},${r.exp},${r.name}\n`;
    if (!out.write(line)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
}

/** Tokenize calls of `batch` rows × 3 fields, `concurrency` in flight, until `rows` rows are in. */
async function direct(address: string, phase: number, rows: number, batch: number, concurrency: number, subjectRows: number) {
  const client = new TokenServiceClient(address, ChannelCredentials.createInsecure());
  const md = new Metadata();
  md.set(CALLER_HEADER, "payment-service");
  const call = tokenizeCall(client, md);
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    for (;;) {
      const from = next;
      if (from >= rows) return;
      const size = subjectRows ? Math.min(batch, subjectRows) : batch;
      next = Math.min(rows, from + size);
      const fields = [];
      for (let i = from; i < next; i++) {
        const r = row(phase, i);
        fields.push({ category: "card_number", value: r.pan }, { category: "card_expiry", value: r.exp }, { category: "cardholder_name", value: r.name });
      }
      await call({ fields, ttlSeconds: 0, subjectRef: subjectRows ? `subj-${phase}-${Math.floor(from / subjectRows)}` : "" });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - started) / 1000;
  client.close();
  return { rows, seconds, rowsPerSec: rows / seconds };
}

/** The CLI compiled to plain JS (no TypeScript loader in the measured process, as `dist/` would run). */
function compiledCli(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require("esbuild") as typeof import("esbuild");
  const out = join(RESULTS, ".build", "cli-main.js");
  esbuild.buildSync({ entryPoints: [join(__dirname, "..", "src", "cli", "main.ts")], outfile: out, bundle: true, platform: "node", target: "node20", format: "cjs", packages: "external", logLevel: "error" });
  return out;
}

/** User + system CPU seconds of a live process so far (/proc/<pid>/stat, 100 ticks a second). */
function cpuOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function runImport(cli: string, args: string[]): Promise<{ seconds: number; code: number | null; rssMb: number; cpuSeconds: number; stderr: string }> {
  const started = performance.now();
  const proc = spawn(process.execPath, [cli, "import", ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  let rssMb = 0;
  let cpuSeconds = 0;
  const poll = setInterval(() => {
    const v = peakRssMb(proc.pid!);
    if (Number.isFinite(v)) rssMb = Math.max(rssMb, v);
    cpuSeconds = Math.max(cpuSeconds, cpuOf(proc.pid!));
  }, 100);
  const [code] = (await once(proc, "exit")) as [number | null];
  clearInterval(poll);
  return { seconds: (performance.now() - started) / 1000, code, rssMb, cpuSeconds, stderr };
}

async function main(): Promise<void> {
  const rows = arg("rows", 50_000);
  const concurrency = arg("concurrency", 4);
  const batch = arg("batch", 333); // the importer's default for 3 mapped columns: 999 fields a call
  const subjectRows = arg("subject-rows", 0);
  const keep = process.argv.includes("--keep");
  mkdirSync(RESULTS, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), "fv-bench-import-"));
  const db = await createBenchDatabase();
  const prefix = `fvbench:${randomBytes(4).toString("hex")}:`;
  const vault = await startServer("vault-server.ts", vaultEnv(db, prefix, benchPolicy(tmp)));
  try {
    const input = join(tmp, "in.csv");
    await writeCsv(input, rows, subjectRows);
    const cli = compiledCli();
    // Warm-up (JIT, pools, KEK caches), not counted.
    await direct(vault.address, 9, Math.min(5000, rows), batch, concurrency, subjectRows);

    const before = await direct(vault.address, 1, rows, batch, concurrency, subjectRows);
    const vaultRssAfterDirect = peakRssMb(vault.proc.pid!);
    const output = join(tmp, "out.csv");
    const imp = await runImport(cli, [
      "--map", "card_number=card_number", "--map", "expiry=card_expiry", "--map", "cardholder=cardholder_name",
      ...(subjectRows ? ["--subject-column", "subject"] : []),
      "--batch", String(batch), "--concurrency", String(concurrency),
      "--rejects", join(tmp, "rejects.csv"), "--address", vault.address, "--caller", "payment-service",
      input, output,
    ]);
    const vaultRssAfterImport = peakRssMb(vault.proc.pid!);
    if (imp.code !== 0) throw new Error(`import exited with ${imp.code}: ${imp.stderr}`);
    const outLines = readFileSync(output, "utf8").split("\n").length - 2;
    if (outLines !== rows) throw new Error(`import wrote ${outLines} rows, expected ${rows}`);
    const after = await direct(vault.address, 3, rows, batch, concurrency, subjectRows);

    const directRate = (before.rowsPerSec + after.rowsPerSec) / 2;
    const importRate = rows / imp.seconds;
    const result = {
      at: new Date().toISOString(),
      machine: { cpus: cpus().length, node: process.version },
      rows,
      batchRows: batch,
      fieldsPerCall: subjectRows ? Math.min(batch, subjectRows) * 3 : batch * 3,
      concurrency,
      subjectRows,
      inputBytes: statSync(input).size,
      directBefore: before,
      import: { seconds: imp.seconds, rowsPerSec: importRate, importerCpuSeconds: imp.cpuSeconds, summary: imp.stderr.trim().split("\n").pop() },
      directAfter: after,
      ratio: importRate / directRate,
      peakRssMb: { vaultAfterDirect: vaultRssAfterDirect, vaultAfterImport: vaultRssAfterImport, importer: imp.rssMb },
    };
    const f = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
    process.stdout.write(
      [
        `| phase | rows | seconds | rows/s | peak RSS MB |`,
        `|---|---|---|---|---|`,
        `| direct Tokenize (before), ${result.fieldsPerCall} fields a call × ${concurrency} | ${f(rows)} | ${before.seconds.toFixed(1)} | ${f(before.rowsPerSec)} | vault ${vaultRssAfterDirect.toFixed(0)} |`,
        `| fieldvault import (CSV file → file) | ${f(rows)} | ${imp.seconds.toFixed(1)} | ${f(importRate)} | importer ${imp.rssMb.toFixed(0)}, vault ${vaultRssAfterImport.toFixed(0)} |`,
        `| direct Tokenize (after) | ${f(rows)} | ${after.seconds.toFixed(1)} | ${f(after.rowsPerSec)} | |`,
        ``,
        `import / direct (mean of before and after): ${result.ratio.toFixed(2)}× (goal ≥ 0.5×); importer CPU ${imp.cpuSeconds.toFixed(1)} s`,
        ``,
      ].join("\n"),
    );
    const name = `import-${result.at.replace(/[:.]/g, "-")}.json`;
    writeFileSync(join(RESULTS, name), JSON.stringify(result, null, 2));
    writeFileSync(join(RESULTS, "latest-import.json"), JSON.stringify(result, null, 2));
  } finally {
    await vault.stop();
    rmSync(tmp, { recursive: true, force: true });
    if (!keep) {
      await db.drop();
      await dropRedisPrefix(prefix);
    }
  }
}

main().catch((err) => {
  process.stderr.write(`bench:import failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
