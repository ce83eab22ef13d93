/**
 * The load generator, in a process of its own. One job per process, given as JSON in argv[2]:
 *   grpc:     C calls in flight against a TokenService (the vault or the no-op floor);
 *   pg:       (f) the same token rows inserted straight through `pg` (no crypto, no gRPC);
 *   pgcrypto: (g) the same insert with the values encrypted by pgcrypto's pgp_sym_encrypt in SQL.
 * Warm-up calls are not counted. Sends {calls, fields, seconds, p50, p99, p999, errors} back over IPC.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import pg from "pg";
import { TokenServiceClient } from "../src/gen/fieldvault/v1/token_service";
import { benchName, CALLER, CATEGORY, percentile, PURPOSE } from "./lib/common";
import { benchClientCredentials } from "./lib/tls";

export interface LoadJob {
  kind: "grpc" | "pg" | "pgcrypto";
  method?: "tokenize" | "detokenize";
  address?: string;
  /** Several vaults: the client spreads calls over them round-robin (one channel each). */
  addresses?: string[];
  url?: string;
  tokensFile?: string;
  fields: number;
  concurrency: number;
  durationMs: number;
  warmupMs: number;
}

export interface LoadResult {
  calls: number;
  fields: number;
  seconds: number;
  p50: number;
  p99: number;
  p999: number;
  errors: number;
  firstError?: string;
  /** CPU the load generator spent driving the calls (warm-up included), ms. */
  cpuMs?: number;
  /** Calls (warm-up included) sent to each address of `addresses`, in order. */
  callsByTarget?: number[];
}

type Op = (i: number) => Promise<void>;

