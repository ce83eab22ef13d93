/**
 * Seeding through the service's own batch write path: Tokenize with up to 1,000 fields a call
 * (tokens), Detokenize with up to 1,000 tokens a call (one durable access-log entry per token).
 * Usable on its own: `tsx bench/seed.ts <address> <tokens> <logEntries> [tokensOut.json]`.
 */
import { writeFileSync } from "node:fs";
import { Metadata } from "@grpc/grpc-js";
import { TokenServiceClient } from "../src/gen/fieldvault/v1/token_service";
import { benchName, CALLER, CATEGORY, PURPOSE } from "./lib/common";
import { benchClientCredentials } from "./lib/tls";

const BATCH = 1000;
const IN_FLIGHT = 4;

function metadata(caller: string): Metadata {
  const m = new Metadata();
  m.set("x-fieldvault-caller", caller);
  return m;
}

async function pool(jobs: number, inFlight: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, jobs) }, async () => {
      while (next < jobs) await job(next++);
    }),
  );
}

/** Tokenizes `count` cardholder names; returns their tokens. `from` keeps values distinct across calls. */
export async function seedTokens(address: string, count: number, from = 0, onProgress?: (done: number) => void): Promise<string[]> {
  const client = new TokenServiceClient(address, benchClientCredentials(), { "grpc.max_receive_message_length": 64 * 1024 * 1024 });
  const out: string[] = new Array(count);
  let done = 0;
  try {
    await pool(Math.ceil(count / BATCH), IN_FLIGHT, (b) => {
      const n = Math.min(BATCH, count - b * BATCH);
      const fields = Array.from({ length: n }, (_, k) => ({ category: CATEGORY, value: benchName(from + b * BATCH + k) }));
      return new Promise<void>((resolve, reject) =>
        client.tokenize({ fields, ttlSeconds: 0, subjectRef: "" }, metadata(CALLER), (err, res) => {
          if (err) return reject(err);
          res.tokens.forEach((t, k) => (out[b * BATCH + k] = t.token));
          done += n;
          onProgress?.(done);
          resolve();
        }),
      );
    });
  } finally {
    client.close();
  }
  return out;
}

/**
 * Writes `count` access-log entries by detokenizing `tokens` 1,000 a call; `caller` varies the
 * log's caller so a per-caller query has realistic selectivity.
 */
export async function seedLog(address: string, tokens: readonly string[], count: number, callers: readonly string[] = [CALLER], onProgress?: (done: number) => void): Promise<void> {
  const client = new TokenServiceClient(address, benchClientCredentials(), { "grpc.max_receive_message_length": 64 * 1024 * 1024 });
  let done = 0;
  try {
    await pool(Math.ceil(count / BATCH), IN_FLIGHT, (b) => {
      const n = Math.min(BATCH, count - b * BATCH);
      const start = (b * BATCH) % Math.max(1, tokens.length - n);
      const batch = tokens.slice(start, start + n);
      const caller = callers[b % callers.length]!;
      return new Promise<void>((resolve, reject) =>
        client.detokenize({ tokens: batch, purpose: PURPOSE, justification: `seed-${b}` }, metadata(caller), (err) => {
          if (err) return reject(err);
          done += batch.length;
          onProgress?.(done);
          resolve();
        }),
      );
    });
  } finally {
    client.close();
  }
}

if (require.main === module) {
  const [address, tokens, logEntries, outFile] = process.argv.slice(2);
  if (!address || !tokens) {
    process.stderr.write("usage: tsx bench/seed.ts <address> <tokens> [logEntries] [tokensOut.json]\n");
    process.exit(2);
  }
  (async () => {
    const t = await seedTokens(address, Number(tokens));
    if (outFile) writeFileSync(outFile, JSON.stringify(t));
    if (Number(logEntries) > 0) await seedLog(address, t, Number(logEntries));
    process.stdout.write(`seeded ${t.length} tokens and ${Number(logEntries) || 0} log entries\n`);
  })().catch((err) => {
    process.stderr.write(`seed failed: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