async function drive(job: LoadJob, op: Op): Promise<Omit<LoadResult, "callsByTarget">> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let seq = 0;
  const started = performance.now();
  const measureFrom = started + job.warmupMs;
  const end = measureFrom + job.durationMs;
  let calls = 0;
  // Tell the parent when the measured window opens and closes, so it reads every process's CPU
  // time from /proc at exactly those moments.
  const sent = new Set<string>();
  const phase = (p: "start" | "end") => {
    if (sent.has(p)) return;
    sent.add(p);
    process.send?.({ phase: p });
  };
  const opened = setTimeout(() => phase("start"), job.warmupMs);
  const closed = setTimeout(() => phase("end"), job.warmupMs + job.durationMs);
  const worker = async () => {
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) return;
      try {
        await op(seq++);
        const t1 = performance.now();
        if (t0 >= measureFrom && t1 <= end) {
          latencies.push(t1 - t0);
          calls++;
        }
      } catch (err) {
        errors++;
        firstError ??= (err as ServiceError).details ?? (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  clearTimeout(opened);
  clearTimeout(closed);
  if (sent.has("start")) phase("end"); // a late timer: close the window now, before the result
  const sorted = Float64Array.from(latencies).sort();
  return {
    calls,
    fields: calls * job.fields,
    seconds: job.durationMs / 1000,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    errors,
    firstError,
  };
}

function grpcOp(job: LoadJob): { op: Op; close: () => void; callsByTarget?: number[] } {
  if (job.addresses?.length) {
    // Client-side round-robin: call i goes to vault i mod N.
    const ops = job.addresses.map((address) => grpcOp({ ...job, address, addresses: undefined }));
    const callsByTarget = ops.map(() => 0);
    const op: Op = (i) => {
      callsByTarget[i % ops.length]!++;
      return ops[i % ops.length]!.op(i);
    };
    return { op, close: () => ops.forEach((o) => o.close()), callsByTarget };
  }
  const client = new TokenServiceClient(job.address ?? job.addresses![0]!, benchClientCredentials());
  const md = () => {
    const m = new Metadata();
    m.set("x-fieldvault-caller", CALLER);
    return m;
  };
  if (job.method === "tokenize") {
    const op: Op = (i) =>
      new Promise((resolve, reject) => {
        const fields = Array.from({ length: job.fields }, (_, k) => ({ category: CATEGORY, value: benchName(i * job.fields + k) }));
        client.tokenize({ fields, ttlSeconds: 0, subjectRef: "" }, md(), (err, res) => {
          if (err) return reject(err);
          if (res.tokens.length !== job.fields) return reject(new Error("short tokenize answer"));
          resolve();
        });
      });
    return { op, close: () => client.close() };
  }
  const tokens = JSON.parse(readFileSync(job.tokensFile!, "utf8")) as string[];
  const op: Op = (i) =>
    new Promise((resolve, reject) => {
      const start = (i * 7919 * job.fields) % Math.max(1, tokens.length - job.fields);
      const batch = tokens.slice(start, start + job.fields);
      client.detokenize({ tokens: batch, purpose: PURPOSE, justification: "bench" }, md(), (err, res) => {
        if (err) return reject(err);
        const bad = res.results.find((r) => r.outcome?.$case !== "value");
        if (bad) return reject(new Error(`item failed: ${bad.outcome?.$case === "error" ? bad.outcome.value.code : "no outcome"}`));
        resolve();
      });
    });
  return { op, close: () => client.close() };
}

function pgOp(job: LoadJob): { op: Op; close: () => Promise<void> } {
  const pool = new pg.Pool({ connectionString: job.url, max: job.concurrency });
  const n = job.fields;
  const run = randomBytes(4).toString("hex");
  // Same shapes as the vault's rows: 73-byte wrapped DEK, 41 + value bytes of ciphertext, masked JSON.
  const dek = randomBytes(73);
  const ct = randomBytes(41 + benchName(0).length);
  const masked = JSON.stringify({ display: "B. H.", brand: "", last: "", expired: false });
  if (job.kind === "pg") {
    const op: Op = async (i) => {
      const ids = Array.from({ length: n }, (_, k) => `tok_f${run}_${i}_${k}`);
      const now = new Date();
      await pool.query(
        `INSERT INTO bench_floor_tokens (id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked,
                                         held_without_subject, created_at, expires_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[], $5::bytea[], $6::bytea[], $7::jsonb[],
                              $8::bool[], $9::timestamptz[], $10::timestamptz[])`,
        [
          ids,
          ids.map(() => CATEGORY),
          ids.map(() => 1),
          ids.map(() => dek),
          ids.map(() => ct),
          ids.map(() => null),
          ids.map(() => masked),
          ids.map(() => true),
          ids.map(() => now),
          ids.map(() => null),
        ],
      );
    };
    return { op, close: () => pool.end() };
  }
  const key = randomBytes(32).toString("base64");
  const op: Op = async (i) => {
    const values = Array.from({ length: n }, (_, k) => benchName(i * n + k));
    await pool.query(
      `INSERT INTO bench_pgcrypto_tokens (id, category, ciphertext, masked, created_at)
       SELECT 'tok_' || encode(gen_random_bytes(16), 'hex'), $2, pgp_sym_encrypt(v, $3), $4::jsonb, now()
       FROM unnest($1::text[]) AS u(v)`,
      [values, CATEGORY, key, masked],
    );
  };
  return { op, close: () => pool.end() };
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as LoadJob;
  const target = job.kind === "grpc" ? grpcOp(job) : pgOp(job);
  const cpu0 = process.cpuUsage();
  const driven = await drive(job, target.op);
  const cpu = process.cpuUsage(cpu0);
  const result: LoadResult = { ...driven, cpuMs: (cpu.user + cpu.system) / 1000, callsByTarget: "callsByTarget" in target ? target.callsByTarget : undefined };
  await target.close();
  if (process.send) process.send(result, () => process.exit(0));
  else {
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
  }
}

main().catch((err) => {
  process.stderr.write(`load generator failed: ${(err as Error).message}\n`);
  process.exit(1);
});
